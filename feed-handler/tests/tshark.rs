//! Wireshark's MoldUDP64 dissector (tshark) agrees with our decoder on every committed sample
//! capture and on the real Nasdaq packets: the same packets, sequence numbers, message counts
//! and block lengths, and nothing malformed. Wireshark's `editcap` also rewrites the samples as
//! pcapng, and our pcapng reader must read the same packets from them.
//!
//! tshark is installed by `.ci/run`; without it the tests are skipped, except in CI.

mod common;

use common::{PacketInfo, captures_dir, packets};
use std::path::{Path, PathBuf};
use std::process::Command;

fn tool(name: &str) -> Option<&str> {
    let ok = Command::new(name)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(name);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{name} is required in CI (.ci/run installs it)");
    }
    eprintln!("skipped: {name} not installed");
    None
}

fn samples() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../pcap-replays/samples");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("pcap-replays/samples")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pcap"))
        .collect();
    v.sort();
    assert!(v.len() >= 2, "committed sample captures");
    v
}

/// What tshark sees: (udp port, sequence, count, block lengths) per MoldUDP64 packet.
fn tshark_packets(file: &Path, ports: &[u16]) -> Vec<(u16, u64, u16, Vec<u16>)> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r").arg(file);
    for p in ports {
        cmd.args(["-d", &format!("udp.port=={p},moldudp64")]);
    }
    cmd.args([
        "-T",
        "fields",
        "-E",
        "separator=;",
        "-e",
        "udp.dstport",
        "-e",
        "moldudp64.sequence",
    ]);
    cmd.args(["-e", "moldudp64.count", "-e", "moldudp64.msglen"]);
    let out = cmd.output().expect("tshark runs");
    assert!(
        out.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(';').collect();
            assert_eq!(f.len(), 4, "line {l:?}");
            let lens = if f[3].is_empty() {
                vec![]
            } else {
                f[3].split(',').map(|x| x.parse().unwrap()).collect()
            };
            (
                f[0].parse().unwrap(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
                lens,
            )
        })
        .collect()
}

/// Frames tshark flags as malformed or with a warning or error.
fn tshark_complaints(file: &Path, ports: &[u16]) -> String {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r").arg(file);
    for p in ports {
        cmd.args(["-d", &format!("udp.port=={p},moldudp64")]);
    }
    cmd.args([
        "-Y",
        "_ws.malformed || _ws.expert.severity >= warning",
        "-T",
        "fields",
        "-e",
        "frame.number",
    ]);
    let out = cmd.output().expect("tshark runs");
    String::from_utf8(out.stdout).unwrap()
}

fn ours(infos: &[PacketInfo]) -> Vec<(u16, u64, u16, Vec<u16>)> {
    infos
        .iter()
        .map(|p| (p.port, p.sequence, p.count, p.block_lens.clone()))
        .collect()
}

fn agree(file: &Path, ports: &[u16]) {
    let theirs = tshark_packets(file, ports);
    let mine = ours(&packets(file));
    assert!(!mine.is_empty());
    assert_eq!(theirs.len(), mine.len(), "{}: packet count", file.display());
    for (i, (t, m)) in theirs.iter().zip(&mine).enumerate() {
        assert_eq!(t, m, "{}: packet {}", file.display(), i + 1);
    }
    let complaints = tshark_complaints(file, ports);
    assert!(
        complaints.trim().is_empty(),
        "{}: tshark complains about frames {complaints}",
        file.display()
    );
}

#[test]
fn tshark_agrees_on_every_sample() {
    if tool("tshark").is_none() {
        return;
    }
    for f in samples() {
        agree(&f, &[26400, 26401]);
    }
}

#[test]
fn tshark_agrees_on_the_real_nasdaq_packets() {
    if tool("tshark").is_none() {
        return;
    }
    let Some(dir) = captures_dir() else { return };
    agree(
        &dir.join("Nasdaq.Equities.TotalView.Itch.v5.0/Multiple.Packets.pcap"),
        &[26477],
    );
    agree(
        &dir.join("Bx.Equities.TotalView.Itch.v5.0/OrderReplaceMessage.pcap"),
        &[25475],
    );
}

#[test]
fn editcap_pcapng_reads_the_same_packets() {
    if tool("editcap").is_none() {
        return;
    }
    let tmp = std::env::temp_dir().join(format!("fh-pcapng-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    for f in samples() {
        let ng = tmp.join(f.file_name().unwrap()).with_extension("pcapng");
        let st = Command::new("editcap")
            .args(["-F", "pcapng"])
            .arg(&f)
            .arg(&ng)
            .status()
            .unwrap();
        assert!(st.success());
        let head = std::fs::read(&ng).unwrap();
        assert_eq!(
            &head[..4],
            &[0x0a, 0x0d, 0x0d, 0x0a],
            "editcap wrote pcapng"
        );
        assert_eq!(packets(&ng), packets(&f), "{}", f.display());
        // and a microsecond pcap, as most capture tools write
        let us = tmp.join("us.pcap");
        let st = Command::new("editcap")
            .args(["-F", "libpcap"])
            .arg(&f)
            .arg(&us)
            .status()
            .unwrap();
        assert!(st.success());
        assert_eq!(packets(&us), packets(&f));
    }
    std::fs::remove_dir_all(&tmp).unwrap();
}
