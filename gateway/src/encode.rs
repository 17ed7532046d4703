//! JSON encoding of quotes: the fields a client sees, which of them changed, and the bytes of
//! one quote object (`{"s":"AAPL","bid":"189.1200",...}`) for a set of fields. Prices are
//! exact decimal strings with 4 decimals from the integer `px_e4`; no float anywhere.

use book::quotes::Quote;
use std::io::Write;

/// Fields a quote object can carry besides `s` (always present).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Field {
    /// Best bid price.
    Bid,
    /// Best bid shares.
    BidSz,
    /// Best offer price.
    Ask,
    /// Best offer shares.
    AskSz,
    /// Last trade price.
    Last,
    /// Last trade shares.
    LastSz,
    /// Volume.
    Vol,
    /// Trading state.
    State,
    /// Cannot be trusted.
    Stale,
    /// Last trade far from its recent average.
    Anomaly,
    /// Exchange timestamp (ns since midnight).
    XTs,
    /// Feed receive timestamp (ns since the epoch).
    Rx,
    /// Volume-weighted average price of the session, over every venue.
    Vwap,
    /// Venues (feed channels) of the best bid and offer, and venues left out of them.
    Venues,
}

/// Number of fields.
pub const FIELDS: usize = 14;
/// Every field.
pub const ALL: u16 = (1 << FIELDS) - 1;

/// Which fields differ between two quotes of one symbol.
pub fn changed(a: &Quote, b: &Quote) -> u16 {
    let mut m = 0u16;
    let mut set = |f: Field, c: bool| m |= (c as u16) << f as u8;
    set(Field::Bid, a.bid.map(|x| x.0) != b.bid.map(|x| x.0));
    set(Field::BidSz, a.bid.map(|x| x.1) != b.bid.map(|x| x.1));
    set(Field::Ask, a.ask.map(|x| x.0) != b.ask.map(|x| x.0));
    set(Field::AskSz, a.ask.map(|x| x.1) != b.ask.map(|x| x.1));
    set(Field::Last, a.last.map(|x| x.0) != b.last.map(|x| x.0));
    set(Field::LastSz, a.last.map(|x| x.1) != b.last.map(|x| x.1));
    set(Field::Vol, a.volume != b.volume);
    set(Field::State, a.state != b.state);
    set(Field::Stale, a.stale != b.stale);
    set(Field::Anomaly, a.anomaly != b.anomaly);
    set(Field::XTs, a.exch_ts_ns != b.exch_ts_ns);
    set(Field::Rx, a.recv_ns != b.recv_ns);
    set(Field::Vwap, a.vwap_e4 != b.vwap_e4);
    set(
        Field::Venues,
        (a.bid_venue, a.ask_venue, a.untrusted) != (b.bid_venue, b.ask_venue, b.untrusted),
    );
    m
}

/// Writes `px_e4` as a decimal string with 4 decimals, quoted: `"189.1200"`.
pub fn price(out: &mut Vec<u8>, px_e4: u64) {
    let _ = write!(out, "\"{}.{:04}\"", px_e4 / 10_000, px_e4 % 10_000);
}

/// Writes a signed fixed-point e4 value as a quoted decimal string.
pub fn signed_e4(out: &mut Vec<u8>, v: i128) {
    let sign = if v < 0 { "-" } else { "" };
    let a = v.unsigned_abs();
    let _ = write!(out, "\"{sign}{}.{:04}\"", a / 10_000, a % 10_000);
}

/// The trading state's name: `trading`, `halted`, `paused`, `quotation`, or `unknown`.
pub fn state_name(b: u8) -> &'static str {
    match b {
        b'T' => "trading",
        b'H' => "halted",
        b'P' => "paused",
        b'Q' => "quotation",
        _ => "unknown",
    }
}

/// The symbol of a quote without its padding, as `&str` (symbols are ASCII; anything else is
/// replaced by `?` at the source).
pub fn symbol(q: &Quote) -> &str {
    let n = q
        .symbol
        .iter()
        .rposition(|&b| b != b' ' && b != 0)
        .map_or(0, |i| i + 1);
    std::str::from_utf8(&q.symbol[..n]).unwrap_or("?")
}

