//! The gateway's counters, shared by its worker threads (relaxed atomics, added to once per
//! event or per flush), and their Prometheus text exposition for `GET /metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

/// Upper bounds of the latency histogram buckets, in microseconds.
pub const BUCKETS_US: [u64; 18] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 150_000, 250_000,
    500_000, 800_000, 1_000_000, 2_500_000, 10_000_000,
];

/// A Prometheus histogram of durations.
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS_US.len() + 1],
    sum_us: AtomicU64,
}

/// A worker's own histogram, added into the shared one once per tick (no shared cache line
/// written per observation).
#[derive(Debug, Default, Clone)]
pub struct LocalHistogram {
    counts: [u64; BUCKETS_US.len() + 1],
    sum_us: u64,
    n: u64,
}

impl LocalHistogram {
    /// Records one duration.
    pub fn observe_ns(&mut self, ns: u64) {
        let us = ns / 1000;
        let i = BUCKETS_US.partition_point(|&b| b < us);
        self.counts[i] += 1;
        self.sum_us += us;
        self.n += 1;
    }

    /// Adds into `h` and clears.
    pub fn publish(&mut self, h: &Histogram) {
        if self.n == 0 {
            return;
        }
        for (i, c) in self.counts.iter_mut().enumerate() {
            if *c > 0 {
                h.counts[i].fetch_add(*c, Relaxed);
                *c = 0;
            }
        }
        h.sum_us.fetch_add(self.sum_us, Relaxed);
        self.sum_us = 0;
        self.n = 0;
    }
}

/// A worker's own counters for what happens per flush, published once per tick.
#[derive(Debug, Default, Clone)]
pub struct Local {
    /// See [`Metrics::messages_sent_total`].
    pub messages: u64,
    /// See [`Metrics::bytes_sent_total`].
    pub bytes: u64,
    /// See [`Metrics::flushes_total`].
    pub flushes: u64,
    /// See [`Metrics::flush_ns_total`].
    pub flush_ns: u64,
    /// See [`Metrics::quotes_sent_total`].
    pub quotes: u64,
    /// See [`Metrics::conflated_updates_total`].
    pub conflated: u64,
    /// See [`Metrics::slow_client_events_total`].
    pub slow: u64,
    /// See [`Metrics::deflated_messages_total`].
    pub deflated: u64,
    /// See [`Metrics::deflated_bytes_in_total`].
    pub deflated_in: u64,
    /// See [`Metrics::deflated_bytes_out_total`].
    pub deflated_out: u64,
    /// Age from the receive timestamp.
    pub age_rx: LocalHistogram,
    /// Age from the exchange timestamp.
    pub age_x: LocalHistogram,
}

impl Local {
    /// Adds everything into `m` and clears.
    pub fn publish(&mut self, m: &Metrics) {
        let add = |a: &AtomicU64, v: &mut u64| {
            if *v > 0 {
                a.fetch_add(*v, Relaxed);
                *v = 0;
            }
        };
        add(&m.messages_sent_total, &mut self.messages);
        add(&m.bytes_sent_total, &mut self.bytes);
        add(&m.flushes_total, &mut self.flushes);
        add(&m.flush_ns_total, &mut self.flush_ns);
        add(&m.quotes_sent_total, &mut self.quotes);
        add(&m.conflated_updates_total, &mut self.conflated);
        add(&m.slow_client_events_total, &mut self.slow);
        add(&m.deflated_messages_total, &mut self.deflated);
        add(&m.deflated_bytes_in_total, &mut self.deflated_in);
        add(&m.deflated_bytes_out_total, &mut self.deflated_out);
        self.age_rx.publish(&m.age_from_receive);
        self.age_x.publish(&m.age_from_exchange);
    }
}

impl Histogram {
    /// Records one duration.
    pub fn observe_ns(&self, ns: u64) {
        let us = ns / 1000;
        let i = BUCKETS_US.partition_point(|&b| b < us);
        self.counts[i].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cum = 0;
        for (i, b) in BUCKETS_US.iter().enumerate() {
            cum += self.counts[i].load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{}\"}} {cum}", *b as f64 / 1e6);
        }
        cum += self.counts[BUCKETS_US.len()].load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cum}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_us.load(Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {cum}");
    }
}

