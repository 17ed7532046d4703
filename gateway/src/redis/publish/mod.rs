//! The publisher: every quote change from the quote table into Redis, conflated per batch and
//! pipelined (one write per node per batch): the keys `P:{SYM}` (one `MSET` per batch on a
//! plain server, a `SET` each in a cluster, where keys of a batch live in different slots) and
//! `PUBLISH`/`SPUBLISH P:{SYM}` with the same bytes (always after the key's write, so a replica
//! that subscribes and then loads misses nothing), plus a heartbeat every 250 ms. A key whose
//! slot is being moved and that already has been (ASK) is written on the node the ASK names and
//! its change published again after that; the rest of the batch is not held up, even while a
//! slot stays half-moved. A key whose slot has moved (MOVED) makes the publisher ask the node
//! named for the slot map; when only slots moved between masters (a resharding, a master added
//! or drained), it takes the new map in place, writes the moved slots' symbols again on their
//! new node and says the new map in a heartbeat at once, and the other symbols are not
//! touched. When Redis fails (a refused connection, a closed one, an error reply, a map where a
//! master it wrote is gone and another has come, as after a failover) the publisher drops
//! every connection, keeps reading the quote
//! table (its latest state stays current), and retries with a backoff up to a second; once
//! connected again it rewrites every symbol's latest quote before its first heartbeat, so
//! replicas trust nothing older than that.
//!
//! With [`Publisher::follow_venues`] it also writes the book's per-venue table: each venue's
//! quote of a symbol into the hash `P:{SYM}:venues` (`HSET`, field the venue's channel) and on
//! the channel of the same name, through the same batches, rewrites and heartbeats.

mod barfate;
mod barpos;
mod bars;
mod barsync;
mod bartrim;
mod lease;
mod regroup;
mod runs;

pub use bars::{CHECKED_SERIES_PER_FLUSH, MAX_PENDING_BARS};
pub use lease::LEASE_MS;
pub use runs::{COMMANDS_PER_FLUSH, GROUPED_PER_FLUSH};

use super::cluster::Topology;
use super::conn::Conn;
use super::{HEARTBEAT_NS, Keys, VALUE_LEN, discover, encode, now_ns};
use book::quotes::Quote;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Settings.
#[derive(Debug, Clone)]
pub struct PublisherCfg {
    /// Seed addresses (one server, or any nodes of a cluster).
    pub seeds: Vec<SocketAddr>,
    /// Key prefix.
    pub prefix: String,
    /// Connect and reply timeout.
    pub timeout: Duration,
    /// Changes per pipeline (one write, then the replies), which bounds the bytes in flight.
    /// Smaller pipelines do not deliver sooner: Redis reads at most 16 KiB of a client per
    /// event-loop turn and writes to subscribers between turns, while each extra round trip
    /// costs a wake-up on both sides (measured: `scripts/bench redis --pipeline N`).
    pub max_pipeline: usize,
    /// Credentials and TLS for every connection.
    pub access: super::conn::Access,
    /// Bars read from the log and waiting to go out, at most; the log is read on as they go.
    pub max_pending_bars: usize,
    /// Bars written at most a flush ([`GROUPED_PER_FLUSH`]; and at most
    /// [`COMMANDS_PER_FLUSH`] commands), quotes between.
    pub bars_per_flush: usize,
}

impl PublisherCfg {
    /// Defaults for these seeds.
    pub fn new(seeds: Vec<SocketAddr>) -> PublisherCfg {
        PublisherCfg {
            seeds,
            prefix: "quotes".into(),
            timeout: Duration::from_secs(2),
            max_pipeline: 1024,
            access: super::conn::Access::default(),
            max_pending_bars: MAX_PENDING_BARS,
            bars_per_flush: GROUPED_PER_FLUSH,
        }
    }
}

/// Counters.
#[derive(Debug, Clone, Default)]
pub struct PubStats {
    /// Quote changes written.
    pub published: u64,
    /// Changes merged into a later one of the same symbol before they were written.
    pub conflated: u64,
    /// Batches (pipelines) written.
    pub batches: u64,
    /// Successful (re)connections.
    pub connects: u64,
    /// Failures that dropped the connections.
    pub failures: u64,
    /// Full rewrites after a connection.
    pub republished: u64,
    /// Key writes sent on to the node an ASK named (their slot half-moved to it).
    pub asked: u64,
    /// Changes answered MOVED, written again after the slot map was followed.
    pub moved: u64,
    /// Slot maps taken in place (slots moved between masters; no new epoch).
    pub remaps: u64,
    /// Masters added to the cluster that were connected to and written in place.
    pub joined: u64,
    /// Bars written.
    pub bars: u64,
    /// Bars dropped because too many waited for Redis.
    pub bars_dropped: u64,
    /// Bars Redis refused (an error reply other than a redirect), dropped.
    pub bars_refused: u64,
    /// Bars read again that Redis had already (where the last publisher stopped), skipped.
    pub bars_skipped: u64,
    /// Bars a restore left out: their list would have trimmed them at once, as at least as
    /// many records as it keeps follow them (`publish/bartrim.rs`).
    pub bars_trimmed: u64,
    /// Times Redis had lost bars it held (restarted empty, or from an older snapshot) and
    /// they were restored to the lists.
    pub bar_restores: u64,
    /// Venue hash keys that held another type (someone else's value in our key space):
    /// deleted, and every venue's quote of the symbol written again.
    pub replaced: u64,
}

struct Link {
    topo: Topology,
    /// One per node; None while that node is down.
    conns: Vec<Option<Conn>>,
    /// When to try a down node again.
    retry: Vec<Instant>,
    /// When to ask for the slot map again while a node is down.
    next_map_check: Instant,
    /// The slot map as the heartbeat carries it ([`Topology::map_text`]).
    map_text: Option<String>,
    /// Nodes an ASK named that are in no slot map yet (masters being added, importing their
    /// first slot), at most [`MAX_SIDE`]: key writes follow the ASK over these connections,
    /// and each becomes its node's own once the map has it ([`Publisher::follow_map`]).
    side: Vec<(SocketAddr, Conn)>,
}

/// Side connections kept at most (the oldest goes first).
const MAX_SIDE: usize = 4;

impl Link {
    /// The connection to `to`, a node an ASK named: its own, or the side connection when no
    /// slot map has it yet (connected now if need be); `None` while it is down or unreachable.
    fn ask_conn(
        &mut self,
        to: SocketAddr,
        timeout: Duration,
        access: &super::conn::Access,
    ) -> Option<&mut Conn> {
        if let Some(k) = self.topo.index_of(to) {
            return self.conns[k].as_mut();
        }
        let i = match self.side.iter().position(|(a, _)| *a == to) {
            Some(i) => i,
            None => {
                let t = timeout.min(Duration::from_millis(100));
                self.keep_side(to, Conn::connect(to, t, timeout, access).ok()?);
                self.side.len() - 1
            }
        };
        Some(&mut self.side[i].1)
    }

