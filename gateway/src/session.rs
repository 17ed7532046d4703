//! One client's session, sans I/O: what it subscribed to and at which conflation window, its
//! sequence numbers, its portfolio, its inbound rate limit and error budget, and what to send
//! next. Time is passed in (`now_ns`), so tests step it by hand; bytes go into an [`Outbox`],
//! which the connection turns into WebSocket frames or SSE events.
//!
//! Conflation: a session remembers, per subscribed symbol, the version it last sent. At each
//! flush (every `throttle_ms`, or as soon as a symbol changes for throttle 0) it sends each
//! symbol whose version moved, with exactly the fields changed since the version it sent, in one
//! `update` message (several when it exceeds the message size). A client that cannot keep up is
//! simply not flushed while its outbound buffer is full; when it drains it gets the latest value
//! of every symbol that changed, never a backlog.

use crate::encode;
use crate::market::{Market, SymId};
use serde_json::Value;
use std::io::Write;

/// Limits and intervals of a session; the defaults are the documented ones.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Symbols per connection (subscriptions and portfolio holdings each).
    pub max_symbols: usize,
    /// Largest inbound message handled; larger ones get `too_large` (the connection stays).
    pub max_message_bytes: usize,
    /// Inbound messages per second (token bucket rate)...
    pub msgs_per_s: u64,
    /// ...and burst.
    pub msgs_burst: u64,
    /// Errors within `error_window_ns` after which the connection is closed with 1008.
    pub max_errors: u32,
    /// See `max_errors`.
    pub error_window_ns: u64,
    /// A heartbeat after this long without another message.
    pub heartbeat_ns: u64,
    /// Conflation window when a subscribe gives none.
    pub default_throttle_ms: u64,
    /// Largest conflation window accepted.
    pub max_throttle_ms: u64,
    /// Bytes queued per flush at most (the outbound buffer).
    pub out_budget: usize,
    /// Bytes per message before the next message starts.
    pub message_chunk: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_symbols: 500,
            max_message_bytes: 128 * 1024,
            msgs_per_s: 20,
            msgs_burst: 40,
            max_errors: 20,
            error_window_ns: 10_000_000_000,
            heartbeat_ns: 1_000_000_000,
            default_throttle_ms: 100,
            max_throttle_ms: 60_000,
            out_budget: 64 * 1024,
            message_chunk: 16 * 1024,
        }
    }
}

/// Messages a session produced, back to back in one buffer.
#[derive(Debug, Default)]
pub struct Outbox {
    buf: Vec<u8>,
    ends: Vec<usize>,
}

impl Outbox {
    /// Forgets every message (keeps the memory).
    pub fn clear(&mut self) {
        self.buf.clear();
        self.ends.clear();
    }
    /// Bytes held.
    pub fn len(&self) -> usize {
        self.buf.len()
    }
    /// No message.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
    /// The messages, in order.
    pub fn messages(&self) -> impl Iterator<Item = &[u8]> {
        let mut start = 0;
        self.ends.iter().map(move |&e| {
            let m = &self.buf[start..e];
            start = e;
            m
        })
    }
    fn truncate(&mut self, len: usize) {
        self.buf.truncate(len);
    }
}

/// What the connection does after an inbound message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Keep going.
    Ok,
    /// Close with this code and reason.
    Close(u16, &'static str),
}

/// What a flush sent.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Flushed {
    /// Quote objects sent.
    pub quotes: u64,
    /// The freshest feed receive timestamp among them (ns since the epoch; 0 if none).
    pub max_rx_ns: u64,
    /// The freshest exchange timestamp among them (ns since midnight; 0 if none).
    pub max_x_ts_ns: u64,
    /// Left out for lack of room: flush again once the buffer drains.
    pub more: bool,
    /// Changes replaced by a later one of the same symbol before being sent.
    pub conflated: u64,
}

#[derive(Debug)]
struct Portfolio {
    id: Vec<u8>,
    holdings: Vec<(SymId, i64, u64)>,
}

/// One client.
#[derive(Debug)]
pub struct Session {
    key: u64,
    seq: u64,
    throttle_ns: u64,
    phase_ns: u64,
    subs: Vec<(SymId, u64)>,
    portfolio: Option<Portfolio>,
    last_out_ns: u64,
    next_flush_ns: u64,
    pending: bool,
    tokens_e3: u64,
    refill_ns: u64,
    errors: u32,
    errors_since_ns: u64,
}

