//! The plain HTTP endpoints against a gateway serving a quote table and a bar log this test
//! writes: the directory, REST quotes, bars, `/healthz` going 503 with a reason when a symbol is
//! stale and 200 again when it clears, `/metrics`, `/`, and the errors.

mod common;
use book::barlog::BarLogWriter;
use common::*;

fn json(addr: std::net::SocketAddr, path: &str) -> (String, serde_json::Value) {
    let (status, body) = http_get(addr, path);
    let v = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
    (status, v)
}

#[test]
fn rest_directory_bars_health_and_errors() {
    let mut t = Table::new("http", 3);
    t.set(2, |q| q.state = b'H');
    let bars_path = book::barlog::beside(&t.path);
    let mut log = BarLogWriter::create(&bars_path).unwrap();
    for k in 0..5u64 {
        log.append(bar(*b"AAAA    ", 60, k)).unwrap();
    }
    log.flush().unwrap();
    let (cfg, lim) = test_cfg(&t.path);
    let g = Gw::start(cfg, lim);
    let a = g.addr;

    // wait for the workers to read the table: healthz is 503 until then, then 200
    let mut ok = false;
    for _ in 0..500 {
        if http_get(a, "/healthz").0.contains("200") {
            ok = true;
            break;
        }
        std::thread::yield_now();
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(ok, "healthz never 200");

    let (st, v) = json(a, "/v1/symbols");
    assert!(st.contains("200"));
    let syms = v["symbols"].as_array().unwrap();
    assert_eq!(syms.len(), 3);
    assert_eq!(syms[2]["s"], "AAAC");
    assert_eq!(syms[2]["state"], "halted");
    assert_eq!(syms[0]["locate"], 1);

    let (_, v) = json(a, "/v1/quotes?symbols=AAAB,ZZZZ");
    assert_eq!(v["quotes"][0]["s"], "AAAB");
    assert_eq!(v["quotes"][0]["bid"], "100.0100");
    assert_eq!(v["quotes"][0]["vol"], 1000);
    assert_eq!(v["unknown"][0], "ZZZZ");

    let (_, v) = json(a, "/v1/bars?symbol=AAAA&interval=1m&limit=3");
    let b = v["bars"].as_array().unwrap();
    assert_eq!(b.len(), 3, "the last 3 of 5");
    assert_eq!(b[0]["t"], 34_200_000_000_000u64 + 2 * 60_000_000_000);
    assert_eq!(b[2]["h"], "100.0504");
    assert_eq!(b[2]["v"], 500);
    // bars appended later are read on the next request
    let mut sixth = bar(*b"AAAA    ", 60, 5);
    sixth.bar.close = 1;
    log.append(sixth).unwrap();
    log.flush().unwrap();
    let (_, v) = json(a, "/v1/bars?symbol=AAAA&interval=1m&limit=1");
    assert_eq!(v["bars"][0]["c"], "0.0001");
    let (_, v) = json(a, "/v1/bars?symbol=AAAA&interval=1s");
    assert_eq!(v["bars"].as_array().unwrap().len(), 0);

    // a stale symbol: 503 with the reason; cleared: 200
    t.set(1, |q| q.stale = true);
    let mut saw = String::new();
    for _ in 0..500 {
        let (st, body) = http_get(a, "/healthz");
        if st.contains("503") {
            saw = body;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(saw.contains("1 of 3 symbols stale"), "{saw}");
    t.set(1, |q| q.stale = false);
    let mut back = false;
    for _ in 0..500 {
        if http_get(a, "/healthz").0.contains("200") {
            back = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(back);

    // per-venue quotes from the book's per-venue table
    let (st, _) = json(a, "/v1/venues?symbol=AAAA");
    assert!(st.contains("503"), "no per-venue table yet: {st}");
    let vpath = book::quotes::venues_beside(&t.path);
    let mut vw = book::quotes::QuoteWriter::create(&vpath, 8, 16).unwrap();
    for ch in 0..2u16 {
        vw.publish(
            ch as usize,
            &book::quotes::Quote {
                channel: ch,
                locate: 10 + ch,
                bid: Some((1_000_000 + ch as u32, 100)),
                ..t.quotes[0]
            },
        );
    }
    let (_, v) = json(a, "/v1/venues?symbol=AAAA");
    let vs = v["venues"].as_array().unwrap();
    assert_eq!(vs.len(), 2);
    assert_eq!(
        (vs[1]["venue"].as_u64(), vs[1]["locate"].as_u64()),
        (Some(1), Some(11))
    );
    assert_eq!(vs[1]["quote"]["bid"], "100.0001");
    std::fs::remove_file(&vpath).unwrap();

    // errors
    for (path, code) in [
        ("/nope", "404"),
        ("/v1/quotes", "400"),
        ("/v1/bars?symbol=AAAA&interval=5m", "400"),
        ("/v1/bars?symbol=AAAA&limit=0", "400"),
        ("/v1/bars?symbol=AAAA&venue=nasdaq", "400"),
        ("/v1/bars", "400"),
        ("/v1/ws", "426"),
    ] {
        let (st, v) = json(a, path);
        assert!(st.contains(code), "{path}: {st}");
        assert!(v["error"].is_string(), "{path}");
    }
    let (st, body) = http_get(a, "/");
    assert!(st.contains("200") && body.contains("<title>Live prices</title>"));
    let (_, m) = http_get(a, "/metrics");
    assert!(m.contains("# TYPE gateway_http_requests_total counter"));
    assert!(g.metric("gateway_http_requests_total") >= 10);
    drop(g);
    std::fs::remove_file(&bars_path).unwrap();
}

/// A quote source that gives nothing, and says it is not ready, until its gate opens: a
/// gateway just started whose quotes are not loaded yet.
struct Gated {
    inner: gateway::source::ShmSource,
    open: &'static std::sync::atomic::AtomicBool,
}

impl gateway::source::QuoteSource for Gated {
    fn poll(&mut self, now_ns: u64, max: usize, f: &mut dyn FnMut(&book::quotes::Quote)) -> usize {
        if !self.ready() {
            return 0;
        }
        self.inner.poll(now_ns, max, f)
    }
    fn health(&self) -> gateway::source::Health {
        self.inner.health()
    }
    fn ready(&self) -> bool {
        self.open.load(std::sync::atomic::Ordering::Acquire) && self.inner.ready()
    }
}

fn gated(
    cfg: gateway::server::ServerCfg,
    lim: gateway::session::Limits,
) -> (Gw, &'static AtomicBool) {
    let open: &'static AtomicBool = Box::leak(Box::new(AtomicBool::new(false)));
    let p = cfg.quotes.clone();
    let g = Gw::start_with(
        cfg,
        lim,
        Box::leak(Box::new(AtomicBool::new(false))),
        &|| {
            Box::new(Gated {
                inner: gateway::source::ShmSource::new(p.clone()),
                open,
            })
        },
    );
    (g, open)
}

use std::sync::atomic::AtomicBool;

#[test]
fn requests_for_quotes_wait_until_the_source_has_loaded_them() {
    let t = Table::new("ready", 3);
    let (cfg, lim) = test_cfg(&t.path);
    let (g, open) = gated(cfg, lim);
    let a = g.addr;

    // a WebSocket, REST quotes and the directory, asked before any quote is loaded: held
    let ws = std::thread::spawn(move || {
        let mut c = Raw::connect(a);
        c.text(r#"{"op":"subscribe","id":1,"symbols":["AAAB","NOPE"]}"#);
        c.json()
    });
    let rest = std::thread::spawn(move || json(a, "/v1/quotes?symbols=AAAC"));
    let dir = std::thread::spawn(move || json(a, "/v1/symbols"));
    let mut held = 0;
    for _ in 0..1000 {
        held = g.metric("gateway_requests_held_total");
        if held == 3 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(held, 3, "the three requests are held");
    // health says why; the rest of HTTP is served meanwhile
    let (st, body) = http_get(a, "/healthz");
    assert!(
        st.contains("503") && body.contains("quotes still loading"),
        "{st} {body}"
    );
    assert!(http_get(a, "/").0.contains("200"));

    open.store(true, std::sync::atomic::Ordering::Release);
    // the symbols are known: not one called unknown for not being loaded yet
    let sub = ws.join().unwrap();
    assert_eq!(sub["type"], "subscribed", "{sub}");
    assert_eq!(sub["symbols"], serde_json::json!(["AAAB"]), "{sub}");
    assert_eq!(sub["unknown"], serde_json::json!(["NOPE"]), "{sub}");
    let (st, v) = rest.join().unwrap();
    assert!(st.contains("200"), "{st}");
    assert_eq!(v["quotes"][0]["s"], "AAAC", "{v}");
    assert_eq!(v["unknown"], serde_json::json!([]), "{v}");
    let (st, v) = dir.join().unwrap();
    assert!(st.contains("200"), "{st}");
    assert_eq!(v["symbols"].as_array().map(Vec::len), Some(3), "{v}");
    assert_eq!(g.metric("gateway_requests_unready_total"), 0);
}

#[test]
fn a_request_held_past_the_handshake_timeout_is_told_why() {
    let t = Table::new("unready", 2);
    let (mut cfg, lim) = test_cfg(&t.path);
    cfg.handshake_timeout_ns = 200_000_000;
    let (g, _never) = gated(cfg, lim);
    let mut s = std::net::TcpStream::connect(g.addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    use std::io::{Read, Write};
    write!(
        s,
        "GET /v1/ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    let mut r = String::new();
    s.read_to_string(&mut r).unwrap();
    assert!(r.starts_with("HTTP/1.1 503"), "{r}");
    assert!(r.contains("quotes not loaded yet"), "{r}");
    assert_eq!(g.metric("gateway_requests_unready_total"), 1);
    assert_eq!(g.metric("gateway_handshake_timeouts_total"), 0);
}