    /// Keeps `c` as the side connection to `to`.
    fn keep_side(&mut self, to: SocketAddr, c: Conn) {
        self.drop_side(to);
        if self.side.len() == MAX_SIDE {
            self.side.remove(0);
        }
        self.side.push((to, c));
    }

    /// Takes the side connection to `to` out of `side`, if there is one (a function of the
    /// list alone, so it can run while the map is borrowed).
    fn take_side(side: &mut Vec<(SocketAddr, Conn)>, to: SocketAddr) -> Option<Conn> {
        let i = side.iter().position(|(a, _)| *a == to)?;
        Some(side.remove(i).1)
    }

    /// Drops the side connection to `to`, if there is one.
    fn drop_side(&mut self, to: SocketAddr) {
        self.side.retain(|(a, _)| *a != to);
    }
}

/// The publisher (sans threads: the caller offers quotes and calls [`Publisher::flush`]).
pub struct Publisher {
    cfg: PublisherCfg,
    keys: Keys,
    link: Option<Link>,
    latest: Vec<Quote>,
    /// Per entry: `None` for a symbol's consolidated quote, the venue (channel) for one of
    /// the per-venue table's quotes.
    venue: Vec<Option<u16>>,
    names: Vec<String>,
    key_names: Vec<String>,
    /// The values of the batch being sent (publish time and quote), encoded once.
    values: Vec<[u8; VALUE_LEN]>,
    /// The new-symbol announcement channel.
    new_channel: String,
    by_node: Vec<Vec<usize>>,
    /// Per node, the batch's commands about one symbol: (the reply that answers it, batch
    /// entry, whether it is the key write).
    tied: Vec<Vec<(usize, usize, bool)>>,
    /// Each entry's hash slot (of its key and channel).
    slots: Vec<u16>,
    /// A MOVED named this node: follow the slot map before the next batch.
    remap: Option<SocketAddr>,
    /// When the next "slot map changed" line may be logged, and what it says: maps followed,
    /// slots moved, symbols written again since the last one.
    remap_log: (Instant, [usize; 3]),
    index: HashMap<([u8; 8], Option<u16>), usize>,
    dirty: Vec<bool>,
    pending: Vec<usize>,
    announced: Vec<bool>,
    last_pub_ns: u64,
    epoch_ns: u64,
    next_hb_ns: u64,
    next_try: Instant,
    backoff: Duration,
    bar_tail: Option<crate::bars::Tail>,
    /// The per-venue table followed, and the clock its liveness checks run on.
    venue_src: Option<(crate::source::ShmSource, Instant)>,
    /// The quote table whose feed handler names the venues ([`Self::name_venues_from`]).
    venue_names_from: Option<std::path::PathBuf>,
    bars_pending: std::collections::VecDeque<bars::PendingBar>,
    /// The restore's bars ready to write (taken from the front of `bars_pending`), by list.
    regroup: regroup::Regroup,
    /// Where the bar log stands in Redis.
    bar_sync: barsync::BarSync,
    /// The epoch whose connection's bar position was read (bars wait until it is).
    bar_synced: u64,
    /// Why Redis last refused the bar position (logged once a reason).
    bar_position_refused: Option<String>,
    /// The nodes that lost the bars being restored: the one holding the bar position when
    /// that is gone or behind, and any that restarted (another run ID) since last seen.
    bars_lost_on: Vec<SocketAddr>,
    /// Each node's run ID (`INFO server`) when last connected: another one means it restarted,
    /// and may have lost its lists.
    run_ids: HashMap<SocketAddr, String>,
    /// Nodes found restarted before the tail had begun a log: their lists are restored from
    /// the one it begins.
    restarted_unread: Vec<SocketAddr>,
    /// The last flush left bars it could have written.
    more_bars: bool,
    /// Marks to write once every bar read went in (none being restored): each node's mark key
    /// and run ID.
    marks_owed: Vec<(String, String)>,
    /// Why Redis last refused a mark (logged once a reason).
    mark_refused: Option<String>,
    next_bar_poll: Instant,
    /// The scan for what a restore may leave out, while it runs, and what it found.
    bar_scan: Option<bartrim::Scan>,
    bar_cuts: Option<bartrim::Cuts>,
    /// Each bar list's length (symbol, interval) as its last `RPUSH` answered, plus the pushes
    /// queued since: a push that leaves it at most 600 needs no `LTRIM` ([`bars`]). At most
    /// one entry a list; forgotten at each new epoch.
    list_len: book::consolidate::FastMap<([u8; 8], u8), u32>,
    /// Why the last connection failed (None while connected).
    pub down: Option<String>,
    /// Counters.
    pub stats: PubStats,
    /// Who this publisher is in the lease key (host, process, start time).
    id: String,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Publisher({:?})", self.cfg.seeds)
    }
}

