//! Book benchmark: decode plus order books over a generated BinaryFILE held in memory (thousands
//! of symbols, over a million live orders at peak), beside the `itch-book` Python package (C++
//! core) timing only its `Session.feed` with no output tables, on the same file in the same run.

use crate::report;
use book::books::Books;
use feed_handler::capture::binaryfile::Records;
use hdrhistogram::Histogram;
use pcap_replays::market::{Market, MarketConfig};
use pcap_replays::session::{Progress, to_binaryfile};
use std::time::Instant;

/// Options.
#[derive(Debug, Clone)]
pub struct BookBench {
    /// Messages.
    pub messages: u64,
    /// Symbols.
    pub symbols: usize,
    /// Resting orders per symbol before the flow (sets the peak of live orders).
    pub initial_orders: u32,
    /// Timed passes of each book, ours and itch-book (the best of each is reported).
    pub passes: u32,
    /// Skip itch-book and the per-type latency pass (quick comparisons of our own changes).
    pub ours_only: bool,
}

fn vm_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

const ITCH_BOOK: &str = r#"
import sys, time, numpy as np
from itch_book import Session
data = np.fromfile(sys.argv[1], dtype=np.uint8)
s = Session(tables=[], depth=0, symbols=[])
t = time.perf_counter()
s.feed(data)
dt = time.perf_counter() - t
print(f"{dt:.6f}")
"#;

/// Runs the benchmark.
pub fn run(o: &BookBench) -> Result<(), String> {
    let cfg = MarketConfig {
        seed: 31,
        symbols: o.symbols,
        messages: o.messages,
        initial_orders: o.initial_orders,
        ..Default::default()
    };
    let mut m = Market::new(cfg);
    let (bytes, sum) = to_binaryfile(
        &mut m,
        Vec::with_capacity(o.messages as usize * 32),
        &mut Progress::new("generate", true),
    )?;
    let peak = m.peak_live_orders();
    eprintln!(
        "book bench: {} messages, {} symbols, peak {peak} live orders",
        sum.messages, o.symbols
    );
    drop(m);
    let n = sum.messages;
    let x = [("msgs", n.to_string()), ("peak_orders", peak.to_string())];

    // Throughput: decode + books, every message; the best of `passes` fresh books.
    let rss0 = vm_kb("VmRSS:");
    let mut secs = f64::MAX;
    let mut rss_book_mb = 0.0;
    let mut live_end = 0;
    for _ in 0..o.passes.max(1) {
        let mut books = Books::new();
        let t = Instant::now();
        books.apply_all(Records::new(&bytes).map_while(Result::ok));
        secs = secs.min(t.elapsed().as_secs_f64());
        // the high-water mark of the first pass (later ones reuse freed memory)
        if rss_book_mb == 0.0 {
            rss_book_mb = (vm_kb("VmHWM:").saturating_sub(rss0)) as f64 / 1024.0;
        }
        books
            .validate()
            .map_err(|e| format!("books invalid after the run: {e}"))?;
        live_end = books.live_orders();
    }
    report("book_ns_per_msg", secs * 1e9 / n as f64, "ns", &x);
    report("book_msgs_per_s", n as f64 / secs, "msg/s", &x);
    report("book_peak_rss_mb", rss_book_mb, "MB", &x);
    if o.ours_only {
        return conflation();
    }

    // Apply latency per type, one message in 8 timed, in a second pass.
    let mut books = Books::new();
    let mut h: Vec<Histogram<u64>> = (0..256)
        .map(|_| Histogram::new_with_bounds(1, 100_000_000, 3).expect("bounds"))
        .collect();
    for (i, r) in Records::new(&bytes).enumerate() {
        let Ok(msg) = r else { break };
        if i % 8 == 0 {
            let t = Instant::now();
            books.apply(msg);
            h[msg[0] as usize].saturating_record(t.elapsed().as_nanos() as u64);
        } else {
            books.apply(msg);
        }
    }
    for t in [b'A', b'D', b'U', b'E', b'X', b'C'] {
        let hh = &h[t as usize];
        if hh.is_empty() {
            continue;
        }
        let y = [
            ("type", (t as char).to_string()),
            ("samples", hh.len().to_string()),
        ];
        report(
            &format!("book_apply_{}_p50_ns", t as char),
            hh.value_at_quantile(0.5) as f64,
            "ns",
            &y,
        );
        report(
            &format!("book_apply_{}_p99_ns", t as char),
            hh.value_at_quantile(0.99) as f64,
            "ns",
            &y,
        );
        report(
            &format!("book_apply_{}_p9999_ns", t as char),
            hh.value_at_quantile(0.9999) as f64,
            "ns",
            &y,
        );
    }
    drop(books);

    // itch-book on the same bytes.
    let path = std::env::temp_dir().join(format!("bench-book-{}.itch", std::process::id()));
    std::fs::write(&path, &bytes).map_err(|e| e.to_string())?;
    drop(bytes);
    let mut best: Option<f64> = None;
    for _ in 0..o.passes.max(1) {
        match itch_book_secs(&path) {
            Ok(s) => best = Some(best.map_or(s, |b: f64| b.min(s))),
            Err(e) => {
                eprintln!("book bench: {e}");
                break;
            }
        }
    }
    let _ = std::fs::remove_file(&path);
    if let Some(s) = best {
        report("itchbook_ns_per_msg", s * 1e9 / n as f64, "ns", &x);
        report("itchbook_msgs_per_s", n as f64 / s, "msg/s", &x);
        report("book_speedup_vs_itchbook", s / secs, "x", &x);
    }
    eprintln!("book bench: {live_end} live orders at the end");
    conflation()?;
    quote_hop()
}

