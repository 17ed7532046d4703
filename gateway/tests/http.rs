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
