//! Quotes through real Redis servers (a single one, and a 3-master Redis Cluster on loopback)
//! from a publisher beside the quote table to a gateway with a Redis source, checked through
//! WebSocket clients against a gateway reading the quote table directly.
mod common;

use book::conflate::Conflator;
use book::quotes::{Quote, QuoteReader};
use common::{Gw, Raw, Table, test_cfg};
use feed_handler::journal::{JournalWriter, journal_path};
use feed_handler::ring::{Record, RingWriter};
use gateway::redis::publish::{PubStats, Publisher, PublisherCfg};
use gateway::redis::replica::{Replica, ReplicaCfg};
use gateway::redis::server::{self, RedisServer as RedisNode};
use gateway::source::{QuoteSource, ShmSource};
use pcap_replays::market::{Market, MarketConfig};
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Whether redis-server is here (CI installs it; elsewhere the tests say they were skipped).
fn have_redis() -> bool {
    let ok = server::installed();
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "redis-server is missing (.ci/run installs it)"
        );
        eprintln!("SKIPPED: no redis-server (apt-get install redis-server)");
    }
    ok
}

fn tmp(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("gw-redis-{tag}-{}", std::process::id()))
}

fn single(tag: &str) -> RedisNode {
    RedisNode::start_free(&tmp(tag), false, &[]).unwrap()
}

/// Three masters, every slot assigned, `cluster_state:ok` on each.
fn cluster(tag: &str) -> Vec<RedisNode> {
    server::cluster(3, &tmp(tag)).unwrap()
}

/// A cluster node's ID.
fn node_id(n: &RedisNode) -> String {
    server::cli(n.port, &["CLUSTER", "MYID"]).trim().to_string()
}

/// A redis-cli command that must answer OK.
fn cli_ok(n: &RedisNode, args: &[&str]) {
    let out = server::cli(n.port, args);
    assert!(out.trim() == "OK", "{args:?}: {out}");
}

/// Starts moving `slot` from one master to another as `redis-cli --cluster reshard` does:
/// IMPORTING on the target, MIGRATING on the source, then every key in it migrated; the slot
/// is not handed over. Returns the keys moved, whitespace-separated.
fn migrate_slot(from: &RedisNode, to: &RedisNode, slot: &str) -> String {
    cli_ok(
        to,
        &["CLUSTER", "SETSLOT", slot, "IMPORTING", &node_id(from)],
    );
    cli_ok(
        from,
        &["CLUSTER", "SETSLOT", slot, "MIGRATING", &node_id(to)],
    );
    let in_slot = server::cli(from.port, &["CLUSTER", "GETKEYSINSLOT", slot, "100"]);
    let to_port = to.port.to_string();
    for k in in_slot.split_whitespace() {
        cli_ok(from, &["MIGRATE", "127.0.0.1", &to_port, k, "0", "5000"]);
    }
    in_slot
}

/// The publisher beside the quote table, on its own thread until dropped.
struct PubThread {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<PubStats>>,
}

impl PubThread {
    fn spawn(quotes: &Path, seeds: Vec<SocketAddr>) -> PubThread {
        Self::spawn_with(quotes, PublisherCfg::new(seeds))
    }

    fn spawn_with(quotes: &Path, cfg: PublisherCfg) -> PubThread {
        let stop = Arc::new(AtomicBool::new(false));
        let (s, q) = (stop.clone(), quotes.to_path_buf());
        let h = std::thread::spawn(move || {
            let bars = book::barlog::beside(&q);
            let venues = book::quotes::venues_beside(&q);
            let mut p = Publisher::new(cfg);
            p.follow_bars(bars);
            p.follow_venues(venues);
            p.name_venues_from(q.clone());
            let mut src = ShmSource::new(q);
            let t0 = Instant::now();
            while !s.load(Ordering::Relaxed) {
                src.poll(t0.elapsed().as_nanos() as u64, 100_000, &mut |q| p.offer(q));
                p.flush();
                p.tick();
                std::thread::sleep(Duration::from_micros(200));
            }
            p.stats
        });
        PubThread {
            stop,
            handle: Some(h),
        }
    }
}

impl PubThread {
    /// Stops it; what it counted.
    fn stop(mut self) -> PubStats {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().expect("running").join().unwrap()
    }
}

impl Drop for PubThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            h.join().unwrap();
        }
    }
}

/// A gateway whose source is a replica of Redis; stopped (gateway, then replica) when dropped.
struct Remote {
    gw: Option<Gw>,
    replica: Option<Replica>,
}

impl Remote {
    fn start(seeds: Vec<SocketAddr>, hb_timeout_ms: u64) -> Remote {
        Self::start_cfg(seeds, hb_timeout_ms, |_| {})
    }

    /// The same, its gateway's configuration changed by `f`.
    fn start_cfg(
        seeds: Vec<SocketAddr>,
        hb_timeout_ms: u64,
        f: impl FnOnce(&mut gateway::server::ServerCfg),
    ) -> Remote {
        let stop: &'static AtomicBool = Box::leak(Box::new(AtomicBool::new(false)));
        let mut rc = ReplicaCfg::new(seeds);
        rc.hb_timeout_ns = hb_timeout_ms * 1_000_000;
        let replica = Replica::start(rc, stop).unwrap();
        let (mut cfg, limits) = test_cfg(&replica.path);
        cfg.bars = Some(replica.bars_path.clone());
        cfg.venues = Some(replica.venues_path.clone());
        cfg.charts_loading = Some(replica.charts_loading());
        cfg.venue_names = Some(replica.venue_names());
        f(&mut cfg);
        let gw = Gw::start_with(cfg, limits, stop, &|| {
            Box::new(replica.source()) as Box<dyn QuoteSource>
        });
        Remote {
            gw: Some(gw),
            replica: Some(replica),
        }
    }

    fn addr(&self) -> SocketAddr {
        self.gw.as_ref().expect("running").addr
    }

    fn health(&self) -> gateway::source::Health {
        self.replica.as_ref().expect("running").health()
    }

    /// One of the replica's counters as it is now (the gateway's `/metrics` copy is up to a
    /// second old).
    fn replica_metric(&self, name: &str) -> u64 {
        let mut text = String::new();
        let replica = self.replica.as_ref().expect("running");
        replica.source().prometheus(&mut text);
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no metric {name}"))
            .parse()
            .unwrap()
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        drop(self.gw.take());
        if let Some(r) = self.replica.take() {
            r.join();
        }
    }
}

/// What clients see, per symbol.
type V = HashMap<String, Map<String, Value>>;

/// What a client should show for every symbol of a hand-written table.
fn truth(t: &Table) -> V {
    t.quotes
        .iter()
        .map(|q| (q.symbol_str(), expected(q)))
        .collect()
}

/// Every symbol of `now` shown with its values.
fn all_current(now: &V, v: &V) -> bool {
    now.iter()
        .all(|(s, w)| v.get(s).is_some_and(|m| same(m, w)))
}

fn all_stale(v: &V) -> bool {
    v.values().all(|m| m["stale"] == true)
}

/// Reads until the client shows every symbol of `now` with its values; a symbol shown fresh
/// with any other values on the way would be a wrong price shown as good.
fn becomes_current_never_wrong(c: &mut View, now: &V, what: &str) {
    let mut wrong = Vec::new();
    let reached = c.until(
        30,
        |s, m| {
            if m["stale"] == false && now.get(s).is_some_and(|w| !same(m, w)) {
                wrong.push(format!("{s}: {m:?}"));
            }
        },
        |v| all_current(now, v),
    );
    assert!(wrong.is_empty(), "{what}: fresh but not current: {wrong:?}");
    assert!(reached, "{what}: every symbol fresh and current");
}

