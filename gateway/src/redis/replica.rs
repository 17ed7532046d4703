//! The gateway side: a local replica of the quotes in Redis, served to the rest of the gateway
//! through the one narrow interface, [`crate::source::QuoteSource`].
//!
//! One link thread per Redis node (one for a plain server, one per master of a cluster) keeps a
//! subscriber connection and a command connection: it subscribes to the heartbeat, to new-symbol
//! announcements and to each wanted symbol's channel on its node, and after each symbol's
//! subscription is confirmed it GETs the symbol's key, so nothing published in between is
//! missed. A supervisor thread finds the topology (`CLUSTER SLOTS`) and restarts the links when
//! it changes. Every value goes through [`ReplicaCore`] (sans I/O, clock passed in), which decides
//! what is fresh (see the module docs of [`super`]) and writes the result into a quote table in
//! memory (a memfd), which each worker follows with the same [`ShmSource`] that reads a local
//! table.

use super::cluster::Topology;
use super::conn::Conn;
use super::{Keys, decode, discover};
use crate::source::{Health, QuoteSource, ShmSource};
use book::barlog::{self, BarLogWriter};
use book::quotes::{Quote, QuoteWriter};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a replica does with each symbol it has.
pub type Out<'a> = &'a mut dyn FnMut(usize, &Quote);

#[derive(Debug, Clone)]
struct Sym {
    q: Quote,
    pub_ns: u64,
    link: usize,
    /// The link generation the value was last confirmed in.
    generation: u64,
    /// What was last written: (quote as shown).
    shown: Option<Quote>,
}

#[derive(Debug, Clone, Default)]
struct LinkState {
    up: bool,
    generation: u64,
    hb_seen: bool,
    hb_last_ns: u64,
    epoch_ns: u64,
    ok: bool,
}

/// The replica's logic: which quotes are known, and which of them can be shown fresh.
#[derive(Debug)]
pub struct ReplicaCore {
    syms: Vec<Sym>,
    index: HashMap<[u8; 8], usize>,
    cap: usize,
    links: Vec<LinkState>,
    hb_timeout_ns: u64,
    /// Symbols refused because the table was full.
    pub full: u64,
    /// Values that were not quotes.
    pub bad_values: u64,
    /// Values older than the one held (ignored).
    pub older: u64,
    /// Values taken.
    pub values: u64,
}

impl ReplicaCore {
    /// A replica of at most `cap` symbols whose links are down until they say otherwise; a link
    /// without a heartbeat for `hb_timeout_ns` makes its symbols stale.
    pub fn new(cap: usize, hb_timeout_ns: u64) -> ReplicaCore {
        ReplicaCore {
            syms: Vec::new(),
            index: HashMap::new(),
            cap,
            links: Vec::new(),
            hb_timeout_ns,
            full: 0,
            bad_values: 0,
            older: 0,
            values: 0,
        }
    }

    /// Symbols held.
    pub fn len(&self) -> usize {
        self.syms.len()
    }

    /// Whether no symbol is held.
    pub fn is_empty(&self) -> bool {
        self.syms.is_empty()
    }

    fn link(&mut self, k: usize) -> &mut LinkState {
        if self.links.len() <= k {
            self.links.resize(k + 1, LinkState::default());
        }
        &mut self.links[k]
    }

    fn link_ok(&self, k: usize, now_ns: u64) -> bool {
        self.links.get(k).is_some_and(|l| {
            l.up && l.hb_seen && now_ns.saturating_sub(l.hb_last_ns) <= self.hb_timeout_ns
        })
    }

    fn emit(&mut self, i: usize, out: Out<'_>) {
        let s = &self.syms[i];
        let l = &self.links[s.link];
        let fresh = l.ok && s.generation == l.generation && s.pub_ns >= l.epoch_ns && !s.q.stale;
        let mut q = s.q;
        q.stale = !fresh;
        if s.shown != Some(q) {
            self.syms[i].shown = Some(q);
            out(i, &q);
        }
    }

    fn emit_link(&mut self, k: usize, out: Out<'_>) {
        for i in 0..self.syms.len() {
            if self.syms[i].link == k {
                self.emit(i, out);
            }
        }
    }

