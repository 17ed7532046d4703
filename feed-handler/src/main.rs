//! `feed-handler`: the command line.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

use clap::{Parser, Subcommand};
use feed_handler::report::{DecodeOptions, decode_file};
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "feed-handler",
    version,
    about = "Nasdaq TotalView-ITCH 5.0 / MoldUDP64 feed handler"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Decode a capture (pcap, pcapng, or BinaryFILE, plain or gzipped) and summarise it:
    /// packets, messages per type, first and last sequence, gaps, duplicates, errors. Several
    /// files are summarised one after another (each text summary under a `== FILE` line, each
    /// JSON object on its own line with a `file` key); a bad one is said and the rest go on.
    Decode {
        /// The capture file(s).
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Print one JSON object (a line per file) instead of text.
        #[arg(long)]
        json: bool,
        /// Only UDP datagrams to this destination port (repeatable; default: all UDP).
        #[arg(long = "port", value_name = "PORT")]
        ports: Vec<u16>,
    },
    /// Run the feed handler: join lines A and B of every channel, arbitrate, recover gaps,
    /// publish to the shared-memory ring and the journal. Stops on Ctrl-C / SIGTERM.
    Run {
        /// TOML configuration (see docs/configuration.md).
        #[arg(long)]
        config: PathBuf,
    },
    /// Print a running feed handler's counters (per channel and per line).
    Stat {
        /// Ring name or path (default "itch").
        #[arg(default_value = "itch")]
        ring: String,
        /// One JSON object.
        #[arg(long)]
        json: bool,
        /// A live view: print again every this many seconds until Ctrl-C.
        #[arg(long, value_name = "SECS")]
        watch: Option<u64>,
        /// Prometheus text exposition (for node_exporter's textfile collector).
        #[arg(long, conflicts_with = "json")]
        prometheus: bool,
    },
    /// Print the records of a ring, one JSON object a line (from the journal for the past).
    Tail {
        /// Ring name or path (default "itch").
        #[arg(default_value = "itch")]
        ring: String,
        /// Start with the first record of the session instead of the next one.
        #[arg(long)]
        from_start: bool,
        /// Stop after this many records.
        #[arg(long)]
        count: Option<u64>,
        /// Stop at the first end-of-session record.
        #[arg(long)]
        until_eos: bool,
    },
}