/// Waits until the gateway knows `n` symbols (a client subscribing earlier is told the rest
/// are unknown, as with a local table that does not have them yet).
fn wait_symbols(addr: SocketAddr, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let body = common::http_get(addr, "/healthz").1;
        let v: Value = serde_json::from_str(&body).unwrap_or_default();
        if v["symbols"].as_u64().is_some_and(|k| k >= n) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway never knew {n} symbols: {body}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A WebSocket client's picture of its symbols, merged from snapshots and updates.
struct View {
    c: Raw,
    q: V,
}

impl View {
    fn subscribe(addr: SocketAddr, symbols: &[String]) -> View {
        let mut c = Raw::connect(addr);
        c.text(
            &serde_json::json!({"op":"subscribe","symbols":symbols,"throttle_ms":50}).to_string(),
        );
        View {
            c,
            q: HashMap::new(),
        }
    }

    /// Reads one message and merges its quotes; returns the symbols it touched.
    fn read(&mut self) -> Vec<String> {
        let m = self.c.json();
        let mut touched = Vec::new();
        if let Some(qs) = m["quotes"].as_array() {
            for q in qs {
                let s = q["s"].as_str().unwrap().to_string();
                let e = self.q.entry(s.clone()).or_default();
                for (k, v) in q.as_object().unwrap() {
                    e.insert(k.clone(), v.clone());
                }
                touched.push(s);
            }
        }
        touched
    }

    /// Reads until `done` holds, calling `each` on every symbol touched; false at the deadline.
    fn until(
        &mut self,
        secs: u64,
        mut each: impl FnMut(&str, &Map<String, Value>),
        done: impl Fn(&V) -> bool,
    ) -> bool {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !done(&self.q) {
            if Instant::now() > deadline {
                let mut some: Vec<_> = self.q.iter().take(2).collect();
                some.sort_by_key(|x| x.0);
                eprintln!("gave up with {} symbols, e.g. {some:?}", self.q.len());
                return false;
            }
            for s in self.read() {
                each(&s, &self.q[&s]);
            }
        }
        true
    }
}

const FIELDS: [&str; 9] = [
    "bid", "bid_sz", "ask", "ask_sz", "last", "last_sz", "vol", "state", "stale",
];

fn px(p: Option<(u32, u64)>) -> (Value, Value) {
    match p {
        Some((px, qty)) => (
            format!("{}.{:04}", px / 10_000, px % 10_000).into(),
            qty.into(),
        ),
        None => (Value::Null, 0.into()),
    }
}

/// What a client should show for a quote (the fields compared).
fn expected(q: &Quote) -> Map<String, Value> {
    let mut m = Map::new();
    for (name, v) in [("bid", q.bid), ("ask", q.ask), ("last", q.last)] {
        let (p, sz) = px(v);
        m.insert(name.into(), p);
        m.insert(format!("{name}_sz"), sz);
    }
    m.insert("vol".into(), q.volume.into());
    m.insert("stale".into(), q.stale.into());
    m
}

fn same(view: &Map<String, Value>, want: &Map<String, Value>) -> bool {
    want.iter().all(|(k, v)| view.get(k) == Some(v))
}

/// A generated session through a ring and the conflation thread into a quote table.
struct Replay {
    dir: PathBuf,
    ring: RingWriter,
    journal: JournalWriter,
    conf: Conflator,
    market: Market,
    seq: u64,
    quotes: PathBuf,
    /// Each message goes out on this many venues (channels 0, 1, ...).
    venues: u16,
}

impl Replay {
    fn new(tag: &str) -> Replay {
        let dir = tmp(tag);
        std::fs::create_dir_all(&dir).unwrap();
        let ring_path = dir.join("ring");
        let ring = RingWriter::create(&ring_path, 1 << 16).unwrap();
        let journal = JournalWriter::create(&journal_path(&ring_path), ring.generation()).unwrap();
        // beside the ring, as book names it: the feed handler's counters (venue names) are found
        let quotes = dir.join("ring.quotes");
        let conf = Conflator::new(&ring_path, &quotes, 256).unwrap();
        let market = Market::new(MarketConfig {
            seed: 41,
            symbols: 60,
            messages: 30_000,
            // 10 s of exchange time: closed 1-second bars to chart
            rate_per_s: 3_000,
            ..Default::default()
        });
        Replay {
            dir,
            ring,
            journal,
            conf,
            market,
            seq: 0,
            quotes,
            venues: 1,
        }
    }

    /// Up to `n` more messages through; false when the session is over.
    fn step(&mut self, n: usize) -> bool {
        for _ in 0..n {
            let Some(msg) = self.market.next_message().map(<[u8]>::to_vec) else {
                return false;
            };
            self.seq += 1;
            for ch in 0..self.venues {
                let rec = Record::message(ch, self.seq, 0, self.seq, &msg).unwrap();
                let p = self.ring.publish(&rec);
                self.journal.append(p, &rec).unwrap();
                let end = self.journal.flush().unwrap();
                self.ring.set_journal_end(end);
            }
        }
        while self.conf.do_work().unwrap() > 0 {}
        true
    }
}

impl Drop for Replay {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Waits (at most 20 s) until `get` gives `want`.
fn comes_to<T: PartialEq + std::fmt::Debug>(what: &str, want: &T, mut get: impl FnMut() -> T) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = get();
        if got == *want {
            return;
        }
        assert!(Instant::now() < deadline, "{what} {got:?}, want {want:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The same replay on two venues, served by a gateway on the quote table and by one on a Redis
/// replica: clients of both end with the same values, equal to the table's, and the same
/// charts and per-venue quotes.
fn same_values_as_a_local_gateway(seeds: Vec<SocketAddr>) {
    let mut replay = Replay::new(&format!("same-{}", seeds[0].port()));
    replay.venues = 2;
    // the feed handler's counters name the two venues; the remote gateway has them through Redis
    let names = ["nasdaq".to_string(), "bx".to_string()];
    let counters = feed_handler::counters::counters_path(&replay.dir.join("ring"));
    let _counters = feed_handler::counters::CountersWriter::create(&counters, &names).unwrap();
    replay.step(2_000); // the directory and the first orders: every symbol has a quote
    let publisher = PubThread::spawn(&replay.quotes, seeds.clone());
    let (cfg, limits) = test_cfg(&replay.quotes);
    let local = Gw::start(cfg, limits);
    let remote = Remote::start(seeds, 2_000);
    let r = QuoteReader::attach(&replay.quotes).unwrap();
    let symbols: Vec<String> = (0..r.slots())
        .filter_map(|i| r.read(i))
        .map(|q| q.symbol_str())
        .collect();
    assert_eq!(symbols.len(), 60);
    wait_symbols(remote.addr(), 60);
    let mut a = View::subscribe(local.addr, &symbols);
    let mut b = View::subscribe(remote.addr(), &symbols);
    while replay.step(500) {
        // keep both clients drained while the session runs
        a.read();
        b.read();
    }
    let want: V = (0..r.slots())
        .filter_map(|i| r.read(i))
        .map(|q| (q.symbol_str(), expected(&q)))
        .collect();
    assert!(want.values().all(|m| m["stale"] == false));
    assert!(
        want.values()
            .filter(|m| !m["vol"].is_null() && m["vol"] != 0)
            .count()
            > 30,
        "trades happened"
    );
    let reached = |v: &V| all_current(&want, v);
    assert!(
        a.until(20, |_, _| {}, reached),
        "the local gateway's client reached the table's values"
    );
    assert!(
        b.until(20, |_, _| {}, reached),
        "the remote gateway's client reached the same values"
    );
    for s in &symbols {
        for f in FIELDS {
            assert_eq!(a.q[s].get(f), b.q[s].get(f), "{s} {f}");
        }
    }
    // the charts: the remote gateway's bars (through Redis) are the local one's (the bar log)
    let bars = |addr: SocketAddr, s: &str| {
        let (status, body) =
            common::http_get(addr, &format!("/v1/bars?symbol={s}&interval=1s&limit=600"));
        assert!(status.contains("200"), "{status} {body}");
        body
    };
    let mut charted = 0;
    for s in &symbols {
        let want = bars(local.addr, s);
        charted += want.contains("\"o\":") as usize;
        comes_to(&format!("{s}: remote bars"), &want, || {
            bars(remote.addr(), s)
        });
    }
    assert!(charted > 30, "bars to compare: {charted} symbols");
    // each venue's quote: the remote gateway's (through Redis) are the local one's (the book's
    // per-venue table), both venues of every symbol
    let venues = |addr: SocketAddr, s: &str| {
        let (status, body) = common::http_get(addr, &format!("/v1/venues?symbol={s}"));
        assert!(status.contains("200"), "{status} {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        let mut by_venue: Vec<(u64, Value)> = v["venues"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["venue"].as_u64().unwrap(), e["quote"].clone()))
            .collect();
        by_venue.sort_by_key(|e| e.0);
        by_venue
    };
    for s in &symbols {
        let want = venues(local.addr, s);
        assert_eq!(
            want.iter().map(|e| e.0).collect::<Vec<_>>(),
            [0, 1],
            "{s}: both venues locally"
        );
        assert!(want.iter().all(|e| e.1["stale"] == false), "{s}: {want:?}");
        comes_to(&format!("{s}: remote venues"), &want, || {
            venues(remote.addr(), s)
        });
    }
    // the venues named alike: the local gateway from the counters, the remote one from Redis
    let named = |addr: SocketAddr| {
        let v: Value = serde_json::from_str(&common::http_get(addr, "/v1/symbols").1).unwrap();
        v["venues"].clone()
    };
    assert_eq!(named(local.addr), serde_json::json!(names));
    comes_to("remote venue names", &named(local.addr), || {
        named(remote.addr())
    });
    drop((publisher, local, remote));
}

#[test]
fn through_a_single_redis_remote_clients_see_what_local_clients_see() {
    if !have_redis() {
        return;
    }
    let node = single("single");
    same_values_as_a_local_gateway(vec![node.addr()]);
}

#[test]
fn through_a_three_master_cluster_remote_clients_see_what_local_clients_see() {
    if !have_redis() {
        return;
    }
    let nodes = cluster("cluster");
    // the symbols spread over every master (sharded pub/sub on each)
    same_values_as_a_local_gateway(vec![nodes[1].addr()]);
    // quote keys (the bar lists beside them are `quotes:{SYM}:bars:N`)
    let per_node: Vec<usize> = nodes
        .iter()
        .map(|n| {
            server::cli(n.port, &["--scan", "--pattern", "quotes:{*}"])
                .lines()
                .count()
        })
        .collect();
    assert!(
        per_node.iter().all(|&k| k > 0),
        "quote keys on every master: {per_node:?}"
    );
    assert_eq!(per_node.iter().sum::<usize>(), 60);
}

/// Redis dies mid-stream and comes back empty: the remote client sees every symbol stale at
/// once, nothing fresh while Redis is away (though prices move meanwhile), and then every
/// symbol fresh with the values of now, never an old value marked fresh.
#[test]
fn redis_dying_marks_stale_and_a_restart_brings_back_right_values() {
    if !have_redis() {
        return;
    }
    let mut node = single("restart");
    let mut t = Table::new("redis-restart", 20);
    // and a per-venue table: the first symbol on venue 2
    let (mut vw, _rm) = venue_table(&t);
    let mut on_venue = Quote {
        channel: 2,
        ..t.quotes[0]
    };
    vw.publish(0, &on_venue);
    let sym0 = t.quotes[0].symbol_str();
    let _publisher = PubThread::spawn(&t.path, vec![node.addr()]);
    // a heartbeat timeout longer than the test: only the lost connection can make it stale
    let remote = Remote::start(vec![node.addr()], 600_000);
    let symbols: Vec<String> = t.quotes.iter().map(|q| q.symbol_str()).collect();
    wait_symbols(remote.addr(), 20);
    let mut c = View::subscribe(remote.addr(), &symbols);
    for round in 0..3u64 {
        for i in 0..20 {
            t.set(i, |q| {
                q.volume += 100;
                q.bid = Some((1_000_000 + round as u32, 100 + round));
            });
        }
    }
    // (values before these changes were right when shown: only reaching the new ones counts)
    let now = truth(&t);
    assert!(
        c.until(20, |_, _| {}, |v| all_current(&now, v)),
        "fresh and current before the outage"
    );
    venue_becomes(remote.addr(), &sym0, &on_venue, false);

    node.kill();
    let killed = Instant::now();
    assert!(
        c.until(10, |_, _| {}, all_stale),
        "every symbol stale after Redis died"
    );
    eprintln!("stale {} ms after the kill", killed.elapsed().as_millis());
    venue_becomes(remote.addr(), &sym0, &on_venue, true);
    on_venue.bid = Some((3_000_000, 9));
    vw.publish(0, &on_venue);
    // prices move while Redis is away
    for i in 0..20 {
        t.set(i, |q| {
            q.volume += 1;
            q.bid = Some((2_000_000 + i as u32, 7));
        });
    }
    // two heartbeats' worth of messages: nothing becomes fresh while Redis is away
    let mut beats = 0;
    while beats < 2 {
        let m = c.c.json();
        beats += (m["type"] == "heartbeat") as u32;
        if let Some(qs) = m["quotes"].as_array() {
            assert!(
                qs.iter()
                    .all(|q| q.get("stale") != Some(&Value::Bool(false))),
                "fresh while Redis is down: {m}"
            );
        }
    }

    node.restart().unwrap();
    becomes_current_never_wrong(&mut c, &truth(&t), "after the restart");
    assert!(matches!(remote.health(), gateway::source::Health::Live));
    venue_becomes(remote.addr(), &sym0, &on_venue, false);
}

#[test]
fn a_remote_gateway_just_started_holds_subscriptions_until_its_symbols_are_loaded() {
    if !have_redis() {
        return;
    }
    let node = single("ready");
    let t = Table::new("redis-ready", 300);
    let _publisher = PubThread::spawn(&t.path, vec![node.addr()]);
    // every symbol in Redis
    let first = Remote::start(vec![node.addr()], 600_000);
    wait_symbols(first.addr(), 300);
    drop(first);

    // Redis stops answering: a remote gateway started now can load nothing
    let pid = node.pid().unwrap().to_string();
    let signal = |sig: &str| {
        let st = Command::new("kill").args([sig, &pid]).status().unwrap();
        assert!(st.success(), "kill {sig}");
    };
    signal("-STOP");
    let remote = Remote::start_cfg(vec![node.addr()], 600_000, |cfg| {
        // (the link's first try times out after 2 s, its next comes up to 1 s later)
        cfg.handshake_timeout_ns = 60_000_000_000;
    });
    let a = remote.addr();
    let symbols: Vec<String> = t.quotes.iter().map(|q| q.symbol_str()).collect();
    let n = symbols.len();
    let client = std::thread::spawn(move || {
        let mut v = View::subscribe(a, &symbols);
        let sub = v.c.json();
        assert!(
            v.until(30, |_, _| {}, |q| q.len() == n),
            "a snapshot of every symbol"
        );
        sub
    });
    let gw = remote.gw.as_ref().expect("running");
    comes_to("the subscription held", &1, || {
        gw.metric("gateway_requests_held_total")
    });
    let (st, body) = common::http_get(a, "/healthz");
    assert!(st.contains("503"), "{st} {body}");
    signal("-CONT");
    // the symbols are known, not told unknown for not being loaded yet
    let sub = client.join().unwrap();
    assert_eq!(sub["type"], "subscribed", "{sub}");
    assert_eq!(sub["unknown"], serde_json::json!([]), "{sub}");
    assert_eq!(sub["symbols"].as_array().map(Vec::len), Some(300), "{sub}");
}

/// Removes a file when dropped.
struct Rm(PathBuf);

/// The per-venue table beside `t` (4 slots), which the publisher follows; removed when the
/// [`Rm`] is dropped.
fn venue_table(t: &Table) -> (book::quotes::QuoteWriter, Rm) {
    let path = book::quotes::venues_beside(&t.path);
    let w = book::quotes::QuoteWriter::create(&path, 4, 16).unwrap();
    (w, Rm(path))
}

impl Drop for Rm {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Waits until `/v1/venues` shows `q` as its only venue quote of `sym`, `stale` as given.
fn venue_becomes(addr: SocketAddr, sym: &str, q: &Quote, stale: bool) {
    let mut want = expected(q);
    want.insert("stale".into(), Value::Bool(stale));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = common::http_get(addr, &format!("/v1/venues?symbol={sym}"));
        assert!(status.contains("200"), "{status} {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        let got = &v["venues"];
        if got.as_array().is_some_and(|a| a.len() == 1)
            && got[0]["venue"] == q.channel
            && got[0]["quote"].as_object().is_some_and(|m| same(m, &want))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{sym}: venues {body}, want stale={stale} {want:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The publisher stops (Redis stays up): its heartbeat ends, and so does trust; a new publisher
/// brings every symbol back.
#[test]
fn a_silent_publisher_makes_every_symbol_stale_until_one_publishes_again() {
    if !have_redis() {
        return;
    }
    let node = single("silent");
    let t = Table::new("redis-silent", 10);
    let publisher = PubThread::spawn(&t.path, vec![node.addr()]);
    let remote = Remote::start(vec![node.addr()], 500);
    wait_symbols(remote.addr(), 10);
    let symbols: Vec<String> = t.quotes.iter().map(|q| q.symbol_str()).collect();
    let mut c = View::subscribe(remote.addr(), &symbols);
    becomes_current_never_wrong(&mut c, &truth(&t), "with a publisher");
    drop(publisher);
    assert!(
        c.until(10, |_, _| {}, all_stale),
        "stale once the publisher is silent"
    );
    assert!(
        matches!(remote.health(), gateway::source::Health::Down(why) if why.contains("heartbeat"))
    );
    let _publisher = PubThread::spawn(&t.path, vec![node.addr()]);
    becomes_current_never_wrong(&mut c, &truth(&t), "with a publisher again");
}

/// The commands as an operator runs them: `gateway synth` into a table, `gateway publish`, and
/// `gateway run --source redis://... --redis-symbols` holding only the symbols it was given.
#[test]
fn the_commands_publish_and_serve_a_configured_symbol_set() {
    if have_redis() {
        commands_publish_and_serve("cli", None);
    }
}

/// The same with a Redis that asks for a password (`requirepass`): `gateway publish` and
/// `gateway run` read it from `--redis-auth-file` and send AUTH on every connection.
#[test]
fn with_a_password_the_commands_authenticate_from_a_file() {
    if have_redis() {
        commands_publish_and_serve("cli-auth", Some("s3cret-pw"));
    }
}

/// A CA, and a certificate it signed for 127.0.0.1, as PEM files in `dir`: (CA file, the
/// redis-server arguments that serve TLS with it on `tls_port`).
/// A test CA and one certificate for 127.0.0.1 it signed (every node of a test shares it),
/// written under `dir`.
struct Pki {
    ca: String,
    cert: String,
    key: String,
}

impl Pki {
    fn new(dir: &Path) -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        std::fs::create_dir_all(dir).unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // distinct names: OpenSSL (redis-cli, the cluster bus) takes a certificate whose
        // subject is its issuer's for a self-signed one
        ca.distinguished_name
            .push(DnType::CommonName, "gateway test CA");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        leaf.distinguished_name
            .push(DnType::CommonName, "127.0.0.1");
        let cert = leaf.signed_by(&key, &Issuer::new(ca, ca_key)).unwrap();
        let write = |name: &str, text: String| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            p.to_string_lossy().into_owned()
        };
        Pki {
            ca: write("ca.pem", ca_cert.pem()),
            cert: write("server.pem", cert.pem()),
            key: write("server.key", key.serialize_pem()),
        }
    }

    /// `redis-server` arguments for TLS on `tls_port` (clients without certificates).
    fn args(&self, tls_port: u16) -> Vec<String> {
        [
            "--tls-port",
            &tls_port.to_string(),
            "--tls-cert-file",
            &self.cert,
            "--tls-key-file",
            &self.key,
            "--tls-ca-cert-file",
            &self.ca,
            "--tls-auth-clients",
            "no",
        ]
        .map(String::from)
        .to_vec()
    }
}

/// The same over TLS (`rediss://`, Redis's `tls-port`), the server's certificate checked
/// against the CA file given with `--redis-tls-ca`.
#[test]
fn over_tls_the_commands_publish_and_serve() {
    if have_redis() {
        commands_publish_and_serve("cli-tls", None);
    }
}

/// A node reached over TLS: (the node, the `rediss://` URL, the CA file).
fn tls_node(tag: &str) -> (RedisNode, String, PathBuf) {
    let tls_port = server::free_port_pair();
    // in the node's directory, removed with it
    let pki = Pki::new(&tmp(tag).join("pki"));
    let args = pki.args(tls_port);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let node = RedisNode::start_with(server::free_port_pair(), &tmp(tag), false, &args).unwrap();
    (
        node,
        format!("rediss://127.0.0.1:{tls_port}"),
        PathBuf::from(pki.ca),
    )
}

/// A 3-master Redis Cluster whose clients and cluster bus speak TLS (`tls-cluster yes`; made
/// with `redis-cli --tls --cluster create`): (the nodes, a `rediss://` seed list, the CA file).
/// Each node keeps a port in clear for the helpers' `redis-cli` checks; `CLUSTER SLOTS` over
/// TLS names the TLS ports.
fn tls_cluster(tag: &str) -> (Vec<RedisNode>, String, PathBuf) {
    let dir = tmp(tag);
    let pki = Pki::new(&dir.join("pki"));
    let mut nodes = Vec::new();
    let mut tls_addrs = Vec::new();
    for k in 0..3 {
        let tls_port = server::free_port_pair();
        let mut args = pki.args(tls_port);
        args.extend(["--tls-cluster".into(), "yes".into()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let node_dir = dir.join(k.to_string());
        nodes
            .push(RedisNode::start_with(server::free_port_pair(), &node_dir, true, &args).unwrap());
        tls_addrs.push(format!("127.0.0.1:{tls_port}"));
    }
    let nodes =
        server::create_cluster(nodes, &tls_addrs, 0, &["--tls", "--cacert", &pki.ca]).unwrap();
    let url = format!("rediss://{}", tls_addrs.join(","));
    // the certificates go with the nodes' directories (the last node removes the parent)
    (nodes, url, PathBuf::from(pki.ca))
}

/// The same through a Redis Cluster over TLS: the publisher and the remote gateway reach every
/// master by the TLS port `CLUSTER SLOTS` names, and check each one's certificate.
#[test]
fn over_tls_through_a_cluster_the_commands_publish_and_serve() {
    if have_redis() {
        commands_publish_and_serve("cli-cluster-tls", None);
    }
}

fn commands_publish_and_serve(tag: &str, password: Option<&str>) {
    let (nodes, url, ca) = if tag.ends_with("-cluster-tls") {
        let (nodes, url, ca) = tls_cluster(tag);
        (nodes, url, Some(ca))
    } else if tag.ends_with("-tls") {
        let (node, url, ca) = tls_node(tag);
        (vec![node], url, Some(ca))
    } else {
        let node = match password {
            None => single(tag),
            Some(pw) => RedisNode::start_free(&tmp(tag), false, &["--requirepass", pw]).unwrap(),
        };
        let url = format!("redis://{}", node.addr());
        (vec![node], url, None)
    };
    let auth_file = tmp(&format!("{tag}.auth"));
    let mut auth_args: Vec<String> = Vec::new();
    if let Some(pw) = password {
        std::fs::write(&auth_file, format!("{pw}\n")).unwrap();
        auth_args = vec![
            "--redis-auth-file".into(),
            auth_file.to_string_lossy().into_owned(),
        ];
    }
    if let Some(ca) = &ca {
        auth_args.extend(["--redis-tls-ca".into(), ca.to_string_lossy().into_owned()]);
    }
    let auth_args: Vec<&str> = auth_args.iter().map(String::as_str).collect();
    let exe = env!("CARGO_BIN_EXE_gateway");
    let table = format!("gw-test-{tag}-{}.quotes", std::process::id());
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let spawn = |args: &[&str]| {
        Command::new(exe)
            .args(args)
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    struct Procs(Vec<Child>);
    impl Drop for Procs {
        fn drop(&mut self) {
            for c in self.0.iter_mut().rev() {
                // SIGTERM, as an operator would
                let _ = Command::new("kill").arg(c.id().to_string()).status();
                let _ = c.wait();
            }
        }
    }
    let mut procs = Procs(Vec::new());
    procs.0.push(spawn(&[
        "synth",
        "--quotes",
        &table,
        "--symbols",
        "50",
        "--rate",
        "500",
    ]));
    procs.0.push(spawn(
        &[
            &["publish", "--quotes", &table, "--redis", &url][..],
            &auth_args,
        ]
        .concat(),
    ));
    let listen = format!("127.0.0.1:{port}");
    procs.0.push(spawn(
        &[
            &[
                "run",
                "--source",
                &url,
                "--redis-symbols",
                "AAAA,AAAB,AAAC",
                "--listen",
                &listen,
                "--workers",
                "1",
            ][..],
            &auth_args,
        ]
        .concat(),
    ));
    let addr: SocketAddr = listen.parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    // healthy, with the configured symbols in (the gateway may be ready before the publisher,
    // starting beside it, has written all three: through a cluster it reaches the masters one
    // by one, and a symbol not in Redis yet is not in the replica yet either)
    let health = loop {
        let h = TcpStream::connect(addr)
            .ok()
            .map(|_| common::http_get(addr, "/healthz"));
        if let Some((status, body)) = &h
            && status.contains("200")
            && serde_json::from_str::<Value>(body).unwrap()["symbols"].as_u64() >= Some(3)
        {
            break body.clone();
        }
        assert!(
            Instant::now() < deadline,
            "never healthy with 3 symbols: {h:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let v: Value = serde_json::from_str(&health).unwrap();
    assert_eq!(v["symbols"], 3, "only the configured symbols: {health}");
    let (_, body) = common::http_get(addr, "/v1/quotes?symbols=AAAA,AAAB,AAAD");
    let q: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(q["quotes"].as_array().unwrap().len(), 2, "{body}");
    assert_eq!(q["unknown"], serde_json::json!(["AAAD"]));
    assert!(
        q["quotes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["stale"] == false && x["bid"].is_string())
    );
    let _ = std::fs::remove_file(&auth_file);
    drop(procs);
    drop(nodes);
    let _ = std::fs::remove_dir_all(tmp(tag));
}

/// Over TLS, a certificate from another CA, a name the certificate does not carry, or a
/// connection in clear are refused with a reason; the right CA connects.
#[test]
fn tls_refuses_a_certificate_it_cannot_trust() {
    use gateway::redis::conn::{Access, Conn};
    use gateway::redis::tls::Tls;
    if !have_redis() {
        return;
    }
    let (node, url, ca) = tls_node("tls-refused");
    let addr = gateway::redis::cluster::parse_url(&url).unwrap()[0];
    let t = Duration::from_secs(2);
    let with = |tls: Tls| Access {
        auth: None,
        tls: Some(tls),
    };
    let mut c = Conn::connect(addr, t, t, &with(Tls::new(Some(&ca), None).unwrap())).unwrap();
    let pong = c
        .call(&[b"PING"], t, |r| r.bytes().map(<[u8]>::to_vec))
        .unwrap();
    assert_eq!(pong.as_deref(), Some(&b"PONG"[..]));
    // another CA
    let other = tmp("tls-refused").join("other-pki");
    let other_ca = PathBuf::from(Pki::new(&other).ca);
    let e = Conn::connect(addr, t, t, &with(Tls::new(Some(&other_ca), None).unwrap())).unwrap_err();
    assert!(
        e.contains("TLS handshake") && e.contains("certificate"),
        "{e}"
    );
    // a name the certificate does not carry
    let named = Tls::new(Some(&ca), Some("cache.example")).unwrap();
    let e = Conn::connect(addr, t, t, &with(named)).unwrap_err();
    assert!(e.contains("TLS handshake"), "{e}");
    // in clear to the TLS port: no reply that parses, an error, not a hang
    let e = Conn::connect(addr, t, t, &Access::default())
        .and_then(|mut c| c.call(&[b"PING"], t, |_| ()))
        .unwrap_err();
    assert!(e.contains(&addr.to_string()), "{e}");
    // a CA file with no certificate in it
    let empty = other.join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    assert!(Tls::new(Some(&empty), None).unwrap_err().contains("no CA"));
    drop(node);
}

/// Without the password, or with a wrong one, a connection is refused with an error that names
/// AUTH and the server's reason, never the password.
#[test]
fn a_wrong_or_missing_password_is_refused_clearly() {
    use gateway::redis::conn::{Access, Auth, Conn};
    if !have_redis() {
        return;
    }
    let node =
        RedisNode::start_free(&tmp("auth-refused"), false, &["--requirepass", "right-pw"]).unwrap();
    let t = Duration::from_secs(2);
    let e = gateway::redis::discover(&[node.addr()], t, &Access::default()).unwrap_err();
    assert!(e.contains("NOAUTH"), "{e}");
    let wrong = Auth::parse("wrong-pw").unwrap();
    let e = Conn::connect(node.addr(), t, t, &Access::with_auth(wrong)).unwrap_err();
    assert!(e.contains("AUTH") && e.contains("WRONGPASS"), "{e}");
    assert!(!e.contains("wrong-pw"), "the password is never shown: {e}");
    let right = Auth::parse("right-pw").unwrap();
    let topo = gateway::redis::discover(&[node.addr()], t, &Access::with_auth(right)).unwrap();
    assert_eq!(topo.nodes, vec![node.addr()]);
}

/// A master of the cluster dies: its symbols go stale at once while the other masters' stay
/// fresh and keep moving; it restarts (empty, with its slots from its nodes file) and every
/// symbol comes back fresh with the values of now, none of them old and marked fresh.
#[test]
fn a_cluster_master_dying_and_coming_back() {
    if !have_redis() {
        return;
    }
    let mut nodes = cluster("failover");
    let mut t = Table::new("redis-failover", 30);
    let seeds: Vec<SocketAddr> = nodes.iter().map(RedisNode::addr).collect();
    let topo =
        gateway::redis::discover(&seeds, Duration::from_secs(2), &Default::default()).unwrap();
    let keys = gateway::redis::Keys::new("quotes");
    let dead = topo
        .nodes
        .iter()
        .position(|a| *a == nodes[2].addr())
        .unwrap();
    let on_dead: Vec<String> = t
        .quotes
        .iter()
        .map(|q| q.symbol_str())
        .filter(|s| topo.node_of(keys.quote(s).as_bytes()) == dead)
        .collect();
    assert!(!on_dead.is_empty() && on_dead.len() < 30, "{on_dead:?}");
    let _publisher = PubThread::spawn(&t.path, seeds.clone());
    let remote = Remote::start(seeds, 1_000);
    wait_symbols(remote.addr(), 30);
    let symbols: Vec<String> = t.quotes.iter().map(|q| q.symbol_str()).collect();
    let mut c = View::subscribe(remote.addr(), &symbols);
    becomes_current_never_wrong(&mut c, &truth(&t), "before the master dies");

    nodes[2].kill();
    let dead_stale = |v: &V| on_dead.iter().all(|s| v[s]["stale"] == true);
    assert!(
        c.until(20, |_, _| {}, dead_stale),
        "the dead master's symbols stale"
    );
    // prices move: the live masters' symbols follow, fresh; the dead one's stay stale
    for i in 0..30 {
        t.set(i, |q| q.volume += 5);
    }
    let live: V = truth(&t)
        .into_iter()
        .filter(|(s, _)| !on_dead.contains(s))
        .collect();
    let mut wrong = Vec::new();
    assert!(
        c.until(
            20,
            |s, m| {
                if on_dead.iter().any(|d| d == s) && m["stale"] == false {
                    wrong.push(format!("{s}: {m:?}"));
                }
            },
            |v| all_current(&live, v)
        ),
        "the live masters' symbols fresh and current"
    );
    assert!(
        wrong.is_empty(),
        "fresh while its master is down: {wrong:?}"
    );
    assert!(dead_stale(&c.q));

    nodes[2].restart().unwrap();
    becomes_current_never_wrong(&mut c, &truth(&t), "after the master is back");
}

/// A cluster with a replica per master; a master dies and its replica is promoted in its
/// place: the publisher and the remote gateway follow the new slot map, and every symbol comes
/// back fresh with the values of now, none shown fresh with older ones on the way (a promoted
/// replica may lag its master: nothing is trusted before the publisher's next epoch).
#[test]
fn a_failover_to_a_promoted_replica() {
    if !have_redis() {
        return;
    }
    let mut nodes =
        server::cluster_with_replicas(3, 1, &["--cluster-node-timeout", "1000"], &tmp("promote"))
            .unwrap();
    // replicas in sync before anything is written
    let deadline = Instant::now() + Duration::from_secs(30);
    for n in &nodes[3..] {
        while !server::cli(n.port, &["INFO", "replication"]).contains("master_link_status:up") {
            assert!(Instant::now() < deadline, "replica {} not in sync", n.port);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let mut t = Table::new("redis-promote", 30);
    let seeds: Vec<SocketAddr> = nodes.iter().map(RedisNode::addr).collect();
    let topo =
        gateway::redis::discover(&seeds, Duration::from_secs(2), &Default::default()).unwrap();
    let _publisher = PubThread::spawn(&t.path, seeds.clone());
    let remote = Remote::start(seeds, 1_000);
    wait_symbols(remote.addr(), 30);
    let symbols: Vec<String> = t.quotes.iter().map(|q| q.symbol_str()).collect();
    let mut c = View::subscribe(remote.addr(), &symbols);
    becomes_current_never_wrong(&mut c, &truth(&t), "before the failover");

    let victim = topo.nodes[0];
    nodes
        .iter_mut()
        .find(|n| n.addr() == victim)
        .expect("a master of ours")
        .kill();
    for i in 0..30 {
        t.set(i, |q| q.volume += 7);
    }
    becomes_current_never_wrong(&mut c, &truth(&t), "after the failover");
    let after = gateway::redis::discover(
        &nodes
            .iter()
            .map(RedisNode::addr)
            .filter(|a| *a != victim)
            .collect::<Vec<_>>(),
        Duration::from_secs(2),
        &Default::default(),
    )
    .unwrap();
    assert!(!after.nodes.contains(&victim), "a replica took over");
}

/// Slots move between live masters (`redis-cli --cluster reshard`: keys migrated one slot at a
/// time) while prices keep moving: the symbols whose slots stay put stay fresh all along (the
/// replica's links to the masters stay up and follow the map in place); no symbol is ever shown
/// fresh with an older volume than it was already shown (an old value taken for current); and
/// once the slots have moved every symbol is fresh with the values of now, from the masters
/// that hold them now. (Before links followed the map in place, every symbol went stale for most
/// of the resharding.)
#[test]
fn slots_moving_between_live_masters() {
    if !have_redis() {
        return;
    }
    reshard_while_prices_move("reshard", Reshard::Between);
}

/// A master added to a running cluster and given 2,000 slots, as `redis-cli --cluster
/// add-node` and `reshard` do: the publisher meets it first through an ASK (its first slot
/// importing) and then in the slot map, and writes there without starting over.
#[test]
fn a_master_added_and_given_slots() {
    if !have_redis() {
        return;
    }
    reshard_while_prices_move("addnode", Reshard::ToNewMaster);
}

/// A master drained (every slot it has moved to another) and removed from the cluster, as
/// `redis-cli --cluster reshard` and `del-node` do: the publisher drops it from its map in place
/// and never starts over.
#[test]
fn a_master_drained_and_removed() {
    if !have_redis() {
        return;
    }
    reshard_while_prices_move("delnode", Reshard::Drain);
}

/// What [`reshard_while_prices_move`] moves where.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Reshard {
    /// 2,000 slots of one master to another.
    Between,
    /// 2,000 slots of one master to a master added first.
    ToNewMaster,
    /// Every slot of one master to another, then that master removed (and shut down).
    Drain,
}

/// Adds a master that joins the cluster of `nodes` as `redis-cli --cluster add-node` does, and
/// waits until every node knows it.
fn add_master(nodes: &[&RedisNode], tag: &str) -> RedisNode {
    let new = RedisNode::start_free(&tmp(tag), true, &[]).unwrap();
    let out = Command::new("redis-cli")
        .args(["--cluster", "add-node"])
        .arg(new.addr().to_string())
        .arg(nodes[0].addr().to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "redis-cli --cluster add-node: {out:?}"
    );
    // every node knows the new one (each is told where each slot goes), they agree on the
    // slots (what `reshard` checks first), and the new master says the cluster is ok (it
    // takes migrated keys only then, and a master waits 2 s after it starts before it does)
    let deadline = Instant::now() + Duration::from_secs(30);
    let id = node_id(&new);
    let knows = |n: &RedisNode| {
        let all = server::cli(n.port, &["CLUSTER", "NODES"]);
        let lines = all.lines().filter(|l| !l.contains("handshake"));
        lines.count() == nodes.len() + 1 && all.contains(&id)
    };
    let agreed = || {
        if !server::cli(new.port, &["CLUSTER", "INFO"]).contains("cluster_state:ok")
            || !nodes.iter().all(|n| knows(n))
        {
            return false;
        }
        let c = Command::new("redis-cli")
            .args(["--cluster", "check"])
            .arg(new.addr().to_string())
            .output()
            .unwrap();
        let masters = format!("in {} masters", nodes.len() + 1);
        c.status.success() && String::from_utf8_lossy(&c.stdout).contains(&masters)
    };
    while !agreed() {
        assert!(
            Instant::now() < deadline,
            "the new master did not join in 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    new
}

/// Moves slots of the master that holds slot 0 to another master as `how` says while prices
/// move: the symbols whose slots stay put never go stale, none is ever shown fresh with an
/// older value, all end fresh and current, and the publisher follows every map in place.
fn reshard_while_prices_move(tag: &str, how: Reshard) {
    let nodes = cluster(tag);
    let t = Table::new(&format!("redis-{tag}"), 200);
    let seeds: Vec<SocketAddr> = nodes.iter().map(RedisNode::addr).collect();
    let discover =
        || gateway::redis::discover(&seeds, Duration::from_secs(2), &Default::default()).unwrap();
    let keys = gateway::redis::Keys::new("quotes");
    let symbols: Vec<String> = t.quotes.iter().map(|q| q.symbol_str()).collect();
    let owners = |topo: &gateway::redis::cluster::Topology| -> Vec<SocketAddr> {
        symbols
            .iter()
            .map(|s| topo.nodes[topo.node_of(keys.quote(s).as_bytes())])
            .collect()
    };
    let before = owners(&discover());
    let publisher = PubThread::spawn(&t.path, seeds.clone());
    let remote = Remote::start(seeds.clone(), 2_000);
    wait_symbols(remote.addr(), 200);
    let mut c = View::subscribe(remote.addr(), &symbols);
    becomes_current_never_wrong(&mut c, &truth(&t), "before the resharding");

    // prices move all along: every symbol's volume goes up every 10 ms
    let moving = Arc::new(AtomicBool::new(true));
    let mover = {
        let (moving, mut t) = (moving.clone(), t);
        std::thread::spawn(move || {
            while moving.load(Ordering::Relaxed) {
                for i in 0..t.quotes.len() {
                    t.set(i, |q| q.volume += 1);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            t
        })
    };
    // the first 2,000 slots of the master that holds slot 0 (or all of them) move to another
    let everyone: Vec<&RedisNode> = nodes.iter().collect();
    let added = (how == Reshard::ToNewMaster).then(|| add_master(&everyone, &format!("{tag}-new")));
    let (from, to) = (
        node_id(&nodes[0]),
        node_id(added.as_ref().unwrap_or(&nodes[1])),
    );
    let slots = match how {
        Reshard::Drain => {
            let topo = discover();
            let k = topo.index_of(nodes[0].addr()).unwrap();
            topo.owner.iter().filter(|&&o| o as usize == k).count()
        }
        _ => 2000,
    };
    let log = tmp(&format!("{tag}-reshard.log"));
    let mut reshard = Command::new("redis-cli")
        .args(["--cluster", "reshard", &nodes[0].addr().to_string()])
        .args(["--cluster-from", &from, "--cluster-to", &to])
        .args(["--cluster-slots", &slots.to_string(), "--cluster-yes"])
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // the highest volume each symbol was shown fresh with, and the symbols shown stale
    let mut top: HashMap<String, u64> = HashMap::new();
    let mut backwards = Vec::new();
    let mut went_stale: HashSet<String> = HashSet::new();
    let mut check = |s: &str, m: &Map<String, Value>| {
        if m["stale"] == true {
            went_stale.insert(s.to_string());
            return;
        }
        let vol = m["vol"].as_u64().unwrap();
        let t = top.entry(s.to_string()).or_default();
        if vol < *t {
            backwards.push(format!("{s}: volume {vol} fresh after {t}"));
        }
        *t = vol.max(*t);
    };
    let done = loop {
        if let Some(st) = reshard.try_wait().unwrap() {
            break st;
        }
        for s in c.read() {
            check(&s, &c.q[&s]);
        }
    };
    let said = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    let tail: Vec<&str> = said.lines().rev().take(8).collect();
    assert!(
        done.success(),
        "redis-cli --cluster reshard: {done}; its last lines: {tail:?}"
    );
    if how == Reshard::Drain {
        let out = Command::new("redis-cli")
            .args(["--cluster", "del-node", &nodes[1].addr().to_string(), &from])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "redis-cli --cluster del-node: {out:?}"
        );
    }
    moving.store(false, Ordering::Relaxed);
    let mut t = mover.join().unwrap();
    let after = owners(&discover());
    let moved: HashSet<&String> = (0..symbols.len())
        .filter(|&i| before[i] != after[i])
        .map(|i| &symbols[i])
        .collect();
    assert!(!moved.is_empty(), "no symbol's slot moved");
    for i in 0..t.quotes.len() {
        t.set(i, |q| q.volume += 1_000);
    }
    let now = truth(&t);
    let reached = c.until(30, &mut check, |v| all_current(&now, v));
    assert!(
        backwards.is_empty(),
        "old values shown fresh: {backwards:?}"
    );
    assert!(
        reached,
        "after the resharding: every symbol fresh and current"
    );
    let mut stayed_put_stale: Vec<&String> =
        went_stale.iter().filter(|s| !moved.contains(s)).collect();
    stayed_put_stale.sort();
    assert!(
        stayed_put_stale.is_empty(),
        "stale though their slots stayed put ({} of {}): {stayed_put_stale:?}",
        stayed_put_stale.len(),
        symbols.len() - moved.len()
    );
    // what an operator sees of it (the replica's counters, which `/metrics` copies each second)
    let (changes, redirects) = (
        remote.replica_metric("gateway_redis_slot_map_changes_total"),
        remote.replica_metric("gateway_redis_redirects_total"),
    );
    assert!(changes > 0 && redirects > 0, "{changes} {redirects}");
    // the publisher followed each new map in place: no connection dropped, no epoch begun,
    // only the moved symbols written again
    let s = publisher.stop();
    // a drained master shut down may be found gone by a write before the map without it is
    // read: that node alone is dropped, once
    let failures = if how == Reshard::Drain { 1 } else { 0 };
    assert!(
        s.connects == 1 && s.failures <= failures && s.republished == 1 && s.remaps > 0,
        "the publisher started over during the resharding: {s:?}"
    );
    assert_eq!(
        s.joined,
        u64::from(how == Reshard::ToNewMaster),
        "masters joined in place: {s:?}"
    );
    eprintln!(
        "{} of 200 symbols moved master, {} of them shown stale on the way; {changes} map changes followed, {redirects} redirects; the publisher followed {} maps in place, wrote {} changes again after MOVED and followed {} ASK",
        moved.len(),
        went_stale.len(),
        s.remaps,
        s.moved,
        s.asked
    );
}

/// A `gateway publish` process whose stderr lines come through a channel.
struct PubProc {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl PubProc {
    fn spawn(table: &Path, url: &str) -> PubProc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_gateway"))
            .args(["publish", "--quotes"])
            .arg(table)
            .args(["--redis", url])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let err = child.stderr.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for l in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        PubProc { child, lines }
    }

    /// Waits for a line containing `pat`; the lines before it.
    fn until(&self, pat: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains(pat) => return seen,
                Ok(l) => seen.push(l),
                Err(_) => panic!("no line with {pat:?}; saw {seen:?}"),
            }
        }
    }

    fn signal(&mut self, sig: &str) {
        let _ = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for PubProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two `gateway publish` beside one quote table and one Redis: the second waits while the first
/// holds the lease (one writer at a time); the first killed, the second takes over within the
/// lease and the remote client shows the values of now, never an old one fresh; the second
/// stopped cleanly (SIGTERM) gives the lease up, and a third takes over without waiting.
#[test]
fn a_second_publisher_waits_and_takes_over() {
    if !have_redis() {
        return;
    }
    let node = single("standby");
    let url = format!("redis://{}", node.addr());
    let mut t = Table::new("redis-standby", 10);
    let mut a = PubProc::spawn(&t.path, &url);
    a.until("connected to");
    let remote = Remote::start(vec![node.addr()], 1_000);
    wait_symbols(remote.addr(), 10);
    let symbols: Vec<String> = t.quotes.iter().map(|q| q.symbol_str()).collect();
    let mut c = View::subscribe(remote.addr(), &symbols);
    becomes_current_never_wrong(&mut c, &truth(&t), "one publisher");

    let b = PubProc::spawn(&t.path, &url);
    let before = b.until("another publisher");
    assert!(
        before.iter().all(|l| !l.contains("connected to")),
        "{before:?}"
    );
    let holder = server::cli(node.port, &["GET", "quotes:publisher"]);
    assert!(
        holder.contains(&format!(":{}:", a.child.id())),
        "the first still holds the lease: {holder}"
    );
    for i in 0..10 {
        t.set(i, |q| q.volume += 10);
    }
    becomes_current_never_wrong(&mut c, &truth(&t), "the second waiting");

    a.signal("-KILL");
    for i in 0..10 {
        t.set(i, |q| q.volume += 10);
    }
    b.until("connected to");
    becomes_current_never_wrong(&mut c, &truth(&t), "after the takeover");

    let mut b = b;
    b.signal("-TERM");
    let third = PubProc::spawn(&t.path, &url);
    let before = third.until("connected to");
    assert!(
        before.iter().all(|l| !l.contains("another publisher")),
        "the lease was given up: {before:?}"
    );
    for i in 0..10 {
        t.set(i, |q| q.volume += 10);
    }
    becomes_current_never_wrong(&mut c, &truth(&t), "after a clean stop and a new publisher");
}

/// The commands a Redis node runs, as its `MONITOR` reports them, in the order it ran them.
struct Monitor(std::io::BufReader<TcpStream>);

impl Monitor {
    fn attach(addr: SocketAddr) -> Monitor {
        use std::io::{BufRead, Write};
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"MONITOR\r\n").unwrap();
        let mut r = std::io::BufReader::new(s);
        let mut ok = String::new();
        r.read_line(&mut ok).unwrap();
        assert_eq!(ok.trim_end(), "+OK");
        Monitor(r)
    }

    /// One `+TIME [DB ADDR] "ARG" "ARG" ...` line's arguments (escapes undone loosely: enough
    /// for the plain ASCII of command names, keys and channels).
    fn next(&mut self) -> Vec<String> {
        use std::io::BufRead;
        let mut line = String::new();
        self.0
            .read_line(&mut line)
            .expect("a MONITOR line within 10 s");
        let mut args = Vec::new();
        let mut rest = line[line.find(']').expect("monitor line") + 1..].chars();
        while let Some(c) = rest.next() {
            if c != '"' {
                continue;
            }
            let mut a = String::new();
            while let Some(c) = rest.next() {
                match c {
                    '"' => break,
                    '\\' => {
                        if rest.next() == Some('x') {
                            rest.next();
                            rest.next();
                        }
                        a.push('?');
                    }
                    c => a.push(c),
                }
            }
            args.push(a);
        }
        args
    }
}

/// Replicas subscribe and then load the keys, so the publisher must write a symbol's key before
/// it publishes the change (else a replica subscribing in between loads the value before and
/// never hears of the change) and must announce a new symbol only once its key holds a value.
/// Redis's own `MONITOR` gives the order it ran the commands in, on one server and on every
/// master of a cluster.
#[test]
fn each_key_is_written_before_its_change_is_published_or_announced() {
    if !have_redis() {
        return;
    }
    let one = single("order");
    let three = cluster("order");
    for nodes in [
        vec![one.addr()],
        three.iter().map(RedisNode::addr).collect(),
    ] {
        let mut monitors: Vec<Monitor> = nodes.iter().map(|&a| Monitor::attach(a)).collect();
        let mut p = Publisher::new(PublisherCfg::new(nodes.clone()));
        let syms: Vec<String> = (0..40).map(|i| format!("ORD{i}")).collect();
        let quote = |s: &str, bid: u32| Quote {
            symbol: gateway::redis::padded(s.as_bytes()),
            bid: Some((bid, 100)),
            state: b'T',
            ..Quote::default()
        };
        for round in 0..3u32 {
            for s in &syms {
                p.offer(&quote(s, 1_000 + round));
            }
            // the first connects and writes them all as its rewrite
            let n = p.flush();
            assert!(p.connected());
            assert_eq!(n, if round == 0 { 0 } else { syms.len() }, "round {round}");
        }
        // everything the publisher sent has run (flush read every reply): a mark after it on
        // each node ends that node's share
        for &a in &nodes {
            let port = a.port().to_string();
            let out = Command::new("redis-cli")
                .args(["-p", &port, "ECHO", "end-of-order-test"])
                .output()
                .unwrap();
            assert!(out.status.success());
        }
        let keys = gateway::redis::Keys::new("quotes");
        let sym_of = |key: &str| syms.iter().find(|s| key == keys.quote(s)).cloned();
        // per symbol: (key writes, changes published, announced), in the order Redis ran them
        let mut seen: HashMap<String, (u32, u32, bool)> = HashMap::new();
        for m in &mut monitors {
            loop {
                let args = m.next();
                let cmd = args
                    .first()
                    .map(|c| c.to_ascii_uppercase())
                    .unwrap_or_default();
                match cmd.as_str() {
                    "ECHO" if args[1] == "end-of-order-test" => break,
                    "MSET" | "SET" => {
                        for k in args[1..].iter().step_by(2) {
                            if let Some(s) = sym_of(k) {
                                seen.entry(s).or_default().0 += 1;
                            }
                        }
                    }
                    "PUBLISH" if args[1] == keys.new_symbols() => {
                        let s = args[2].trim_end().to_string();
                        let e = seen.entry(s.clone()).or_default();
                        assert!(e.0 > 0, "{s} announced before its key was written");
                        e.2 = true;
                    }
                    "PUBLISH" | "SPUBLISH" => {
                        if let Some(s) = sym_of(&args[1]) {
                            let e = seen.entry(s.clone()).or_default();
                            e.1 += 1;
                            assert!(e.0 >= e.1, "{s}: change {} published first", e.1);
                        }
                    }
                    _ => {}
                }
            }
        }
        assert_eq!(seen.len(), syms.len(), "{seen:?}");
        for (s, (writes, published, announced)) in &seen {
            assert_eq!((*writes, *published), (3, 3), "{s}");
            assert!(announced, "{s} announced");
        }
    }
}

/// The publisher's heartbeats as a subscriber sees them.
struct Heartbeats(std::io::BufReader<TcpStream>, String);

impl Heartbeats {
    fn subscribe(addr: SocketAddr, channel: &str) -> Heartbeats {
        use std::io::Write;
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(s, "SUBSCRIBE {channel}\r\n").unwrap();
        let mut h = Heartbeats(std::io::BufReader::new(s), channel.to_string());
        h.next(); // the subscription's confirmation names the channel too
        h
    }

    /// Waits for the next one (10 s at most).
    fn next(&mut self) {
        use std::io::BufRead;
        let mut line = String::new();
        while line.trim_end() != self.1 {
            line.clear();
            let n = self
                .0
                .read_line(&mut line)
                .expect("a heartbeat within 10 s");
            assert!(n > 0, "the subscription closed");
        }
    }
}

/// A slot left half-moved (a resharding interrupted between `MIGRATE` and `SETSLOT NODE`, until
/// an operator runs `redis-cli --cluster fix`): its owner answers ASK for the keys already on
/// the importing node. The publisher follows the redirect (ASKING, then the write) for those
/// keys alone, its lease's included; every other symbol goes on as before, and the half-moved
/// symbol too.
#[test]
fn a_slot_left_half_moved_does_not_stop_publishing() {
    if !have_redis() {
        return;
    }
    half_moved("halfmoved", 0);
}

/// The same, the two slots half-moved to a master just added, which owns no slot yet and so is
/// in no slot map: the publisher follows the ASKs over a connection of its own to that node,
/// takes the node into its map in place once the moves are finished, and never starts over.
#[test]
fn a_slot_half_moved_to_a_master_just_added() {
    if !have_redis() {
        return;
    }
    half_moved("halfnew", 1);
}

/// The same with two masters just added, a symbol's slot half-moved to each (and the lease's
/// to the second): the publisher writes to both over connections of their own at once.
#[test]
fn slots_half_moved_to_two_masters_just_added() {
    if !have_redis() {
        return;
    }
    half_moved("halftwo", 2);
}

/// Half-moves the first symbol's slot and the lease's (and with two new masters the second
/// symbol's too) to another master, or to `new_masters` masters added first.
fn half_moved(tag: &str, new_masters: usize) {
    let nodes = cluster(tag);
    let mut added: Vec<RedisNode> = Vec::new();
    for i in 0..new_masters {
        let now: Vec<&RedisNode> = nodes.iter().chain(&added).collect();
        let n = add_master(&now, &format!("{tag}-new{i}"));
        added.push(n);
    }
    let node = |port: u16| nodes.iter().chain(&added).find(|n| n.port == port).unwrap();
    let mut t = Table::new(&format!("redis-{tag}"), 20);
    let seeds: Vec<SocketAddr> = nodes.iter().map(RedisNode::addr).collect();
    let topo =
        gateway::redis::discover(&seeds, Duration::from_secs(2), &Default::default()).unwrap();
    let keys = gateway::redis::Keys::new("quotes");
    let symbols: Vec<String> = t.quotes.iter().map(|q| q.symbol_str()).collect();
    // the bar log the publisher follows: the first symbol's bars close while its slot is
    // half-moved
    let mut bar_log = book::barlog::BarLogWriter::create(&book::barlog::beside(&t.path)).unwrap();
    let publisher = PubThread::spawn(&t.path, seeds.clone());
    let remote = Remote::start(seeds.clone(), 1_000);
    wait_symbols(remote.addr(), 20);
    let mut c = View::subscribe(remote.addr(), &symbols);
    becomes_current_never_wrong(&mut c, &truth(&t), "before");

    // two slots, the first symbol's (its quote and its bars) and the publisher lease's, and
    // with two new masters the second symbol's: MIGRATING on the owner, IMPORTING on another
    // master (a new one when there are), and their keys moved over, but never handed over
    let key = keys.quote(&symbols[0]);
    let half: Vec<(String, Option<&RedisNode>)> = match new_masters {
        0 => vec![(key.clone(), None), (keys.lease(), None)],
        1 => vec![
            (key.clone(), Some(&added[0])),
            (keys.lease(), Some(&added[0])),
        ],
        _ => vec![
            (key.clone(), Some(&added[0])),
            (keys.quote(&symbols[1]), Some(&added[1])),
            (keys.lease(), Some(&added[1])),
        ],
    };
    let mut moves: Vec<(String, u16, u16)> = Vec::new(); // (slot, from, to)
    for (k, to) in half {
        let owner = topo.nodes[topo.node_of(k.as_bytes())].port();
        let from = nodes.iter().position(|n| n.port == owner).unwrap();
        let to = to.unwrap_or(&nodes[(from + 1) % nodes.len()]);
        let slot = gateway::redis::cluster::key_slot(k.as_bytes()).to_string();
        assert!(moves.iter().all(|m| m.0 != slot), "two keys in slot {slot}");
        let in_slot = migrate_slot(&nodes[from], to, &slot);
        assert!(in_slot.contains(&k), "{in_slot}");
        moves.push((slot, owner, to.port));
    }
    // prices move for 2 s, longer than the remote's heartbeat timeout, and the publisher's
    // heartbeats go on (none would come while it started over on every redirect)
    let mut hb = Heartbeats::subscribe(nodes[0].addr(), &keys.heartbeat());
    let first = t.quotes[0].symbol;
    let bar = |round: u64| common::bar(first, 1, round);
    for round in 0..8 {
        for i in 0..t.quotes.len() {
            t.set(i, |q| q.volume += 100);
        }
        bar_log.append(bar(round)).unwrap();
        bar_log.flush().unwrap();
        becomes_current_never_wrong(&mut c, &truth(&t), &format!("half-moved, round {round}"));
        hb.next();
    }
    assert_eq!(remote.health(), gateway::source::Health::Live);
    // each bar appended to its list where the list is now, once (read on the importing node)
    let t2 = Duration::from_secs(2);
    let to = node(moves[0].2).addr();
    let mut conn = gateway::redis::conn::Conn::connect(to, t2, t2, &Default::default()).unwrap();
    let list = keys.bars(&symbols[0], 1);
    let want: Vec<Vec<u8>> = (0..8).map(|r| bar(r).to_bytes().to_vec()).collect();
    let bars_there = |conn: &mut gateway::redis::conn::Conn| {
        conn.call(&[b"ASKING"], t2, |_| ()).unwrap();
        lrange(conn, &list)
    };
    comes_to("the bars on the importing node", &want, || {
        bars_there(&mut conn)
    });
    // the key was written where it is now (ASKING, then SET on the importing node)
    conn.call(&[b"ASKING"], t2, |_| ()).unwrap();
    let held = conn
        .call(&[b"GET", key.as_bytes()], t2, |r| {
            r.bytes().map(<[u8]>::to_vec)
        })
        .unwrap()
        .and_then(|v| gateway::redis::decode(&v))
        .expect("the importing node holds the key");
    assert_eq!(held.1.volume, t.quotes[0].volume, "and its latest value");

    // the operator finishes the moves: the slots are the importing nodes'
    for (slot, from, to) in &moves {
        let to_id = node_id(node(*to));
        cli_ok(node(*to), &["CLUSTER", "SETSLOT", slot, "NODE", &to_id]);
        cli_ok(node(*from), &["CLUSTER", "SETSLOT", slot, "NODE", &to_id]);
    }
    for i in 0..t.quotes.len() {
        t.set(i, |q| q.volume += 100);
    }
    becomes_current_never_wrong(&mut c, &truth(&t), "after the move was finished");
    let s = publisher.stop();
    assert_eq!(bars_there(&mut conn), want, "the bars, each once");
    assert!(
        s.connects == 1 && s.failures == 0 && s.republished == 1 && s.asked > 0,
        "the publisher started over, or never followed an ASK: {s:?}"
    );
    assert_eq!(
        s.joined, new_masters as u64,
        "masters joined in place: {s:?}"
    );
}

/// Every item of the list at `key` on `conn`'s node.
fn lrange(conn: &mut gateway::redis::conn::Conn, key: &str) -> Vec<Vec<u8>> {
    let t = Duration::from_secs(2);
    conn.call(&[b"LRANGE", key.as_bytes(), b"0", b"-1"], t, |r| {
        let items = r.items().unwrap_or(&[]);
        items
            .iter()
            .filter_map(|x| x.bytes().map(<[u8]>::to_vec))
            .collect::<Vec<_>>()
    })
    .unwrap()
}

/// A list as the node at `addr` holds it, over a connection of its own: `None` when the node
/// cannot be reached or answers with an error (a redirect; CLUSTERDOWN while a master rejoins).
fn list_at(addr: SocketAddr, key: &str) -> Option<Vec<Vec<u8>>> {
    list_read(addr, key, false)
}

/// The same on a master importing the list's slot (after `ASKING`).
fn list_asked(addr: SocketAddr, key: &str) -> Option<Vec<Vec<u8>>> {
    list_read(addr, key, true)
}

fn list_read(addr: SocketAddr, key: &str, asking: bool) -> Option<Vec<Vec<u8>>> {
    let t2 = Duration::from_secs(2);
    let mut c = gateway::redis::conn::Conn::connect(addr, t2, t2, &Default::default()).ok()?;
    if asking {
        c.call(&[b"ASKING"], t2, |_| ()).ok()?;
    }
    c.call(&[b"LRANGE", key.as_bytes(), b"0", b"-1"], t2, |r| {
        r.items().map(|xs| {
            xs.iter()
                .filter_map(|x| x.bytes().map(<[u8]>::to_vec))
                .collect::<Vec<_>>()
        })
    })
    .ok()
    .flatten()
}

/// The starts of the 1-second bars a gateway charts for `sym` (its latest 600; none while it
/// refuses the chart).
fn chart_starts(addr: SocketAddr, sym: &str) -> Vec<u64> {
    let (_, body) = common::http_get(
        addr,
        &format!("/v1/bars?symbol={sym}&interval=1s&limit=600"),
    );
    serde_json::from_str::<Value>(&body).unwrap()["bars"]
        .as_array()
        .map(|a| a.iter().map(|x| x["t"].as_u64().unwrap()).collect())
        .unwrap_or_default()
}

/// A bar test's setup: one Redis, a quote table of 3 symbols, the second symbol's 1-second bar
/// list, and the bar log beside the table the publisher follows.
struct BarCase {
    node: RedisNode,
    t: Table,
    /// The symbol whose bars the tests write.
    b: [u8; 8],
    list: String,
    log: book::barlog::BarLogWriter,
}

fn bar_case(tag: &str) -> BarCase {
    let node = single(tag);
    let t = Table::new(&format!("redis-{tag}"), 3);
    let b = t.quotes[1].symbol;
    let list = gateway::redis::Keys::new("quotes").bars(&t.quotes[1].symbol_str(), 1);
    let log = book::barlog::BarLogWriter::create(&book::barlog::beside(&t.path)).unwrap();
    BarCase {
        node,
        t,
        b,
        list,
        log,
    }
}

/// Whether `n`'s mark key `mark` names its run now: the publisher knows its lists whole.
fn marked_whole(n: &RedisNode, mark: &str) -> bool {
    let info = server::cli(n.port, &["INFO", "server"]);
    let id = info.lines().find_map(|l| l.strip_prefix("run_id:"));
    id.is_some_and(|id| server::cli(n.port, &["GET", mark]).trim() == id.trim())
}

/// A connection to `node` for reading lists.
fn list_reader(node: &RedisNode) -> gateway::redis::conn::Conn {
    let t2 = Duration::from_secs(2);
    gateway::redis::conn::Conn::connect(node.addr(), t2, t2, &Default::default()).unwrap()
}

/// Bars `ks` of `sym`'s 1-second series (`common::bar`), as their list holds them.
fn bar_bytes(sym: [u8; 8], ks: std::ops::Range<u64>) -> Vec<Vec<u8>> {
    ks.map(|k| common::bar(sym, 1, k).to_bytes().to_vec())
        .collect()
}

/// Appends bar `k` of every symbol's 1-second series to a bar log, and flushes it.
fn log_round(log: &mut book::barlog::BarLogWriter, quotes: &[Quote], k: u64) {
    for q in quotes {
        log.append(common::bar(q.symbol, 1, k)).unwrap();
    }
    log.flush().unwrap();
}

/// Appends bars `ks` of `sym`'s 1-second series to a bar log, and flushes it.
fn log_bars(log: &mut book::barlog::BarLogWriter, sym: [u8; 8], ks: std::ops::Range<u64>) {
    for k in ks {
        log.append(common::bar(sym, 1, k)).unwrap();
    }
    log.flush().unwrap();
}

/// A bar Redis refuses (here its list key is a string, someone else's) is dropped and counted,
/// and the node stays up: every other bar is appended once. Before, the refusal failed the
/// node's whole batch: the publisher dropped the node (its symbols stale), reconnected, and wrote
/// every bar of the batch again, appending twice the ones Redis had taken, at every retry.
#[test]
fn a_bar_redis_refuses_is_dropped_and_the_others_are_appended_once() {
    if !have_redis() {
        return;
    }
    let node = single("bar-refused");
    let t = Table::new("redis-bar-refused", 3);
    let keys = gateway::redis::Keys::new("quotes");
    let (a, b) = (t.quotes[0].symbol, t.quotes[1].symbol);
    let (sym_a, sym_b) = (t.quotes[0].symbol_str(), t.quotes[1].symbol_str());
    let theirs = keys.bars(&sym_a, 1);
    cli_ok(&node, &["SET", &theirs, "not a list"]);
    let mut bar_log = book::barlog::BarLogWriter::create(&book::barlog::beside(&t.path)).unwrap();
    let publisher = PubThread::spawn(&t.path, vec![node.addr()]);
    let t2 = Duration::from_secs(2);
    let mut conn =
        gateway::redis::conn::Conn::connect(node.addr(), t2, t2, &Default::default()).unwrap();
    let ours = keys.bars(&sym_b, 1);
    let want = |rounds: u64| bar_bytes(b, 0..rounds);
    for k in 0..4 {
        bar_log.append(common::bar(a, 1, k)).unwrap();
        bar_log.append(common::bar(b, 1, k)).unwrap();
    }
    bar_log.flush().unwrap();
    comes_to("the other symbol's bars", &want(4), || {
        lrange(&mut conn, &ours)
    });
    // one more, so the publisher has flushed bars again since (a retry of the first batch
    // would have come before it)
    log_bars(&mut bar_log, b, 4..5);
    comes_to("the other symbol's bars", &want(5), || {
        lrange(&mut conn, &ours)
    });
    let s = publisher.stop();
    assert_eq!(lrange(&mut conn, &ours), want(5), "each bar once");
    assert_eq!(
        server::cli(node.port, &["GET", &theirs]).trim(),
        "not a list"
    );
    assert!(
        s.bars_refused == 4 && s.bars == 5 && s.connects == 1 && s.failures == 0,
        "the refused bars counted, the node never dropped: {s:?}"
    );
}

/// A publisher restarted goes on where the last one stopped: the key `quotes:barlog` says how
/// far into the book's bar log Redis has the bars, and the new publisher skips what comes
/// before. Before, it read the log from the start and appended every bar of the day to its list
/// again (each chart over Redis showed the day twice, the second run going back in time).
#[test]
fn a_restarted_publisher_appends_no_bar_again() {
    if !have_redis() {
        return;
    }
    let BarCase {
        node,
        t,
        b,
        list,
        log: mut bar_log,
    } = bar_case("bar-restart");
    let mut conn = list_reader(&node);
    let want = |rounds: u64| bar_bytes(b, 0..rounds);
    let append = |log: &mut book::barlog::BarLogWriter, ks| log_bars(log, b, ks);
    append(&mut bar_log, 0..5);
    let first = PubThread::spawn(&t.path, vec![node.addr()]);
    comes_to("the first publisher's bars", &want(5), || {
        lrange(&mut conn, &list)
    });
    let s1 = first.stop();
    assert_eq!(s1.bars, 5, "{s1:?}");
    // two more while no publisher runs, then a new one
    append(&mut bar_log, 5..7);
    let second = PubThread::spawn(&t.path, vec![node.addr()]);
    comes_to("the second publisher's bars", &want(7), || {
        lrange(&mut conn, &list)
    });
    // one more, so the second has flushed bars since (anything appended again would be in
    // the list before it)
    append(&mut bar_log, 7..8);
    comes_to("a new bar", &want(8), || lrange(&mut conn, &list));
    let s2 = second.stop();
    assert_eq!(lrange(&mut conn, &list), want(8), "each bar once");
    assert!(
        s2.bars == 3 && s2.bars_skipped == 5,
        "the second publisher wrote only the bars the first had not: {s2:?}"
    );
}

/// The last publisher appended bars past the position it wrote last (its connection died, or
/// it did, before that batch's position went in): a new one checks what follows the position
/// against the lists and appends none of those bars again. Before, they were in their list
/// twice: at least once.
#[test]
fn bars_appended_past_the_saved_position_are_not_appended_again() {
    if have_redis() {
        let s = bars_in_past_the_position("bar-past-position", 7, 8);
        assert!(s.bars == 1 && s.bars_skipped == 7, "{s:?}");
    }
}

/// The same with many more bars in the list past the position than a flush checks (a standby
/// taking over with its own book's log of the day is this, all day long): every one is checked
/// before any goes out. Before, only the first batch was: the bars after it were appended
/// again.
#[test]
fn a_long_run_of_bars_past_the_position_is_checked_all_the_way() {
    if have_redis() {
        let in_list = 5 + 3 * gateway::redis::publish::CHECKED_SERIES_PER_FLUSH as u64;
        let s = bars_in_past_the_position("bar-long-past-position", in_list, 300);
        assert!(
            s.bars == 300 - in_list && s.bars_skipped == in_list,
            "{s:?}"
        );
    }
}

/// A first publisher writes bars 0..5 (and the position after them); then bars up to `logged`
/// are in the log and bars 5..`in_list` went into the list without the position moving. A
/// second publisher ends with every bar in the list once; what it counted.
fn bars_in_past_the_position(tag: &str, in_list: u64, logged: u64) -> PubStats {
    let BarCase {
        node,
        t,
        b,
        list,
        log: mut bar_log,
    } = bar_case(tag);
    let t2 = Duration::from_secs(2);
    let mut conn = list_reader(&node);
    let want = |ks| bar_bytes(b, ks);
    log_bars(&mut bar_log, b, 0..5);
    let first = PubThread::spawn(&t.path, vec![node.addr()]);
    comes_to("the first publisher's bars", &want(0..5), || {
        lrange(&mut conn, &list)
    });
    drop(first);
    log_bars(&mut bar_log, b, 5..logged);
    for r in bar_bytes(b, 5..in_list) {
        conn.call(&[b"RPUSH", list.as_bytes(), &r], t2, |_| ())
            .unwrap();
    }
    let second = PubThread::spawn(&t.path, vec![node.addr()]);
    let starts = |bars: Vec<Vec<u8>>| -> Vec<u64> {
        let start = |b: &Vec<u8>| book::barlog::record_from_bytes(b).bar.start_ns;
        bars.iter().map(start).collect()
    };
    comes_to("each bar once", &starts(want(0..logged)), || {
        starts(lrange(&mut conn, &list))
    });
    assert!(
        lrange(&mut conn, &list) == want(0..logged),
        "the bars' bytes"
    );
    second.stop()
}

/// More bars to write than may wait in memory (a small bound here, 1M by default): the
/// publisher reads the log on only as they go out, so every bar reaches its list, at first and
/// when Redis restarted empty has them all restored. Before, the oldest waiting past the bound
/// were dropped.
#[test]
fn bars_beyond_what_may_wait_are_read_later_not_dropped() {
    if !have_redis() {
        return;
    }
    let BarCase {
        mut node,
        t,
        b,
        list,
        log: mut bar_log,
    } = bar_case("bar-room");
    log_bars(&mut bar_log, b, 0..100);
    let mut cfg = PublisherCfg::new(vec![node.addr()]);
    cfg.max_pending_bars = 16;
    let publisher = PubThread::spawn_with(&t.path, cfg);
    let mut conn = list_reader(&node);
    comes_to("every bar in its list", &bar_bytes(b, 0..100), || {
        lrange(&mut conn, &list)
    });
    node.kill();
    node.restart().unwrap();
    comes_to("every bar restored", &bar_bytes(b, 0..100), || {
        list_at(node.addr(), &list).unwrap_or_default()
    });
    let s = publisher.stop();
    assert!(s.bars_dropped == 0 && s.bar_restores == 1, "{s:?}");
}

/// Redis restarted empty loses the bar lists; the publisher, finding `quotes:barlog` gone
/// where it had written it, restores them from the book's bar log without publishing them
/// again: a remote gateway that was up keeps each bar once, and the lists hold the history for
/// one that loads them. Before, the history was gone from Redis until new bars were made.
#[test]
fn bars_redis_lost_are_restored_and_not_published_again() {
    if !have_redis() {
        return;
    }
    let BarCase {
        mut node,
        t,
        b,
        list,
        log: mut bar_log,
    } = bar_case("bar-restore");
    let sym = t.quotes[1].symbol_str();
    let want = |rounds: u64| bar_bytes(b, 0..rounds);
    let list_now = |node: &RedisNode| list_at(node.addr(), &list).unwrap_or_default();
    log_bars(&mut bar_log, b, 0..5);
    let publisher = PubThread::spawn(&t.path, vec![node.addr()]);
    let remote = Remote::start(vec![node.addr()], 600_000);
    let charted = |remote: &Remote| chart_starts(remote.addr(), &sym);
    let starts =
        |n: u64| -> Vec<u64> { (0..n).map(|k| common::bar(b, 1, k).bar.start_ns).collect() };
    comes_to("the bars in Redis", &want(5), || list_now(&node));
    comes_to("the remote chart", &starts(5), || charted(&remote));
    node.kill();
    node.restart().unwrap();
    comes_to("the bars restored", &want(5), || list_now(&node));
    // a new bar: published, and charted once after the ones the remote gateway kept
    log_bars(&mut bar_log, b, 5..6);
    comes_to("the bars in Redis", &want(6), || list_now(&node));
    comes_to("the remote chart", &starts(6), || charted(&remote));
    drop(remote);
    let s = publisher.stop();
    assert!(s.bar_restores == 1 && s.bars == 11, "{s:?}");
}

/// A restore of a log longer than its lists keep appends only what they keep: each series'
/// latest 600 bars (a list trims the rest at once). Before, it appended the whole log again,
/// a busy day's in a quarter of an hour, with every new bar waiting behind it.
#[test]
fn a_restore_appends_only_what_the_lists_keep() {
    if !have_redis() {
        return;
    }
    let BarCase {
        mut node,
        t,
        b,
        list,
        log: mut bar_log,
    } = bar_case("bar-restore-trim");
    let a = t.quotes[0].symbol;
    let short = gateway::redis::Keys::new("quotes").bars(&t.quotes[0].symbol_str(), 1);
    log_bars(&mut bar_log, b, 0..1_500);
    log_bars(&mut bar_log, a, 0..100);
    let publisher = PubThread::spawn(&t.path, vec![node.addr()]);
    let list_now = |node: &RedisNode, l: &str| list_at(node.addr(), l).unwrap_or_default();
    comes_to("the latest 600 bars", &bar_bytes(b, 900..1_500), || {
        list_now(&node, &list)
    });
    comes_to("the short list", &bar_bytes(a, 0..100), || {
        list_now(&node, &short)
    });
    node.kill();
    node.restart().unwrap();
    comes_to("the latest 600 restored", &bar_bytes(b, 900..1_500), || {
        list_now(&node, &list)
    });
    comes_to("the short list restored", &bar_bytes(a, 0..100), || {
        list_now(&node, &short)
    });
    // a list known short enough takes no trim: the restarted Redis was asked to trim only
    // each list's first run (its length not known yet), not every bar (700)
    let calls = |cmd: &str| command_calls(&node, cmd);
    // and each list's bars go in as runs, a few pushes a list, not one a bar
    assert!(calls("rpush") <= 4, "{:?}", calls("rpush"));
    assert!(calls("ltrim") <= 4, "{:?}", calls("ltrim"));
    // a new bar after the restore goes on the end, trimmed (the list holds 600)
    log_bars(&mut bar_log, b, 1_500..1_501);
    comes_to("the new bar", &bar_bytes(b, 901..1_501), || {
        list_now(&node, &list)
    });
    let s = publisher.stop();
    assert!(
        s.bar_restores == 1 && s.bars_trimmed == 900 && s.bars == 1_600 + 700 + 1,
        "{s:?}"
    );
}

/// How many times `node` ran `cmd` (lower case) since it started (`INFO commandstats`).
fn command_calls(node: &RedisNode, cmd: &str) -> u64 {
    server::cli(node.port, &["INFO", "commandstats"])
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("cmdstat_{cmd}:calls="))
                .and_then(|r| r.split(',').next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// A backlog of bars (here 300 of each of 3 symbols at once: what a publisher starting late in
/// the day, or finding Redis back after a while, has to write) goes in as each list's runs, one
/// push a run and every bar published after its push: a remote gateway up meanwhile charts
/// every bar once from the channel alone (it had read its lists empty), and each list holds
/// each bar once. Before, every bar took a push, a trim and a hash write of its own: three
/// commands or four a bar, about 100,000 bars a second.
#[test]
fn a_backlog_goes_in_as_runs_and_every_bar_is_published_once() {
    if !have_redis() {
        return;
    }
    let BarCase {
        node,
        t,
        log: mut bar_log,
        ..
    } = bar_case("bar-backlog");
    let publisher = PubThread::spawn(&t.path, vec![node.addr()]);
    let remote = Remote::start(vec![node.addr()], 600_000);
    wait_symbols(remote.addr(), 3);
    // every chart read (empty) before the bars come
    for q in &t.quotes {
        comes_to("an empty chart", &"200", || {
            let (st, _) = common::http_get(
                remote.addr(),
                &format!("/v1/bars?symbol={}&interval=1s&limit=600", q.symbol_str()),
            );
            if st.contains("200") { "200" } else { "not yet" }
        });
    }
    let before = (
        command_calls(&node, "rpush"),
        command_calls(&node, "publish"),
    );
    for k in 0..300 {
        log_round(&mut bar_log, &t.quotes, k);
    }
    let keys = gateway::redis::Keys::new("quotes");
    for q in &t.quotes {
        let sym = q.symbol_str();
        let starts: Vec<u64> = (0..300)
            .map(|k| common::bar(q.symbol, 1, k).bar.start_ns)
            .collect();
        comes_to(&format!("{sym}'s remote chart"), &starts, || {
            chart_starts(remote.addr(), &sym)
        });
        comes_to(
            &format!("{sym}'s list"),
            &bar_bytes(q.symbol, 0..300),
            || list_at(node.addr(), &keys.bars(&sym, 1)).unwrap_or_default(),
        );
    }
    let s = publisher.stop();
    drop(remote);
    let pushes = command_calls(&node, "rpush") - before.0;
    let publishes = command_calls(&node, "publish") - before.1;
    // 900 publishes at most 256 commands a flush: a few runs a list
    assert!(pushes <= 12, "{pushes} pushes for 900 bars");
    assert_eq!(publishes, 900, "each bar published once");
    assert!(s.bars == 900 && s.bars_refused == 0, "{s:?}");
}

/// While the publisher restores the lists (Redis restarted empty), a list holds only part of
/// what it will, and the rest goes in unpublished: remote gateways read the lists only once the
/// heartbeat says the restore is over. One that starts mid-restore refuses the chart until
/// then, one that was up shows the chart it had, and both end with the whole chart. Before, the
/// first read part of a list and never got the rest: a hole for good (here it charted
/// 400..~660, then 1,000..).
#[test]
fn remote_gateways_read_lists_only_once_a_restore_is_over() {
    if !have_redis() {
        return;
    }
    let BarCase {
        mut node,
        t,
        b,
        list,
        log: mut bar_log,
    } = bar_case("bar-restore-midway");
    let sym = t.quotes[1].symbol_str();
    log_bars(&mut bar_log, b, 0..1_000);
    // a publisher stepped by hand: one flush (at most 64 bars) a step
    let mut src = ShmSource::new(t.path.clone());
    let mut cfg = PublisherCfg::new(vec![node.addr()]);
    cfg.bars_per_flush = 64;
    let mut p = Publisher::new(cfg);
    p.follow_bars(book::barlog::beside(&t.path));
    let t0 = Instant::now();
    let mut step = |p: &mut Publisher| {
        src.poll(t0.elapsed().as_nanos() as u64, 100_000, &mut |q| p.offer(q));
        p.flush();
        p.tick();
        std::thread::sleep(Duration::from_millis(2));
    };
    let list_now = |node: &RedisNode| list_at(node.addr(), &list).unwrap_or_default();
    let keys = gateway::redis::Keys::new("quotes");
    let topo =
        gateway::redis::discover(&[node.addr()], Duration::from_secs(2), &Default::default())
            .unwrap();
    let mark = keys.node_mark(&topo, 0).unwrap();
    let whole = |node: &RedisNode, p: &mut Publisher, step: &mut dyn FnMut(&mut Publisher)| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !(list_now(node) == bar_bytes(b, 400..1_000) && marked_whole(node, &mark)) {
            assert!(Instant::now() < deadline, "the lists never whole");
            step(p);
        }
    };
    let chart = |remote: &Remote| {
        common::http_get(
            remote.addr(),
            &format!("/v1/bars?symbol={sym}&interval=1s&limit=600"),
        )
    };
    // (bars, first, last, holes): the latest 600 are one a second
    let summary = |remote: &Remote| {
        let ts = chart_starts(remote.addr(), &sym);
        let holes = ts
            .windows(2)
            .filter(|w| w[1] != w[0] + 1_000_000_000)
            .count();
        (ts.len(), ts.first().copied(), ts.last().copied(), holes)
    };
    let start = |k: u64| Some(common::bar(b, 1, k).bar.start_ns);
    whole(&node, &mut p, &mut step);
    let up = Remote::start(vec![node.addr()], 600_000);
    comes_to(
        "the chart of the gateway up",
        &(600, start(400), start(999), 0),
        || {
            step(&mut p);
            summary(&up)
        },
    );
    node.kill();
    node.restart().unwrap();
    // the restore part done
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        step(&mut p);
        let n = list_now(&node).len();
        if n >= 200 {
            assert!(n < 600, "a step appended {n}");
            break;
        }
        assert!(Instant::now() < deadline, "the restore never began: {n}");
    }
    // a gateway starts: its quotes come, its chart waits (the heartbeat goes on, the restore
    // does not)
    let late = Remote::start(vec![node.addr()], 600_000);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        p.tick();
        std::thread::sleep(Duration::from_millis(10));
        let body = common::http_get(late.addr(), "/healthz").1;
        let v: Value = serde_json::from_str(&body).unwrap_or_default();
        if v["symbols"].as_u64() == Some(3) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the late gateway's quotes: {body}"
        );
    }
    for _ in 0..50 {
        p.tick();
        std::thread::sleep(Duration::from_millis(10));
    }
    let (st, body) = chart(&late);
    assert!(
        st.contains("503") && body.contains("still coming in"),
        "mid-restore: {st} {body}"
    );
    // the gateway that was up shows the chart it had meanwhile (it was whole once)
    assert_eq!(
        summary(&up),
        (600, start(400), start(999), 0),
        "mid-restore"
    );
    // the restore ends, then new bars
    whole(&node, &mut p, &mut step);
    log_bars(&mut bar_log, b, 1_000..1_010);
    for (what, remote) in [("up", &up), ("started mid-restore", &late)] {
        comes_to(
            &format!("the chart of the gateway {what} (bars, first, last, holes)"),
            &(600, start(410), start(1_009), 0),
            || {
                step(&mut p);
                summary(remote)
            },
        );
    }
}

/// A 3-master cluster to restart a master of, with a table of 30 symbols beside it.
struct LostMaster {
    nodes: Vec<RedisNode>,
    t: Table,
    seeds: Vec<SocketAddr>,
    topo: gateway::redis::cluster::Topology,
    keys: gateway::redis::Keys,
    /// The master that is to restart empty: the one holding the bar position, or the next.
    lost: SocketAddr,
    /// Its index in `nodes`.
    lost_i: usize,
}

fn lost_master(tag: &str, holds_position: bool) -> LostMaster {
    let nodes = cluster(tag);
    let t = Table::new(&format!("redis-{tag}"), 30);
    let seeds: Vec<SocketAddr> = nodes.iter().map(RedisNode::addr).collect();
    let topo =
        gateway::redis::discover(&seeds, Duration::from_secs(2), &Default::default()).unwrap();
    let keys = gateway::redis::Keys::new("quotes");
    let holder = topo.node_of(keys.bar_position().as_bytes());
    let lost = topo.nodes[if holds_position {
        holder
    } else {
        (holder + 1) % topo.nodes.len()
    }];
    let lost_i = nodes.iter().position(|n| n.addr() == lost).unwrap();
    LostMaster {
        nodes,
        t,
        seeds,
        topo,
        keys,
        lost,
        lost_i,
    }
}

/// In a cluster, a master restarts empty under a log longer than its lists keep: its lists are
/// restored to their latest 600 bars, with only those appended, and the other masters' lists
/// get nothing. Its lists are checked against what they hold first (another master holds the
/// position), so this is the trim's checked path.
#[test]
fn in_a_cluster_a_restore_appends_only_what_the_lost_lists_keep() {
    if !have_redis() {
        return;
    }
    let LostMaster {
        mut nodes,
        t,
        seeds,
        topo,
        keys,
        lost,
        lost_i,
    } = lost_master("bar-restore-trim-cluster", false);
    let lists: Vec<([u8; 8], String)> = t
        .quotes
        .iter()
        .map(|q| (q.symbol, keys.bars(&q.symbol_str(), 1)))
        .collect();
    let node_of = |list: &str| topo.nodes[topo.node_of(list.as_bytes())];
    let n_lost = lists.iter().filter(|(_, l)| node_of(l) == lost).count() as u64;
    assert!(
        n_lost > 0 && n_lost < 30,
        "lists on the master that dies: {n_lost}"
    );
    let mut bar_log = book::barlog::BarLogWriter::create(&book::barlog::beside(&t.path)).unwrap();
    for k in 0..700 {
        log_round(&mut bar_log, &t.quotes, k);
    }
    // the lists that do not hold the latest 600 bars, each once
    let short = |nodes: &[RedisNode]| -> Vec<String> {
        lists
            .iter()
            .filter(|(sym, list)| {
                let n = nodes.iter().find(|n| n.addr() == node_of(list)).unwrap();
                list_at(n.addr(), list).unwrap_or_default() != bar_bytes(*sym, 100..700)
            })
            .map(|(_, list)| list.clone())
            .collect()
    };
    let publisher = PubThread::spawn(&t.path, seeds.clone());
    comes_to(
        "lists short of the latest 600",
        &Vec::<String>::new(),
        || short(&nodes),
    );
    nodes[lost_i].kill();
    nodes[lost_i].restart().unwrap();
    // restored once its mark says so (the lists before the mark: they only grow)
    let lost_k = topo.nodes.iter().position(|&a| a == lost).unwrap();
    let mark = keys.node_mark(&topo, lost_k).unwrap();
    comes_to("the restarted master marked whole", &true, || {
        marked_whole(&nodes[lost_i], &mark)
    });
    assert_eq!(short(&nodes), Vec::<String>::new());
    let s = publisher.stop();
    assert!(
        s.bar_restores == 1 && s.bars == 30 * 700 + n_lost * 600,
        "only the lost lists' latest 600 appended again: {s:?}"
    );
}

/// A master restarts empty while no publisher runs, and one of its lists' slots begins to move
/// to another master before the next publisher starts: the restore's run of that list is
/// redirected (ASK: the list is not on the master it is leaving) and appended on the importing
/// master after `ASKING`, each bar once; the master's other lists are restored where they are.
#[test]
fn a_restored_list_whose_slot_is_moving_goes_where_the_slot_goes() {
    if !have_redis() {
        return;
    }
    let LostMaster {
        mut nodes,
        t,
        seeds,
        topo,
        keys,
        lost,
        lost_i,
    } = lost_master("bar-restore-ask", false);
    let on_lost: Vec<([u8; 8], String)> = t
        .quotes
        .iter()
        .map(|q| (q.symbol, keys.bars(&q.symbol_str(), 1)))
        .filter(|(_, l)| topo.nodes[topo.node_of(l.as_bytes())] == lost)
        .collect();
    assert!(
        on_lost.len() >= 2,
        "lists on the master that dies: {on_lost:?}"
    );
    let mut bar_log = book::barlog::BarLogWriter::create(&book::barlog::beside(&t.path)).unwrap();
    for k in 0..700 {
        log_round(&mut bar_log, &t.quotes, k);
    }
    let whole = |sym: [u8; 8], list: &str| {
        list_at(lost, list).unwrap_or_default() == bar_bytes(sym, 100..700)
    };
    let first = PubThread::spawn(&t.path, seeds.clone());
    comes_to("the lost master's lists whole", &true, || {
        on_lost.iter().all(|(sym, l)| whole(*sym, l))
    });
    first.stop();
    nodes[lost_i].kill();
    nodes[lost_i].restart().unwrap();
    // the first list's slot half-moved: empty on the master it leaves, so a write there is
    // asked to the importing one
    let (moving_sym, moving) = on_lost[0].clone();
    let to = (lost_i + 1) % nodes.len();
    let slot = gateway::redis::cluster::key_slot(moving.as_bytes()).to_string();
    migrate_slot(&nodes[lost_i], &nodes[to], &slot);
    let publisher = PubThread::spawn(&t.path, seeds);
    let lost_k = topo.nodes.iter().position(|&a| a == lost).unwrap();
    let mark = keys.node_mark(&topo, lost_k).unwrap();
    comes_to("the restarted master marked whole", &true, || {
        marked_whole(&nodes[lost_i], &mark)
    });
    let moved = list_asked(nodes[to].addr(), &moving).unwrap_or_default();
    assert_eq!(moved.len(), 600, "the moving list on the importing master");
    assert!(moved == bar_bytes(moving_sym, 100..700));
    for (sym, l) in &on_lost[1..] {
        assert!(whole(*sym, l), "{l} restored where it is");
    }
    let s = publisher.stop();
    assert!(s.asked >= 1 && s.bar_restores == 1, "{s:?}");
    assert_eq!(
        s.bars,
        600 * on_lost.len() as u64,
        "each of the lost lists' latest 600 once: {s:?}"
    );
}

/// In a cluster, the master holding `quotes:barlog` restarted empty: the bar lists on it are
/// restored, and the other masters' lists, which lost nothing, get nothing twice.
#[test]
fn in_a_cluster_only_the_lists_a_master_lost_are_restored() {
    if have_redis() {
        cluster_master_restarts_empty("bar-restore-cluster", true, false);
    }
}

/// The same with a master that does not hold `quotes:barlog`: the position says nothing was
/// lost, but the master's run ID changed, so its lists are read again from the bar log's
/// start, checked (none of them holds a bar of the day now) and restored. Before, its lists
/// stayed empty until new bars came.
#[test]
fn in_a_cluster_a_master_without_the_position_that_restarted_has_its_lists_restored() {
    if have_redis() {
        cluster_master_restarts_empty("bar-restore-other", false, false);
    }
}

/// The same while no publisher ran: the one started after finds the master's mark gone (its
/// run ID when its lists were last whole), so its lists are read again from the bar log's
/// start, checked and restored. Before, a publisher new to the cluster had no run ID to compare
/// and skipped to the position: the master's lists stayed empty until new bars came.
#[test]
fn a_master_that_restarted_while_no_publisher_ran_has_its_lists_restored() {
    if have_redis() {
        cluster_master_restarts_empty("bar-restore-unwatched", false, true);
    }
}

/// A master of a 3-master cluster restarts empty (the one holding the bar position, or another
/// one), with the publisher running or stopped meanwhile: each list ends with every bar once.
fn cluster_master_restarts_empty(tag: &str, holds_position: bool, unwatched: bool) {
    let LostMaster {
        mut nodes,
        t,
        seeds,
        topo,
        keys,
        lost,
        lost_i,
    } = lost_master(tag, holds_position);
    let lists: Vec<(book::barlog::BarRecord, String, bool)> = t
        .quotes
        .iter()
        .map(|q| {
            let list = keys.bars(&q.symbol_str(), 1);
            let on_lost = topo.nodes[topo.node_of(list.as_bytes())] == lost;
            (common::bar(q.symbol, 1, 0), list, on_lost)
        })
        .collect();
    let n_lost = lists.iter().filter(|l| l.2).count();
    assert!(
        n_lost > 0 && n_lost < 30,
        "lists on the master that dies: {n_lost}"
    );
    let mut bar_log = book::barlog::BarLogWriter::create(&book::barlog::beside(&t.path)).unwrap();
    let append = |log: &mut book::barlog::BarLogWriter, k: u64| log_round(log, &t.quotes, k);
    // every list holds bars 0..rounds, each once
    let all_hold = |nodes: &[RedisNode], rounds: u64| -> Vec<String> {
        lists
            .iter()
            .filter_map(|(first, list, _)| {
                let node = topo.nodes[topo.node_of(list.as_bytes())];
                let n = nodes.iter().find(|n| n.addr() == node).unwrap();
                // (CLUSTERDOWN while the restarted master rejoins: nothing yet)
                let got = list_at(n.addr(), list).unwrap_or_default();
                let want: Vec<Vec<u8>> = (0..rounds)
                    .map(|k| common::bar(first.symbol, 1, k).to_bytes().to_vec())
                    .collect();
                (got != want).then(|| format!("{list}: {} bars", got.len()))
            })
            .collect()
    };
    for k in 0..3 {
        append(&mut bar_log, k);
    }
    let publisher = PubThread::spawn(&t.path, seeds.clone());
    comes_to(
        "lists not holding bars 0..3 once",
        &Vec::<String>::new(),
        || all_hold(&nodes, 3),
    );
    let publisher = if unwatched {
        let s = publisher.stop();
        assert_eq!(s.bar_restores, 0, "{s:?}");
        nodes[lost_i].kill();
        nodes[lost_i].restart().unwrap();
        // a few bars at a time, so the restore takes a while
        let mut cfg = PublisherCfg::new(seeds);
        cfg.max_pending_bars = 4;
        PubThread::spawn_with(&t.path, cfg)
    } else {
        nodes[lost_i].kill();
        nodes[lost_i].restart().unwrap();
        publisher
    };
    // the restarted node is marked whole only once its lists are (the mark read first: lists
    // only grow)
    let lost_k = topo.nodes.iter().position(|&a| a == lost).unwrap();
    let mark = keys.node_mark(&topo, lost_k).unwrap();
    comes_to(
        "lists not restored to bars 0..3 once",
        &Vec::<String>::new(),
        || {
            let marked = marked_whole(&nodes[lost_i], &mark);
            let short = all_hold(&nodes, 3);
            assert!(!marked || short.is_empty(), "marked whole, yet {short:?}");
            short
        },
    );
    // one more round, so anything appended again would be in the lists before it
    append(&mut bar_log, 3);
    comes_to(
        "lists not holding bars 0..4 once",
        &Vec::<String>::new(),
        || all_hold(&nodes, 4),
    );
    // every node marked with the run it is in, its lists whole (the restarted one's too, now)
    let marks = || -> Vec<bool> {
        nodes
            .iter()
            .map(|n| {
                let k = topo.nodes.iter().position(|&a| a == n.addr()).unwrap();
                let key = keys.node_mark(&topo, k).unwrap();
                marked_whole(n, &key)
            })
            .collect()
    };
    comes_to("nodes marked with their run", &vec![true; 3], marks);
    let s = publisher.stop();
    assert_eq!(s.bar_restores, 1, "{s:?}");
}

/// A master (not the one holding the bar position) fails over to a replica that lags it: the
/// replica was stopped while the last bars went to the master, which then died. The promoted
/// replica is a node new to the publisher after it knew others, so its lists are checked
/// against the bar log and the bars they lack appended, each once; the other masters' lists get
/// nothing twice. Before, those bars were gone from its lists for good.
#[test]
fn bars_a_promoted_replica_lacked_are_restored() {
    if !have_redis() {
        return;
    }
    let mut nodes = server::cluster_with_replicas(
        3,
        1,
        &["--cluster-node-timeout", "1000"],
        &tmp("promote-bars"),
    )
    .unwrap();
    let info = |n: &RedisNode| server::cli(n.port, &["INFO", "replication"]);
    let field = |text: &str, name: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
    };
    let t = Table::new("redis-promote-bars", 30);
    let seeds: Vec<SocketAddr> = nodes.iter().map(RedisNode::addr).collect();
    let topo =
        gateway::redis::discover(&seeds, Duration::from_secs(2), &Default::default()).unwrap();
    let keys = gateway::redis::Keys::new("quotes");
    // not the master holding the bar position (that one's loss the position tells)
    let holder = topo.node_of(keys.bar_position().as_bytes());
    let victim = topo.nodes[(holder + 1) % topo.nodes.len()];
    let victim_i = nodes.iter().position(|n| n.addr() == victim).unwrap();
    let replica_i = nodes
        .iter()
        .position(|n| {
            let i = info(n);
            i.contains("role:slave") && field(&i, "master_port:") == Some(victim.port() as u64)
        })
        .expect("the victim's replica");
    let lists: Vec<([u8; 8], String)> = t
        .quotes
        .iter()
        .map(|q| (q.symbol, keys.bars(&q.symbol_str(), 1)))
        .collect();
    assert!(
        lists
            .iter()
            .any(|(_, l)| topo.nodes[topo.node_of(l.as_bytes())] == victim),
        "lists on the victim"
    );
    let mut bar_log = book::barlog::BarLogWriter::create(&book::barlog::beside(&t.path)).unwrap();
    let append = |log: &mut book::barlog::BarLogWriter, k: u64| log_round(log, &t.quotes, k);
    // the lists not holding bars 0..rounds once, read from whichever of `at` answers for them
    let wrong = |at: &[SocketAddr], rounds: u64| -> Vec<String> {
        lists
            .iter()
            .filter_map(|(sym, list)| {
                let got = at.iter().find_map(|&a| list_at(a, list));
                let want = bar_bytes(*sym, 0..rounds);
                (got.as_ref() != Some(&want))
                    .then(|| format!("{list}: {:?} bars", got.map(|g| g.len())))
            })
            .collect()
    };
    let masters = topo.nodes.clone();
    for k in 0..3 {
        append(&mut bar_log, k);
    }
    let publisher = PubThread::spawn(&t.path, seeds);
    comes_to("lists not holding bars 0..3", &Vec::<String>::new(), || {
        wrong(&masters, 3)
    });
    // the replica has all of it, then stops (it lags from here)
    comes_to("the replica in step", &true, || {
        let (m, r) = (info(&nodes[victim_i]), info(&nodes[replica_i]));
        field(&m, "master_repl_offset:").is_some()
            && field(&m, "master_repl_offset:") == field(&r, "slave_repl_offset:")
    });
    let pid = nodes[replica_i].pid().unwrap().to_string();
    let signal = |sig: &str| {
        assert!(
            std::process::Command::new("kill")
                .args([sig, &pid])
                .status()
                .unwrap()
                .success()
        )
    };
    // stopped, and its link cut, so nothing of what follows waits for it in a socket
    signal("-STOP");
    server::cli(nodes[victim_i].port, &["CLIENT", "KILL", "TYPE", "replica"]);
    append(&mut bar_log, 3);
    comes_to(
        "the masters' lists holding bars 0..4",
        &Vec::<String>::new(),
        || wrong(&masters, 4),
    );
    nodes[victim_i].kill();
    signal("-CONT");
    let live: Vec<SocketAddr> = nodes
        .iter()
        .map(RedisNode::addr)
        .filter(|&a| a != victim)
        .collect();
    comes_to(
        "lists not holding bars 0..4 once after the failover",
        &Vec::<String>::new(),
        || wrong(&live, 4),
    );
    let s = publisher.stop();
    assert!(s.bar_restores >= 1, "{s:?}");
}

/// A standby host's publisher takes over (the first stopped): its own book made the same day,
/// so its bar log holds the bars Redis has already, and more. Each list's day key says its newest
/// bar is of this day, so the standby appends only the bars after it. Before, it appended its
/// whole log to every list again. With `yesterday`, the first log was begun the day before: the
/// lists' newest bars are the day before's, and the standby appends every bar it has.
fn standby_takes_over_bars(tag: &str, yesterday: bool) {
    let node = single(tag);
    let ta = Table::new(&format!("{tag}-a"), 3);
    let tb = Table::new(&format!("{tag}-b"), 3);
    let keys = gateway::redis::Keys::new("quotes");
    let b = ta.quotes[1].symbol;
    let list = keys.bars(&ta.quotes[1].symbol_str(), 1);
    let t2 = Duration::from_secs(2);
    let mut conn =
        gateway::redis::conn::Conn::connect(node.addr(), t2, t2, &Default::default()).unwrap();
    let bars = |ks| bar_bytes(b, ks);
    // the first log's bars, of the day before with `yesterday`
    let firsts: Vec<book::barlog::BarRecord> = (0..5)
        .map(|k| {
            let r = common::bar(b, 1, k);
            book::barlog::BarRecord {
                day: r.day - yesterday as u32,
                ..r
            }
        })
        .collect();
    let firsts_bytes: Vec<Vec<u8>> = firsts.iter().map(|r| r.to_bytes().to_vec()).collect();
    let log_a = book::barlog::beside(&ta.path);
    let mut first = book::barlog::BarLogWriter::create(&log_a).unwrap();
    for &r in &firsts {
        first.append(r).unwrap();
    }
    first.flush().unwrap();
    if yesterday {
        // begun a day earlier: its identity (bytes 16..24) moved back 24 hours
        let mut h = std::fs::read(&log_a).unwrap();
        let id = book::barlog::created_ns(&h) - 86_400_000_000_000;
        h[16..24].copy_from_slice(&id.to_le_bytes());
        std::fs::write(&log_a, &h).unwrap();
    }
    let primary = PubThread::spawn(&ta.path, vec![node.addr()]);
    comes_to("the first publisher's bars", &firsts_bytes, || {
        lrange(&mut conn, &list)
    });
    drop(primary);
    let mut second = book::barlog::BarLogWriter::create(&book::barlog::beside(&tb.path)).unwrap();
    log_bars(&mut second, b, 0..7);
    let standby = PubThread::spawn(&tb.path, vec![node.addr()]);
    let want = |more: Vec<Vec<u8>>| -> Vec<Vec<u8>> {
        if yesterday {
            [firsts_bytes.clone(), more].concat()
        } else {
            more
        }
    };
    comes_to("the standby's bars", &want(bars(0..7)), || {
        lrange(&mut conn, &list)
    });
    // one more, so anything appended again would be in the list before it
    log_bars(&mut second, b, 7..8);
    comes_to("a new bar", &want(bars(0..8)), || lrange(&mut conn, &list));
    let s = standby.stop();
    let (sent, skipped) = if yesterday { (8, 0) } else { (3, 5) };
    assert!(
        s.bars == sent && s.bars_skipped == skipped,
        "the standby appended {sent} and skipped {skipped}: {s:?}"
    );
}

#[test]
fn a_standby_taking_over_appends_only_the_bars_the_lists_lack() {
    if have_redis() {
        standby_takes_over_bars("bar-standby", false);
    }
}

#[test]
fn a_standby_taking_over_the_day_after_appends_every_bar() {
    if have_redis() {
        standby_takes_over_bars("bar-standby-next-day", true);
    }
}

/// Two venues' bars of one symbol share its list, interleaved. A standby taking over checks
/// each venue's bars against that venue's newest in the list: BX's bars after its own newest go
/// in though they start before Nasdaq's newest (the list's last bar), which is what the check
/// looked at before, so they were taken for bars the list had and lost. A remote gateway charts
/// the two venues' bars merged, one bar a start, and each venue's alone with `venue=`.
#[test]
fn a_standby_checks_each_venues_bars_in_a_shared_list() {
    if !have_redis() {
        return;
    }
    let node = single("bar-standby-venues");
    let ta = Table::new("bar-standby-venues-a", 3);
    let tb = Table::new("bar-standby-venues-b", 3);
    let b = ta.quotes[1].symbol;
    let sym = ta.quotes[1].symbol_str();
    let list = gateway::redis::Keys::new("quotes").bars(&sym, 1);
    let mut conn = list_reader(&node);
    // venue 1's bar k: a trade after venue 0's opened the bar, and the bar's last
    let venue1 = |k: u64| {
        let r = common::bar(b, 1, k);
        book::barlog::BarRecord {
            channel: 1,
            bar: book::bars::Bar {
                open: 2_000_000,
                close: 2_000_100,
                high: 3_000_000,
                first_ns: r.bar.first_ns + 1,
                last_ns: r.bar.last_ns + 1,
                ..r.bar
            },
            ..r
        }
    };
    let venue0 = |k: u64| common::bar(b, 1, k);
    // as the books closed them: venue 1's bars lag venue 0's
    let first: Vec<book::barlog::BarRecord> = vec![
        venue0(0),
        venue0(1),
        venue1(0),
        venue0(2),
        venue1(1),
        venue0(3),
        venue1(2),
        venue0(4),
    ];
    let second: Vec<book::barlog::BarRecord> = [
        first.clone(),
        vec![venue1(3), venue0(5), venue1(4), venue1(5), venue0(6)],
    ]
    .concat();
    let bytes = |rs: &[book::barlog::BarRecord]| -> Vec<Vec<u8>> {
        rs.iter().map(|r| r.to_bytes().to_vec()).collect()
    };
    let write = |path: &std::path::Path, rs: &[book::barlog::BarRecord]| {
        let mut w = book::barlog::BarLogWriter::create(&book::barlog::beside(path)).unwrap();
        for &r in rs {
            w.append(r).unwrap();
        }
        w.flush().unwrap();
        w
    };
    let _a = write(&ta.path, &first);
    let primary = PubThread::spawn(&ta.path, vec![node.addr()]);
    comes_to("the first publisher's bars", &bytes(&first), || {
        lrange(&mut conn, &list)
    });
    drop(primary);
    let _b = write(&tb.path, &second);
    let standby = PubThread::spawn(&tb.path, vec![node.addr()]);
    comes_to("each venue's bars once", &bytes(&second), || {
        lrange(&mut conn, &list)
    });
    let s = standby.stop();
    assert!(s.bars == 5 && s.bars_skipped == 8, "{s:?}");

    // the chart: one bar a start, the venues merged
    let remote = Remote::start(vec![node.addr()], 600_000);
    let chart = |venue: &str| -> Vec<(u64, String, String, String, u64)> {
        let (_, body) = common::http_get(
            remote.addr(),
            &format!("/v1/bars?symbol={sym}&interval=1s&limit=600{venue}"),
        );
        serde_json::from_str::<Value>(&body).unwrap()["bars"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|x| {
                        let s = |k: &str| x[k].as_str().unwrap().to_string();
                        (
                            x["t"].as_u64().unwrap(),
                            s("o"),
                            s("h"),
                            s("c"),
                            x["v"].as_u64().unwrap(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let px = |p: u32| format!("{}.{:04}", p / 10_000, p % 10_000);
    let want: Vec<(u64, String, String, String, u64)> = (0..7)
        .map(|k| {
            let (a, b) = (venue0(k).bar, venue1(k).bar);
            if k < 6 {
                // venue 0 opened, venue 1 closed
                (
                    a.start_ns,
                    px(a.open),
                    px(b.high),
                    px(b.close),
                    a.volume + b.volume,
                )
            } else {
                (a.start_ns, px(a.open), px(a.high), px(a.close), a.volume)
            }
        })
        .collect();
    comes_to("the merged chart", &want, || chart(""));
    let alone: Vec<u64> = (0..6).map(|k| venue1(k).bar.volume).collect();
    assert_eq!(
        chart("&venue=1").iter().map(|b| b.4).collect::<Vec<_>>(),
        alone
    );
}

/// A venue hash key that holds another type (someone else's value in the publisher's key space)
/// is replaced: deleted, and every venue's quote of that symbol written again. `SET` replaces a
/// quote key of any type by itself; `HSET` is refused (`WRONGTYPE`), which used to fail the
/// node's whole batch: the publisher dropped the node (every symbol on it stale), reconnected,
/// rewrote everything and was refused again, for as long as the key stayed.
#[test]
fn a_venue_key_holding_another_type_is_replaced_and_the_node_stays_up() {
    if !have_redis() {
        return;
    }
    let node = single("venue-wrongtype");
    let t = Table::new("redis-venue-wrongtype", 3);
    let (mut vw, _rm) = venue_table(&t);
    let on_venue = |channel: u16, bid: u32| Quote {
        channel,
        bid: Some((bid, 100)),
        ..t.quotes[0]
    };
    vw.publish(0, &on_venue(2, 1_000_000));
    vw.publish(1, &on_venue(3, 1_010_000));
    let sym0 = t.quotes[0].symbol_str();
    let key = gateway::redis::Keys::new("quotes").venues(&sym0);
    cli_ok(&node, &["SET", &key, "not a hash"]);
    let publisher = PubThread::spawn(&t.path, vec![node.addr()]);
    comes_to("the venues' hash", &"2".to_string(), || {
        server::cli(node.port, &["HLEN", &key]).trim().to_string()
    });
    // a venue that changes after the replacement is written in place
    vw.publish(0, &on_venue(2, 1_020_000));
    let remote = Remote::start(vec![node.addr()], 600_000);
    wait_symbols(remote.addr(), 3);
    // (venue, bid, stale) of each venue quote the remote gateway shows, by venue
    let shown = || -> Vec<(u64, String, bool)> {
        let body = common::http_get(remote.addr(), &format!("/v1/venues?symbol={sym0}")).1;
        let v: Value = serde_json::from_str(&body).unwrap_or_default();
        let mut got: Vec<_> = v["venues"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|x| {
                (
                    x["venue"].as_u64().unwrap_or(0),
                    x["quote"]["bid"].as_str().unwrap_or("").to_string(),
                    x["quote"]["stale"].as_bool().unwrap_or(true),
                )
            })
            .collect();
        got.sort();
        got
    };
    let want = vec![(2, "102.0000".into(), false), (3, "101.0000".into(), false)];
    comes_to("both venues, fresh", &want, shown);
    let s = publisher.stop();
    assert!(
        s.replaced == 1 && s.connects == 1 && s.failures == 0,
        "the key replaced once, the node never dropped: {s:?}"
    );
}

/// The same through a cluster, with the venue key's slot half-moved: the key is on the importing
/// master, and there it holds another type. The write sent on after the ASK is refused
/// `WRONGTYPE`; the key is deleted there (after `ASKING`) and the venues written again. That
/// refusal used to fail the whole publisher, which reconnected, rewrote every key, was sent on
/// and refused again, for as long as the slot stayed half-moved: every symbol went stale.
#[test]
fn a_venue_key_holding_another_type_on_an_importing_master_is_replaced() {
    use gateway::redis::conn::{Access, Conn};
    if !have_redis() {
        return;
    }
    let nodes = cluster("venue-wrongtype-ask");
    let t = Table::new("redis-venue-wrongtype-ask", 3);
    let (mut vw, _rm) = venue_table(&t);
    let on_venue = |bid: u32| Quote {
        channel: 2,
        bid: Some((bid, 100)),
        ..t.quotes[0]
    };
    vw.publish(0, &on_venue(1_000_000));
    let sym0 = t.quotes[0].symbol_str();
    let keys = gateway::redis::Keys::new("quotes");
    let key = keys.venues(&sym0);
    let seeds: Vec<SocketAddr> = nodes.iter().map(RedisNode::addr).collect();
    let topo =
        gateway::redis::discover(&seeds, Duration::from_secs(2), &Default::default()).unwrap();
    let owner = topo.nodes[topo.node_of(key.as_bytes())].port();
    let from = nodes.iter().position(|n| n.port == owner).unwrap();
    let to = &nodes[(from + 1) % nodes.len()];
    let publisher = PubThread::spawn(&t.path, seeds.clone());
    let remote = Remote::start(seeds, 600_000);
    venue_becomes(remote.addr(), &sym0, &on_venue(1_000_000), false);
    // half-moved: the symbol's keys on the importing master; there, the venue key a string
    let slot = gateway::redis::cluster::key_slot(key.as_bytes()).to_string();
    assert!(migrate_slot(&nodes[from], to, &slot).contains(&key));
    let t2 = Duration::from_secs(2);
    let mut there = Conn::connect(to.addr(), t2, t2, &Access::default()).unwrap();
    let mut asking = |args: &[&[u8]]| -> String {
        there.call(&[b"ASKING"], t2, |_| ()).unwrap();
        there
            .call(args, t2, |r| {
                String::from_utf8_lossy(r.bytes().unwrap_or_default()).into_owned()
            })
            .unwrap()
    };
    asking(&[b"SET", key.as_bytes(), b"not a hash"]);
    vw.publish(0, &on_venue(1_010_000));
    venue_becomes(remote.addr(), &sym0, &on_venue(1_010_000), false);
    comes_to(
        "the key's type on the importing master",
        &"hash".to_string(),
        || asking(&[b"TYPE", key.as_bytes()]),
    );
    let s = publisher.stop();
    assert!(
        s.replaced == 1 && s.failures == 0 && s.asked >= 1,
        "the key replaced where the ASK sent it, the publisher never failed: {s:?}"
    );
}

/// A publisher's new epoch (after a reconnect, or a second publisher taking over) is the rewrite
/// of every key and then a heartbeat that names the epoch. A replica that receives the rewritten
/// values and that heartbeat in one read takes them in that order. It used to take the heartbeat
/// first, which marked those quotes stale for as long as the rest of the read took: seen as
/// symbols that had not moved flickering stale while a cluster was resharded.
#[test]
fn a_heartbeat_is_taken_after_the_values_that_came_before_it() {
    use gateway::redis::conn::{Access, Conn};
    if !have_redis() {
        return;
    }
    let node = single("hb-order");
    // no heartbeat timeout within the test: only the order can mark the quote stale
    let remote = Remote::start(vec![node.addr()], 600_000);
    let keys = gateway::redis::Keys::new("quotes");
    let key = keys.quote("ORDR");
    let t = Duration::from_secs(5);
    let mut c = Conn::connect(node.addr(), t, t, &Access::default()).unwrap();
    // what a publisher sends, in one write: the key, its change, then a heartbeat
    let mut publish = |bid: u32, epoch_ns: u64, first: bool| {
        let q = Quote {
            symbol: *b"ORDR    ",
            bid: Some((bid, 100)),
            ..Quote::default()
        };
        let v = gateway::redis::encode(epoch_ns + 1, &q);
        c.queue(&[b"SET", key.as_bytes(), &v]);
        c.queue(&[b"PUBLISH", key.as_bytes(), &v]);
        if first {
            c.queue(&[b"PUBLISH", keys.new_symbols().as_bytes(), b"ORDR"]);
        }
        let hb = format!("{epoch_ns} {} 0 0", epoch_ns + 2);
        c.queue(&[b"PUBLISH", keys.heartbeat().as_bytes(), hb.as_bytes()]);
        c.flush().unwrap();
        while c.owed > 0 {
            c.next_by(Instant::now() + t, |r| assert!(r.error().is_none()))
                .unwrap();
        }
    };
    let shown = |v: &View| {
        let q = v.q.get("ORDR")?;
        Some((
            q.get("bid")?.as_str()?.to_string(),
            q.get("stale")?.as_bool()?,
        ))
    };
    comes_to("links up", &1, || {
        remote.replica_metric("gateway_redis_links_up")
    });
    let epoch = gateway::redis::now_ns();
    publish(1_000_000, epoch, true);
    wait_symbols(remote.addr(), 1);
    let mut v = View::subscribe(remote.addr(), &["ORDR".to_string()]);
    while shown(&v) != Some(("100.0000".into(), false)) {
        v.read();
    }
    // a new epoch: the rewritten value and the heartbeat arrive together
    publish(1_010_000, epoch + 1_000_000, false);
    while shown(&v) != Some(("101.0000".into(), false)) {
        v.read();
    }
    assert_eq!(
        remote.replica_metric("gateway_redis_marked_stale_total"),
        0,
        "a quote rewritten before the heartbeat was marked stale"
    );
}

/// A replica loading a key that holds another type (here a symbol's venue hash is a string,
/// someone else's, and no publisher is running to replace it) takes it as absent: the symbol's
/// quote is shown. The refusal used to fail the link, which reconnected, loaded and failed again,
/// so the quote was never shown.
#[test]
fn a_replica_takes_a_key_holding_another_type_as_absent() {
    use gateway::redis::conn::{Access, Conn};
    if !have_redis() {
        return;
    }
    let node = single("replica-wrongtype");
    let remote = Remote::start(vec![node.addr()], 600_000);
    let keys = gateway::redis::Keys::new("quotes");
    let t = Duration::from_secs(5);
    let mut c = Conn::connect(node.addr(), t, t, &Access::default()).unwrap();
    // subscribed to the announcements before the symbol is announced
    comes_to("links up", &1, || {
        remote.replica_metric("gateway_redis_links_up")
    });
    let q = Quote {
        symbol: *b"ODDV    ",
        bid: Some((1_000_000, 100)),
        ..Quote::default()
    };
    let epoch = gateway::redis::now_ns();
    let v = gateway::redis::encode(epoch + 1, &q);
    let key = keys.quote("ODDV");
    c.queue(&[b"SET", keys.venues("ODDV").as_bytes(), b"not a hash"]);
    c.queue(&[b"SET", key.as_bytes(), &v]);
    c.queue(&[b"PUBLISH", keys.new_symbols().as_bytes(), b"ODDV"]);
    let hb = format!("{epoch} {} 0 0", epoch + 2);
    c.queue(&[b"PUBLISH", keys.heartbeat().as_bytes(), hb.as_bytes()]);
    c.flush().unwrap();
    while c.owed > 0 {
        c.next_by(Instant::now() + t, |r| assert!(r.error().is_none()))
            .unwrap();
    }
    wait_symbols(remote.addr(), 1);
    let mut view = View::subscribe(remote.addr(), &["ODDV".to_string()]);
    let shown = |v: &V| {
        v.get("ODDV").is_some_and(|q| {
            q.get("bid") == Some(&Value::from("100.0000"))
                && q.get("stale") == Some(&Value::Bool(false))
        })
    };
    assert!(
        view.until(10, |_, _| {}, shown),
        "the quote shown fresh, the venue key taken as absent"
    );
    assert_eq!(remote.replica_metric("gateway_redis_links_up"), 1);
}

/// A remote gateway starting while every chart is full (600 bars in each symbol's two lists, as
/// late in a trading day) holds every symbol's quote before it has loaded even half of the
/// charts, loads each list once, and serves them whole: meanwhile a chart asked for (of a
/// symbol it knows) is whole or refused as loading (503), never part of one or empty. Before,
/// each pass of a link read the lists of every symbol confirmed in it (up to 1,024 symbols:
/// tens of MB) and only then asked for their quotes, so a full day's charts held the quotes for
/// seconds, and with quotes flowing Redis dropped the subscriber whose messages piled up
/// meanwhile (`bench redis`, resync).
#[test]
fn a_remote_gateway_takes_every_quote_before_loading_full_charts() {
    if !have_redis() {
        return;
    }
    let n = 1_000;
    let node = single("full-charts");
    let t = Table::new("redis-full-charts", n);
    let keys = gateway::redis::Keys::new("quotes");
    let lists = t.quotes.iter().flat_map(|q| {
        let sym = q.symbol_str();
        [1, 60].map(|i| {
            let records = (0..600)
                .map(|k| common::bar(q.symbol, i, k).to_bytes().to_vec())
                .collect();
            (keys.bars(&sym, i), records)
        })
    });
    server::fill_lists(node.addr(), lists).unwrap();
    let publisher = PubThread::spawn(&t.path, vec![node.addr()]);
    let last = keys.quote(&t.quotes[n - 1].symbol_str());
    comes_to("every quote in Redis", &"1".to_string(), || {
        server::cli(node.port, &["EXISTS", &last])
            .trim()
            .to_string()
    });
    let remote = Remote::start(vec![node.addr()], 600_000);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut loaded_when_held = None;
    let (mut refused, mut whole) = (0, 0);
    for k in 0.. {
        let lists = remote.replica_metric("gateway_redis_bar_lists_loaded_total");
        let held = remote.replica_metric("gateway_redis_symbols") == n as u64;
        if loaded_when_held.is_none() && held {
            loaded_when_held = Some(lists);
        }
        if lists >= 2 * n as u64 {
            break;
        }
        assert!(Instant::now() < deadline, "{lists} lists loaded");
        if !held {
            continue;
        }
        // a chart meanwhile: whole, or refused while it loads
        let sym = t.quotes[(k * 7) % n].symbol_str();
        let path = format!("/v1/bars?symbol={sym}&interval=1s&limit=600");
        let (status, body) = common::http_get(remote.addr(), &path);
        if status.contains("503") {
            assert!(body.contains("bar history loading"), "{body}");
            refused += 1;
        } else {
            assert!(status.contains("200"), "{status} {body}");
            let v: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["bars"].as_array().unwrap().len(), 600, "{sym} meanwhile");
            whole += 1;
        }
    }
    eprintln!("charts asked for while loading: {refused} refused, {whole} whole");
    let loaded_when_held = loaded_when_held.unwrap_or(2 * n as u64);
    assert!(
        loaded_when_held <= n as u64,
        "{loaded_when_held} of {} lists loaded before every quote was held",
        2 * n
    );
    assert_eq!(
        remote.replica_metric("gateway_redis_bar_lists_loaded_total"),
        2 * n as u64,
        "each list loaded once"
    );
    assert_eq!(remote.replica_metric("gateway_redis_links_up"), 1);
    for q in [&t.quotes[0], &t.quotes[n / 2], &t.quotes[n - 1]] {
        let sym = q.symbol_str();
        for (interval, name) in [(1, "1s"), (60, "1m")] {
            let path = format!("/v1/bars?symbol={sym}&interval={name}&limit=600");
            let (status, body) = common::http_get(remote.addr(), &path);
            assert!(status.contains("200"), "{status} {body}");
            let v: Value = serde_json::from_str(&body).unwrap();
            let bars = v["bars"].as_array().unwrap();
            assert_eq!(bars.len(), 600, "{sym} {name}");
            let first = common::bar(q.symbol, interval, 0).bar.start_ns;
            assert_eq!(bars[0]["t"], first, "{sym} {name}: {}", bars[0]);
        }
    }
    drop((publisher, remote));
}

/// A slot moving away is told to a replica's link by the server dropping the slot's channels
/// (`sunsubscribe`); a change published there just before comes in the same read. The link
/// takes them in that order: the change, then the loss, so the quote stays unconfirmed until a
/// value comes through the slot's new node (taken the other way round, the change confirmed it
/// again through the node that had just given the slot away).
#[test]
fn a_change_read_with_its_slot_moving_away_does_not_confirm_it_again() {
    use gateway::redis::cluster::{Topology, key_slot};
    use gateway::redis::conn::{Access, Conn};
    if !have_redis() {
        return;
    }
    let nodes = cluster("lostorder");
    let seeds: Vec<SocketAddr> = nodes.iter().map(RedisNode::addr).collect();
    let discover =
        || gateway::redis::discover(&seeds, Duration::from_secs(2), &Default::default()).unwrap();
    let topo = discover();
    let keys = gateway::redis::Keys::new("quotes");
    let key = keys.quote("MOVR");
    let slot = key_slot(key.as_bytes());
    let at = |t: &Topology| {
        let a = t.nodes[t.node_of_slot(slot)];
        nodes.iter().position(|n| n.addr() == a).unwrap()
    };
    let (from, to) = (at(&topo), (at(&topo) + 1) % nodes.len());
    // no heartbeat timeout within the test: only the move can mark the quote stale
    let remote = Remote::start(seeds.clone(), 600_000);
    comes_to("links up", &3, || {
        remote.replica_metric("gateway_redis_links_up")
    });
    let t = Duration::from_secs(5);
    let conn = |n: &RedisNode| Conn::connect(n.addr(), t, t, &Access::default()).unwrap();
    let run = |c: &mut Conn| {
        c.flush().unwrap();
        while c.owed > 0 {
            let e = c.next_by(Instant::now() + t, |r| r.error()).unwrap();
            assert!(e.is_none(), "{e:?}");
        }
    };
    let epoch = gateway::redis::now_ns();
    let value = |bid: u32, n: u64| {
        let q = Quote {
            symbol: *b"MOVR    ",
            bid: Some((bid, 100)),
            ..Quote::default()
        };
        gateway::redis::encode(epoch + n, &q)
    };
    let heartbeat = |c: &mut Conn, map: &Topology| {
        let sent = gateway::redis::now_ns();
        let text = map.map_text().unwrap();
        let msg = format!("{epoch} {sent} {} 0 {text}", map.map_id);
        c.queue(&[b"PUBLISH", keys.heartbeat().as_bytes(), msg.as_bytes()]);
    };
    let shown = |v: &View| {
        let q = v.q.get("MOVR")?;
        let bid = q.get("bid")?.as_str()?.to_string();
        Some((bid, q.get("stale")?.as_bool()?))
    };
    let until = |v: &mut View, bid: &str| {
        while shown(v) != Some((bid.to_string(), false)) {
            v.read();
        }
    };
    // written as the publisher writes it, on the slot's master
    let mut a = conn(&nodes[from]);
    let v1 = value(1_000_000, 1);
    a.queue(&[b"SET", key.as_bytes(), &v1]);
    a.queue(&[b"SPUBLISH", key.as_bytes(), &v1]);
    a.queue(&[b"PUBLISH", keys.new_symbols().as_bytes(), b"MOVR"]);
    heartbeat(&mut a, &topo);
    run(&mut a);
    wait_symbols(remote.addr(), 1);
    let mut v = View::subscribe(remote.addr(), &["MOVR".to_string()]);
    until(&mut v, "100.0000");

    // the slot moves to another master: its key first; then, in one write to the old master,
    // a change published there and the slot handed over, so the replica's link reads the
    // change and the unsubscribe together
    let (s, to_id) = (slot.to_string(), node_id(&nodes[to]));
    let in_slot = migrate_slot(&nodes[from], &nodes[to], &s);
    assert_eq!(in_slot.trim(), key, "the slot holds its key only");
    let v2 = value(1_010_000, 2);
    a.queue(&[b"SPUBLISH", key.as_bytes(), &v2]);
    a.queue(&[
        b"CLUSTER",
        b"SETSLOT",
        s.as_bytes(),
        b"NODE",
        to_id.as_bytes(),
    ]);
    run(&mut a);
    for n in (0..nodes.len()).filter(|&n| n != from) {
        cli_ok(&nodes[n], &["CLUSTER", "SETSLOT", &s, "NODE", &to_id]);
    }
    // the change written again where the slot is now, and the new map said
    let moved = loop {
        let m = discover();
        if at(&m) == to {
            break m;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut b = conn(&nodes[to]);
    let v3 = value(1_020_000, 3);
    b.queue(&[b"SET", key.as_bytes(), &v3]);
    b.queue(&[b"SPUBLISH", key.as_bytes(), &v3]);
    heartbeat(&mut b, &moved);
    run(&mut b);
    until(&mut v, "102.0000");
    assert_eq!(
        remote.replica_metric("gateway_redis_marked_stale_total"),
        1,
        "stale once, when its slot moved away (not confirmed again, then made stale again when the replica followed the map)"
    );
}
