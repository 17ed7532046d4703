//! Baseline for `scripts/bench fanout`: the fan-out server a Rust developer writes first with
//! tokio and tokio-tungstenite. A generator task makes the same synthetic load as
//! `gateway synth` (N symbols, M updates/s in total, batched per millisecond, each update stamped
//! with its publish time in `rx`) and broadcasts each batch on a `tokio::sync::broadcast`
//! channel; one task per connection reads `{"op":"subscribe","symbols":[...]}`, then for every
//! batch sends each update of a subscribed symbol as its own message with a per-connection
//! `seq`. A connection that lags the channel skips what it missed (broadcast's `Lagged`).
//!
//! Usage: tokio-ws-baseline PORT SYMBOLS RATE

use futures_util::{SinkExt, StreamExt};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;

struct Update {
    sym: usize,
    json: String,
}

fn name(i: usize) -> String {
    let mut s = [b'A'; 4];
    let mut k = i;
    for c in s.iter_mut().rev() {
        *c = b'A' + (k % 26) as u8;
        k /= 26;
    }
    String::from_utf8(s.to_vec()).unwrap()
}

fn now_ns() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos()
}

#[tokio::main]
async fn main() {
    let a: Vec<String> = std::env::args().collect();
    let port: u16 = a[1].parse().unwrap();
    let symbols: usize = a[2].parse().unwrap();
    let rate: u64 = a[3].parse().unwrap();
    let (tx, _) = broadcast::channel::<Arc<Vec<Update>>>(1024);
    let gen_tx = tx.clone();
    tokio::spawn(async move {
        let mut bid: Vec<u64> = (0..symbols).map(|i| 1_000_000 + (i as u64 * 7919) % 4_000_000).collect();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        let start = std::time::Instant::now();
        let mut sent: u64 = 0;
        loop {
            tick.tick().await;
            let due = (start.elapsed().as_nanos() * rate as u128 / 1_000_000_000) as u64;
            let mut batch = Vec::new();
            while sent < due {
                sent += 1;
                x ^= x >> 12;
                x ^= x << 25;
                x ^= x >> 27;
                let r = x.wrapping_mul(0x2545_f491_4f6c_dd1d);
                let i = (r % symbols as u64) as usize;
                bid[i] = if r & 1 << 40 == 0 { bid[i] + 100 } else { bid[i].saturating_sub(100).max(100) };
                let json = format!(
                    r#"{{"s":"{}","bid":"{}.{:04}","bid_sz":{},"ask":"{}.{:04}","rx":{}}}"#,
                    name(i),
                    bid[i] / 10_000,
                    bid[i] % 10_000,
                    100 * (1 + (r >> 8) % 20),
                    (bid[i] + 200) / 10_000,
                    (bid[i] + 200) % 10_000,
                    now_ns()
                );
                batch.push(Update { sym: i, json });
            }
            if !batch.is_empty() {
                let _ = gen_tx.send(Arc::new(batch));
            }
        }
    });
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let index: Arc<std::collections::HashMap<String, usize>> =
        Arc::new((0..symbols).map(|i| (name(i), i)).collect());
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        let mut rx = tx.subscribe();
        let index = index.clone();
        tokio::spawn(async move {
            let Ok(ws) = tokio_tungstenite::accept_async(stream).await else { return };
            let (mut sink, mut stream) = ws.split();
            let mut subs: HashSet<usize> = HashSet::new();
            let mut seq: u64 = 0;
            loop {
                tokio::select! {
                    m = stream.next() => match m {
                        Some(Ok(Message::Text(t))) => {
                            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&t)
                                && let Some(a) = v["symbols"].as_array()
                            {
                                for s in a.iter().filter_map(|s| s.as_str()) {
                                    if let Some(&i) = index.get(s) {
                                        subs.insert(i);
                                    }
                                }
                                seq += 1;
                                let m = format!(r#"{{"type":"subscribed","seq":{seq}}}"#);
                                if sink.send(Message::text(m)).await.is_err() { return; }
                            }
                        }
                        Some(Ok(_)) => {}
                        _ => return,
                    },
                    b = rx.recv() => match b {
                        Ok(batch) => {
                            for u in batch.iter().filter(|u| subs.contains(&u.sym)) {
                                seq += 1;
                                let m = format!(
                                    r#"{{"type":"update","seq":{seq},"quotes":[{}]}}"#,
                                    u.json
                                );
                                if sink.send(Message::text(m)).await.is_err() { return; }
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(_) => return,
                    },
                }
            }
        });
    }
}