impl Publisher {
    /// A publisher; it connects on the first [`Publisher::flush`].
    pub fn new(cfg: PublisherCfg) -> Publisher {
        let keys = Keys::new(&cfg.prefix);
        Publisher {
            new_channel: keys.new_symbols(),
            keys,
            cfg,
            link: None,
            latest: Vec::new(),
            venue: Vec::new(),
            names: Vec::new(),
            key_names: Vec::new(),
            values: Vec::new(),
            by_node: Vec::new(),
            tied: Vec::new(),
            slots: Vec::new(),
            remap: None,
            remap_log: (Instant::now(), [0; 3]),
            index: HashMap::new(),
            dirty: Vec::new(),
            pending: Vec::new(),
            announced: Vec::new(),
            last_pub_ns: 0,
            epoch_ns: 0,
            next_hb_ns: 0,
            next_try: Instant::now(),
            backoff: Duration::from_millis(100),
            bar_tail: None,
            venue_src: None,
            venue_names_from: None,
            bars_pending: std::collections::VecDeque::new(),
            regroup: regroup::Regroup::default(),
            bar_sync: barsync::BarSync::default(),
            bar_synced: 0,
            bar_position_refused: None,
            bars_lost_on: Vec::new(),
            run_ids: HashMap::new(),
            restarted_unread: Vec::new(),
            more_bars: false,
            marks_owed: Vec::new(),
            mark_refused: None,
            next_bar_poll: Instant::now(),
            bar_scan: None,
            bar_cuts: None,
            list_len: Default::default(),
            down: Some("not connected yet".into()),
            stats: PubStats::default(),
            id: format!(
                "{}:{}:{}",
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|h| h.trim().to_string())
                    .unwrap_or_else(|_| "host".into()),
                std::process::id(),
                now_ns()
            ),
        }
    }

    /// Also publishes the quotes of the per-venue table at `path` (the book's
    /// `<quotes>.venues`), read on every [`Publisher::flush`]; while that table's writer is gone
    /// its quotes go out stale, as the consolidated ones do.
    pub fn follow_venues(&mut self, path: std::path::PathBuf) {
        self.venue_src = Some((crate::source::ShmSource::new(path), Instant::now()));
    }

    /// Names the venues as the feed handler beside the quote table at `quotes` does (its
    /// counters file): written under [`Keys::venue_names`] with each heartbeat, so remote
    /// gateways name them as a local one does.
    pub fn name_venues_from(&mut self, quotes: std::path::PathBuf) {
        self.venue_names_from = Some(quotes);
    }

    /// The venue names into Redis, on the node that owns their key; nothing when the feed
    /// handler is not there to name them. A failure is left for the next heartbeat (a node that
    /// died is found by the heartbeat's own round trips).
    fn write_venue_names(&mut self) {
        let Some(quotes) = &self.venue_names_from else {
            return;
        };
        let names = crate::http::venue_names(quotes);
        let Some(link) = self.link.as_mut().filter(|_| !names.is_empty()) else {
            return;
        };
        let key = self.keys.venue_names();
        let n = link.topo.node_of(key.as_bytes());
        if let Some(c) = link.conns.get_mut(n).and_then(Option::as_mut) {
            let value = names.join("\n");
            let _ = c.call(
                &[b"SET", key.as_bytes(), value.as_bytes()],
                self.cfg.timeout,
                |_| (),
            );
        }
    }

    /// Takes the per-venue table's changes.
    fn poll_venues(&mut self) {
        use crate::source::QuoteSource;
        let Some((mut src, t0)) = self.venue_src.take() else {
            return;
        };
        src.poll(t0.elapsed().as_nanos() as u64, 100_000, &mut |q| {
            self.take(q, Some(q.channel))
        });
        self.venue_src = Some((src, t0));
    }

    /// Whether connected (to at least one node).
    pub fn connected(&self) -> bool {
        self.link.is_some()
    }

    /// Takes a quote change (the latest per symbol wins until the next flush).
    pub fn offer(&mut self, q: &Quote) {
        self.take(q, None);
    }

    /// A consolidated quote (`venue` None) or one venue's.
    fn take(&mut self, q: &Quote, venue: Option<u16>) {
        if q.symbol == [0; 8] {
            return;
        }
        let i = match self.index.get(&(q.symbol, venue)) {
            Some(&i) => i,
            None => {
                let i = self.latest.len();
                self.index.insert((q.symbol, venue), i);
                self.latest.push(*q);
                self.venue.push(venue);
                self.names.push(q.symbol_str());
                self.key_names.push(match venue {
                    None => self.keys.quote(&q.symbol_str()),
                    Some(_) => self.keys.venues(&q.symbol_str()),
                });
                let key = self.key_names[i].as_bytes();
                self.slots.push(super::cluster::key_slot(key));
                self.dirty.push(false);
                // the symbol is announced by its consolidated quote
                self.announced.push(venue.is_some());
                i
            }
        };
        self.latest[i] = *q;
        if self.dirty[i] {
            self.stats.conflated += 1;
        } else {
            self.dirty[i] = true;
            self.pending.push(i);
        }
    }

    fn next_pub_ns(&mut self) -> u64 {
        self.last_pub_ns = now_ns().max(self.last_pub_ns + 1);
        self.last_pub_ns
    }

    /// Writes what is pending (and the heartbeat when due), connecting first if needed.
    /// Returns the changes written. What could not be written (everything, when Redis is away;
    /// a dead cluster node's symbols, while the other nodes take theirs) stays pending.
    pub fn flush(&mut self) -> usize {
        self.poll_venues();
        if self.link.is_none() && !self.connect() {
            return 0;
        }
        self.revive();
        if self.link.is_none() {
            return 0;
        }
        let batch = std::mem::take(&mut self.pending);
        let mut done = 0;
        let mut unsent = Vec::new();
        for (k, chunk) in batch.chunks(self.cfg.max_pipeline.max(1)).enumerate() {
            unsent.clear();
            if let Err(e) = self.send(chunk, &mut unsent) {
                self.pending
                    .extend_from_slice(&batch[k * self.cfg.max_pipeline.max(1)..]);
                if self.link.is_some() {
                    self.fail(e);
                }
                break;
            }
            for &i in chunk {
                self.dirty[i] = false;
            }
            // (an entry may be in `unsent` twice, or be pending already: a replaced key's
            // venues)
            for &i in &unsent {
                if !self.dirty[i] {
                    self.dirty[i] = true;
                    self.pending.push(i);
                }
            }
            done += chunk.iter().filter(|&&i| !self.dirty[i]).count();
        }
        self.stats.published += done as u64;
        if done > 0 {
            self.stats.batches += 1;
        }
        // a resharding: at most a few maps in a row, the rest on the next flush
        let mut rounds = 0;
        while rounds < 4
            && let Some(to) = self.remap.take()
        {
            self.follow_map(Some(to));
            rounds += 1;
        }
        if self.pending.is_empty() {
            // keep the allocation
            let mut b = batch;
            b.clear();
            self.pending = b;
        }
        self.flush_bars();
        done
    }

    /// Everything is dropped: rediscover and reconnect after the backoff.
    fn fail(&mut self, e: String) {
        // once per outage and cause, not once per retry
        if self.down.as_ref() != Some(&e) {
            eprintln!("gateway publish: {e}; retrying (every symbol is rewritten on reconnect)");
        }
        self.stats.failures += 1;
        self.link = None;
        self.down = Some(e);
        self.next_try = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(Duration::from_secs(1));
    }

    /// One node is dropped; the others go on and its symbols wait for it.
    fn node_failed(&mut self, k: usize, e: String) {
        let Some(link) = self.link.as_mut() else {
            return;
        };
        link.conns[k] = None;
        link.retry[k] = Instant::now() + Duration::from_millis(200);
        self.stats.failures += 1;
        let up = link.conns.iter().flatten().count();
        eprintln!(
            "gateway publish: {e}; its symbols wait for it ({up} of {} nodes up)",
            link.conns.len()
        );
        if up == 0 {
            self.fail(e);
        } else {
            self.down = Some(e);
        }
    }

    /// Reconnects dead nodes that are due; any comeback rewrites every symbol under a new
    /// epoch (a restarted node is empty, or holds values from before).
    fn revive(&mut self) {
        let Some(link) = self.link.as_mut() else {
            return;
        };
        let now = Instant::now();
        let mut back = false;
        for k in 0..link.conns.len() {
            if link.conns[k].is_none() && now >= link.retry[k] {
                // a short connect timeout: publishing to the other nodes waits meanwhile
                let t = self.cfg.timeout.min(Duration::from_millis(100));
                match Conn::connect(link.topo.nodes[k], t, self.cfg.timeout, &self.cfg.access) {
                    Ok(c) => {
                        link.conns[k] = Some(c);
                        back = true;
                    }
                    Err(_) => link.retry[k] = now + Duration::from_millis(500),
                }
            }
        }
        // a node that stays down may have been replaced (a replica promoted in its place), or
        // slots may have moved: ask a live node for the slot map, and follow it if it changed
        if !back && now >= link.next_map_check {
            // every second while a node is down, every 5 s otherwise: replicas trust no slot
            // that changed node until this publisher's heartbeat carries the map it is on
            let down = link.conns.iter().any(Option::is_none);
            link.next_map_check = now + Duration::from_secs(if down { 1 } else { 5 });
            self.follow_map(None);
            if self.link.is_none() {
                return;
            }
        }
        if back
            && let Err(e) = self.rewrite_all()
            && self.link.is_some()
        {
            self.fail(e);
        }
    }

    fn connect(&mut self) -> bool {
        if Instant::now() < self.next_try {
            return false;
        }
        let t = self.cfg.timeout;
        let topo = match discover(&self.cfg.seeds, t, &self.cfg.access) {
            Ok(topo) => topo,
            Err(e) => {
                self.fail(e);
                return false;
            }
        };
        let mut first_err = None;
        let conns: Vec<Option<Conn>> = topo
            .nodes
            .iter()
            .map(|&a| {
                Conn::connect(a, t, t, &self.cfg.access)
                    .map_err(|e| first_err.get_or_insert(e).clone())
                    .ok()
            })
            .collect();
        if conns.iter().all(Option::is_none) {
            self.fail(first_err.unwrap_or_else(|| "no node".into()));
            return false;
        }
        let now = Instant::now();
        self.link = Some(Link {
            retry: vec![now + Duration::from_millis(500); conns.len()],
            next_map_check: now + Duration::from_secs(1),
            map_text: topo.map_text(),
            topo,
            conns,
            side: Vec::new(),
        });
        if let Err(e) = self.hold_lease() {
            self.lease_failed(e);
            if self.link.is_none() {
                return false;
            }
        }
        if let Err(e) = self.rewrite_all() {
            if self.link.is_some() {
                self.fail(e);
            }
            return false;
        }
        // the heartbeat that ends the rewrite may have failed (its node, or the lease taken
        // meanwhile): then this connection is already given up
        let Some(l) = self.link.as_ref() else {
            return false;
        };
        self.stats.connects += 1;
        self.backoff = Duration::from_millis(100);
        eprintln!(
            "gateway publish: connected to {} ({} of {} node{} up{}); {} symbols rewritten",
            l.topo.nodes[0],
            l.conns.iter().flatten().count(),
            l.topo.nodes.len(),
            if l.topo.nodes.len() == 1 { "" } else { "s" },
            if l.topo.cluster {
                ", cluster: SPUBLISH"
            } else {
                ""
            },
            self.latest.len()
        );
        if l.conns.iter().all(Option::is_some) {
            self.down = None;
        }
        true
    }

    /// Every symbol again, published after the epoch the heartbeat then announces.
    fn rewrite_all(&mut self) -> Result<(), String> {
        self.epoch_ns = self.next_pub_ns();
        // (a node that came back may hold other lists)
        self.list_len.clear();
        self.pending.clear();
        for i in 0..self.latest.len() {
            self.dirty[i] = false;
            self.announced[i] = self.venue[i].is_some();
        }
        let all: Vec<usize> = (0..self.latest.len()).collect();
        self.write_now(&all)?;
        self.stats.republished += 1;
        self.next_hb_ns = 0;
        self.heartbeat();
        if self
            .link
            .as_ref()
            .is_some_and(|l| l.conns.iter().all(Option::is_some))
        {
            self.down = None;
        }
        Ok(())
    }

    /// Writes these entries now (none of them pending); those that cannot be written yet
    /// (their node down, or their slot moved) wait in `pending`.
    fn write_now(&mut self, which: &[usize]) -> Result<(), String> {
        let mut unsent = Vec::new();
        for chunk in which.chunks(self.cfg.max_pipeline.max(1)) {
            self.send(chunk, &mut unsent)?;
        }
        for &i in &unsent {
            if !self.dirty[i] {
                self.dirty[i] = true;
                self.pending.push(i);
            }
        }
        Ok(())
    }

    /// Follows the cluster's slot map, asked of the node a MOVED named (`hint`) or else of any
    /// node up. When only slots moved between masters (a resharding: the keys went with their
    /// slot, or the slot was given without them), the new map is taken in place: each moved
    /// slot's symbols are written again on their new node, and a heartbeat says the new map at
    /// once (replicas show those symbols fresh again only once it agrees with theirs); nothing
    /// else is rewritten and the epoch stays. That includes a master added to the cluster and
    /// given slots, as long as every master already written is still one: it is connected to
    /// and written in place. A map where a master written is gone and another has come (a
    /// replica promoted after a failover, which may lag the master it replaced), or where an
    /// address answers with another node ID, starts over: every key rewritten under a new
    /// epoch.
    fn follow_map(&mut self, hint: Option<SocketAddr>) {
        let Some(link) = self.link.as_mut() else {
            return;
        };
        let t = self.cfg.timeout.min(Duration::from_millis(500));
        // a MOVED to a node not written yet (added to the cluster, or a replica promoted): it
        // knows the map that sent us there, so ask it, over a side connection kept for it
        let mut asked = Err(String::new());
        let first = match hint {
            Some(to) => match link.topo.index_of(to) {
                Some(k) => Some(k),
                None => {
                    let c = match Link::take_side(&mut link.side, to) {
                        Some(c) => Ok(c),
                        None => Conn::connect(to, t, self.cfg.timeout, &self.cfg.access),
                    };
                    match c {
                        Ok(mut c) => {
                            asked = super::slot_map(&mut c, t);
                            if asked.is_ok() {
                                link.keep_side(to, c);
                            }
                        }
                        Err(e) => asked = Err(e),
                    }
                    None
                }
            },
            None => None,
        };
        let mut failed = Vec::new();
        if asked.is_err() {
            let rest = (0..link.conns.len()).filter(|&k| Some(k) != first);
            for k in first.into_iter().chain(rest) {
                if let Some(c) = link.conns[k].as_mut() {
                    asked = super::slot_map(c, t);
                    match &asked {
                        Ok(_) => break,
                        Err(e) => failed.push((k, e.clone())),
                    }
                }
            }
        }
        // a node that did not answer is dropped (a late reply would answer the wrong command)
        for (k, e) in failed {
            self.node_failed(k, e);
        }
        let Some(link) = self.link.as_mut() else {
            return;
        };
        let old = &link.topo;
        let topo = match asked {
            Ok(topo) if topo != *old => topo,
            // no new map yet (a node asked stays a side connection for the next try)
            _ => return,
        };
        let same_node = |a: &Topology, b: &Topology, k: usize| {
            b.index_of(a.nodes[k]).map(|j| b.ids[j] == a.ids[k])
        };
        // every address still the node it was; a new master only beside every old one
        let kept = (0..topo.nodes.len()).all(|k| same_node(&topo, old, k) != Some(false));
        let joined: Vec<SocketAddr> = (0..topo.nodes.len())
            .filter(|&k| same_node(&topo, old, k).is_none())
            .map(|k| topo.nodes[k])
            .collect();
        let all_stay = (0..old.nodes.len()).all(|k| same_node(old, &topo, k) == Some(true));
        if !(topo.cluster && kept && (joined.is_empty() || all_stay)) {
            self.fail(
                "the cluster's slot map changed to one where a master written is gone and \
                 another has come, or an address is another node (a failover?)"
                    .into(),
            );
            self.next_try = Instant::now();
            return;
        }
        let node = |t: &Topology, slot: usize| t.nodes[t.owner[slot] as usize];
        let slots_moved = (0..super::cluster::SLOTS)
            .filter(|&s| node(old, s) != node(&topo, s))
            .count();
        let moving: Vec<usize> = (0..self.latest.len())
            .filter(|&i| node(old, self.slots[i] as usize) != node(&topo, self.slots[i] as usize))
            .collect();
        let mut conns = std::mem::take(&mut link.conns);
        let retry = std::mem::take(&mut link.retry);
        let mut unreached = Vec::new();
        for &a in &topo.nodes {
            let (c, r) = match old.index_of(a) {
                Some(k) => (conns[k].take(), retry[k]),
                None => {
                    let c = match Link::take_side(&mut link.side, a) {
                        Some(c) => Ok(c),
                        None => Conn::connect(a, t, self.cfg.timeout, &self.cfg.access),
                    };
                    let c = c.map_err(|e| unreached.push(format!("{a}: {e}"))).ok();
                    (c, Instant::now() + Duration::from_millis(500))
                }
            };
            link.conns.push(c);
            link.retry.push(r);
        }
        link.map_text = topo.map_text();
        link.topo = topo;
        if !joined.is_empty() {
            self.stats.joined += joined.len() as u64;
            eprintln!(
                "gateway publish: {} joined the cluster's masters; written there in place{}",
                joined
                    .iter()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                if unreached.is_empty() {
                    String::new()
                } else {
                    format!(" once reached (not yet: {})", unreached.join("; "))
                }
            );
        }
        if !unreached.is_empty() {
            self.stats.failures += 1;
            self.down = Some(unreached.join("; "));
        } else if link.conns.iter().all(Option::is_some) {
            // a node that was down and has left the map (its slots moved off, then removed)
            self.down = None;
        }
        if link.conns.iter().all(Option::is_none) {
            self.fail("no master of the new slot map is up".into());
            return;
        }
        self.stats.remaps += 1;
        for &i in &moving {
            self.dirty[i] = false;
        }
        let dirty = &self.dirty;
        self.pending.retain(|&i| dirty[i]);
        if let Err(e) = self.write_now(&moving) {
            if self.link.is_some() {
                self.fail(e);
            }
            return;
        }
        self.next_hb_ns = 0;
        self.heartbeat();
        let (at, seen) = &mut self.remap_log;
        *seen = [seen[0] + 1, seen[1] + slots_moved, seen[2] + moving.len()];
        if Instant::now() >= *at {
            eprintln!(
                "gateway publish: the cluster's slot map changed ({} time{} since the last report; {} slot{} moved between masters, {} symbol{} with them, written again there); followed in place",
                seen[0],
                if seen[0] == 1 { "" } else { "s" },
                seen[1],
                if seen[1] == 1 { "" } else { "s" },
                seen[2],
                if seen[2] == 1 { "" } else { "s" },
            );
            *at = Instant::now() + Duration::from_secs(1);
            *seen = [0; 3];
        }
    }

    /// The heartbeat through the first node up, when due.
    fn heartbeat(&mut self) {
        let now = now_ns();
        if now < self.next_hb_ns {
            return;
        }
        self.next_hb_ns = now + HEARTBEAT_NS;
        if self.link.is_none() {
            return;
        }
        // still the one publisher (another may have taken over while this one was stalled)
        if let Err(e) = self.hold_lease() {
            self.lease_failed(e);
        }
        let restoring = self.bars_restoring() as u8;
        let Some(link) = self.link.as_mut() else {
            return;
        };
        let Some(k) = link.conns.iter().position(Option::is_some) else {
            return;
        };
        // the map itself too, so a replica on another map still trusts the slots both agree on
        let mut msg = format!("{} {now} {} {restoring}", self.epoch_ns, link.topo.map_id);
        if let Some(text) = &link.map_text {
            msg.push(' ');
            msg.push_str(text);
        }
        let c = link.conns[k].as_mut().expect("up");
        c.queue(&[b"PUBLISH", self.keys.heartbeat().as_bytes(), msg.as_bytes()]);
        let r = c.flush().and_then(|()| read_owed(c, self.cfg.timeout));
        if let Err(e) = r {
            self.node_failed(k, e);
        }
        // every other node is asked too, so one this publisher has nothing to write to is
        // found dead (or restarted: its connection broke) within a heartbeat, and its keys
        // and bar lists written again when it is back
        let Some(link) = self.link.as_mut() else {
            return;
        };
        let mut failed = None;
        for (j, conn) in link.conns.iter_mut().enumerate() {
            let Some(c) = conn.as_mut().filter(|_| j != k) else {
                continue;
            };
            c.queue(&[b"PING"]);
            if let Err(e) = c.flush().and_then(|()| read_owed(c, self.cfg.timeout)) {
                failed.get_or_insert((j, e));
            }
        }
        if let Some((j, e)) = failed {
            self.node_failed(j, e);
        }
        self.write_venue_names();
    }

    /// Heartbeat when due (call at least every 250 ms; [`Publisher::flush`] does not).
    pub fn tick(&mut self) {
        if self.link.is_none() {
            self.connect();
            return;
        }
        self.revive();
        self.heartbeat();
    }

    /// Writes the keys a node answered ASK for (their slot is being moved, and they already
    /// have been) on the node it named, each after `ASKING`, then publishes those changes
    /// again through the slot's owner, so a publish still follows each key write; everything
    /// else in the batch went on. One whose named node is down waits in `unsent`, as that
    /// node's own symbols do; an `Err` starts over, as any other redirect does.
    fn follow_asks(
        &mut self,
        batch: &[usize],
        asked: &[(usize, usize, SocketAddr)],
        unsent: &mut Vec<usize>,
    ) -> Result<(), String> {
        let timeout = self.cfg.timeout;
        let link = self.link.as_mut().ok_or("not connected")?;
        // (node that answered ASK, batch entry, node named: its index, or its address when
        // it is in no map yet and written over a side connection)
        let (mut here, mut away) = (Vec::new(), Vec::new());
        let mut used = vec![false; link.conns.len()];
        let mut sides: Vec<SocketAddr> = Vec::new();
        for &(k, j, to) in asked {
            let kk = link.topo.index_of(to);
            let Some(c) = link.ask_conn(to, timeout, &self.cfg.access) else {
                away.push(batch[j]);
                continue;
            };
            let i = batch[j];
            c.queue(&[b"ASKING"]);
            queue_write(
                c,
                self.key_names[i].as_bytes(),
                self.venue[i],
                &self.values[j],
            );
            match kk {
                Some(kk) => used[kk] = true,
                None if !sides.contains(&to) => sides.push(to),
                None => {}
            }
            here.push((k, j, kk.ok_or(to)));
        }
        // key writes refused WRONGTYPE there: (node named, batch entry)
        let mut foreign: Vec<(Result<usize, SocketAddr>, usize)> = Vec::new();
        // the batch entries written to `to`, in the order written
        let order = |here: &[(usize, usize, Result<usize, SocketAddr>)], to| -> Vec<usize> {
            here.iter().filter(|h| h.2 == to).map(|h| h.1).collect()
        };
        for (k, c) in link.conns.iter_mut().enumerate() {
            if let Some(c) = c.as_mut().filter(|_| used[k]) {
                c.flush()?;
                let order = order(&here, Ok(k));
                foreign.extend(
                    read_asked(c, timeout)?
                        .into_iter()
                        .map(|p| (Ok(k), order[p])),
                );
            }
        }
        // a side connection failing costs only its writes: they wait, and it is dropped
        for to in sides {
            let side = link.side.iter_mut().find(|(a, _)| *a == to);
            let read = side.map(|(_, c)| c.flush().and_then(|()| read_asked(c, timeout)));
            match read {
                Some(Ok(refused)) => {
                    let order = order(&here, Err(to));
                    foreign.extend(refused.into_iter().map(|p| (Err(to), order[p])));
                }
                _ => {
                    link.drop_side(to);
                    away.extend(here.iter().filter(|h| h.2 == Err(to)).map(|h| batch[h.1]));
                    here.retain(|h| h.2 != Err(to));
                }
            }
        }
        // a key there of another type: deleted there (after ASKING, the slot being imported),
        // the symbol's venues written again; not published now, as their write failed
        let mut replaced: Vec<String> = Vec::new();
        if !foreign.is_empty() {
            here.retain(|h| !foreign.iter().any(|f| f.1 == h.1));
            let mut targets: Vec<Result<usize, SocketAddr>> = foreign.iter().map(|f| f.0).collect();
            targets.sort_unstable();
            targets.dedup();
            for to in targets {
                let mut keys: Vec<&str> = foreign
                    .iter()
                    .filter(|f| f.0 == to)
                    .map(|f| self.key_names[batch[f.1]].as_str())
                    .collect();
                keys.sort_unstable();
                keys.dedup();
                let c = match to {
                    Ok(k) => link.conns[k].as_mut(),
                    Err(a) => link.side.iter_mut().find(|s| s.0 == a).map(|s| &mut s.1),
                };
                let deleted = c.map_or(Err("gone".into()), |c| {
                    delete_foreign(c, &keys, true, timeout)
                });
                match (deleted, to) {
                    (Ok(()), _) => {}
                    (Err(e), Ok(_)) => return Err(e),
                    (Err(_), Err(a)) => link.drop_side(a),
                }
                replaced.extend(keys.iter().map(|k| k.to_string()));
            }
        }
        unsent.extend_from_slice(&away);
        // per node, each publish's reply and batch entry: the slot may have finished moving
        // meanwhile (MOVED), and then the change is written again on the new map
        let mut publishes = vec![Vec::new(); link.conns.len()];
        for &(k, j, _) in &here {
            let c = link.conns[k].as_mut().ok_or("a node went down")?;
            let i = batch[j];
            let key = self.key_names[i].as_bytes();
            publishes[k].push((c.owed, j, false));
            c.queue(&[b"SPUBLISH", key, &self.values[j]]);
            if !self.announced[i] {
                queue_announce(c, &self.new_channel, &self.names[i]);
            }
        }
        for (k, c) in link.conns.iter_mut().enumerate() {
            let Some(c) = c.as_mut().filter(|_| !publishes[k].is_empty()) else {
                continue;
            };
            c.flush()?;
            for (j, to) in read_replies(c, timeout, tied_to(&publishes[k]))?.moved {
                unsent.push(batch[j]);
                self.remap = Some(to);
                self.stats.moved += 1;
            }
        }
        self.stats.asked += here.len() as u64;
        self.rewrite_venues_of(&replaced, unsent);
        Ok(())
    }

    /// Replaces the keys whose writes were answered `WRONGTYPE` (`foreign`: node, batch entry):
    /// the key is in our key space but holds another type, someone else's value. Only a venue
    /// hash can be refused so (`SET` replaces a key of any type), so the key is deleted and
    /// every venue's quote of the symbol goes to `unsent`, to be written again: replicas load a
    /// hash, and the node stays up (failing it would fail again at every rewrite, with all of
    /// its symbols stale meanwhile). A node whose connection fails here is dropped as in
    /// [`Publisher::send`].
    fn replace_foreign(
        &mut self,
        batch: &[usize],
        foreign: &[(usize, usize)],
        unsent: &mut Vec<usize>,
    ) {
        let timeout = self.cfg.timeout;
        let Some(link) = self.link.as_mut() else {
            return;
        };
        let mut keys: Vec<(usize, &str)> = foreign
            .iter()
            .map(|&(k, j)| (k, self.key_names[batch[j]].as_str()))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        let mut failed = Vec::new();
        for (k, c) in link.conns.iter_mut().enumerate() {
            let Some(c) = c.as_mut() else { continue };
            let mine: Vec<&str> = keys.iter().filter(|x| x.0 == k).map(|x| x.1).collect();
            if !mine.is_empty()
                && let Err(e) = delete_foreign(c, &mine, false, timeout)
            {
                failed.push((k, e));
            }
        }
        let names: Vec<String> = keys.iter().map(|k| k.1.to_string()).collect();
        self.rewrite_venues_of(&names, unsent);
        for (k, e) in failed {
            self.node_failed(k, e);
        }
    }

    /// Every venue quote of the venue hash keys `names` (just replaced) goes to `unsent`, to be
    /// written again; counted.
    fn rewrite_venues_of(&mut self, names: &[String], unsent: &mut Vec<usize>) {
        if names.is_empty() {
            return;
        }
        self.stats.replaced += names.len() as u64;
        for (x, name) in self.key_names.iter().enumerate() {
            if self.venue[x].is_some() && names.iter().any(|k| k == name) {
                unsent.push(x);
            }
        }
    }

    /// Writes `batch`; the symbols of nodes that are down or fail now go to `unsent`. A key
    /// write answered ASK is followed ([`Publisher::follow_asks`]); a symbol whose write or
    /// publish is answered MOVED goes to `unsent` too, and the slot map is followed before the
    /// next batch ([`Publisher::follow_map`]); an `Err` means the cluster changed under us in
    /// another way (a redirect of anything else, ASK on a publish, CLUSTERDOWN, TRYAGAIN):
    /// start over.
    fn send(&mut self, batch: &[usize], unsent: &mut Vec<usize>) -> Result<(), String> {
        let link = self.link.as_mut().ok_or("not connected")?;
        let publish: &[u8] = if link.topo.cluster {
            b"SPUBLISH"
        } else {
            b"PUBLISH"
        };
        // each change's bytes once, stamped: the key and the channel carry the same
        let mut last = self.last_pub_ns;
        self.values.clear();
        for &i in batch {
            last = now_ns().max(last + 1);
            self.values.push(encode(last, &self.latest[i]));
        }
        self.last_pub_ns = last;
        let nodes = link.conns.len();
        if self.by_node.len() < nodes {
            self.by_node.resize_with(nodes, Vec::new);
        }
        if self.tied.len() < nodes {
            self.tied.resize_with(nodes, Vec::new);
        }
        self.by_node.iter_mut().for_each(Vec::clear);
        self.tied.iter_mut().for_each(Vec::clear);
        for (j, &i) in batch.iter().enumerate() {
            let k = link.topo.node_of(self.key_names[i].as_bytes());
            if link.conns[k].is_some() {
                self.by_node[k].push(j);
            } else {
                unsent.push(i);
            }
        }
        for (k, conn) in link.conns.iter_mut().enumerate() {
            let Some(c) = conn.as_mut() else { continue };
            let mine = &self.by_node[k];
            if mine.is_empty() {
                continue;
            }
            // the replies owed so far, to know which one answers which key write
            let mut replies = 0;
            let quotes = mine.iter().filter(|&&j| self.venue[batch[j]].is_none());
            let n_quotes = quotes.clone().count();
            if !link.topo.cluster && n_quotes > 0 {
                replies += 1;
                // one MSET for the batch's keys (a command per key costs Redis twice the work)
                let (keys, values) = (&self.key_names, &self.values);
                c.queue_parts(1 + 2 * n_quotes, |out| {
                    super::resp::bulk(out, b"MSET");
                    for &j in quotes {
                        super::resp::bulk(out, keys[batch[j]].as_bytes());
                        super::resp::bulk(out, &values[j]);
                    }
                });
            }
            // each key is written before its change is published, and a new symbol announced
            // after both: a replica subscribes and then loads, so a publish ahead of its key
            // write would let one that subscribes in between load the value before and never
            // hear of this change (publishing first would reach replicas sooner, as Redis
            // would not run the batch's key writes first; the test
            // `each_key_is_written_before_its_change_is_published_or_announced` holds the order)
            for &j in mine {
                let i = batch[j];
                let key = self.key_names[i].as_bytes();
                let v = &self.values[j];
                if self.venue[i].is_some() || link.topo.cluster {
                    self.tied[k].push((replies, j, true));
                    queue_write(c, key, self.venue[i], v);
                    replies += 1;
                }
                self.tied[k].push((replies, j, false));
                c.queue(&[publish, key, v]);
                replies += 1;
                if !self.announced[i] {
                    queue_announce(c, &self.new_channel, &self.names[i]);
                    replies += 1;
                }
            }
        }
        let mut failed: Vec<(usize, String)> = Vec::new();
        for (k, conn) in link.conns.iter_mut().enumerate() {
            if let Some(c) = conn.as_mut()
                && let Err(e) = c.flush()
            {
                failed.push((k, e));
            }
        }
        // key writes a node answered ASK for: (node, batch entry, the node named); entries a
        // node answered MOVED for (their slot has moved since the map was read)
        let mut asked: Vec<(usize, usize, SocketAddr)> = Vec::new();
        let mut moved_away: Vec<usize> = Vec::new();
        let mut foreign: Vec<(usize, usize)> = Vec::new();
        for (k, conn) in link.conns.iter_mut().enumerate() {
            let Some(c) = conn.as_mut() else { continue };
            if failed.iter().any(|f| f.0 == k) {
                continue;
            }
            match read_replies(c, self.cfg.timeout, tied_to(&self.tied[k])) {
                Ok(r) => {
                    asked.extend(r.asked.into_iter().map(|(j, to)| (k, j, to)));
                    foreign.extend(r.foreign.into_iter().map(|j| (k, j)));
                    for (j, to) in r.moved {
                        moved_away.push(j);
                        self.remap = Some(to);
                    }
                }
                Err(e) if moved(&e) => return Err(e),
                Err(e) => failed.push((k, e)),
            }
        }
        // written again once the map is followed (announced again after that write)
        moved_away.sort_unstable();
        moved_away.dedup();
        asked.retain(|a| moved_away.binary_search(&a.1).is_err());
        unsent.extend(moved_away.iter().map(|&j| batch[j]));
        self.stats.moved += moved_away.len() as u64;
        for (k, e) in failed {
            unsent.extend(self.by_node[k].iter().map(|&j| batch[j]));
            self.node_failed(k, e);
        }
        if self.link.is_none() {
            return Err(self.down.clone().unwrap_or_default());
        }
        if !asked.is_empty() {
            self.follow_asks(batch, &asked, unsent)?;
        }
        if !foreign.is_empty() {
            self.replace_foreign(batch, &foreign, unsent);
        }
        for v in &self.by_node {
            for &j in v {
                self.announced[batch[j]] = true;
            }
        }
        for &i in unsent.iter() {
            self.announced[i] = false;
        }
        Ok(())
    }
}

