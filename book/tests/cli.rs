//! `book stat` as an operator runs it: the table's figures as text, JSON and Prometheus.

use book::quotes::{Quote, QuoteWriter};
use std::process::Command;

fn stat(quotes: &std::path::Path, how: &str) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_book"))
        .args(["stat", "--quotes", quotes.to_str().unwrap(), how])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every figure in the Prometheus text is what the JSON says, each with its help and type,
/// and every sample line is `name value` with a number (what node_exporter's textfile
/// collector reads).
#[test]
fn prometheus_text_says_what_the_json_says() {
    let dir = std::env::temp_dir().join(format!("book-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("quotes");
    let mut w = QuoteWriter::create(&path, 8, 64).unwrap();
    let q = |sym: &[u8; 8], stale: bool, state: u8| Quote {
        symbol: *sym,
        bid: Some((10_000, 100)),
        ask: Some((10_100, 200)),
        stale,
        state,
        updates: 3,
        // received 2.5 s ago
        recv_ns: feed_handler::sock::realtime_ns() - 2_500_000_000,
        ..Quote::default()
    };
    w.publish(0, &q(b"AAPL    ", false, b'T'));
    w.publish(1, &q(b"MSFT    ", true, b'T'));
    w.publish(2, &q(b"ZVZZT   ", false, b'H'));
    let (code, json, err) = stat(&path, "--json");
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(
        (
            &v["symbols"],
            &v["stale"],
            &v["halted_or_paused"],
            &v["writer_alive"]
        ),
        (&3.into(), &1.into(), &1.into(), &true.into())
    );
    let (code, text, err) = stat(&path, "--prometheus");
    assert_eq!(code, 0, "{err}");
    let mut samples = std::collections::HashMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (name, value) = line.split_once(' ').expect("name value");
        let value: f64 = value.parse().expect("a number");
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "{name} has no help"
        );
        assert!(
            text.contains(&format!("# TYPE {name} ")),
            "{name} has no type"
        );
        samples.insert(name.to_string(), value);
    }
    assert_eq!(samples["book_writer_alive"], 1.0);
    assert_eq!(samples["book_symbols"], 3.0);
    assert_eq!(samples["book_stale_symbols"], 1.0);
    assert_eq!(samples["book_halted_or_paused_symbols"], 1.0);
    assert_eq!(
        samples["book_quote_updates_total"],
        v["updates"].as_f64().unwrap()
    );
    // in seconds, and no younger than the JSON's milliseconds read before it
    let (age_s, json_ms) = (
        samples["book_newest_quote_age_seconds"],
        v["newest_age_ms"].as_f64().unwrap(),
    );
    assert!(
        json_ms >= 2_500.0 && age_s >= 2.5,
        "{json_ms} ms, {age_s} s"
    );
    assert!(
        age_s * 1e3 >= json_ms && age_s < json_ms,
        "{json_ms} ms, {age_s} s"
    );
    drop(w);
    std::fs::remove_dir_all(&dir).unwrap();
}
