//! Fan-out benchmark (`bench fanout`): the gateway under many WebSocket clients, fed by the
//! synthetic market (`gateway synth`: N symbols, M updates/s, each stamped with its publish
//! time), with the load client in separate processes (`bench fanout-client`).
//!
//! 1. Capacity: two gateway processes sharing one port (SO_REUSEPORT), load clients in two
//!    processes from four source addresses, each connection subscribed to K symbols with a 1 s
//!    window: connections held, seq holes, age of the freshest value at receipt.
//! 2. Memory: RSS per idle connection of one gateway process holding many connections.
//! 3. Efficiency: throttle 0, fewer connections, the same load and client against ours, a
//!    tokio + tokio-tungstenite broadcast server and a Node.js `ws` server
//!    (`bench/baselines/`): deliveries (quote objects received) per CPU-second of the server
//!    process, and the p99 age.

use crate::load::load_hdr;
use crate::procs::{Kill, exe, free_port, http_get as get, metric, ms, pin_at_exec, wait_until};
use crate::report;
use hdrhistogram::Histogram;
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Options.
#[derive(Debug, Clone)]
pub struct FanoutBench {
    /// Connections in the capacity run (over all client processes).
    pub conns: usize,
    /// Gateway processes in the capacity run.
    pub gateways: usize,
    /// Load client processes in the capacity run.
    pub clients: usize,
    /// Symbols in the synthetic market.
    pub symbols: usize,
    /// Updates per second in total.
    pub rate: u64,
    /// Symbols per connection.
    pub per_conn: usize,
    /// Window of the capacity run, ms.
    pub throttle_ms: u64,
    /// Seconds measured per run.
    pub duration_s: u64,
    /// Connections in the efficiency runs.
    pub eff_conns: usize,
    /// Bind each efficiency run's server to CPU [`SERVER_CPU`] and its load client to
    /// [`CLIENT_CPU`] from the start (see [`SERVER_CPU`]).
    pub eff_pin: bool,
    /// The efficiency runs' load client polls every this many µs instead of blocking in
    /// epoll (0: it blocks; see `LoadOpts::poll_interval_us`).
    pub eff_client_poll_us: u64,
    /// Idle connections in the memory run.
    pub idle_conns: usize,
    /// Which parts: "capacity", "memory", "efficiency" (all when empty).
    pub only: Vec<String>,
    /// Where `.hdr` files go.
    pub results: PathBuf,
}

/// The CPU each efficiency run's server is bound to, its load client on [`CLIENT_CPU`]: each
/// server gets one core of its own, threads included (tokio sizes its runtime to the CPUs it
/// may use, so it runs one worker, as the gateway and Node do), and the client never competes
/// with it. Unbound, the scheduler decides run by run whether the server and the client share a
/// CPU, and that alone moved a server's figure by half: on loopback the server's `send` runs
/// the receiver's TCP work and wake-up, cheap on its own CPU and dear across CPUs (the gateway:
/// ~605k deliveries per CPU-s sharing, ~395k apart).
pub const SERVER_CPU: usize = 0;
/// The CPU of the efficiency runs' load client.
pub const CLIENT_CPU: usize = 1;

