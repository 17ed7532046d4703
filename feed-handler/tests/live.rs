//! The live path on loopback multicast: a generated session replayed onto lines A and B with
//! faults (the replayer and its re-request server in this process), the feed handler's agent
//! on its own thread, and readers of the ring checking every record.

use feed_handler::agent::Agent;
use feed_handler::config::Config;
use feed_handler::counters::{CountersReader, counters_path};
use feed_handler::journal::{Start, Subscriber};
use feed_handler::ring::{Kind, Record};
use pcap_replays::lines::{LineFaults, LinesConfig, default_lines};
use pcap_replays::market::{Market, MarketConfig};
use pcap_replays::packetize::PacketizerConfig;
use pcap_replays::replay::{self, Exchange, Pace, ReplayPacket, ServerStats};
use pcap_replays::session::{Progress, to_binaryfile};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Everything one test needs, on its own groups, ports and files.
struct Rig {
    idx: u8,
    dir: PathBuf,
    ring: PathBuf,
    stop: Arc<AtomicBool>,
    agent: Option<std::thread::JoinHandle<Agent>>,
}

impl Rig {
    fn new(idx: u8, extra: &str) -> Rig {
        Rig::with(idx, "", extra)
    }

    /// With `top` at the top level of the configuration and `extra` in the channel.
    fn with(idx: u8, top: &str, extra: &str) -> Rig {
        let dir = std::env::temp_dir().join(format!("fh-live-{}-{idx}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ring = dir.join("ring");
        let cfg = format!(
            r#"
            ring = "{}"
            ring_capacity = {}
            idle = "yield"
            rcvbuf_bytes = 8388608
            {top}
            [[channel]]
            name = "test"
            session = "GEN0000001"
            start_seq = 1
            line_a = {{ group = "239.201.{idx}.1", port = {} }}
            line_b = {{ group = "239.201.{idx}.2", port = {} }}
            rerequest = "127.0.0.1:{}"
            {extra}
            "#,
            ring.display(),
            if extra.contains("small_ring") {
                1024
            } else {
                1 << 16
            },
            22_000 + idx as u16 * 10,
            22_001 + idx as u16 * 10,
            23_000 + idx as u16,
        )
        .replace("small_ring = true", "");
        let cfg = Config::parse(&cfg).unwrap();
        let mut agent = Agent::new(cfg).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let h = std::thread::spawn(move || {
            agent.run(&s2).unwrap();
            agent
        });
        Rig {
            idx,
            dir,
            ring,
            stop,
            agent: Some(h),
        }
    }

    fn lines(&self, fa: &str, fb: &str, gaps: Vec<(u64, u64)>) -> LinesConfig {
        let mut l = default_lines();
        l[0].dst = SocketAddrV4::new(
            Ipv4Addr::new(239, 201, self.idx, 1),
            22_000 + self.idx as u16 * 10,
        );
        l[1].dst = SocketAddrV4::new(
            Ipv4Addr::new(239, 201, self.idx, 2),
            22_001 + self.idx as u16 * 10,
        );
        l[0].faults = LineFaults::parse(fa).unwrap();
        l[1].faults = LineFaults::parse(fb).unwrap();
        LinesConfig {
            lines: l,
            gaps,
            seed: 9,
            epoch_offset_ns: 0,
        }
    }

    /// Replays `packets` (server on or off) and returns what the server did.
    fn replay(
        &self,
        packets: &[ReplayPacket],
        store: replay::MessageStore,
        lines: LinesConfig,
        server: bool,
    ) -> Arc<ServerStats> {
        let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 23_000 + self.idx as u16);
        let exchange = Exchange::start(store, server.then(|| Exchange::server_at(addr))).unwrap();
        exchange.play(packets, Pace::Rate(200_000), lines).unwrap();
        // Serve re-requests until the feed handler has finished the session.
        self.wait_for_eos();
        exchange.stop()
    }

    fn wait_for_eos(&self) {
        let mut s = Subscriber::attach(&self.ring, Start::Beginning).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(Instant::now() < deadline, "no end of session within 60 s");
            let next = match s.next_record() {
                // (lapped past a stopped journal: what is left is enough to see the end)
                Err(feed_handler::ring::RingError::Lost { .. }) => continue,
                r => r.unwrap(),
            };
            match next {
                Some(r) if r.kind == Kind::EndOfSession => return,
                Some(_) => {}
                None => std::thread::yield_now(),
            }
        }
    }

    /// Every record of the session, through the journal.
    fn records(&self) -> Vec<Record> {
        let mut s = Subscriber::attach(&self.ring, Start::Beginning).unwrap();
        let mut v = Vec::new();
        while let Some(r) = s.next_record().unwrap() {
            v.push(r);
        }
        v
    }

