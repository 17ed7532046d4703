//! `gateway`: the command line.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

use clap::{Parser, Subcommand};
use gateway::redis::publish::PublisherCfg;
use gateway::redis::replica::{Replica, ReplicaCfg};
use gateway::server::{Server, ServerCfg};
use gateway::session::Limits;
use gateway::source::{QuoteSource, ShmSource};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "gateway",
    version,
    about = "Latest prices to many clients over WebSocket, SSE and HTTP"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Serve the quote table of a running `book run` (or `gateway synth`) until Ctrl-C or
    /// SIGTERM. Several gateway processes may serve the same port (SO_REUSEPORT).
    Run(RunArgs),
    /// A running gateway's counters from its /metrics: connections, subscriptions, messages,
    /// bytes and quotes per second, slow clients, closes, latency; once or as a live view.
    Stat {
        /// The gateway's address.
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: SocketAddr,
        /// A live view: print again every this many seconds until Ctrl-C.
        #[arg(long, value_name = "SECS")]
        watch: Option<u64>,
    },
    /// Publish every change of a quote table into Redis (a single server or a Redis Cluster),
    /// for gateways elsewhere started with `--source redis://...`. Runs beside `book run` until
    /// Ctrl-C or SIGTERM; survives Redis restarts (reconnects and rewrites every quote).
    Publish {
        /// Feed ring name or path: the quote table is <ring>.quotes.
        #[arg(long, default_value = "itch")]
        ring: String,
        /// Quote table name or path (overrides --ring).
        #[arg(long)]
        quotes: Option<String>,
        /// Redis: redis://HOST:PORT, or a cluster's seed list redis://HOST:PORT,HOST:PORT,...
        #[arg(long, default_value = "redis://127.0.0.1:6379")]
        redis: String,
        /// Key and channel prefix.
        #[arg(long, default_value = "quotes")]
        prefix: String,
        #[command(flatten)]
        redis_access: RedisAccessArgs,
        /// When the quote table had no change: 0 polls it without sleeping (yielding the CPU to
        /// anything runnable); otherwise the publisher sleeps on the table's doorbell until
        /// book publishes (at most 1 ms), or, without write access to the table (no doorbell),
        /// sleeps this many µs and looks again.
        #[arg(long, default_value_t = 50)]
        idle_us: u64,
        /// Changes per pipeline (one write to a node, then its replies), 1 to 65,536.
        #[arg(long, default_value_t = 1024,
              value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=65_536))]
        pipeline: usize,
    },
    /// Write a synthetic market into a quote table (for benchmarks and trials) until Ctrl-C.
    Synth {
        /// Quote table name (under /dev/shm) or path.
        #[arg(long, default_value = "synth.quotes")]
        quotes: String,
        /// Instruments.
        #[arg(long, default_value_t = 5000)]
        symbols: usize,
        /// Quote updates per second over all instruments.
        #[arg(long, default_value_t = 20_000)]
        rate: u64,
        /// Random seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Write what is due every this many µs (a burst of rate × tick updates each time).
        #[arg(long, default_value_t = 1000)]
        tick_us: u64,
    },
}

/// How `gateway publish` and a `--source redis://` gateway reach Redis.
#[derive(clap::Args, Debug)]
struct RedisAccessArgs {
    /// Redis: a file whose first line is PASSWORD or USER PASSWORD, sent with AUTH on every
    /// connection (Redis `requirepass` or an ACL user).
    #[arg(long)]
    redis_auth_file: Option<PathBuf>,
    /// Redis over TLS (rediss://): the CA certificates (PEM) Redis's certificates must chain to
    /// (default: the system's bundle).
    #[arg(long)]
    redis_tls_ca: Option<PathBuf>,
    /// Redis over TLS (rediss://): the name every node's certificate must carry (default: the
    /// URL's host name, or each node's IP address when the URL gives addresses).
    #[arg(long)]
    redis_tls_name: Option<String>,
}

impl RedisAccessArgs {
    /// How to reach the Redis of `url`: the credentials file's, and TLS for `rediss://`.
    fn access(&self, url: &str) -> Result<gateway::redis::conn::Access, String> {
        let tls = url.starts_with("rediss://");
        if !tls && (self.redis_tls_ca.is_some() || self.redis_tls_name.is_some()) {
            return Err(format!(
                "{url}: --redis-tls-ca and --redis-tls-name need a rediss:// URL"
            ));
        }
        let name = self
            .redis_tls_name
            .as_deref()
            .or_else(|| gateway::redis::cluster::url_host(url));
        Ok(gateway::redis::conn::Access {
            auth: self
                .redis_auth_file
                .as_deref()
                .map(gateway::redis::conn::Auth::from_file)
                .transpose()?,
            tls: tls
                .then(|| gateway::redis::tls::Tls::new(self.redis_tls_ca.as_deref(), name))
                .transpose()?,
        })
    }
}

