//! The machine's own hiccups (`bench hiccup`): one thread pinned to each CPU reads the
//! monotonic clock in a tight loop for a while, and every gap between two consecutive reads
//! longer than [`THRESHOLD_NS`] is time the thread did not run (an interrupt, another task, or
//! on a virtual machine the hypervisor running something else). Nothing else of ours runs.
//!
//! This is the floor under every latency percentile measured here: a message that arrives
//! while the thread that should take it is stalled waits for the stall to end. If stalls
//! longer than X take more than 1% of a CPU's time, a p99 below X cannot be measured on it,
//! whatever the code does. Run it beside the feed, redis and e2e figures to read them.
//!
//! It also says how much of the time every CPU was stalled at once, beside what that would be
//! if each CPU's stalls were independent. When the first is close to each CPU's own share, the
//! stalls are the whole virtual machine's (the hypervisor descheduling all of it), and a second
//! thread on another CPU cannot stand in for the first: redundancy across CPUs, say line A and
//! line B taken by threads on different CPUs, would not cut the tail on this machine.

use crate::report;
use hdrhistogram::Histogram;
use std::time::{Duration, Instant};

/// A gap between two clock reads longer than this is a stall (a clock read takes ~20 ns).
pub const THRESHOLD_NS: u64 = 10_000;

/// Stalls longer than this are also kept as intervals, to see when every CPU stalled at once.
pub const OVERLAP_NS: u64 = 20_000;

/// At most this many intervals are kept per CPU (16 bytes each, reserved before watching).
pub const MAX_INTERVALS: usize = 1 << 20;

/// Options.
#[derive(Debug, Clone)]
pub struct HiccupBench {
    /// Seconds each CPU is watched (all at once).
    pub duration_s: u64,
}

/// What one CPU saw.
#[derive(Debug)]
pub struct Stalls {
    /// The CPU.
    pub cpu: usize,
    /// Stall lengths, ns.
    pub hist: Histogram<u64>,
    /// Time watched, ns.
    pub watched_ns: u64,
    /// Whether the thread was pinned to `cpu`.
    pub pinned: bool,
    /// Stalls longer than [`OVERLAP_NS`]: (start, end), ns since the common origin, in order.
    pub intervals: Vec<(u64, u64)>,
}

impl Stalls {
    /// Share of the time lost in stalls longer than `over_ns`, in percent.
    pub fn lost_pct(&self, over_ns: u64) -> f64 {
        let lost: u64 = self
            .hist
            .iter_recorded()
            .filter(|v| v.value_iterated_to() > over_ns)
            .map(|v| v.value_iterated_to() * v.count_at_value())
            .sum();
        lost as f64 * 100.0 / self.watched_ns.max(1) as f64
    }
    /// Stalls longer than `over_ns`, per second.
    pub fn per_s(&self, over_ns: u64) -> f64 {
        let n: u64 = self
            .hist
            .iter_recorded()
            .filter(|v| v.value_iterated_to() > over_ns)
            .map(|v| v.count_at_value())
            .sum();
        n as f64 * 1e9 / self.watched_ns.max(1) as f64
    }
}

/// Watches `cpu` for `d`: the calling thread is pinned to it and spins. Interval times are
/// taken from `origin`.
pub fn watch(cpu: usize, d: Duration, origin: Instant) -> Stalls {
    let pinned = feed_handler::sock::pin_current_thread(cpu);
    let mut hist = Histogram::<u64>::new_with_bounds(1_000, 60_000_000_000, 2).expect("bounds");
    let mut intervals = Vec::with_capacity(MAX_INTERVALS);
    let start = Instant::now();
    let mut last = start;
    loop {
        let now = Instant::now();
        let gap = now.duration_since(last).as_nanos() as u64;
        if gap > THRESHOLD_NS {
            let _ = hist.record(gap);
            if gap > OVERLAP_NS && intervals.len() < MAX_INTERVALS {
                let at = last.duration_since(origin).as_nanos() as u64;
                intervals.push((at, at + gap));
            }
        }
        last = now;
        if now.duration_since(start) >= d {
            break;
        }
    }
    Stalls {
        cpu,
        hist,
        watched_ns: last.duration_since(start).as_nanos() as u64,
        pinned,
        intervals,
    }
}

