//! HTTP/1.1 for everything that is not a WebSocket: the request line and headers (parsed with
//! `httparse` from bytes peeked off the socket, so a WebSocket upgrade is left whole for
//! tungstenite's handshake), the query string, and the plain endpoints: REST quotes, the
//! symbol directory, bars, `/metrics`, `/healthz` and the web page. Every response closes its
//! connection.

use crate::bars::BarIndex;
use crate::encode;
use crate::market::{self, Market};
use crate::metrics::Metrics;
use crate::source::Health;
use std::io::Write;
use std::sync::Mutex;

/// Largest request head accepted.
pub const MAX_HEAD: usize = 8192;

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// `GET`, ...
    pub method: String,
    /// The path without the query.
    pub path: String,
    /// The query string (after `?`), raw.
    pub query: String,
    /// `Upgrade: websocket` was asked for.
    pub upgrade: bool,
    /// The permessage-deflate offer that can be accepted, if the request makes one (used
    /// when the gateway compresses).
    pub deflate: Option<crate::deflate::Accepted>,
    /// Bytes of the head (request line, headers, blank line).
    pub len: usize,
}

/// Whether answering the request needs the source's quotes (a WebSocket, SSE, REST quotes, the
/// directory): a gateway holds these until its source is ready, and would otherwise call
/// symbols not loaded yet unknown.
pub fn needs_quotes(head: &Head) -> bool {
    match head.path.as_str() {
        "/v1/ws" => head.upgrade,
        "/v1/sse" | "/v1/quotes" | "/v1/symbols" => true,
        _ => false,
    }
}

/// Parses a request head; `Ok(None)` while incomplete.
pub fn parse_head(buf: &[u8]) -> Result<Option<Head>, &'static str> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Partial) => {
            if buf.len() >= MAX_HEAD {
                Err("request head too large")
            } else {
                Ok(None)
            }
        }
        Ok(httparse::Status::Complete(len)) => {
            let target = req.path.unwrap_or("/");
            let (path, query) = target.split_once('?').unwrap_or((target, ""));
            let upgrade = req.headers.iter().any(|h| {
                h.name.eq_ignore_ascii_case("upgrade")
                    && String::from_utf8_lossy(h.value)
                        .to_ascii_lowercase()
                        .contains("websocket")
            });
            let deflate = crate::deflate::accept(
                req.headers
                    .iter()
                    .filter(|h| h.name.eq_ignore_ascii_case("sec-websocket-extensions"))
                    .map(|h| h.value),
            );
            Ok(Some(Head {
                method: req.method.unwrap_or("").to_string(),
                path: path.to_string(),
                query: query.to_string(),
                upgrade,
                deflate,
                len,
            }))
        }
        Err(httparse::Error::TooManyHeaders) => Err("too many headers"),
        Err(_) => Err("malformed request"),
    }
}

fn unhex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Percent-decodes a query component (`+` is a space).
pub fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (unhex(b[i + 1]), unhex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The value of `key` in a query string.
pub fn param(query: &str, key: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| decode(v))
}