    fn stop(mut self) -> Agent {
        self.stop.store(true, Ordering::Relaxed);
        self.agent.take().unwrap().join().unwrap()
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn session(seed: u64, messages: u64) -> (Vec<ReplayPacket>, replay::MessageStore, Vec<Vec<u8>>) {
    let mut m = Market::new(MarketConfig {
        seed,
        symbols: 200,
        messages,
        ..Default::default()
    });
    let (bytes, _) = to_binaryfile(&mut m, Vec::new(), &mut Progress::new("t", false)).unwrap();
    let msgs: Vec<Vec<u8>> = feed_handler::capture::binaryfile::Records::new(&bytes)
        .map(|r| r.unwrap().to_vec())
        .collect();
    let path = std::env::temp_dir().join(format!("fh-live-session-{}-{seed}", std::process::id()));
    std::fs::write(&path, &bytes).unwrap();
    let (p, s) = replay::load(&path, PacketizerConfig::default()).unwrap();
    std::fs::remove_file(&path).unwrap();
    (p, s, msgs)
}

/// The message records must be exactly `msgs` in sequence, except the `lost` ranges, which
/// must appear as gap records with their exact first and count.
fn check(records: &[Record], msgs: &[Vec<u8>], lost: &[(u64, u64)]) {
    let mut seq = 1u64;
    let mut gaps = Vec::new();
    for r in records {
        match r.kind {
            Kind::Message => {
                assert_eq!(r.seq, seq, "messages in sequence, each once");
                assert_eq!(
                    r.data(),
                    &msgs[seq as usize - 1][..],
                    "message {seq} intact"
                );
                assert_eq!(
                    r.exch_ts_ns,
                    feed_handler::itch::parse(r.data()).unwrap().timestamp_ns()
                );
                assert!(
                    r.recv_ns > 1_600_000_000_000_000_000,
                    "receive time is wall clock"
                );
                seq += 1;
            }
            Kind::Gap => {
                assert_eq!(r.seq, seq, "a gap starts where the stream stopped");
                gaps.push((r.seq, r.gap_count));
                seq += r.gap_count;
            }
            Kind::EndOfSession => assert_eq!(r.seq, seq),
        }
    }
    assert_eq!(seq, msgs.len() as u64 + 1, "the whole session");
    assert_eq!(gaps, lost);
    assert_eq!(records.last().unwrap().kind, Kind::EndOfSession);
}

fn counters(rig: &Rig) -> serde_json::Value {
    let r = CountersReader::open(&counters_path(&rig.ring)).unwrap();
    let c = &r.read()[0];
    serde_json::json!({
        "recovered": c.channel[4], "unrecovered": c.channel[5], "gap_events": c.channel[6],
        "a_malformed": c.lines[0][5], "a_line_gaps": c.lines[0][9], "b_delivered": c.lines[1][8],
        "holes": c.channel[2], "rerequests": c.channel[3], "b_line_gaps": c.lines[1][9], "b_out_of_order": c.lines[1][3],
        "a_drops": c.lines[0][10], "b_drops": c.lines[1][10], "b_dups": c.lines[1][2],
        "journal_end": c.channel[10],
    })
}

#[test]
fn drops_on_line_a_only_lose_nothing() {
    let rig = Rig::new(1, "");
    let (packets, store, msgs) = session(1, 20_000);
    rig.replay(&packets, store, rig.lines("drop=0.1", "none", vec![]), true);
    check(&rig.records(), &msgs, &[]);
    let c = counters(&rig);
    assert_eq!(
        (c["unrecovered"].as_u64(), c["gap_events"].as_u64()),
        (Some(0), Some(0))
    );
    assert!(
        c["b_delivered"].as_u64().unwrap() > 0,
        "line B filled line A's holes: {c}"
    );
    assert!(c["a_line_gaps"].as_u64().unwrap() > 0);
    // Line B had every message, so re-requests are only the ones a busy receiver sends before
    // it has read B's copy (a debug build sharing two cores with the replayer does sometimes).
    rig.stop();
}

#[test]
fn drops_on_both_lines_are_recovered_by_re_request() {
    let rig = Rig::new(2, "");
    let (packets, store, msgs) = session(2, 20_000);
    let stats = rig.replay(
        &packets,
        store,
        rig.lines(
            "drop=0.1,reorder=0.02",
            "drop=0.1,dup=0.02,burst=0.005",
            vec![],
        ),
        true,
    );
    check(&rig.records(), &msgs, &[]);
    let c = counters(&rig);
    assert!(c["recovered"].as_u64().unwrap() > 0, "{c}");
    assert_eq!(c["unrecovered"], 0);
    assert!(stats.messages.load(Ordering::Relaxed) >= c["recovered"].as_u64().unwrap());
    rig.stop();
}

#[test]
fn a_range_lost_on_both_lines_without_a_server_is_one_exact_gap() {
    let rig = Rig::new(3, "request_timeout_ms = 20");
    let (packets, store, msgs) = session(3, 10_000);
    // whole packets holding messages 5000..=5019 are lost on both lines
    let lost: Vec<(u64, u64)> = {
        let hit: Vec<&ReplayPacket> = packets
            .iter()
            .filter(|p| p.messages > 0 && p.seq < 5020 && p.seq + p.messages as u64 > 5000)
            .collect();
        let first = hit.first().unwrap().seq;
        let last = hit.last().map(|p| p.seq + p.messages as u64).unwrap();
        vec![(first, last - first)]
    };
    rig.replay(
        &packets,
        store,
        rig.lines("none", "none", vec![(5000, 20)]),
        false,
    );
    check(&rig.records(), &msgs, &lost);
    let c = counters(&rig);
    assert_eq!(
        (c["gap_events"].as_u64(), c["unrecovered"].as_u64()),
        (Some(1), Some(lost[0].1))
    );
    rig.stop();
}

#[test]
fn late_and_overrun_readers_get_the_complete_sequence_through_the_journal() {
    // A 1024-slot ring: a reader that does not read while 20,000 messages go by is lapped.
    let rig = Rig::new(4, "small_ring = true");
    let mut overrun = Subscriber::attach(&rig.ring, Start::Beginning).unwrap();
    let first = overrun.next_record().unwrap();
    assert!(first.is_none(), "nothing yet");
    let (packets, store, msgs) = session(4, 20_000);
    rig.replay(
        &packets,
        store,
        rig.lines("drop=0.02", "drop=0.02", vec![]),
        true,
    );
    let mut got = Vec::new();
    while let Some(r) = overrun.next_record().unwrap() {
        got.push(r);
    }
    check(&got, &msgs, &[]);
    assert!(
        overrun.from_journal > 0,
        "it was lapped and read the journal"
    );
    // and one that attaches after everything, from the start
    check(&rig.records(), &msgs, &[]);
    rig.stop();
}

#[test]
fn a_full_journal_stops_and_the_feed_goes_on() {
    // A journal capped at 1 MiB holds 8,191 records; the session has more. The feed handler
    // used to fail when its journal could not grow ("journal write failed"), stopping the feed
    // for every reader.
    let rig = Rig::with(6, "journal_max_mb = 1", "small_ring = true");
    let mut lapped = Subscriber::attach(&rig.ring, Start::Beginning).unwrap();
    assert!(lapped.next_record().unwrap().is_none());
    let (packets, store, msgs) = session(6, 20_000);
    rig.replay(&packets, store, rig.lines("none", "none", vec![]), true);
    let fits = ((1 << 20) - feed_handler::journal::HEADER) / 128;
    let ring = feed_handler::ring::RingReader::attach(&rig.ring).unwrap();
    assert_eq!(
        (ring.journal_state(), ring.journal_end()),
        (feed_handler::ring::JournalState::Stopped, fits)
    );
    // the reader lapped all along: the journal up to where it stopped, then what it lost
    // named, then the ring to the end of the session
    let mut got: Vec<Record> = Vec::new();
    let lost = loop {
        match lapped.next_record() {
            Ok(Some(r)) => got.push(r),
            Ok(None) => panic!("the reader waited for what will never come"),
            Err(feed_handler::ring::RingError::Lost { from, to, .. }) => break (from, to),
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(lost.0, fits);
    assert_eq!(got.len() as u64, fits);
    while let Some(r) = lapped.next_record().unwrap() {
        got.push(r);
    }
    assert_eq!(got.last().unwrap().kind, Kind::EndOfSession);
    assert_eq!(got.len() as u64, ring.head() - (lost.1 - lost.0));
    // each message intact and in sequence on both sides of the loss
    let mut seq = 0;
    for r in got.iter().filter(|r| r.kind == Kind::Message) {
        assert!(r.seq > seq);
        assert_eq!(r.data(), &msgs[r.seq as usize - 1][..]);
        seq = r.seq;
    }
    assert_eq!(seq, msgs.len() as u64);
    // and the feed handler is still running, its counters whole
    let c = counters(&rig);
    assert_eq!(c["unrecovered"], 0);
    assert_eq!(c["journal_end"], fits, "where the journal stopped");
    rig.stop();
}

#[test]
fn malformed_packets_are_counted_and_skipped() {
    let rig = Rig::new(5, "");
    let tx = feed_handler::sock::multicast_sender(
        Ipv4Addr::LOCALHOST,
        SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
    )
    .unwrap();
    let a = SocketAddrV4::new(Ipv4Addr::new(239, 201, 5, 1), 22_050);
    let (packets, store, msgs) = session(5, 2_000);
    let good = &packets[3].payload;
    let mut truncated = good.clone();
    truncated.truncate(good.len() - 3);
    let mut wrong_count = good.clone();
    wrong_count[19] = wrong_count[19].wrapping_add(1);
    let mut past_end = good.clone();
    past_end[20] = 0xff;
    for bad in [
        &b"tiny"[..],
        &truncated,
        &wrong_count,
        &past_end,
        &[0u8; 1400][..],
    ] {
        tx.send_to(bad, a).unwrap();
    }
    rig.replay(&packets, store, rig.lines("none", "none", vec![]), true);
    check(&rig.records(), &msgs, &[]);
    let c = counters(&rig);
    assert_eq!(c["a_malformed"], 5, "{c}");
    let agent = rig.stop();
    drop(agent);
}
