//! The replica's threads: a supervisor that finds the topology and restarts the links when it
//! changes, and one link per Redis node (a subscriber and a command connection) that subscribes,
//! loads each symbol once its subscription is confirmed, and follows what is published.

use super::Keys;
use super::cluster::Topology;
use super::conn::Conn;
use super::decode;
use super::discover;
use super::replica::Shared;
use std::collections::HashSet;
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

/// Finds the topology and runs one link per node; restarts them when the topology changes.
pub(super) fn supervise(sh: Arc<Shared>) {
    let mut backoff = Duration::from_millis(100);
    let mut prev: Option<Topology> = None;
    while !sh.stop.load(Ordering::Relaxed) {
        let known = prev.as_ref().map_or(&[][..], |t| &t.nodes[..]);
        let seeds = nodes_then_seeds(known, &sh.cfg.seeds);
        let topo = match discover(&seeds, sh.cfg.timeout, &sh.cfg.access) {
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
                sh.with_both(|c, out| {
                    for k in 0..c.links() {
                        c.link_down(k, now, out);
                    }
                });
                pause(&sh, backoff);
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        if prev.as_ref().is_some_and(|p| p.map_id != topo.map_id) {
            eprintln!(
                "gateway: the cluster's slot map changed; trusting nothing until the publisher \
                 has rewritten every key on it"
            );
        }
        let now = sh.now_ns();
        sh.with_both(|c, out| c.set_map(topo.map_id, now, out));
        prev = Some(topo.clone());
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
            sh.with_both(|c, out| c.tick(now, out));
            let moved = sh.topology_changed.swap(false, Ordering::Relaxed);
            if moved || Instant::now() >= next {
                next = Instant::now() + Duration::from_secs(5);
                match discover(
                    &nodes_then_seeds(&topo.nodes, &sh.cfg.seeds),
                    sh.cfg.timeout,
                    &sh.cfg.access,
                ) {
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
    let access = &sh.cfg.access;
    let mut sub = Conn::connect(addr, t, Duration::from_millis(100), access)?;
    let mut cmd = Conn::connect(addr, t, t, access)?;
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
    sh.with_both(|c, out| c.link_up(k, now, out));
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
    let mut subscribed: HashSet<Vec<u8>> = HashSet::new();
    // at most as many subscriptions as the replica holds symbols: announcements of names that
    // never get a value cannot grow this without bound
    let want = |sym: &str, sub: &mut Conn, subscribed: &mut HashSet<Vec<u8>>| {
        let ch = keys.quote(sym);
        if topo.node_of(ch.as_bytes()) == k
            && wanted.as_ref().is_none_or(|w| w.contains(sym))
            && subscribed.len() < sh.cfg.slots
            && subscribed.insert(ch.clone().into_bytes())
        {
            sub.queue_push(&[subscribe, ch.as_bytes()]);
            sub.queue_push(&[subscribe, keys.bars_channel(sym).as_bytes()]);
            sub.queue_push(&[subscribe, keys.venues(sym).as_bytes()]);
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
                    sh.with_both(|c, out| c.heartbeat(k, epoch.0, epoch.1, now, out));
                }
                Some(Ok(None)) => {}
                Some(Err(e)) => {
                    sh.topology_changed.store(true, Ordering::Relaxed);
                    return Err(super::conn::err(addr, e));
                }
            }
            if inbox.values.len()
                + inbox.gets.len()
                + inbox.bars.len()
                + inbox.venue_values.len()
                + inbox.venue_loads.len()
                >= 1024
            {
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
            venue_loads,
            venue_values,
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
            load(&mut cmd, sh, b"GET", gets, |r| {
                values.extend(r.bytes().map(<[u8]>::to_vec))
            })?;
            gets.clear();
        }
        if !venue_loads.is_empty() {
            // every venue's latest quote; later changes come on the channel
            load(&mut cmd, sh, b"HGETALL", venue_loads, |r| {
                // field, value, field, value, ...
                let fields = r.items().unwrap_or(&[]);
                let values = fields.iter().skip(1).step_by(2);
                venue_values.extend(values.filter_map(|x| x.bytes().map(<[u8]>::to_vec)));
            })?;
            venue_loads.clear();
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
    }
    Ok(())
}

/// Sends `command KEY` for each of `keys` in one pipeline and gives each reply to `f`. An error
/// reply fails the link (MOVED or ASK also says the cluster moved slots).
fn load(
    cmd: &mut Conn,
    sh: &Shared,
    command: &[u8],
    keys: &[Vec<u8>],
    mut f: impl FnMut(super::resp::Reply<'_>),
) -> Result<(), String> {
    for k in keys {
        cmd.queue(&[command, k]);
    }
    cmd.flush()?;
    let deadline = Instant::now() + sh.cfg.timeout;
    for _ in 0..keys.len() {
        let failed = cmd.next_by(deadline, |r| match r {
            super::resp::Reply::Error(e) => Some(String::from_utf8_lossy(e).into_owned()),
            r => {
                f(r);
                None
            }
        })?;
        if let Some(e) = failed {
            if e.starts_with("MOVED") || e.starts_with("ASK") {
                sh.topology_changed.store(true, Ordering::Relaxed);
            }
            return Err(super::conn::err(cmd.addr(), e));
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
    /// Venues hashes whose subscription was confirmed: to load.
    venue_loads: Vec<Vec<u8>>,
    /// Venue quote values (from the channel or a load).
    venue_values: Vec<Vec<u8>>,
}

/// Sorts one pushed message into `inbox`; a heartbeat gives its epoch and slot map. An `Err` is a sign the
/// cluster moved slots (a forced unsubscribe, MOVED).
fn classify(
    r: &super::resp::Reply<'_>,
    keys: &Keys,
    hb: &str,
    new: &str,
    inbox: &mut Inbox,
) -> Result<Option<(u64, u64)>, String> {
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
            // "EPOCH_NS SENT_NS MAP_ID"
            let f: Vec<u64> = std::str::from_utf8(payload)
                .unwrap_or("")
                .split(' ')
                .filter_map(|x| x.parse().ok())
                .collect();
            return Ok((f.len() == 3).then(|| (f[0], f[2])));
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
            return Err(format!(
                "the server unsubscribed {}",
                String::from_utf8_lossy(ch)
            ));
        }
        _ => {}
    }
    Ok(None)
}