    /// Re-evaluates link `k` after its state changed.
    fn update(&mut self, k: usize, now_ns: u64, out: Out<'_>) {
        let ok = self.link_ok(k, now_ns);
        if self.links[k].ok != ok {
            self.links[k].ok = ok;
            self.emit_link(k, out);
        }
    }

    /// Link `k` (re)connected: nothing it held is confirmed until it arrives again, and nothing
    /// is fresh until a heartbeat comes through it. Returns the link's new generation.
    pub fn link_up(&mut self, k: usize, now_ns: u64, out: Out<'_>) -> u64 {
        let l = self.link(k);
        l.up = true;
        l.generation += 1;
        l.hb_seen = false;
        let generation = l.generation;
        self.update(k, now_ns, out);
        generation
    }

    /// Link `k` lost its node: its symbols go stale.
    pub fn link_down(&mut self, k: usize, now_ns: u64, out: Out<'_>) {
        self.link(k).up = false;
        self.update(k, now_ns, out);
    }

    /// A heartbeat through link `k`.
    pub fn heartbeat(&mut self, k: usize, epoch_ns: u64, now_ns: u64, out: Out<'_>) {
        let l = self.link(k);
        l.hb_seen = true;
        l.hb_last_ns = now_ns;
        let new_epoch = epoch_ns != l.epoch_ns;
        l.epoch_ns = epoch_ns;
        self.update(k, now_ns, out);
        if new_epoch {
            self.emit_link(k, out);
        }
    }

    /// Heartbeat timeouts.
    pub fn tick(&mut self, now_ns: u64, out: Out<'_>) {
        for k in 0..self.links.len() {
            self.update(k, now_ns, out);
        }
    }

    /// A value (from GET or a channel) through link `k`; returns the quote's slot if the value
    /// was taken.
    pub fn value(&mut self, k: usize, v: &[u8], out: Out<'_>) -> Option<usize> {
        let Some((pub_ns, q)) = decode(v) else {
            self.bad_values += 1;
            return None;
        };
        let generation = self.link(k).generation;
        self.values += 1;
        let i = match self.index.get(&q.symbol) {
            Some(&i) => i,
            None => {
                if self.syms.len() >= self.cap {
                    self.full += 1;
                    return None;
                }
                self.index.insert(q.symbol, self.syms.len());
                self.syms.push(Sym {
                    q,
                    pub_ns,
                    link: k,
                    generation,
                    shown: None,
                });
                self.emit(self.syms.len() - 1, out);
                return Some(self.syms.len() - 1);
            }
        };
        let s = &mut self.syms[i];
        if pub_ns < s.pub_ns {
            self.older += 1;
            return None;
        }
        s.q = q;
        s.pub_ns = pub_ns;
        s.link = k;
        s.generation = generation;
        self.emit(i, out);
        Some(i)
    }
}

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
        }
    }
}

struct State {
    core: ReplicaCore,
    table: QuoteWriter,
    /// Why each link is down (None: up), and the topology's trouble.
    down: Vec<Option<String>>,
    topo_down: Option<String>,
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
}

/// The bars a replica took, appended to a bar log in memory that `/v1/bars` reads as it reads the
/// book's. Bars from the channel are appended as they come (new bars, revisions, and a new
/// session's, which start earlier than the last day's); bars from reloading a list after a
/// (re)subscription only when they do not start before the series' last bar taken, so a reload
/// adds nothing twice.
struct BarMirror {
    log: BarLogWriter,
    last: HashMap<([u8; 8], u8), u64>,
    /// Records that were not bars (wrong length).
    bad: u64,
}

impl BarMirror {
    /// Bars from the channel: each is new, a revision, or a new session's.
    fn take(&mut self, records: &mut Vec<Vec<u8>>) {
        for b in records.drain(..) {
            if b.len() != barlog::RECORD {
                self.bad += 1;
                continue;
            }
            let r = barlog::record_from_bytes(&b);
            self.last.insert((r.symbol, r.interval_s), r.bar.start_ns);
            let _ = self.log.append(r);
        }
        let _ = self.log.flush();
    }

