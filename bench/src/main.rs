//! `bench NAME [options]`: runs one benchmark and prints its `BENCH` lines.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

use bench::decode::DecodeBench;
use std::process::ExitCode;

const USAGE: &str = "usage: bench decode [--messages N] [--symbols N] [--passes N]

  decode   ITCH decode throughput, ours beside the itchy crate, over a generated BinaryFILE
           in memory (default 20,000,000 messages, 8,000 symbols, best of 3 passes)";

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
