//! RESP2, the Redis wire protocol: commands out (arrays of bulk strings) and replies in, parsed
//! in place from the receive buffer. Replies from the network are bounded: a bulk string larger
//! than [`MAX_BULK`], an array longer than [`MAX_ARRAY`] or nested deeper than [`MAX_DEPTH`] is
//! an error, as is any byte that is not RESP; nothing here panics on what a server sends.

use std::fmt;

/// Largest bulk string accepted, bytes.
pub const MAX_BULK: usize = 16 << 20;
/// Most elements of one array.
pub const MAX_ARRAY: usize = 1 << 20;
/// Deepest nesting of arrays.
pub const MAX_DEPTH: usize = 8;

/// One reply, borrowing from the buffer it was parsed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply<'a> {
    /// `+OK`.
    Simple(&'a [u8]),
    /// `-ERR ...`.
    Error(&'a [u8]),
    /// `:42`.
    Int(i64),
    /// `$3 abc`, or `$-1` (None).
    Bulk(Option<&'a [u8]>),
    /// `*2 ...`, or `*-1` (None).
    Array(Option<Vec<Reply<'a>>>),
}

impl<'a> Reply<'a> {
    /// The bytes of a simple or bulk string.
    pub fn bytes(&self) -> Option<&'a [u8]> {
        match self {
            Reply::Simple(b) | Reply::Bulk(Some(b)) => Some(b),
            _ => None,
        }
    }
    /// The elements of an array.
    pub fn items(&self) -> Option<&[Reply<'a>]> {
        match self {
            Reply::Array(Some(v)) => Some(v),
            _ => None,
        }
    }
    /// An error reply's text.
    pub fn error(&self) -> Option<String> {
        match self {
            Reply::Error(e) => Some(String::from_utf8_lossy(e).into_owned()),
            _ => None,
        }
    }
}

/// Bytes that are not a RESP reply, or one past the limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RespError(pub String);

impl fmt::Display for RespError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad RESP from the server: {}", self.0)
    }
}

impl std::error::Error for RespError {}

/// Appends one command (an array of bulk strings) to `out`.
pub fn command(out: &mut Vec<u8>, args: &[&[u8]]) {
    array_header(out, args.len());
    for a in args {
        bulk(out, a);
    }
}

/// Appends the header of a command of `n` arguments (each then written with [`bulk`]).
pub fn array_header(out: &mut Vec<u8>, n: usize) {
    out.push(b'*');
    push_usize(out, n);
    out.extend_from_slice(b"\r\n");
}

/// Appends one bulk string.
pub fn bulk(out: &mut Vec<u8>, b: &[u8]) {
    out.push(b'$');
    push_usize(out, b.len());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(b);
    out.extend_from_slice(b"\r\n");
}

fn push_usize(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(decimal(n, &mut [0; 20]));
}

/// `n` in decimal, written into the end of `buf`.
pub fn decimal(mut n: usize, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// Parses one reply from the front of `buf`: `Ok(None)` when more bytes are needed, else the
/// reply and how many bytes it used.
pub fn parse(buf: &[u8]) -> Result<Option<(Reply<'_>, usize)>, RespError> {
    let mut at = 0;
    match value(buf, &mut at, 0)? {
        Some(r) => Ok(Some((r, at))),
        None => Ok(None),
    }
}

/// The line at `*at` (without CRLF), moving past it; None if incomplete.
fn line<'a>(buf: &'a [u8], at: &mut usize) -> Result<Option<&'a [u8]>, RespError> {
    let rest = &buf[*at..];
    // a line longer than this is not a header or status any server sends
    let scan = &rest[..rest.len().min(64 * 1024)];
    match scan.iter().position(|&b| b == b'\n') {
        Some(i) => {
            if i == 0 || scan[i - 1] != b'\r' {
                return Err(RespError("a line not ended by CRLF".into()));
            }
            *at += i + 1;
            Ok(Some(&rest[..i - 1]))
        }
        None if rest.len() > 64 * 1024 => Err(RespError("a line over 64 KiB".into())),
        None => Ok(None),
    }
}

