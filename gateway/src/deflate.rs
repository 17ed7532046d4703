//! WebSocket compression, permessage-deflate (RFC 7692), when the gateway is started with
//! `--deflate` and the client offers it (every browser does).
//!
//! Negotiated without context takeover either way: each message is compressed on its own,
//! so a connection holds no compressor between messages (a worker's one [`Deflater`] serves
//! them all) and an idle connection costs no more memory than without compression. A message
//! goes out compressed only when that makes it smaller, and only when it is no longer than the
//! window the client allows (`server_max_window_bits`): a message compressed on its own can
//! refer back no further than its own length.
//!
//! tungstenite (0.30) knows no extensions: outgoing compressed messages are handed to it as
//! raw frames with RSV1 set, and incoming ones are inflated by [`WsStream`] below it, which
//! gives tungstenite the same message as one plain frame. So tungstenite still checks
//! everything else: masking, control frames, fragmentation, UTF-8, the size limits.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use std::io::{self, Read, Write};

/// What the response's `Sec-WebSocket-Extensions` says to an offer accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    /// The client's `server_max_window_bits` (8 to 15), echoed: no message longer than
    /// `1 << bits` goes out compressed.
    pub server_max_window_bits: Option<u8>,
}

impl Accepted {
    /// The response header's value.
    pub fn header(&self) -> String {
        let mut h = String::from(
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        );
        if let Some(b) = self.server_max_window_bits {
            h.push_str(&format!("; server_max_window_bits={b}"));
        }
        h
    }

    /// The longest message that may go out compressed.
    pub fn max_compressed_len(&self) -> usize {
        1 << self.server_max_window_bits.unwrap_or(15)
    }
}

/// The first permessage-deflate offer in the request's `Sec-WebSocket-Extensions` values that
/// can be accepted, in the client's order of preference. An offer with an unknown, repeated or
/// malformed parameter is declined, as RFC 7692 asks.
pub fn accept<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Option<Accepted> {
    for value in values {
        let Ok(value) = std::str::from_utf8(value) else {
            continue;
        };
        for offer in value.split(',') {
            let mut parts = offer.split(';').map(str::trim);
            if !parts
                .next()
                .is_some_and(|n| n.eq_ignore_ascii_case("permessage-deflate"))
            {
                continue;
            }
            if let Some(a) = offer_params(parts) {
                return Some(a);
            }
        }
    }
    None
}

fn offer_params<'a>(params: impl Iterator<Item = &'a str>) -> Option<Accepted> {
    let mut seen = [false; 4];
    let mut a = Accepted {
        server_max_window_bits: None,
    };
    for p in params {
        let (name, value) = match p.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
            None => (p, None),
        };
        let bits = |v: Option<&str>| {
            v.and_then(|v| v.parse::<u8>().ok())
                .filter(|b| (8..=15).contains(b))
        };
        let k = match name.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" if value.is_none() => 0,
            "client_no_context_takeover" if value.is_none() => 1,
            "server_max_window_bits" => {
                a.server_max_window_bits = Some(bits(value)?);
                2
            }
            // with or without a value: our inflater takes any window
            "client_max_window_bits" => {
                if value.is_some() {
                    bits(value)?;
                }
                3
            }
            _ => return None,
        };
        if std::mem::replace(&mut seen[k], true) {
            return None;
        }
    }
    Some(a)
}

/// The tail every sync-flushed deflate block ends with; RFC 7692 drops it from the wire.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// A worker's compressor: one message at a time, each on its own (no context takeover).
pub struct Deflater {
    c: Compress,
}

impl std::fmt::Debug for Deflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Deflater")
    }
}

impl Default for Deflater {
    fn default() -> Self {
        Deflater {
            // level 1 (zlib-rs): its reset per message is the cheapest (measured: 5 µs against
            // 13 µs at level 2 and above, or with miniz_oxide), and a 13 KiB snapshot goes to
            // about 30% in 35 µs
            c: Compress::new(Compression::fast(), false),
        }
    }
}

