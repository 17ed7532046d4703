//! The machine's own hiccups (`bench hiccup`): one thread pinned to each CPU reads the
//! monotonic clock in a tight loop for a while, and every gap between two consecutive reads
//! longer than [`THRESHOLD_NS`] is time the thread did not run (an interrupt, another task, or
//! on a virtual machine the hypervisor running something else). Nothing else of ours runs.
//!
//! This is the floor under every latency percentile measured here: a message that arrives
//! while the thread that should take it is stalled waits for the stall to end. If stalls
//! longer than X take more than 1% of a CPU's time, a p99 below X cannot be measured on it,
//! whatever the code does. Run it beside the feed, redis and e2e figures to read them.

use crate::report;
use hdrhistogram::Histogram;
use std::time::{Duration, Instant};

/// A gap between two clock reads longer than this is a stall (a clock read takes ~20 ns).
pub const THRESHOLD_NS: u64 = 10_000;

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

/// Watches `cpu` for `d`: the calling thread is pinned to it and spins.
pub fn watch(cpu: usize, d: Duration) -> Stalls {
    let pinned = feed_handler::sock::pin_current_thread(cpu);
    let mut hist = Histogram::<u64>::new_with_bounds(1_000, 60_000_000_000, 2).expect("bounds");
    let start = Instant::now();
    let mut last = start;
    loop {
        let now = Instant::now();
        let gap = now.duration_since(last).as_nanos() as u64;
        last = now;
        if gap > THRESHOLD_NS {
            let _ = hist.record(gap);
        }
        if now.duration_since(start) >= d {
            break;
        }
    }
    Stalls {
        cpu,
        hist,
        watched_ns: last.duration_since(start).as_nanos() as u64,
        pinned,
    }
}

/// Runs it on every CPU at once and prints the `BENCH` lines.
pub fn run(o: &HiccupBench) -> Result<(), String> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let d = Duration::from_secs(o.duration_s.max(1));
    eprintln!(
        "hiccup: {cpus} threads, one pinned to each CPU, reading the clock for {} s",
        d.as_secs()
    );
    let all: Vec<Stalls> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..cpus).map(|c| s.spawn(move || watch(c, d))).collect();
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
        };
        // 5.02 ms of 1 s lost in all, 5 ms of it in stalls over 1 ms (within 1% buckets)
        assert!((st.lost_pct(THRESHOLD_NS) - 0.502).abs() < 0.01);
        assert!((st.lost_pct(1_000_000) - 0.5).abs() < 0.01);
        assert_eq!(st.per_s(1_000_000), 2.0);
        assert_eq!(st.per_s(THRESHOLD_NS), 3.0);
    }
}
