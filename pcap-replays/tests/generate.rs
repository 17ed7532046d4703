//! The generator and the converter, end to end through files and the decoder.

use feed_handler::capture::{self, Capture, Item};
use feed_handler::moldudp64::Packet;
use feed_handler::report::{DecodeOptions, decode_file};
use pcap_replays::lines::{LineFaults, LinesConfig, default_lines};
use pcap_replays::market::{Market, MarketConfig};
use pcap_replays::packetize::PacketizerConfig;
use pcap_replays::session::{Progress, to_pcap};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pr-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Every message of a pcap by sequence number (first copy), and how many copies were seen.
fn messages_by_seq(path: &Path) -> (BTreeMap<u64, Vec<u8>>, u64) {
    let mut cap = capture::open(path).unwrap();
    let mut out = BTreeMap::new();
    let mut copies = 0;
    while let Some(Item::Frame(rec)) = cap.next_item().unwrap() {
        let d = capture::udp_in_frame(rec.linktype, rec.data)
            .unwrap()
            .unwrap();
        for (seq, m) in Packet::parse(d.payload).unwrap().messages() {
            copies += 1;
            let prev = out.insert(seq, m.to_vec());
            if let Some(p) = prev {
                assert_eq!(p, m, "two different messages with sequence {seq}");
            }
        }
    }
    (out, copies)
}

#[test]
fn samples_are_reproducible_from_their_commands() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("samples");
    let out = tmpdir("samples");
    let st = Command::new("bash")
        .arg(dir.join("make.sh"))
        .arg(&out)
        .env("PCAP_REPLAY", env!("CARGO_BIN_EXE_pcap-replay"))
        .status()
        .unwrap();
    assert!(st.success());
    let mut n = 0;
    for e in std::fs::read_dir(&out).unwrap() {
        let p = e.unwrap().path();
        let committed = dir.join(p.file_name().unwrap());
        assert_eq!(
            std::fs::read(&p).unwrap(),
            std::fs::read(&committed).unwrap_or_default(),
            "{} differs from what samples/make.sh makes now: re-run it and commit",
            committed.display()
        );
        n += 1;
    }
    assert_eq!(n, 3);
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn faults_lose_exactly_what_the_report_says() {
    let dir = tmpdir("faults");
    let path = dir.join("f.pcap");
    let mut lines = default_lines();
    lines[0].faults = LineFaults::parse("drop=0.05,burst=0.002,burst_len=8,reorder=0.01").unwrap();
    lines[1].faults = LineFaults::parse("drop=0.05,dup=0.02,reorder=0.02").unwrap();
    let cfg = LinesConfig {
        lines,
        gaps: vec![(3000, 50), (7000, 1)],
        seed: 5,
        epoch_offset_ns: 0,
    };
    let mut market = Market::new(MarketConfig {
        seed: 5,
        symbols: 100,
        messages: 20_000,
        ..Default::default()
    });
    let (bytes, sum) = to_pcap(
        &mut market,
        PacketizerConfig::default(),
        cfg,
        Vec::new(),
        &mut Progress::new("t", false),
    )
    .unwrap();
    std::fs::write(&path, bytes).unwrap();
    assert_eq!(sum.messages, 20_000);
    let (a, b) = (&sum.lines[0].1, &sum.lines[1].1);
    assert!(
        a.dropped > 0 && b.dropped > 0 && b.duplicated > 0 && a.reordered > 0 && b.reordered > 0
    );
    // a message is lost only where both lines miss it
    let lost_on = |ranges: &Vec<(u64, u64)>, s: u64| ranges.iter().any(|&(x, y)| x <= s && s < y);
    let expected_lost: Vec<u64> = (1..=20_000)
        .filter(|&s| lost_on(&a.missing, s) && lost_on(&b.missing, s))
        .collect();
    let (got, _) = messages_by_seq(&path);
    let actually_lost: Vec<u64> = (1..=20_000).filter(|s| !got.contains_key(s)).collect();
    assert_eq!(actually_lost, expected_lost);
    assert!((3000..3050).all(|s| actually_lost.contains(&s)) && actually_lost.contains(&7000));
    // the decoder reports the same holes
    let rep = decode_file(&path, &DecodeOptions::default()).unwrap();
    let holes: u64 = rep.gap_ranges().iter().map(|(_, x, y)| y - x).sum();
    assert_eq!(holes, expected_lost.len() as u64);
    assert_eq!(rep.messages.total(), 20_000 - holes);
    assert_eq!(rep.errors(), 0);
    // pcap timestamps never go back, whatever the reordering
    let mut cap = capture::open(&path).unwrap();
    let mut last = 0;
    while let Some(Item::Frame(r)) = cap.next_item().unwrap() {
        assert!(r.ts_ns >= last);
        last = r.ts_ns;
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn convert_turns_a_day_file_into_the_same_messages_on_two_lines() {
    let dir = tmpdir("convert");
    let day = dir.join("03152024.NASDAQ_ITCH50.gz");
    let bin = env!("CARGO_BIN_EXE_pcap-replay");
    let st = Command::new(bin)
        .args([
            "generate",
            "--format",
            "binaryfile",
            "--symbols",
            "60",
            "--messages",
            "30000",
            "--seed",
            "4",
            "-o",
        ])
        .arg(&day)
        .status()
        .unwrap();
    assert!(st.success());
    let pcap = dir.join("day.pcap");
    let out = Command::new(bin)
        .arg("convert")
        .arg(&day)
        .arg("-o")
        .arg(&pcap)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // every BinaryFILE message, in order, is the MoldUDP64 message of the same sequence
    let Capture::BinaryFile(mut r) = capture::open(&day).unwrap() else {
        panic!()
    };
    let (got, copies) = messages_by_seq(&pcap);
    let mut n = 0;
    while let Some((seq, m)) = r.next_message().unwrap() {
        assert_eq!(got.get(&seq).map(|v| &v[..]), Some(m), "message {seq}");
        n += 1;
    }
    assert_eq!((n, got.len() as u64, copies), (30_000, 30_000, 60_000));
    // frames are stamped on the file's date (2024-03-15) at the messages' ITCH times
    let mut cap = capture::open(&pcap).unwrap();
    let Some(Item::Frame(rec)) = cap.next_item().unwrap() else {
        panic!()
    };
    let midnight = pcap_replays::date::parse_iso_date("2024-03-15").unwrap();
    assert!(rec.ts_ns > midnight && rec.ts_ns < midnight + 86_400_000_000_000);
    // a pcap given to convert is refused clearly
    let out = Command::new(bin)
        .arg("convert")
        .arg(&pcap)
        .arg("-o")
        .arg(dir.join("x.pcap"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a BinaryFILE"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_options_are_refused_with_the_reason() {
    let bin = env!("CARGO_BIN_EXE_pcap-replay");
    for (args, want) in [
        (
            vec!["generate", "-o", "/tmp/x.pcap", "--faults-a", "drop=7"],
            "not a probability",
        ),
        (
            vec!["generate", "-o", "/tmp/x.pcap", "--gap", "12"],
            "FIRST:COUNT",
        ),
        (
            vec!["generate", "-o", "/tmp/x.pcap", "--symbols", "70000"],
            "1..=65535",
        ),
        (
            vec![
                "generate",
                "-o",
                "/tmp/x.pcap",
                "--session",
                "WAYTOOLONGNAME",
            ],
            "at most 10",
        ),
        (
            vec!["generate", "-o", "/tmp/x.pcap", "--date", "yesterday"],
            "YYYY-MM-DD",
        ),
    ] {
        let out = Command::new(bin).args(&args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
    }
}
