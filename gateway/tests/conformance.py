#!/usr/bin/env python3
"""Protocol conformance of the gateway, checked with a WebSocket client no one here wrote
(the `websockets` package) and with curl for SSE. Driven by gateway/tests/protocol.rs, which
owns the quote table: a line "STEP <action> <args>" on stdout asks it to change the market, and
it answers "OK" on stdin once the change is published. With `deflate` the gateway runs with
--deflate: every connection (websockets offers permessage-deflate, and compresses what it sends)
must have negotiated it, and the gateway must have sent messages compressed.
Usage: conformance.py PORT [deflate]"""

import asyncio
import json
import subprocess
import sys
import urllib.request
from decimal import Decimal

import websockets

PORT = int(sys.argv[1])
DEFLATE = sys.argv[2:] == ["deflate"]
URI = f"ws://127.0.0.1:{PORT}/v1/ws"
_connect = websockets.connect


def connect(uri, **kw):
    """websockets.connect, checking the extension negotiated (or not) once open."""
    class Checked:
        async def __aenter__(self):
            self.cm = _connect(uri, **kw)
            ws = await self.cm.__aenter__()
            ext = ws.response.headers.get("Sec-WebSocket-Extensions")
            if DEFLATE and (kw.get("compression", "deflate") is not None or kw.get("extensions")):
                assert ext and ext.startswith("permessage-deflate"), ext
            else:
                assert ext is None, ext
            return ws

        async def __aexit__(self, *exc):
            return await self.cm.__aexit__(*exc)

    return Checked()


websockets.connect = connect


def step(*words):
    print("STEP", *words, flush=True)
    assert sys.stdin.readline().strip() == "OK"


def rest(path):
    with urllib.request.urlopen(f"http://127.0.0.1:{PORT}{path}", timeout=10) as r:
        return json.loads(r.read())


class Conn:
    """A websockets connection that checks every message's seq is the next one."""

    def __init__(self, ws):
        self.ws = ws
        self.seq = 0

    async def send(self, obj):
        await self.ws.send(obj if isinstance(obj, (str, bytes)) else json.dumps(obj))

    async def recv(self, timeout=5, skip_heartbeats=True):
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while True:
            left = end - loop.time()
            if left <= 0:
                raise asyncio.TimeoutError()
            m = json.loads(await asyncio.wait_for(self.ws.recv(), left))
            assert m["seq"] == self.seq + 1, f"seq hole: {self.seq} then {m}"
            self.seq = m["seq"]
            if skip_heartbeats and m["type"] == "heartbeat":
                continue
            return m


def fields(q):
    return set(q) - {"s"}


async def subscribe_snapshot_updates():
    async with websockets.connect(URI) as ws:
        c = Conn(ws)
        await c.send({"op": "subscribe", "symbols": ["AAAA", "AAAB", "NOPE"], "throttle_ms": 0, "id": 1})
        m = await c.recv()
        assert m["type"] == "subscribed" and m["id"] == 1, m
        assert m["symbols"] == ["AAAA", "AAAB"] and m["unknown"] == ["NOPE"], m
        snap = await c.recv()
        assert snap["type"] == "snapshot", snap
        by = {q["s"]: q for q in snap["quotes"]}
        assert set(by) == {"AAAA", "AAAB"}
        # REST quotes match the snapshot exactly
        r = rest("/v1/quotes?symbols=AAAA,AAAB")
        assert {q["s"]: q for q in r["quotes"]} == by, (r, by)
        for q in by.values():
            assert {"bid", "bid_sz", "ask", "ask_sz", "last", "last_sz", "vol", "state", "stale", "x_ts"} <= fields(q), q
            assert isinstance(q["bid"], str) and len(q["bid"].split(".")[1]) == 4, q
            assert isinstance(q["vol"], int)
        # a change of one field: an update with that field only
        step("move_bid", "AAAA")
        u = await c.recv()
        assert u["type"] == "update" and isinstance(u["ts"], int), u
        assert u["quotes"] == [{"s": "AAAA", "bid": rest("/v1/quotes?symbols=AAAA")["quotes"][0]["bid"]}], u
        # a trade: last, last_sz, vol
        step("trade", "AAAB")
        u = await c.recv()
        assert [q["s"] for q in u["quotes"]] == ["AAAB"] and fields(u["quotes"][0]) == {"last", "last_sz", "vol"}, u
        # unsubscribe stops updates: a change of AAAB, then of AAAA, gives only AAAA
        await c.send({"op": "unsubscribe", "symbols": ["AAAB"], "id": 2})
        m = await c.recv()
        assert m["type"] == "unsubscribed" and m["symbols"] == ["AAAB"] and m["id"] == 2, m
        step("move_bid", "AAAB")
        step("move_bid", "AAAA")
        u = await c.recv()
        assert [q["s"] for q in u["quotes"]] == ["AAAA"], u
        # a halt shows as a state change; stale shows and clears
        step("halt", "AAAA")
        u = await c.recv()
        assert u["quotes"] == [{"s": "AAAA", "state": "halted"}], u
        step("stale", "AAAA")
        u = await c.recv()
        assert u["quotes"] == [{"s": "AAAA", "stale": True}], u
        step("fresh", "AAAA")
        u = await c.recv()
        assert u["quotes"] == [{"s": "AAAA", "stale": False}], u
        # ping
        await c.send({"op": "ping", "id": "p"})
        m = await c.recv()
        assert m["type"] == "pong" and m["id"] == "p", m
        # a heartbeat after 1 s without other messages, in sequence
        m = await c.recv(timeout=3, skip_heartbeats=False)
        assert m["type"] == "heartbeat" and isinstance(m["ts"], int), m
    print("subscribe/snapshot/update/unsubscribe/ping/heartbeat: ok", flush=True)


