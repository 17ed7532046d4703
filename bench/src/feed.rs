//! Feed benchmarks: the replayer sends a generated session on loopback multicast lines A and B,
//! the feed handler's agent (pinned) receives, arbitrates and publishes to the ring.
//!
//! - throughput: top-speed replay of N messages; messages per second between the first and the
//!   last kernel receive time, and how many were lost (must be 0).
//! - latency: a fixed rate (default 200k msg/s); wire (kernel receive timestamp) to record
//!   published in the ring, per message, in an HDR histogram.
//! - ring hop: a writer publishes, a reader in another process spins; publish to seen.

use crate::report;
use feed_handler::agent::Agent;
use feed_handler::config::Config;
use feed_handler::journal::journal_path;
use feed_handler::ring::{Read, Record, RingReader, RingWriter};
use feed_handler::sock::realtime_ns;
use hdrhistogram::Histogram;
use pcap_replays::lines::{LinesConfig, default_lines};
use pcap_replays::market::{Market, MarketConfig};
use pcap_replays::packetize::PacketizerConfig;
use pcap_replays::replay::{self, Exchange, Pace, ReplayPacket, ServerStats};
use pcap_replays::session::{Progress, to_binaryfile};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Options.
#[derive(Debug, Clone)]
pub struct FeedBench {
    /// Messages for the throughput run.
    pub messages: u64,
    /// Offered rate of the throughput run, msg/s (0: top speed).
    pub offered_rate: u64,
    /// Message rate of the latency run.
    pub latency_rate: u64,
    /// Messages of the latency run.
    pub latency_messages: u64,
    /// Where `.hdr` files go.
    pub results: PathBuf,
}

fn session(messages: u64, rate: u64) -> Result<Vec<ReplayPacket>, String> {
    let mut m = Market::new(MarketConfig {
        seed: 77,
        symbols: 2000,
        messages,
        rate_per_s: rate,
        ..Default::default()
    });
    let (bytes, _) = to_binaryfile(
        &mut m,
        Vec::with_capacity(messages as usize * 32),
        &mut Progress::new("generate", true),
    )?;
    let path = std::env::temp_dir().join(format!("bench-feed-{}.itch", std::process::id()));
    std::fs::write(&path, &bytes).map_err(|e| e.to_string())?;
    let (p, _) = replay::load(&path, PacketizerConfig::default())?;
    let _ = std::fs::remove_file(&path);
    Ok(p)
}

struct Run {
    ring: PathBuf,
    agent: Agent,
    server: ServerStats,
    /// Replayer send time.
    secs: f64,
    /// From the start of the replay until the ring held every message (or 30 s passed).
    done_secs: f64,
}

