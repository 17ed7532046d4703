//! Test harness: a quote table the test writes by hand, a gateway serving it in this process,
//! and a raw WebSocket client (masked frames written byte by byte from RFC 6455).
#![allow(dead_code)]

use book::quotes::{Quote, QuoteWriter};
use gateway::server::{Server, ServerCfg};
use gateway::session::Limits;
use gateway::source::{QuoteSource, ShmSource};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A hand-written market: `n` symbols AAAA, AAAB, ... (synth names), all trading.
pub struct Table {
    pub w: QuoteWriter,
    pub quotes: Vec<Quote>,
    pub path: PathBuf,
}

impl Table {
    pub fn new(tag: &str, n: usize) -> Table {
        let path = PathBuf::from(format!(
            "/dev/shm/gw-test-{tag}-{}.quotes",
            std::process::id()
        ));
        let mut w = QuoteWriter::create(&path, n, 1 << 16).unwrap();
        let mut quotes = Vec::new();
        for i in 0..n {
            let mut sym = [b' '; 8];
            sym[..4].copy_from_slice(gateway::synth::symbol_name(i).as_bytes());
            let q = Quote {
                symbol: sym,
                bid: Some((1_000_000 + i as u32 * 100, 100)),
                ask: Some((1_000_200 + i as u32 * 100, 200)),
                last: Some((1_000_100 + i as u32 * 100, 300)),
                volume: 1000,
                state: b'T',
                exch_ts_ns: 34_200_000_000_000,
                recv_ns: 1_700_000_000_000_000_000,
                locate: i as u16 + 1,
                ..Quote::default()
            };
            w.publish(i, &q);
            quotes.push(q);
        }
        Table { w, quotes, path }
    }

    pub fn index(&self, s: &str) -> usize {
        self.quotes
            .iter()
            .position(|q| gateway::encode::symbol(q) == s)
            .unwrap_or_else(|| panic!("no symbol {s}"))
    }

    pub fn set(&mut self, i: usize, f: impl FnOnce(&mut Quote)) {
        f(&mut self.quotes[i]);
        self.w.publish(i, &self.quotes[i]);
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        // and the bar log a test may have made beside it
        let _ = std::fs::remove_file(book::barlog::beside(&self.path));
    }
}

/// A gateway in this process.
pub struct Gw {
    pub server: Option<Server>,
    pub addr: SocketAddr,
    stop: &'static AtomicBool,
}

/// The `k`-th bar of a series of `symbol` (space padded) at `interval_s`, of today's trading day:
/// it starts `k` intervals after 9:30; its high and volume rise with `k`.
pub fn bar(symbol: [u8; 8], interval_s: u8, k: u64) -> book::barlog::BarRecord {
    book::barlog::BarRecord {
        symbol,
        channel: 0,
        interval_s,
        bar: book::bars::Bar {
            start_ns: 34_200_000_000_000 + k * interval_s as u64 * 1_000_000_000,
            open: 1_000_000,
            high: 1_000_500 + k as u32,
            low: 999_900,
            close: 1_000_100,
            volume: 100 * (k + 1),
            trades: 3,
            first_ns: 34_200_000_000_000 + k * interval_s as u64 * 1_000_000_000,
            last_ns: 34_200_000_000_000 + (k + 1) * interval_s as u64 * 1_000_000_000 - 1,
        },
        revision: false,
        // today's, as a book's log begun now stamps its bars
        day: book::barlog::day_of(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64,
        )
        .unwrap() as u32,
    }
}

pub fn test_cfg(path: &std::path::Path) -> (ServerCfg, Limits) {
    let cfg = ServerCfg {
        listen: "127.0.0.1:0".parse().unwrap(),
        workers: 2,
        max_connections: 1000,
        quotes: path.to_path_buf(),
        ..ServerCfg::default()
    };
    (cfg, Limits::default())
}

impl Gw {
    pub fn start(cfg: ServerCfg, limits: Limits) -> Gw {
        let p = cfg.quotes.clone();
        Gw::start_with(
            cfg,
            limits,
            Box::leak(Box::new(AtomicBool::new(false))),
            &|| Box::new(ShmSource::new(p.clone())) as Box<dyn QuoteSource>,
        )
    }

    /// A gateway with its own quote source, stopped by `stop` (set when it is dropped).
    pub fn start_with(
        cfg: ServerCfg,
        limits: Limits,
        stop: &'static AtomicBool,
        source: &dyn Fn() -> Box<dyn QuoteSource>,
    ) -> Gw {
        let server = Server::start(cfg, limits, stop, source).unwrap();
        let addr = server.listen_addr();
        Gw {
            server: Some(server),
            addr,
            stop,
        }
    }

    pub fn metric(&self, name: &str) -> i64 {
        let body = http_get(self.addr, "/metrics").1;
        body.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("no metric {name}"))
            .trim()
            .parse()
            .unwrap()
    }
}

