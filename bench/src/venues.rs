//! Multi-venue benchmark (`bench venues`):
//!
//! 1. Three venue sessions of one seed (Nasdaq, BX, PSX shares: 100/30/20) replayed at once on
//!    three channels' loopback multicast lines into one feed handler (journal on), at a
//!    combined offered rate: messages delivered per second and messages lost.
//! 2. The added cost of consolidation: the same three sessions in memory through per-venue books
//!    (books only), then through books plus the consolidated quote of every symbol a batch
//!    changed, as the conflation thread does: the difference per message.

use crate::report;
use book::books::Books;
use book::consolidate::{VenueQuote, consolidate};
use feed_handler::agent::Agent;
use feed_handler::config::Config;
use pcap_replays::lines::{LinesConfig, default_lines};
use pcap_replays::market::{Market, MarketConfig};
use pcap_replays::packetize::PacketizerConfig;
use pcap_replays::replay::{self, Exchange, Pace};
use pcap_replays::session::{Progress, to_binaryfile};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Options.
#[derive(Debug, Clone)]
pub struct VenuesBench {
    /// Messages of venue 0 (BX and PSX get 30% and 20% of it).
    pub messages: u64,
    /// Combined offered rate, messages per second (0: top speed).
    pub rate: u64,
    /// Symbols.
    pub symbols: usize,
}

const SHARE: [u64; 3] = [100, 30, 20];

fn sessions(o: &VenuesBench) -> Result<Vec<Vec<u8>>, String> {
    (0..3u8)
        .map(|v| {
            let mut m = Market::new(MarketConfig {
                seed: 41,
                symbols: o.symbols,
                messages: o.messages,
                rate_per_s: 50_000_000,
                venue: v,
                ..Default::default()
            });
            to_binaryfile(&mut m, Vec::new(), &mut Progress::new("generate", false)).map(|(b, _)| b)
        })
        .collect()
}

/// Runs the benchmark.
pub fn run(o: &VenuesBench) -> Result<(), String> {
    eprintln!("venues: generating three venue sessions");
    let files = sessions(o)?;
    let counts: Vec<u64> = files
        .iter()
        .map(|b| feed_handler::capture::binaryfile::Records::new(b).count() as u64)
        .collect();
    let total: u64 = counts.iter().sum();
    eprintln!("venues: {counts:?} messages ({total} in all)");
    live(o, &files, &counts)?;
    consolidation(&files, total);
    Ok(())
}

