//! End-to-end benchmark (`bench e2e`): replayer → loopback multicast A/B → feed-handler → ring
//! → book → quote table → gateway → WebSocket load client, every stage a process of its own as
//! deployed. The age of what a client receives is measured from the feed handler's receive
//! timestamp (`rx`, carried through every stage), and the same age is taken at each stage
//! boundary so the total breaks down:
//!
//! - at the ring: a reader of the ring in this process (polling every 1 ms);
//! - at the quote table: a reader of its change feed in this process (the same);
//!   (the replayer sends up to 1 ms early rather than spin: `--pace-slack-us 1000`)
//! - at the frame written: the gateway's own `gateway_age_from_receive_seconds` histogram
//!   (freshest quote of each frame; bucket bounds);
//! - at the client: the load client (`bench fanout-client`), freshest quote of each update.
//!
//! Writes `.hdr` files, a markdown summary with the machine and a percentile plot (SVG) under
//! `bench/results/`.

use crate::load::load_hdr;
use crate::procs::{Kill, exe, http_get as get, ms, wait_until};
use crate::report;
use hdrhistogram::Histogram;
use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Options.
#[derive(Debug, Clone)]
pub struct E2eBench {
    /// ITCH messages per second replayed.
    pub rate: u64,
    /// Symbols in the generated session.
    pub symbols: usize,
    /// Client connections.
    pub conns: usize,
    /// Symbols per connection.
    pub per_conn: usize,
    /// Conflation window, ms.
    pub throttle_ms: u64,
    /// Seconds measured.
    pub duration_s: u64,
    /// Gateway worker threads.
    pub workers: usize,
    /// The load clients' poll interval, µs (0: block in epoll; see `LoadOpts::poll_interval_us`).
    pub client_poll_us: u64,
    /// Where results go.
    pub results: PathBuf,
}

/// The gateway's age histogram: (upper bound in seconds, cumulative count).
fn gateway_buckets(addr: SocketAddr) -> Vec<(f64, u64)> {
    let body = get(addr, "/metrics").map(|x| x.1).unwrap_or_default();
    body.lines()
        .filter_map(|l| l.strip_prefix("gateway_age_from_receive_seconds_bucket{le=\""))
        .filter_map(|r| {
            let (le, n) = r.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, n.trim().parse().ok()?))
        })
        .collect()
}

/// The bucket bound at quantile `q` of the difference of two cumulative histograms (ms).
fn bucket_quantile(a: &[(f64, u64)], b: &[(f64, u64)], q: f64) -> f64 {
    let d: Vec<(f64, u64)> = b
        .iter()
        .zip(a.iter().chain(std::iter::repeat(&(0.0, 0))))
        .map(|(x, y)| (x.0, x.1.saturating_sub(y.1)))
        .collect();
    let total = d.last().map_or(0, |x| x.1);
    let want = (total as f64 * q).ceil() as u64;
    d.iter()
        .find(|x| x.1 >= want.max(1))
        .map_or(f64::NAN, |x| x.0 * 1000.0)
}

fn new_hist() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("bounds")
}

