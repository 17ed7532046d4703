//! The gateway side: a local replica of the quotes in Redis, served to the rest of the gateway
//! through the one narrow interface, [`crate::source::QuoteSource`].
//!
//! One link thread per Redis node (one for a plain server, one per master of a cluster) keeps a
//! subscriber connection and a command connection: it subscribes to the heartbeat, to new-symbol
//! announcements and to each wanted symbol's channel on its node, and after each symbol's
//! subscription is confirmed it GETs the symbol's key, so nothing published in between is
//! missed. A supervisor thread finds the topology (`CLUSTER SLOTS`) and follows its changes: a
//! new master gets a link, a master gone has its link stopped, and the links of masters that
//! stay keep their connections and subscribe to the slots their node gained (the server drops
//! the channels of slots it lost), so a slot moving stales only its symbols (the threads are in
//! `redis/link.rs`). Every value goes through [`ReplicaCore`]
//! ([`super::trust`]: sans I/O, clock passed in), which decides what is fresh (see the module
//! docs of [`super`]) and writes the result into a quote table in memory (a memfd), which each
//! worker follows with the same [`ShmSource`] that reads a local table. Bars go through a
//! thread of their own into a bar log in memory (`redis/mirror.rs`), so appending them,
//! compacting the log and taking a chart's lists do not hold up a link's quotes (a link waits
//! only while that thread's queue is full); a link reads the charts of the symbols it
//! subscribes to a few at a time between quotes (`redis/barload.rs`). Each venue's quotes (the
//! book's per-venue table) go through a second [`ReplicaCore`], under the same trust rule,
//! into a per-venue table in memory that `/v1/venues` reads as it reads the book's.

use super::Keys;
use super::mirror::BarMirror;
pub use super::trust::{Out, ReplicaCore};
use crate::source::{Health, QuoteSource, ShmSource};
use book::barlog::BarLogWriter;
use book::quotes::{Quote, QuoteWriter};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A hook called with every value a replica takes: (quote, publish time in ns since the epoch).
pub type OnValue = Arc<dyn Fn(&Quote, u64) + Send + Sync>;

/// Settings of a replica.
#[derive(Clone)]
pub struct ReplicaCfg {
    /// Seed addresses.
    pub seeds: Vec<SocketAddr>,
    /// Key prefix.
    pub prefix: String,
    /// Only these symbols (None: every symbol in Redis).
    pub symbols: Option<Vec<String>>,
    /// Symbols held at most.
    pub slots: usize,
    /// No heartbeat for this long makes a link's symbols stale, ns.
    pub hb_timeout_ns: u64,
    /// Connect and reply timeout.
    pub timeout: Duration,
    /// Busy-poll the subscriber connections instead of sleeping in `read` (a core per Redis
    /// node; waking a sleeping thread costs up to milliseconds on a busy or virtual machine).
    pub spin: bool,
    /// Called with every value taken (quote, publish time), e.g. to measure the hop.
    pub on_value: Option<OnValue>,
    /// Credentials and TLS for every connection.
    pub access: super::conn::Access,
}

impl std::fmt::Debug for ReplicaCfg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReplicaCfg({:?}, {})", self.seeds, self.prefix)
    }
}

impl ReplicaCfg {
    /// Defaults for these seeds.
    pub fn new(seeds: Vec<SocketAddr>) -> ReplicaCfg {
        ReplicaCfg {
            seeds,
            prefix: "quotes".into(),
            symbols: None,
            slots: 16384,
            hb_timeout_ns: 2_000_000_000,
            timeout: Duration::from_secs(2),
            spin: false,
            on_value: None,
            access: super::conn::Access::default(),
        }
    }
}

pub(super) struct State {
    pub(super) core: ReplicaCore,
    pub(super) table: QuoteWriter,
    /// Each venue's quotes, and the per-venue table they are written to.
    pub(super) venues: ReplicaCore,
    pub(super) venue_table: QuoteWriter,
    /// Why each link is down (None: up), and the topology's trouble.
    pub(super) down: Vec<Option<String>>,
    /// Links (by index) to a node of the current topology; the others are retired.
    pub(super) active: Vec<bool>,
    /// Links that have loaded every symbol their node held when they (last) connected.
    pub(super) loaded: Vec<bool>,
    pub(super) topo_down: Option<String>,
}

