//! The gateway process: its configuration, the state its workers share (counters, limits, the
//! bar index, the stop flag), and start-up: one listening socket per worker on the same port
//! with SO_REUSEPORT (so several gateway processes can share the port too), and a check that the
//! process may open enough files for the connection limit.

use crate::bars::BarIndex;
use crate::metrics::Metrics;
use crate::session::Limits;
use crate::source::{Health, QuoteSource};
use crate::worker::Worker;
use socket2::{Domain, Socket, Type};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex};

/// Process-level settings (session-level ones are in [`Limits`]).
#[derive(Debug, Clone)]
pub struct ServerCfg {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Worker threads, each with its own poll loop.
    pub workers: usize,
    /// Connections this process holds at most.
    pub max_connections: usize,
    /// A request head (or WebSocket handshake) must complete within this.
    pub handshake_timeout_ns: u64,
    /// A WebSocket with nothing received (not even a pong) for this long is closed.
    pub idle_timeout_ns: u64,
    /// A ping is sent after this long without anything received.
    pub ping_interval_ns: u64,
    /// A client whose outbound buffer has not drained for this long is closed with 1013.
    pub stall_timeout_ns: u64,
    /// After a close is sent, the socket is dropped at the latest this much later.
    pub close_linger_ns: u64,
    /// Poll timeout: how often the source is read when no socket is ready.
    pub tick_ns: u64,
    /// tungstenite read buffer per connection.
    pub read_buffer_bytes: usize,
    /// Largest inbound WebSocket frame or message; larger ones close with 1009.
    pub max_frame_bytes: usize,
    /// Accept permessage-deflate (RFC 7692) when a client offers it: messages that compress
    /// go out compressed, each on its own ([`crate::deflate`]).
    pub deflate: bool,
    /// SO_SNDBUF for client sockets (the kernel's default when `None`).
    pub sndbuf_bytes: Option<usize>,
    /// Symbols the market view holds at most.
    pub max_table_symbols: usize,
    /// Exchange time zone offset from UTC (ns), for the age-from-exchange histogram.
    pub exchange_utc_offset_ns: i64,
    /// The quote table.
    pub quotes: PathBuf,
    /// The bar log (default: `<quotes>.bars`, beside the table).
    pub bars: Option<PathBuf>,
    /// The per-venue table for `/v1/venues` (default: `<quotes>.venues`, beside the table).
    pub venues: Option<PathBuf>,
    /// Charts still coming into the bar log from elsewhere (a Redis source's), refused until in.
    pub charts_loading: Option<crate::bars::ChartsLoading>,
    /// Venue names from elsewhere (a Redis source's) for `/v1/symbols`; `None`: the feed
    /// handler's counters beside the quote table.
    pub venue_names: Option<Arc<Mutex<Vec<String>>>>,
}

impl Default for ServerCfg {
    fn default() -> Self {
        ServerCfg {
            listen: "127.0.0.1:8080".parse().expect("address"),
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            max_connections: 19_000,
            handshake_timeout_ns: 5_000_000_000,
            idle_timeout_ns: 90_000_000_000,
            ping_interval_ns: 30_000_000_000,
            stall_timeout_ns: 10_000_000_000,
            close_linger_ns: 2_000_000_000,
            tick_ns: 1_000_000,
            read_buffer_bytes: 4096,
            max_frame_bytes: 256 * 1024,
            deflate: false,
            sndbuf_bytes: None,
            max_table_symbols: 65_536,
            exchange_utc_offset_ns: -5 * 3_600_000_000_000,
            quotes: PathBuf::from("/dev/shm/itch.quotes"),
            bars: None,
            venues: None,
            charts_loading: None,
            venue_names: None,
        }
    }
}

/// What the workers share.
#[derive(Debug)]
pub struct Shared {
    /// Process settings.
    pub cfg: ServerCfg,
    /// Session limits.
    pub limits: Limits,
    /// Counters.
    pub metrics: Metrics,
    /// Connections open in this process.
    pub open: AtomicUsize,
    /// Bars for `/v1/bars`.
    pub bars: Mutex<BarIndex>,
    /// The per-venue quote table for `/v1/venues`.
    pub venues_table: PathBuf,
    /// The source's health as worker 0 last saw it.
    pub health: Mutex<Health>,
    /// The source's own metrics as worker 0 last rendered them (once a second).
    pub source_text: Mutex<String>,
    /// Set to stop.
    pub stop: &'static AtomicBool,
    /// A worker panicked.
    pub failed: AtomicBool,
}

/// The open-files limit of this process.
pub fn nofile_limit() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `r` is a valid rlimit to write.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return 1024;
    }
    r.rlim_cur
}

