//! Protocol conformance with real clients: runs `conformance.py` (Python `websockets`, and curl
//! for SSE) against a gateway serving a quote table this test writes, changing the market when
//! the script asks. Without python3-websockets the test says so and passes, except under
//! `CI=true`, where `.ci/run` installs it and its absence is a failure.

mod common;
use common::*;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

fn have_websockets() -> bool {
    Command::new("python3")
        .args(["-c", "import websockets"])
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn python_websockets_client_conforms() {
    conforms(false);
}

/// The same with the gateway compressing (`--deflate`): websockets offers permessage-deflate and
/// compresses what it sends, so both directions go through it.
#[test]
fn python_websockets_client_conforms_with_deflate() {
    conforms(true);
}

fn conforms(deflate: bool) {
    if !have_websockets() {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "python3 websockets missing in CI"
        );
        eprintln!("skipped: pip install websockets to run the conformance test");
        return;
    }
    let mut t = Table::new(if deflate { "proto-deflate" } else { "proto" }, 20);
    let (mut cfg, lim) = test_cfg(&t.path);
    cfg.deflate = deflate;
    let g = Gw::start(cfg, lim);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/conformance.py");
    let mut child = Command::new("python3")
        .arg(script)
        .arg(g.addr.port().to_string())
        .args(deflate.then_some("deflate"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut to = child.stdin.take().unwrap();
    let from = BufReader::new(child.stdout.take().unwrap());
    let mut passed = false;
    for line in from.lines() {
        let line = line.unwrap();
        eprintln!("conformance.py: {line}");
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            ["STEP", action, sym, rest @ ..] => {
                let i = t.index(sym);
                match *action {
                    "move_bid" => t.set(i, |q| q.bid = q.bid.map(|(p, s)| (p + 100, s))),
                    "trade" => t.set(i, |q| {
                        let p = q.last.map_or(1_000_000, |l| l.0) + 300;
                        q.last = Some((p, 50));
                        q.volume += 50;
                    }),
                    "halt" => t.set(i, |q| q.state = b'H'),
                    "stale" => t.set(i, |q| q.stale = true),
                    "fresh" => t.set(i, |q| q.stale = false),
                    "burst" => {
                        let n: usize = rest[0].parse().unwrap();
                        for _ in 0..n {
                            t.set(i, |q| q.bid = q.bid.map(|(p, s)| (p + 100, s)));
                        }
                    }
                    a => panic!("unknown step {a}"),
                }
                writeln!(to, "OK").unwrap();
            }
            ["PASS"] => passed = true,
            _ => {}
        }
    }
    let status = child.wait().unwrap();
    assert!(
        status.success() && passed,
        "conformance.py failed: {status}"
    );
    assert!(g.metric("gateway_policy_closed_total") >= 1);
    assert!(g.metric("gateway_errors_sent_total") >= 10);
}