impl Deflater {
    /// Compresses `msg` into `out` (cleared first) as a permessage-deflate payload. `false`,
    /// and `out` is to be ignored, when compressing would not make it smaller.
    pub fn compress(&mut self, msg: &[u8], out: &mut Vec<u8>) -> bool {
        self.c.reset();
        out.clear();
        // stop as soon as it is no smaller than the message (the tail is dropped after)
        out.reserve(msg.len() + TAIL.len() + 16);
        let limit = msg.len() + TAIL.len();
        loop {
            let before = (self.c.total_in(), self.c.total_out());
            let r = self
                .c
                .compress_vec(&msg[before.0 as usize..], out, FlushCompress::Sync);
            if r.is_err() || out.len() >= limit {
                return false;
            }
            if self.c.total_in() as usize == msg.len() && out.ends_with(&TAIL) {
                out.truncate(out.len() - TAIL.len());
                return out.len() < msg.len();
            }
            if out.len() == out.capacity() || (self.c.total_in(), self.c.total_out()) == before {
                return false;
            }
        }
    }
}

/// Incoming frames, inflated where compressed (see [`WsStream`]).
#[derive(Debug)]
struct Inflating {
    /// Bytes read from the socket, not yet a whole frame.
    raw: Vec<u8>,
    /// Bytes ready for tungstenite.
    out: Vec<u8>,
    out_at: usize,
    /// The compressed message being gathered: its opcode and payload so far.
    msg: Option<(u8, Vec<u8>)>,
    /// Largest message, inflated or not (as tungstenite's limit).
    max_message: usize,
    /// Longest message to send compressed (the client's window).
    max_compressed: usize,
    /// A frame too large to gather: from here on bytes go to tungstenite as they come, and it
    /// refuses the frame.
    passthrough: bool,
}

/// The gateway's WebSocket stream: the socket, and once permessage-deflate is negotiated, the
/// inflater for what the client sends. Writes go straight to the socket.
#[derive(Debug)]
pub struct WsStream {
    /// The socket.
    pub sock: mio::net::TcpStream,
    /// The offer accepted in the handshake under way (kept while it waits for the socket).
    pub pending_deflate: Option<Accepted>,
    inflate: Option<Box<Inflating>>,
}

impl WsStream {
    /// A stream with nothing negotiated.
    pub fn new(sock: mio::net::TcpStream) -> Self {
        WsStream {
            sock,
            pending_deflate: None,
            inflate: None,
        }
    }

    /// permessage-deflate was negotiated as `a`: inflate what comes from here on, messages up
    /// to `max_message` bytes once inflated.
    pub fn inflate(&mut self, a: Accepted, max_message: usize) {
        self.pending_deflate = None;
        self.inflate = Some(Box::new(Inflating::new(
            max_message,
            a.max_compressed_len(),
        )));
    }

    /// With permessage-deflate negotiated, the longest message that may go out compressed.
    pub fn deflate_max(&self) -> Option<usize> {
        self.inflate.as_ref().map(|i| i.max_compressed)
    }
}

impl Read for WsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(inf) = self.inflate.as_deref_mut() else {
            return self.sock.read(buf);
        };
        read_inflating(inf, &mut self.sock, buf)
    }
}

impl Write for WsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.sock.write(buf)
    }
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.sock.write_vectored(bufs)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.sock.flush()
    }
}

