#!/usr/bin/env python3
"""Checks the web page at / in headless Chromium over the DevTools protocol (with the
`websockets` package): it loads, its rows update within a second, a symbol without a bid shows
neither a bid nor a size, a halted symbol shows as halted, and a screenshot is saved. Driven by
gateway/tests/page.rs, which keeps one symbol's price moving.
Usage: page_check.py PORT SCREENSHOT_PNG"""

import asyncio
import base64
import json
import os
import socket
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

import websockets

PORT, SHOT = int(sys.argv[1]), sys.argv[2]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Cdp:
    def __init__(self, ws):
        self.ws, self.n = ws, 0

    async def call(self, method, **params):
        self.n += 1
        await self.ws.send(json.dumps({"id": self.n, "method": method, "params": params}))
        while True:
            m = json.loads(await asyncio.wait_for(self.ws.recv(), 30))
            if m.get("id") == self.n:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m["result"]

    async def js(self, expr):
        r = await self.call("Runtime.evaluate", expression=expr, returnByValue=True)
        return r["result"].get("value")

    async def until(self, expr, timeout, what):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            v = await self.js(expr)
            if v:
                return v
            await asyncio.sleep(0.05)
        raise AssertionError(f"timed out ({timeout} s): {what}")


async def main():
    dbg = free_port()
    profile = tempfile.mkdtemp(prefix="page-check-")
    # chromium's own temporary files too, so the run leaves nothing behind
    tmp = os.path.join(profile, "tmp")
    os.makedirs(tmp)
    chrome = subprocess.Popen(
        ["chromium", "--headless", "--no-sandbox", "--disable-background-networking",
         "--disable-gpu", "--no-first-run", f"--user-data-dir={profile}",
         f"--remote-debugging-port={dbg}", "--window-size=1400,900", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "TMPDIR": tmp})
    try:
        targets = None
        for _ in range(200):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{dbg}/json/list", timeout=2) as r:
                    targets = [t for t in json.loads(r.read()) if t["type"] == "page"]
                if targets:
                    break
            except OSError:
                pass
            await asyncio.sleep(0.1)
        assert targets, "chromium did not start"
        async with websockets.connect(targets[0]["webSocketDebuggerUrl"], max_size=None) as ws:
            cdp = Cdp(ws)
            await cdp.call("Page.enable")
            await cdp.call("Page.navigate", url=f"http://127.0.0.1:{PORT}/")
            await cdp.until("document.title === 'Live prices' && document.readyState === 'complete'", 15, "the page loads")
            await cdp.until("document.getElementById('status').textContent === 'live'", 15, "the WebSocket is live")
            await cdp.until("document.querySelectorAll('#quotes tbody tr').length >= 10", 15, "the watch list fills")
            await cdp.until("document.querySelector('tr[data-s=\"AAAA\"] td[data-f=\"bid\"]').textContent.includes('.')", 10, "AAAA has a bid")
            bid = "document.querySelector('tr[data-s=\"AAAA\"] td[data-f=\"bid\"]').textContent"
            first = await cdp.js(bid)
            t0 = time.monotonic()
            await cdp.until(f"{bid} !== {json.dumps(first)}", 1.0, "a row updates within a second")
            print(f"row updated in {(time.monotonic() - t0) * 1000:.0f} ms: {first} -> {await cdp.js(bid)}", flush=True)
            # a side with no orders: no price and no size (the quote says 0), not a size of 0
            cell = "document.querySelector('tr[data-s=\"AAAC\"] td[data-f=\"%s\"]').textContent"
            empty = await cdp.until(f"{cell % 'ask'}.includes('.') && [{cell % 'bid'}, {cell % 'bid_sz'}]", 10, "AAAC shows")
            assert empty == ["–", "–"], f"AAAC without a bid shows {empty}"
            halted = await cdp.until(
                "(() => { const tr = document.querySelector('tr[data-state=\"halted\"]');"
                " return tr && tr.querySelector('.badge').textContent + ' ' + tr.dataset.s; })()",
                10, "a halted symbol shows as halted")
            assert halted.startswith("HALTED "), halted
            print(f"halted shown: {halted}", flush=True)
            # the update age is shown (refreshed every 250 ms)
            await cdp.until("document.getElementById('age').textContent.endsWith('ms')", 5, "the update age")
            # a holding gives a portfolio value
            await cdp.js("document.getElementById('hsym').value='AAAB';document.getElementById('hqty').value='10';"
                         "document.getElementById('holding').requestSubmit()")
            await cdp.until("document.getElementById('value').textContent.startsWith('$')", 5, "the portfolio value")
            await asyncio.sleep(0.5)
            shot = await cdp.call("Page.captureScreenshot", format="png")
            os.makedirs(os.path.dirname(SHOT), exist_ok=True)
            with open(SHOT, "wb") as f:
                f.write(base64.b64decode(shot["data"]))
            print(f"screenshot: {SHOT}", flush=True)
    finally:
        chrome.terminate()
        chrome.wait(10)
        shutil.rmtree(profile, ignore_errors=True)
    print("PASS", flush=True)


asyncio.run(main())
