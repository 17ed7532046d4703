//! The Redis hop benchmark (`bench redis`), against a real redis-server (or a Redis Cluster,
//! `--cluster N`) started here:
//!
//! 1. Added latency of the hop: `gateway synth` writes a quote table at a fixed change rate
//!    (each change stamped with its table publish time), `gateway publish` (a process, as
//!    deployed) writes the changes into Redis, and a replica in this process (the code a remote
//!    gateway runs) takes them; the histogram is replica time minus table publish time, and,
//!    separately, minus the publisher's own stamp (Redis and the network alone). Run with the
//!    replica busy-polling, then sleeping in `read`, then busy-polling with chart bars closing
//!    at each second's start (`--bars-per-s`).
//!    Then, on a plain server (`--no-resync` to skip): every symbol's two bar lists filled (600
//!    bars each, as late in a trading day) and a replica started as a remote gateway runs it:
//!    how long until it holds every symbol, until it has loaded every list, how many lists it
//!    loaded (more than two a symbol: Redis dropped it and it loaded them again), and the hop of
//!    the changes published while it loaded them.
//!    Then (`--no-restore` to skip), on a server of its own, with a remote gateway's replica
//!    subscribed to every symbol: a publisher following a bar log of 600 s of every symbol's
//!    1-second bars writes it all, each bar published (`redis_backlog_bars_per_s`; the quotes'
//!    hop meanwhile, `redis_backlog_hop_*`; every list read back, `redis_backlog_wrong_lists`);
//!    the log grows by another hour while no publisher runs (Redis' position set past it, as
//!    if one had written it), a publisher follows it again, Redis restarts empty, and the
//!    publisher restores the lists from the log: how long until the node's mark says they are
//!    whole (`redis_restore_s`), until a bar appended to the log just after the restart is in
//!    its list (`redis_restore_new_bar_s`), every list read back
//!    (`redis_restore_wrong_lists`), and the hop of the quote changes meanwhile
//!    (`redis_restore_hop_*`, from 2 s after the restart).
//! 2. The highest change rate one publisher sustains: a publisher in this process writes batches
//!    of distinct symbols' changes (a 1 ms tick's worth at 1M changes/s) as fast as Redis takes
//!    them, with one replica subscribed to every symbol; afterwards the replica must hold every
//!    symbol's last value.

use crate::load::save_hdr;
use crate::procs::{Kill, exe, wait_until};
use crate::report;
use book::quotes::Quote;
use gateway::redis::publish::{Publisher, PublisherCfg};
use gateway::redis::replica::{Replica, ReplicaCfg};
use gateway::redis::server::{self, RedisServer};
use hdrhistogram::Histogram;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Options.
#[derive(Debug, Clone)]
pub struct RedisBench {
    /// Quote changes per second for the latency run.
    pub rate: u64,
    /// Symbols.
    pub symbols: usize,
    /// Seconds measured in the latency run (after 2 s of warm-up).
    pub duration_s: u64,
    /// Seconds of the throughput run.
    pub max_s: u64,
    /// The publisher's sleep when the table had nothing new, µs.
    pub idle_us: u64,
    /// The publisher's changes per pipeline.
    pub pipeline: usize,
    /// 0: one plain redis-server; N: a Redis Cluster of N masters.
    pub cluster: usize,
    /// The synthetic market writes what is due every this many µs.
    pub tick_us: u64,
    /// Bars closing at each second's start in a third run of the hop (0: no such run).
    pub bars_per_s: usize,
    /// A fourth run: a replica starting while every symbol's bar lists are full (a plain
    /// server only).
    pub resync: bool,
    /// A fifth run: Redis restarting empty under a publisher with a long bar log.
    pub restore: bool,
    /// Where `.hdr` files go.
    pub results: std::path::PathBuf,
}

/// A plain server, or a cluster of `masters`: (the processes, their addresses).
fn start_redis(masters: usize) -> Result<(Vec<RedisServer>, Vec<SocketAddr>), String> {
    if !server::installed() {
        return Err("redis-server and redis-cli are needed: apt-get install redis-server".into());
    }
    let dir = std::env::temp_dir().join(format!("bench-redis-{}", std::process::id()));
    let nodes = if masters == 0 {
        vec![RedisServer::start_free(&dir, false, &[])?]
    } else {
        server::cluster(masters, &dir)?
    };
    let addrs = nodes.iter().map(RedisServer::addr).collect();
    Ok((nodes, addrs))
}