fn read_inflating(inf: &mut Inflating, src: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        if inf.out_at < inf.out.len() {
            let n = buf.len().min(inf.out.len() - inf.out_at);
            buf[..n].copy_from_slice(&inf.out[inf.out_at..inf.out_at + n]);
            inf.out_at += n;
            if inf.out_at == inf.out.len() {
                inf.out.clear();
                inf.out_at = 0;
                if inf.out.capacity() > 64 << 10 {
                    inf.out.shrink_to(4096);
                }
            }
            return Ok(n);
        }
        if inf.passthrough {
            let raw = std::mem::take(&mut inf.raw);
            inf.out.extend_from_slice(&raw);
            if !inf.out.is_empty() {
                continue;
            }
            return src.read(buf);
        }
        let mut chunk = [0u8; 4096];
        let n = src.read(&mut chunk)?;
        if n == 0 {
            // the peer closed: what is left is not a whole frame; tungstenite sees the end
            let raw = std::mem::take(&mut inf.raw);
            inf.out.extend_from_slice(&raw);
            if inf.out.is_empty() {
                return Ok(0);
            }
            inf.passthrough = true;
            continue;
        }
        inf.raw.extend_from_slice(&chunk[..n]);
        inf.frames();
        if inf.raw.capacity() > 64 << 10 && inf.raw.len() < 4096 {
            inf.raw.shrink_to(4096);
        }
    }
}

/// A frame's header as read.
#[derive(Debug, Clone, Copy)]
struct Head {
    fin: bool,
    rsv1: bool,
    opcode: u8,
    mask: Option<[u8; 4]>,
    /// Bytes of the header itself.
    len: usize,
    payload_len: u64,
}

/// The header at the front of `b`, when it is all there.
fn header(b: &[u8]) -> Option<Head> {
    let (b0, b1) = (*b.first()?, *b.get(1)?);
    let (mut at, len) = match b1 & 0x7f {
        126 => (4, u16::from_be_bytes(b.get(2..4)?.try_into().ok()?) as u64),
        127 => (10, u64::from_be_bytes(b.get(2..10)?.try_into().ok()?)),
        l => (2, l as u64),
    };
    let mask = if b1 & 0x80 != 0 {
        let m: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
        at += 4;
        Some(m)
    } else {
        None
    };
    Some(Head {
        fin: b0 & 0x80 != 0,
        rsv1: b0 & 0x40 != 0,
        opcode: b0 & 0x0f,
        mask,
        len: at,
        payload_len: len,
    })
}

/// A frame for tungstenite: final, masked with a zero key (the payload as is).
fn plain_frame(out: &mut Vec<u8>, opcode: u8, payload_len: usize) {
    out.push(0x80 | opcode);
    match payload_len {
        0..=125 => out.push(0x80 | payload_len as u8),
        126..=0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(payload_len as u16).to_be_bytes());
        }
        _ => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(payload_len as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&[0; 4]);
}

/// A frame tungstenite refuses as a protocol error (1002): empty, with RSV1, which it knows no
/// use for.
fn refused_frame(out: &mut Vec<u8>, opcode: u8) {
    out.extend_from_slice(&[0xc0 | opcode, 0x80, 0, 0, 0, 0]);
}

impl Inflating {
    /// Nothing read yet; messages up to `max_message` bytes inflated, and up to
    /// `max_compressed` sent compressed.
    fn new(max_message: usize, max_compressed: usize) -> Self {
        Inflating {
            raw: Vec::new(),
            out: Vec::new(),
            out_at: 0,
            msg: None,
            max_message,
            max_compressed,
            passthrough: false,
        }
    }

