//! `feed-handler`: the command line.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

use clap::{Parser, Subcommand};
use feed_handler::report::{DecodeOptions, decode_file};
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
    /// packets, messages per type, first and last sequence, gaps, duplicates, errors.
    Decode {
        /// The capture file.
        file: PathBuf,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Only UDP datagrams to this destination port (repeatable; default: all UDP).
        #[arg(long = "port", value_name = "PORT")]
        ports: Vec<u16>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Decode { file, json, ports } => {
            let opts = DecodeOptions {
                ports: ports.into_iter().collect(),
            };
            match decode_file(&file, &opts) {
                Ok(rep) => {
                    if json {
                        println!("{}", rep.to_json());
                    } else {
                        print!("{}", rep.to_text());
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("feed-handler decode: {}: {e}", file.display());
                    ExitCode::FAILURE
                }
            }
        }
    }
}
