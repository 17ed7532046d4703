//! Bad clients at the socket level: a half-open handshake, a client that never reads, more
//! connections than the limit. Each gets the documented treatment while a well-behaved client
//! on the same gateway keeps getting its updates in sequence.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn seqs(c: &mut Raw, n: usize, last: &mut u64) {
    for _ in 0..n {
        let v = c.json();
        let s = v["seq"].as_u64().unwrap();
        assert_eq!(s, *last + 1, "no holes: {v}");
        *last = s;
    }
}

#[test]
fn half_open_handshakes_time_out_and_others_are_served() {
    let t = Table::new("halfopen", 5);
    let (mut cfg, lim) = test_cfg(&t.path);
    cfg.handshake_timeout_ns = 300_000_000;
    let g = Gw::start(cfg, lim);
    let mut half = TcpStream::connect(g.addr).unwrap();
    half.write_all(b"GET /v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
        .unwrap();
    half.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut good = Raw::connect(g.addr);
    good.text(r#"{"op":"ping","id":1}"#);
    assert_eq!(good.json()["type"], "pong");
    let mut b = [0u8; 64];
    let t0 = Instant::now();
    // closed without an answer (a reset: the unread request is discarded)
    match half.read(&mut b) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        r => panic!("expected the connection closed, got {r:?}"),
    }
    assert!(t0.elapsed() < Duration::from_secs(9));
    assert_eq!(g.metric("gateway_handshake_timeouts_total"), 1);
    good.text(r#"{"op":"ping","id":2}"#);
    assert_eq!(good.json()["id"], 2);
}

#[test]
fn a_client_that_never_reads_is_conflated_then_closed_with_1013() {
    let mut t = Table::new("slow", 50);
    let (mut cfg, lim) = test_cfg(&t.path);
    cfg.sndbuf_bytes = Some(4096);
    cfg.stall_timeout_ns = 500_000_000;
    let g = Gw::start(cfg, lim);
    // the slow client: a tiny receive buffer, and it never reads after subscribing
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&g.addr.into()).unwrap();
    let mut slow = Raw::from_stream(TcpStream::from(sock));
    let all: Vec<String> = (0..50)
        .map(|i| format!("\"{}\"", gateway::synth::symbol_name(i)))
        .collect();
    let sub = format!(
        r#"{{"op":"subscribe","symbols":[{}],"throttle_ms":0}}"#,
        all.join(",")
    );
    slow.text(&sub);
    let mut good = Raw::connect(g.addr);
    good.text(r#"{"op":"subscribe","symbols":["AAAA"],"throttle_ms":0}"#);
    let mut last = 0;
    seqs(&mut good, 2, &mut last);
    // move every symbol until the gateway gives up on the slow client
    let t0 = Instant::now();
    let mut rounds = 0u32;
    while g.metric("gateway_slow_client_closed_total") == 0 {
        assert!(t0.elapsed() < Duration::from_secs(60), "never closed");
        for i in 0..50 {
            t.set(i, |q| q.bid = q.bid.map(|(p, s)| (p + 100, s)));
        }
        rounds += 1;
        // the good client keeps up, in sequence
        seqs(&mut good, 1, &mut last);
    }
    assert!(
        g.metric("gateway_slow_client_events_total") > 0,
        "it was conflated first"
    );
    // what the slow client finally reads ends with close 1013; it got far fewer messages
    // than the updates made (conflated, not queued)
    let mut updates = 0;
    let code = loop {
        match slow.read_frame() {
            Some((_, 1, _)) => updates += 1,
            Some((_, 8, p)) => break u16::from_be_bytes([p[0], p[1]]),
            Some(_) => {}
            None => panic!("no close frame"),
        }
    };
    assert_eq!(code, 1013);
    assert!(
        updates < rounds as usize,
        "{updates} messages for {rounds} rounds"
    );
    // and the good client is still served
    t.set(0, |q| q.volume += 1);
    seqs(&mut good, 1, &mut last);
}

#[test]
fn connections_past_the_limit_are_refused_with_a_reason() {
    let t = Table::new("limit", 5);
    let (mut cfg, lim) = test_cfg(&t.path);
    cfg.max_connections = 3;
    let g = Gw::start(cfg, lim);
    let mut held: Vec<Raw> = (0..2).map(|_| Raw::connect(g.addr)).collect();
    // the third is the metrics request itself; a fourth is refused
    let mut extra = Raw::connect(g.addr);
    let mut refused = TcpStream::connect(g.addr).unwrap();
    let mut r = String::new();
    refused.read_to_string(&mut r).unwrap();
    assert!(r.starts_with("HTTP/1.1 503"), "{r}");
    assert!(r.contains("connection limit"), "{r}");
    extra.text(r#"{"op":"ping","id":1}"#);
    assert_eq!(extra.json()["type"], "pong");
    drop(extra);
    held[0].text(r#"{"op":"ping","id":1}"#);
    assert_eq!(held[0].json()["type"], "pong");
    // once one leaves, there is room again
    held.pop();
    let mut ok = None;
    for _ in 0..100 {
        if let Ok(c) = std::panic::catch_unwind(|| Raw::connect(g.addr)) {
            ok = Some(c);
            break;
        }
    }
    assert!(ok.is_some());
}

/// Settings past their bounds are refused at start, naming the flag: each millisecond or second
/// setting is multiplied into u64 nanoseconds, so an unbounded one overflowed.
#[test]
fn settings_past_their_bounds_are_refused_naming_the_flag() {
    for (cmd, flag, value) in [
        ("publish", "--pipeline", "0"),
        ("publish", "--pipeline", "1000000000"),
    ]
    .into_iter()
    .chain(
        [
            ("--stall-timeout-ms", "99999999999999"),
            ("--heartbeat-ms", "0"),
            ("--handshake-timeout-ms", "3600001"),
            ("--redis-heartbeat-timeout-ms", "18446744073710"),
            ("--idle-timeout-s", "18446744074"),
            ("--tick-us", "0"),
            ("--msgs-per-s", "9223372036854775808"),
            ("--out-buffer-kib", "0"),
        ]
        .map(|(f, v)| ("run", f, v)),
    ) {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
            // --help after it: a value wrongly taken ends the run with help, not a server
            .args([cmd, flag, value, "--help"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag} {value} was taken");
        assert!(
            err.contains(flag) && err.contains("not in"),
            "{flag}: {err}"
        );
    }
}