    /// Turns every whole frame in `raw` into bytes for tungstenite.
    fn frames(&mut self) {
        let mut at = 0;
        while let Some(Head {
            fin,
            rsv1,
            opcode,
            mask,
            len: hlen,
            payload_len: len,
        }) = header(&self.raw[at..])
        {
            let data = opcode != 0 && opcode < 8;
            let compressed_start = data && rsv1 && self.msg.is_none();
            let continuation = opcode == 0 && !rsv1 && self.msg.is_some();
            let gather = compressed_start || continuation;
            let gathered = if gather {
                self.msg.as_ref().map_or(0, |m| m.1.len()) as u64
            } else {
                0
            };
            if len.saturating_add(gathered) > self.max_message as u64 {
                // too large to gather: tungstenite gets it as it comes and refuses it
                self.out.extend_from_slice(&self.raw[at..]);
                self.raw.clear();
                self.passthrough = true;
                return;
            }
            if data && self.msg.is_some() {
                // a new message inside a compressed one, which tungstenite cannot see began:
                // refused for it, as it refuses one inside a plain one
                refused_frame(&mut self.out, opcode);
                self.raw.clear();
                self.passthrough = true;
                return;
            }
            let end = at + hlen + len as usize;
            if self.raw.len() < end {
                break;
            }
            if gather {
                let payload = &self.raw[at + hlen..end];
                let (_, gather) = self.msg.get_or_insert_with(|| (opcode, Vec::new()));
                let from = gather.len();
                gather.extend_from_slice(payload);
                if let Some(m) = mask {
                    for (k, b) in gather[from..].iter_mut().enumerate() {
                        *b ^= m[k % 4];
                    }
                }
                if fin && let Some((op, data)) = self.msg.take() {
                    self.inflated(op, data);
                }
            } else {
                // a plain message, a control frame (between fragments too), or something
                // tungstenite will refuse (RSV1 where it has no place)
                self.out.extend_from_slice(&self.raw[at..end]);
            }
            at = end;
        }
        self.raw.drain(..at);
    }

    /// A whole compressed message: one plain frame of it inflated, or a frame tungstenite
    /// refuses (over the size limit: 1009; not deflate: an empty one with RSV1 set, a protocol
    /// error).
    fn inflated(&mut self, opcode: u8, mut data: Vec<u8>) {
        data.extend_from_slice(&TAIL);
        let mut d = Decompress::new(false);
        let mut plain: Vec<u8> = Vec::with_capacity((data.len() * 4).min(self.max_message + 1));
        let ok = loop {
            if plain.capacity() - plain.len() < 1024 {
                plain.reserve(plain.len().max(4096));
            }
            let before = (d.total_in(), d.total_out());
            let r = d.decompress_vec(
                &data[d.total_in() as usize..],
                &mut plain,
                FlushDecompress::Sync,
            );
            if plain.len() > self.max_message {
                // over the limit: a header saying so, and no more of it
                plain_frame(&mut self.out, opcode, self.max_message + 1);
                self.passthrough = true;
                return;
            }
            let all_in = d.total_in() as usize == data.len();
            match r {
                Err(_) => break false,
                Ok(Status::StreamEnd) => break true,
                // all of it read with room to spare: all of it written
                Ok(_) if all_in && plain.len() < plain.capacity() => break true,
                Ok(_) if (d.total_in(), d.total_out()) == before => break all_in,
                Ok(_) => {}
            }
        };
        if ok {
            plain_frame(&mut self.out, opcode, plain.len());
            self.out.extend_from_slice(&plain);
        } else {
            refused_frame(&mut self.out, opcode);
        }
    }
}

