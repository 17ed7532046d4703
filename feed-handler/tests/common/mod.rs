//! Helpers shared by the integration tests.
#![allow(dead_code)]

use feed_handler::capture::{self, Item};
use feed_handler::moldudp64::Packet;
use std::path::PathBuf;

/// The real Nasdaq captures, read in place from `../shared/` beside the repository.
/// `None` (the test is skipped with a note) when they are absent, except in CI (`CI=true`),
/// where their absence fails the test.
pub fn captures_dir() -> Option<PathBuf> {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/nasdaq-itch50-captures");
    if dir.is_dir() {
        return Some(dir);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "the real captures are missing at {} (required in CI)",
            dir.display()
        );
    }
    eprintln!("skipped: {} not found", dir.display());
    None
}

/// One MoldUDP64 packet of a capture: destination port, sequence, count field, block lengths,
/// and the messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacketInfo {
    pub port: u16,
    pub sequence: u64,
    pub count: u16,
    pub block_lens: Vec<u16>,
    pub messages: Vec<(u64, Vec<u8>)>,
}

/// Every MoldUDP64 packet in a capture file, in file order.
pub fn packets(path: &std::path::Path) -> Vec<PacketInfo> {
    let mut cap = capture::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = Vec::new();
    while let Some(item) = cap.next_item().expect("readable capture") {
        let Item::Frame(rec) = item else {
            panic!("not a packet capture")
        };
        let d = capture::udp_in_frame(rec.linktype, rec.data)
            .expect("good frame")
            .expect("UDP");
        let p = Packet::parse(d.payload).expect("valid MoldUDP64");
        let messages: Vec<(u64, Vec<u8>)> = p.messages().map(|(s, m)| (s, m.to_vec())).collect();
        out.push(PacketInfo {
            port: d.dst.port(),
            sequence: p.sequence(),
            count: p.count_field(),
            block_lens: messages.iter().map(|(_, m)| m.len() as u16).collect(),
            messages,
        });
    }
    out
}

pub fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}