fn listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.bind(&addr.into())?;
    s.listen(4096)?;
    Ok(s.into())
}

/// A running gateway.
#[derive(Debug)]
pub struct Server {
    /// What the workers share.
    pub shared: Arc<Shared>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Checks the limits, binds one listener per worker and starts the workers, each with a
    /// source from `source`.
    pub fn start(
        cfg: ServerCfg,
        limits: Limits,
        stop: &'static AtomicBool,
        source: &dyn Fn() -> Box<dyn QuoteSource>,
    ) -> Result<Server, String> {
        let nofile = nofile_limit();
        if cfg.max_connections as u64 + 64 > nofile {
            return Err(format!(
                "--max-connections {} needs at least {} open files, and this process may open {} \
                 (ulimit -n); lower --max-connections or raise the limit, and run more gateway \
                 processes on the same port for more connections",
                cfg.max_connections,
                cfg.max_connections + 64,
                nofile
            ));
        }
        if cfg.workers == 0 {
            return Err("workers must be at least 1".into());
        }
        // the first bind says clearly when the port is taken by something that is not a gateway
        let mut cfg = cfg;
        let mut listeners = Vec::new();
        for _ in 0..cfg.workers {
            let l = listener(cfg.listen).map_err(|e| {
                if e.kind() == std::io::ErrorKind::AddrInUse {
                    format!(
                        "{} is in use by another program (a gateway shares it only with \
                         gateways); stop it or choose --listen",
                        cfg.listen
                    )
                } else {
                    format!("listen on {}: {e}", cfg.listen)
                }
            })?;
            if cfg.listen.port() == 0 {
                cfg.listen = l.local_addr().map_err(|e| e.to_string())?;
            }
            listeners.push(l);
        }
        let bars = cfg
            .bars
            .clone()
            .unwrap_or_else(|| book::barlog::beside(&cfg.quotes));
        let venues_table = cfg
            .venues
            .clone()
            .unwrap_or_else(|| book::quotes::venues_beside(&cfg.quotes));
        let shared = Arc::new(Shared {
            venues_table,
            limits,
            metrics: Metrics::default(),
            open: AtomicUsize::new(0),
            bars: Mutex::new(BarIndex::new(bars).with_loading(cfg.charts_loading.clone())),
            health: Mutex::new(Health::Down("starting".into())),
            source_text: Mutex::new(String::new()),
            stop,
            failed: AtomicBool::new(false),
            cfg,
        });
        let mut threads = Vec::new();
        // the bar log read on here, a batch at a time, so that a chart request reads little
        let sh = shared.clone();
        threads.push(
            std::thread::Builder::new()
                .name("gw-bars".into())
                .spawn(move || {
                    use std::sync::atomic::Ordering::Relaxed;
                    while !sh.stop.load(Relaxed) {
                        let behind = sh.bars.lock().is_ok_and(|mut ix| {
                            ix.refresh_at_most(crate::bars::READ_PER_REFRESH) == Ok(false)
                        });
                        // (no log yet, or every record in: look again in a while)
                        if behind {
                            std::thread::yield_now();
                        } else {
                            std::thread::sleep(std::time::Duration::from_millis(50));
                        }
                    }
                })
                .map_err(|e| e.to_string())?,
        );
        for (k, l) in listeners.into_iter().enumerate() {
            let w = Worker::new(k, shared.clone(), l, source())
                .map_err(|e| format!("worker {k}: {e}"))?;
            let sh = shared.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("gw-worker-{k}"))
                    .spawn(move || {
                        // a worker that panics takes the process down cleanly (its clients
                        // would otherwise hang): the others stop, and the exit code says so
                        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| w.run()));
                        if r.is_err() {
                            eprintln!("gateway: worker {k} panicked; stopping");
                            sh.failed.store(true, std::sync::atomic::Ordering::Relaxed);
                            sh.stop.store(true, std::sync::atomic::Ordering::Relaxed);
                        }
                    })
                    .map_err(|e| e.to_string())?,
            );
        }
        Ok(Server { shared, threads })
    }

    /// The address listened on (with the port the kernel chose for port 0 when known).
    pub fn listen_addr(&self) -> SocketAddr {
        self.shared.cfg.listen
    }

    /// Waits for the workers to end (after the stop flag is set); an error if one panicked.
    pub fn join(self) -> Result<(), String> {
        for t in self.threads {
            let _ = t.join();
        }
        if self
            .shared
            .failed
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            Err("a worker failed (see above)".into())
        } else {
            Ok(())
        }
    }
}