/// A key write: `HSET KEY VENUE VALUE` for one venue's quote, else `SET KEY VALUE`.
fn queue_write(c: &mut Conn, key: &[u8], venue: Option<u16>, v: &[u8]) {
    match venue {
        Some(ch) => {
            let mut field = [0u8; 20];
            let field = super::resp::decimal(ch as usize, &mut field);
            c.queue(&[b"HSET", key, field, v]);
        }
        None => c.queue(&[b"SET", key, v]),
    }
}

/// A new symbol's announcement on `channel`.
fn queue_announce(c: &mut Conn, channel: &str, name: &str) {
    c.queue(&[b"PUBLISH", channel.as_bytes(), name.as_bytes()]);
}

/// An error reply that says the slot map changed or the cluster cannot serve.
fn moved(e: &str) -> bool {
    ["MOVED", "ASK", "CLUSTERDOWN", "TRYAGAIN"]
        .iter()
        .any(|p| e.contains(&format!(": {p}")) || e.starts_with(p))
}

/// The redirects answering commands about one batch entry: (entry, the node named).
#[derive(Default)]
struct Redirected {
    /// ASK answering a key write: write it there.
    asked: Vec<(usize, SocketAddr)>,
    /// MOVED answering a key write or a publish: write it again on the map now.
    moved: Vec<(usize, SocketAddr)>,
    /// WRONGTYPE answering a key write: the key holds another type; replace it.
    foreign: Vec<usize>,
}

