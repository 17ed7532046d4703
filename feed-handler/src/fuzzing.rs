//! The bodies of the `cargo fuzz` targets (`feed-handler/fuzz/`). Each takes arbitrary bytes
//! and must neither panic nor loop; each checks what it can about the result. The tests run
//! them over the committed seeds and over mutations of them, so the targets cannot rot.

use crate::capture::{self, Source};
use crate::itch;
use crate::moldudp64::{Packet, Request};
use crate::soupbintcp;
use zerocopy::IntoBytes;

/// One ITCH message: a good parse re-encodes to the same bytes.
pub fn itch_message(data: &[u8]) {
    if let Ok(m) = itch::parse(data) {
        assert_eq!(m.as_bytes(), data);
        assert_eq!(itch::expected_len(m.msg_type()), Some(data.len()));
    }
}

/// One MoldUDP64 packet: a good parse accounts for every byte; every message inside is parsed.
pub fn mold_packet(data: &[u8]) {
    if let Ok(p) = Packet::parse(data) {
        let mut bytes = 20usize;
        let mut n = 0u64;
        for (seq, msg) in p.messages() {
            assert_eq!(seq, p.sequence() + n);
            bytes += 2 + msg.len();
            n += 1;
            itch_message(msg);
        }
        assert_eq!(n, p.message_count() as u64);
        assert_eq!(bytes, data.len());
        assert_eq!(p.header().as_bytes(), &data[..20]);
    }
    if let Ok(r) = Request::parse(data) {
        assert_eq!(&r.to_bytes()[..], data);
    }
}

fn drain(data: &[u8]) {
    let src = Source(Box::new(std::io::Cursor::new(data.to_vec())));
    if let Ok(mut cap) = capture::from_reader(src) {
        let mut n = 0;
        while let Ok(Some(item)) = cap.next_item() {
            if let capture::Item::Frame(rec) = item
                && let Ok(Some(d)) = capture::udp_in_frame(rec.linktype, rec.data)
            {
                mold_packet(d.payload);
            }
            n += 1;
            if n > 100_000 {
                break;
            }
        }
    }
}

/// A pcap file: read every record and every datagram in it.
pub fn pcap_file(data: &[u8]) {
    drain(data)
}

/// A pcapng file: read every block.
pub fn pcapng_file(data: &[u8]) {
    drain(data)
}

/// A BinaryFILE: walk every record, streaming and in memory, and the two must agree.
pub fn binaryfile(data: &[u8]) {
    let walked: Vec<_> = capture::binaryfile::Records::new(data).collect();
    let mut r = capture::BinaryFileReader::new(data);
    let mut streamed = Vec::new();
    loop {
        match r.next_message() {
            Ok(Some((_, m))) => {
                itch_message(m);
                streamed.push(Ok(m.to_vec()));
            }
            Ok(None) => break,
            Err(_) => {
                streamed.push(Err(()));
                break;
            }
        }
    }
    let walked: Vec<_> = walked
        .into_iter()
        .map(|r| r.map(|m| m.to_vec()).map_err(|_| ()))
        .collect();
    assert_eq!(walked, streamed);
}

/// A SoupBinTCP stream: split at every packet; a decoded packet re-encodes to the same bytes.
pub fn soup_stream(data: &[u8]) {
    let mut rest = data;
    while let Ok(Some((p, n))) = soupbintcp::decode(rest) {
        let mut out = Vec::new();
        if soupbintcp::encode(&p, &mut out) {
            // numbers may be written with other padding, so compare by decoding again
            assert_eq!(soupbintcp::decode(&out).unwrap().unwrap().0, p);
        }
        rest = &rest[n..];
    }
}

/// A message's bytes in [`arbiter`]'s packets: made from its sequence number, so any message
/// delivered under another number, or cut, is seen.
fn arb_msg(seq: u64) -> [u8; 3] {
    let b = seq.to_le_bytes();
    [b[0] ^ 0x5a, b[1], b[7]]
}

/// The arbiter's output as checked by [`arbiter`]: in sequence, each exactly once, gaps exactly
/// where nothing was delivered.
struct ArbCheck {
    expected: Option<u64>,
    content: bool,
    max_request: u16,
}

impl crate::arbiter::ArbSink for ArbCheck {
    fn message(&mut self, seq: u64, msg: &[u8], _recv_ns: u64, _line: crate::arbiter::Line) {
        let e = self.expected.get_or_insert(seq);
        assert_eq!(seq, *e, "delivered out of sequence");
        *e += 1;
        if self.content {
            assert_eq!(msg, arb_msg(seq), "message {seq} is not its own bytes");
        }
    }
    fn gap(&mut self, first: u64, count: u64) {
        let e = self.expected.get_or_insert(first);
        assert_eq!(first, *e, "a gap not at the head");
        assert!(count > 0, "an empty gap");
        *e = first
            .checked_add(count)
            .expect("a gap past the last sequence");
    }
    fn request(&mut self, req: Request) {
        assert!(req.count >= 1 && req.count <= self.max_request, "{req:?}");
    }
    fn end_of_session(&mut self, next_seq: u64) {
        if let Some(e) = self.expected {
            assert_eq!(
                next_seq, e,
                "end of session before everything was delivered"
            );
        }
    }
}