fn now_ns() -> u64 {
    gateway::redis::now_ns()
}

fn print_hist(name: &str, h: &Histogram<u64>, extra: &[(&str, String)]) {
    for (q, tag) in [(0.5, "p50"), (0.99, "p99"), (0.999, "p999")] {
        report(
            &format!("{name}_{tag}_us"),
            h.value_at_quantile(q) as f64,
            "us",
            extra,
        );
    }
    report(&format!("{name}_max_us"), h.max() as f64, "us", extra);
}

type Hist = Histogram<u64>;

/// A replica in this process for `o.duration_s` after 2 s of warm-up: (table publish to
/// replica, publisher stamp to replica, changes taken, seconds).
fn hop(o: &RedisBench, redis: &[SocketAddr], spin: bool) -> Result<(Hist, Hist, u64, f64), String> {
    let stop: &'static AtomicBool = Box::leak(Box::new(AtomicBool::new(false)));
    let from_table = Arc::new(Mutex::new(
        Hist::new_with_bounds(1, 60_000_000, 3).expect("bounds"),
    ));
    let from_publisher = Arc::new(Mutex::new(
        Hist::new_with_bounds(1, 60_000_000, 3).expect("bounds"),
    ));
    let recording = Arc::new(AtomicBool::new(false));
    let taken = Arc::new(AtomicU64::new(0));
    let mut rc = ReplicaCfg::new(redis.to_vec());
    rc.slots = o.symbols.max(16);
    rc.spin = spin;
    {
        let (a, b, rec, n) = (
            from_table.clone(),
            from_publisher.clone(),
            recording.clone(),
            taken.clone(),
        );
        rc.on_value = Some(Arc::new(move |q: &Quote, pub_ns: u64| {
            if !rec.load(Ordering::Relaxed) {
                return;
            }
            let now = now_ns();
            n.fetch_add(1, Ordering::Relaxed);
            let _ = a
                .lock()
                .expect("hist")
                .record((now.saturating_sub(q.recv_ns) / 1000).max(1));
            let _ = b
                .lock()
                .expect("hist")
                .record((now.saturating_sub(pub_ns) / 1000).max(1));
        }));
    }
    let replica = Replica::start(rc, stop)?;
    wait_until("the replica to hold every symbol", 30, || {
        replica.counts().0 >= o.symbols
    })?;
    eprintln!(
        "redis: replica {}: {} changes/s over {} symbols; warming up 2 s, then {} s",
        if spin {
            "busy-polling"
        } else {
            "sleeping in read"
        },
        o.rate,
        o.symbols,
        o.duration_s
    );
    std::thread::sleep(Duration::from_secs(2));
    recording.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(o.duration_s));
    recording.store(false, Ordering::Relaxed);
    let secs = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    replica.join();
    let n = taken.load(Ordering::Relaxed);
    let h = from_table.lock().expect("hist").clone();
    let w = from_publisher.lock().expect("hist").clone();
    Ok((h, w, n, secs))
}

/// The synthetic market's symbol `i`'s bar at `interval_s` starting at `start_ns` (ns since
/// midnight) of trading day `day`, with the same made-up prices each time.
fn synth_bar(i: usize, interval_s: u8, start_ns: u64, day: u32) -> book::barlog::BarRecord {
    let mut symbol = *b"        ";
    let name = gateway::synth::symbol_name(i);
    symbol[..name.len()].copy_from_slice(name.as_bytes());
    book::barlog::BarRecord {
        symbol,
        channel: 0,
        interval_s,
        bar: book::bars::Bar {
            start_ns,
            open: 1_000_000,
            high: 1_000_500,
            low: 999_500,
            close: 1_000_100,
            volume: 300,
            trades: 3,
            first_ns: start_ns + 1_000,
            last_ns: start_ns + 900_000_000,
        },
        revision: false,
        day,
    }
}