macro_rules! metrics {
    ($( $kind:ident $field:ident : $ty:ty = $help:literal ),* $(,)?) => {
        /// Every counter and gauge.
        #[derive(Debug, Default)]
        pub struct Metrics {
            $( #[doc = $help] pub $field: $ty, )*
            /// Age at write from the feed receive timestamp.
            pub age_from_receive: Histogram,
            /// Age at write from the exchange timestamp.
            pub age_from_exchange: Histogram,
        }
        impl Metrics {
            /// Prometheus text exposition format 0.0.4.
            pub fn render(&self) -> String {
                let mut out = String::new();
                $(
                    let name = concat!("gateway_", stringify!($field));
                    let _ = writeln!(out, "# HELP {name} {}\n# TYPE {name} {}\n{name} {}",
                        $help, stringify!($kind), self.$field.load(Relaxed));
                )*
                self.age_from_receive.render(&mut out, "gateway_age_from_receive_seconds",
                    "Feed receive timestamp to frame written (freshest quote of each frame).");
                self.age_from_exchange.render(&mut out, "gateway_age_from_exchange_seconds",
                    "Exchange timestamp to frame written (freshest quote of each frame).");
                out
            }
        }
    };
}

metrics! {
    gauge connections: AtomicI64 = "Open client connections (all kinds).",
    gauge websocket_connections: AtomicI64 = "Open WebSocket sessions.",
    gauge sse_connections: AtomicI64 = "Open Server-Sent Events streams.",
    gauge subscriptions: AtomicI64 = "Symbol subscriptions over all sessions.",
    counter accepted_total: AtomicU64 = "Connections accepted.",
    counter rejected_total: AtomicU64 = "Connections refused at the connection limit.",
    counter http_requests_total: AtomicU64 = "Plain HTTP requests answered.",
    counter messages_sent_total: AtomicU64 = "Protocol messages queued to clients.",
    counter quotes_sent_total: AtomicU64 = "Quote objects sent in snapshots and updates.",
    counter bytes_sent_total: AtomicU64 = "Bytes of protocol messages queued to clients.",
    counter flushes_total: AtomicU64 = "Flushes that wrote to a socket (one write each).",
    counter flush_ns_total: AtomicU64 = "Time spent in flushes, ns.",
    counter conflated_updates_total: AtomicU64 = "Symbol changes replaced by a later one before they were sent.",
    counter slow_client_events_total: AtomicU64 = "Times a write left a client's outbound buffer undrained (it is conflated until it drains).",
    counter slow_client_closed_total: AtomicU64 = "Connections closed with 1013 after stalling past the limit.",
    counter policy_closed_total: AtomicU64 = "Connections closed with 1008 for bad input past the limit.",
    counter protocol_closed_total: AtomicU64 = "Connections closed for WebSocket protocol errors (1002, 1007, 1009).",
    counter errors_sent_total: AtomicU64 = "error messages sent.",
    counter handshake_timeouts_total: AtomicU64 = "Connections closed before completing a request in time.",
    counter requests_held_total: AtomicU64 = "Requests for quotes held until the source had loaded them (the gateway just started).",
    counter requests_unready_total: AtomicU64 = "Requests for quotes answered 503 because the source had not loaded them in time.",
    counter idle_closed_total: AtomicU64 = "Connections closed for silence past the idle timeout.",
    counter source_quotes_total: AtomicU64 = "Quote changes read from the source.",
    counter deflate_sessions_total: AtomicU64 = "WebSocket sessions with permessage-deflate negotiated (--deflate).",
    counter deflated_messages_total: AtomicU64 = "Messages sent compressed.",
    counter deflated_bytes_in_total: AtomicU64 = "Bytes of the messages sent compressed, before compression.",
    counter deflated_bytes_out_total: AtomicU64 = "Bytes of the messages sent compressed, as sent (frame headers left out).",
    gauge source_live: AtomicI64 = "1 when the quote source is live.",
    gauge symbols: AtomicI64 = "Symbols known.",
    gauge stale_symbols: AtomicI64 = "Symbols currently stale.",
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_every_family_and_cumulative_buckets() {
        let m = Metrics::default();
        m.connections.fetch_add(3, Relaxed);
        m.age_from_receive.observe_ns(70_000);
        m.age_from_receive.observe_ns(20_000_000_000);
        let t = m.render();
        assert!(t.contains("# TYPE gateway_connections gauge\ngateway_connections 3\n"));
        assert!(
            t.contains("gateway_age_from_receive_seconds_bucket{le=\"0.0001\"} 1\n"),
            "{t}"
        );
        assert!(t.contains("gateway_age_from_receive_seconds_bucket{le=\"10\"} 1\n"));
        assert!(t.contains("gateway_age_from_receive_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(t.contains("gateway_age_from_receive_seconds_count 2\n"));
    }
}