fn int(b: &[u8]) -> Result<i64, RespError> {
    let (neg, d) = match b.split_first() {
        Some((b'-', d)) => (true, d),
        _ => (false, b),
    };
    if d.is_empty() || d.len() > 18 || !d.iter().all(u8::is_ascii_digit) {
        return Err(RespError(format!(
            "not an integer: {:?}",
            String::from_utf8_lossy(b)
        )));
    }
    let v = d.iter().fold(0i64, |a, &c| a * 10 + (c - b'0') as i64);
    Ok(if neg { -v } else { v })
}

fn value<'a>(buf: &'a [u8], at: &mut usize, depth: usize) -> Result<Option<Reply<'a>>, RespError> {
    if depth > MAX_DEPTH {
        return Err(RespError(format!("arrays nested deeper than {MAX_DEPTH}")));
    }
    let Some(&kind) = buf.get(*at) else {
        return Ok(None);
    };
    let start = *at;
    *at += 1;
    let Some(l) = line(buf, at)? else {
        *at = start;
        return Ok(None);
    };
    let r = match kind {
        b'+' => Reply::Simple(l),
        b'-' => Reply::Error(l),
        b':' => Reply::Int(int(l)?),
        b'$' => {
            let n = int(l)?;
            if n == -1 {
                Reply::Bulk(None)
            } else if n < 0 || n as usize > MAX_BULK {
                return Err(RespError(format!("bulk string of length {n}")));
            } else {
                let n = n as usize;
                if buf.len() < *at + n + 2 {
                    *at = start;
                    return Ok(None);
                }
                if &buf[*at + n..*at + n + 2] != b"\r\n" {
                    return Err(RespError("a bulk string not ended by CRLF".into()));
                }
                let b = &buf[*at..*at + n];
                *at += n + 2;
                Reply::Bulk(Some(b))
            }
        }
        b'*' => {
            let n = int(l)?;
            if n == -1 {
                Reply::Array(None)
            } else if n < 0 || n as usize > MAX_ARRAY {
                return Err(RespError(format!("array of length {n}")));
            } else {
                let mut v = Vec::with_capacity((n as usize).min(1024));
                for _ in 0..n {
                    match value(buf, at, depth + 1)? {
                        Some(x) => v.push(x),
                        None => {
                            *at = start;
                            return Ok(None);
                        }
                    }
                }
                Reply::Array(Some(v))
            }
        }
        other => {
            return Err(RespError(format!("unknown reply type byte 0x{other:02x}")));
        }
    };
    Ok(Some(r))
}

impl Reply<'_> {
    /// The reply's wire form.
    pub fn write(&self, out: &mut Vec<u8>) {
        match self {
            Reply::Simple(b) => line_out(out, b'+', b),
            Reply::Error(b) => line_out(out, b'-', b),
            Reply::Int(i) => line_out(out, b':', i.to_string().as_bytes()),
            Reply::Bulk(None) => out.extend_from_slice(b"$-1\r\n"),
            Reply::Bulk(Some(b)) => {
                line_out(out, b'$', b.len().to_string().as_bytes());
                out.extend_from_slice(b);
                out.extend_from_slice(b"\r\n");
            }
            Reply::Array(None) => out.extend_from_slice(b"*-1\r\n"),
            Reply::Array(Some(v)) => {
                line_out(out, b'*', v.len().to_string().as_bytes());
                for x in v {
                    x.write(out);
                }
            }
        }
    }
}

fn line_out(out: &mut Vec<u8>, kind: u8, b: &[u8]) {
    out.push(kind);
    out.extend_from_slice(b);
    out.extend_from_slice(b"\r\n");
}