impl State {
    /// Room for link `k` in the per-link lists.
    fn link_slot(&mut self, k: usize) {
        if self.down.len() <= k {
            self.down.resize(k + 1, None);
            self.active.resize(k + 1, false);
            self.loaded.resize(k + 1, false);
        }
    }

    /// The links to nodes of the current topology.
    pub(super) fn active_links(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.active.len()).filter(|&k| self.active[k])
    }
}

/// A running replica: its threads, the table it writes, its health.
pub struct Replica {
    shared: Arc<Shared>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// The in-memory quote table (`/proc/self/fd/N`), for [`ShmSource`].
    pub path: PathBuf,
    /// The memfd behind it, open for as long as the replica lives.
    _file: std::fs::File,
    /// The bar log of the bars taken (`/proc/self/fd/N`), for `/v1/bars`.
    pub bars_path: PathBuf,
    /// The per-venue table (`/proc/self/fd/N`), for `/v1/venues`.
    pub venues_path: PathBuf,
    _venues_file: std::fs::File,
}

pub(super) struct Shared {
    pub(super) cfg: ReplicaCfg,
    pub(super) keys: Keys,
    pub(super) state: Mutex<State>,
    pub(super) bars: Mutex<BarMirror>,
    pub(super) stop: &'static AtomicBool,
    pub(super) clock: Instant,
    /// Set by a link that saw the cluster move slots.
    pub(super) topology_changed: AtomicBool,
    /// The topology the links follow, and how many times it was set (links compare).
    pub(super) topo: Mutex<Option<Arc<super::cluster::Topology>>>,
    pub(super) topo_version: AtomicU64,
    /// Slot map changes followed (after the first map).
    pub(super) map_changes: AtomicU64,
    /// Subscriptions and loads the servers dropped or redirected because their slot moved.
    pub(super) redirects: AtomicU64,
    /// Bar lists loaded (one per symbol and interval, after each (re)subscription).
    pub(super) lists_loaded: AtomicU64,
    /// Every node of the topology has had its symbols loaded once (sticky): before, a symbol
    /// not in the table may only be not loaded yet ([`QuoteSource::ready`]).
    ready: AtomicBool,
    /// To the bars thread, which keeps the bar log (appends, and compacts it now and then):
    /// the links hand it their bars and go on with the quotes.
    bars_tx: SyncSender<BarWork>,
    /// Work handed to the bars thread and not done yet.
    bars_queued: AtomicUsize,
    /// Charts whose lists are still to read, or not yet in the bar log (`/v1/bars` refuses them).
    pub(super) charts: crate::bars::ChartsLoading,
    /// The venue names the publisher wrote ([`super::Keys::venue_names`]), the latest read.
    pub(super) venue_names: Arc<Mutex<Vec<String>>>,
    /// The mirror's counters as the bars thread last left them (read without waiting for the
    /// mirror, which a compaction holds for as long as it takes): bad records, compactions.
    bars_counts: [AtomicU64; 2],
}

/// Bars a link hands to the bars thread, which takes them in the order each link sent them.
pub(super) enum BarWork {
    /// Bars from the channels, each with its channel's symbol.
    Live(Vec<(String, Vec<u8>)>),
    /// Lists read after a (re)subscription, each with its symbol and interval, oldest first,
    /// and the symbols whose lists were asked for (all in once these are taken).
    Lists(Vec<(String, u8, Vec<Vec<u8>>)>, Vec<String>),
}

/// Work the bars thread holds at most, queued; a link handing it more waits (bars are never
/// dropped). Chart loads are read only while fewer than [`LOADS_AHEAD`] wait.
const BARS_QUEUE: usize = 64;

/// The bars thread's queue length under which a link reads more charts.
pub(super) const LOADS_AHEAD: usize = 4;