/// The conflation thread (`book run`'s loop) catching up on 2M records already in a ring:
/// ring read, books, and every changed instrument's quote published to the per-venue and the
/// consolidated tables, batch by batch. Nanoseconds per record, and quotes published per record.
pub fn conflation() -> Result<(), String> {
    use book::conflate::Conflator;
    use feed_handler::journal::{JournalWriter, journal_path};
    use feed_handler::ring::{Record, RingWriter};
    let n = 2_000_000u64;
    let dir = std::path::PathBuf::from(format!("/dev/shm/bench-conflation-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let res = (|| {
        let ring = dir.join("ring");
        let mut w = RingWriter::create(&ring, n.next_power_of_two()).map_err(|e| e.to_string())?;
        let mut j = JournalWriter::create(&journal_path(&ring), w.generation())
            .map_err(|e| e.to_string())?;
        let mut m = Market::new(MarketConfig {
            seed: 5,
            symbols: 8000,
            messages: n,
            initial_orders: 100,
            ..Default::default()
        });
        let mut seq = 0;
        while let Some(msg) = m.next_message() {
            seq += 1;
            let rec =
                Record::message(0, seq, 0, seq, msg).ok_or("a message too long for a record")?;
            let p = w.publish(&rec);
            j.append(p, &rec).map_err(|e| e.to_string())?;
        }
        w.set_journal_end(j.flush().map_err(|e| e.to_string())?);
        let mut c = Conflator::new(&ring, &dir.join("quotes"), 16_384)?;
        let t = Instant::now();
        let mut records = 0;
        loop {
            let k = c.do_work()?;
            if k == 0 {
                break;
            }
            records += k;
        }
        let secs = t.elapsed().as_secs_f64();
        let x = [
            ("records", records.to_string()),
            ("symbols", "8000".to_string()),
            (
                "published_per_record",
                format!("{:.2}", c.published as f64 / records.max(1) as f64),
            ),
        ];
        report(
            "conflation_ns_per_record",
            secs * 1e9 / records.max(1) as f64,
            "ns",
            &x,
        );
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    res
}

/// One run of itch-book's `Session.feed` over the file, in seconds.
fn itch_book_secs(path: &std::path::Path) -> Result<f64, String> {
    let o = std::process::Command::new("python3")
        .arg("-c")
        .arg(ITCH_BOOK)
        .arg(path)
        .output()
        .map_err(|e| format!("python3: {e}"))?;
    if !o.status.success() {
        return Err(format!(
            "itch-book did not run (pip install itch-book): {}",
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .last()
                .unwrap_or("")
        ));
    }
    String::from_utf8_lossy(&o.stdout)
        .trim()
        .parse()
        .map_err(|_| "itch-book printed no time".to_string())
}

/// Quote table hop: the writer publishes 200,000 quotes (one every ~5 µs) stamped with their
/// publish time; a reader process follows the change feed and records publish to seen.
pub fn quote_hop() -> Result<(), String> {
    use book::quotes::{Quote, QuoteWriter};
    use feed_handler::sock::{pin_current_thread, realtime_ns};
    let path = std::path::PathBuf::from(format!("/dev/shm/bench-quotes-{}", std::process::id()));
    let n: u64 = 200_000;
    let mut w = QuoteWriter::create(&path, 1024, 1 << 16).map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let child = std::process::Command::new(exe)
        .args([
            "quote-hop-reader",
            &path.display().to_string(),
            &n.to_string(),
        ])
        .stdout(std::process::Stdio::inherit())
        .spawn()
        .map_err(|e| e.to_string())?;
    std::thread::scope(|sc| {
        sc.spawn(|| {
            pin_current_thread(0);
            std::thread::sleep(std::time::Duration::from_millis(300));
            for i in 0..n {
                let t = Instant::now();
                let q = Quote {
                    symbol: *b"HOP     ",
                    volume: i,
                    recv_ns: realtime_ns(),
                    feed_seq: i + 1,
                    ..Default::default()
                };
                w.publish((i % 1024) as usize, &q);
                while t.elapsed() < std::time::Duration::from_micros(5) {
                    std::hint::spin_loop();
                }
            }
        });
    });
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(&path);
    if !out.status.success() {
        return Err("quote hop reader failed".into());
    }
    Ok(())
}

/// The reader process of the quote hop.
pub fn quote_hop_reader(path: &str, n: u64) -> Result<(), String> {
    use book::quotes::{Change, QuoteReader};
    use feed_handler::sock::{pin_current_thread, realtime_ns};
    pin_current_thread(1);
    let mut r = QuoteReader::attach(std::path::Path::new(path))?;
    let mut h = Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3).expect("bounds");
    let (mut seen, mut rescans) = (0u64, 0u64);
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    while seen < n && Instant::now() < deadline {
        match r.next_change() {
            Change::Slot(i) => {
                if let Some(q) = r.read(i) {
                    h.saturating_record(realtime_ns().saturating_sub(q.recv_ns));
                }
                seen += 1;
            }
            Change::Rescan => rescans += 1,
            Change::Empty => std::hint::spin_loop(),
        }
    }
    let x = [
        ("quotes", seen.to_string()),
        ("rescans", rescans.to_string()),
    ];
    report(
        "quote_hop_p50_ns",
        h.value_at_quantile(0.5) as f64,
        "ns",
        &x,
    );
    report(
        "quote_hop_p99_ns",
        h.value_at_quantile(0.99) as f64,
        "ns",
        &x,
    );
    Ok(())
}