    /// One series' list, oldest first, as reloaded after a (re)subscription: only what comes
    /// after the last bar taken (all of it when none was, or it is no longer in the list).
    fn reload(&mut self, list: &mut Vec<Vec<u8>>) {
        let bad = list.iter().filter(|b| b.len() != barlog::RECORD).count();
        self.bad += bad as u64;
        list.retain(|b| b.len() == barlog::RECORD);
        let Some(first) = list.first().map(|b| barlog::record_from_bytes(b)) else {
            return;
        };
        let from = match self.last.get(&(first.symbol, first.interval_s)) {
            Some(&last) => list
                .iter()
                .rposition(|b| barlog::record_from_bytes(b).bar.start_ns == last)
                .map_or(0, |i| i + 1),
            None => 0,
        };
        let mut rest = list.split_off(from);
        list.clear();
        self.take(&mut rest);
    }
}

struct Shared {
    cfg: ReplicaCfg,
    keys: Keys,
    state: Mutex<State>,
    bars: Mutex<BarMirror>,
    stop: &'static AtomicBool,
    clock: Instant,
    /// Set by a link that saw the cluster move slots.
    topology_changed: AtomicBool,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        self.clock.elapsed().as_nanos() as u64
    }

    fn with<R>(&self, f: impl FnOnce(&mut ReplicaCore, Out<'_>) -> R) -> R {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let State { core, table, .. } = &mut *st;
        f(core, &mut |i, q| table.publish(i, q))
    }

    fn take_bars(&self, live: &mut Vec<Vec<u8>>, reloaded: &mut Vec<Vec<Vec<u8>>>) {
        let mut m = self.bars.lock().unwrap_or_else(|p| p.into_inner());
        m.take(live);
        for list in reloaded.iter_mut() {
            m.reload(list);
        }
        reloaded.clear();
    }

    fn set_down(&self, k: usize, why: Option<String>) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.down.len() <= k {
            st.down.resize(k + 1, None);
        }
        st.down[k] = why;
    }

    fn health(&self) -> Health {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(why) = &st.topo_down {
            return Health::Down(why.clone());
        }
        if let Some(why) = st.down.iter().flatten().next() {
            return Health::Down(why.clone());
        }
        let now = self.now_ns();
        match (0..st.down.len()).find(|&k| !st.core.link_ok(k, now)) {
            Some(k) => Health::Down(format!(
                "no publisher heartbeat through Redis node {} for {} ms (is `gateway publish` running?)",
                k,
                st.core.hb_timeout_ns / 1_000_000
            )),
            None => Health::Live,
        }
    }
}