def value(holdings):
    qs = {q["s"]: q for q in rest("/v1/quotes?symbols=" + ",".join(holdings))["quotes"]}
    return sum(Decimal(qty) * Decimal(qs[s]["last"]) for s, qty in holdings.items())


async def portfolio():
    async with websockets.connect(URI) as ws:
        c = Conn(ws)
        h = {"AAAC": "10", "AAAD": "2.5"}
        await c.send({"op": "portfolio", "holdings": h, "id": 3})
        m = await c.recv()
        assert m["type"] == "portfolio" and m["id"] == 3 and m["stale"] is False, m
        assert Decimal(m["value"]) == value(h), (m, value(h))
        # pushed when a held symbol's price changes (throttle: the default 100 ms window)
        step("trade", "AAAD")
        m = await c.recv()
        assert m["type"] == "portfolio" and Decimal(m["value"]) == value(h), (m, value(h))
        # stale when an input is stale, and fresh again after
        step("stale", "AAAC")
        m = await c.recv()
        assert m["type"] == "portfolio" and m["stale"] is True, m
        step("fresh", "AAAC")
        m = await c.recv()
        assert m["type"] == "portfolio" and m["stale"] is False, m
        # numbers are accepted too; bad quantities are an error
        await c.send({"op": "portfolio", "holdings": {"AAAC": 1.5}})
        m = await c.recv()
        assert m["type"] == "portfolio" and Decimal(m["value"]) == value({"AAAC": "1.5"}), m
        await c.send({"op": "portfolio", "holdings": {"AAAC": "1.23456"}})
        m = await c.recv()
        assert m["type"] == "error" and m["code"] == "bad_request", m
    print("portfolio: ok", flush=True)


async def conflation():
    async with websockets.connect(URI) as ws:
        c = Conn(ws)
        await c.send({"op": "subscribe", "symbols": ["AAAE"], "throttle_ms": 500})
        assert (await c.recv())["type"] == "subscribed"
        assert (await c.recv())["type"] == "snapshot"
        step("burst", "AAAE", "20")
        # 20 changes at once: within 1.5 s at most two updates (the burst may straddle a
        # window boundary), the last with the latest value
        updates = []
        loop = asyncio.get_running_loop()
        end = loop.time() + 1.5
        while loop.time() < end:
            try:
                m = await c.recv(timeout=max(0.01, end - loop.time()))
            except asyncio.TimeoutError:
                break
            if m["type"] == "update":
                updates.append(m)
        latest = rest("/v1/quotes?symbols=AAAE")["quotes"][0]
        assert 1 <= len(updates) <= 2, updates
        assert updates[-1]["quotes"][0]["bid"] == latest["bid"], (updates, latest)
    print("conflation: ok", flush=True)