const E9: u64 = 1_000_000_000;

impl Session {
    /// A session; `key` identifies it in [`crate::market::Sym::immediate`], `phase_ns` spreads
    /// the flush instants of sessions with the same window.
    pub fn new(key: u64, now_ns: u64, phase_ns: u64, lim: &Limits) -> Self {
        Session {
            key,
            seq: 0,
            throttle_ns: lim.default_throttle_ms * 1_000_000,
            phase_ns,
            subs: Vec::new(),
            portfolio: None,
            last_out_ns: now_ns,
            next_flush_ns: u64::MAX,
            pending: false,
            tokens_e3: lim.msgs_burst * 1000,
            refill_ns: now_ns,
            errors: 0,
            errors_since_ns: now_ns,
        }
    }

    /// Messages sent so far (the last `seq`).
    pub fn seq(&self) -> u64 {
        self.seq
    }
    /// Symbols subscribed.
    pub fn subscriptions(&self) -> usize {
        self.subs.len()
    }
    /// Conflation window, ms.
    pub fn throttle_ms(&self) -> u64 {
        self.throttle_ns / 1_000_000
    }

    /// When this session next wants [`Session::flush`] called without being told of a change.
    pub fn due_ns(&self, lim: &Limits) -> u64 {
        let hb = self.last_out_ns.saturating_add(lim.heartbeat_ns);
        if self.pending {
            return 0;
        }
        hb.min(self.next_flush_ns)
    }

    fn begin(&mut self, out: &mut Outbox, kind: &str) {
        self.seq += 1;
        let _ = write!(out.buf, "{{\"type\":\"{kind}\",\"seq\":{}", self.seq);
    }
    fn end(&mut self, out: &mut Outbox, now_ns: u64) {
        out.buf.push(b'}');
        out.ends.push(out.buf.len());
        self.last_out_ns = now_ns;
    }
    /// Undoes a message begun but not ended.
    fn abandon(&mut self, out: &mut Outbox, at: usize) {
        out.truncate(at);
        self.seq -= 1;
    }

    fn id_field(out: &mut Outbox, id: Option<&[u8]>) {
        if let Some(id) = id {
            out.buf.extend_from_slice(b",\"id\":");
            out.buf.extend_from_slice(id);
        }
    }

    /// Writes an `error` message and counts it against the error budget.
    pub fn error(
        &mut self,
        now_ns: u64,
        lim: &Limits,
        out: &mut Outbox,
        id: Option<&[u8]>,
        code: &str,
        message: &str,
    ) -> Verdict {
        self.begin(out, "error");
        Self::id_field(out, id);
        let _ = write!(out.buf, ",\"code\":\"{code}\",\"message\":");
        encode::json_str(&mut out.buf, message);
        self.end(out, now_ns);
        if now_ns.saturating_sub(self.errors_since_ns) > lim.error_window_ns {
            self.errors = 0;
            self.errors_since_ns = now_ns;
        }
        self.errors += 1;
        if self.errors > lim.max_errors {
            Verdict::Close(1008, "too many bad messages")
        } else {
            Verdict::Ok
        }
    }

    fn take_token(&mut self, now_ns: u64, lim: &Limits) -> bool {
        let dt = now_ns.saturating_sub(self.refill_ns);
        self.refill_ns = now_ns;
        let add = (dt as u128 * lim.msgs_per_s as u128 * 1000 / E9 as u128) as u64;
        self.tokens_e3 = (self.tokens_e3 + add).min(lim.msgs_burst * 1000);
        if self.tokens_e3 >= 1000 {
            self.tokens_e3 -= 1000;
            true
        } else {
            false
        }
    }

    /// A binary frame: not part of the protocol.
    pub fn on_binary(&mut self, now_ns: u64, lim: &Limits, out: &mut Outbox) -> Verdict {
        self.error(
            now_ns,
            lim,
            out,
            None,
            "bad_request",
            "binary frames are not supported; send JSON text",
        )
    }

