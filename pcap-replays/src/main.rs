//! `pcap-replay`: make captures to replay (generate a market, convert a Nasdaq day file).
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

use clap::{Args, Parser, Subcommand, ValueEnum};
use feed_handler::capture::{self, Capture};
use feed_handler::moldudp64::Session;
use pcap_replays::date;
use pcap_replays::lines::{LineFaults, LinesConfig, default_lines};
use pcap_replays::market::{Market, MarketConfig};
use pcap_replays::packetize::PacketizerConfig;
use pcap_replays::session::{self, Progress, Summary};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "pcap-replay",
    version,
    about = "Make Nasdaq ITCH 5.0 / MoldUDP64 captures to replay"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Generate a deterministic market session (pcap of lines A and B, or a BinaryFILE).
    Generate(GenerateArgs),
    /// Convert a Nasdaq BinaryFILE day file (plain or .gz) into a pcap of MoldUDP64 packets on
    /// lines A and B, so any day can be replayed onto multicast.
    Convert(ConvertArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum OutFormat {
    /// Classic pcap, nanosecond timestamps, Ethernet/IPv4/UDP/MoldUDP64.
    Pcap,
    /// Nasdaq BinaryFILE (gzipped when the output name ends in .gz).
    Binaryfile,
}

#[derive(Args, Debug)]
struct GenerateArgs {
    /// Output file.
    #[arg(short, long)]
    output: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "pcap")]
    format: OutFormat,
    /// Seed: the same seed and options give the same bytes.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Number of instruments.
    #[arg(long, default_value_t = 1000)]
    symbols: usize,
    /// Total messages, start and end of day included.
    #[arg(long, default_value_t = 1_000_000)]
    messages: u64,
    /// Mean message rate in exchange time (messages per second).
    #[arg(long, default_value_t = 100_000)]
    rate: u64,
    /// Resting orders per symbol placed before the flow starts.
    #[arg(long, default_value_t = 10)]
    initial_orders: u32,
    /// Only types and codes the `itchy` crate reads (no h, no O): for differential tests.
    #[arg(long)]
    itchy_compatible: bool,
    #[command(flatten)]
    lines: LineArgs,
}

#[derive(Args, Debug)]
struct ConvertArgs {
    /// The BinaryFILE (MMDDYYYY.NASDAQ_ITCH50, optionally .gz).
    input: PathBuf,
    /// Output pcap.
    #[arg(short, long)]
    output: PathBuf,
    #[command(flatten)]
    lines: LineArgs,
}

#[derive(Args, Debug)]
struct LineArgs {
    /// Capture date (YYYY-MM-DD) for pcap timestamps; default: from a MMDDYYYY file name, else
    /// 2024-01-02.
    #[arg(long)]
    date: Option<String>,
    /// MoldUDP64 session name (up to 10 characters).
    #[arg(long, default_value = "GEN0000001")]
    session: String,
    /// Largest MoldUDP64 payload in bytes.
    #[arg(long, default_value_t = 1400)]
    max_payload: usize,
    /// Messages within this many microseconds share a packet.
    #[arg(long, default_value_t = 5)]
    batch_us: u64,
    /// Line A multicast group and port.
    #[arg(long, default_value = "239.100.1.1:26400")]
    line_a: SocketAddrV4,
    /// Line B multicast group and port.
    #[arg(long, default_value = "239.100.1.2:26401")]
    line_b: SocketAddrV4,
    /// Write line A only.
    #[arg(long)]
    single_line: bool,
    /// Faults on line A: drop=P,burst=P,burst_len=N,dup=P,reorder=P.
    #[arg(long, default_value = "none")]
    faults_a: String,
    /// Faults on line B, as --faults-a.
    #[arg(long, default_value = "none")]
    faults_b: String,
    /// Lose messages FIRST..FIRST+COUNT-1 on every line (repeatable): `--gap 5000:20`.
    #[arg(long = "gap", value_name = "FIRST:COUNT")]
    gaps: Vec<String>,
    /// Write a JSON report of what was written and lost to this file.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Print progress on stderr (default: on for runs longer than a few seconds).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    progress: bool,
}

impl LineArgs {
    fn packetizer(&self) -> Result<PacketizerConfig, String> {
        Ok(PacketizerConfig {
            session: Session::new(&self.session)
                .ok_or_else(|| format!("--session {:?}: at most 10 characters", self.session))?,
            max_payload: self.max_payload,
            batch_ns: self.batch_us * 1000,
            ..Default::default()
        })
    }