/// The body of the `ws_inflate` fuzz target: what a client sends once permessage-deflate is
/// negotiated, read through the inflater in pieces. The first byte picks the piece size and the
/// message limit. Checks beyond "no panic": it ends when the input does, and what is kept back
/// never outgrows what came in.
#[doc(hidden)]
pub fn fuzz(data: &[u8]) {
    let Some((&knob, wire)) = data.split_first() else {
        return;
    };
    let mut inf = Inflating::new(64 << (knob >> 4), 1 << 15);
    let piece = 1 + (knob & 0x0f) as usize * 37;
    let mut src = Trickle(wire.chunks(piece), &[]);
    let mut buf = [0u8; 1500];
    let mut out = 0usize;
    loop {
        match read_inflating(&mut inf, &mut src, &mut buf) {
            Ok(0) => break,
            Ok(n) => out += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
        assert!(inf.raw.len() <= wire.len(), "kept back more than came in");
        // each message inflated is at most the limit (and a header) once out
        assert!(out <= wire.len() + (wire.len() / 2 + 1) * (inf.max_message + 14));
    }
    // then the connection ends: the rest goes as it is, and the reader says so
    let mut end: &[u8] = &[];
    while let Ok(n) = read_inflating(&mut inf, &mut end, &mut buf) {
        if n == 0 {
            break;
        }
    }
}

/// A socket with `wire` in pieces, then nothing for now (`WouldBlock`): each piece is what one
/// read from the kernel gives.
struct Trickle<'a>(std::slice::Chunks<'a, u8>, &'a [u8]);

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.1.is_empty() {
            self.1 = self.0.next().ok_or(io::ErrorKind::WouldBlock)?;
        }
        let n = buf.len().min(self.1.len());
        buf[..n].copy_from_slice(&self.1[..n]);
        self.1 = &self.1[n..];
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fuzz target over its committed seeds and deterministic mutations of them.
    #[test]
    fn the_fuzz_target_survives_its_seeds_and_their_mutations() {
        feed_handler::fuzzing::seeds_and_mutations("ws_inflate", 4, fuzz);
    }

    fn inflate(c: &[u8]) -> Vec<u8> {
        let mut d = Decompress::new(false);
        let mut data = c.to_vec();
        data.extend_from_slice(&TAIL);
        let mut out = Vec::with_capacity(1 << 20);
        d.decompress_vec(&data, &mut out, FlushDecompress::Sync)
            .unwrap();
        out
    }

    #[test]
    fn offers_are_accepted_or_declined_as_rfc_7692_says() {
        let a = |s: &str| accept([s.as_bytes()]);
        // Chromium's offer, Python websockets' offer
        assert_eq!(
            a("permessage-deflate; client_max_window_bits"),
            Some(Accepted {
                server_max_window_bits: None
            })
        );
        let py =
            a("permessage-deflate; server_max_window_bits=12; client_max_window_bits=12").unwrap();
        assert_eq!(py.server_max_window_bits, Some(12));
        assert_eq!(py.max_compressed_len(), 4096);
        assert_eq!(
            py.header(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=12"
        );
        assert_eq!(a("x-webkit-deflate-frame"), None);
        assert_eq!(a("permessage-deflate; unknown=1"), None);
        assert_eq!(a("permessage-deflate; server_max_window_bits=16"), None);
        assert_eq!(a("permessage-deflate; server_max_window_bits"), None);
        assert_eq!(
            a("permessage-deflate; server_no_context_takeover; server_no_context_takeover"),
            None
        );
        // a declined offer, then one that can be taken
        assert_eq!(
            a("permessage-deflate; bad, permessage-deflate; server_max_window_bits=\"10\""),
            Some(Accepted {
                server_max_window_bits: Some(10)
            })
        );
        assert!(accept([b"foo".as_slice(), b"permessage-deflate"]).is_some());
    }

    #[test]
    fn messages_are_compressed_only_when_smaller() {
        let mut d = Deflater::default();
        let mut out = Vec::new();
        let msg = br#"{"type":"update","seq":3,"quotes":[{"s":"AAPL","bid":"189.1300","bid_sz":200},{"s":"MSFT","bid":"410.1300","bid_sz":200}]}"#;
        assert!(d.compress(msg, &mut out));
        assert!(out.len() < msg.len());
        assert_eq!(inflate(&out), msg);
        // again: each message on its own
        assert!(d.compress(msg, &mut out));
        assert_eq!(inflate(&out), msg);
        assert!(!d.compress(b"{}", &mut out));
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let noise: Vec<u8> = (0..2000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        assert!(!d.compress(&noise, &mut out));
    }

    /// A client's frame: masked, `rsv1` as given.
    fn client_frame(fin: bool, rsv1: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut f = vec![(fin as u8) << 7 | (rsv1 as u8) << 6 | opcode];
        match payload.len() {
            0..=125 => f.push(0x80 | payload.len() as u8),
            n => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(k, b)| b ^ mask[k % 4]));
        f
    }

    /// What tungstenite would read (5 bytes at a time) until the socket would block.
    fn through(wire: &[u8], max_message: usize) -> Vec<u8> {
        let mut inf = Inflating::new(max_message, 1 << 15);
        let mut src = Trickle(wire.chunks(7), &[]);
        let mut got = Vec::new();
        let mut buf = [0u8; 5];
        loop {
            match read_inflating(&mut inf, &mut src, &mut buf) {
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return got,
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// The frames a plain reader (as tungstenite, server role) makes of `bytes`:
    /// (fin, rsv1, opcode, unmasked payload).
    fn parse(mut bytes: &[u8]) -> Vec<(bool, bool, u8, Vec<u8>)> {
        let mut v = Vec::new();
        while let Some(h) = header(bytes) {
            let hlen = h.len;
            let len = (h.payload_len as usize).min(bytes.len() - hlen);
            let m = h.mask.expect("client frames are masked");
            let p = bytes[hlen..hlen + len]
                .iter()
                .enumerate()
                .map(|(k, b)| b ^ m[k % 4])
                .collect();
            v.push((h.fin, h.rsv1, h.opcode, p));
            bytes = &bytes[hlen + len..];
        }
        v
    }

    #[test]
    fn compressed_messages_reach_tungstenite_inflated_and_the_rest_as_they_came() {
        let mut d = Deflater::default();
        let text = br#"{"op":"subscribe","symbols":["AAPL","MSFT","NVDA","AAPL","MSFT","NVDA"]}"#;
        let mut c = Vec::new();
        assert!(d.compress(text, &mut c));
        let mut wire = client_frame(true, true, 1, &c);
        // a plain message, then the same compressed message in three fragments with a ping
        // between them
        wire.extend(client_frame(true, false, 1, b"{\"op\":\"ping\"}"));
        let (a, rest) = c.split_at(3);
        let (b, z) = rest.split_at(4);
        wire.extend(client_frame(false, true, 1, a));
        wire.extend(client_frame(false, false, 0, b));
        wire.extend(client_frame(true, false, 9, b"hi"));
        wire.extend(client_frame(true, false, 0, z));
        let got = parse(&through(&wire, 1 << 16));
        assert_eq!(
            got,
            vec![
                (true, false, 1, text.to_vec()),
                (true, false, 1, b"{\"op\":\"ping\"}".to_vec()),
                (true, false, 9, b"hi".to_vec()),
                (true, false, 1, text.to_vec()),
            ]
        );
    }

    #[test]
    fn a_bomb_is_refused_by_its_size_and_garbage_by_its_rsv1() {
        // 1 MB of zeros compresses to about a kilobyte
        let mut c = Compress::new(Compression::best(), false);
        let zeros = vec![0u8; 1 << 20];
        let mut z = Vec::with_capacity(1 << 16);
        c.compress_vec(&zeros, &mut z, FlushCompress::Sync).unwrap();
        z.truncate(z.len() - 4);
        let got = through(&client_frame(true, true, 2, &z), 4096);
        let h = header(&got).unwrap();
        assert_eq!(
            (h.fin, h.rsv1, h.opcode, h.payload_len),
            (true, false, 2, 4097),
            "declared over the limit"
        );
        assert!(got.len() < 32, "and nothing of it inflated");
        // not deflate data: an empty frame with RSV1, which tungstenite refuses
        let got = through(&client_frame(true, true, 1, &[0xff; 20]), 4096);
        let h = header(&got).unwrap();
        assert!(h.rsv1 && h.opcode == 1 && h.payload_len == 0);
        // a frame declaring more than the limit goes through for tungstenite to refuse
        let big = client_frame(true, false, 1, &vec![b'a'; 5000]);
        assert_eq!(through(&big, 4096), big);
    }
}