    /// One inbound text message.
    pub fn on_text(
        &mut self,
        now_ns: u64,
        text: &str,
        mkt: &mut Market,
        lim: &Limits,
        out: &mut Outbox,
    ) -> Verdict {
        if !self.take_token(now_ns, lim) {
            return self.error(
                now_ns,
                lim,
                out,
                None,
                "rate_limited",
                "too many messages; this one was dropped",
            );
        }
        if text.len() > lim.max_message_bytes {
            let m = format!(
                "message of {} bytes is over the limit of {}",
                text.len(),
                lim.max_message_bytes
            );
            return self.error(now_ns, lim, out, None, "too_large", &m);
        }
        let v: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                let m = format!("invalid JSON: {e}");
                return self.error(now_ns, lim, out, None, "bad_json", &m);
            }
        };
        let Some(obj) = v.as_object() else {
            return self.error(
                now_ns,
                lim,
                out,
                None,
                "bad_request",
                "expected a JSON object",
            );
        };
        let id: Option<Vec<u8>> = match obj.get("id") {
            None => None,
            Some(i @ (Value::Number(_) | Value::String(_))) if i.to_string().len() <= 64 => {
                Some(i.to_string().into_bytes())
            }
            Some(_) => {
                return self.error(
                    now_ns,
                    lim,
                    out,
                    None,
                    "bad_request",
                    "id must be a number or a string of at most 64 bytes",
                );
            }
        };
        let id = id.as_deref();
        let Some(op) = obj.get("op").and_then(Value::as_str) else {
            return self.error(now_ns, lim, out, id, "bad_request", "op must be a string");
        };
        match op {
            "subscribe" | "unsubscribe" => {
                let syms = match obj.get("symbols").and_then(Value::as_array) {
                    Some(a) if a.iter().all(Value::is_string) => a,
                    _ => {
                        return self.error(
                            now_ns,
                            lim,
                            out,
                            id,
                            "bad_request",
                            "symbols must be a list of strings",
                        );
                    }
                };
                if syms.len() > lim.max_symbols {
                    let m = format!("at most {} symbols per connection", lim.max_symbols);
                    return self.error(now_ns, lim, out, id, "too_many_symbols", &m);
                }
                let names: Vec<&str> = syms.iter().filter_map(Value::as_str).collect();
                if op == "unsubscribe" {
                    self.unsubscribe(now_ns, &names, id, mkt, out);
                    return Verdict::Ok;
                }
                let throttle = match obj.get("throttle_ms") {
                    None => None,
                    Some(t) => match t.as_u64() {
                        Some(t) if t <= lim.max_throttle_ms => Some(t),
                        _ => {
                            let m = format!(
                                "throttle_ms must be an integer from 0 to {}",
                                lim.max_throttle_ms
                            );
                            return self.error(now_ns, lim, out, id, "bad_request", &m);
                        }
                    },
                };
                self.subscribe(now_ns, &names, throttle, id, mkt, lim, out)
            }
            "portfolio" => {
                let Some(h) = obj.get("holdings").and_then(Value::as_object) else {
                    return self.error(
                        now_ns,
                        lim,
                        out,
                        id,
                        "bad_request",
                        "holdings must be an object of symbol to quantity",
                    );
                };
                if h.len() > lim.max_symbols {
                    let m = format!("at most {} holdings", lim.max_symbols);
                    return self.error(now_ns, lim, out, id, "too_many_symbols", &m);
                }
                let mut holdings = Vec::with_capacity(h.len());
                let mut unknown = Vec::new();
                for (s, q) in h {
                    let qty = match q {
                        Value::String(t) => parse_e4(t),
                        Value::Number(n) => parse_e4(&n.to_string()),
                        _ => None,
                    };
                    let Some(qty) = qty else {
                        let m = format!(
                            "quantity of {s} must be a decimal number (string) with at most 4 decimals"
                        );
                        return self.error(now_ns, lim, out, id, "bad_request", &m);
                    };
                    match mkt.lookup(s) {
                        Some(sid) => holdings.push((sid, qty, 0)),
                        None => unknown.push(s.as_str()),
                    }
                }
                self.portfolio = (!holdings.is_empty()).then(|| Portfolio {
                    id: id.map(<[u8]>::to_vec).unwrap_or_default(),
                    holdings,
                });
                self.send_portfolio(now_ns, mkt, out, Some(&unknown));
                if self.throttle_ns > 0 && self.next_flush_ns == u64::MAX {
                    self.next_flush_ns = self.boundary_after(now_ns);
                }
                Verdict::Ok
            }
            "ping" => {
                self.begin(out, "pong");
                Self::id_field(out, id);
                let _ = write!(out.buf, ",\"ts\":{}", now_ns);
                self.end(out, now_ns);
                Verdict::Ok
            }
            _ => {
                let m = format!(
                    "unknown op {:?}; expected subscribe, unsubscribe, portfolio or ping",
                    op.chars().take(32).collect::<String>()
                );
                self.error(now_ns, lim, out, id, "unknown_op", &m)
            }
        }
    }

    fn boundary_after(&self, now_ns: u64) -> u64 {
        // the instants p + kT after now, p being this session's phase within the window
        let t = self.throttle_ns.max(1);
        let p = self.phase_ns % t;
        if now_ns < p {
            return p;
        }
        p + ((now_ns - p) / t + 1) * t
    }

    fn set_throttle(&mut self, now_ns: u64, ms: u64, mkt: &mut Market) {
        let ns = ms * 1_000_000;
        if (ns == 0) != (self.throttle_ns == 0) {
            for &(id, _) in &self.subs {
                let imm = &mut mkt.syms[id as usize].immediate;
                if ns == 0 {
                    imm.push(self.key);
                } else if let Some(p) = imm.iter().position(|&k| k == self.key) {
                    imm.swap_remove(p);
                }
            }
        }
        self.throttle_ns = ns;
        self.next_flush_ns = if ns == 0 {
            u64::MAX
        } else {
            self.boundary_after(now_ns)
        };
    }

    /// Subscribes (also the SSE query): `subscribed`, then the snapshot.
    #[allow(clippy::too_many_arguments)]
    pub fn subscribe(
        &mut self,
        now_ns: u64,
        names: &[&str],
        throttle_ms: Option<u64>,
        id: Option<&[u8]>,
        mkt: &mut Market,
        lim: &Limits,
        out: &mut Outbox,
    ) -> Verdict {
        let mut new: Vec<SymId> = Vec::new();
        let mut known: Vec<&str> = Vec::new();
        let mut unknown: Vec<&str> = Vec::new();
        for &n in names {
            match mkt.lookup(n) {
                Some(s) if mkt.syms[s as usize].version > 0 => {
                    if !known.contains(&n) {
                        known.push(n);
                        if !self.subs.iter().any(|x| x.0 == s) {
                            new.push(s);
                        }
                    }
                }
                _ => unknown.push(n),
            }
        }
        if self.subs.len() + new.len() > lim.max_symbols {
            let m = format!(
                "at most {} symbols per connection ({} subscribed)",
                lim.max_symbols,
                self.subs.len()
            );
            return self.error(now_ns, lim, out, id, "too_many_symbols", &m);
        }
        if let Some(t) = throttle_ms {
            self.set_throttle(now_ns, t, mkt);
        } else if self.next_flush_ns == u64::MAX && self.throttle_ns > 0 {
            self.next_flush_ns = self.boundary_after(now_ns);
        }
        for &s in &new {
            self.subs.push((s, 0));
            if self.throttle_ns == 0 {
                mkt.syms[s as usize].immediate.push(self.key);
            }
        }
        self.begin(out, "subscribed");
        Self::id_field(out, id);
        out.buf.extend_from_slice(b",\"symbols\":[");
        list(&mut out.buf, &known);
        out.buf.extend_from_slice(b"],\"unknown\":[");
        list(&mut out.buf, &unknown);
        let _ = write!(out.buf, "],\"throttle_ms\":{}", self.throttle_ms());
        self.end(out, now_ns);
        // the snapshot: every symbol named (a resubscribe gets a fresh one), full quotes
        let mut i = 0;
        while i < known.len() {
            let start = out.len();
            self.begin(out, "snapshot");
            out.buf.extend_from_slice(b",\"quotes\":[");
            let mut n = 0;
            while i < known.len() && out.len() - start < lim.message_chunk {
                let Some(s) = mkt.lookup(known[i]) else {
                    i += 1;
                    continue;
                };
                if n > 0 {
                    out.buf.push(b',');
                }
                out.buf.extend_from_slice(mkt.fragment(s, 0));
                let v = mkt.syms[s as usize].version;
                if let Some(e) = self.subs.iter_mut().find(|x| x.0 == s) {
                    e.1 = v;
                }
                n += 1;
                i += 1;
            }
            out.buf.push(b']');
            self.end(out, now_ns);
            if out.len() > lim.out_budget {
                // the rest goes out as full quotes in the next update (their sent version is 0)
                self.pending = true;
                break;
            }
        }
        Verdict::Ok
    }

    fn unsubscribe(
        &mut self,
        now_ns: u64,
        names: &[&str],
        id: Option<&[u8]>,
        mkt: &mut Market,
        out: &mut Outbox,
    ) {
        let mut gone = Vec::new();
        for &n in names {
            if let Some(s) = mkt.lookup(n)
                && let Some(p) = self.subs.iter().position(|x| x.0 == s)
            {
                self.subs.swap_remove(p);
                let imm = &mut mkt.syms[s as usize].immediate;
                if let Some(q) = imm.iter().position(|&k| k == self.key) {
                    imm.swap_remove(q);
                }
                gone.push(n);
            }
        }
        self.begin(out, "unsubscribed");
        Self::id_field(out, id);
        out.buf.extend_from_slice(b",\"symbols\":[");
        list(&mut out.buf, &gone);
        out.buf.push(b']');
        self.end(out, now_ns);
    }

    /// Removes this session from the market's lists (call when the connection goes).
    pub fn detach(&mut self, mkt: &mut Market) {
        if self.throttle_ns == 0 {
            for &(s, _) in &self.subs {
                let imm = &mut mkt.syms[s as usize].immediate;
                if let Some(q) = imm.iter().position(|&k| k == self.key) {
                    imm.swap_remove(q);
                }
            }
        }
        self.subs.clear();
    }

    fn send_portfolio(
        &mut self,
        now_ns: u64,
        mkt: &Market,
        out: &mut Outbox,
        unknown: Option<&[&str]>,
    ) {
        let Some(p) = self.portfolio.as_mut() else {
            if unknown.is_some() {
                // an empty portfolio: say so once
                self.seq += 1;
                let _ = write!(
                    out.buf,
                    "{{\"type\":\"portfolio\",\"seq\":{},\"value\":null,\"stale\":false",
                    self.seq
                );
                if let Some(u) = unknown {
                    out.buf.extend_from_slice(b",\"unknown\":[");
                    list(&mut out.buf, u);
                    out.buf.push(b']');
                }
                self.end(out, now_ns);
            }
            return;
        };
        let mut value_e8: i128 = 0;
        let mut stale = false;
        for h in p.holdings.iter_mut() {
            let s = &mkt.syms[h.0 as usize];
            h.2 = s.version;
            let q = &s.quote;
            let px = q
                .last
                .map(|l| l.0 as i128)
                .or_else(|| match (q.bid, q.ask) {
                    (Some(b), Some(a)) => Some((b.0 as i128 + a.0 as i128) / 2),
                    _ => None,
                });
            match px {
                Some(px) => value_e8 += h.1 as i128 * px,
                None => stale = true,
            }
            stale |= q.stale;
        }
        let id = std::mem::take(&mut p.id);
        self.begin(out, "portfolio");
        if !id.is_empty() {
            Self::id_field(out, Some(&id));
        }
        out.buf.extend_from_slice(b",\"value\":");
        // round half away from zero to 4 decimals
        let half = if value_e8 < 0 { -5_000 } else { 5_000 };
        encode::signed_e4(&mut out.buf, (value_e8 + half) / 10_000);
        let _ = write!(out.buf, ",\"stale\":{stale}");
        if let Some(u) = unknown {
            out.buf.extend_from_slice(b",\"unknown\":[");
            list(&mut out.buf, u);
            out.buf.push(b']');
        }
        self.end(out, now_ns);
        if let Some(p) = self.portfolio.as_mut() {
            p.id = id;
        }
    }

    /// Sends what is due: an `update` with every subscribed symbol that changed since it was
    /// last sent (when the window is up), the portfolio value when a holding changed, a
    /// heartbeat after `heartbeat_ns` of silence. Call it when [`Session::due_ns`] has passed,
    /// or at once for throttle 0 when a subscribed symbol changed; only when the connection's
    /// outbound buffer is empty.
    pub fn flush(
        &mut self,
        now_ns: u64,
        mkt: &mut Market,
        lim: &Limits,
        out: &mut Outbox,
    ) -> Flushed {
        let mut f = Flushed::default();
        let window_up = self.pending || self.throttle_ns == 0 || now_ns >= self.next_flush_ns;
        if window_up {
            self.pending = false;
            if self.throttle_ns > 0 {
                self.next_flush_ns = if self.subs.is_empty() && self.portfolio.is_none() {
                    u64::MAX
                } else {
                    self.boundary_after(now_ns)
                };
            }
            let mut open: Option<usize> = None;
            for k in 0..self.subs.len() {
                let (s, sent) = self.subs[k];
                if mkt.versions[s as usize] <= sent {
                    continue;
                }
                let sym = &mkt.syms[s as usize];
                if out.len() >= lim.out_budget {
                    f.more = true;
                    self.pending = true;
                    break;
                }
                let (rx, xts) = (sym.quote.recv_ns, sym.quote.exch_ts_ns);
                let v = sym.version;
                match open {
                    Some(start) if out.len() - start < lim.message_chunk => out.buf.push(b','),
                    Some(_) => {
                        out.buf.push(b']');
                        self.end(out, now_ns);
                        open = None;
                    }
                    None => {}
                }
                if open.is_none() {
                    open = Some(out.len());
                    self.begin(out, "update");
                    let _ = write!(out.buf, ",\"ts\":{now_ns},\"quotes\":[");
                }
                if sent > 0 {
                    f.conflated += v - sent - 1;
                }
                out.buf.extend_from_slice(mkt.fragment(s, sent));
                self.subs[k].1 = v;
                f.quotes += 1;
                f.max_rx_ns = f.max_rx_ns.max(rx);
                f.max_x_ts_ns = f.max_x_ts_ns.max(xts);
            }
            if open.is_some() {
                out.buf.push(b']');
                self.end(out, now_ns);
            }
            if let Some(p) = &self.portfolio
                && p.holdings.iter().any(|h| mkt.versions[h.0 as usize] > h.2)
            {
                self.send_portfolio(now_ns, mkt, out, None);
            }
        }
        if out.is_empty() && now_ns >= self.last_out_ns.saturating_add(lim.heartbeat_ns) {
            self.begin(out, "heartbeat");
            let _ = write!(out.buf, ",\"ts\":{now_ns}");
            self.end(out, now_ns);
        }
        f
    }

    /// Takes back the messages from `from_seq` on, which could not be queued: their symbols are
    /// sent again (with their latest values) at the next flush.
    pub fn unsend(&mut self, out: &mut Outbox, at: usize, from_seq: u64) {
        self.abandon(out, at);
        self.seq = from_seq - 1;
        for s in self.subs.iter_mut() {
            s.1 = 0;
        }
        self.pending = true;
    }
}

