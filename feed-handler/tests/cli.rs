//! `feed-handler decode` as a user runs it: JSON on good files, a clear error and a non-zero
//! exit on bad ones, never a panic.

mod common;

use std::path::PathBuf;
use std::process::Command;

fn decode(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_feed-handler"))
        .arg("decode")
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

/// A file of `bytes` for one test, removed when dropped (its directory too, once no other
/// test's file is left in it).
struct Tmp(PathBuf);

impl Tmp {
    fn path(&self) -> &str {
        self.0.to_str().expect("a UTF-8 temp path")
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

fn tmp(name: &str, bytes: &[u8]) -> Tmp {
    let dir = std::env::temp_dir().join(format!("fh-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    Tmp(p)
}

#[test]
fn json_summary_has_the_documented_keys() {
    let (code, out, err) = decode(&[&sample("gap-both-lines.pcap"), "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
    for k in [
        "packets",
        "messages",
        "by_type",
        "first_seq",
        "last_seq",
        "gaps",
        "errors",
        "duplicates",
    ] {
        assert!(v.get(k).is_some(), "missing {k}");
    }
    assert_eq!(
        v["messages"].as_u64().unwrap(),
        2000 - v["missing_messages"].as_u64().unwrap()
    );
    assert_eq!(v["first_seq"], 1);
    assert_eq!(v["last_seq"], 2000);
    assert_eq!(v["gaps"], 1);
    let gap = &v["gap_ranges"][0];
    assert!(
        gap["first"].as_u64().unwrap() <= 1000 && gap["last"].as_u64().unwrap() >= 1019,
        "{gap}"
    );
    assert_eq!(v["errors"], 0);
    assert_eq!(v["by_type"]["R"], 20);
    // lines A and B carry every packet: as many duplicates as messages received
    assert_eq!(v["duplicates"], v["messages"]);
}

#[test]
fn binaryfile_gz_decodes() {
    let (code, out, _) = decode(&[&sample("01022024.NASDAQ_ITCH50.gz"), "--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (
            v["format"].as_str(),
            v["messages"].as_u64(),
            v["last_seq"].as_u64()
        ),
        (Some("binaryfile"), Some(5000), Some(5000))
    );
    assert_eq!(v["packets"], 0);
}

#[test]
fn text_summary_reads_well() {
    let (code, out, _) = decode(&[&sample("ab-light-loss.pcap")]);
    assert_eq!(code, 0);
    assert!(out.contains("messages        5000"), "{out}");
    assert!(out.contains("gaps            0"), "{out}");
}

/// `decode dir/*.pcap`: each file summarised in turn; a bad one is said, the others still
/// decoded, and the exit says something failed.
#[test]
fn several_files_are_summarised_one_after_another() {
    let (a, b) = (sample("ab-light-loss.pcap"), sample("gap-both-lines.pcap"));
    let (code, out, err) = decode(&[&a, &b, "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON object a line"))
        .collect();
    assert_eq!(v.len(), 2);
    assert_eq!(
        (v[0]["file"].as_str(), v[0]["gaps"].as_u64()),
        (Some(&a[..]), Some(0))
    );
    assert_eq!(
        (v[1]["file"].as_str(), v[1]["gaps"].as_u64()),
        (Some(&b[..]), Some(1))
    );
    let missing = "/nonexistent/file.pcap";
    let (code, out, err) = decode(&[&a, missing, &b]);
    assert_eq!(code, 1);
    assert!(
        err.contains(missing) && err.contains("cannot open"),
        "{err}"
    );
    assert!(
        out.contains(&format!("== {a}\n")) && out.contains(&format!("== {b}\n")),
        "{out}"
    );
    assert_eq!(out.matches("messages  ").count(), 2, "{out}");
}

#[test]
fn garbage_truncated_and_missing_files_fail_clearly() {
    let garbage = tmp("garbage.bin", b"this is not a capture at all, just text\n");
    let (code, out, err) = decode(&[garbage.path()]);
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert!(
        err.contains("not a pcap, pcapng or Nasdaq BinaryFILE"),
        "{err}"
    );

    let full = std::fs::read(sample("ab-light-loss.pcap")).unwrap();
    let cut = tmp("cut.pcap", &full[..full.len() / 2]);
    let (code, _, err) = decode(&[cut.path(), "--json"]);
    assert_eq!(code, 1);
    assert!(err.contains("truncated"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    let (code, _, err) = decode(&["/nonexistent/file.pcap"]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot open"), "{err}");

    let empty = tmp("empty", b"");
    let (code, _, err) = decode(&[empty.path()]);
    assert_eq!(code, 1);
    assert!(err.contains("empty"), "{err}");
}

#[test]
fn corrupt_packets_inside_a_good_file_are_counted_not_fatal() {
    // Flip bytes in the MoldUDP64 count field of some frames: they are counted as bad packets,
    // the rest decodes.
    let mut bytes = std::fs::read(sample("gap-both-lines.pcap")).unwrap();
    let mut off = 24;
    let mut n = 0;
    let mut corrupted = 0;
    while off + 16 <= bytes.len() {
        let incl = u32::from_le_bytes(bytes[off + 8..off + 12].try_into().unwrap()) as usize;
        let payload = off + 16 + 14 + 20 + 8;
        if n % 10 == 3 && incl > 14 + 20 + 8 + 20 {
            bytes[payload + 18] = 0x7f; // count 0x7fxx: more blocks than present
            corrupted += 1;
        }
        off += 16 + incl;
        n += 1;
    }
    let f = tmp("corrupt.pcap", &bytes);
    let (code, out, _) = decode(&[f.path(), "--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["bad_packets"], corrupted);
    assert_eq!(v["errors"], corrupted);
    assert!(v["error_samples"][0].as_str().unwrap().contains("declares"));
}