/// Replays `packets` at `pace` into a fresh agent (pinned to CPU 1, the replayer to CPU 0).
fn run(
    packets: &[ReplayPacket],
    pace: Pace,
    measure_latency: bool,
    journal: bool,
    tag: &str,
) -> Result<Run, String> {
    let dir = std::env::var("BENCH_RING_DIR").unwrap_or_else(|_| "/dev/shm".into());
    let ring = PathBuf::from(format!("{dir}/bench-{tag}-{}", std::process::id()));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cfg = format!(
        r#"
        ring = "{}"
        ring_capacity = 1048576
        journal = {journal}
        journal_preallocate_mb = {prealloc}
        idle = "busy-spin"
        rcvbuf_bytes = 33554432
        measure_latency = {measure_latency}
        [[channel]]
        name = "bench"
        session = "GEN0000001"
        start_seq = 1
        line_a = {{ group = "239.202.0.1", port = 24000 }}
        line_b = {{ group = "239.202.0.2", port = 24001 }}
        rerequest = "127.0.0.1:24500"
        "#,
        ring.display(),
        journal = journal,
        prealloc = if journal {
            packets.iter().map(|p| p.messages as u64).sum::<u64>() * 128 / (1 << 20) + 64
        } else {
            0
        },
    );
    let mut agent = Agent::new(Config::parse(&cfg)?)?;
    for w in &agent.warnings {
        eprintln!("feed bench: warning: {w}");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let pin = cores > 1;
    let h = std::thread::spawn(move || {
        if pin && !feed_handler::sock::pin_current_thread(1) {
            eprintln!("feed bench: could not pin the agent to CPU 1");
        }
        agent.run(&s2).map(|_| agent)
    });
    // the re-request server (recovers kernel drops, if any)
    let total: u64 = packets.iter().map(|p| p.messages as u64).sum();
    let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 24_500);
    let exchange = Exchange::start(
        replay::MessageStore::from_packets(packets),
        Some(Exchange::server_at(addr)),
    )
    .map_err(|e| format!("{addr}: {e}"))?;
    let mut lines = default_lines();
    lines[0].dst = SocketAddrV4::new(Ipv4Addr::new(239, 202, 0, 1), 24_000);
    lines[1].dst = SocketAddrV4::new(Ipv4Addr::new(239, 202, 0, 2), 24_001);
    let lines = LinesConfig {
        lines,
        gaps: vec![],
        seed: 1,
        epoch_offset_ns: 0,
    };
    let socks = (0..2)
        .map(|_| {
            feed_handler::sock::multicast_sender(
                Ipv4Addr::LOCALHOST,
                SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
            )
            .map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, _>>()?;
    // The replayer on CPU 0, in a thread of its own (the main thread stays unpinned, so what
    // it spawns later is not tied to CPU 0).
    let start = Instant::now();
    let secs = std::thread::scope(|sc| {
        sc.spawn(|| {
            if pin {
                feed_handler::sock::pin_current_thread(0);
            }
            let t = Instant::now();
            exchange
                .play_on(socks, packets, pace, lines, 1, &AtomicBool::new(false))
                .map(|_| t.elapsed().as_secs_f64())
                .map_err(|e| e.to_string())
        })
        .join()
        .map_err(|_| "replayer panicked".to_string())?
    })?;
    // wait (bounded) until everything is delivered or declared lost
    let reader = RingReader::attach(&ring).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while reader.head() < total && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    let done_secs = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let agent = h.join().map_err(|_| "agent panicked")??;
    let server = Arc::try_unwrap(exchange.stop()).unwrap_or_default();
    Ok(Run {
        ring,
        agent,
        server,
        secs,
        done_secs,
    })
}

fn cleanup(ring: &Path) {
    let _ = std::fs::remove_file(ring);
    let _ = std::fs::remove_file(journal_path(ring));
    let _ = std::fs::remove_file(feed_handler::counters::counters_path(ring));
}

pub(crate) fn save(h: &Histogram<u64>, results: &Path, name: &str) -> Option<PathBuf> {
    use hdrhistogram::serialization::{Serializer, V2Serializer};
    std::fs::create_dir_all(results).ok()?;
    let path = results.join(format!("{name}.hdr"));
    let mut f = std::fs::File::create(&path).ok()?;
    V2Serializer::new().serialize(h, &mut f).ok()?;
    Some(path)
}

/// Runs the three parts and prints their `BENCH` lines.
pub fn run_all(o: &FeedBench) -> Result<(), String> {
    // Throughput: full packets (a fast feed fills them), top speed.
    eprintln!("feed bench: generating {} messages", o.messages);
    let packets = session(o.messages, 50_000_000)?;
    let total: u64 = packets.iter().map(|p| p.messages as u64).sum();
    let pace = if o.offered_rate == 0 {
        Pace::Top
    } else {
        Pace::Rate(o.offered_rate)
    };
    eprintln!(
        "feed bench: {} packets, replaying at {pace:?}",
        packets.len()
    );
    // With the journal (the configuration a deployment runs), then without it.
    for (journal, prefix) in [(true, "feed"), (false, "feed_nojournal")] {
        let r = run(&packets, pace, false, journal, "tput")?;
        let (_, c, drops) = r.agent.channel_counters().remove(0);
        let offered = if o.offered_rate == 0 {
            "top".to_string()
        } else {
            o.offered_rate.to_string()
        };
        let x = [
            ("msgs", total.to_string()),
            ("offered", offered),
            ("journal", journal.to_string()),
        ];
        report(
            &format!("{prefix}_msgs_per_s"),
            c.delivered as f64 / r.done_secs,
            "msg/s",
            &x,
        );
        report(
            &format!("{prefix}_lost_msgs"),
            (total - c.delivered) as f64,
            "msgs",
            &x,
        );
        report(
            &format!("{prefix}_recovered_msgs"),
            c.recovered as f64,
            "msgs",
            &x,
        );
        report(
            &format!("{prefix}_socket_drops"),
            (drops[0] + drops[1]) as f64,
            "datagrams",
            &x,
        );
        report(
            &format!("{prefix}_rerequests"),
            r.server.requests.load(Ordering::Relaxed) as f64,
            "requests",
            &x,
        );
        if journal {
            report(
                "feed_replayer_msgs_per_s",
                total as f64 / r.secs,
                "msg/s",
                &x,
            );
        }
        cleanup(&r.ring);
    }
    drop(packets);

    // Latency at a fixed rate.
    eprintln!(
        "feed bench: latency at {} msg/s, {} messages",
        o.latency_rate, o.latency_messages
    );
    let packets = session(o.latency_messages, o.latency_rate)?;
    let r = run(&packets, Pace::Rate(o.latency_rate), true, true, "lat")?;
    let h = r.agent.latency().cloned().ok_or("no latency histogram")?;
    let x = [
        ("msgs", h.len().to_string()),
        ("rate", o.latency_rate.to_string()),
    ];
    report(
        "wire_to_ring_p50_us",
        h.value_at_quantile(0.50) as f64 / 1000.0,
        "us",
        &x,
    );
    report(
        "wire_to_ring_p99_us",
        h.value_at_quantile(0.99) as f64 / 1000.0,
        "us",
        &x,
    );
    report(
        "wire_to_ring_p999_us",
        h.value_at_quantile(0.999) as f64 / 1000.0,
        "us",
        &x,
    );
    report("wire_to_ring_max_us", h.max() as f64 / 1000.0, "us", &x);
    if let Some(p) = save(&h, &o.results, "wire_to_ring") {
        eprintln!("feed bench: histogram saved to {}", p.display());
    }
    cleanup(&r.ring);

    // Ring hop to another process.
    ring_hop(o)
}

/// Publishes 1M records, one every ~2 µs, while a reader process spins on the ring.
fn ring_hop(o: &FeedBench) -> Result<(), String> {
    let ring = PathBuf::from(format!("/dev/shm/bench-hop-{}", std::process::id()));
    let n: u64 = 1_000_000;
    let mut w = RingWriter::create(&ring, 1 << 16).map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let child = std::process::Command::new(exe)
        .args([
            "ring-hop-reader",
            &ring.display().to_string(),
            &n.to_string(),
            &o.results.display().to_string(),
        ])
        .stdout(std::process::Stdio::inherit())
        .spawn()
        .map_err(|e| e.to_string())?;
    let multi = std::thread::available_parallelism().map_or(1, |n| n.get()) > 1;
    std::thread::scope(|sc| {
        sc.spawn(|| {
            if multi {
                feed_handler::sock::pin_current_thread(0);
            }
            // let the reader attach and start spinning
            std::thread::sleep(Duration::from_millis(300));
            for seq in 1..=n {
                let t = Instant::now();
                let rec = Record::message(0, seq, 0, realtime_ns(), &[0u8; 36]).expect("fits");
                w.publish(&rec);
                while t.elapsed() < Duration::from_micros(2) {
                    std::hint::spin_loop();
                }
            }
        });
    });
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    cleanup(&ring);
    if !out.status.success() {
        return Err("ring hop reader failed".into());
    }
    Ok(())
}

/// The reader process of the ring hop: spins on the ring, records publish-to-seen.
pub fn ring_hop_reader(ring: &str, n: u64, results: &str) -> Result<(), String> {
    if std::thread::available_parallelism().map_or(1, |n| n.get()) > 1 {
        feed_handler::sock::pin_current_thread(1);
    }
    let mut r = RingReader::attach(ring).map_err(|e| e.to_string())?;
    r.seek(0);
    let mut h = Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3).expect("bounds");
    let (mut seen, mut laps) = (0u64, 0u64);
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen < n && Instant::now() < deadline {
        match r.read() {
            Read::Record(rec) => {
                h.saturating_record(realtime_ns().saturating_sub(rec.recv_ns));
                seen += 1;
            }
            Read::Empty => std::hint::spin_loop(),
            Read::Overrun { oldest, .. } => {
                laps += 1;
                r.seek(oldest);
            }
        }
    }
    let x = [("records", seen.to_string()), ("laps", laps.to_string())];
    report("ring_hop_p50_ns", h.value_at_quantile(0.5) as f64, "ns", &x);
    report(
        "ring_hop_p99_ns",
        h.value_at_quantile(0.99) as f64,
        "ns",
        &x,
    );
    report(
        "ring_hop_p999_ns",
        h.value_at_quantile(0.999) as f64,
        "ns",
        &x,
    );
    save(&h, Path::new(results), "ring_hop");
    Ok(())
}