/// Which batch entry the reply of index `n` is about, and whether it answers the entry's key
/// write, from `tied` ((reply, entry, key write), by reply).
fn tied_to(tied: &[(usize, usize, bool)]) -> impl Fn(usize) -> Option<(usize, bool)> + '_ {
    |n| {
        let w = tied.binary_search_by_key(&n, |w| w.0).ok()?;
        Some((tied[w].1, tied[w].2))
    }
}

/// Reads every reply owed. A redirect answering a command about one batch entry (`tied_to` the
/// reply's index gives the entry, and whether the command is its key write) is given back; any
/// other error reply fails the batch (the first one, after all are read).
fn read_replies(
    c: &mut Conn,
    timeout: Duration,
    tied_to: impl Fn(usize) -> Option<(usize, bool)>,
) -> Result<Redirected, String> {
    use super::cluster::{ask_target, moved_target};
    let mut first_err = None;
    let mut r = Redirected::default();
    c.read_each(Instant::now() + timeout, |n, e| {
        let Some(e) = e else { return };
        match (tied_to(n), ask_target(e), moved_target(e)) {
            (Some((j, true)), Some(to), _) => r.asked.push((j, to)),
            (Some((j, _)), _, Some(to)) => r.moved.push((j, to)),
            (Some((j, true)), _, _) if e.starts_with("WRONGTYPE") => r.foreign.push(j),
            _ => drop(first_err.get_or_insert_with(|| e.to_string())),
        }
    })?;
    match first_err {
        Some(e) => Err(super::conn::err(c.addr(), e)),
        None => Ok(r),
    }
}

