//! `book`: the command line.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

use book::books::Books;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "book",
    version,
    about = "Order books and latest prices from TotalView-ITCH 5.0"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run a capture (pcap, pcapng or BinaryFILE, plain or gzipped) through the arbitration and
    /// the books, and print the final state of every instrument.
    Replay {
        /// The capture.
        file: PathBuf,
        /// One JSON object: {"symbols":{"AAPL":{"locate":..,"bid_px":..,...}}}.
        #[arg(long)]
        json: bool,
    },
    /// Follow a feed-handler ring (from the start of its session, through the journal), keep
    /// the books, and publish every instrument's latest quote to a shared-memory quote table.
    /// Stops on Ctrl-C / SIGTERM.
    Run {
        /// Feed ring name or path.
        #[arg(long, default_value = "itch")]
        ring: String,
        /// Quote table name or path (default: <ring>.quotes).
        #[arg(long)]
        quotes: Option<String>,
        /// Instruments the table holds.
        #[arg(long, default_value_t = 16384)]
        slots: usize,
        /// After an unrecovered gap, rebuild from a full re-request of the session to this
        /// MoldUDP64 re-request server (needs --session); without it a gap leaves the channel
        /// stale.
        #[arg(long, requires = "session")]
        rerequest: Option<std::net::SocketAddrV4>,
        /// The feed's MoldUDP64 session, for --rerequest.
        #[arg(long)]
        session: Option<String>,
        /// The feed handler's config: every channel (venue) with a re-request server and a
        /// session is rebuilt from its own server after an unrecovered gap.
        #[arg(long, value_name = "FILE")]
        feed_config: Option<PathBuf>,
        /// Anomaly window, in 1-minute bars.
        #[arg(long, default_value_t = 60)]
        anomaly_window: usize,
        /// Closes needed before the anomaly test says anything.
        #[arg(long, default_value_t = 20)]
        anomaly_min_sample: usize,
    },
    /// A summary of the quote table (symbols, stale, halted, anomalies, update rate, freshness),
    /// once or as a live view.
    Stat {
        /// Feed ring name or path (the table is <ring>.quotes).
        #[arg(long, default_value = "itch")]
        ring: String,
        /// Quote table name or path (overrides --ring).
        #[arg(long)]
        quotes: Option<String>,
        /// One JSON object.
        #[arg(long)]
        json: bool,
        /// Prometheus text (for node_exporter's textfile collector, as `feed-handler stat`).
        #[arg(long, conflicts_with = "json")]
        prometheus: bool,
        /// A live view: print again every this many seconds until Ctrl-C.
        #[arg(long, value_name = "SECS")]
        watch: Option<u64>,
    },
    /// Print the quote table a running `book run` publishes.
    Quotes {
        /// Feed ring name or path (the table is <ring>.quotes).
        #[arg(long, default_value = "itch")]
        ring: String,
        /// Quote table name or path (overrides --ring).
        #[arg(long)]
        quotes: Option<String>,
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
}

fn quotes_path(ring: &str, quotes: Option<String>) -> PathBuf {
    book::quotes::table_path(ring, quotes.as_deref())
}