/// Runs the benchmark.
pub fn run(o: &E2eBench) -> Result<(), String> {
    std::fs::create_dir_all(&o.results).map_err(|e| e.to_string())?;
    let work = std::env::temp_dir().join(format!("e2e-{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
    let ring = format!("e2e-{}", std::process::id());
    let messages = o.rate * 60;
    eprintln!(
        "e2e: generating {} symbols, {messages} messages at {} msg/s",
        o.symbols, o.rate
    );
    let pcap = work.join("session.pcap");
    let st = Command::new(exe("pcap-replay"))
        .args(["generate", "--symbols", &o.symbols.to_string()])
        .args([
            "--messages",
            &messages.to_string(),
            "--rate",
            &o.rate.to_string(),
        ])
        .args(["--delete-at-close", "--progress", "false", "-o"])
        .arg(&pcap)
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("pcap-replay: {e}"))?;
    if !st.success() {
        return Err("pcap-replay generate failed".into());
    }
    let cfg = work.join("feed.toml");
    std::fs::write(
        &cfg,
        format!(
            "ring = \"{ring}\"\nidle = \"park\"\n[[channel]]\nname = \"nasdaq\"\n\
             session = \"GEN0000001\"\nstart_seq = 1\n\
             line_a = {{ group = \"239.100.9.1\", port = 27400, interface = \"127.0.0.1\" }}\n\
             line_b = {{ group = \"239.100.9.2\", port = 27401, interface = \"127.0.0.1\" }}\n\
             rerequest = \"127.0.0.1:27500\"\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    let shm = |s: &str| PathBuf::from(format!("/dev/shm/{ring}{s}"));
    let mut procs = Kill(Vec::new());
    let spawn = |c: &mut Command| c.stderr(Stdio::null()).spawn().map_err(|e| e.to_string());
    procs.0.push(spawn(
        Command::new(exe("feed-handler"))
            .arg("run")
            .arg("--config")
            .arg(&cfg),
    )?);
    wait_until("feed-handler", 20, || shm(".counters").exists())?;
    procs.0.push(spawn(
        Command::new(exe("book"))
            .args(["run", "--ring", &ring, "--rerequest", "127.0.0.1:27500"])
            .args(["--session", "GEN0000001"]),
    )?);
    wait_until("book", 20, || shm(".quotes").exists())?;
    let port = crate::procs::free_port()?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let gw = spawn(
        Command::new(exe("gateway"))
            .args(["run", "--ring", &ring, "--listen", &addr.to_string()])
            .args(["--workers", &o.workers.to_string()])
            .args([
                "--max-connections",
                &(o.conns + 500).min(19_500).to_string(),
            ]),
    )?;
    procs.0.push(gw);
    procs.0.push(spawn(
        Command::new(exe("pcap-replay"))
            .arg("play")
            .arg(&pcap)
            .args([
                "--speed",
                "1",
                "--loop",
                "0",
                "--rerequest-addr",
                "127.0.0.1:27500",
            ])
            .args(["--pace-slack-us", "1000"])
            .args([
                "--line-a",
                "239.100.9.1:27400",
                "--line-b",
                "239.100.9.2:27401",
            ]),
    )?);
    wait_until("quotes at the gateway", 60, || {
        get(addr, "/healthz").is_some_and(|r| r.0 == 200)
    })?;
    eprintln!(
        "e2e: {} connections, {} symbols each, throttle {} ms, {} s measured",
        o.conns, o.per_conn, o.throttle_ms, o.duration_s
    );
    // two load-client processes (one core each at best), half the connections each
    let sym_url = format!("http://{addr}/v1/symbols");
    let mut clients = Vec::new();
    for k in 0..2 {
        let hdr = work.join(format!("client{k}.hdr"));
        let ready = work.join(format!("ready{k}"));
        let n = if k == 0 {
            o.conns / 2
        } else {
            o.conns - o.conns / 2
        };
        let src = if k == 0 {
            "127.0.0.2,127.0.0.3"
        } else {
            "127.0.0.4,127.0.0.5"
        };
        let child = Command::new(exe("bench"))
            .arg("fanout-client")
            .args(["--connect", &addr.to_string(), "--conns", &n.to_string()])
            .args(["--sources", src])
            .args(["--per-conn", &o.per_conn.to_string()])
            .args(["--throttle", &o.throttle_ms.to_string()])
            .args(["--duration-s", &o.duration_s.to_string()])
            .args(["--symbols-from", &sym_url])
            // the clients stand in for users on other machines: they must not preempt the
            // pipeline after each frame it writes (see LoadOpts::sched_batch)
            .arg("--sched-batch")
            .args(["--poll-interval-us", &o.client_poll_us.to_string()])
            .arg("--hdr")
            .arg(&hdr)
            .arg("--ready-file")
            .arg(&ready)
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        clients.push((child, hdr, ready));
    }
    wait_until("the clients", 300, || clients.iter().all(|c| c.2.exists()))?;
    // the taps, for the window
    let stop = AtomicBool::new(false);
    let quote_changes = AtomicU64::new(0);
    let g0 = gateway_buckets(addr);
    let t0 = Instant::now();
    let (ring_h, quote_h, outs) = std::thread::scope(|s| {
        let ring_t = s.spawn(|| {
            let mut h = new_hist();
            if let Ok(mut r) = feed_handler::ring::RingReader::attach(shm("")) {
                let head = r.head();
                r.seek(head);
                while !stop.load(Ordering::Relaxed) {
                    match r.read() {
                        feed_handler::ring::Read::Record(rec) => {
                            let age = feed_handler::sock::realtime_ns().saturating_sub(rec.recv_ns);
                            let _ = h.record((age / 1000).max(1));
                        }
                        feed_handler::ring::Read::Empty => {
                            std::thread::sleep(Duration::from_millis(1))
                        }
                        feed_handler::ring::Read::Overrun { oldest, .. } => r.seek(oldest),
                    }
                }
            }
            h
        });
        let quote_t = s.spawn(|| {
            let mut h = new_hist();
            if let Ok(mut r) = book::quotes::QuoteReader::attach(&shm(".quotes")) {
                while !stop.load(Ordering::Relaxed) {
                    match r.next_change() {
                        book::quotes::Change::Slot(i) => {
                            if let Some(q) = r.read(i) {
                                let now = feed_handler::sock::realtime_ns();
                                let _ = h.record((now.saturating_sub(q.recv_ns) / 1000).max(1));
                                quote_changes.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        book::quotes::Change::Empty => std::thread::sleep(Duration::from_millis(1)),
                        book::quotes::Change::Rescan => {}
                    }
                }
            }
            h
        });
        let mut outs = Vec::new();
        for c in clients.iter_mut() {
            let mut out = String::new();
            let _ = c.0.stdout.take().expect("piped").read_to_string(&mut out);
            outs.push(out);
        }
        stop.store(true, Ordering::Relaxed);
        (
            ring_t.join().expect("ring tap"),
            quote_t.join().expect("quote tap"),
            outs,
        )
    });
    let window_s = t0.elapsed().as_secs_f64();
    let g1 = gateway_buckets(addr);
    let mut client_h = new_hist();
    let mut counts = serde_json::json!({"held": 0, "holes": 0, "updates": 0});
    for ((mut child, hdr, _), out) in clients.into_iter().zip(&outs) {
        let st = child.wait().map_err(|e| e.to_string())?;
        if !st.success() {
            return Err(format!("fanout-client: {st}"));
        }
        let c: serde_json::Value =
            serde_json::from_str(out.trim()).map_err(|e| format!("client output {out:?}: {e}"))?;
        for k in ["held", "holes", "updates"] {
            counts[k] = (counts[k].as_u64().unwrap_or(0) + c[k].as_u64().unwrap_or(0)).into();
        }
        client_h
            .add(load_hdr(&hdr)?)
            .map_err(|e| format!("{e:?}"))?;
    }
    drop(procs);
    for s in [
        "",
        ".journal",
        ".counters",
        ".quotes",
        ".quotes.bars",
        ".quotes.venues",
    ] {
        let _ = std::fs::remove_file(shm(s));
    }
    let _ = std::fs::remove_dir_all(&work);
    crate::feed::save(&client_h, &o.results, "e2e_client_age_us");
    crate::feed::save(&ring_h, &o.results, "e2e_ring_age_us");
    crate::feed::save(&quote_h, &o.results, "e2e_quote_age_us");

    let qps = quote_changes.load(Ordering::Relaxed) as f64 / window_s;
    let held = counts["held"].as_u64().unwrap_or(0);
    report(
        "e2e_connections_held",
        held as f64,
        "conns",
        &[("target", o.conns.to_string())],
    );
    report(
        "e2e_seq_holes",
        counts["holes"].as_f64().unwrap_or(0.0),
        "holes",
        &[],
    );
    report(
        "e2e_quote_updates_per_s",
        qps,
        "quotes/s",
        &[
            ("symbols", o.symbols.to_string()),
            ("itch_msgs_per_s", o.rate.to_string()),
        ],
    );
    report(
        "e2e_client_updates_per_s",
        counts["updates"].as_f64().unwrap_or(0.0) / o.duration_s as f64,
        "msgs/s",
        &[],
    );
    let q = |h: &Histogram<u64>, p: f64| ms(h.value_at_quantile(p));
    let gw = |p: f64| bucket_quantile(&g0, &g1, p);
    let tags = [("throttle_ms", o.throttle_ms.to_string())];
    report("e2e_age_p50_ms", q(&client_h, 0.5), "ms", &tags);
    report(
        "e2e_age_p99_ms",
        q(&client_h, 0.99),
        "ms",
        &[
            ("throttle_ms", o.throttle_ms.to_string()),
            ("goal_ms", "150".into()),
        ],
    );
    report("e2e_age_p999_ms", q(&client_h, 0.999), "ms", &tags);
    report("e2e_age_max_ms", ms(client_h.max()), "ms", &tags);
    // cumulative ages at each boundary, and the stages as their differences
    let points = [
        ("ring", q(&ring_h, 0.5), q(&ring_h, 0.99)),
        ("quote_table", q(&quote_h, 0.5), q(&quote_h, 0.99)),
        ("frame_written", gw(0.5), gw(0.99)),
        ("client", q(&client_h, 0.5), q(&client_h, 0.99)),
    ];
    for (name, p50, p99) in points {
        report(
            &format!("e2e_age_at_{name}_p50_ms"),
            p50,
            "ms",
            &[("p99_ms", format!("{p99:.3}"))],
        );
    }
    let stages = [
        ("wire_to_ring", 0.0, points[0]),
        ("ring_to_quote_table", 1.0, points[1]),
        ("quote_table_to_frame_written", 2.0, points[2]),
        ("frame_written_to_client", 3.0, points[3]),
    ];
    let mut prev = (0.0, 0.0);
    let mut rows = Vec::new();
    for (name, _, (_, p50, p99)) in stages {
        let d50 = (p50 - prev.0).max(0.0);
        let d99 = (p99 - prev.1).max(0.0);
        report(
            &format!("e2e_stage_{name}_p50_ms"),
            d50,
            "ms",
            &[("p99_ms", format!("{d99:.3}"))],
        );
        rows.push((name, p50, p99, d50, d99));
        prev = (p50, p99);
    }
    write_summary(o, &client_h, &ring_h, &quote_h, &rows, &counts, qps)?;
    Ok(())
}

fn write_summary(
    o: &E2eBench,
    client: &Histogram<u64>,
    ring: &Histogram<u64>,
    quote: &Histogram<u64>,
    rows: &[(&str, f64, f64, f64, f64)],
    counts: &serde_json::Value,
    qps: f64,
) -> Result<(), String> {
    let svg = o.results.join("e2e-percentiles.svg");
    std::fs::write(
        &svg,
        plot(&[
            ("at the ring", ring, "#8e44ad"),
            ("at the quote table", quote, "#2980b9"),
            ("at the client", client, "#c0392b"),
        ]),
    )
    .map_err(|e| e.to_string())?;
    let mut md = String::new();
    use std::fmt::Write;
    let _ = writeln!(md, "# End-to-end latency (`scripts/bench e2e`)\n");
    let _ = writeln!(
        md,
        "Machine: {}. Run: {} (UTC).\n",
        crate::machine(),
        now_utc()
    );
    let _ = writeln!(
        md,
        "Replayer → loopback multicast A/B → feed-handler → ring → book → quote table → \
         gateway → {} WebSocket connections (two load-client processes), each subscribed to {} of \
         {} symbols with a {} ms window, for {} s. ITCH at {} msg/s gave {:.0} quote changes/s. \
         Connections held: {}, seq holes: {}, updates received: {}.\n",
        o.conns,
        o.per_conn,
        o.symbols,
        o.throttle_ms,
        o.duration_s,
        o.rate,
        qps,
        counts["held"],
        counts["holes"],
        counts["updates"]
    );
    let _ = writeln!(
        md,
        "Age of the freshest quote of each update at the client, from the feed handler's \
         receive timestamp: p50 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms, max {:.1} ms (goal: \
         p99 at most 150 ms).\n",
        ms(client.value_at_quantile(0.5)),
        ms(client.value_at_quantile(0.99)),
        ms(client.value_at_quantile(0.999)),
        ms(client.max())
    );
    let _ = writeln!(
        md,
        "| boundary | age p50 (ms) | age p99 (ms) | stage | stage p50 (ms) | stage p99 (ms) |\n|---|---|---|---|---|---|"
    );
    let names = [
        "ring",
        "quote table",
        "frame written (gateway histogram, bucket bound)",
        "client",
    ];
    for (k, (stage, a50, a99, d50, d99)) in rows.iter().enumerate() {
        let _ = writeln!(
            md,
            "| {} | {a50:.3} | {a99:.3} | {stage} | {d50:.3} | {d99:.3} |",
            names[k]
        );
    }
    let _ = writeln!(
        md,
        "\nStage figures are differences of the cumulative ages (percentiles do not add exactly). \
         The ring and quote-table readers poll every 1 ms (their ages are up to 1 ms late). The \
         window itself hardly shows: each update carries its freshest quote, taken when the \
         frame is written. The rest of the age at the client is delivery: socket queues and \
         the load clients' own reading on this 2-core machine, which all of the pipeline \
         shares. The load clients stand in for users on other machines: they run as \
         SCHED_BATCH and poll every {} µs instead of blocking in epoll, so a frame the gateway \
         writes neither wakes nor preempts them inside the gateway's write (co-location costs \
         a remote user would not impose); the poll adds up to that interval to each age.\n\n\
         ![percentiles](e2e-percentiles.svg)\n\nHistograms: `e2e_client_age_us.hdr`, \
         `e2e_ring_age_us.hdr`, `e2e_quote_age_us.hdr` (µs; not committed).",
        o.client_poll_us
    );
    std::fs::write(o.results.join("e2e.md"), md).map_err(|e| e.to_string())?;
    eprintln!(
        "e2e: summary {}, plot {}",
        o.results.join("e2e.md").display(),
        svg.display()
    );
    Ok(())
}

/// Now as `YYYY-MM-DD HH:MM`, UTC.
fn now_utc() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // civil from days (Howard Hinnant's algorithm)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// A percentile plot: x is the percentile on the usual log scale (1/(1-p)), y the age in ms
/// (log scale).
fn plot(series: &[(&str, &Histogram<u64>, &str)]) -> String {
    let (w, h, l, b) = (760.0, 420.0, 70.0, 50.0);
    let ps = [
        0.0, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999,
    ];
    let x = |p: f64| l + (1.0 / (1.0 - p)).log10() / 4.0 * (w - l - 20.0);
    let (ymin, ymax) = (0.001f64.log10(), 10_000f64.log10());
    let y = |v_ms: f64| {
        let v = v_ms.max(0.001).log10();
        h - b - (v - ymin) / (ymax - ymin) * (h - b - 20.0)
    };
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    for d in [0.001, 0.01, 0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0] {
        s += &format!(
            "<line x1=\"{l}\" x2=\"{}\" y1=\"{y0:.1}\" y2=\"{y0:.1}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{d} ms</text>\n",
            w - 20.0,
            l - 6.0,
            y(d) + 4.0,
            y0 = y(d)
        );
    }
    for p in ps {
        s += &format!(
            "<line x1=\"{x0:.1}\" x2=\"{x0:.1}\" y1=\"20\" y2=\"{}\" stroke=\"#eee\"/><text x=\"{x0:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
            h - b,
            h - b + 16.0,
            if p == 0.0 {
                "p0".to_string()
            } else {
                format!("p{}", p * 100.0)
            },
            x0 = x(p)
        );
    }
    for (k, (name, hist, color)) in series.iter().enumerate() {
        let pts: Vec<String> = (0..=400)
            .map(|i| {
                let p = 1.0 - 10f64.powf(-(i as f64) / 100.0);
                let p = p.min(0.9999);
                format!("{:.1},{:.1}", x(p), y(ms(hist.value_at_quantile(p))))
            })
            .collect();
        s += &format!(
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>\n<text x=\"{}\" y=\"{}\" fill=\"{color}\">{name}</text>\n",
            pts.join(" "),
            l + 10.0,
            30.0 + 16.0 * k as f64
        );
    }
    s += &format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">percentile</text>\n</svg>\n",
        w / 2.0,
        h - 12.0
    );
    s
}