/// The body of the `resp_reply` fuzz target: replies parsed one after another from arbitrary
/// bytes never panic, never claim more bytes than there are, and each one written back parses to
/// itself; a value in a bulk string is decoded as a quote and as a publisher heartbeat (with its
/// slot map) without panicking either, and so are the bytes as a whole.
pub fn fuzz(data: &[u8]) {
    heartbeat(data);
    let mut at = 0;
    while at < data.len() {
        match parse(&data[at..]) {
            Ok(Some((r, used))) => {
                assert!(used > 0 && at + used <= data.len());
                let mut again = Vec::new();
                r.write(&mut again);
                let (r2, used2) = parse(&again)
                    .expect("a written reply parses")
                    .expect("whole");
                assert_eq!((r2, used2), (r.clone(), again.len()));
                cluster_reply(&r);
                if let Reply::Bulk(Some(b)) = r {
                    let _ = super::decode(b);
                    heartbeat(b);
                }
                at += used;
            }
            Ok(None) | Err(_) => break,
        }
    }
}

/// A reply read as a `CLUSTER SLOTS` map, and as a MOVED or ASK redirect: a map that parses
/// puts every slot on one of its nodes, and its heartbeat text maps every slot back.
fn cluster_reply(r: &Reply<'_>) {
    use super::cluster::{SLOTS, Topology, ask_target, moved_target, parse_map_text};
    if let Ok(t) = Topology::from_cluster_slots(r, ([127, 0, 0, 1], 7000).into()) {
        assert_eq!(t.owner.len(), SLOTS);
        assert!(t.owner.iter().all(|&o| (o as usize) < t.nodes.len()));
        assert_eq!(t.ids.len(), t.nodes.len());
        if let Some(text) = t.map_text() {
            assert!(parse_map_text(&text).is_some(), "{text}");
        }
    }
    if let Some(e) = r.error() {
        assert!(ask_target(&e).is_none() || moved_target(&e).is_none());
    }
}

/// A heartbeat parsed from arbitrary bytes: a slot map it carries maps every slot.
fn heartbeat(b: &[u8]) {
    if let Some(text) = super::trust::Heartbeat::parse(b).and_then(|h| h.map_text)
        && let Some(owner) = super::cluster::parse_map_text(text)
    {
        assert_eq!(owner.len(), super::cluster::SLOTS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let mut o = Vec::new();
        command(&mut o, &[b"SET", b"k", b""]);
        assert_eq!(o, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n");
    }

    #[test]
    fn every_reply_type_parses_and_partial_input_asks_for_more() {
        let wire = b"*4\r\n+OK\r\n:-12\r\n$5\r\nhe\r\nl\r\n*2\r\n$-1\r\n-ERR no\r\n";
        let (r, n) = parse(wire).unwrap().unwrap();
        assert_eq!(n, wire.len());
        assert_eq!(
            r,
            Reply::Array(Some(vec![
                Reply::Simple(b"OK"),
                Reply::Int(-12),
                Reply::Bulk(Some(b"he\r\nl")),
                Reply::Array(Some(vec![Reply::Bulk(None), Reply::Error(b"ERR no")])),
            ]))
        );
        for cut in 0..wire.len() {
            assert_eq!(parse(&wire[..cut]).unwrap(), None, "cut at {cut}");
        }
        assert_eq!(parse(b"*-1\r\n").unwrap().unwrap().0, Reply::Array(None));
    }

    /// The fuzz target over its committed seeds (`feed-handler/fuzz/seeds/resp_reply/`) and
    /// deterministic mutations of them: bit flips, truncations, splices.
    #[test]
    fn the_fuzz_target_survives_its_seeds_and_their_mutations() {
        feed_handler::fuzzing::seeds_and_mutations("resp_reply", 5, fuzz);
    }

    #[test]
    fn garbage_and_oversize_are_errors_not_panics() {
        for bad in [
            &b"?x\r\n"[..],
            b":12a\r\n",
            b"$-2\r\n",
            b"$3\r\nabcd\r\n",
            b"*99999999\r\n",
            b"+no cr\n",
            b":99999999999999999999\r\n",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let deep = "*1\r\n".repeat(MAX_DEPTH + 2);
        assert!(parse(deep.as_bytes()).is_err());
        let long = vec![b'+'; 70 * 1024];
        assert!(parse(&long).is_err());
    }
}
