//! A synthetic market for benchmarks and tests: `symbols` instruments, `rate` quote updates per
//! second in total, written into a quote table (the same shared-memory layout `book run`
//! writes) so any number of gateway processes read it exactly as they read the real one. Each
//! update is stamped with its publish time as the receive timestamp, so a client measures the
//! age of what it gets against it. Symbols are four letters from a fixed list order (`AAAA`,
//! `AAAB`, ...), prices random walks in cents, deterministic from the seed.

use book::quotes::{Quote, QuoteWriter};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// The name of symbol `i`: four capital letters.
pub fn symbol_name(i: usize) -> String {
    let mut s = [b'A'; 4];
    let mut k = i;
    for c in s.iter_mut().rev() {
        *c = b'A' + (k % 26) as u8;
        k /= 26;
    }
    String::from_utf8(s.to_vec()).expect("ASCII")
}

/// xorshift64*: small, deterministic.
#[derive(Debug, Clone)]
pub struct Rng(u64);
impl Rng {
    /// From a seed (0 is replaced).
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }
    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// The synthetic market's state.
#[derive(Debug)]
pub struct Synth {
    quotes: Vec<Quote>,
    rng: Rng,
}

/// Exchange time (ns since midnight, New York standard time) at `now_ns` since the epoch.
pub fn ns_since_midnight(now_ns: u64) -> u64 {
    (now_ns as i64 - 5 * 3_600_000_000_000).rem_euclid(86_400_000_000_000) as u64
}

impl Synth {
    /// `symbols` instruments, trading, with a bid, an offer and a last trade each.
    pub fn new(symbols: usize, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let quotes = (0..symbols)
            .map(|i| {
                let mid = 1_000_000 + rng.below(4_000_000) as u32 / 100 * 100;
                let mut sym = [b' '; 8];
                sym[..4].copy_from_slice(symbol_name(i).as_bytes());
                Quote {
                    symbol: sym,
                    bid: Some((mid - 100, 100 * (1 + rng.below(20)))),
                    ask: Some((mid + 100, 100 * (1 + rng.below(20)))),
                    last: Some((mid, 100)),
                    volume: 0,
                    state: b'T',
                    channel: 0,
                    locate: i as u16 + 1,
                    ..Quote::default()
                }
            })
            .collect();
        Synth { quotes, rng }
    }

    /// Symbols.
    pub fn len(&self) -> usize {
        self.quotes.len()
    }
    /// No symbols.
    pub fn is_empty(&self) -> bool {
        self.quotes.is_empty()
    }

    /// Changes one random symbol (a quote move, sometimes a trade) stamped `now_ns`; returns
    /// its index and quote.
    pub fn step(&mut self, now_ns: u64, seq: u64) -> (usize, Quote) {
        let i = self.rng.below(self.quotes.len() as u64) as usize;
        let r = self.rng.next_u64();
        let q = &mut self.quotes[i];
        let (b, _) = q.bid.unwrap_or((1_000_000, 100));
        let up = r & 1 == 0;
        let nb = if up {
            b + 100
        } else {
            b.saturating_sub(100).max(100)
        };
        q.bid = Some((nb, 100 * (1 + (r >> 8) % 20)));
        q.ask = Some((nb + 200, 100 * (1 + (r >> 16) % 20)));
        if (r >> 24) % 4 == 0 {
            let qty = 100 * (1 + (r >> 32) % 5);
            q.last = Some((nb + 100, qty));
            q.volume += qty;
        }
        q.recv_ns = now_ns;
        q.exch_ts_ns = ns_since_midnight(now_ns);
        q.feed_seq = seq;
        q.updates += 1;
        (i, *q)
    }

    /// Sets every symbol's trading state (e.g. `b'H'` to halt).
    pub fn quote_mut(&mut self, i: usize) -> &mut Quote {
        &mut self.quotes[i]
    }
}

/// Runs a synthetic market into the table at `path` until `stop`: `rate` updates per second in
/// batches every `tick` (what is due by then). Every symbol is published once first.
pub fn run(
    path: &Path,
    symbols: usize,
    rate: u64,
    seed: u64,
    tick: std::time::Duration,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    let mut w = QuoteWriter::create(path, symbols, (rate.max(1000) * 2).next_power_of_two())?;
    let mut s = Synth::new(symbols, seed);
    let t0 = feed_handler::sock::realtime_ns();
    for i in 0..symbols {
        let q = s.quotes[i];
        w.publish(i, &Quote { recv_ns: t0, ..q });
    }
    w.wake_readers();
    let start = std::time::Instant::now();
    let mut sent: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let due = (start.elapsed().as_nanos() * rate as u128 / 1_000_000_000) as u64;
        let now = feed_handler::sock::realtime_ns();
        while sent < due {
            sent += 1;
            let (i, q) = s.step(now, sent);
            w.publish(i, &q);
        }
        w.wake_readers();
        std::thread::sleep(tick);
    }
    let _ = std::fs::remove_file(path);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_steps_are_deterministic_and_uncrossed() {
        assert_eq!(symbol_name(0), "AAAA");
        assert_eq!(symbol_name(27), "AABB");
        let mut a = Synth::new(100, 7);
        let mut b = Synth::new(100, 7);
        for k in 0..10_000 {
            let (i, q) = a.step(k, k);
            assert_eq!((i, q), b.step(k, k));
            assert!(q.bid.unwrap().0 < q.ask.unwrap().0);
        }
    }
}