impl Drop for Gw {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(s) = self.server.take() {
            s.join().expect("no worker failed");
        }
    }
}

/// GET over a fresh connection: (status line, body).
pub fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut r = String::new();
    s.read_to_string(&mut r).unwrap();
    let (head, body) = r.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_string(), body.to_string())
}

/// A raw WebSocket client.
pub struct Raw {
    pub s: TcpStream,
    buf: Vec<u8>,
}

/// A frame read: (fin, opcode, payload).
pub type Frame = (bool, u8, Vec<u8>);

impl Raw {
    /// Connects and completes the opening handshake.
    pub fn connect(addr: SocketAddr) -> Raw {
        Raw::from_stream(TcpStream::connect(addr).unwrap())
    }

    /// Completes the opening handshake on a connected stream.
    pub fn from_stream(s: TcpStream) -> Raw {
        Raw::offering(s, None).0
    }

    /// Completes the opening handshake, offering `extensions`; gives the response head too.
    pub fn offering(mut s: TcpStream, extensions: Option<&str>) -> (Raw, String) {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let ext = extensions.map_or(String::new(), |e| {
            format!("Sec-WebSocket-Extensions: {e}\r\n")
        });
        write!(
            s,
            "GET /v1/ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{ext}\r\n"
        )
        .unwrap();
        let mut buf = Vec::new();
        let mut b = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") {
            s.read_exact(&mut b).unwrap();
            buf.push(b[0]);
        }
        let head = String::from_utf8(buf).unwrap();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        // RFC 6455 section 1.3's example key and accept value
        assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{head}");
        (Raw { s, buf: Vec::new() }, head)
    }

    /// Writes one frame, masked as a client must, with raw header bits.
    pub fn frame(&mut self, fin: bool, rsv: u8, opcode: u8, payload: &[u8], masked: bool) {
        let mut f = vec![(fin as u8) << 7 | rsv << 4 | opcode];
        let m = (masked as u8) << 7;
        match payload.len() {
            n if n < 126 => f.push(m | n as u8),
            n if n < 65536 => {
                f.push(m | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(m | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let key = [0x37, 0xfa, 0x21, 0x3d];
        if masked {
            f.extend_from_slice(&key);
            f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        } else {
            f.extend_from_slice(payload);
        }
        // the peer may have closed already: a failed write shows up as the next read's answer
        let _ = self.s.write_all(&f);
    }

    pub fn text(&mut self, t: &str) {
        self.frame(true, 0, 1, t.as_bytes(), true);
    }

    /// Reads one frame (None at EOF).
    pub fn read_frame(&mut self) -> Option<Frame> {
        self.read_frame_rsv1().map(|(fin, _, op, p)| (fin, op, p))
    }

    /// Reads one frame with its RSV1 bit: (fin, rsv1, opcode, payload); None at EOF.
    pub fn read_frame_rsv1(&mut self) -> Option<(bool, bool, u8, Vec<u8>)> {
        loop {
            if let Some(((fin, op, p), used)) = parse_frame(&self.buf) {
                let rsv1 = self.buf[0] & 0x40 != 0;
                self.buf.drain(..used);
                return Some((fin, rsv1, op, p));
            }
            let mut b = [0u8; 65536];
            match self.s.read(&mut b) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&b[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// The next text message as JSON, skipping control frames.
    pub fn json(&mut self) -> serde_json::Value {
        loop {
            let (_, op, p) = self.read_frame().expect("a frame");
            match op {
                1 => return serde_json::from_slice(&p).unwrap(),
                9 | 10 => continue,
                _ => panic!("unexpected opcode {op}: {:?}", String::from_utf8_lossy(&p)),
            }
        }
    }

    /// Reads until a close frame; returns its code (None: the TCP connection ended first).
    pub fn close_code(&mut self) -> Option<u16> {
        while let Some((_, op, p)) = self.read_frame() {
            if op == 8 {
                return (p.len() >= 2).then(|| u16::from_be_bytes([p[0], p[1]]));
            }
        }
        None
    }
}

/// One unmasked server frame from the front of `b`, with the bytes it used.
pub fn parse_frame(b: &[u8]) -> Option<(Frame, usize)> {
    if b.len() < 2 {
        return None;
    }
    assert_eq!(b[1] & 0x80, 0, "server frames are never masked");
    let (len, mut at) = match b[1] & 0x7f {
        126 => (u16::from_be_bytes([*b.get(2)?, *b.get(3)?]) as usize, 4),
        127 => (
            u64::from_be_bytes(b.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    if b.len() < at + len {
        return None;
    }
    let p = b[at..at + len].to_vec();
    at += len;
    Some(((b[0] & 0x80 != 0, b[0] & 0x0f, p), at))
}