/// Appends `per_s` bars (of the synthetic market's first symbols) to the bar log beside the
/// quote table at `table` at each second's start, as the 1-second bars of that many symbols
/// close together in a busy market, until `stop`; the bars written.
fn bar_writer(
    table: &std::path::Path,
    per_s: usize,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<u64>, String> {
    use book::barlog::{BarLogWriter, beside};
    let path = beside(table);
    let mut log = BarLogWriter::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(std::thread::spawn(move || {
        let mut written = 0;
        let mut second = now_ns() / 1_000_000_000;
        while !stop.load(Ordering::Relaxed) {
            let now = now_ns() / 1_000_000_000;
            if now == second {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            second = now;
            let start_ns = (second % 86_400) * 1_000_000_000;
            for i in 0..per_s {
                // the synthetic market's symbols: the replica follows their bars too
                let r = synth_bar(i, 1, start_ns, log.day());
                if log.append(r).is_ok() {
                    written += 1;
                }
            }
            let _ = log.flush();
        }
        let _ = std::fs::remove_file(&path);
        written
    }))
}

/// Bars per list when the lists are full (the publisher trims to these).
const LIST_BARS: usize = 600;

/// Fills both bar lists (1 s and 1 min) of each of the synthetic market's `symbols` with
/// [`LIST_BARS`] bars, as they stand late in a trading day, through a plain server at `addr`.
fn fill_lists(addr: SocketAddr, symbols: usize) -> Result<(), String> {
    let keys = gateway::redis::Keys::new("quotes");
    let day = (now_ns() / 86_400_000_000_000) as u32;
    let lists = (0..symbols).flat_map(|i| {
        let name = gateway::synth::symbol_name(i);
        [1u8, 60].map(|interval_s| {
            let records = (0..LIST_BARS as u64)
                .map(|k| {
                    let start_ns = 14 * 3_600_000_000_000 + k * interval_s as u64 * 1_000_000_000;
                    let mut r = synth_bar(i, interval_s, start_ns, day);
                    r.bar.close += k as u32;
                    r.to_bytes().to_vec()
                })
                .collect();
            (keys.bars(&name, interval_s), records)
        })
    });
    server::fill_lists(addr, lists)
}

/// A remote gateway starting (or resubscribing after Redis came back) while every symbol's
/// charts are full: a replica sleeping in `read`, as a gateway runs by default, started with the
/// quotes flowing. (ms until it held every symbol, ms until it had loaded every list, lists
/// loaded, the hop of the changes published meanwhile).
fn resync(o: &RedisBench, redis: &[SocketAddr]) -> Result<(f64, f64, u64, Hist), String> {
    let stop: &'static AtomicBool = Box::leak(Box::new(AtomicBool::new(false)));
    let hop = Arc::new(Mutex::new(
        Hist::new_with_bounds(1, 600_000_000, 3).expect("bounds"),
    ));
    let mut rc = ReplicaCfg::new(redis.to_vec());
    rc.slots = o.symbols.max(16);
    let start_ns = now_ns();
    let loading = Arc::new(AtomicBool::new(true));
    {
        let (h, loading) = (hop.clone(), loading.clone());
        rc.on_value = Some(Arc::new(move |q: &Quote, _pub_ns: u64| {
            // the changes published since the replica started, until every list is in
            if q.recv_ns >= start_ns && loading.load(Ordering::Relaxed) {
                let age_us = now_ns().saturating_sub(q.recv_ns) / 1000;
                let _ = h.lock().expect("hist").record(age_us.max(1));
            }
        }));
    }
    let t0 = Instant::now();
    let replica = Replica::start(rc, stop)?;
    let lists = 2 * o.symbols as u64;
    let mut held_ms = None;
    while replica.bar_lists_loaded() < lists {
        if held_ms.is_none() && replica.counts().0 >= o.symbols {
            held_ms = Some(t0.elapsed().as_secs_f64() * 1e3);
        }
        if t0.elapsed() > Duration::from_secs(300) {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let lists_ms = t0.elapsed().as_secs_f64() * 1e3;
    loading.store(false, Ordering::Relaxed);
    wait_until("the replica to hold every symbol", 60, || {
        replica.counts().0 >= o.symbols
    })?;
    let held_ms = held_ms.unwrap_or_else(|| t0.elapsed().as_secs_f64() * 1e3);
    // a little longer: a link the server dropped would load its lists again
    std::thread::sleep(Duration::from_secs(2));
    let loaded = replica.bar_lists_loaded();
    stop.store(true, Ordering::Relaxed);
    replica.join();
    let h = hop.lock().expect("hist").clone();
    Ok((held_ms, lists_ms, loaded, h))
}

/// Seconds of one-second bars of every symbol the restore run's publisher writes at first.
const RESTORE_SECONDS: u64 = 600;

/// Seconds of them appended to the log while no publisher runs (Redis' position set past
/// them): a restore reads the whole log again, [`RESTORE_SECONDS`] + these.
const RESTORE_MORE_SECONDS: u64 = 3_600;

/// The backlog's and the restore's quote hop is taken from this long after the publisher
/// started, or Redis restarted: the changes stamped before waited for the publisher to connect
/// (to reconnect, once Redis is back).
const RESTORE_HOP_AFTER: Duration = Duration::from_secs(2);

/// What a restore run measured.
struct Restored {
    /// Seconds the first write of the log took, the bars in it, the quotes' hop meanwhile
    /// (from [`RESTORE_HOP_AFTER`] after the publisher started) and the lists it left wrong.
    backlog_s: f64,
    backlog_bars: u64,
    backlog_hop: Hist,
    backlog_wrong: u64,
    /// Seconds the restore took, the bars in the whole log, the quotes' hop meanwhile and the
    /// lists it left wrong.
    restore_s: f64,
    in_log: u64,
    restore_hop: Hist,
    restore_wrong: u64,
    /// Seconds until a bar closed just after the restart was in its list.
    new_bar_s: f64,
}

/// A Redis that restarts empty while the book's bar log holds [`RESTORE_SECONDS`] +
/// [`RESTORE_MORE_SECONDS`] seconds of one-second bars of every symbol, with a publisher
/// (`gateway publish`) following it and a synthetic market: a server of its own, started and
/// restarted here, and a remote gateway's replica subscribed to every symbol throughout.
fn restore(o: &RedisBench) -> Result<Restored, String> {
    use book::barlog::{BarLogWriter, beside};
    use gateway::redis::conn::{Access, Conn};
    let dir = std::env::temp_dir().join(format!("bench-redis-restore-{}", std::process::id()));
    let mut server = RedisServer::start_free(&dir, false, &[])?;
    let addr = server.addr();
    let table = format!("bench-restore-{}.quotes", std::process::id());
    let table_path = feed_handler::ring::ring_path(&table);
    let log_path = beside(&table_path);
    let mut log =
        BarLogWriter::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
    let bar = |i: usize, sec: u64, day: u32| {
        synth_bar(i, 1, 10 * 3_600_000_000_000 + sec * 1_000_000_000, day)
    };
    let day = log.day();
    for sec in 0..RESTORE_SECONDS {
        for i in 0..o.symbols {
            log.append(bar(i, sec, day)).map_err(|e| e.to_string())?;
        }
    }
    log.flush().map_err(|e| e.to_string())?;
    let bars = RESTORE_SECONDS * o.symbols as u64;
    let end = log.len();
    let mut synth = Kill::default();
    synth.0.push(
        Command::new(exe("gateway"))
            .args(["synth", "--quotes", &table])
            .args(["--symbols", &o.symbols.to_string()])
            .args(["--rate", &o.rate.to_string()])
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("gateway synth: {e}"))?,
    );
    wait_until("the synthetic quote table", 10, || table_path.exists())?;
    let publisher = || -> Result<Kill, String> {
        let child = Command::new(exe("gateway"))
            .args(["publish", "--quotes", &table])
            .args(["--redis", &format!("redis://{addr}")])
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("gateway publish: {e}"))?;
        Ok(Kill(vec![child]))
    };
    // a remote gateway's replica, sleeping in `read` as a gateway runs by default: the hop of
    // the changes published while the backlog is written, then while the lists are restored
    let stop: &'static AtomicBool = Box::leak(Box::new(AtomicBool::new(false)));
    let hop = Arc::new(Mutex::new(
        Hist::new_with_bounds(1, 600_000_000, 3).expect("bounds"),
    ));
    let (from_ns, until_ns) = (
        Arc::new(AtomicU64::new(u64::MAX)),
        Arc::new(AtomicU64::new(u64::MAX)),
    );
    let mut rc = ReplicaCfg::new(vec![addr]);
    rc.slots = o.symbols.max(16);
    {
        let (h, from, until) = (hop.clone(), from_ns.clone(), until_ns.clone());
        rc.on_value = Some(Arc::new(move |q: &Quote, _pub_ns: u64| {
            let stamp = q.recv_ns;
            if stamp >= from.load(Ordering::Relaxed) && stamp < until.load(Ordering::Relaxed) {
                let age_us = now_ns().saturating_sub(stamp) / 1000;
                let _ = h.lock().expect("hist").record(age_us.max(1));
            }
        }));
    }
    let replica = Replica::start(rc, stop)?;
    // a phase's hop is taken from `after` its start until its end; then the histogram is
    // emptied for the next
    let phase_began = |after: Duration| {
        from_ns.store(now_ns() + after.as_nanos() as u64, Ordering::Relaxed);
        until_ns.store(u64::MAX, Ordering::Relaxed);
    };
    let phase_ended = || until_ns.store(now_ns(), Ordering::Relaxed);
    let phase_hop = || {
        let mut h = hop.lock().expect("hist");
        let taken = h.clone();
        h.reset();
        taken
    };
    let t0 = Instant::now();
    let first = publisher()?;
    phase_began(RESTORE_HOP_AFTER);
    let keys = gateway::redis::Keys::new("quotes");
    let position = keys.bar_position();
    let written = |want: u64| {
        server::cli(addr.port(), &["GET", &position])
            .trim()
            .split_once(' ')
            .and_then(|(_, off)| off.parse::<u64>().ok())
            == Some(want)
    };
    wait_until("the publisher to write the whole bar log", 600, || {
        written(end)
    })?;
    let backlog_s = t0.elapsed().as_secs_f64();
    phase_ended();
    let backlog_hop = phase_hop();
    let t = Duration::from_secs(5);
    let mut c = Conn::connect(addr, t, t, &Access::default())?;
    // every list as it should be: its symbol's latest bars, each once, in order
    let keep = gateway::bars::KEEP as u64;
    let wrong_lists = |c: &mut Conn, what: &str, last_of: &dyn Fn(usize) -> u64| {
        let mut wrong = 0;
        for i in 0..o.symbols {
            let l = keys.bars(&gateway::synth::symbol_name(i), 1);
            let last = last_of(i);
            let want: Vec<Vec<u8>> = (last + 1 - keep..=last)
                .map(|s| bar(i, s, day).to_bytes().to_vec())
                .collect();
            let got = c.call(&[b"LRANGE", l.as_bytes(), b"0", b"-1"], t, |r| match r {
                gateway::redis::resp::Reply::Array(Some(items)) => items
                    .iter()
                    .map(|x| x.bytes().unwrap_or_default().to_vec())
                    .collect::<Vec<_>>(),
                _ => Vec::new(),
            })?;
            if got != want {
                if wrong == 0 {
                    eprintln!(
                        "redis: {l} {what} wrong: {} bars, {} expected",
                        got.len(),
                        want.len()
                    );
                }
                wrong += 1;
            }
        }
        Ok::<u64, String>(wrong)
    };
    let backlog_wrong = wrong_lists(&mut c, "written", &|_| RESTORE_SECONDS - 1)?;
    // its mark says the lists are whole (else the next publisher would check them all again)
    let mark = keys
        .node_mark(&gateway::redis::cluster::Topology::single(addr), 0)
        .ok_or("no mark key")?;
    wait_until("the publisher to mark the lists whole", 60, || {
        server::cli(addr.port(), &["EXISTS", &mark]).trim() == "1"
    })?;
    drop(first);
    // the rest of the log, as if a publisher had written it: Redis' position past it
    eprintln!("redis: {RESTORE_MORE_SECONDS} s more of bars in the log");
    for sec in RESTORE_SECONDS..RESTORE_SECONDS + RESTORE_MORE_SECONDS {
        for i in 0..o.symbols {
            log.append(bar(i, sec, day)).map_err(|e| e.to_string())?;
        }
    }
    log.flush().map_err(|e| e.to_string())?;
    let identity = log.created_ns();
    let end = log.len();
    server::cli(
        addr.port(),
        &["SET", &position, &format!("{identity} {end}")],
    );
    // a publisher follows it again: once it wrote a bar appended now, it stands at the end
    let _publisher = publisher()?;
    let seconds = RESTORE_SECONDS + RESTORE_MORE_SECONDS;
    log.append(bar(1, seconds, day))
        .map_err(|e| e.to_string())?;
    log.flush().map_err(|e| e.to_string())?;
    let end = log.len();
    wait_until("the publisher to go on at the log's end", 120, || {
        written(end)
    })?;
    let in_log = seconds * o.symbols as u64 + 1;
    wait_until("the replica to hold every symbol", 30, || {
        replica.counts().0 >= o.symbols
    })?;
    // Redis restarts empty; a bar closes just after
    server.kill();
    server.restart()?;
    let t1 = Instant::now();
    phase_began(RESTORE_HOP_AFTER);
    let newest = bar(0, seconds, day);
    log.append(newest).map_err(|e| e.to_string())?;
    log.flush().map_err(|e| e.to_string())?;
    let list = keys.bars(&gateway::synth::symbol_name(0), 1);
    // (a new connection: Redis restarted)
    let mut c = Conn::connect(addr, t, t, &Access::default())?;
    let (mut whole_s, mut new_s) = (None, None);
    while whole_s.is_none() || new_s.is_none() {
        if t1.elapsed() > Duration::from_secs(1800) {
            return Err("the restore did not end in 30 minutes".into());
        }
        std::thread::sleep(Duration::from_millis(50));
        let last = c.call(&[b"LINDEX", list.as_bytes(), b"-1"], t, |r| {
            r.bytes().map(<[u8]>::to_vec)
        })?;
        if new_s.is_none() && last.as_deref() == Some(&newest.to_bytes()[..]) {
            new_s = Some(t1.elapsed().as_secs_f64());
        }
        let marked = c.call(&[b"EXISTS", mark.as_bytes()], t, |r| {
            matches!(r, gateway::redis::resp::Reply::Int(1))
        })?;
        if whole_s.is_none() && marked {
            whole_s = Some(t1.elapsed().as_secs_f64());
            phase_ended();
        }
    }
    stop.store(true, Ordering::Relaxed);
    replica.join();
    // (symbols 0 and 1 had one more bar appended, before and after the restart)
    let last_of = |i: usize| if i <= 1 { seconds } else { seconds - 1 };
    let restore_wrong = wrong_lists(&mut c, "restored", &last_of)?;
    let restore_hop = phase_hop();
    drop(_publisher);
    drop(synth);
    let _ = std::fs::remove_file(&log_path);
    Ok(Restored {
        backlog_s,
        backlog_bars: bars,
        backlog_hop,
        backlog_wrong,
        restore_s: whole_s.unwrap_or_default(),
        in_log,
        restore_hop,
        restore_wrong,
        new_bar_s: new_s.unwrap_or_default(),
    })
}

/// Runs the benchmark.
pub fn run(o: &RedisBench) -> Result<(), String> {
    let (_servers, redis) = start_redis(o.cluster)?;
    let url = format!(
        "redis://{}",
        redis
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    let shape = if o.cluster == 0 {
        "server".to_string()
    } else {
        format!("cluster{}", o.cluster)
    };
    eprintln!("redis: {shape} at {url}");
    let stop: &'static AtomicBool = Box::leak(Box::new(AtomicBool::new(false)));

    // 1. the hop at a fixed rate
    let table = format!("bench-redis-{}.quotes", std::process::id());
    let mut synth = Kill::default();
    synth.0.push(
        Command::new(exe("gateway"))
            .args([
                "synth",
                "--quotes",
                &table,
                "--symbols",
                &o.symbols.to_string(),
            ])
            .args(["--rate", &o.rate.to_string()])
            .args(["--tick-us", &o.tick_us.to_string()])
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("gateway synth: {e}"))?,
    );
    let table_path = feed_handler::ring::ring_path(&table);
    wait_until("the synthetic quote table", 10, || table_path.exists())?;
    synth.0.push(
        Command::new(exe("gateway"))
            .args(["publish", "--quotes", &table, "--redis", &url])
            .args(["--idle-us", &o.idle_us.to_string()])
            .args(["--pipeline", &o.pipeline.to_string()])
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("gateway publish: {e}"))?,
    );
    // the replica as `--redis-spin` runs it (the figure the goal is about), then as it runs by
    // default (sleeping in read)
    let mut hists = Vec::new();
    for spin in [true, false] {
        let (h, w, n, secs) = hop(o, &redis, spin)?;
        let name = if spin {
            "redis_hop"
        } else {
            "redis_hop_blocking"
        };
        let extra = [
            ("rate", o.rate.to_string()),
            ("changes", n.to_string()),
            ("replica", if spin { "spin" } else { "block" }.to_string()),
            ("publisher_idle_us", o.idle_us.to_string()),
            ("pipeline", o.pipeline.to_string()),
            ("redis", shape.clone()),
            ("synth_tick_us", o.tick_us.to_string()),
        ];
        print_hist(name, &h, &extra);
        print_hist(&name.replace("hop", "wire"), &w, &extra);
        report(
            &format!("{name}_changes_per_s"),
            n as f64 / secs,
            "changes/s",
            &[("offered", o.rate.to_string())],
        );
        hists.push((name, h));
    }
    if o.bars_per_s > 0 {
        // the same with chart bars closing: the publisher writes them between quotes
        eprintln!(
            "redis: and {} bars closing at each second's start",
            o.bars_per_s
        );
        let stop_bars = Arc::new(AtomicBool::new(false));
        let w = bar_writer(&table_path, o.bars_per_s, stop_bars.clone())?;
        let run = hop(o, &redis, true);
        stop_bars.store(true, Ordering::Relaxed);
        let bars = w.join().map_err(|_| "the bar writer panicked")?;
        let (h, _, n, secs) = run?;
        let extra = [
            ("rate", o.rate.to_string()),
            ("changes", n.to_string()),
            ("bars_per_s", o.bars_per_s.to_string()),
            ("bars", bars.to_string()),
            ("replica", "spin".to_string()),
            ("redis", shape.clone()),
        ];
        print_hist("redis_hop_bars", &h, &extra);
        report(
            "redis_hop_bars_changes_per_s",
            n as f64 / secs,
            "changes/s",
            &[("offered", o.rate.to_string())],
        );
        hists.push(("redis_hop_bars", h));
    }
    if o.resync && o.cluster == 0 {
        eprintln!(
            "redis: filling {} bar lists of {LIST_BARS} bars",
            2 * o.symbols
        );
        fill_lists(redis[0], o.symbols)?;
        eprintln!("redis: a replica starting with every chart full");
        let (held_ms, lists_ms, loaded, h) = resync(o, &redis)?;
        let extra = [
            ("symbols", o.symbols.to_string()),
            ("lists", (2 * o.symbols).to_string()),
            ("bars_per_list", LIST_BARS.to_string()),
            ("rate", o.rate.to_string()),
            ("replica", "block".to_string()),
        ];
        report("redis_resync_held_ms", held_ms, "ms", &extra);
        report("redis_resync_lists_ms", lists_ms, "ms", &extra);
        report("redis_resync_lists_loaded", loaded as f64, "lists", &extra);
        print_hist("redis_resync_hop", &h, &extra);
        hists.push(("redis_resync_hop", h));
    }
    drop(synth); // publisher then synth
    if o.restore {
        eprintln!(
            "redis: a bar log of {RESTORE_SECONDS} s of every symbol's 1-second bars, then {RESTORE_MORE_SECONDS} s more, then Redis restarting empty"
        );
        let r = restore(o)?;
        let extra = [
            ("bars", r.backlog_bars.to_string()),
            ("symbols", o.symbols.to_string()),
            ("rate", o.rate.to_string()),
        ];
        report(
            "redis_backlog_bars_per_s",
            r.backlog_bars as f64 / r.backlog_s,
            "bars/s",
            &extra,
        );
        report(
            "redis_backlog_wrong_lists",
            r.backlog_wrong as f64,
            "lists",
            &extra,
        );
        print_hist("redis_backlog_hop", &r.backlog_hop, &extra);
        hists.push(("redis_backlog_hop", r.backlog_hop));
        // the log read again, and the bars its lists keep
        let extra = [
            ("bars", r.in_log.to_string()),
            ("kept", (o.symbols * gateway::bars::KEEP).to_string()),
            ("symbols", o.symbols.to_string()),
            ("rate", o.rate.to_string()),
        ];
        report("redis_restore_s", r.restore_s, "s", &extra);
        report(
            "redis_restore_bars_per_s",
            r.in_log as f64 / r.restore_s,
            "bars/s",
            &extra,
        );
        report("redis_restore_new_bar_s", r.new_bar_s, "s", &extra);
        report(
            "redis_restore_wrong_lists",
            r.restore_wrong as f64,
            "lists",
            &extra,
        );
        print_hist("redis_restore_hop", &r.restore_hop, &extra);
        hists.push(("redis_restore_hop", r.restore_hop));
    }
    std::fs::create_dir_all(&o.results).map_err(|e| e.to_string())?;
    for (name, h) in &hists {
        let hdr = o
            .results
            .join(format!("{}-{shape}.hdr", name.replace('_', "-")));
        save_hdr(h, &hdr)?;
        eprintln!("redis: histogram in {}", hdr.display());
    }

    // 2. one publisher's top rate
    let symbols = 10_000usize;
    let mut pc = PublisherCfg::new(redis.clone());
    pc.prefix = "max".into();
    pc.max_pipeline = o.pipeline;
    let mut p = Publisher::new(pc);
    let mut rc = ReplicaCfg::new(redis.clone());
    rc.prefix = "max".into();
    rc.slots = symbols;
    let sink = Replica::start(rc, stop)?;
    let mut q = Quote {
        bid: Some((1_000_000, 100)),
        ask: Some((1_000_100, 100)),
        state: b'T',
        ..Quote::default()
    };
    let name = |i: usize| {
        let mut s = *b"M       ";
        s[1..6].copy_from_slice(format!("{i:05}").as_bytes());
        s
    };
    for i in 0..symbols {
        q.symbol = name(i);
        p.offer(&q);
    }
    p.flush();
    if !p.connected() {
        return Err(format!("publisher: {}", p.down.clone().unwrap_or_default()));
    }
    wait_until("the sink replica to hold every symbol", 30, || {
        sink.counts().0 >= symbols
    })?;
    let batch = 1000;
    let t0 = Instant::now();
    let mut sent = 0u64;
    let mut k = 0usize;
    while t0.elapsed() < Duration::from_secs(o.max_s) {
        for _ in 0..batch {
            q.symbol = name(k % symbols);
            q.volume = sent;
            q.recv_ns = now_ns();
            p.offer(&q);
            k += 1;
            sent += 1;
        }
        if p.flush() != batch {
            return Err(format!("publisher: {}", p.down.clone().unwrap_or_default()));
        }
        p.tick();
    }
    let secs = t0.elapsed().as_secs_f64();
    report(
        "redis_max_changes_per_s",
        sent as f64 / secs,
        "changes/s",
        &[
            ("offered_batch", batch.to_string()),
            ("pipeline", o.pipeline.to_string()),
            ("symbols", symbols.to_string()),
            ("subscribers", "1".into()),
            ("redis", shape.clone()),
        ],
    );
    // the sink must end with every symbol's last value
    let last = sent - 1;
    let path = sink.path.clone();
    let r = book::quotes::QuoteReader::attach(&path)?;
    let mut behind = usize::MAX;
    let _ = wait_until("the sink replica to catch up", 30, || {
        behind = (0..r.slots())
            .filter_map(|i| r.read(i))
            .filter(|x| x.volume + symbols as u64 <= last)
            .count();
        behind == 0
    });
    report("redis_max_lost_symbols", behind as f64, "symbols", &[]);
    stop.store(true, Ordering::Relaxed);
    sink.join();
    Ok(())
}
