//! `bench NAME [options]`: runs one benchmark and prints its `BENCH` lines.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

use bench::decode::DecodeBench;
use std::process::ExitCode;

const USAGE: &str = "usage: bench NAME [options]

  decode   ITCH decode throughput, ours beside the itchy crate, over a generated BinaryFILE
           in memory: [--messages N] (20,000,000) [--symbols N] (8,000) [--passes N] (3)
  feed     replay -> feed handler -> ring on loopback multicast: top-speed throughput,
           wire-to-ring latency at a fixed rate, ring hop to another process:
           [--messages N] (10,000,000) [--offered-rate N] (3,000,000; 0 = top speed) [--rate N] (200,000)
           [--latency-messages N] (2,000,000)
  book     decode + order books over a generated BinaryFILE in memory, beside the itch-book
           Python package: [--messages N] (20,000,000) [--symbols N] (8,000)
           [--initial-orders N] (200 per symbol: 1.6M live orders at the start)
  fanout   gateway fan-out over a synthetic market (gateway synth): capacity (two gateway
           processes, clients in several processes), RSS per idle connection, and deliveries
           per CPU-second beside tokio-tungstenite and Node ws baselines (bench/baselines):
           [--conns N] (38,000) [--gateways N] (2) [--clients N] (2) [--symbols N] (5,000)
           [--rate N] (20,000) [--per-conn N] (50) [--throttle N] (1000 ms) [--duration N] (30 s)
           [--eff-conns N] (2,000) [--eff-no-pin] (servers and client unbound)
           [--eff-client-poll-us N] (0: the client blocks in epoll; N: it polls every N µs)
           [--idle-conns N] (19,000) [--only capacity|memory|efficiency]
  e2e      replayer -> feed-handler -> book -> gateway -> load client, each a process, with the
           age at each stage boundary; markdown summary and plot in bench/results/:
           [--rate N] (10,000 ITCH msg/s: ~10 quote changes/s per symbol) [--symbols N] (1,000) [--conns N] (10,000)
           [--per-conn N] (20) [--throttle MS] (100) [--duration S] (30) [--workers N] (1)
  venues   three venue sessions (Nasdaq, BX, PSX shares) at once on three channels into one
           feed handler, and the cost of consolidation over books alone:
           [--messages N] (4,000,000 for Nasdaq; BX 30%, PSX 20%) [--rate N] (3,000,000
           combined; 0 = top speed) [--symbols N] (3,000)
  redis    the Redis hop (real redis-server): quote table publish to a remote gateway's
           replica through `gateway publish` at a fixed change rate, and the top change rate one
           publisher sustains: [--rate N] (50,000 changes/s) [--symbols N] (5,000)
           [--duration S] (20) [--max-duration S] (5)
           [--idle-us N] (50: the publisher's sleep) [--pipeline N] (1,024 changes)
           [--cluster N] (0: one plain server; N: a Redis Cluster of N masters)
           [--tick-us N] (1,000: the synthetic market writes a burst of what is due this often)
           [--bars-per-s N] (4,000: bars closing at each second's start in a third run; 0: none)
  deflate  WebSocket compression (gateway run --deflate): the gateway's CPU per message and
           the size it goes out at, for a snapshot and updates made by its session encoder:
           [--symbols N] (50) [--iterations N] (20,000)
  hiccup   the machine's own stalls: a thread pinned to each CPU reads the clock in a loop and
           counts the gaps (the floor under every latency percentile here), and the time every
           CPU was stalled at once: [--duration S] (10)
  fanout-client  the load client one process of the fanout benchmark runs:
           --connect ADDR --conns N [--sources IP,IP] [--universe N] [--per-conn N]
           [--throttle MS] [--duration-s N] [--hdr FILE] [--ready-file FILE]
           [--symbols-from http://HOST:PORT/v1/symbols] [--sched-batch]
           [--poll-interval-us N]";

fn text_flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn flag(args: &[String], name: &str, default: u64) -> Result<u64, String> {
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.replace('_', "").parse().ok())
            .ok_or_else(|| format!("{name} needs a number")),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let res = match args.first().map(String::as_str) {
        Some("decode") => (|| {
            let o = DecodeBench {
                messages: flag(&args, "--messages", 20_000_000)?,
                symbols: flag(&args, "--symbols", 8000)? as usize,
                passes: flag(&args, "--passes", 3)?.max(1) as u32,
            };
            eprintln!("machine: {}", bench::machine());
            bench::decode::run(&o)
        })(),
        Some("deflate") => (|| {
            let o = bench::deflate::DeflateBench {
                symbols: flag(&args, "--symbols", 50)?.max(1) as usize,
                iterations: flag(&args, "--iterations", 20_000)?.max(1) as u32,
            };
            eprintln!("machine: {}", bench::machine());
            bench::deflate::run(&o)
        })(),
        Some("feed") => (|| {
            let o = bench::feed::FeedBench {
                messages: flag(&args, "--messages", 10_000_000)?,
                offered_rate: flag(&args, "--offered-rate", 3_000_000)?,
                latency_rate: flag(&args, "--rate", 200_000)?,
                latency_messages: flag(&args, "--latency-messages", 2_000_000)?,
                results: std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("results"),
            };
            eprintln!("machine: {}", bench::machine());
            bench::feed::run_all(&o)
        })(),
        Some("book") => (|| {
            let o = bench::book::BookBench {
                messages: flag(&args, "--messages", 20_000_000)?,
                symbols: flag(&args, "--symbols", 8000)? as usize,
                initial_orders: flag(&args, "--initial-orders", 200)? as u32,
                passes: flag(&args, "--passes", 1)? as u32,
                ours_only: args.iter().any(|a| a == "--ours-only"),
            };
            eprintln!("machine: {}", bench::machine());
            bench::book::run(&o)
        })(),
        Some("fanout") => (|| {
            let o = bench::fanout::FanoutBench {
                conns: flag(&args, "--conns", 38_000)? as usize,
                gateways: flag(&args, "--gateways", 2)?.max(1) as usize,
                clients: flag(&args, "--clients", 2)?.max(1) as usize,
                symbols: flag(&args, "--symbols", 5000)? as usize,
                rate: flag(&args, "--rate", 20_000)?,
                per_conn: flag(&args, "--per-conn", 50)? as usize,
                throttle_ms: flag(&args, "--throttle", 1000)?,
                duration_s: flag(&args, "--duration", 30)?,
                eff_conns: flag(&args, "--eff-conns", 2000)? as usize,
                eff_pin: !args.iter().any(|a| a == "--eff-no-pin"),
                eff_client_poll_us: flag(&args, "--eff-client-poll-us", 0)?,
                idle_conns: flag(&args, "--idle-conns", 19_000)? as usize,
                only: text_flag(&args, "--only")
                    .map(|s| s.split(',').map(String::from).collect())
                    .unwrap_or_default(),
                results: std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("results"),
            };
            eprintln!("machine: {}", bench::machine());
            bench::fanout::run(&o)
        })(),
        Some("e2e") => (|| {
            let o = bench::e2e::E2eBench {
                rate: flag(&args, "--rate", 10_000)?,
                symbols: flag(&args, "--symbols", 1000)? as usize,
                conns: flag(&args, "--conns", 10_000)? as usize,
                per_conn: flag(&args, "--per-conn", 20)? as usize,
                throttle_ms: flag(&args, "--throttle", 100)?,
                duration_s: flag(&args, "--duration", 30)?,
                workers: flag(&args, "--workers", 2)?.max(1) as usize,
                client_poll_us: flag(&args, "--client-poll-us", 1000)?,
                results: std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("results"),
            };
            eprintln!("machine: {}", bench::machine());
            bench::e2e::run(&o)
        })(),
        Some("venues") => (|| {
            let o = bench::venues::VenuesBench {
                messages: flag(&args, "--messages", 4_000_000)?,
                rate: flag(&args, "--rate", 3_000_000)?,
                symbols: flag(&args, "--symbols", 3000)? as usize,
            };
            eprintln!("machine: {}", bench::machine());
            bench::venues::run(&o)
        })(),
        Some("redis") => (|| {
            let o = bench::redis::RedisBench {
                rate: flag(&args, "--rate", 50_000)?,
                symbols: flag(&args, "--symbols", 5000)? as usize,
                duration_s: flag(&args, "--duration", 20)?,
                max_s: flag(&args, "--max-duration", 5)?,
                idle_us: flag(&args, "--idle-us", 50)?,
                pipeline: flag(&args, "--pipeline", 1024)? as usize,
                cluster: flag(&args, "--cluster", 0)? as usize,
                tick_us: flag(&args, "--tick-us", 1000)?,
                bars_per_s: flag(&args, "--bars-per-s", 4000)? as usize,
                resync: !args.iter().any(|a| a == "--no-resync"),
                restore: !args.iter().any(|a| a == "--no-restore"),
                results: std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("results"),
            };
            eprintln!("machine: {}", bench::machine());
            bench::redis::run(&o)
        })(),
        Some("hiccup") => (|| {
            let o = bench::hiccup::HiccupBench {
                duration_s: flag(&args, "--duration", 10)?,
            };
            eprintln!("machine: {}", bench::machine());
            bench::hiccup::run(&o)
        })(),
        Some("fanout-client") => (|| {
            let connect = text_flag(&args, "--connect")
                .ok_or("--connect ADDR is required")?
                .parse()
                .map_err(|e| format!("--connect: {e}"))?;
            let sources = text_flag(&args, "--sources")
                .unwrap_or_else(|| "127.0.0.1".into())
                .split(',')
                .map(|s| s.parse().map_err(|e| format!("--sources {s}: {e}")))
                .collect::<Result<Vec<_>, String>>()?;
            let o = bench::load::LoadOpts {
                connect,
                conns: flag(&args, "--conns", 100)? as usize,
                sources,
                universe: flag(&args, "--universe", 5000)? as usize,
                per_conn: flag(&args, "--per-conn", 50)? as usize,
                throttle_ms: flag(&args, "--throttle", 1000)?,
                duration_s: flag(&args, "--duration-s", 10)?,
                connect_timeout_s: flag(&args, "--connect-timeout-s", 180)?,
                hdr: text_flag(&args, "--hdr").map(std::path::PathBuf::from),
                in_flight: flag(&args, "--in-flight", 256)? as usize,
                ready_file: text_flag(&args, "--ready-file").map(std::path::PathBuf::from),
                symbols_from: text_flag(&args, "--symbols-from"),
                sched_batch: args.iter().any(|a| a == "--sched-batch"),
                poll_interval_us: flag(&args, "--poll-interval-us", 0)?,
            };
            bench::load::main(&o)
        })(),
        Some("quote-hop-reader") if args.len() == 3 => {
            bench::book::quote_hop_reader(&args[1], args[2].parse().unwrap_or(0))
        }
        Some("ring-hop-reader") if args.len() == 4 => {
            let n = args[2].parse().unwrap_or(0);
            bench::feed::ring_hop_reader(&args[1], n, &args[3])
        }
        _ => Err(USAGE.to_string()),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::FAILURE
        }
    }
}