/// The range of every millisecond setting: 1 ms to an hour. Each is multiplied into u64 ns, so
/// an unbounded one could overflow (a panic, or a wrong timeout), and no wait of this gateway
/// means anything past an hour.
fn ms_bound() -> clap::builder::RangedU64ValueParser {
    clap::value_parser!(u64).range(1..=3_600_000)
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Address and port to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Feed ring name or path: the quote table is <ring>.quotes.
    #[arg(long, default_value = "itch")]
    ring: String,
    /// Quote table name or path (overrides --ring).
    #[arg(long)]
    quotes: Option<String>,
    /// Where quotes come from: redis://HOST:PORT (or a cluster's seed list
    /// redis://HOST:PORT,HOST:PORT,...) for a replica of what `gateway publish` writes there;
    /// anything else is a quote table name or path (the default: the one of --ring).
    #[arg(long)]
    source: Option<String>,
    /// With a Redis source: serve only these symbols (comma-separated; default every symbol).
    #[arg(long, value_delimiter = ',')]
    redis_symbols: Option<Vec<String>>,
    /// With a Redis source: the key and channel prefix.
    #[arg(long, default_value = "quotes")]
    redis_prefix: String,
    #[command(flatten)]
    redis_access: RedisAccessArgs,
    /// With a Redis source: symbols go stale after this long without a publisher heartbeat, ms.
    #[arg(long, default_value_t = 2000, value_parser = ms_bound())]
    redis_heartbeat_timeout_ms: u64,
    /// With a Redis source: busy-poll the subscriber connections (a core per Redis node) instead
    /// of sleeping in read; for the lowest hop latency.
    #[arg(long)]
    redis_spin: bool,
    /// With a Redis source: symbols the replica holds at most.
    #[arg(long, default_value_t = 16384)]
    replica_slots: usize,
    /// Worker threads (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// Connections this process holds at most (each is an open file).
    #[arg(long, default_value_t = 19_000)]
    max_connections: usize,
    /// Symbols per connection (subscriptions, and portfolio holdings).
    #[arg(long, default_value_t = 500)]
    max_symbols: usize,
    /// Outbound buffer per connection, KiB: a client that has this much unsent is conflated.
    #[arg(long, default_value_t = 64,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_048_576))]
    out_buffer_kib: usize,
    /// A client whose outbound buffer does not drain for this long is closed with 1013, ms.
    #[arg(long, default_value_t = 10_000, value_parser = ms_bound())]
    stall_timeout_ms: u64,
    /// Largest inbound message handled (bigger: an error), bytes.
    #[arg(long, default_value_t = 128 * 1024)]
    max_message_bytes: usize,
    /// Largest inbound frame or message at all (bigger: close 1009), bytes.
    #[arg(long, default_value_t = 256 * 1024)]
    max_frame_bytes: usize,
    /// Inbound messages per second per connection (burst: twice this).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    msgs_per_s: u64,
    /// Errors within 10 s after which a connection is closed with 1008.
    #[arg(long, default_value_t = 20)]
    max_errors: u32,
    /// Heartbeat after this long without other messages, ms.
    #[arg(long, default_value_t = 1000, value_parser = ms_bound())]
    heartbeat_ms: u64,
    /// Request head / WebSocket handshake timeout, ms.
    #[arg(long, default_value_t = 5000, value_parser = ms_bound())]
    handshake_timeout_ms: u64,
    /// Close a WebSocket after this long with nothing received (pings are sent before), s.
    #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    idle_timeout_s: u64,
    /// Poll tick (how often the quote table is read when no socket is ready), µs.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    tick_us: u64,
    /// SO_SNDBUF of client sockets, bytes (kernel default if unset).
    #[arg(long)]
    sndbuf: Option<usize>,
    /// Compress WebSocket messages for clients that offer permessage-deflate (browsers do):
    /// each message on its own, when that makes it smaller. Off: no extension is accepted.
    #[arg(long)]
    deflate: bool,
}

fn path_of(ring: &str, quotes: Option<String>) -> PathBuf {
    book::quotes::table_path(ring, quotes.as_deref())
}