/// Reads the replies to key writes sent on after an ASK (each after `ASKING`): the positions,
/// in the order written, of the writes refused `WRONGTYPE` (a key of another type there); any
/// other error reply fails the batch (after all are read).
fn read_asked(c: &mut Conn, timeout: Duration) -> Result<Vec<usize>, String> {
    let mut first_err = None;
    let mut foreign = Vec::new();
    c.read_each(Instant::now() + timeout, |n, e| match e {
        Some(e) if n % 2 == 1 && e.starts_with("WRONGTYPE") => foreign.push(n / 2),
        Some(e) => drop(first_err.get_or_insert_with(|| e.to_string())),
        None => {}
    })?;
    match first_err {
        Some(e) => Err(super::conn::err(c.addr(), e)),
        None => Ok(foreign),
    }
}

/// Deletes `keys` (venue hash keys holding another type, someone else's), each after `ASKING`
/// when `asking` (its slot being imported here), and logs each. An error reply is only logged:
/// the venues are written again anyway, and a key refused again is replaced again. An `Err` is
/// the connection failing.
fn delete_foreign(
    c: &mut Conn,
    keys: &[&str],
    asking: bool,
    timeout: Duration,
) -> Result<(), String> {
    let per = 1 + asking as usize;
    for key in keys {
        if asking {
            c.queue(&[b"ASKING"]);
        }
        c.queue(&[b"DEL", key.as_bytes()]);
    }
    c.flush()?;
    c.read_each(Instant::now() + timeout, |n, e| {
        let key = keys[n / per];
        match e {
            Some(e) => eprintln!("gateway publish: DEL {key}: {e}"),
            None if n % per == per - 1 => eprintln!(
                "gateway publish: {key} held another type (WRONGTYPE), someone else's: \
                 deleted, its venues' quotes written again"
            ),
            None => {}
        }
    })
}

