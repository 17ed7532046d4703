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
           [--initial-orders N] (200 per symbol: 1.6M live orders at the start)";

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
            };
            eprintln!("machine: {}", bench::machine());
            bench::book::run(&o)
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