fn stat(ring: &str, json: bool, prometheus: bool) -> Result<(), String> {
    use feed_handler::counters::{
        CHANNEL_COUNTERS, CountersReader, LINE_COUNTERS, LINES, counters_path,
    };
    use feed_handler::ring::JournalState;
    let path = counters_path(&feed_handler::ring::ring_path(ring));
    let r = CountersReader::open(&path)?;
    let chans = r.read();
    // readers asleep on the ring's doorbell, and the journal's state (None when the ring is
    // not there)
    let header = feed_handler::ring::RingReader::attach(feed_handler::ring::ring_path(ring)).ok();
    let sleepers = header.as_ref().map(|r| r.sleepers());
    let journal = header
        .as_ref()
        .map(|r| (r.journal_state(), r.journal_end()));
    let journal_word = |s: JournalState| match s {
        JournalState::Writing => "writing",
        JournalState::Off => "off",
        JournalState::Stopped => "stopped",
    };
    if prometheus {
        let age = feed_handler::sock::realtime_ns().saturating_sub(r.updated_ns()) as f64 / 1e9;
        println!(
            "# HELP feed_counters_age_seconds Since the feed handler last wrote its counters."
        );
        println!("# TYPE feed_counters_age_seconds gauge\nfeed_counters_age_seconds {age:.3}");
        if let Some(n) = sleepers {
            println!(
                "# HELP feed_ring_sleepers Readers asleep on the ring's doorbell.\n\
                 # TYPE feed_ring_sleepers gauge\nfeed_ring_sleepers {n}"
            );
        }
        if let Some((state, _)) = journal {
            println!(
                "# HELP feed_journal_state The journal: 0 writing, 1 off, 2 stopped (full or \
                 failed: readers the ring laps lose records).\n\
                 # TYPE feed_journal_state gauge\nfeed_journal_state {}",
                state as u8
            );
        }
        for (i, (n, help)) in CHANNEL_COUNTERS.iter().enumerate() {
            println!("# HELP feed_{n} {help}\n# TYPE feed_{n} gauge");
            for c in &chans {
                println!("feed_{n}{{channel=\"{}\"}} {}", c.name, c.channel[i]);
            }
        }
        for (i, (n, help)) in LINE_COUNTERS.iter().enumerate() {
            println!("# HELP feed_line_{n} {help}\n# TYPE feed_line_{n} gauge");
            for c in &chans {
                for (l, ln) in LINES.iter().enumerate() {
                    println!(
                        "feed_line_{n}{{channel=\"{}\",line=\"{ln}\"}} {}",
                        c.name, c.lines[l][i]
                    );
                }
            }
        }
        return Ok(());
    }
    if json {
        let v: Vec<serde_json::Value> = chans
            .iter()
            .map(|c| {
                let mut o = serde_json::Map::new();
                o.insert("channel".into(), c.name.clone().into());
                for (i, (n, _)) in CHANNEL_COUNTERS.iter().enumerate() {
                    o.insert((*n).into(), c.channel[i].into());
                }
                for (l, ln) in LINES.iter().enumerate() {
                    let lo: serde_json::Map<String, serde_json::Value> = LINE_COUNTERS
                        .iter()
                        .enumerate()
                        .map(|(i, (n, _))| ((*n).to_string(), c.lines[l][i].into()))
                        .collect();
                    o.insert(format!("line_{ln}"), lo.into());
                }
                serde_json::Value::Object(o)
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({"pid": r.pid(), "updated_ns": r.updated_ns(),
                "ring_sleepers": sleepers, "journal": journal.map(|(s, _)| journal_word(s)),
                "channels": v})
        );
        return Ok(());
    }
    println!(
        "counters {} (pid {}, updated {} ms ago)",
        path.display(),
        r.pid(),
        feed_handler::sock::realtime_ns().saturating_sub(r.updated_ns()) / 1_000_000
    );
    if let Some(n) = sleepers {
        println!("ring: {n} reader(s) asleep on its doorbell");
    }
    match journal {
        Some((JournalState::Stopped, end)) => println!(
            "journal: STOPPED at record {end} (full or failed: see the feed handler's log); \
             readers the ring laps lose records"
        ),
        Some((s, _)) => println!("journal: {}", journal_word(s)),
        None => {}
    }
    for c in &chans {
        println!("channel {}", c.name);
        for (i, (n, _)) in CHANNEL_COUNTERS.iter().enumerate() {
            println!("  {n:<14} {}", c.channel[i]);
        }
        println!(
            "  {:<14} {:>12} {:>12} {:>12}",
            "line", "a", "b", "recovery"
        );
        for (i, (n, _)) in LINE_COUNTERS.iter().enumerate() {
            println!(
                "  {n:<14} {:>12} {:>12} {:>12}",
                c.lines[0][i], c.lines[1][i], c.lines[2][i]
            );
        }
    }
    Ok(())
}

fn tail(ring: &str, from_start: bool, count: Option<u64>, until_eos: bool) -> Result<(), String> {
    use feed_handler::journal::{Start, Subscriber};
    use feed_handler::ring::Kind;
    use std::io::Write;
    let path = feed_handler::ring::ring_path(ring);
    let mut s = Subscriber::attach(
        &path,
        if from_start {
            Start::Beginning
        } else {
            Start::Live
        },
    )
    .map_err(|e| e.to_string())?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut n = 0;
    while count.is_none_or(|c| n < c) {
        let next = match s.next_record() {
            // lapped with no journal to catch up from: said, and the records go on
            Err(e @ feed_handler::ring::RingError::Lost { .. }) => {
                out.flush().map_err(|e| e.to_string())?;
                eprintln!("feed-handler tail: {e}");
                continue;
            }
            r => r.map_err(|e| e.to_string())?,
        };
        match next {
            Some(r) => {
                let kind = match r.kind {
                    Kind::Message => "message",
                    Kind::Gap => "gap",
                    Kind::EndOfSession => "end_of_session",
                };
                let hex: String = r.data().iter().map(|b| format!("{b:02x}")).collect();
                writeln!(out, "{}", serde_json::json!({"pos": r.position, "kind": kind, "channel": r.channel, "seq": r.seq,
                    "count": r.gap_count, "exch_ts_ns": r.exch_ts_ns, "recv_ns": r.recv_ns, "msg": hex})).map_err(|e| e.to_string())?;
                n += 1;
                if until_eos && r.kind == Kind::EndOfSession {
                    break;
                }
            }
            None => {
                out.flush().map_err(|e| e.to_string())?;
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        }
    }
    out.flush().map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.cmd, Cmd::Stat { .. }) {
        feed_handler::agent::quiet_on_closed_pipe();
    }
    let done = |r: Result<(), String>, what: &str| match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("feed-handler {what}: {e}");
            ExitCode::FAILURE
        }
    };
    match cli.cmd {
        Cmd::Run { config } => done(
            feed_handler::config::Config::load(&config).and_then(feed_handler::agent::run),
            "run",
        ),
        Cmd::Stat {
            ring,
            json,
            watch,
            prometheus,
        } => match watch {
            None => done(stat(&ring, json, prometheus), "stat"),
            Some(secs) => {
                let stop = feed_handler::agent::stop_on_signals();
                loop {
                    // clear the screen, then the counters
                    print!("\x1b[2J\x1b[H");
                    if let Err(e) = stat(&ring, json, prometheus) {
                        eprintln!("feed-handler stat: {e}");
                    }
                    if !feed_handler::agent::wait_unless_stopped(secs, stop) {
                        return ExitCode::SUCCESS;
                    }
                }
            }
        },
        Cmd::Tail {
            ring,
            from_start,
            count,
            until_eos,
        } => done(tail(&ring, from_start, count, until_eos), "tail"),
        Cmd::Decode { files, json, ports } => {
            let opts = DecodeOptions {
                ports: ports.into_iter().collect(),
            };
            let several = files.len() > 1;
            let mut code = ExitCode::SUCCESS;
            for file in &files {
                // a reader that closes the pipe early (`| head`) is not an error
                let mut out = std::io::stdout().lock();
                match decode_file(file, &opts) {
                    Ok(rep) if json => {
                        let mut v = rep.to_json();
                        if several {
                            v["file"] = file.display().to_string().into();
                        }
                        let _ = writeln!(out, "{v}");
                    }
                    Ok(rep) => {
                        if several {
                            let _ = writeln!(out, "== {}", file.display());
                        }
                        let _ = write!(out, "{}", rep.to_text());
                    }
                    Err(e) => {
                        let _ = out.flush();
                        eprintln!("feed-handler decode: {}: {e}", file.display());
                        code = ExitCode::FAILURE;
                    }
                }
            }
            code
        }
    }
}