/// Appends one quote object with `s` and the fields in `mask`.
pub fn quote(out: &mut Vec<u8>, q: &Quote, mask: u16) {
    out.extend_from_slice(b"{\"s\":\"");
    out.extend_from_slice(symbol(q).as_bytes());
    out.push(b'"');
    let has = |f: Field| mask & (1 << f as u8) != 0;
    let px = |out: &mut Vec<u8>, key: &[u8], v: Option<(u32, u64)>| {
        out.extend_from_slice(key);
        match v {
            Some((p, _)) => price(out, p as u64),
            None => out.extend_from_slice(b"null"),
        }
    };
    let sz = |out: &mut Vec<u8>, key: &[u8], v: Option<(u32, u64)>| {
        out.extend_from_slice(key);
        let _ = write!(out, "{}", v.map_or(0, |x| x.1));
    };
    if has(Field::Bid) {
        px(out, b",\"bid\":", q.bid);
    }
    if has(Field::BidSz) {
        sz(out, b",\"bid_sz\":", q.bid);
    }
    if has(Field::Ask) {
        px(out, b",\"ask\":", q.ask);
    }
    if has(Field::AskSz) {
        sz(out, b",\"ask_sz\":", q.ask);
    }
    if has(Field::Last) {
        px(out, b",\"last\":", q.last);
    }
    if has(Field::LastSz) {
        sz(out, b",\"last_sz\":", q.last);
    }
    if has(Field::Vol) {
        let _ = write!(out, ",\"vol\":{}", q.volume);
    }
    if has(Field::State) {
        let _ = write!(out, ",\"state\":\"{}\"", state_name(q.state));
    }
    if has(Field::Stale) {
        let _ = write!(out, ",\"stale\":{}", q.stale);
    }
    if has(Field::Anomaly) {
        let _ = write!(out, ",\"anomaly\":{}", q.anomaly);
    }
    if has(Field::XTs) {
        let _ = write!(out, ",\"x_ts\":{}", q.exch_ts_ns);
    }
    if has(Field::Rx) {
        let _ = write!(out, ",\"rx\":{}", q.recv_ns);
    }
    if has(Field::Vwap) {
        out.extend_from_slice(b",\"vwap\":");
        match q.vwap_e4 {
            Some(v) => price(out, v as u64),
            None => out.extend_from_slice(b"null"),
        }
    }
    if has(Field::Venues) {
        let _ = write!(
            out,
            ",\"bid_venue\":{},\"ask_venue\":{},\"untrusted\":[",
            q.bid_venue, q.ask_venue
        );
        let mut first = true;
        for c in 0..8 {
            if q.untrusted & 1 << c != 0 {
                if !first {
                    out.push(b',');
                }
                first = false;
                let _ = write!(out, "{c}");
            }
        }
        out.push(b']');
    }
    out.push(b'}');
}

/// Appends a JSON string literal (quotes, backslashes and control characters escaped).
pub fn json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let mut b = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            }
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q() -> Quote {
        Quote {
            symbol: *b"AAPL    ",
            bid: Some((1_891_200, 300)),
            ask: Some((1_891_300, 500)),
            last: Some((1_891_250, 100)),
            volume: 1_234_500,
            state: b'T',
            exch_ts_ns: 34_200_001_234_567,
            recv_ns: 7,
            ..Quote::default()
        }
    }

    #[test]
    fn a_full_quote_is_the_protocol_example_and_valid_json() {
        let mut b = Vec::new();
        quote(&mut b, &q(), ALL);
        let s = String::from_utf8(b).unwrap();
        assert_eq!(
            s,
            r#"{"s":"AAPL","bid":"189.1200","bid_sz":300,"ask":"189.1300","ask_sz":500,"last":"189.1250","last_sz":100,"vol":1234500,"state":"trading","stale":false,"anomaly":false,"x_ts":34200001234567,"rx":7,"vwap":null,"bid_venue":0,"ask_venue":0,"untrusted":[]}"#
        );
        serde_json::from_str::<serde_json::Value>(&s).unwrap();
    }

    #[test]
    fn a_delta_carries_only_what_changed() {
        let a = q();
        let b = Quote {
            bid: Some((1_891_300, 200)),
            ask: None,
            ..a
        };
        let m = changed(&a, &b);
        let mut out = Vec::new();
        quote(&mut out, &b, m);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"s":"AAPL","bid":"189.1300","bid_sz":200,"ask":null,"ask_sz":0}"#
        );
        assert_eq!(changed(&a, &a), 0);
    }

    #[test]
    fn prices_are_exact() {
        let mut b = Vec::new();
        price(&mut b, 5);
        price(&mut b, 4_294_967_295);
        signed_e4(&mut b, -12_345);
        assert_eq!(
            String::from_utf8(b).unwrap(),
            "\"0.0005\"\"429496.7295\"\"-1.2345\""
        );
        let mut s = Vec::new();
        json_str(&mut s, "a\"b\\c\n");
        assert_eq!(String::from_utf8(s).unwrap(), r#""a\"b\\c\u000a""#);
    }
}