/// A/B arbitration and recovery over packets an adversary chooses. Each event of `data` is an op
/// byte (bits 0-1: line A, B, recovery, or none: only time passes; bit 2: raw bytes instead of
/// a built packet; bit 3: another session), a time step in µs (u16), then for a built packet
/// its first sequence relative to the next expected (u16, minus 64: duplicates and packets far
/// ahead) and its message count (u8; 0 is a heartbeat, 255 an end of session), and for raw bytes
/// a length (u8) and the bytes. The arbiter has a small window and small request limits, so
/// every path is near. Checks beyond no panic: messages in sequence, each once, each with its
/// own bytes; gaps only at the head, never empty; requests within the limit; what is held and
/// outstanding within their bounds; an end of session only after everything before it.
pub fn arbiter(data: &[u8]) {
    use crate::arbiter::{ArbConfig, Arbiter, Line};
    let Some((&first, mut rest)) = data.split_first() else {
        return;
    };
    let session = *b"FUZZSESS01";
    let cfg = ArbConfig {
        session: (first & 1 == 0).then_some(crate::itch::Alpha(session)),
        start_seq: (first & 2 == 0).then_some(1),
        window_slots: 16,
        max_payload: 200,
        line_wait_ns: 200_000,
        recovery: first & 4 == 0,
        request_timeout_ns: 1_000_000,
        max_retries: 1,
        max_request: 4,
        max_outstanding: 32,
        max_requests: 8,
    };
    let (window, max_outstanding) = (cfg.window_slots, cfg.max_outstanding);
    let mut check = ArbCheck {
        expected: None,
        content: true,
        max_request: cfg.max_request,
    };
    let mut arb = Arbiter::new(cfg);
    let mut now = 0u64;
    let mut pkt = Vec::with_capacity(1500);
    while rest.len() >= 3 {
        let op = rest[0];
        now += u16::from_be_bytes([rest[1], rest[2]]) as u64 * 1_000;
        rest = &rest[3..];
        let line = match op & 3 {
            0 => Line::A,
            1 => Line::B,
            2 => Line::Recovery,
            _ => {
                arb.poll(now, &mut check);
                continue;
            }
        };
        pkt.clear();
        if op & 4 != 0 {
            let Some((&n, tail)) = rest.split_first() else {
                break;
            };
            let n = (n as usize).min(tail.len());
            pkt.extend_from_slice(&tail[..n]);
            rest = &tail[n..];
            // a raw packet may carry any bytes under any sequence
            check.content = false;
        } else {
            let [d0, d1, count, ..] = *rest else { break };
            rest = &rest[3..];
            let seq = arb
                .next_seq()
                .max(1)
                .saturating_add(u16::from_be_bytes([d0, d1]) as u64)
                .saturating_sub(64)
                .max(1);
            let wrong = *b"OTHERSESS1";
            pkt.extend_from_slice(if op & 8 != 0 { &wrong } else { &session });
            pkt.extend_from_slice(&seq.to_be_bytes());
            let n = match count {
                0 => 0,
                255 => 0xffff,
                n => n as u16 % 40,
            };
            pkt.extend_from_slice(&n.to_be_bytes());
            if n != 0xffff {
                for s in seq..seq.saturating_add(n as u64) {
                    pkt.extend_from_slice(&3u16.to_be_bytes());
                    pkt.extend_from_slice(&arb_msg(s));
                }
            }
        }
        arb.on_packet(now, line, &pkt, &mut check);
        arb.poll(now, &mut check);
        assert!(arb.held() <= window, "held {}", arb.held());
        assert!(
            arb.outstanding() <= max_outstanding,
            "outstanding {}",
            arb.outstanding()
        );
    }
    // time runs on: every hole is filled or given up
    for _ in 0..8 {
        now += 5_000_000;
        arb.poll(now, &mut check);
    }
}

/// xorshift64*, for mutations that are the same on every run.
fn rnd(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

/// Runs the fuzz target body `f` the way the tests do (every crate's targets share this): over
/// every committed seed of `target` (`feed-handler/fuzz/seeds/TARGET/`, at least `min` of them)
/// and 1,500 deterministic mutations of each: bit flips, truncations, byte stomps, splices with
/// another seed.
pub fn seeds_and_mutations(target: &str, min: usize, f: fn(&[u8])) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    let files: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("no seeds for {target} in {}: {e}", dir.display()))
        .map(|e| std::fs::read(e.expect("a seed").path()).expect("a seed's bytes"))
        .collect();
    assert!(files.len() >= min, "{target}: {} seeds", files.len());
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for seed in &files {
        f(seed);
        for _ in 0..1500 {
            let mut m = seed.clone();
            match rnd(&mut state) % 4 {
                0 if !m.is_empty() => {
                    for _ in 0..1 + rnd(&mut state) % 4 {
                        let i = (rnd(&mut state) % m.len() as u64) as usize;
                        m[i] ^= 1 << (rnd(&mut state) % 8);
                    }
                }
                1 => m.truncate((rnd(&mut state) % (m.len() as u64 + 1)) as usize),
                2 if !m.is_empty() => {
                    let i = (rnd(&mut state) % m.len() as u64) as usize;
                    m[i] = [0x00, 0xff, 0x7f, 0x80][(rnd(&mut state) % 4) as usize];
                }
                _ => {
                    let other = &files[(rnd(&mut state) % files.len() as u64) as usize];
                    let cut = (rnd(&mut state) % (other.len() as u64 + 1)) as usize;
                    m.extend_from_slice(&other[..cut]);
                }
            }
            f(&m);
        }
    }
}