fn live(o: &VenuesBench, files: &[Vec<u8>], counts: &[u64]) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("bench-venues-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let ring = format!("/dev/shm/bench-venues-{}", std::process::id());
    let total: u64 = counts.iter().sum();
    let mut cfg = format!(
        "ring = \"{ring}\"\nring_capacity = 1048576\njournal = true\n\
         journal_preallocate_mb = {}\nidle = \"busy-spin\"\nrcvbuf_bytes = 33554432\n",
        total * 128 / (1 << 20) + 64
    );
    for v in 0..3u16 {
        cfg += &format!(
            "[[channel]]\nname = \"venue{v}\"\nsession = \"GEN0000001\"\nstart_seq = 1\n\
             line_a = {{ group = \"239.205.{v}.1\", port = {} }}\n\
             line_b = {{ group = \"239.205.{v}.2\", port = {} }}\n\
             rerequest = \"127.0.0.1:{}\"\n",
            28_000 + 10 * v,
            28_001 + 10 * v,
            28_500 + v
        );
    }
    let mut agent = Agent::new(Config::parse(&cfg)?)?;
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let pin = std::thread::available_parallelism().map_or(1, |n| n.get()) > 1;
    let h = std::thread::spawn(move || {
        if pin {
            feed_handler::sock::pin_current_thread(1);
        }
        agent.run(&s2).map(|_| agent)
    });
    let mut players = Vec::new();
    for (v, bytes) in files.iter().enumerate() {
        let file = dir.join(format!("v{v}.itch"));
        std::fs::write(&file, bytes).map_err(|e| e.to_string())?;
        let (packets, store) = replay::load(&file, PacketizerConfig::default())?;
        let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 28_500 + v as u16);
        let ex = Exchange::start(store, Some(Exchange::server_at(addr)))
            .map_err(|e| format!("{addr}: {e}"))?;
        let mut lines = default_lines();
        lines[0].dst =
            SocketAddrV4::new(Ipv4Addr::new(239, 205, v as u8, 1), 28_000 + 10 * v as u16);
        lines[1].dst =
            SocketAddrV4::new(Ipv4Addr::new(239, 205, v as u8, 2), 28_001 + 10 * v as u16);
        let lc = LinesConfig {
            lines,
            gaps: vec![],
            seed: 1,
            epoch_offset_ns: 0,
        };
        let pace = if o.rate == 0 {
            Pace::Top
        } else {
            Pace::Rate(o.rate * SHARE[v] / SHARE.iter().sum::<u64>())
        };
        players.push((ex, packets, lc, pace));
    }
    let start = Instant::now();
    std::thread::scope(|sc| {
        for (ex, packets, lc, pace) in &players {
            sc.spawn(move || {
                if pin {
                    feed_handler::sock::pin_current_thread(0);
                }
                let _ = ex.play(packets, *pace, lc.clone());
            });
        }
    });
    let played = start.elapsed().as_secs_f64();
    let reader = feed_handler::ring::RingReader::attach(&ring).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(30);
    // every message, plus one end-of-session record per venue
    while reader.head() < total + 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    let done = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let agent = h.join().map_err(|_| "agent panicked")??;
    let chans = agent.channel_counters();
    let delivered: u64 = chans.iter().map(|c| c.1.delivered).sum();
    let drops: u64 = chans.iter().map(|c| c.2[0] + c.2[1]).sum();
    let offered = if o.rate == 0 {
        "top".into()
    } else {
        o.rate.to_string()
    };
    let x = [
        ("msgs", total.to_string()),
        ("offered", offered),
        (
            "replayed_msgs_per_s",
            format!("{:.0}", total as f64 / played),
        ),
    ];
    report("venues_msgs_per_s", delivered as f64 / done, "msg/s", &x);
    report(
        "venues_lost_msgs",
        total.saturating_sub(delivered) as f64,
        "msgs",
        &x,
    );
    report("venues_socket_drops", drops as f64, "datagrams", &x);
    drop(players);
    for s in ["", ".journal", ".counters"] {
        let _ = std::fs::remove_file(format!("{ring}{s}"));
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Interleaves the venues' messages in proportion to their sizes, as the ring does.
fn interleaved(files: &[Vec<u8>]) -> Vec<(u16, &[u8])> {
    let per: Vec<Vec<&[u8]>> = files
        .iter()
        .map(|b| {
            feed_handler::capture::binaryfile::Records::new(b)
                .filter_map(Result::ok)
                .collect()
        })
        .collect();
    let total: usize = per.iter().map(Vec::len).sum();
    let mut at = vec![0usize; per.len()];
    let mut out = Vec::with_capacity(total);
    for k in 0..total {
        // the venue furthest behind its share of the stream goes next
        let v = (0..per.len())
            .filter(|&v| at[v] < per[v].len())
            .min_by_key(|&v| (at[v] as u128 * total as u128) / per[v].len() as u128)
            .unwrap_or(0);
        let _ = k;
        out.push((v as u16, per[v][at[v]]));
        at[v] += 1;
    }
    out
}

fn consolidation(files: &[Vec<u8>], total: u64) {
    let msgs = interleaved(files);
    // 0: books only; 1: and, per batch, each changed instrument's quote (what single-venue
    // conflation publishes); 2: and its symbol consolidated over the venues
    let pass = |level: u8| -> (f64, u64) {
        let mut books: Vec<Books> = (0..3).map(|_| Books::new()).collect();
        let mut venues: book::consolidate::SymbolMap<Vec<VenueQuote>> = Default::default();
        let mut changed = Vec::new();
        let mut published = 0u64;
        let t = Instant::now();
        for chunk in msgs.chunks(crate_batch()) {
            for (v, m) in chunk {
                books[*v as usize].apply(m);
            }
            if level == 0 {
                continue;
            }
            for (v, b) in books.iter_mut().enumerate() {
                changed.clear();
                b.take_changed(&mut changed);
                for &l in &changed {
                    let Some(x) = b.get(l) else { continue };
                    let Some(sym) = x.symbol else { continue };
                    let view = VenueQuote::of(v as u16, x, x.stale);
                    if level == 1 {
                        published += std::hint::black_box(view).volume & 1;
                        continue;
                    }
                    let e = venues.entry(sym.0).or_default();
                    match e.iter_mut().find(|q| q.channel == v as u16) {
                        Some(q) => *q = view,
                        None => e.push(view),
                    }
                    let c = consolidate(e, |_| false);
                    std::hint::black_box(c);
                    published += 1;
                }
            }
        }
        (t.elapsed().as_nanos() as f64 / total as f64, published)
    };
    let _ = pass(0); // warm-up
    let (books_ns, _) = pass(0);
    let (quotes_ns, _) = pass(1);
    let (both_ns, consolidations) = pass(2);
    report(
        "venues_books_ns_per_msg",
        books_ns,
        "ns",
        &[("msgs", total.to_string()), ("venues", "3".into())],
    );
    report(
        "venues_books_and_quotes_ns_per_msg",
        quotes_ns,
        "ns",
        &[("msgs", total.to_string())],
    );
    report(
        "consolidation_ns_per_msg",
        (both_ns - quotes_ns).max(0.0),
        "ns",
        &[
            ("books_quotes_and_consolidation_ns", format!("{both_ns:.1}")),
            (
                "consolidations_per_msg",
                format!("{:.2}", consolidations as f64 / total as f64),
            ),
        ],
    );
}

fn crate_batch() -> usize {
    book::conflate::BATCH
}