fn print_quotes(path: &std::path::Path, json: bool) -> Result<(), String> {
    use std::io::Write;
    let r = book::quotes::QuoteReader::attach(path)?;
    let mut stdout = std::io::stdout().lock();
    // A reader that closes the pipe early (`| head`) ends the listing quietly.
    let mut emit = |line: String| -> bool { writeln!(stdout, "{line}").is_ok() };
    let px = |v: Option<(u32, u64)>| {
        v.map_or("-".to_string(), |(p, q)| {
            format!("{}.{:04} x {q}", p / 10_000, p % 10_000)
        })
    };
    let mut out = serde_json::Map::new();
    if !json
        && !emit(format!(
            "{:<8} {:>22} {:>22} {:>22} {:>10} state stale anomaly",
            "symbol", "bid", "ask", "last", "volume"
        ))
    {
        return Ok(());
    }
    for i in 0..r.slots() {
        let Some(q) = r.read(i) else { break };
        if json {
            out.insert(
                q.symbol_str(),
                serde_json::json!({
                    "bid_px": q.bid.map(|b| b.0), "bid_qty": q.bid.map(|b| b.1),
                    "ask_px": q.ask.map(|a| a.0), "ask_qty": q.ask.map(|a| a.1),
                    "last_px": q.last.map(|l| l.0), "last_qty": q.last.map(|l| l.1),
                    "volume": q.volume, "state": if q.state == 0 { serde_json::Value::Null } else { (q.state as char).to_string().into() },
                    "stale": q.stale, "anomaly": q.anomaly, "exch_ts_ns": q.exch_ts_ns, "recv_ns": q.recv_ns,
                    "feed_seq": q.feed_seq, "updates": q.updates,
                }),
            );
        } else if !emit(format!(
            "{:<8} {:>22} {:>22} {:>22} {:>10} {:>5} {:>5} {}",
            q.symbol_str(),
            px(q.bid),
            px(q.ask),
            px(q.last),
            q.volume,
            if q.state == 0 { '-' } else { q.state as char },
            q.stale,
            q.anomaly
        )) {
            return Ok(());
        }
    }
    if json {
        emit(serde_json::Value::Object(out).to_string());
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn run(
    ring: &str,
    quotes: Option<String>,
    slots: usize,
    rerequest: Option<std::net::SocketAddrV4>,
    session: Option<String>,
    feed_config: Option<PathBuf>,
    history: book::bars::HistoryConfig,
) -> Result<(), String> {
    let stop = feed_handler::agent::stop_on_signals();
    let ring_path = feed_handler::ring::ring_path(ring);
    let quotes = quotes_path(ring, quotes);
    let mut c = book::conflate::Conflator::new(&ring_path, &quotes, slots)?.with_history(history);
    if let (Some(server), Some(session)) = (rerequest, session) {
        let session = feed_handler::moldudp64::Session::new(&session)
            .ok_or_else(|| format!("--session {session:?}: at most 10 characters"))?;
        c = c.with_rebuild(book::rebuild::RebuildConfig {
            server,
            session,
            request_timeout_ns: 100_000_000,
        });
    }
    if let Some(path) = feed_config {
        let cfg = feed_handler::config::Config::load(&path)?;
        for (i, ch) in cfg.channel.iter().enumerate() {
            let id = ch.id.unwrap_or(i as u16);
            match (ch.rerequest, ch.session.as_deref()) {
                (Some(server), Some(s)) => {
                    let session = feed_handler::moldudp64::Session::new(s).ok_or_else(|| {
                        format!("{}: channel {}: session {s:?}", path.display(), ch.name)
                    })?;
                    c = c.with_channel_rebuild(
                        id,
                        book::rebuild::RebuildConfig {
                            server,
                            session,
                            request_timeout_ns: 100_000_000,
                        },
                    );
                    eprintln!(
                        "book: channel {} ({id}) rebuilds from {server} after a gap",
                        ch.name
                    );
                }
                _ => eprintln!(
                    "book: warning: channel {} has no rerequest and session in {}: a gap \
                     leaves it stale",
                    ch.name,
                    path.display()
                ),
            }
        }
    }
    eprintln!(
        "book: following {} into the quote table {}",
        ring_path.display(),
        quotes.display()
    );
    if !c.has_doorbell() {
        eprintln!(
            "book: warning: cannot open {} for writing, so it polls every {} µs when idle \
             instead of sleeping until the feed handler publishes",
            ring_path.display(),
            book::conflate::IDLE_SLEEP.as_micros()
        );
    }
    let mut was = false;
    // what the books could not apply, said when it grows (every 10 s at most)
    let said = |b: &book::books::BookCounters| {
        format!(
            "{} messages refused (unreadable {}, adds of no side {}, adds for locate 0 {}), {} \
             for orders not on the book",
            b.refused(),
            b.bad_messages,
            b.bad_sides,
            b.bad_locates,
            b.unknown_refs
        )
    };
    let mut last_said = (0, 0);
    let mut next_say = std::time::Instant::now();
    let mut next_ring_check = std::time::Instant::now();
    let mut said_not_ready = false;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        if c.do_work()? == 0 {
            c.idle();
        }
        // the feed handler started again makes a new ring: follow it, as a book started anew
        if std::time::Instant::now() >= next_ring_check {
            next_ring_check += std::time::Duration::from_secs(1);
            if c.ring_replaced() {
                match c.reattach() {
                    Ok(n) => {
                        eprintln!(
                            "book: {} records applied from the ring before it was replaced (the \
                             feed handler started again); following the new one, every quote \
                             stale until caught up",
                            c.records
                        );
                        c = n;
                        (was, last_said, said_not_ready) = (false, (0, 0), false);
                    }
                    // (a ring being created has no magic yet: next second)
                    Err(e) if !said_not_ready => {
                        said_not_ready = true;
                        eprintln!("book: the ring was replaced; not following it yet: {e}");
                    }
                    Err(_) => {}
                }
            }
        }
        if let Some(lost) = c.lost_said.take() {
            eprintln!(
                "book: {lost}; channels that lost messages are stale until rebuilt{}",
                if c.rebuilds_configured() {
                    ""
                } else {
                    " (no --rerequest: until the book is restarted)"
                }
            );
        }
        if c.caught_up() && !was {
            was = true;
            eprintln!("book: caught up after {} records", c.records);
        }
        if std::time::Instant::now() >= next_say {
            next_say += std::time::Duration::from_secs(10);
            let b = c.book_counters();
            if (b.refused(), b.unknown_refs) != last_said {
                last_said = (b.refused(), b.unknown_refs);
                eprintln!("book: {}", said(&b));
            }
        }
    }
    eprintln!(
        "book: {} records applied, {} quotes published, {} gaps, {} records lost; {}",
        c.records,
        c.published,
        c.gaps,
        c.lost_records,
        said(&c.book_counters())
    );
    Ok(())
}

/// What `book stat` prints.
fn table_stat(path: &std::path::Path) -> Result<serde_json::Value, String> {
    let r = book::quotes::QuoteReader::attach(path)
        .map_err(|e| format!("{e} (is `book run` running? it creates the table)"))?;
    let (mut n, mut stale, mut halted, mut anomaly, mut updates, mut newest) =
        (0u64, 0, 0, 0, 0u64, 0u64);
    for i in 0..r.slots() {
        let Some(q) = r.read(i) else { continue };
        n += 1;
        stale += q.stale as u64;
        halted += (q.state == b'H' || q.state == b'P') as u64;
        anomaly += q.anomaly as u64;
        updates += q.updates;
        newest = newest.max(q.recv_ns);
    }
    // SAFETY: kill with signal 0 only checks that the process exists.
    let alive = unsafe { libc::kill(r.writer_pid() as libc::pid_t, 0) } == 0;
    let now = feed_handler::sock::realtime_ns();
    Ok(serde_json::json!({
        "table": path.display().to_string(), "writer_pid": r.writer_pid(), "writer_alive": alive,
        "symbols": n, "stale": stale, "halted_or_paused": halted, "anomalies": anomaly,
        "updates": updates,
        "newest_age_ms": if newest > 0 { (now.saturating_sub(newest) / 1_000_000) as i64 } else { -1 },
    }))
}

/// `book stat --prometheus`: the table's figures as Prometheus gauges and a counter.
fn print_prometheus(v: &serde_json::Value) {
    let age = match v["newest_age_ms"].as_i64() {
        Some(ms) if ms >= 0 => format!("{:.3}", ms as f64 / 1e3),
        _ => "NaN".into(),
    };
    let figures = [
        (
            "book_writer_alive",
            "gauge",
            "1 while the table's writer (book run) is alive.",
            u64::from(v["writer_alive"] == true).to_string(),
        ),
        (
            "book_symbols",
            "gauge",
            "Symbols in the quote table.",
            v["symbols"].to_string(),
        ),
        (
            "book_stale_symbols",
            "gauge",
            "Symbols whose quote is stale (a gap, a rebuild, the feed or the writer down).",
            v["stale"].to_string(),
        ),
        (
            "book_halted_or_paused_symbols",
            "gauge",
            "Symbols halted or paused.",
            v["halted_or_paused"].to_string(),
        ),
        (
            "book_anomaly_symbols",
            "gauge",
            "Symbols whose last trade is flagged as an anomaly.",
            v["anomalies"].to_string(),
        ),
        (
            "book_quote_updates_total",
            "counter",
            "Quote updates published, summed over the symbols.",
            v["updates"].to_string(),
        ),
        (
            "book_newest_quote_age_seconds",
            "gauge",
            "Since the newest quote's feed receive time (NaN before any).",
            age,
        ),
    ];
    for (name, kind, help, value) in figures {
        println!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
    }
}

fn print_stat(v: &serde_json::Value, prev: Option<(u64, std::time::Instant)>, json: bool) {
    if json {
        println!("{v}");
        return;
    }
    let rate = prev.map(|(u, t)| {
        (v["updates"].as_u64().unwrap_or(0).saturating_sub(u)) as f64 / t.elapsed().as_secs_f64()
    });
    println!(
        "quote table {}  (writer pid {}, {})",
        v["table"].as_str().unwrap_or(""),
        v["writer_pid"],
        if v["writer_alive"] == true {
            "alive"
        } else {
            "GONE: quotes are stale"
        }
    );
    println!(
        "  symbols {:>8}   stale {:>6}   halted/paused {:>5}   anomalies {:>5}",
        v["symbols"], v["stale"], v["halted_or_paused"], v["anomalies"]
    );
    println!(
        "  updates {:>8}   {}   newest quote received {} ms ago",
        v["updates"],
        rate.map_or("".to_string(), |r| format!("{r:.0} updates/s")),
        v["newest_age_ms"]
    );
}

fn main() -> ExitCode {
    match Cli::parse().cmd {
        Cmd::Stat {
            ring,
            quotes,
            json,
            prometheus,
            watch,
        } => {
            feed_handler::agent::quiet_on_closed_pipe();
            let path = quotes_path(&ring, quotes);
            let stop = feed_handler::agent::stop_on_signals();
            let mut prev: Option<(u64, std::time::Instant)> = None;
            loop {
                match table_stat(&path) {
                    Ok(v) if prometheus => print_prometheus(&v),
                    Ok(v) => {
                        if watch.is_some() && !json {
                            print!("\x1b[2J\x1b[H");
                        }
                        print_stat(&v, prev, json);
                        prev = Some((
                            v["updates"].as_u64().unwrap_or(0),
                            std::time::Instant::now(),
                        ));
                    }
                    Err(e) => {
                        eprintln!("book stat: {e}");
                        if watch.is_none() {
                            return ExitCode::FAILURE;
                        }
                    }
                }
                let Some(secs) = watch else {
                    return ExitCode::SUCCESS;
                };
                if !feed_handler::agent::wait_unless_stopped(secs, stop) {
                    return ExitCode::SUCCESS;
                }
            }
        }
        Cmd::Quotes { ring, quotes, json } => match print_quotes(&quotes_path(&ring, quotes), json)
        {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("book quotes: {e}");
                ExitCode::FAILURE
            }
        },
        Cmd::Run {
            ring,
            quotes,
            slots,
            rerequest,
            session,
            feed_config,
            anomaly_window,
            anomaly_min_sample,
        } => {
            let history = book::bars::HistoryConfig {
                anomaly_window,
                anomaly_min_sample,
                ..Default::default()
            };
            match run(
                &ring,
                quotes,
                slots,
                rerequest,
                session,
                feed_config,
                history,
            ) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("book run: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Replay { file, json } => {
            let mut books = Books::new();
            match book::replay::replay_file(&file, &mut books) {
                Ok(stats) => {
                    if json {
                        println!("{}", book::replay::to_json(&books));
                    } else {
                        println!(
                            "{} messages applied, {} gaps ({} messages lost), {} datagrams ignored, {} instruments, {} live orders",
                            stats.messages,
                            stats.gaps,
                            stats.lost,
                            stats.ignored,
                            books.iter().filter(|(_, x)| x.symbol.is_some()).count(),
                            books.live_orders()
                        );
                        println!(
                            "{:<8} {:>12} {:>8} {:>12} {:>8} {:>12} {:>10} state stale",
                            "symbol", "bid", "size", "ask", "size", "last", "volume"
                        );
                        let px = |v: Option<u32>| {
                            v.map_or("-".to_string(), |p| {
                                format!("{}.{:04}", p / 10_000, p % 10_000)
                            })
                        };
                        for (_, x) in books.iter() {
                            let Some(sym) = x.symbol else { continue };
                            let (b, a) = (x.best_bid(), x.best_ask());
                            println!(
                                "{:<8} {:>12} {:>8} {:>12} {:>8} {:>12} {:>10} {:>5} {}",
                                sym.to_string(),
                                px(b.map(|b| b.0)),
                                b.map_or(0, |b| b.1.shares),
                                px(a.map(|a| a.0)),
                                a.map_or(0, |a| a.1.shares),
                                px(x.last.map(|l| l.px_e4)),
                                x.volume,
                                if x.state == 0 { '-' } else { x.state as char },
                                x.stale
                            );
                        }
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("book replay: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
