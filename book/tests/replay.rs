//! `book replay` as a user runs it.

use std::path::PathBuf;
use std::process::Command;

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_book"))
        .arg("replay")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn sample(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../pcap-replays/samples")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn json_has_every_symbol_with_integer_prices() {
    let (code, out, err) = run(&["--json", &sample("ab-light-loss.pcap")]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let syms = v["symbols"].as_object().unwrap();
    assert_eq!(syms.len(), 40);
    for (name, s) in syms {
        for k in [
            "locate",
            "bid_px",
            "bid_qty",
            "ask_px",
            "ask_qty",
            "last_px",
            "last_qty",
            "volume",
            "bid_levels",
            "ask_levels",
            "state",
            "stale",
        ] {
            assert!(s.get(k).is_some(), "{name} lacks {k}");
        }
        assert_eq!(
            s["stale"], false,
            "{name}: drops on one line at a time lose nothing"
        );
        if let (Some(b), Some(a)) = (s["bid_px"].as_u64(), s["ask_px"].as_u64()) {
            assert!(b < a, "{name} crossed");
        }
    }
}

#[test]
fn a_hole_on_every_line_leaves_every_symbol_stale() {
    let (code, out, _) = run(&["--json", &sample("gap-both-lines.pcap")]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let syms = v["symbols"].as_object().unwrap();
    assert_eq!(syms.len(), 20);
    assert!(syms.values().all(|s| s["stale"] == true));
}

#[test]
fn the_same_session_as_binaryfile_and_as_clean_pcap_gives_the_same_books() {
    // A BinaryFILE and the pcap `pcap-replay convert` would make of it are the same session.
    let (code, a, _) = run(&["--json", &sample("01022024.NASDAQ_ITCH50.gz")]);
    assert_eq!(code, 0);
    let dir = std::env::temp_dir().join(format!("book-replay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pcap = dir.join("s.pcap");
    let mut cap = feed_handler::capture::open(sample("01022024.NASDAQ_ITCH50.gz")).unwrap();
    let feed_handler::capture::Capture::BinaryFile(r) = &mut cap else {
        panic!()
    };
    let lines = pcap_replays::lines::LinesConfig {
        lines: pcap_replays::lines::default_lines(),
        gaps: vec![],
        seed: 1,
        epoch_offset_ns: 0,
    };
    let (bytes, _) = pcap_replays::session::to_pcap(
        r,
        pcap_replays::packetize::PacketizerConfig::default(),
        lines,
        Vec::new(),
        &mut pcap_replays::session::Progress::new("t", false),
    )
    .unwrap();
    std::fs::write(&pcap, bytes).unwrap();
    let (code, b, _) = run(&["--json", pcap.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert_eq!(a, b);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_input_is_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("book-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("garbage");
    std::fs::write(&f, b"no capture here").unwrap();
    let (code, out, err) = run(&[f.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert!(
        err.contains("not a pcap, pcapng or Nasdaq BinaryFILE"),
        "{err}"
    );
    let (code, _, err) = run(&["/nonexistent"]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot open"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
