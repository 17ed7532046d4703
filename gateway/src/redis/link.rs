//! The replica's threads: a supervisor that finds the topology and restarts the links when it
//! changes, and one link per Redis node (a subscriber and a command connection) that subscribes,
//! loads each symbol once its subscription is confirmed, and follows what is published.

use super::Keys;
use super::barload::BarLoads;
use super::cluster::{Topology, key_slot};
use super::conn::Conn;
use super::decode;
use super::discover;
use super::replica::{BarWork, Shared};
use super::trust::Heartbeat;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Whom to ask for the slot map: the nodes last known first (a seed may be the master that
/// died), then the seeds.
fn nodes_then_seeds(
    known: &[std::net::SocketAddr],
    seeds: &[std::net::SocketAddr],
) -> Vec<std::net::SocketAddr> {
    let mut v = known.to_vec();
    v.extend(seeds.iter().filter(|s| !known.contains(s)));
    v
}

/// A link thread and how to stop it.
struct Running {
    k: usize,
    quit: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<()>,
}

/// The link threads: one per master of the current topology, each node keeping its link index
/// for as long as the replica runs (one per address ever seen).
#[derive(Default)]
struct Links {
    index: HashMap<SocketAddr, usize>,
    running: HashMap<SocketAddr, Running>,
    /// Told to quit (their master left the topology), not finished yet: joined once they are,
    /// so the supervisor never waits on a link's connect timeout.
    retiring: Vec<(SocketAddr, Running)>,
}

impl Links {
    /// The link index of `a`, a new one the first time.
    fn index(&mut self, a: SocketAddr) -> usize {
        let n = self.index.len();
        *self.index.entry(a).or_insert(n)
    }

    /// Stops the links of masters no longer in `topo` and starts one for each master without
    /// one; false if a thread could not be started (try again later).
    fn follow(&mut self, sh: &Arc<Shared>, topo: &Topology) -> bool {
        let gone: Vec<SocketAddr> = self
            .running
            .keys()
            .filter(|a| !topo.nodes.contains(a))
            .copied()
            .collect();
        for a in gone {
            let r = self.running.remove(&a).expect("running");
            r.quit.store(true, Ordering::Relaxed);
            sh.set_active(r.k, false);
            self.retiring.push((a, r));
        }
        self.reap(false);
        let mut ok = true;
        for &a in &topo.nodes {
            if self.running.contains_key(&a) {
                continue;
            }
            // a master back before its old link finished: one link per index at a time
            while let Some(i) = self.retiring.iter().position(|(b, _)| *b == a) {
                let _ = self.retiring.swap_remove(i).1.handle.join();
            }
            let k = self.index(a);
            sh.set_active(k, true);
            let quit = Arc::new(AtomicBool::new(false));
            let (sh2, q2) = (sh.clone(), quit.clone());
            match std::thread::Builder::new()
                .name(format!("redis-link-{k}"))
                .spawn(move || link(sh2, a, k, q2))
            {
                Ok(handle) => {
                    self.running.insert(a, Running { k, quit, handle });
                }
                Err(e) => {
                    sh.set_down(k, Some(format!("cannot start a link thread: {e}")));
                    ok = false;
                }
            }
        }
        ok
    }

    /// Joins the retired links that have finished (all of them if `wait`).
    fn reap(&mut self, wait: bool) {
        let mut i = 0;
        while i < self.retiring.len() {
            if wait || self.retiring[i].1.handle.is_finished() {
                let _ = self.retiring.swap_remove(i).1.handle.join();
            } else {
                i += 1;
            }
        }
    }

    fn stop(mut self) {
        let running: Vec<(SocketAddr, Running)> = self.running.drain().collect();
        for (a, r) in running {
            r.quit.store(true, Ordering::Relaxed);
            self.retiring.push((a, r));
        }
        self.reap(true);
    }
}

/// Finds the topology, runs one link per master and follows changes: a new master gets a link,
/// a master gone has its link stopped, and the links of masters that stay keep their
/// connections (they subscribe to what their node gained; the server drops what it lost), so a
/// slot moving stales only the symbols in it.
pub(super) fn supervise(sh: Arc<Shared>) {
    let mut backoff = Duration::from_millis(100);
    let mut prev: Option<Arc<Topology>> = None;
    let mut links = Links::default();
    let mut next_check = Instant::now();
    let mut next_tick = Instant::now();
    let mut last_report: Option<Instant> = None;
    let mut unreported = 0u64;
    // after a sign of slots moving that the map did not show yet, the next sign waits this long
    // (the node asked may learn the new map a little after the one that redirected)
    let mut quiet_until = Instant::now();
    while !sh.stop.load(Ordering::Relaxed) {
        let now_i = Instant::now();
        if now_i >= next_tick {
            next_tick = now_i + Duration::from_millis(100);
            let now = sh.now_ns();
            sh.with_both(|c, out| c.tick(now, out));
            links.reap(false);
        }
        let moved = now_i >= quiet_until && sh.topology_changed.swap(false, Ordering::Relaxed);
        if !moved && now_i < next_check {
            pause(&sh, Duration::from_millis(20));
            continue;
        }
        next_check = now_i + Duration::from_secs(5);
        let known = prev.as_ref().map_or(&[][..], |t| &t.nodes[..]);
        let seeds = nodes_then_seeds(known, &sh.cfg.seeds);
        let topo = match discover(&seeds, sh.cfg.timeout, &sh.cfg.access) {
            Ok(t) => t,
            Err(_) if prev.is_some() => {
                // the links report their own nodes; ask again soon
                if moved {
                    sh.topology_changed.store(true, Ordering::Relaxed);
                }
                next_check = Instant::now() + Duration::from_secs(1);
                pause(&sh, Duration::from_millis(100));
                continue;
            }
            Err(e) => {
                {
                    let mut st = sh.state.lock().unwrap_or_else(|p| p.into_inner());
                    if st.topo_down.as_ref() != Some(&e) {
                        eprintln!("gateway: {e}; every symbol is stale until Redis answers");
                    }
                    st.topo_down = Some(e);
                }
                pause(&sh, backoff);
                backoff = (backoff * 2).min(Duration::from_secs(1));
                next_check = Instant::now();
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
        }
        let topo = match prev.take() {
            Some(p) if *p == topo => {
                if moved {
                    // the same map: have the links check what they follow all the same
                    let _g = sh.topo.lock().unwrap_or_else(|p| p.into_inner());
                    sh.topo_version.fetch_add(1, Ordering::AcqRel);
                    quiet_until = Instant::now() + Duration::from_millis(50);
                    next_check = Instant::now() + Duration::from_millis(200);
                }
                p
            }
            p => {
                if let Some(p) = &p {
                    let changed = (0..topo.owner.len())
                        .filter(|&s| p.ids[p.owner[s] as usize] != topo.ids[topo.owner[s] as usize])
                        .count();
                    unreported += 1;
                    sh.map_changes.fetch_add(1, Ordering::Relaxed);
                    // at most one line a second (a resharding changes the map every few ms)
                    if last_report.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                        eprintln!(
                            "gateway: the cluster's slot map changed ({unreported} time{} since the last report; {changed} slot{} on another node in the latest); symbols in moved slots are stale until the publisher has written them on the new map",
                            if unreported == 1 { "" } else { "s" },
                            if changed == 1 { "" } else { "s" }
                        );
                        last_report = Some(Instant::now());
                        unreported = 0;
                    }
                }
                let link_of: Vec<usize> = topo.nodes.iter().map(|&a| links.index(a)).collect();
                let owner: Vec<u16> = if topo.cluster {
                    topo.owner
                        .iter()
                        .map(|&n| link_of[n as usize] as u16)
                        .collect()
                } else {
                    Vec::new()
                };
                let ids: Vec<(usize, u64)> = (0..topo.nodes.len())
                    .map(|n| (link_of[n], topo.ids[n]))
                    .collect();
                let now = sh.now_ns();
                sh.with_both(|c, out| c.set_map(topo.map_id, owner.clone(), &ids, now, out));
                let topo = Arc::new(topo);
                let mut t = sh.topo.lock().unwrap_or_else(|p| p.into_inner());
                *t = Some(topo.clone());
                sh.topo_version.fetch_add(1, Ordering::AcqRel);
                topo
            }
        };
        if !links.follow(&sh, &topo) {
            next_check = Instant::now() + Duration::from_secs(1);
        }
        read_venue_names(&sh, &topo);
        prev = Some(topo);
    }
    links.stop();
}

/// The venue names the publisher wrote, from the node that owns their key; the names read
/// before are kept when there are none (Redis restarted empty, the publisher not there yet).
fn read_venue_names(sh: &Shared, topo: &Topology) {
    let key = sh.keys.venue_names();
    let Some(&addr) = topo.nodes.get(topo.node_of(key.as_bytes())) else {
        return;
    };
    let Ok(mut c) = Conn::connect(addr, sh.cfg.timeout, sh.cfg.timeout, &sh.cfg.access) else {
        return;
    };
    let text = c.call(&[b"GET", key.as_bytes()], sh.cfg.timeout, |r| {
        r.bytes().map(|b| String::from_utf8_lossy(b).into_owned())
    });
    if let Ok(Some(text)) = text {
        let names: Vec<String> = text.lines().take(256).map(str::to_string).collect();
        *sh.venue_names.lock().unwrap_or_else(|p| p.into_inner()) = names;
    }
}

fn pause(sh: &Shared, d: Duration) {
    let end = Instant::now() + d;
    while !sh.stop.load(Ordering::Relaxed) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20).min(d));
    }
}