    fn lines(&self, seed: u64, input_name: Option<&Path>) -> Result<LinesConfig, String> {
        let epoch_offset_ns = match &self.date {
            Some(d) => date::parse_iso_date(d)
                .ok_or_else(|| format!("--date {d:?}: expected YYYY-MM-DD"))?,
            None => input_name
                .and_then(|p| date::date_of_day_file(&p.to_string_lossy()))
                .unwrap_or(date::parse_iso_date("2024-01-02").expect("valid")),
        };
        let mut lines = default_lines();
        lines[0].dst = self.line_a;
        lines[1].dst = self.line_b;
        lines[0].faults =
            LineFaults::parse(&self.faults_a).map_err(|e| format!("--faults-a: {e}"))?;
        lines[1].faults =
            LineFaults::parse(&self.faults_b).map_err(|e| format!("--faults-b: {e}"))?;
        if self.single_line {
            lines.truncate(1);
        }
        let gaps = self
            .gaps
            .iter()
            .map(|g| {
                let (a, b) = g
                    .split_once(':')
                    .ok_or_else(|| format!("--gap {g:?}: expected FIRST:COUNT"))?;
                let first = a
                    .parse()
                    .map_err(|_| format!("--gap {g:?}: FIRST is not a number"))?;
                let count = b
                    .parse()
                    .map_err(|_| format!("--gap {g:?}: COUNT is not a number"))?;
                Ok((first, count))
            })
            .collect::<Result<Vec<(u64, u64)>, String>>()?;
        Ok(LinesConfig {
            lines,
            gaps,
            seed,
            epoch_offset_ns,
        })
    }
}

fn create(path: &Path) -> Result<BufWriter<File>, String> {
    File::create(path)
        .map(|f| BufWriter::with_capacity(1 << 20, f))
        .map_err(|e| format!("cannot create {}: {e}", path.display()))
}

fn write_report(path: &Path, sum: &Summary, extra: serde_json::Value) -> Result<(), String> {
    let lines: serde_json::Map<String, serde_json::Value> = sum
        .lines
        .iter()
        .map(|(name, l)| {
            (
                name.clone(),
                serde_json::json!({
                    "written": l.written, "dropped": l.dropped, "gap_dropped": l.gap_dropped,
                    "duplicated": l.duplicated, "reordered": l.reordered,
                    "missing": l.missing.iter().map(|(a, b)| [*a, *b - 1]).collect::<Vec<_>>(),
                }),
            )
        })
        .collect();
    let v = serde_json::json!({
        "messages": sum.messages, "message_bytes": sum.message_bytes, "packets": sum.packets,
        "lines": lines, "source": extra,
    });
    std::fs::write(path, format!("{v:#}\n"))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn finish<W: Write>(out: BufWriter<W>) -> Result<(), String> {
    out.into_inner()
        .map_err(|e| format!("write: {}", e.error()))?
        .flush()
        .map_err(|e| format!("write: {e}"))
}

fn generate(a: GenerateArgs) -> Result<(), String> {
    if a.symbols == 0 || a.symbols > 65_535 {
        return Err(format!(
            "--symbols {}: must be 1..=65535 (the stock locate is 16 bits)",
            a.symbols
        ));
    }
    let cfg = MarketConfig {
        seed: a.seed,
        symbols: a.symbols,
        messages: a.messages,
        rate_per_s: a.rate.max(1),
        initial_orders: a.initial_orders,
        itchy_compatible: a.itchy_compatible,
        ..Default::default()
    };
    let mut market = Market::new(cfg);
    let mut progress = Progress::new("generate", a.lines.progress);
    let out = create(&a.output)?;
    let sum = match a.format {
        OutFormat::Pcap => {
            let (out, sum) = session::to_pcap(
                &mut market,
                a.lines.packetizer()?,
                a.lines.lines(a.seed, None)?,
                out,
                &mut progress,
            )?;
            finish(out)?;
            sum
        }
        OutFormat::Binaryfile if a.output.extension().is_some_and(|e| e == "gz") => {
            let z = flate2::write::GzEncoder::new(out, flate2::Compression::new(6));
            let (z, sum) = session::to_binaryfile(&mut market, z, &mut progress)?;
            finish(z.finish().map_err(|e| format!("write: {e}"))?)?;
            sum
        }
        OutFormat::Binaryfile => {
            let (out, sum) = session::to_binaryfile(&mut market, out, &mut progress)?;
            finish(out)?;
            sum
        }
    };
    eprint!("{}", sum.to_text());
    eprintln!(
        "peak live orders {}, {} symbols",
        market.peak_live_orders(),
        a.symbols
    );
    if let Some(r) = &a.lines.report {
        write_report(
            r,
            &sum,
            serde_json::json!({"generator": {"seed": a.seed, "symbols": a.symbols}}),
        )?;
    }
    Ok(())
}

fn convert(a: ConvertArgs) -> Result<(), String> {
    let cap = capture::open(&a.input).map_err(|e| format!("{}: {e}", a.input.display()))?;
    let Capture::BinaryFile(mut reader) = cap else {
        return Err(format!(
            "{}: is a {}, not a BinaryFILE day file",
            a.input.display(),
            cap.format().name()
        ));
    };
    let mut progress = Progress::new("convert", a.lines.progress);
    let out = create(&a.output)?;
    let (out, sum) = session::to_pcap(
        &mut reader,
        a.lines.packetizer()?,
        a.lines.lines(0, Some(&a.input))?,
        out,
        &mut progress,
    )
    .map_err(|e| format!("{}: {e}", a.input.display()))?;
    finish(out)?;
    eprint!("{}", sum.to_text());
    if let Some(r) = &a.lines.report {
        write_report(
            r,
            &sum,
            serde_json::json!({"file": a.input.display().to_string()}),
        )?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let res = match Cli::parse().cmd {
        Cmd::Generate(a) => generate(a),
        Cmd::Convert(a) => convert(a),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pcap-replay: {e}");
            ExitCode::FAILURE
        }
    }
}