/// Time during which every one of `cpus` lists was in a stall at once, ns. Each list holds
/// one CPU's stalls, in order and not overlapping one another.
pub fn all_at_once_ns(cpus: &[Vec<(u64, u64)>]) -> u64 {
    let mut edges: Vec<(u64, i32)> = cpus
        .iter()
        .flatten()
        .flat_map(|&(a, b)| [(a, 1), (b, -1)])
        .collect();
    // at one instant, an end before a start: touching stalls do not overlap
    edges.sort_unstable();
    let (mut open, mut since, mut total) = (0usize, 0u64, 0u64);
    for (t, e) in edges {
        if open == cpus.len() {
            total += t - since;
        }
        open = if e > 0 { open + 1 } else { open - 1 };
        since = t;
    }
    total
}

/// Runs it on every CPU at once and prints the `BENCH` lines.
pub fn run(o: &HiccupBench) -> Result<(), String> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let d = Duration::from_secs(o.duration_s.max(1));
    eprintln!(
        "hiccup: {cpus} threads, one pinned to each CPU, reading the clock for {} s",
        d.as_secs()
    );
    let origin = Instant::now();
    let all: Vec<Stalls> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..cpus)
            .map(|c| s.spawn(move || watch(c, d, origin)))
            .collect();
        hs.into_iter()
            .map(|h| h.join().map_err(|_| "a watcher panicked".to_string()))
            .collect::<Result<_, _>>()
    })?;
    for st in &all {
        let tags = [
            ("cpu", st.cpu.to_string()),
            ("pinned", st.pinned.to_string()),
            ("secs", d.as_secs().to_string()),
        ];
        report(
            "hiccup_lost_pct",
            st.lost_pct(THRESHOLD_NS),
            "%",
            &[&tags[..], &[("over_us", "10".to_string())]].concat(),
        );
        report("hiccup_lost_over_20us_pct", st.lost_pct(20_000), "%", &tags);
        report(
            "hiccup_lost_over_1ms_pct",
            st.lost_pct(1_000_000),
            "%",
            &tags,
        );
        report(
            "hiccup_over_1ms_per_s",
            st.per_s(1_000_000),
            "stalls/s",
            &tags,
        );
        report(
            "hiccup_p99_stall_us",
            st.hist.value_at_quantile(0.99) as f64 / 1e3,
            "us",
            &tags,
        );
        report("hiccup_max_us", st.hist.max() as f64 / 1e3, "us", &tags);
    }
    if cpus > 1 {
        let lists: Vec<Vec<(u64, u64)>> = all.iter().map(|s| s.intervals.clone()).collect();
        let watched = all.iter().map(|s| s.watched_ns).min().unwrap_or(1).max(1) as f64;
        let independent: f64 = all
            .iter()
            .map(|s| s.intervals.iter().map(|i| i.1 - i.0).sum::<u64>() as f64 / watched)
            .product();
        report(
            "hiccup_all_cpus_at_once_pct",
            all_at_once_ns(&lists) as f64 * 100.0 / watched,
            "%",
            &[
                ("over_us", (OVERLAP_NS / 1000).to_string()),
                ("if_independent_pct", format!("{:.4}", independent * 100.0)),
                ("cpus", cpus.to_string()),
            ],
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_time_and_rates_come_from_the_recorded_stalls() {
        let mut hist = Histogram::<u64>::new_with_bounds(1_000, 60_000_000_000, 2).unwrap();
        hist.record(20_000).unwrap(); // 20 µs
        hist.record(2_000_000).unwrap(); // 2 ms
        hist.record(3_000_000).unwrap(); // 3 ms
        let st = Stalls {
            cpu: 0,
            hist,
            watched_ns: 1_000_000_000,
            pinned: true,
            intervals: Vec::new(),
        };
        // 5.02 ms of 1 s lost in all, 5 ms of it in stalls over 1 ms (within 1% buckets)
        assert!((st.lost_pct(THRESHOLD_NS) - 0.502).abs() < 0.01);
        assert!((st.lost_pct(1_000_000) - 0.5).abs() < 0.01);
        assert_eq!(st.per_s(1_000_000), 2.0);
        assert_eq!(st.per_s(THRESHOLD_NS), 3.0);
    }

    #[test]
    fn all_at_once_is_the_time_every_cpu_was_stalled_together() {
        let a = vec![(0, 10), (20, 30), (40, 50)];
        let b = vec![(5, 25), (30, 40), (45, 60)];
        // together: 5..10, 20..25, 45..50; touching at 30 and 40 is not together
        assert_eq!(all_at_once_ns(&[a.clone(), b.clone()]), 15);
        assert_eq!(all_at_once_ns(std::slice::from_ref(&a)), 30);
        assert_eq!(all_at_once_ns(&[a, b, vec![(0, 7)]]), 2);
        assert_eq!(all_at_once_ns(&[vec![], vec![(0, 5)]]), 0);
    }
}
