//! Decode throughput: a generated BinaryFILE held in memory, walked by our decoder and by the
//! `itchy` crate in the same run. Decoding means walking the framing, dispatching on the type and
//! reading every field of every message; both fold every field into a checksum, printed and
//! compared, so nothing is optimised away and both read the same values.

use crate::{fields, report};
use feed_handler::capture::binaryfile::Records;
use feed_handler::itch;
use pcap_replays::market::{Market, MarketConfig};
use pcap_replays::session::{Progress, to_binaryfile};
use std::hint::black_box;
use std::time::Instant;

/// Options of the decode benchmark.
#[derive(Debug, Clone)]
pub struct DecodeBench {
    /// Messages in the generated session.
    pub messages: u64,
    /// Symbols in it.
    pub symbols: usize,
    /// Timed passes of each decoder (the best of each is reported, so neither is judged by a
    /// pass the machine disturbed more than the other's).
    pub passes: u32,
}

/// Folds one message's field sum into the checksum. Fields are summed first (independent adds
/// the CPU can overlap), then folded in with a rotate and an add: the checksum is a chain
/// through every message, so its step must be short (a multiply here would cost both decoders
/// 3 cycles a message on the critical path). Order-sensitive, so both decoders must read the
/// same values in the same order to agree.
#[inline(always)]
fn mix(h: &mut u64, fields_sum: u64) {
    *h = h.rotate_left(1).wrapping_add(fields_sum);
}

/// Sums a message's fields, then mixes the sum into the checksum.
#[derive(Debug, Default)]
struct Fold {
    s: u64,
    h: u64,
    n: u64,
}

impl fields::Sink for Fold {
    #[inline(always)]
    fn field(&mut self, v: u64) {
        self.s = self.s.wrapping_add(v);
    }
    #[inline(always)]
    fn end(&mut self) {
        mix(&mut self.h, self.s);
        self.s = 0;
        self.n += 1;
    }
}

/// Our decoder over every record: framing, dispatch, every field.
#[inline(never)]
pub fn decode_ours(bytes: &[u8]) -> (u64, u64) {
    let mut fold = fields::Visit(Fold::default());
    for rec in Records::new(bytes) {
        let Ok(msg) = rec else { break };
        itch::dispatch(msg, &mut fold);
    }
    (fold.0.n, fold.0.h)
}

/// Framing and dispatch only (the type byte of each message): the floor under `decode_ours`.
#[inline(never)]
pub fn walk_framing(bytes: &[u8]) -> (u64, u64) {
    let mut h = 0u64;
    let mut n = 0u64;
    for m in Records::new(bytes).flatten() {
        h = h.wrapping_add(m[0] as u64);
        n += 1;
    }
    (n, h)
}

/// itchy over the same bytes, every field folded the same way.
#[inline(never)]
pub fn decode_itchy(bytes: &[u8]) -> (u64, u64) {
    let mut h = 0u64;
    let mut n = 0u64;
    for m in itchy::MessageStream::from_reader(bytes) {
        let Ok(m) = m else { break };
        let mut s = 0u64;
        fields::theirs(&m, &mut |v| s = s.wrapping_add(v));
        mix(&mut h, s);
        n += 1;
    }
    (n, h)
}

/// Runs the benchmark and prints its `BENCH` lines. Returns an error when the decoders disagree.
pub fn run(o: &DecodeBench) -> Result<(), String> {
    let t = Instant::now();
    // itchy stops at the types it does not know (h, O): generate what both can read.
    let cfg = MarketConfig {
        seed: 2024,
        symbols: o.symbols,
        messages: o.messages,
        itchy_compatible: true,
        ..Default::default()
    };
    let mut market = Market::new(cfg);
    let (bytes, sum) = to_binaryfile(
        &mut market,
        Vec::with_capacity(o.messages as usize * 32),
        &mut Progress::new("generate", true),
    )
    .map_err(|e| e.to_string())?;
    eprintln!(
        "decode: generated {} messages, {:.0} MB, {} symbols, peak {} live orders, in {:.1} s",
        sum.messages,
        bytes.len() as f64 / 1e6,
        o.symbols,
        market.peak_live_orders(),
        t.elapsed().as_secs_f64()
    );
    let msgs = sum.messages;
    // the best of `passes` (seconds) and what the walk returned
    let best = |f: &dyn Fn(&[u8]) -> (u64, u64)| {
        let mut best = (f64::MAX, (0, 0));
        for _ in 0..o.passes {
            let t = Instant::now();
            let r = f(black_box(&bytes));
            best = (best.0.min(t.elapsed().as_secs_f64()), r);
        }
        best
    };
    // warm the pages once
    let _ = walk_framing(black_box(&bytes));
    let (walk_best, _) = best(&walk_framing);
    let (ours_best, ours) = best(&decode_ours);
    let (itchy_s, itchy) = best(&decode_itchy);
    let extra = [("msgs", msgs.to_string())];
    let ns = |s: f64| s * 1e9 / msgs as f64;
    report("decode_framing_ns_per_msg", ns(walk_best), "ns", &extra);
    report("decode_ns_per_msg", ns(ours_best), "ns", &extra);
    report(
        "decode_msgs_per_s",
        msgs as f64 / ours_best,
        "msg/s",
        &extra,
    );
    report("itchy_decode_ns_per_msg", ns(itchy_s), "ns", &extra);
    report(
        "itchy_decode_msgs_per_s",
        msgs as f64 / itchy_s,
        "msg/s",
        &extra,
    );
    report("decode_speedup_vs_itchy", itchy_s / ours_best, "x", &extra);
    println!(
        "decode checksum ours={:016x} itchy={:016x} messages ours={} itchy={}",
        ours.1, itchy.1, ours.0, itchy.0
    );
    if ours != itchy {
        return Err("the decoders disagree: checksums or message counts differ".into());
    }
    Ok(())
}