/// One node's link: connect, subscribe, load, follow; reconnect with a backoff on any failure.
fn link(sh: Arc<Shared>, addr: SocketAddr, k: usize, quit: Arc<AtomicBool>) {
    let done = || sh.stop.load(Ordering::Relaxed) || quit.load(Ordering::Relaxed);
    let mut backoff = Duration::from_millis(100);
    let mut reported: Option<String> = None;
    while !done() {
        let mut up = false;
        let r = follow(&sh, addr, k, &done, &mut up, &mut reported);
        let now = sh.now_ns();
        sh.with_both(|c, out| c.link_down(k, now, out));
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

/// What one link subscribes to: the channels of the wanted symbols whose slot its node serves.
struct Subs<'a> {
    sh: &'a Shared,
    addr: SocketAddr,
    /// Only these symbols (None: every one).
    wanted: Option<HashSet<&'a str>>,
    /// The quote channels subscribed (each with its bars and venues channels), at most as many
    /// as the replica holds symbols: announcements of names that never get a value cannot grow
    /// this without bound.
    subscribed: HashSet<Vec<u8>>,
    command: &'static [u8],
    /// The charts of the symbols subscribed, to read.
    loads: BarLoads,
}

impl Subs<'_> {
    /// Subscribes to `sym`'s channels if its slot is this node's and it is wanted.
    fn want(&mut self, topo: &Topology, sym: &str, sub: &mut Conn) {
        let keys = &self.sh.keys;
        let ch = keys.quote(sym);
        if topo.nodes[topo.node_of(ch.as_bytes())] == self.addr
            && self.wanted.as_ref().is_none_or(|w| w.contains(sym))
            && self.subscribed.len() < self.sh.cfg.slots
            && self.subscribed.insert(ch.clone().into_bytes())
        {
            sub.queue_push(&[self.command, ch.as_bytes()]);
            sub.queue_push(&[self.command, keys.bars_channel(sym).as_bytes()]);
            sub.queue_push(&[self.command, keys.venues(sym).as_bytes()]);
            self.loads.expect(sym);
        }
    }

    /// Forgets the channels of slots this node no longer serves (the server has unsubscribed
    /// them, or will), so they are subscribed again should the slots come back.
    fn retain(&mut self, mine: impl Fn(u16) -> bool) {
        self.subscribed.retain(|ch| mine(key_slot(ch)));
    }
}