async def bad_inputs():
    async with websockets.connect(URI, max_size=None) as ws:
        c = Conn(ws)

        async def expect_error(msg, code):
            await c.send(msg)
            m = await c.recv()
            assert m["type"] == "error" and m["code"] == code, (msg if len(str(msg)) < 200 else "big", m)

        await expect_error("{nope", "bad_json")
        await expect_error({"op": "fly"}, "unknown_op")
        await expect_error({"op": "subscribe", "symbols": "AAAA"}, "bad_request")
        await expect_error({"op": "subscribe", "symbols": [1, 2]}, "bad_request")
        await expect_error({"op": "subscribe", "symbols": ["AAAA"], "throttle_ms": "fast"}, "bad_request")
        await expect_error({"op": "portfolio", "holdings": ["AAAA"]}, "bad_request")
        await expect_error([1, 2], "bad_request")
        await expect_error({"op": "subscribe", "symbols": ["AAAA"] * 10_000}, "too_many_symbols")
        await expect_error({"op": "ping", "pad": "x" * 150_000}, "too_large")
        await expect_error(b"\x00\x01binary", "bad_request")
        # still served after all that
        await c.send({"op": "ping", "id": 9})
        m = await c.recv()
        assert m["type"] == "pong" and m["id"] == 9, m
    # a frame past the hard limit: close 1009
    async with websockets.connect(URI, max_size=None) as ws:
        await ws.send("x" * 300_000)
        try:
            await asyncio.wait_for(ws.recv(), 5)
            raise AssertionError("no close")
        except websockets.ConnectionClosed as e:
            assert e.rcvd is not None and e.rcvd.code == 1009, e
    # garbage past the limit: close 1008
    async with websockets.connect(URI) as ws:
        try:
            for _ in range(30):
                await ws.send("garbage")
            while True:
                await asyncio.wait_for(ws.recv(), 5)
        except websockets.ConnectionClosed as e:
            assert e.rcvd is not None and e.rcvd.code == 1008, e
    print("bad inputs: ok", flush=True)


def sse():
    out = subprocess.run(
        ["curl", "-sN", "--max-time", "2.5", f"http://127.0.0.1:{PORT}/v1/sse?symbols=AAAF,NOPE&throttle_ms=0"],
        capture_output=True, text=True,
    ).stdout
    events = [e for e in out.split("\n\n") if e.strip()]
    msgs = []
    for e in events:
        lines = dict(l.split(": ", 1) for l in e.splitlines())
        m = json.loads(lines["data"])
        assert int(lines["id"]) == m["seq"], e
        msgs.append(m)
    assert [m["type"] for m in msgs[:2]] == ["subscribed", "snapshot"], msgs[:2]
    assert msgs[0]["unknown"] == ["NOPE"]
    assert [m["seq"] for m in msgs] == list(range(1, len(msgs) + 1))
    assert any(m["type"] == "heartbeat" for m in msgs), msgs
    print("sse: ok", flush=True)


def metric(name):
    with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return int(line.split()[1])
    raise AssertionError(f"no {name}")


async def deflate_window():
    """A client whose window is 1 KiB (server_max_window_bits=10): a reply between 512 bytes
    (the least worth compressing) and 1 KiB comes compressed, a snapshot longer than the window
    does not; a client without compression gets neither."""
    from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
    syms = [f"AA{chr(65 + i // 26)}{chr(65 + i % 26)}" for i in range(20)]
    unknown = [f"NONE{i:04}" for i in range(40)]
    small = ClientPerMessageDeflateFactory(server_max_window_bits=10)
    async with websockets.connect(URI, extensions=[small], compression=None) as ws:
        assert "server_max_window_bits=10" in ws.response.headers["Sec-WebSocket-Extensions"]
        before = metric("gateway_deflated_messages_total")
        await ws.send(json.dumps({"op": "subscribe", "symbols": syms + unknown, "throttle_ms": 0}))
        reply = await asyncio.wait_for(ws.recv(), 5)
        assert 512 <= len(reply) <= 1024, len(reply)
        assert json.loads(reply)["unknown"] == unknown
        snap = await asyncio.wait_for(ws.recv(), 5)
        assert len(snap) > 1024 and len(json.loads(snap)["quotes"]) == 20
        await asyncio.sleep(0.1)  # the worker publishes its counters once a tick
        assert metric("gateway_deflated_messages_total") - before == 1
    async with _connect(URI, compression=None) as ws:
        assert ws.response.headers.get("Sec-WebSocket-Extensions") is None
        before = metric("gateway_deflated_messages_total")
        await ws.send(json.dumps({"op": "subscribe", "symbols": syms + unknown, "throttle_ms": 0}))
        await asyncio.wait_for(ws.recv(), 5)
        await asyncio.wait_for(ws.recv(), 5)
        await asyncio.sleep(0.1)
        assert metric("gateway_deflated_messages_total") == before
    print("deflate windows: ok", flush=True)


async def main():
    await subscribe_snapshot_updates()
    await portfolio()
    await conflation()
    await bad_inputs()
    sse()
    if DEFLATE:
        await deflate_window()
        sessions, sent = metric("gateway_deflate_sessions_total"), metric("gateway_deflated_messages_total")
        packed, plain = metric("gateway_deflated_bytes_out_total"), metric("gateway_deflated_bytes_in_total")
        # every connection but the one that asked for no compression
        assert sessions == 7 and sent > 0 and packed < plain, (sessions, sent, packed, plain)
        print(f"deflate: {sessions} sessions, {sent} messages sent compressed, {plain} bytes as {packed}", flush=True)
    else:
        assert metric("gateway_deflate_sessions_total") == 0
    print("PASS", flush=True)


asyncio.run(main())
