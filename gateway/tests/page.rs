//! The web page in a real browser: headless Chromium (Debian's) driven over the DevTools
//! protocol by `page_check.py` against a gateway serving a quote table this test writes, with
//! one symbol halted, one without a bid and one price moving every 100 ms, compressing
//! (`--deflate`), as Chromium offers permessage-deflate. The screenshot is kept in
//! `target/test-artifacts/page.png`. Without chromium the test says so and passes, except under
//! `CI=true`, where `.ci/run` installs it and its absence is a failure.

mod common;
use common::*;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

fn have(cmd: &str, arg: &str) -> bool {
    Command::new(cmd)
        .args(["-c", arg])
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn the_page_shows_live_prices_and_halts_in_chromium() {
    let chromium = Command::new("chromium").arg("--version").output().is_ok();
    if !chromium || !have("python3", "import websockets") {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "chromium or python3 websockets missing in CI"
        );
        eprintln!("skipped: install chromium and python websockets to run the page test");
        return;
    }
    let mut t = Table::new("page", 20);
    t.set(15, |q| q.state = b'H');
    // AAAC has no bid: its price and size both show as absent
    t.set(2, |q| q.bid = None);
    let (mut cfg, lim) = test_cfg(&t.path);
    // compressing: Chromium offers permessage-deflate, so the page runs on it
    cfg.deflate = true;
    let g = Gw::start(cfg, lim);
    let stop = AtomicBool::new(false);
    let shot = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../target/test-artifacts/page.png"
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/page_check.py");
    let status = std::thread::scope(|s| {
        s.spawn(|| {
            // the market moves: AAAA's bid every 100 ms (a clock for the price, not for the test)
            while !stop.load(Ordering::Relaxed) {
                t.set(0, |q| {
                    q.bid = q.bid.map(|(p, n)| (p + 100, n));
                    q.recv_ns = feed_handler::sock::realtime_ns();
                });
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        });
        let st = Command::new("python3")
            .arg(script)
            .arg(g.addr.port().to_string())
            .arg(shot)
            .status();
        stop.store(true, Ordering::Relaxed);
        st
    });
    assert!(status.unwrap().success(), "page_check.py failed");
    assert!(g.metric("gateway_deflate_sessions_total") >= 1);
    assert!(g.metric("gateway_deflated_messages_total") >= 1);
    assert!(
        std::fs::metadata(shot).unwrap().len() > 10_000,
        "a real screenshot"
    );
}