/// A comma-separated list parameter (empty items dropped).
pub fn list_param(query: &str, key: &str) -> Vec<String> {
    param(query, key)
        .map(|v| {
            v.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// A whole response that closes the connection.
pub fn response(status: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut r = Vec::with_capacity(body.len() + 200);
    let _ = write!(
        r,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nAccess-Control-Allow-Origin: *\r\nConnection: close\r\n\r\n",
        body.len()
    );
    r.extend_from_slice(body);
    r
}

/// A JSON error response: `{"error":"..."}`.
pub fn error(status: &str, message: &str) -> Vec<u8> {
    let mut b = b"{\"error\":".to_vec();
    encode::json_str(&mut b, message);
    b.push(b'}');
    response(status, "application/json", &b)
}

/// The head that starts an SSE stream.
pub const SSE_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\
Cache-Control: no-store\r\nAccess-Control-Allow-Origin: *\r\nConnection: keep-alive\r\n\r\n";

/// The web page.
pub const INDEX_HTML: &str = include_str!("../web/index.html");

/// What a plain endpoint needs.
#[derive(Debug)]
pub struct Ctx<'a> {
    /// The worker's quotes.
    pub market: &'a Market,
    /// Counters.
    pub metrics: &'a Metrics,
    /// The source's own metrics text (see [`crate::source::QuoteSource::prometheus`]).
    pub source_text: &'a std::sync::Mutex<String>,
    /// The source's health.
    pub health: Health,
    /// The source has given every quote it held when first reached.
    pub ready: bool,
    /// Bars.
    pub bars: &'a Mutex<BarIndex>,
    /// Symbols per request at most.
    pub max_symbols: usize,
    /// The per-venue quote table (`<quotes>.venues`), read on request.
    pub venues_table: &'a std::path::Path,
    /// The quote table (its name locates the feed handler's counters: venue names).
    pub quotes_table: &'a std::path::Path,
    /// The venue names from elsewhere (a Redis source's), instead of the counters'.
    pub venue_names: Option<&'a Mutex<Vec<String>>>,
}

/// Answers a plain GET.
pub fn answer(head: &Head, ctx: &Ctx) -> Vec<u8> {
    if head.method != "GET" && head.method != "HEAD" {
        return error("405 Method Not Allowed", "only GET is served");
    }
    match head.path.as_str() {
        "/" | "/index.html" => {
            response("200 OK", "text/html; charset=utf-8", INDEX_HTML.as_bytes())
        }
        "/v1/quotes" => quotes(head, ctx),
        "/v1/symbols" => symbols(ctx),
        "/v1/bars" => bars(head, ctx),
        "/v1/venues" => venues(head, ctx),
        "/metrics" => {
            let mut t = ctx.metrics.render();
            if let Ok(g) = ctx.source_text.lock() {
                t.push_str(&g);
            }
            response("200 OK", "text/plain; version=0.0.4", t.as_bytes())
        }
        "/healthz" => healthz(ctx),
        "/v1/ws" => error(
            "426 Upgrade Required",
            "this endpoint is a WebSocket: send Upgrade: websocket",
        ),
        _ => error("404 Not Found", "no such endpoint; see docs/protocol.md"),
    }
}

fn quotes(head: &Head, ctx: &Ctx) -> Vec<u8> {
    let names = list_param(&head.query, "symbols");
    if names.is_empty() {
        return error("400 Bad Request", "symbols=AAPL,MSFT is required");
    }
    if names.len() > ctx.max_symbols {
        return error(
            "400 Bad Request",
            &format!("at most {} symbols", ctx.max_symbols),
        );
    }
    let mut b = b"{\"quotes\":[".to_vec();
    let mut unknown = Vec::new();
    let mut n = 0;
    for s in &names {
        match ctx.market.lookup(s) {
            Some(id) if ctx.market.syms[id as usize].version > 0 => {
                if n > 0 {
                    b.push(b',');
                }
                encode::quote(&mut b, &ctx.market.syms[id as usize].quote, encode::ALL);
                n += 1;
            }
            _ => unknown.push(s.as_str()),
        }
    }
    b.extend_from_slice(b"],\"unknown\":[");
    for (i, u) in unknown.iter().enumerate() {
        if i > 0 {
            b.push(b',');
        }
        encode::json_str(&mut b, u);
    }
    b.extend_from_slice(b"]}");
    response("200 OK", "application/json", &b)
}

/// Venue (feed channel) names, from the feed handler's counters file beside the ring whose
/// quote table this is (`<ring>.quotes` → `<ring>.counters`); empty when it is not there.
pub fn venue_names(quotes: &std::path::Path) -> Vec<String> {
    let q = quotes.to_string_lossy();
    let Some(ring) = q.strip_suffix(".quotes") else {
        return Vec::new();
    };
    let path = feed_handler::counters::counters_path(std::path::Path::new(ring));
    feed_handler::counters::CountersReader::open(&path)
        .map(|r| r.read().into_iter().map(|c| c.name).collect())
        .unwrap_or_default()
}

fn symbols(ctx: &Ctx) -> Vec<u8> {
    let mut b = b"{\"venues\":[".to_vec();
    let names = match ctx.venue_names {
        Some(m) => m.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        None => venue_names(ctx.quotes_table),
    };
    for (i, n) in names.iter().enumerate() {
        if i > 0 {
            b.push(b',');
        }
        encode::json_str(&mut b, n);
    }
    b.extend_from_slice(b"],\"symbols\":[");
    for (i, s) in ctx.market.syms.iter().enumerate() {
        if i > 0 {
            b.push(b',');
        }
        let _ = write!(
            b,
            "{{\"s\":\"{}\",\"locate\":{},\"channel\":{},\"state\":\"{}\"}}",
            encode::symbol(&s.quote),
            s.quote.locate,
            s.quote.channel,
            encode::state_name(s.quote.state)
        );
    }
    b.extend_from_slice(b"]}");
    response("200 OK", "application/json", &b)
}

fn bars(head: &Head, ctx: &Ctx) -> Vec<u8> {
    let Some(sym) = param(&head.query, "symbol").and_then(|s| market::key(&s)) else {
        return error("400 Bad Request", "symbol=AAPL is required");
    };
    let interval = match param(&head.query, "interval").as_deref() {
        None | Some("1m") => 60,
        Some("1s") => 1,
        Some(_) => return error("400 Bad Request", "interval is 1s or 1m"),
    };
    let limit = match param(&head.query, "limit").map(|l| l.parse::<usize>()) {
        None => 100,
        Some(Ok(l)) if (1..=crate::bars::KEEP).contains(&l) => l,
        Some(_) => {
            return error(
                "400 Bad Request",
                &format!("limit is 1 to {}", crate::bars::KEEP),
            );
        }
    };
    let venue = match param(&head.query, "venue").map(|v| v.parse::<u16>()) {
        None => None,
        Some(Ok(v)) => Some(v),
        Some(Err(_)) => return error("400 Bad Request", "venue is a channel number"),
    };
    let got = match ctx.bars.lock() {
        Ok(mut ix) => ix.chart(sym, interval, venue, limit),
        Err(_) => Err("bar index unavailable".to_string()),
    };
    let bars = match got {
        Ok(b) => b,
        Err(e) => return error("503 Service Unavailable", &e),
    };
    let mut b = symbol_object(&sym);
    let _ = write!(
        b,
        ",\"interval\":\"{}\",\"bars\":[",
        if interval == 1 { "1s" } else { "1m" }
    );
    for (i, r) in bars.iter().enumerate() {
        if i > 0 {
            b.push(b',');
        }
        let _ = write!(b, "{{\"t\":{},\"o\":", r.bar.start_ns);
        encode::price(&mut b, r.bar.open as u64);
        b.extend_from_slice(b",\"h\":");
        encode::price(&mut b, r.bar.high as u64);
        b.extend_from_slice(b",\"l\":");
        encode::price(&mut b, r.bar.low as u64);
        b.extend_from_slice(b",\"c\":");
        encode::price(&mut b, r.bar.close as u64);
        let _ = write!(b, ",\"v\":{},\"n\":{}}}", r.bar.volume, r.bar.trades);
    }
    b.extend_from_slice(b"]}");
    response("200 OK", "application/json", &b)
}

/// `{"symbol":"SYM"`, the start of a per-symbol answer: the symbol is whatever printable ASCII
/// the request gave, `"` and `\` included, so it is escaped like any JSON string.
fn symbol_object(sym: &[u8; 8]) -> Vec<u8> {
    let mut b = b"{\"symbol\":".to_vec();
    encode::json_str(&mut b, String::from_utf8_lossy(sym).trim_end());
    b
}

/// `/v1/venues?symbol=AAPL`: the symbol's quote on each venue (feed channel) from the book's
/// per-venue table, beside the consolidated one the other endpoints serve.
fn venues(head: &Head, ctx: &Ctx) -> Vec<u8> {
    let Some(sym) = param(&head.query, "symbol").and_then(|s| market::key(&s)) else {
        return error("400 Bad Request", "symbol=AAPL is required");
    };
    let r = match book::quotes::QuoteReader::attach(ctx.venues_table) {
        Ok(r) => r,
        Err(e) => return error("503 Service Unavailable", &format!("per-venue table: {e}")),
    };
    let mut b = symbol_object(&sym);
    b.extend_from_slice(b",\"venues\":[");
    let mut n = 0;
    for i in 0..r.slots() {
        let Some(q) = r.read(i) else { break };
        if q.symbol != sym {
            continue;
        }
        if n > 0 {
            b.push(b',');
        }
        let _ = write!(
            b,
            "{{\"venue\":{},\"locate\":{},\"quote\":",
            q.channel, q.locate
        );
        encode::quote(&mut b, &q, encode::ALL);
        b.push(b'}');
        n += 1;
    }
    b.extend_from_slice(b"]}");
    response("200 OK", "application/json", &b)
}

fn healthz(ctx: &Ctx) -> Vec<u8> {
    let total = ctx.market.syms.len();
    let stale = ctx.market.syms.iter().filter(|s| s.quote.stale).count();
    match &ctx.health {
        Health::Down(why) => error("503 Service Unavailable", &format!("feed down: {why}")),
        Health::Live if !ctx.ready => error("503 Service Unavailable", "quotes still loading"),
        Health::Live if total == 0 => error("503 Service Unavailable", "no quotes yet"),
        Health::Live if stale > 0 => error(
            "503 Service Unavailable",
            &format!("{stale} of {total} symbols stale (gap or recovery in progress)"),
        ),
        Health::Live => {
            let body = format!("{{\"status\":\"live\",\"symbols\":{total},\"stale\":0}}");
            response("200 OK", "application/json", body.as_bytes())
        }
    }
}

/// The body of the `http_request` fuzz target: a request head as a client sends it, parsed,
/// then answered (unless it asks for a WebSocket) from a market of four symbols, an empty bar
/// log and no per-venue table. Checks beyond "no panic": a head never takes more bytes than given;
/// every answer is one HTTP/1.1 response whose `Content-Length` is its body's; a JSON body
/// parses.
#[doc(hidden)]
pub fn fuzz(data: &[u8]) {
    let head = match parse_head(data) {
        Ok(Some(h)) => h,
        _ => return,
    };
    assert!(head.len <= data.len());
    if head.upgrade {
        return;
    }
    let mut market = Market::new(8);
    for (i, s) in [b"AAAA    ", b"BBBB    ", b"CC.D    ", b"E       "]
        .iter()
        .enumerate()
    {
        market.apply(&book::quotes::Quote {
            symbol: **s,
            bid: Some((10_000 * (i as u32 + 1), 100)),
            last: Some((10_000, 10)),
            state: b'T',
            ..Default::default()
        });
    }
    // an empty bar log in memory, made once (the file stays open: its path is /proc/self/fd/N)
    static BARS: std::sync::OnceLock<(std::fs::File, std::path::PathBuf)> =
        std::sync::OnceLock::new();
    let (_, bars) = BARS.get_or_init(|| {
        let (f, path) = crate::redis::replica::memfd(c"fuzz-bars").expect("memfd");
        book::barlog::BarLogWriter::create_in(f.try_clone().expect("dup")).expect("bar log");
        (f, path)
    });
    let nowhere = std::path::Path::new("/nonexistent/fuzz");
    let ctx = Ctx {
        market: &market,
        metrics: &Metrics::default(),
        source_text: &Mutex::new(String::new()),
        health: Health::Live,
        ready: true,
        bars: &Mutex::new(BarIndex::new(bars.clone())),
        max_symbols: 3,
        venues_table: &nowhere.join("q.venues"),
        quotes_table: &nowhere.join("q.quotes"),
        venue_names: None,
    };
    let r = answer(&head, &ctx);
    let end = r.windows(4).position(|w| w == b"\r\n\r\n").expect("a head");
    let text = std::str::from_utf8(&r[..end]).expect("an ASCII head");
    assert!(text.starts_with("HTTP/1.1 "), "{text}");
    let body = &r[end + 4..];
    let len = text
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "));
    assert_eq!(len.and_then(|l| l.parse().ok()), Some(body.len()), "{text}");
    if text.contains("application/json") {
        let v = serde_json::from_slice::<serde_json::Value>(body);
        assert!(v.is_ok(), "not JSON: {}", String::from_utf8_lossy(body));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fuzz target over its committed seeds and deterministic mutations of them.
    #[test]
    fn the_fuzz_target_survives_its_seeds_and_their_mutations() {
        feed_handler::fuzzing::seeds_and_mutations("http_request", 4, fuzz);
    }

    #[test]
    fn a_symbol_with_a_quote_or_backslash_in_it_stays_inside_its_json_string() {
        fuzz(b"GET /v1/bars?symbol=A%22B HTTP/1.1\r\n\r\n");
        fuzz(b"GET /v1/bars?symbol=%5C HTTP/1.1\r\n\r\n");
    }

    #[test]
    fn heads_queries_and_limits() {
        let h = parse_head(b"GET /v1/quotes?symbols=AAPL%2CMSFT,X HTTP/1.1\r\nHost: a\r\n\r\nrest")
            .unwrap()
            .unwrap();
        assert_eq!(h.path, "/v1/quotes");
        assert_eq!(list_param(&h.query, "symbols"), ["AAPL", "MSFT", "X"]);
        assert!(!h.upgrade);
        assert_eq!(h.len, 58);
        assert_eq!(parse_head(b"GET / HTTP/1.1\r\nHost"), Ok(None));
        assert!(parse_head(b"\x00\x01garbage\r\n\r\n").is_err());
        let big = vec![b'a'; MAX_HEAD];
        assert!(parse_head(&big).is_err());
        let u = parse_head(b"GET /v1/ws HTTP/1.1\r\nUpgrade: WebSocket\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(u.upgrade);
        assert_eq!(decode("a+b%41%4"), "a bA%4");
        assert_eq!(param("a=1&b", "b").as_deref(), Some(""));
    }
}
