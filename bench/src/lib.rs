//! Benchmarks: each prints `BENCH <name> <value> <unit> [key=value ...]` lines (see
//! [`report`]). The binary `bench` runs them: `bench decode`, ...
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]

pub mod book;
pub mod decode;
pub mod deflate;
pub mod e2e;
pub mod fanout;
pub mod feed;
pub mod fields;
pub mod hiccup;
pub mod load;
pub mod procs;
pub mod redis;
pub mod venues;

/// Prints one figure in the form runs can be compared by.
pub fn report(name: &str, value: f64, unit: &str, extra: &[(&str, String)]) {
    let mut line = format!("BENCH {name} {} {unit}", fmt_value(value));
    for (k, v) in extra {
        line += &format!(" {k}={v}");
    }
    println!("{line}");
}

fn fmt_value(v: f64) -> String {
    if v >= 1000.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// A short description of this machine, for reports.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown cpu".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cpu}, {cores} cores")
}