/// The bars thread: takes each link's bars into the mirror until `stop`.
fn keep_bars(sh: Arc<Shared>, rx: Receiver<BarWork>) {
    // background work: when the CPUs are busy, the links' quotes go first (nice 10; failing
    // that, it runs as it is)
    // SAFETY: gettid and setpriority on this thread's own ID touch no memory of ours.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10);
    }
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(w) => {
                let mut m = sh.bars.lock().unwrap_or_else(|p| p.into_inner());
                match w {
                    BarWork::Live(mut live) => m.take(&mut live),
                    BarWork::Lists(lists, asked) => {
                        let n = lists.len();
                        for (sym, interval_s, mut list) in lists {
                            m.reload(&sym, interval_s, &mut list);
                        }
                        sh.lists_loaded.fetch_add(n as u64, Ordering::Relaxed);
                        for s in asked {
                            sh.charts.loaded(super::padded(s.as_bytes()), m.log.len());
                        }
                    }
                }
                if m.compactions != sh.bars_counts[1].load(Ordering::Relaxed) {
                    sh.charts.log_replaced();
                }
                sh.bars_counts[0].store(m.bad, Ordering::Relaxed);
                sh.bars_counts[1].store(m.compactions, Ordering::Relaxed);
                drop(m);
                sh.bars_queued.fetch_sub(1, Ordering::Relaxed);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if sh.stop.load(Ordering::Relaxed) {
            return;
        }
    }
}

impl Shared {
    pub(super) fn now_ns(&self) -> u64 {
        self.clock.elapsed().as_nanos() as u64
    }