/// (user, system) CPU ticks of a process.
fn cpu_ticks(pid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = s.rsplit_once(')').map_or("", |x| x.1);
    let f: Vec<&str> = after.split_whitespace().collect();
    // fields 14 and 15 (utime, stime) are at 11 and 12 after the ')'
    let at = |k: usize| f.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (at(11), at(12))
}

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).max(1) as f64
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn gateway_cmd(quotes: &str, port: u16, workers: usize, max_conns: usize) -> Command {
    let mut c = Command::new(exe("gateway"));
    c.args(["run", "--quotes", quotes, "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["--workers", &workers.to_string()])
        .args(["--max-connections", &max_conns.to_string()])
        .stderr(Stdio::null());
    c
}

fn gateway(quotes: &str, port: u16, workers: usize, max_conns: usize) -> Result<Child, String> {
    gateway_cmd(quotes, port, workers, max_conns)
        .spawn()
        .map_err(|e| format!("gateway: {e} (build it: cargo build --release -p gateway)"))
}

struct ClientRun {
    counts: serde_json::Value,
    hist: Histogram<u64>,
}

#[allow(clippy::too_many_arguments)]
fn client(
    port: u16,
    conns: usize,
    sources: &[&str],
    o: &FanoutBench,
    per_conn: usize,
    throttle: u64,
    hdr: &Path,
    ready: Option<&Path>,
    cpu: Option<usize>,
    poll_us: u64,
) -> Result<Child, String> {
    let mut c = Command::new(exe("bench"));
    if let Some(cpu) = cpu {
        pin_at_exec(&mut c, cpu);
    }
    c.arg("fanout-client")
        .args(["--connect", &format!("127.0.0.1:{port}")])
        .args(["--conns", &conns.to_string()])
        .args(["--sources", &sources.join(",")])
        .args(["--universe", &o.symbols.to_string()])
        .args(["--per-conn", &per_conn.to_string()])
        .args(["--throttle", &throttle.to_string()])
        .args(["--duration-s", &o.duration_s.to_string()])
        .args(["--poll-interval-us", &poll_us.to_string()])
        .arg("--hdr")
        .arg(hdr)
        .stdout(Stdio::piped());
    if let Some(r) = ready {
        c.arg("--ready-file").arg(r);
        // a saturated baseline may never accept them all: measure what it holds after a minute
        c.args(["--connect-timeout-s", "60"]);
    }
    c.spawn().map_err(|e| format!("fanout-client: {e}"))
}

fn finish(mut c: Child, hdr: &Path) -> Result<ClientRun, String> {
    let mut out = String::new();
    c.stdout
        .take()
        .expect("piped")
        .read_to_string(&mut out)
        .map_err(|e| e.to_string())?;
    let st = c.wait().map_err(|e| e.to_string())?;
    if !st.success() {
        return Err(format!("fanout-client failed: {st}"));
    }
    let counts: serde_json::Value = serde_json::from_str(out.trim())
        .map_err(|e| format!("fanout-client output {out:?}: {e}"))?;
    Ok(ClientRun {
        counts,
        hist: load_hdr(hdr)?,
    })
}

fn sum(runs: &[ClientRun], k: &str) -> u64 {
    runs.iter().map(|r| r.counts[k].as_u64().unwrap_or(0)).sum()
}

fn capacity(o: &FanoutBench, quotes: &str) -> Result<(), String> {
    let port = free_port()?;
    let per_gw = 19_500.min(o.conns);
    let mut procs = Kill(Vec::new());
    for _ in 0..o.gateways {
        procs.0.push(gateway(quotes, port, 1, per_gw)?);
    }
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    wait_until("the gateways", 30, || {
        get(addr, "/healthz").is_some_and(|r| r.0 == 200)
    })?;
    let per_client = o.conns.div_ceil(o.clients);
    let sources = [
        "127.0.0.2",
        "127.0.0.3",
        "127.0.0.4",
        "127.0.0.5",
        "127.0.0.6",
        "127.0.0.7",
    ];
    let mut kids = Vec::new();
    for k in 0..o.clients {
        let hdr = o.results.join(format!("fanout_capacity_{k}.hdr"));
        let src = [sources[(2 * k) % 6], sources[(2 * k + 1) % 6]];
        let n = per_client.min(o.conns - k * per_client);
        kids.push((
            client(
                port,
                n,
                &src,
                o,
                o.per_conn,
                o.throttle_ms,
                &hdr,
                None,
                None,
                0,
            )?,
            hdr,
        ));
    }
    let runs: Vec<ClientRun> = kids
        .into_iter()
        .map(|(c, h)| finish(c, &h))
        .collect::<Result<_, _>>()?;
    let mut h = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("bounds");
    for r in &runs {
        h.add(&r.hist).map_err(|e| format!("{e:?}"))?;
    }
    crate::feed::save(&h, &o.results, "fanout_capacity_age_us");
    let held = sum(&runs, "held");
    let tags = [
        ("target", o.conns.to_string()),
        ("gateways", o.gateways.to_string()),
        ("clients", o.clients.to_string()),
    ];
    report("fanout_connections_held", held as f64, "conns", &tags);
    report("fanout_seq_holes", sum(&runs, "holes") as f64, "holes", &[]);
    report(
        "fanout_errors",
        (sum(&runs, "errors") + sum(&runs, "closed")) as f64,
        "errors",
        &[("reconnects", sum(&runs, "reconnects").to_string())],
    );
    let d = o.duration_s as f64;
    report(
        "fanout_updates_per_s",
        sum(&runs, "updates") as f64 / d,
        "msgs/s",
        &[(
            "quotes_per_s",
            format!("{:.0}", sum(&runs, "quotes") as f64 / d),
        )],
    );
    let win = format!("{}", o.throttle_ms);
    report(
        "fanout_age_p50_ms",
        ms(h.value_at_quantile(0.5)),
        "ms",
        &[("window_ms", win.clone())],
    );
    report(
        "fanout_age_p99_ms",
        ms(h.value_at_quantile(0.99)),
        "ms",
        &[
            ("window_ms", win.clone()),
            ("goal_ms", format!("{}", o.throttle_ms + 20)),
        ],
    );
    report(
        "fanout_age_p999_ms",
        ms(h.value_at_quantile(0.999)),
        "ms",
        &[],
    );
    report("fanout_age_max_ms", ms(h.max()), "ms", &[]);
    Ok(())
}

fn memory(o: &FanoutBench, quotes: &str) -> Result<(), String> {
    let port = free_port()?;
    let gw = gateway(quotes, port, 1, 19_500)?;
    let pid = gw.id();
    let _procs = Kill(vec![gw]);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    wait_until("the gateway", 30, || {
        get(addr, "/healthz").is_some_and(|r| r.0 == 200)
    })?;
    let before = rss_kb(pid);
    let hdr = o.results.join("fanout_idle.hdr");
    let ready = std::env::temp_dir().join(format!("fanout-ready-{}", std::process::id()));
    let _ = std::fs::remove_file(&ready);
    let c = client(
        port,
        o.idle_conns,
        &["127.0.0.2", "127.0.0.3"],
        &FanoutBench {
            duration_s: 5,
            ..o.clone()
        },
        0,
        1000,
        &hdr,
        Some(&ready),
        None,
        0,
    )?;
    wait_until("the idle connections", 300, || ready.exists())?;
    let held = metric(addr, "gateway_connections").unwrap_or(0.0);
    let after = rss_kb(pid);
    let r = finish(c, &hdr)?;
    let _ = std::fs::remove_file(&ready);
    let per = (after.saturating_sub(before)) as f64 / held.max(1.0);
    report(
        "rss_per_conn_kb",
        per,
        "KB",
        &[
            ("conns", format!("{held:.0}")),
            ("rss_before_kb", before.to_string()),
            ("rss_after_kb", after.to_string()),
            ("goal_kb", "8".into()),
            ("seq_holes", r.counts["holes"].to_string()),
        ],
    );
    Ok(())
}

fn efficiency_one(
    o: &FanoutBench,
    name: &str,
    server: Child,
    port: u16,
) -> Result<(f64, u64, u64), String> {
    let pid = server.id();
    let _procs = Kill(vec![server]);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    wait_until(name, 30, || TcpStream::connect(addr).is_ok())?;
    let hdr = o.results.join(format!("fanout_eff_{name}_age_us.hdr"));
    let ready = std::env::temp_dir().join(format!("fanout-ready-{}-{name}", std::process::id()));
    let _ = std::fs::remove_file(&ready);
    let c = client(
        port,
        o.eff_conns,
        &["127.0.0.2"],
        o,
        o.per_conn,
        0,
        &hdr,
        Some(&ready),
        o.eff_pin.then_some(CLIENT_CPU),
        o.eff_client_poll_us,
    )?;
    wait_until("connections", 180, || ready.exists())?;
    let t0 = cpu_ticks(pid);
    let r = finish(c, &hdr)?;
    let t1 = cpu_ticks(pid);
    let user_s = (t1.0 - t0.0) as f64 / clk_tck();
    let sys_s = (t1.1 - t0.1) as f64 / clk_tck();
    let cpu_s = user_s + sys_s;
    let _ = std::fs::remove_file(&ready);
    let quotes = r.counts["quotes"].as_u64().unwrap_or(0);
    let per_cpu = quotes as f64 / cpu_s.max(0.01);
    let p99 = r.hist.value_at_quantile(0.99);
    eprintln!(
        "  {name}: {quotes} deliveries in {} s, server CPU {cpu_s:.2} s (user {user_s:.2}, system {sys_s:.2}), p99 age {:.1} ms, holes {} (a skip after broadcast lag counts)",
        o.duration_s,
        ms(p99),
        r.counts["holes"]
    );
    Ok((per_cpu, p99, r.counts["held"].as_u64().unwrap_or(0)))
}

fn efficiency(o: &FanoutBench, quotes: &str) -> Result<(), String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("baselines");
    let port = free_port()?;
    // one worker: on this 2-core machine the load client shares the cores, and one loop
    // batches more per write than two (measured: 419k against 333k deliveries per CPU-s)
    let mut gw = gateway_cmd(quotes, port, 1, 19_500);
    if o.eff_pin {
        pin_at_exec(&mut gw, SERVER_CPU);
    }
    let gw = gw
        .spawn()
        .map_err(|e| format!("gateway: {e} (build it: cargo build --release -p gateway)"))?;
    let ours = efficiency_one(o, "gateway", gw, port)?;
    let tags = |p99: u64, held: u64| {
        vec![
            ("conns", held.to_string()),
            ("throttle_ms", "0".to_string()),
            ("p99_ms", format!("{:.1}", ms(p99))),
        ]
    };
    report(
        "deliveries_per_cpu_s",
        ours.0,
        "deliveries/cpu-s",
        &tags(ours.1, ours.2),
    );
    // the baselines: (name, command, goal ratio, what makes it)
    let tokio_bin = root.join("tokio-ws/target/release/tokio-ws-baseline");
    let mut node = Command::new("node");
    node.arg(root.join("node-ws/server.js"));
    let baselines = [
        (
            "tokio_tungstenite",
            Command::new(&tokio_bin),
            "3",
            "scripts/bench fanout builds it",
        ),
        ("node_ws", node, "5", "scripts/bench fanout installs nodejs"),
    ];
    for (name, mut cmd, goal, hint) in baselines {
        let port = free_port()?;
        if o.eff_pin {
            pin_at_exec(&mut cmd, SERVER_CPU);
        }
        match cmd
            .args([port.to_string(), o.symbols.to_string(), o.rate.to_string()])
            .spawn()
        {
            Ok(c) => {
                let t = efficiency_one(o, name, c, port)?;
                report(
                    &format!("{name}_deliveries_per_cpu_s"),
                    t.0,
                    "deliveries/cpu-s",
                    &tags(t.1, t.2),
                );
                report(
                    &format!("deliveries_ratio_vs_{name}"),
                    ours.0 / t.0.max(1e-9),
                    "x",
                    &[("goal", goal.into())],
                );
            }
            Err(e) => eprintln!("bench: {name}: {:?}: {e} ({hint})", cmd.get_program()),
        }
    }
    Ok(())
}

/// Runs the benchmark.
pub fn run(o: &FanoutBench) -> Result<(), String> {
    std::fs::create_dir_all(&o.results).map_err(|e| e.to_string())?;
    let quotes = format!("bench-fanout-{}.quotes", std::process::id());
    let synth = Command::new(exe("gateway"))
        .args(["synth", "--quotes", &quotes])
        .args([
            "--symbols",
            &o.symbols.to_string(),
            "--rate",
            &o.rate.to_string(),
        ])
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("gateway synth: {e}"))?;
    let _synth = Kill(vec![synth]);
    let path = PathBuf::from("/dev/shm").join(&quotes);
    wait_until("the synthetic market", 10, || path.exists())?;
    let want = |p: &str| o.only.is_empty() || o.only.iter().any(|x| x == p);
    eprintln!(
        "fanout: synthetic market of {} symbols at {} updates/s",
        o.symbols, o.rate
    );
    if want("capacity") {
        eprintln!(
            "fanout: capacity: {} connections, {} gateway processes, {} client processes, {} symbols each, throttle {} ms",
            o.conns, o.gateways, o.clients, o.per_conn, o.throttle_ms
        );
        capacity(o, &quotes)?;
    }
    if want("memory") {
        eprintln!(
            "fanout: memory: {} idle connections to one gateway",
            o.idle_conns
        );
        memory(o, &quotes)?;
    }
    if want("efficiency") {
        eprintln!(
            "fanout: efficiency: {} connections, {} symbols each, throttle 0",
            o.eff_conns, o.per_conn
        );
        efficiency(o, &quotes)?;
    }
    Ok(())
}