fn list(out: &mut Vec<u8>, names: &[&str]) {
    for (i, n) in names.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        encode::json_str(out, n);
    }
}

/// Parses a decimal quantity with at most 4 decimals into units of 1e-4 (`"2.5"` → 25000).
pub fn parse_e4(s: &str) -> Option<i64> {
    let (neg, t) = match s.strip_prefix('-') {
        Some(t) => (true, t),
        None => (false, s),
    };
    let (int, frac) = t.split_once('.').unwrap_or((t, ""));
    if int.is_empty() && frac.is_empty()
        || int.len() > 12
        || frac.len() > 4
        || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let i: i64 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut f: i64 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    for _ in frac.len()..4 {
        f *= 10;
    }
    let v = i * 10_000 + f;
    Some(if neg { -v } else { v })
}

/// The body of the `client_messages` fuzz target: each line of `data` is one message from a
/// client (a text frame, or a binary one when the line starts with a 0 byte), handled by one
/// session over a market of four symbols that moves and is flushed after each, 7 ms apart (so
/// windows, heartbeats and the rate limit all come into play). Checks beyond "no panic": every
/// message the server sends is a JSON object with a `type` and the next `seq` (from 1, no
/// holes); a close comes with a code the protocol names (1008, 1013); the session holds at most
/// [`Limits::max_symbols`] subscriptions; and once detached it is on no symbol's list.
#[doc(hidden)]
pub fn fuzz(data: &[u8]) {
    use book::quotes::Quote;
    const MS: u64 = 1_000_000;
    let lim = Limits {
        max_symbols: 3,
        max_message_bytes: 4096,
        ..Limits::default()
    };
    let mut mkt = Market::new(8);
    let syms = [b"AAAA    ", b"BBBB    ", b"CC.D    ", b"E       "];
    for (i, s) in syms.iter().enumerate() {
        mkt.apply(&Quote {
            symbol: **s,
            bid: Some((10_000 * (i as u32 + 1), 100)),
            ask: Some((10_000 * (i as u32 + 1) + 100, 100)),
            last: Some((10_000, 10)),
            state: b'T',
            ..Quote::default()
        });
    }
    let mut s = Session::new(1, 0, 3 * MS, &lim);
    let mut out = Outbox::default();
    let mut seq = 0u64;
    let mut check = |out: &mut Outbox| {
        for m in out.messages() {
            let v: Value = serde_json::from_slice(m).expect("every server message is JSON");
            assert!(v["type"].is_string(), "no type: {v}");
            seq += 1;
            assert_eq!(v["seq"].as_u64(), Some(seq), "seq with a hole: {v}");
        }
        out.clear();
    };
    let mut now = 0;
    for (i, line) in data.split(|&b| b == b'\n').enumerate() {
        now += 7 * MS;
        let verdict = match line.split_first() {
            Some((0, _)) => s.on_binary(now, &lim, &mut out),
            _ => s.on_text(
                now,
                &String::from_utf8_lossy(line),
                &mut mkt,
                &lim,
                &mut out,
            ),
        };
        check(&mut out);
        if let Verdict::Close(code, _) = verdict {
            assert!(code == 1008 || code == 1013, "close code {code}");
            break;
        }
        assert!(s.subscriptions() <= lim.max_symbols);
        let k = i % syms.len();
        let mut q = mkt.syms[k].quote;
        q.bid = q.bid.map(|(p, n)| (p + 1, n + 1));
        q.volume += 10;
        mkt.apply(&q);
        s.flush(now, &mut mkt, &lim, &mut out);
        check(&mut out);
    }
    s.detach(&mut mkt);
    assert!(mkt.syms.iter().all(|y| !y.immediate.contains(&1)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use book::quotes::Quote;

    const MS: u64 = 1_000_000;

    /// The fuzz target over its committed seeds and deterministic mutations of them.
    #[test]
    fn the_fuzz_target_survives_its_seeds_and_their_mutations() {
        feed_handler::fuzzing::seeds_and_mutations("client_messages", 4, fuzz);
    }

    fn market() -> Market {
        let mut m = Market::new(100);
        for (i, s) in [b"AAAA    ", b"BBBB    "].iter().enumerate() {
            m.apply(&Quote {
                symbol: **s,
                bid: Some((10_000 * (i as u32 + 1), 100)),
                last: Some((10_000, 10)),
                state: b'T',
                ..Quote::default()
            });
        }
        m
    }

    fn msgs(out: &Outbox) -> Vec<serde_json::Value> {
        out.messages()
            .map(|m| serde_json::from_slice(m).unwrap())
            .collect()
    }

    fn bump(m: &mut Market, s: usize) {
        let mut q = m.syms[s].quote;
        q.bid = q.bid.map(|(p, n)| (p + 1, n));
        m.apply(&q);
    }

    #[test]
    fn windows_conflate_and_seq_has_no_holes() {
        let lim = Limits::default();
        let mut m = market();
        let mut s = Session::new(1, 0, 30 * MS, &lim);
        let mut out = Outbox::default();
        let sub = r#"{"op":"subscribe","symbols":["AAAA","BBBB"],"throttle_ms":100}"#;
        assert_eq!(s.on_text(0, sub, &mut m, &lim, &mut out), Verdict::Ok);
        let v = msgs(&out);
        assert_eq!(v[0]["type"], "subscribed");
        assert_eq!(v[1]["type"], "snapshot");
        assert_eq!(v[1]["quotes"].as_array().unwrap().len(), 2);
        // the window is phase-aligned: 30 ms, 130 ms, ...
        assert_eq!(s.due_ns(&lim), 30 * MS);
        for _ in 0..5 {
            bump(&mut m, 0);
        }
        out.clear();
        s.flush(29 * MS, &mut m, &lim, &mut out);
        assert!(out.is_empty(), "not before the window");
        let f = s.flush(30 * MS, &mut m, &lim, &mut out);
        assert_eq!(f.quotes, 1, "five changes, one update");
        let v = msgs(&out);
        assert_eq!(v[0]["seq"], 3);
        assert_eq!(v[0]["quotes"][0]["bid"], "1.0005");
        assert_eq!(s.due_ns(&lim), 130 * MS);
        // nothing changed: nothing at the next window, a heartbeat 1 s after the last message
        out.clear();
        s.flush(130 * MS, &mut m, &lim, &mut out);
        assert!(out.is_empty());
        s.flush(1030 * MS, &mut m, &lim, &mut out);
        let v = msgs(&out);
        assert_eq!(
            (v[0]["type"].as_str(), v[0]["seq"].as_u64()),
            (Some("heartbeat"), Some(4))
        );
    }

    #[test]
    fn a_message_that_cannot_be_queued_is_taken_back_and_resent_whole() {
        let lim = Limits::default();
        let mut m = market();
        let mut s = Session::new(1, 0, 0, &lim);
        let mut out = Outbox::default();
        let sub = r#"{"op":"subscribe","symbols":["AAAA"],"throttle_ms":0}"#;
        s.on_text(0, sub, &mut m, &lim, &mut out);
        assert_eq!(
            m.syms[0].immediate,
            vec![1],
            "throttle 0 is told of changes"
        );
        bump(&mut m, 0);
        out.clear();
        s.flush(MS, &mut m, &lim, &mut out);
        assert_eq!(s.seq(), 3);
        s.unsend(&mut out, 0, 3);
        assert_eq!(s.seq(), 2);
        out.clear();
        s.flush(2 * MS, &mut m, &lim, &mut out);
        let v = msgs(&out);
        assert_eq!(v[0]["seq"], 3, "the same seq again: no hole");
        assert!(v[0]["quotes"][0]["state"].is_string(), "a whole quote");
        s.detach(&mut m);
        assert!(m.syms[0].immediate.is_empty());
    }

    #[test]
    fn rate_limit_and_error_budget() {
        let lim = Limits::default();
        let mut m = market();
        let mut s = Session::new(1, 0, 0, &lim);
        let mut out = Outbox::default();
        for k in 0..lim.msgs_burst {
            let r = s.on_text(0, r#"{"op":"ping"}"#, &mut m, &lim, &mut out);
            assert_eq!(r, Verdict::Ok, "{k}");
        }
        out.clear();
        s.on_text(0, r#"{"op":"ping"}"#, &mut m, &lim, &mut out);
        assert_eq!(msgs(&out)[0]["code"], "rate_limited");
        // a second later there are tokens again
        out.clear();
        s.on_text(1_000 * MS, r#"{"op":"ping"}"#, &mut m, &lim, &mut out);
        assert_eq!(msgs(&out)[0]["type"], "pong");
        let mut last = Verdict::Ok;
        for k in 0..lim.max_errors {
            last = s.on_text(2_000 * MS + k as u64 * 60 * MS, "{", &mut m, &lim, &mut out);
        }
        assert_eq!(last, Verdict::Close(1008, "too many bad messages"));
    }

    #[test]
    fn quantities_parse_exactly() {
        assert_eq!(parse_e4("2.5"), Some(25_000));
        assert_eq!(parse_e4("-10"), Some(-100_000));
        assert_eq!(parse_e4(".0001"), Some(1));
        assert_eq!(parse_e4("1.23456"), None);
        assert_eq!(parse_e4("1e3"), None);
        assert_eq!(parse_e4(""), None);
        assert_eq!(parse_e4("."), None);
    }
}