    /// `f` on the consolidated quotes.
    pub(super) fn with<R>(&self, f: impl FnOnce(&mut ReplicaCore, Out<'_>) -> R) -> R {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let State { core, table, .. } = &mut *st;
        f(core, &mut |i, q| table.publish(i, q))
    }

    /// `f` on the venues' quotes.
    pub(super) fn with_venues<R>(&self, f: impl FnOnce(&mut ReplicaCore, Out<'_>) -> R) -> R {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let State {
            venues,
            venue_table,
            ..
        } = &mut *st;
        f(venues, &mut |i, q| venue_table.publish(i, q))
    }

    /// `f` on both: what happens to a link (up, down, a heartbeat, time) happens to every
    /// quote it brought.
    pub(super) fn with_both(&self, f: impl Fn(&mut ReplicaCore, Out<'_>)) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let State {
            core,
            table,
            venues,
            venue_table,
            ..
        } = &mut *st;
        f(core, &mut |i, q| table.publish(i, q));
        f(venues, &mut |i, q| venue_table.publish(i, q));
    }

    /// Hands bars to the bars thread (waiting while its queue is full).
    pub(super) fn take_bars(&self, w: BarWork) {
        self.bars_queued.fetch_add(1, Ordering::Relaxed);
        if self.bars_tx.send(w).is_err() {
            // the bars thread is gone (stopping)
            self.bars_queued.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Whether the bars thread has room for more chart loads.
    pub(super) fn loads_wanted(&self) -> bool {
        self.bars_queued.load(Ordering::Relaxed) < LOADS_AHEAD
    }

    pub(super) fn set_down(&self, k: usize, why: Option<String>) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.link_slot(k);
        st.down[k] = why;
    }

    /// Link `k` follows a node of the topology (or no longer does).
    pub(super) fn set_active(&self, k: usize, active: bool) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.link_slot(k);
        st.active[k] = active;
        st.loaded[k] = false;
        st.down[k] = active.then(|| "connecting".into());
    }

    /// Link `k` has loaded every symbol its node held when it connected: once every node of
    /// the topology's link has, the replica is ready.
    pub(super) fn set_loaded(&self, k: usize) {
        let nodes = self.topology().0.map_or(usize::MAX, |t| t.nodes.len());
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.link_slot(k);
        st.loaded[k] = true;
        let active: Vec<usize> = st.active_links().collect();
        if active.len() == nodes && active.iter().all(|&k| st.loaded[k]) {
            self.ready.store(true, Ordering::Release);
        }
    }

    /// A link saw `n` subscriptions or loads dropped or redirected (their slots moved): the
    /// supervisor asks for the map again.
    pub(super) fn slots_moved(&self, n: usize) {
        self.redirects
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        self.topology_changed
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// The topology the links follow, and its version.
    pub(super) fn topology(&self) -> (Option<Arc<super::cluster::Topology>>, u64) {
        let t = self.topo.lock().unwrap_or_else(|p| p.into_inner());
        (
            t.clone(),
            self.topo_version.load(std::sync::atomic::Ordering::Acquire),
        )
    }

    pub(super) fn health(&self) -> Health {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(why) = &st.topo_down {
            return Health::Down(why.clone());
        }
        if let Some(why) = st.active_links().find_map(|k| st.down[k].as_ref()) {
            return Health::Down(why.clone());
        }
        let now = self.now_ns();
        match st.active_links().find(|&k| !st.core.link_ok(k, now)) {
            Some(k) => Health::Down(format!(
                "no publisher heartbeat through Redis node {} for {} ms (is `gateway publish` running?)",
                k,
                st.core.hb_timeout_ns() / 1_000_000
            )),
            None => Health::Live,
        }
    }
}

/// A new memory file and the path other code opens it by.
pub(crate) fn memfd(name: &std::ffi::CStr) -> Result<(std::fs::File, PathBuf), String> {
    // SAFETY: memfd_create with a NUL-terminated name and no flags has no memory effects.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), 0) };
    if fd < 0 {
        return Err(format!("memfd_create: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: a new descriptor this process owns and nothing else holds.
    let file = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    Ok((file, PathBuf::from(format!("/proc/self/fd/{fd}"))))
}

impl Replica {
    /// Starts the replica's threads; they stop when `stop` is set.
    pub fn start(cfg: ReplicaCfg, stop: &'static AtomicBool) -> Result<Replica, String> {
        let (file, path) = memfd(c"gateway-replica")?;
        let (bars_file, bars_path) = memfd(c"gateway-replica-bars")?;
        let (venues_file, venues_path) = memfd(c"gateway-replica-venues")?;
        // as many quotes as the book's per-venue table holds: one slot each
        let venue_table = QuoteWriter::create_in(&venues_file, &venues_path, cfg.slots, 1 << 16)
            .map_err(|e| format!("the replica's per-venue table: {e}"))?;
        let bar_log = BarLogWriter::create_in(bars_file)
            .map_err(|e| format!("the replica's bar log: {e}"))?;
        let table = QuoteWriter::create_in(&file, &path, cfg.slots, 1 << 16)
            .map_err(|e| format!("the replica's quote table: {e}"))?;
        let (bars_tx, bars_rx) = std::sync::mpsc::sync_channel(BARS_QUEUE);
        let shared = Arc::new(Shared {
            keys: Keys::new(&cfg.prefix),
            state: Mutex::new(State {
                core: ReplicaCore::new(cfg.slots, cfg.hb_timeout_ns),
                table,
                venues: ReplicaCore::per_venue(cfg.slots, cfg.hb_timeout_ns),
                venue_table,
                down: vec![Some("not connected yet".into())],
                active: vec![true],
                loaded: vec![false],
                topo_down: None,
            }),
            bars: Mutex::new(BarMirror::new(bar_log)),
            cfg,
            stop,
            clock: Instant::now(),
            topology_changed: AtomicBool::new(false),
            topo: Mutex::new(None),
            topo_version: AtomicU64::new(0),
            map_changes: AtomicU64::new(0),
            redirects: AtomicU64::new(0),
            lists_loaded: AtomicU64::new(0),
            ready: AtomicBool::new(false),
            bars_tx,
            bars_queued: AtomicUsize::new(0),
            charts: crate::bars::ChartsLoading::default(),
            venue_names: Arc::default(),
            bars_counts: [AtomicU64::new(0), AtomicU64::new(0)],
        });
        let s = shared.clone();
        let sup = std::thread::Builder::new()
            .name("redis-replica".into())
            .spawn(move || super::link::supervise(s))
            .map_err(|e| e.to_string())?;
        let s = shared.clone();
        let bars = std::thread::Builder::new()
            .name("redis-bars".into())
            .spawn(move || keep_bars(s, bars_rx))
            .map_err(|e| e.to_string())?;
        Ok(Replica {
            shared,
            threads: vec![sup, bars],
            path,
            _file: file,
            bars_path,
            venues_path,
            _venues_file: venues_file,
        })
    }

    /// The health the workers report.
    pub fn health(&self) -> Health {
        self.shared.health()
    }

    /// A quote source for one worker.
    pub fn source(&self) -> RedisSource {
        RedisSource {
            inner: ShmSource::new(self.path.clone()),
            shared: self.shared.clone(),
        }
    }

    /// Counters: (symbols, values refused as not quotes, symbols refused for want of room).
    pub fn counts(&self) -> (usize, u64, u64) {
        let st = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
        (st.core.len(), st.core.bad_values, st.core.full)
    }

    /// The charts still coming in (for [`crate::server::ServerCfg::charts_loading`]).
    pub fn charts_loading(&self) -> crate::bars::ChartsLoading {
        self.shared.charts.clone()
    }

    /// The venue names as the publisher's feed handler calls them (empty until read; read
    /// again with every look at the topology, every 5 s).
    pub fn venue_names(&self) -> Arc<Mutex<Vec<String>>> {
        self.shared.venue_names.clone()
    }

    /// Bar lists loaded so far (one per symbol and interval, after each (re)subscription).
    pub fn bar_lists_loaded(&self) -> u64 {
        self.shared.lists_loaded.load(Ordering::Relaxed)
    }

    /// Waits for the threads (after `stop` was set).
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// A worker's source: the replica's table, healthy only when Redis and the publisher are.
pub struct RedisSource {
    inner: ShmSource,
    shared: Arc<Shared>,
}

impl QuoteSource for RedisSource {
    fn poll(&mut self, now_ns: u64, max: usize, f: &mut dyn FnMut(&Quote)) -> usize {
        self.inner.poll(now_ns, max, f)
    }
    fn health(&self) -> Health {
        match self.shared.health() {
            Health::Live => self.inner.health(),
            d => d,
        }
    }
    /// Every node's symbols loaded once into the replica's table, and that table attached.
    fn ready(&self) -> bool {
        self.shared.ready.load(Ordering::Acquire) && self.inner.ready()
    }
    fn prometheus(&self, out: &mut String) {
        use std::fmt::Write;
        use std::sync::atomic::Ordering::Relaxed;
        let st = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = self.shared.now_ns();
        let active: Vec<usize> = st.active_links().collect();
        let up = active.iter().filter(|&&k| st.down[k].is_none()).count();
        let trusted = active.iter().filter(|&&k| st.core.link_ok(k, now)).count();
        let c = &st.core;
        let [bad_bars, compactions] = [0, 1].map(|i| self.shared.bars_counts[i].load(Relaxed));
        for (name, kind, help, v) in [
            (
                "redis_nodes",
                "gauge",
                "Redis nodes the replica links to.",
                active.len() as u64,
            ),
            (
                "redis_links_up",
                "gauge",
                "Links connected to their node.",
                up as u64,
            ),
            (
                "redis_links_trusted",
                "gauge",
                "Links with a publisher heartbeat within the timeout.",
                trusted as u64,
            ),
            (
                "redis_symbols",
                "gauge",
                "Symbols the replica holds.",
                c.len() as u64,
            ),
            (
                "redis_venue_quotes",
                "gauge",
                "Quotes of single venues the replica holds (for /v1/venues).",
                st.venues.len() as u64,
            ),
            (
                "redis_values_total",
                "counter",
                "Quote values received from Redis (taken, older or refused).",
                c.values,
            ),
            (
                "redis_older_values_total",
                "counter",
                "Values older than the one held (ignored).",
                c.older,
            ),
            (
                "redis_marked_stale_total",
                "counter",
                "Quotes shown fresh that the replica then marked stale (a link down or without a heartbeat in time, a slot moved, a new publisher epoch before the quote's rewrite arrived).",
                c.marked_stale,
            ),
            (
                "redis_bad_values_total",
                "counter",
                "Values that were not quotes (ignored).",
                c.bad_values,
            ),
            (
                "redis_full_total",
                "counter",
                "New symbols refused: the replica was full.",
                c.full,
            ),
            (
                "redis_bad_bars_total",
                "counter",
                "Bar records that were not bars of their channel's or list's symbol (ignored).",
                bad_bars,
            ),
            (
                "redis_bar_log_compactions_total",
                "counter",
                "Times the bars taken were compacted to what charts keep (the log in memory).",
                compactions,
            ),
            (
                "redis_bar_lists_loaded_total",
                "counter",
                "Bar lists (a symbol's at one interval) loaded after a (re)subscription.",
                self.shared.lists_loaded.load(Relaxed),
            ),
            (
                "redis_slot_map_changes_total",
                "counter",
                "Changes of the cluster's slot map followed (failovers, resharding).",
                self.shared.map_changes.load(Relaxed),
            ),
            (
                "redis_redirects_total",
                "counter",
                "Subscriptions and loads a node dropped or redirected because their slot moved.",
                self.shared.redirects.load(Relaxed),
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP gateway_{name} {help}\n# TYPE gateway_{name} {kind}\ngateway_{name} {v}"
            );
        }
    }
}