fn run(a: RunArgs) -> Result<(), String> {
    let stop = feed_handler::agent::stop_on_signals();
    let source = a.source.clone();
    let redis = source
        .as_deref()
        .filter(|s| s.starts_with("redis://") || s.starts_with("rediss://"));
    let replica = match redis {
        Some(url) => {
            let mut rc = ReplicaCfg::new(gateway::redis::cluster::parse_url(url)?);
            rc.prefix = a.redis_prefix.clone();
            rc.symbols = a.redis_symbols.clone();
            rc.slots = a.replica_slots;
            rc.hb_timeout_ns = a.redis_heartbeat_timeout_ms * 1_000_000;
            rc.spin = a.redis_spin;
            rc.access = a.redis_access.access(url)?;
            Some(Replica::start(rc, stop)?)
        }
        None => None,
    };
    let quotes = match (&replica, a.source.clone()) {
        (Some(r), _) => r.path.clone(),
        (None, Some(s)) => feed_handler::ring::ring_path(&s),
        (None, None) => path_of(&a.ring, a.quotes),
    };
    let mut cfg = ServerCfg {
        listen: a.listen,
        max_connections: a.max_connections,
        stall_timeout_ns: a.stall_timeout_ms * 1_000_000,
        handshake_timeout_ns: a.handshake_timeout_ms * 1_000_000,
        idle_timeout_ns: a.idle_timeout_s * 1_000_000_000,
        ping_interval_ns: (a.idle_timeout_s * 1_000_000_000 / 3).max(1_000_000_000),
        tick_ns: a.tick_us.max(100) * 1000,
        max_frame_bytes: a.max_frame_bytes,
        deflate: a.deflate,
        sndbuf_bytes: a.sndbuf,
        quotes: quotes.clone(),
        bars: replica.as_ref().map(|r| r.bars_path.clone()),
        venues: replica.as_ref().map(|r| r.venues_path.clone()),
        charts_loading: replica.as_ref().map(|r| r.charts_loading()),
        venue_names: replica.as_ref().map(|r| r.venue_names()),
        ..ServerCfg::default()
    };
    if let Some(w) = a.workers {
        cfg.workers = w;
    }
    let limits = Limits {
        max_symbols: a.max_symbols,
        max_message_bytes: a.max_message_bytes.min(a.max_frame_bytes),
        msgs_per_s: a.msgs_per_s,
        msgs_burst: a.msgs_per_s * 2,
        max_errors: a.max_errors,
        heartbeat_ns: a.heartbeat_ms * 1_000_000,
        out_budget: a.out_buffer_kib * 1024,
        ..Limits::default()
    };
    if replica.is_none() && !quotes.exists() {
        eprintln!(
            "gateway: warning: no quote table at {} yet (start `book run --ring {}`); serving \
             and waiting for it, /healthz says 503 until then",
            quotes.display(),
            a.ring
        );
    }
    let q = quotes.clone();
    let server = Server::start(cfg, limits, stop, &|| match &replica {
        Some(r) => Box::new(r.source()) as Box<dyn QuoteSource>,
        None => Box::new(ShmSource::new(q.clone())) as Box<dyn QuoteSource>,
    })?;
    let addr = server.listen_addr();
    let from = match redis {
        Some(url) => format!("a replica of {url}"),
        None => quotes.display().to_string(),
    };
    eprintln!(
        "gateway: serving {from} on http://{addr}/ ({} workers)",
        server.shared.cfg.workers
    );
    eprintln!("gateway: WebSocket ws://{addr}/v1/ws, counters http://{addr}/metrics");
    server.join()?;
    if let Some(r) = replica {
        r.join();
    }
    eprintln!("gateway: stopped");
    Ok(())
}

fn scrape(addr: SocketAddr) -> Result<std::collections::HashMap<String, f64>, String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2))
        .map_err(|e| format!("{addr}: {e} (is `gateway run --listen {addr}` running?)"))?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    write!(s, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut r = String::new();
    s.read_to_string(&mut r).map_err(|e| e.to_string())?;
    Ok(r.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect())
}

/// The bucket bound (ms) under which `q` of a histogram's observations fall.
fn quantile_ms(m: &std::collections::HashMap<String, f64>, name: &str, q: f64) -> Option<f64> {
    let mut b: Vec<(f64, f64)> = m
        .iter()
        .filter_map(|(k, v)| {
            let le = k
                .strip_prefix(name)?
                .strip_prefix("_bucket{le=\"")?
                .strip_suffix("\"}")?;
            Some((
                if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                },
                *v,
            ))
        })
        .collect();
    b.sort_by(|x, y| x.0.total_cmp(&y.0));
    let total = b.last()?.1;
    (total > 0.0).then(|| {
        b.iter()
            .find(|x| x.1 >= total * q)
            .map_or(f64::NAN, |x| x.0 * 1000.0)
    })
}

