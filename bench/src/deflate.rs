//! WebSocket compression (`gateway run --deflate`): what compressing each message on its own
//! costs the gateway's CPU and saves on the wire, for the messages a client gets, made by the
//! gateway's own session encoder: a snapshot of 50 quotes, then updates of 50, 10 and 1
//! changed quotes (each quote as a trade changes it: bid, ask, last, sizes, volume, VWAP).

use crate::report;
use book::quotes::Quote;
use gateway::deflate::Deflater;
use gateway::market::Market;
use gateway::session::{Limits, Outbox, Session};
use std::time::Instant;

/// Options of the deflate benchmark.
#[derive(Debug, Clone)]
pub struct DeflateBench {
    /// Symbols the client subscribes to (the snapshot's quotes).
    pub symbols: usize,
    /// Times each message is compressed (the mean is reported).
    pub iterations: u32,
}

fn quote(i: usize, step: u32) -> Quote {
    let mut symbol = [b' '; 8];
    symbol[..4].copy_from_slice(gateway::synth::symbol_name(i).as_bytes());
    let px = 1_000_000 + (i as u32 * 7919) % 4_000_000 + step * 100;
    Quote {
        symbol,
        bid: Some((px, 100 + (i as u64 * 37) % 5000)),
        ask: Some((px + 100, 200 + (i as u64 * 53) % 5000)),
        last: Some((px + 50, 100 + step as u64)),
        volume: 1_000_000 + i as u64 * 1234 + step as u64 * 100,
        state: b'T',
        exch_ts_ns: 34_200_000_000_000 + i as u64 * 1_000_003 + step as u64,
        recv_ns: 1_795_000_000_000_000_000 + i as u64 * 1_000_003 + step as u64,
        vwap_e4: Some(px + 17),
        ..Quote::default()
    }
}

/// The messages a client subscribed to `o.symbols` symbols gets: (name, bytes).
fn messages(o: &DeflateBench) -> Result<Vec<(String, Vec<u8>)>, String> {
    let lim = Limits::default();
    let mut mkt = Market::new(o.symbols + 16);
    for i in 0..o.symbols {
        mkt.apply(&quote(i, 0));
    }
    let mut s = Session::new(1, 0, 0, &lim);
    let mut out = Outbox::default();
    let names: Vec<String> = (0..o.symbols)
        .map(|i| format!("\"{}\"", gateway::synth::symbol_name(i)))
        .collect();
    let sub = format!(
        r#"{{"op":"subscribe","symbols":[{}],"throttle_ms":0}}"#,
        names.join(",")
    );
    s.on_text(1, &sub, &mut mkt, &lim, &mut out);
    let mut msgs = Vec::new();
    let snapshot = out
        .messages()
        .find(|m| m.starts_with(br#"{"type":"snapshot""#))
        .ok_or("no snapshot")?
        .to_vec();
    msgs.push((format!("snapshot{}", o.symbols), snapshot));
    for (step, changed) in [o.symbols, 10, 1].into_iter().enumerate() {
        out.clear();
        for i in 0..changed.min(o.symbols) {
            mkt.apply(&quote(i, step as u32 + 1));
        }
        s.flush(2 + step as u64, &mut mkt, &lim, &mut out);
        let update = out
            .messages()
            .find(|m| m.starts_with(br#"{"type":"update""#))
            .ok_or("no update")?
            .to_vec();
        msgs.push((format!("update{changed}"), update));
    }
    Ok(msgs)
}

/// Runs the benchmark and prints its `BENCH` lines.
pub fn run(o: &DeflateBench) -> Result<(), String> {
    let mut d = Deflater::default();
    let mut out = Vec::new();
    for (name, msg) in messages(o)? {
        let mut packed = 0;
        // once to warm up, then timed
        d.compress(&msg, &mut out);
        let t = Instant::now();
        for _ in 0..o.iterations {
            packed = if d.compress(&msg, &mut out) {
                out.len()
            } else {
                msg.len()
            };
        }
        let us = t.elapsed().as_secs_f64() * 1e6 / o.iterations as f64;
        let tags = [
            ("bytes", msg.len().to_string()),
            ("compressed", packed.to_string()),
        ];
        report(&format!("deflate_{name}_us"), us, "us", &tags);
        report(
            &format!("deflate_{name}_ratio"),
            packed as f64 / msg.len() as f64,
            "x",
            &tags,
        );
    }
    Ok(())
}
