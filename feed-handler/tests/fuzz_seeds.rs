//! The fuzz targets (`feed-handler/fuzz`, run with `cargo fuzz`) over their committed seeds and
//! over thousands of deterministic mutations of them (bit flips, truncations, splices), so the
//! targets and the parsers behind them are exercised on every test run, not only when someone
//! fuzzes. `FUZZ_SEEDS_WRITE=1 cargo test -p feed-handler --test fuzz_seeds` rewrites the seeds.

use feed_handler::capture::{BinaryFileWriter, PcapWriter, net};
use feed_handler::fuzzing;
use feed_handler::itch::Alpha;
use feed_handler::moldudp64::{self, PacketWriter, Request, Session};
use feed_handler::soupbintcp::{self, SoupPacket};
use pcap_replays::market::{Market, MarketConfig};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;

type Target = fn(&[u8]);

const TARGETS: &[(&str, Target)] = &[
    ("itch_message", fuzzing::itch_message),
    ("mold_packet", fuzzing::mold_packet),
    ("pcap_file", fuzzing::pcap_file),
    ("pcapng_file", fuzzing::pcapng_file),
    ("binaryfile", fuzzing::binaryfile),
    ("soup_stream", fuzzing::soup_stream),
    ("arbiter", fuzzing::arbiter),
];

fn seeds_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds")
}

fn generated(n: u64) -> Vec<Vec<u8>> {
    let mut m = Market::new(MarketConfig {
        seed: 17,
        symbols: 8,
        messages: n,
        initial_orders: 2,
        ..Default::default()
    });
    let mut v = Vec::new();
    while let Some(b) = m.next_message() {
        v.push(b.to_vec());
    }
    v
}