fn stat(addr: SocketAddr, watch: Option<u64>) -> Result<(), String> {
    let stop = feed_handler::agent::stop_on_signals();
    let mut prev: Option<(std::collections::HashMap<String, f64>, std::time::Instant)> = None;
    loop {
        let m = scrape(addr)?;
        let g = |k: &str| m.get(&format!("gateway_{k}")).copied().unwrap_or(0.0);
        let rate = |k: &str| {
            prev.as_ref().map_or(String::from("-"), |(p, t)| {
                let d = g(k) - p.get(&format!("gateway_{k}")).copied().unwrap_or(0.0);
                format!("{:.0}/s", d / t.elapsed().as_secs_f64())
            })
        };
        if watch.is_some() {
            print!("\x1b[2J\x1b[H");
        }
        println!(
            "gateway {addr}: source {}, {} symbols ({} stale)",
            if g("source_live") > 0.0 {
                "live"
            } else {
                "DOWN"
            },
            g("symbols"),
            g("stale_symbols")
        );
        println!(
            "  connections {} (websocket {}, sse {}), subscriptions {}, accepted {}, refused {}",
            g("connections"),
            g("websocket_connections"),
            g("sse_connections"),
            g("subscriptions"),
            g("accepted_total"),
            g("rejected_total")
        );
        println!(
            "  sent: messages {} ({}), quotes {} ({}), bytes {} ({}), writes {} ({})",
            g("messages_sent_total"),
            rate("messages_sent_total"),
            g("quotes_sent_total"),
            rate("quotes_sent_total"),
            g("bytes_sent_total"),
            rate("bytes_sent_total"),
            g("flushes_total"),
            rate("flushes_total")
        );
        println!(
            "  slow clients: conflated {} times, closed 1013 {}; closed 1008 {}, protocol {}, idle {}, handshake timeouts {}",
            g("slow_client_events_total"),
            g("slow_client_closed_total"),
            g("policy_closed_total"),
            g("protocol_closed_total"),
            g("idle_closed_total"),
            g("handshake_timeouts_total")
        );
        let q = |n: &str, p: f64| quantile_ms(&m, n, p).map_or("-".into(), |v| format!("{v} ms"));
        println!(
            "  age at write from feed receive: p50 <= {}, p99 <= {}; from exchange: p99 <= {}",
            q("gateway_age_from_receive_seconds", 0.5),
            q("gateway_age_from_receive_seconds", 0.99),
            q("gateway_age_from_exchange_seconds", 0.99)
        );
        let Some(secs) = watch else { return Ok(()) };
        prev = Some((m, std::time::Instant::now()));
        if !feed_handler::agent::wait_unless_stopped(secs, stop) {
            return Ok(());
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Run(a) => run(a),
        Cmd::Stat { addr, watch } => stat(addr, watch),
        Cmd::Publish {
            ring,
            quotes,
            redis,
            prefix,
            redis_access,
            idle_us,
            pipeline,
        } => (|| {
            let stop = feed_handler::agent::stop_on_signals();
            let path = path_of(&ring, quotes);
            let mut cfg = PublisherCfg::new(gateway::redis::cluster::parse_url(&redis)?);
            cfg.prefix = prefix;
            cfg.max_pipeline = pipeline;
            cfg.access = redis_access.access(&redis)?;
            eprintln!("gateway publish: {} into {redis}", path.display());
            gateway::redis::publish::run(
                &path,
                cfg,
                std::time::Duration::from_micros(idle_us),
                stop,
            )
        })(),
        Cmd::Synth {
            quotes,
            symbols,
            rate,
            seed,
            tick_us,
        } => {
            let stop = feed_handler::agent::stop_on_signals();
            let p = feed_handler::ring::ring_path(&quotes);
            eprintln!(
                "gateway synth: {symbols} symbols, {rate} updates/s into {}",
                p.display()
            );
            let tick = std::time::Duration::from_micros(tick_us.max(1));
            gateway::synth::run(&p, symbols, rate, seed, tick, stop)
                .map_err(|e| format!("{}: {e}", p.display()))
        }
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gateway: {e}");
            ExitCode::FAILURE
        }
    }
}