fn follow(
    sh: &Shared,
    addr: SocketAddr,
    k: usize,
    done: &dyn Fn() -> bool,
    up: &mut bool,
    reported: &mut Option<String>,
) -> Result<(), String> {
    let (Some(mut topo), mut version) = sh.topology() else {
        return Err(format!("redis {addr}: no slot map yet"));
    };
    let t = sh.cfg.timeout;
    let access = &sh.cfg.access;
    let mut sub = Conn::connect(addr, t, Duration::from_millis(100), access)?;
    let mut cmd = Conn::connect(addr, t, t, access)?;
    let keys = &sh.keys;
    let (hb, new) = (keys.heartbeat(), keys.new_symbols());
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
    sh.with_both(|c, out| c.link_up(k, now, out));
    sh.set_down(k, None);
    *up = true;
    if reported.take().is_some() {
        eprintln!("gateway: redis {addr}: connected again; resyncing its symbols");
    }
    let mut subs = Subs {
        sh,
        addr,
        wanted: sh
            .cfg
            .symbols
            .as_ref()
            .map(|v| v.iter().map(String::as_str).collect()),
        subscribed: HashSet::new(),
        command: if topo.cluster {
            b"SSUBSCRIBE"
        } else {
            b"SUBSCRIBE"
        },
        loads: BarLoads::new(sh.charts.clone()),
    };
    match &sh.cfg.symbols {
        Some(list) => {
            for s in list {
                subs.want(&topo, s, &mut sub);
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
                    subs.want(&topo, s, &mut sub);
                }
                if next == b"0" {
                    break;
                }
                cursor = next;
            }
        }
    }
    // its reply follows every confirmation of the subscriptions above: when it comes, the
    // values they asked for are loaded ([`Shared::set_loaded`])
    sub.queue_push(&[b"PING", LOADED_PING]);
    sub.flush()?;
    let mut nonblocking = false;
    let mut inbox = Inbox::default();
    while !done() {
        // while charts are still to load, read what has come without waiting for more
        if nonblocking != (sh.cfg.spin || subs.loads.reading()) {
            nonblocking = !nonblocking;
            sub.set_nonblocking(nonblocking)?;
        }
        // the slot map changed: drop what this node lost, subscribe to what it gained
        let (latest, v) = sh.topology();
        if v != version
            && let Some(latest) = latest
        {
            version = v;
            topo = latest;
            subs.retain(|slot| topo.nodes[topo.node_of_slot(slot)] == addr);
            let known: Vec<String> = match &sh.cfg.symbols {
                Some(list) => list.clone(),
                None => sh.with(|c, _| c.symbols()),
            };
            for s in &known {
                subs.want(&topo, s, &mut sub);
            }
        }
        // everything that has arrived up to a heartbeat or a slot's channels dropped, then the
        // GETs it asked for; those two are taken after the values that came before them, in
        // the order of the wire (a new epoch's heartbeat follows the rewrite of every key, and
        // taken first it would mark them stale until they were; a change published just before
        // its slot moved away, taken after the loss, would confirm the quote again through
        // the node that gave the slot away)
        let mut first = true;
        let mut beat = None;
        loop {
            let got = if first {
                sub.next(|r| classify(&r, keys, &hb, &new, &mut inbox))?
            } else {
                sub.next_buffered(|r| classify(&r, keys, &hb, &new, &mut inbox))?
            };
            first = false;
            match got {
                None => {
                    if subs.loads.reading() && !sh.loads_wanted() {
                        // charts wait for the bars thread: a moment, then the socket again
                        std::thread::sleep(Duration::from_micros(200));
                    } else if sh.cfg.spin && !subs.loads.reading() {
                        // keep the CPU awake, but let anything runnable have it
                        std::thread::yield_now();
                    }
                    break;
                }
                Some(Ok(Some(b))) => {
                    beat = Some(b);
                    break;
                }
                Some(Ok(None)) => {}
                Some(Err(e)) => {
                    sh.topology_changed.store(true, Ordering::Relaxed);
                    return Err(super::conn::err(addr, e));
                }
            }
            if !inbox.lost.is_empty()
                || inbox.values.len()
                    + inbox.gets.len()
                    + inbox.bars.len()
                    + inbox.venue_values.len()
                    + inbox.venue_loads.len()
                    >= 1024
            {
                break;
            }
        }
        if !inbox.lost.is_empty() || !inbox.moved.is_empty() {
            // slots moved away: the server dropped their channels, or refused them
            sh.slots_moved(inbox.lost.len() + inbox.moved.len());
            let moved = std::mem::take(&mut inbox.moved);
            subs.retain(|slot| !moved.contains(&slot));
            for s in &inbox.lost {
                subs.subscribed.remove(keys.quote(s).as_bytes());
            }
        }
        for s in std::mem::take(&mut inbox.news) {
            subs.want(&topo, &s, &mut sub);
        }
        sub.flush()?;
        let Inbox {
            gets,
            values,
            bar_loads,
            bars,
            venue_loads,
            venue_values,
            ..
        } = &mut inbox;
        // charts to load (later, a few a pass); until then their channel's bars are in the
        // lists to read
        for s in bar_loads.drain(..) {
            subs.loads.add(s);
        }
        bars.retain(|(sym, _)| !subs.loads.waits(sym));
        if !bars.is_empty() {
            sh.take_bars(BarWork::Live(std::mem::take(bars)));
        }
        let mut moved = Vec::new();
        if !gets.is_empty() {
            load(&mut cmd, sh, b"GET", gets, &mut moved, |r| {
                values.extend(r.bytes().map(<[u8]>::to_vec))
            })?;
            gets.clear();
        }
        if !venue_loads.is_empty() {
            // every venue's latest quote; later changes come on the channel
            load(&mut cmd, sh, b"HGETALL", venue_loads, &mut moved, |r| {
                // field, value, field, value, ...
                let fields = r.items().unwrap_or(&[]);
                let values = fields.iter().skip(1).step_by(2);
                venue_values.extend(values.filter_map(|x| x.bytes().map(<[u8]>::to_vec)));
            })?;
            venue_loads.clear();
        }
        if !moved.is_empty() {
            subs.retain(|slot| !moved.contains(&slot));
        }
        if !venue_values.is_empty() {
            sh.with_venues(|c, out| {
                for v in venue_values.drain(..) {
                    c.value(k, &v, out);
                }
            });
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
        if std::mem::take(&mut inbox.loaded) {
            sh.set_loaded(k);
        }
        let lost = std::mem::take(&mut inbox.lost);
        if !lost.is_empty() {
            sh.with_both(|c, out| {
                for s in &lost {
                    c.lost(k, &super::padded(s.as_bytes()), out);
                }
            });
        }
        if let Some(h) = beat.as_deref().and_then(Heartbeat::parse) {
            subs.loads.restoring(h.restoring);
            let now = sh.now_ns();
            sh.with_both(|c, out| c.heartbeat(k, &h, now, out));
        }
        // the quotes first, then a few charts
        if sh.loads_wanted() {
            subs.loads.read_some(&mut cmd, sh)?;
        }
    }
    Ok(())
}