fn make_seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let msgs = generated(3000);
    let mut out = Vec::new();
    // one message of each type
    let mut seen = [false; 256];
    for m in &msgs {
        if !seen[m[0] as usize] {
            seen[m[0] as usize] = true;
            out.push(("itch_message", format!("type_{:02x}", m[0]), m.clone()));
        }
    }
    for &t in feed_handler::itch::ALL_TYPES {
        if !seen[t as usize] {
            let mut m = vec![0u8; feed_handler::itch::expected_len(t).unwrap()];
            m[0] = t;
            out.push(("itch_message", format!("type_{t:02x}"), m));
        }
    }
    // MoldUDP64: data packets, heartbeat, end of session, a request
    let s = Session::new("SEED000001").unwrap();
    let mut w = PacketWriter::new(s, 1, 300);
    let mut packets = Vec::new();
    for m in &msgs[..60] {
        if !w.push(m) {
            packets.push(w.finish().to_vec());
            w.next_packet();
            w.push(m);
        }
    }
    for (i, p) in packets.iter().take(4).enumerate() {
        out.push(("mold_packet", format!("data_{i}"), p.clone()));
    }
    out.push((
        "mold_packet",
        "heartbeat".into(),
        moldudp64::control_packet(s, 61, 0).to_vec(),
    ));
    out.push((
        "mold_packet",
        "end_of_session".into(),
        moldudp64::control_packet(s, 61, 0xffff).to_vec(),
    ));
    out.push((
        "mold_packet",
        "request".into(),
        Request {
            session: s,
            sequence: 5,
            count: 10,
        }
        .to_bytes()
        .to_vec(),
    ));
    // pcap, ns and µs, a few frames on two lines
    for nanos in [true, false] {
        let mut pw = PcapWriter::new(Vec::new(), nanos, net::LINKTYPE_ETHERNET).unwrap();
        let src = SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 1), 40000);
        for (i, p) in packets.iter().take(3).enumerate() {
            for port in [26400, 26401] {
                let mut f = Vec::new();
                net::write_udp_frame(
                    src,
                    SocketAddrV4::new(Ipv4Addr::new(239, 100, 1, 1), port),
                    i as u16,
                    p,
                    &mut f,
                );
                pw.write_record(1_700_000_000_000_000_000 + i as u64 * 1000, &f)
                    .unwrap();
            }
        }
        let bytes = pw.into_inner().unwrap();
        out.push((
            "pcap_file",
            if nanos { "ns".into() } else { "us".into() },
            bytes,
        ));
    }
    // pcapng: SHB, IDB (ns), EPBs with the same frames
    let mut ng = Vec::new();
    let block = |ng: &mut Vec<u8>, t: u32, body: &[u8]| {
        let pad = body.len().div_ceil(4) * 4;
        let total = (12 + pad) as u32;
        ng.extend_from_slice(&t.to_le_bytes());
        ng.extend_from_slice(&total.to_le_bytes());
        ng.extend_from_slice(body);
        ng.resize(ng.len() + pad - body.len(), 0);
        ng.extend_from_slice(&total.to_le_bytes());
    };
    let mut shb = 0x1A2B_3C4Du32.to_le_bytes().to_vec();
    shb.extend_from_slice(&[1, 0, 0, 0]);
    shb.extend_from_slice(&(-1i64).to_le_bytes());
    block(&mut ng, 0x0A0D_0D0A, &shb);
    block(
        &mut ng,
        1,
        &[1, 0, 0, 0, 0, 0, 0, 0, 9, 0, 1, 0, 9, 0, 0, 0, 0, 0, 0, 0],
    );
    for p in packets.iter().take(2) {
        let mut f = Vec::new();
        net::write_udp_frame(
            SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 1), 1),
            SocketAddrV4::new(Ipv4Addr::new(239, 100, 1, 1), 26400),
            0,
            p,
            &mut f,
        );
        let mut epb = vec![0u8; 4];
        epb.extend_from_slice(&1u32.to_le_bytes());
        epb.extend_from_slice(&2u32.to_le_bytes());
        epb.extend_from_slice(&(f.len() as u32).to_le_bytes());
        epb.extend_from_slice(&(f.len() as u32).to_le_bytes());
        epb.extend_from_slice(&f);
        block(&mut ng, 6, &epb);
    }
    out.push(("pcapng_file", "two_packets".into(), ng));
    // BinaryFILE
    let mut bw = BinaryFileWriter::new(Vec::new());
    for m in &msgs[..80] {
        bw.write_message(m).unwrap();
    }
    out.push((
        "binaryfile",
        "start_of_day".into(),
        bw.into_inner().unwrap(),
    ));
    // SoupBinTCP: a login, its acceptance, sequenced data, heartbeats, end of session
    let mut soup = Vec::new();
    for p in [
        SoupPacket::LoginRequest {
            username: Alpha::new("user").unwrap(),
            password: Alpha::new("secret").unwrap(),
            session: Session::BLANK,
            sequence: 1,
            heartbeat_timeout_ms: Some(15000),
        },
        SoupPacket::LoginAccepted {
            session: s,
            sequence: 1,
        },
        SoupPacket::SequencedData(&msgs[0]),
        SoupPacket::SequencedData(&msgs[1]),
        SoupPacket::ServerHeartbeat,
        SoupPacket::ClientHeartbeat,
        SoupPacket::LoginRejected { reason: b'A' },
        SoupPacket::Debug(b"hello"),
        SoupPacket::EndOfSession,
        SoupPacket::LogoutRequest,
    ] {
        soupbintcp::encode(&p, &mut soup);
    }
    out.push(("soup_stream", "session".into(), soup));
    // the arbiter's events (see fuzzing::arbiter): op, µs step (u16), then a built packet's
    // sequence offset (u16, 64 = the next expected) and count, or a raw packet's length and bytes
    let built = |line: u8, us: u16, offset: u16, count: u8| {
        let mut e = vec![line];
        e.extend_from_slice(&us.to_be_bytes());
        e.extend_from_slice(&offset.to_be_bytes());
        e.push(count);
        e
    };
    let poll = |us: u16| {
        let mut e = vec![3u8];
        e.extend_from_slice(&us.to_be_bytes());
        e
    };
    let arb = |flags: u8, events: &[Vec<u8>]| {
        let mut v = vec![flags];
        v.extend(events.iter().flatten());
        v
    };
    // in order on A, every packet again on B
    let mut ab = Vec::new();
    for _ in 0..6 {
        ab.push(built(0, 10, 64, 5));
        ab.push(built(1, 5, 59, 5));
    }
    out.push(("arbiter", "a_and_b".into(), arb(0, &ab)));
    // A drops: a packet 10 ahead, B fills part, the rest is requested and the recovery line
    // answers; then a heartbeat ahead and the end of session
    let holes = [
        built(0, 1, 64, 3),
        built(0, 1, 74, 4),
        built(1, 100, 64, 4),
        poll(300),
        built(2, 50, 64, 3),
        poll(2_000),
        built(2, 10, 64, 10),
        built(0, 10, 80, 0),
        poll(5_000),
        built(0, 10, 64, 255),
    ];
    out.push(("arbiter", "recovery".into(), arb(0, &holes)));
    // recovery off, a late join, another session, and raw bytes
    let mut odd = vec![built(0, 1, 200, 6), built(8, 1, 64, 2), poll(1_000)];
    odd.push(vec![4, 0, 1, 5, 1, 2, 3, 4, 5]);
    odd.push(built(1, 1, 64, 7));
    out.push(("arbiter", "late_join_no_recovery".into(), arb(6, &odd)));
    out
}

#[test]
fn seeds_are_committed_and_targets_survive_mutations() {
    let dir = seeds_dir();
    if std::env::var("FUZZ_SEEDS_WRITE").is_ok() {
        for (t, name, bytes) in make_seeds() {
            std::fs::create_dir_all(dir.join(t)).unwrap();
            std::fs::write(dir.join(t).join(name), bytes).unwrap();
        }
    }
    for (target, f) in TARGETS {
        fuzzing::seeds_and_mutations(target, 1, *f);
    }
}
