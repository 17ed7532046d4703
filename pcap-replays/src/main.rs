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
    /// Replay a capture onto multicast lines A and B (the exchange simulator), serving
    /// MoldUDP64 re-requests for everything sent.
    Play(PlayArgs),
}

#[derive(Args, Debug)]
struct PlayArgs {
    /// The capture: pcap, pcapng or BinaryFILE (plain or .gz).
    input: PathBuf,
    /// Replay at N times the capture's pace (default 1).
    #[arg(long, conflicts_with_all = ["rate", "top"])]
    speed: Option<f64>,
    /// Replay at a fixed rate, messages per second.
    #[arg(long, conflicts_with = "top")]
    rate: Option<u64>,
    /// Send a frame up to this long before it is due rather than spin for it, µs (0: exact
    /// pacing, one core busy; 1000 costs little CPU and moves frames by at most 1 ms).
    #[arg(long, default_value_t = 0)]
    pace_slack_us: u64,
    /// Replay as fast as possible.
    #[arg(long)]
    top: bool,
    /// Interface to send multicast on.
    #[arg(long, default_value = "127.0.0.1")]
    interface: std::net::Ipv4Addr,
    /// Re-request server address (MoldUDP64 requests come here, replies go back unicast).
    #[arg(long, default_value = "127.0.0.1:26500")]
    rerequest_addr: SocketAddrV4,
    /// Do not run the re-request server.
    #[arg(long)]
    no_rerequest: bool,
    /// The server ignores requests while this file exists (to take it down and up).
    #[arg(long)]
    rerequest_off_file: Option<PathBuf>,
    /// Delay before each reply, ms.
    #[arg(long, default_value_t = 0)]
    rerequest_delay_ms: u64,
    /// Keep serving re-requests this long after the last packet, ms.
    #[arg(long, default_value_t = 2000)]
    linger_ms: u64,
    /// Seed of the fault stream.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Replay N passes (0: until stopped); each pass continues the sequence numbers and the
    /// ITCH clock (moved on by the session's span in whole seconds), so bars keep closing.
    #[arg(long = "loop", value_name = "N", default_value_t = 1)]
    passes: u64,
    /// Send line A from this address (IP:PORT; port 0: any).
    #[arg(long, default_value = "0.0.0.0:0")]
    source_a: SocketAddrV4,
    /// Send line B from this address.
    #[arg(long, default_value = "0.0.0.0:0")]
    source_b: SocketAddrV4,
    #[command(flatten)]
    lines: LineArgs,
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
    /// The venue (0 Nasdaq, 1 BX, 2 PSX): the same symbols and starting prices as venue 0 of
    /// the seed under its own locates and order flow, with a smaller share of --messages and
    /// --rate (BX 30%, PSX 20%).
    #[arg(long, default_value_t = 0)]
    venue: u8,
    /// Delete every resting order at the end of the flow, so the session can be replayed in a
    /// loop (`play --loop`) with each pass starting from an empty book.
    #[arg(long)]
    delete_at_close: bool,
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
    /// Messages within this many microseconds share a packet (at most a second).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
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
        venue: a.venue,
        delete_at_close: a.delete_at_close,
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

fn play(a: PlayArgs) -> Result<(), String> {
    use pcap_replays::replay::{self, Pace, ServerConfig};
    use std::sync::atomic::{AtomicBool, Ordering};
    let pace = if a.top {
        Pace::Top
    } else if let Some(r) = a.rate {
        Pace::Rate(r)
    } else {
        Pace::Speed(a.speed.unwrap_or(1.0))
    };
    if let Pace::Speed(s) = pace
        && !(s > 0.0 && s.is_finite())
    {
        return Err(format!("--speed {s}: must be a positive factor"));
    }
    let t = std::time::Instant::now();
    let (packets, mut store) = replay::load(&a.input, a.lines.packetizer()?)?;
    store.set_looped(a.passes != 1);
    let msgs = store.len();
    eprintln!(
        "pcap-replay: {} packets, {msgs} messages loaded in {:.1} s",
        packets.len(),
        t.elapsed().as_secs_f64()
    );
    let lines = a.lines.lines(a.seed, Some(&a.input))?;
    let socks = lines
        .lines
        .iter()
        .map(|l| {
            feed_handler::sock::multicast_sender(
                a.interface,
                if l.name == "A" {
                    a.source_a
                } else {
                    a.source_b
                },
            )
            .map_err(|e| {
                format!(
                    "line {}: cannot open a multicast sender on {}: {e}",
                    l.name, a.interface
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let server = (!a.no_rerequest).then(|| ServerConfig {
        addr: a.rerequest_addr,
        off_file: a.rerequest_off_file.clone(),
        delay: std::time::Duration::from_millis(a.rerequest_delay_ms),
        max_payload: replay::REPLY_PAYLOAD,
    });
    let serving = server.is_some();
    let exchange = replay::Exchange::start(store, server).map_err(|e| {
        format!(
            "--rerequest-addr {}: {e} (is another replayer running?)",
            a.rerequest_addr
        )
    })?;
    if serving {
        eprintln!("pcap-replay: re-request server on {}", a.rerequest_addr);
    }
    for l in &lines.lines {
        eprintln!(
            "pcap-replay: line {} to {} (faults {:?})",
            l.name, l.dst, l.faults
        );
    }
    let started = std::time::Instant::now();
    let (out, line_stats) = exchange
        .play_on_with_slack(
            socks,
            &packets,
            pace,
            lines.clone(),
            a.passes,
            &AtomicBool::new(false),
            std::time::Duration::from_micros(a.pace_slack_us),
        )
        .map_err(|e| format!("send: {e}"))?;
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "pcap-replay: sent {} messages in {:.3} s ({:.0} msg/s), {} frames, {} send errors",
        msgs * a.passes.max(1),
        secs,
        (msgs * a.passes.max(1)) as f64 / secs,
        out.sent(),
        out.errors
    );
    for (spec, l) in lines.lines.iter().zip(&line_stats) {
        eprintln!(
            "pcap-replay: line {}: {} frames, {} dropped, {} in gaps, {} duplicated, {} reordered",
            spec.name, l.written, l.dropped, l.gap_dropped, l.duplicated, l.reordered
        );
    }
    if serving {
        std::thread::sleep(std::time::Duration::from_millis(a.linger_ms));
        let stats = exchange.stop();
        eprintln!(
            "pcap-replay: re-request server: {} requests, {} ignored, {} messages sent",
            stats.requests.load(Ordering::Relaxed),
            stats.ignored.load(Ordering::Relaxed),
            stats.messages.load(Ordering::Relaxed)
        );
    }
    if let Some(r) = &a.lines.report {
        let sum = Summary {
            messages: msgs,
            message_bytes: 0,
            packets: packets.len() as u64,
            lines: lines
                .lines
                .iter()
                .map(|l| l.name.to_string())
                .zip(line_stats)
                .collect(),
        };
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
        Cmd::Play(a) => play(a),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pcap-replay: {e}");
            ExitCode::FAILURE
        }
    }
}
