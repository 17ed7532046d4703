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
}

fn main() -> ExitCode {
    match Cli::parse().cmd {
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