/// Reads every reply owed; the first error reply fails the batch (after all are read).
fn read_owed(c: &mut Conn, timeout: Duration) -> Result<(), String> {
    read_replies(c, timeout, |_| None).map(|_| ())
}

/// Longest sleep on the quote table's doorbell when it had nothing new: how late a heartbeat,
/// a reconnect or a stop is handled at worst.
pub const IDLE_WAIT_NS: u64 = 1_000_000;

/// `gateway publish`: follows the quote table at `quotes` and publishes every change into Redis
/// until `stop`. With nothing new it sleeps on the table's doorbell until book publishes (at
/// most [`IDLE_WAIT_NS`]); `idle` is 0 to poll without sleeping, or the sleep between looks
/// when the table has no doorbell for this process (no write access to the file).
pub fn run(
    quotes: &std::path::Path,
    cfg: PublisherCfg,
    idle: Duration,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<(), String> {
    use crate::source::{Health, QuoteSource, ShmSource};
    use std::sync::atomic::Ordering;
    let mut src = ShmSource::new(quotes.to_path_buf()).with_doorbell();
    let mut p = Publisher::new(cfg);
    p.follow_bars(book::barlog::beside(quotes));
    p.follow_venues(book::quotes::venues_beside(quotes));
    p.name_venues_from(quotes.to_path_buf());
    let start = Instant::now();
    let mut last_health = None;
    let mut next_report = Instant::now() + Duration::from_secs(10);
    while !stop.load(Ordering::Relaxed) {
        let now = start.elapsed().as_nanos() as u64;
        let n = src.poll(now, 100_000, &mut |q| p.offer(q));
        let h = src.health();
        if last_health.as_ref() != Some(&h) {
            match &h {
                Health::Live => eprintln!("gateway publish: reading {}", quotes.display()),
                Health::Down(why) => {
                    eprintln!("gateway publish: quote table down: {why} (its quotes go out stale)")
                }
            }
            last_health = Some(h);
        }
        p.flush();
        p.tick();
        if Instant::now() >= next_report {
            next_report += Duration::from_secs(10);
            let s = &p.stats;
            eprintln!(
                "gateway publish: {} changes published in {} batches, {} conflated, {} bars ({} \
                 dropped, {} refused, {} in Redis already, {} left out of a restore), {} venue keys of another type replaced, {} failures, {} writes sent on after ASK, {} after MOVED, {} slot \
                 maps followed in place, {} masters joined in place, {}",
                s.published,
                s.batches,
                s.conflated,
                s.bars,
                s.bars_dropped,
                s.bars_refused,
                s.bars_skipped,
                s.bars_trimmed,
                s.replaced,
                s.failures,
                s.asked,
                s.moved,
                s.remaps,
                s.joined,
                p.down.as_deref().unwrap_or("connected")
            );
        }
        // bars go out a few a flush (quotes between): more of them, no sleep
        if n == 0 && !p.more_bars() {
            if !p.connected() {
                std::thread::sleep(Duration::from_millis(10));
            } else if idle.is_zero() {
                std::thread::yield_now();
            } else if !src.wait(IDLE_WAIT_NS) {
                // no doorbell on the table: poll it
                std::thread::sleep(idle);
            }
        }
    }
    // one last write of what is pending; a standby takes over at once
    p.flush();
    p.release();
    Ok(())
}