/// A new memory file and the path other code opens it by.
fn memfd(name: &std::ffi::CStr) -> Result<(std::fs::File, PathBuf), String> {
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
        let bar_log = BarLogWriter::create_in(bars_file)
            .map_err(|e| format!("the replica's bar log: {e}"))?;
        let table = QuoteWriter::create_in(&file, &path, cfg.slots, 1 << 16)
            .map_err(|e| format!("the replica's quote table: {e}"))?;
        let shared = Arc::new(Shared {
            keys: Keys::new(&cfg.prefix),
            state: Mutex::new(State {
                core: ReplicaCore::new(cfg.slots, cfg.hb_timeout_ns),
                table,
                down: vec![Some("not connected yet".into())],
                topo_down: None,
            }),
            bars: Mutex::new(BarMirror {
                log: bar_log,
                last: HashMap::new(),
                bad: 0,
            }),
            cfg,
            stop,
            clock: Instant::now(),
            topology_changed: AtomicBool::new(false),
        });
        let s = shared.clone();
        let sup = std::thread::Builder::new()
            .name("redis-replica".into())
            .spawn(move || supervise(s))
            .map_err(|e| e.to_string())?;
        Ok(Replica {
            shared,
            threads: vec![sup],
            path,
            _file: file,
            bars_path,
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
    fn prometheus(&self, out: &mut String) {
        use std::fmt::Write;
        let st = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = self.shared.now_ns();
        let up = st.down.iter().filter(|d| d.is_none()).count();
        let trusted = (0..st.down.len())
            .filter(|&k| st.core.link_ok(k, now))
            .count();
        let c = &st.core;
        let bad_bars = self
            .shared
            .bars
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .bad;
        for (name, kind, help, v) in [
            (
                "redis_nodes",
                "gauge",
                "Redis nodes the replica links to.",
                st.down.len() as u64,
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
                "Bar records that were not bars (ignored).",
                bad_bars,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP gateway_{name} {help}\n# TYPE gateway_{name} {kind}\ngateway_{name} {v}"
            );
        }
    }
}

/// Finds the topology and runs one link per node; restarts them when the topology changes.
fn supervise(sh: Arc<Shared>) {
    let mut backoff = Duration::from_millis(100);
    while !sh.stop.load(Ordering::Relaxed) {
        let topo = match discover(&sh.cfg.seeds, sh.cfg.timeout) {
            Ok(t) => t,
            Err(e) => {
                {
                    let mut st = sh.state.lock().unwrap_or_else(|p| p.into_inner());
                    if st.topo_down.as_ref() != Some(&e) {
                        eprintln!("gateway: {e}; every symbol is stale until Redis answers");
                    }
                    st.topo_down = Some(e);
                }
                let now = sh.now_ns();
                sh.with(|c, out| {
                    for k in 0..c.links.len() {
                        c.link_down(k, now, out);
                    }
                });
                pause(&sh, backoff);
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        {
            let mut st = sh.state.lock().unwrap_or_else(|p| p.into_inner());
            if st.topo_down.take().is_some() {
                eprintln!(
                    "gateway: redis answers again ({} node{}); resyncing",
                    topo.nodes.len(),
                    if topo.nodes.len() == 1 { "" } else { "s" }
                );
            }
            st.down = vec![Some("connecting".into()); topo.nodes.len()];
        }
        let quit = Arc::new(AtomicBool::new(false));
        let topo = Arc::new(topo);
        let links: Vec<_> = (0..topo.nodes.len())
            .map(|k| {
                let (sh, topo, quit) = (sh.clone(), topo.clone(), quit.clone());
                std::thread::Builder::new()
                    .name(format!("redis-link-{k}"))
                    .spawn(move || link(sh, topo, k, quit))
            })
            .collect();
        // recheck the topology every 5 s, or at once when a link saw slots move
        let mut next = Instant::now() + Duration::from_secs(5);
        while !sh.stop.load(Ordering::Relaxed) {
            pause(&sh, Duration::from_millis(100));
            let now = sh.now_ns();
            sh.with(|c, out| c.tick(now, out));
            let moved = sh.topology_changed.swap(false, Ordering::Relaxed);
            if moved || Instant::now() >= next {
                next = Instant::now() + Duration::from_secs(5);
                match discover(&sh.cfg.seeds, sh.cfg.timeout) {
                    Ok(t) if t == *topo && !moved => {}
                    Ok(_) => break,
                    Err(_) if moved => break,
                    Err(_) => {}
                }
            }
        }
        quit.store(true, Ordering::Relaxed);
        for l in links.into_iter().flatten() {
            let _ = l.join();
        }
    }
}

fn pause(sh: &Shared, d: Duration) {
    let end = Instant::now() + d;
    while !sh.stop.load(Ordering::Relaxed) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20).min(d));
    }
}

/// One node's link: connect, subscribe, load, follow; reconnect with a backoff on any failure.
fn link(sh: Arc<Shared>, topo: Arc<Topology>, k: usize, quit: Arc<AtomicBool>) {
    let done = || sh.stop.load(Ordering::Relaxed) || quit.load(Ordering::Relaxed);
    let mut backoff = Duration::from_millis(100);
    let mut reported: Option<String> = None;
    while !done() {
        let mut up = false;
        let r = follow(&sh, &topo, k, &done, &mut up, &mut reported);
        let now = sh.now_ns();
        sh.with(|c, out| c.link_down(k, now, out));
        if up {
            // it was connected: a new outage starts with a short backoff
            backoff = Duration::from_millis(100);
        }
        match r {
            Ok(()) => break,
            Err(e) => {
                if !done() && reported.as_ref() != Some(&e) {
                    eprintln!("gateway: {e}; its symbols are stale until it is back");
                    reported = Some(e.clone());
                }
                sh.set_down(k, Some(e));
                let end = Instant::now() + backoff;
                while !done() && Instant::now() < end {
                    std::thread::sleep(Duration::from_millis(20));
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

fn follow(
    sh: &Shared,
    topo: &Topology,
    k: usize,
    done: &dyn Fn() -> bool,
    up: &mut bool,
    reported: &mut Option<String>,
) -> Result<(), String> {
    let addr = topo.nodes[k];
    let t = sh.cfg.timeout;
    let mut sub = Conn::connect(addr, t, Duration::from_millis(100))?;
    let mut cmd = Conn::connect(addr, t, t)?;
    let keys = &sh.keys;
    let (hb, new) = (keys.heartbeat(), keys.new_symbols());
    let subscribe: &[u8] = if topo.cluster {
        b"SSUBSCRIBE"
    } else {
        b"SUBSCRIBE"
    };
    // announcements first (confirmed), then the symbols already there: none falls in between
    sub.queue_push(&[b"SUBSCRIBE", hb.as_bytes(), new.as_bytes()]);
    sub.flush()?;
    let deadline = Instant::now() + t;
    for _ in 0..2 {
        sub.next_by(deadline, |r| match r.error() {
            Some(e) => Err(e),
            None => Ok(()),
        })?
        .map_err(|e| super::conn::err(addr, e))?;
    }
    let now = sh.now_ns();
    sh.with(|c, out| c.link_up(k, now, out));
    sh.set_down(k, None);
    *up = true;
    if reported.take().is_some() {
        eprintln!("gateway: redis {addr}: connected again; resyncing its symbols");
    }
    let wanted: Option<HashSet<&str>> = sh
        .cfg
        .symbols
        .as_ref()
        .map(|v| v.iter().map(String::as_str).collect());
    let mine = |sym: &str| {
        topo.node_of(keys.quote(sym).as_bytes()) == k
            && wanted.as_ref().is_none_or(|w| w.contains(sym))
    };
    let mut subscribed: HashSet<Vec<u8>> = HashSet::new();
    // at most as many subscriptions as the replica holds symbols: announcements of names that
    // never get a value cannot grow this without bound
    let want = |sym: &str, sub: &mut Conn, subscribed: &mut HashSet<Vec<u8>>| {
        let ch = keys.quote(sym);
        if mine(sym)
            && subscribed.len() < sh.cfg.slots
            && subscribed.insert(ch.clone().into_bytes())
        {
            sub.queue_push(&[subscribe, ch.as_bytes()]);
            sub.queue_push(&[subscribe, keys.bars_channel(sym).as_bytes()]);
        }
    };
    match &sh.cfg.symbols {
        Some(list) => {
            for s in list {
                want(s, &mut sub, &mut subscribed);
            }
        }
        None => {
            // every quote key this node holds
            let mut cursor = b"0".to_vec();
            let pattern = keys.pattern();
            loop {
                let (next, found) = cmd.call(
                    &[
                        b"SCAN",
                        &cursor,
                        b"MATCH",
                        pattern.as_bytes(),
                        b"COUNT",
                        b"1000",
                    ],
                    t,
                    |r| {
                        let it = r.items().unwrap_or(&[]);
                        let next = it.first().and_then(|x| x.bytes()).unwrap_or(b"0").to_vec();
                        let found: Vec<String> = it
                            .get(1)
                            .and_then(|x| x.items())
                            .unwrap_or(&[])
                            .iter()
                            .filter_map(|x| keys.symbol_of(x.bytes()?))
                            .map(|s| String::from_utf8_lossy(s).into_owned())
                            .collect();
                        (next, found)
                    },
                )?;
                for s in &found {
                    want(s, &mut sub, &mut subscribed);
                }
                if next == b"0" {
                    break;
                }
                cursor = next;
            }
        }
    }
    sub.flush()?;
    if sh.cfg.spin {
        sub.set_nonblocking(true)?;
    }
    let mut inbox = Inbox::default();
    while !done() {
        // everything that has arrived, then the GETs it asked for
        let mut first = true;
        loop {
            let got = if first {
                sub.next(|r| classify(&r, keys, &hb, &new, &mut inbox))?
            } else {
                sub.next_buffered(|r| classify(&r, keys, &hb, &new, &mut inbox))?
            };
            first = false;
            match got {
                None => {
                    if sh.cfg.spin {
                        // keep the CPU awake, but let anything runnable have it
                        std::thread::yield_now();
                    }
                    break;
                }
                Some(Ok(Some(epoch))) => {
                    let now = sh.now_ns();
                    sh.with(|c, out| c.heartbeat(k, epoch, now, out));
                }
                Some(Ok(None)) => {}
                Some(Err(e)) => {
                    sh.topology_changed.store(true, Ordering::Relaxed);
                    return Err(super::conn::err(addr, e));
                }
            }
            if inbox.values.len() + inbox.gets.len() + inbox.bars.len() >= 1024 {
                break;
            }
        }
        for s in std::mem::take(&mut inbox.news) {
            want(&s, &mut sub, &mut subscribed);
        }
        sub.flush()?;
        let Inbox {
            gets,
            values,
            bar_loads,
            bars,
            reloaded,
            ..
        } = &mut inbox;
        if !bars.is_empty() {
            sh.take_bars(bars, &mut Vec::new());
        }
        if !bar_loads.is_empty() {
            // the latest bars of each interval, oldest first; newer ones come on the channel
            for s in bar_loads.iter() {
                for interval in [1u8, 60] {
                    let key = keys.bars(s, interval);
                    cmd.queue(&[b"LRANGE", key.as_bytes(), b"-600", b"-1"]);
                }
            }
            cmd.flush()?;
            let deadline = Instant::now() + t;
            for _ in 0..bar_loads.len() * 2 {
                cmd.next_by(deadline, |r| {
                    let list: Vec<Vec<u8>> = r
                        .items()
                        .unwrap_or(&[])
                        .iter()
                        .filter_map(|x| x.bytes().map(<[u8]>::to_vec))
                        .collect();
                    reloaded.push(list);
                })?;
            }
            bar_loads.clear();
        }
        if !reloaded.is_empty() {
            sh.take_bars(&mut Vec::new(), reloaded);
        }
        if !gets.is_empty() {
            for ch in gets.iter() {
                cmd.queue(&[b"GET", ch]);
            }
            cmd.flush()?;
            let deadline = Instant::now() + t;
            for _ in 0..gets.len() {
                let v = cmd.next_by(deadline, |r| match r {
                    super::resp::Reply::Error(e) => Err(String::from_utf8_lossy(e).into_owned()),
                    r => Ok(r.bytes().map(<[u8]>::to_vec)),
                })?;
                match v {
                    Ok(Some(v)) => values.push(v),
                    Ok(None) => {}
                    Err(e) => {
                        if e.starts_with("MOVED") || e.starts_with("ASK") {
                            sh.topology_changed.store(true, Ordering::Relaxed);
                        }
                        return Err(super::conn::err(addr, e));
                    }
                }
            }
            gets.clear();
        }
        if !values.is_empty() {
            let on_value = sh.cfg.on_value.clone();
            sh.with(|c, out| {
                for v in values.drain(..) {
                    if c.value(k, &v, out).is_some()
                        && let (Some(f), Some((pub_ns, q))) = (&on_value, decode(&v))
                    {
                        f(&q, pub_ns);
                    }
                }
            });
        }
    }
    Ok(())
}

/// What the subscriber connection brought, sorted.
#[derive(Default)]
struct Inbox {
    /// Quote keys whose subscription was confirmed: to GET.
    gets: Vec<Vec<u8>>,
    /// Quote values.
    values: Vec<Vec<u8>>,
    /// Announced symbols.
    news: Vec<String>,
    /// Symbols whose bars subscription was confirmed: to load.
    bar_loads: Vec<String>,
    /// Bar records from the channel.
    bars: Vec<Vec<u8>>,
    /// Bar lists reloaded, one per series, oldest first.
    reloaded: Vec<Vec<Vec<u8>>>,
}

/// Sorts one pushed message into `inbox`; a heartbeat gives its epoch. An `Err` is a sign the
/// cluster moved slots (a forced unsubscribe, MOVED).
fn classify(
    r: &super::resp::Reply<'_>,
    keys: &Keys,
    hb: &str,
    new: &str,
    inbox: &mut Inbox,
) -> Result<Option<u64>, String> {
    if let Some(e) = r.error() {
        return Err(e);
    }
    let it = r.items().unwrap_or(&[]);
    let kind = it.first().and_then(|x| x.bytes()).unwrap_or(b"");
    let ch = it.get(1).and_then(|x| x.bytes()).unwrap_or(b"");
    let payload = it.get(2).and_then(|x| x.bytes()).unwrap_or(b"");
    let name = |s: &[u8]| String::from_utf8_lossy(s).into_owned();
    match kind {
        b"message" | b"smessage" if ch == hb.as_bytes() => {
            let epoch = std::str::from_utf8(payload)
                .ok()
                .and_then(|p| p.split(' ').next()?.parse().ok());
            return Ok(epoch);
        }
        b"message"
            if ch == new.as_bytes()
                && !payload.is_empty()
                && payload.len() <= 8
                && payload.iter().all(|b| b.is_ascii_graphic()) =>
        {
            inbox.news.push(name(payload));
        }
        b"message" | b"smessage" if keys.symbol_of(ch).is_some() => {
            inbox.values.push(payload.to_vec())
        }
        b"message" | b"smessage" if keys.symbol_of_bars(ch).is_some() => {
            inbox.bars.push(payload.to_vec())
        }
        b"subscribe" | b"ssubscribe" if keys.symbol_of(ch).is_some() => {
            inbox.gets.push(ch.to_vec())
        }
        b"subscribe" | b"ssubscribe" => {
            if let Some(s) = keys.symbol_of_bars(ch) {
                inbox.bar_loads.push(name(s));
            }
        }
        b"sunsubscribe" => {
            return Err(format!(
                "the server unsubscribed {}",
                String::from_utf8_lossy(ch)
            ));
        }
        _ => {}
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::encode;

    fn q(sym: &[u8; 8], bid: u32, stale: bool) -> Quote {
        Quote {
            symbol: *sym,
            bid: Some((bid, 100)),
            stale,
            ..Quote::default()
        }
    }

    struct Seen(std::cell::RefCell<Vec<Quote>>);
    impl Seen {
        fn take(&self) -> Vec<(u32, bool)> {
            self.0
                .borrow_mut()
                .drain(..)
                .map(|q| (q.bid.unwrap().0, q.stale))
                .collect()
        }
    }

    const S: u64 = 1_000_000_000;

    #[test]
    fn fresh_needs_a_link_a_heartbeat_since_connect_and_a_value_at_or_after_the_epoch() {
        let mut c = ReplicaCore::new(10, 2 * S);
        let seen = Seen(Default::default());
        let mut out = |_: usize, q: &Quote| seen.0.borrow_mut().push(*q);
        c.link_up(0, 0, &mut out);
        // a value before any heartbeat: held, shown stale
        c.value(0, &encode(100, &q(b"AAAA    ", 1, false)), &mut out);
        c.heartbeat(0, 50, S / 10, &mut out);
        assert_eq!(seen.take(), vec![(1, true), (1, false)]);
        // newer wins, older is ignored
        c.value(0, &encode(200, &q(b"AAAA    ", 2, false)), &mut out);
        c.value(0, &encode(150, &q(b"AAAA    ", 9, false)), &mut out);
        assert_eq!(seen.take(), vec![(2, false)]);
        assert_eq!(c.older, 1);
        // a stale quote from the source stays stale
        c.value(0, &encode(300, &q(b"AAAA    ", 3, true)), &mut out);
        assert_eq!(seen.take(), vec![(3, true)]);
        c.value(0, &encode(400, &q(b"AAAA    ", 4, false)), &mut out);
        assert_eq!(seen.take(), vec![(4, false)]);

        // the heartbeat stops: stale after the timeout, not before
        c.tick(2 * S, &mut out);
        assert!(seen.take().is_empty());
        c.tick(3 * S, &mut out);
        assert_eq!(seen.take(), vec![(4, true)]);
        c.heartbeat(0, 50, 3 * S + 1, &mut out);
        assert_eq!(seen.take(), vec![(4, false)]);

        // the link drops: stale; it comes back: still stale until the value and a heartbeat
        // arrive through the new connection
        c.link_down(0, 4 * S, &mut out);
        assert_eq!(seen.take(), vec![(4, true)]);
        c.link_up(0, 4 * S, &mut out);
        c.heartbeat(0, 50, 4 * S, &mut out);
        assert!(seen.take().is_empty(), "the old value is not confirmed yet");
        c.value(0, &encode(400, &q(b"AAAA    ", 4, false)), &mut out);
        assert_eq!(seen.take(), vec![(4, false)], "the same value, confirmed");

        // a publisher that reconnected announces a new epoch: older values are not trusted
        c.link_down(0, 5 * S, &mut out);
        c.link_up(0, 5 * S, &mut out);
        seen.take();
        c.value(0, &encode(400, &q(b"AAAA    ", 4, false)), &mut out);
        c.heartbeat(0, 500, 5 * S, &mut out);
        assert_eq!(
            seen.take(),
            vec![],
            "a value from before the epoch stays stale"
        );
        c.value(0, &encode(600, &q(b"AAAA    ", 6, false)), &mut out);
        assert_eq!(seen.take(), vec![(6, false)]);

        // garbage is counted; a full table refuses new symbols
        assert_eq!(c.value(0, b"nonsense", &mut out), None);
        assert_eq!(c.bad_values, 1);
        let mut small = ReplicaCore::new(1, S);
        small.value(0, &encode(1, &q(b"AAAA    ", 1, false)), &mut out);
        assert_eq!(
            small.value(0, &encode(1, &q(b"BBBB    ", 1, false)), &mut out),
            None
        );
        assert_eq!(small.full, 1);
    }

    #[test]
    fn a_reload_adds_no_bar_twice_and_a_new_session_still_comes_through() {
        let p = std::env::temp_dir().join(format!("mirror-{}", std::process::id()));
        let mut m = BarMirror {
            log: BarLogWriter::create(&p).unwrap(),
            last: HashMap::new(),
            bad: 0,
        };
        let bar = |start: u64, close: u32| {
            let mut r = barlog::record_from_bytes(&[0u8; barlog::RECORD]);
            r.symbol = *b"AAPL    ";
            r.interval_s = 1;
            r.bar.start_ns = start;
            r.bar.close = close;
            r.to_bytes().to_vec()
        };
        let starts = || -> Vec<u64> {
            barlog::read_all(&p)
                .unwrap()
                .iter()
                .map(|r| r.bar.start_ns)
                .collect()
        };
        m.take(&mut vec![bar(10, 1), bar(11, 1)]);
        // a reload after a reconnect: the list's bars up to the last one taken are here already
        m.reload(&mut vec![bar(9, 1), bar(10, 1), bar(11, 1), bar(12, 1)]);
        assert_eq!(starts(), [10, 11, 12]);
        // the next day's first bar starts earlier than yesterday's last: it comes all the same,
        // and a reload of a list holding both days adds nothing twice
        m.take(&mut vec![bar(3, 1)]);
        m.reload(&mut vec![bar(11, 1), bar(12, 1), bar(3, 1), bar(4, 1)]);
        assert_eq!(starts(), [10, 11, 12, 3, 4]);
        // a list that no longer holds the last bar taken (trimmed past it): all of it
        m.reload(&mut vec![bar(7, 1), bar(8, 1)]);
        assert_eq!(starts(), [10, 11, 12, 3, 4, 7, 8]);
        m.take(&mut vec![vec![1, 2, 3]]);
        assert_eq!(m.bad, 1);
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn links_are_independent() {
        let mut c = ReplicaCore::new(10, 2 * S);
        let seen = std::cell::RefCell::new(Vec::new());
        let mut out = |_: usize, q: &Quote| seen.borrow_mut().push((q.symbol, q.stale));
        for k in 0..2 {
            c.link_up(k, 0, &mut out);
            c.heartbeat(k, 1, 0, &mut out);
        }
        c.value(0, &encode(10, &q(b"AAAA    ", 1, false)), &mut out);
        c.value(1, &encode(10, &q(b"BBBB    ", 1, false)), &mut out);
        seen.borrow_mut().clear();
        c.link_down(1, 1, &mut out);
        assert_eq!(
            *seen.borrow(),
            vec![(*b"BBBB    ", true)],
            "only node 1's symbols"
        );
    }
}