/// The slot of a `MOVED SLOT HOST:PORT` or `ASK SLOT HOST:PORT` error, if it is one.
fn redirect_slot(e: &str) -> Option<u16> {
    super::cluster::redirect(e).map(|r| r.1)
}

/// Sends `command KEY` for each of `keys` in one pipeline and gives each reply to `f`. A key
/// whose slot moved (MOVED, ASK) is skipped, its slot put in `moved` and the supervisor told; a
/// key holding another type (`WRONGTYPE`: someone else's value in the key space, which the
/// publisher replaces) is taken as absent; any other error reply fails the link.
fn load(
    cmd: &mut Conn,
    sh: &Shared,
    command: &[u8],
    keys: &[Vec<u8>],
    moved: &mut Vec<u16>,
    mut f: impl FnMut(super::resp::Reply<'_>),
) -> Result<(), String> {
    for k in keys {
        cmd.queue(&[command, k]);
    }
    cmd.flush()?;
    let deadline = Instant::now() + sh.cfg.timeout;
    let mut failed = None;
    for key in keys {
        let e = cmd.next_by(deadline, |r| match r {
            super::resp::Reply::Error(e) if e.starts_with(b"WRONGTYPE") => {
                eprintln!(
                    "gateway: redis: {} holds another type, not a publisher's: taken as absent",
                    String::from_utf8_lossy(key)
                );
                f(super::resp::Reply::Bulk(None));
                None
            }
            super::resp::Reply::Error(e) => Some(String::from_utf8_lossy(e).into_owned()),
            r => {
                f(r);
                None
            }
        })?;
        match e.as_deref().map(|e| (redirect_slot(e), e)) {
            None => {}
            Some((Some(slot), _)) => {
                sh.slots_moved(1);
                moved.push(slot);
            }
            Some((None, e)) => {
                failed.get_or_insert_with(|| e.to_string());
            }
        }
    }
    match failed {
        Some(e) => Err(super::conn::err(cmd.addr(), e)),
        None => Ok(()),
    }
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
    /// Bar records from the channel, each with the channel's symbol.
    bars: Vec<(String, Vec<u8>)>,
    /// Venues hashes whose subscription was confirmed: to load.
    venue_loads: Vec<Vec<u8>>,
    /// Venue quote values (from the channel or a load).
    venue_values: Vec<Vec<u8>>,
    /// Symbols whose channels the server unsubscribed (their slot moved away).
    lost: Vec<String>,
    /// Slots of subscriptions the server redirected (MOVED, ASK).
    moved: Vec<u16>,
    /// The reply to the PING after the first subscriptions came ([`LOADED_PING`]).
    loaded: bool,
}

/// The argument of the PING sent after a link's first subscriptions: its `pong` follows their
/// confirmations.
const LOADED_PING: &[u8] = b"gateway-loaded";

/// Sorts one pushed message into `inbox`; a heartbeat is returned. An `Err` is an error reply
/// other than a redirect.
fn classify(
    r: &super::resp::Reply<'_>,
    keys: &Keys,
    hb: &str,
    new: &str,
    inbox: &mut Inbox,
) -> Result<Option<Vec<u8>>, String> {
    if let Some(e) = r.error() {
        return match redirect_slot(&e) {
            Some(slot) => {
                inbox.moved.push(slot);
                Ok(None)
            }
            None => Err(e),
        };
    }
    let it = r.items().unwrap_or(&[]);
    let kind = it.first().and_then(|x| x.bytes()).unwrap_or(b"");
    let ch = it.get(1).and_then(|x| x.bytes()).unwrap_or(b"");
    let payload = it.get(2).and_then(|x| x.bytes()).unwrap_or(b"");
    let name = |s: &[u8]| String::from_utf8_lossy(s).into_owned();
    match kind {
        b"pong" if ch == LOADED_PING => inbox.loaded = true,
        b"message" | b"smessage" if ch == hb.as_bytes() => {
            return Ok(Some(payload.to_vec()));
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
            let sym = keys.symbol_of_bars(ch).map(name).unwrap_or_default();
            inbox.bars.push((sym, payload.to_vec()))
        }
        b"message" | b"smessage" if keys.symbol_of_venues(ch).is_some() => {
            inbox.venue_values.push(payload.to_vec())
        }
        b"subscribe" | b"ssubscribe" if keys.symbol_of(ch).is_some() => {
            inbox.gets.push(ch.to_vec())
        }
        b"subscribe" | b"ssubscribe" if keys.symbol_of_venues(ch).is_some() => {
            inbox.venue_loads.push(ch.to_vec())
        }
        b"subscribe" | b"ssubscribe" => {
            if let Some(s) = keys.symbol_of_bars(ch) {
                inbox.bar_loads.push(name(s));
            }
        }
        b"sunsubscribe" => {
            // the slot moved to another node (the quote channel is enough to say which symbol)
            if let Some(s) = keys.symbol_of(ch) {
                inbox.lost.push(name(s));
            } else {
                inbox.moved.push(key_slot(ch));
            }
        }
        _ => {}
    }
    Ok(None)
}
