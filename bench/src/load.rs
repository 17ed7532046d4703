//! The fan-out load client (`bench fanout-client`): one process holding many WebSocket
//! connections (at most ~19,900 here: one file each), bound to several 127.x source addresses,
//! each subscribing to K symbols of the synthetic market with a chosen throttle. It measures
//! each update's age at receipt against the freshest quote's feed receive stamp (`rx`, ns since
//! the epoch; the synthetic source stamps its publish time there) into an HDR histogram, checks
//! that every connection's `seq` has no holes, answers pings, reconnects what closes, and
//! prints one JSON line of counts (the histogram goes to a `.hdr` file).

use hdrhistogram::Histogram;
use memchr::memmem;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Options.
#[derive(Debug, Clone)]
pub struct LoadOpts {
    /// Gateway address.
    pub connect: SocketAddr,
    /// Connections.
    pub conns: usize,
    /// Source addresses, used in turn.
    pub sources: Vec<IpAddr>,
    /// Symbols in the market (named as the synthetic source names them).
    pub universe: usize,
    /// Symbols per connection.
    pub per_conn: usize,
    /// Conflation window asked for.
    pub throttle_ms: u64,
    /// Seconds measured once every connection is up.
    pub duration_s: u64,
    /// Seconds allowed to connect.
    pub connect_timeout_s: u64,
    /// Where the age histogram goes.
    pub hdr: Option<std::path::PathBuf>,
    /// Connections in the middle of connecting at once.
    pub in_flight: usize,
    /// Created when the measuring window starts (for an orchestrator to sample the server).
    pub ready_file: Option<std::path::PathBuf>,
    /// Take the symbols from this `/v1/symbols` URL instead of the synthetic names.
    pub symbols_from: Option<String>,
    /// Run as SCHED_BATCH: a wakeup (a frame arriving) never preempts a running thread, so on
    /// a machine the client shares with the system it measures it reads what arrived in
    /// batches instead of preempting the gateway after each of its writes, as a client on
    /// another machine would.
    pub sched_batch: bool,
    /// When set, never block in epoll: sleep this long, then take whatever is ready. A client
    /// blocked in epoll is woken by each frame written to it, and on a machine shared with the
    /// gateway that wakeup (an inter-processor interrupt in a VM) is paid inside the gateway's
    /// write. Users on other machines cost the gateway nothing of the kind; polling every
    /// interval removes it here, at the price of up to one interval added to each measured age.
    pub poll_interval_us: u64,
}

/// The symbols a gateway's `/v1/symbols` lists (`http://HOST:PORT/v1/symbols`).
pub fn fetch_symbols(url: &str) -> Result<Vec<String>, String> {
    let rest = url.strip_prefix("http://").ok_or("only http:// URLs")?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut s = std::net::TcpStream::connect(host).map_err(|e| format!("{host}: {e}"))?;
    write!(s, "GET /{path} HTTP/1.1\r\nHost: {host}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut r = String::new();
    s.read_to_string(&mut r).map_err(|e| e.to_string())?;
    let body = r.split_once("\r\n\r\n").map_or("", |x| x.1);
    let v: serde_json::Value = serde_json::from_str(body).map_err(|e| format!("{url}: {e}"))?;
    Ok(v["symbols"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x["s"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default())
}

#[derive(PartialEq, Eq, Clone, Copy, Debug)]
enum St {
    Connecting,
    Handshake,
    Open,
    Dead,
}

struct C {
    s: TcpStream,
    st: St,
    buf: Vec<u8>,
    seq: u64,
    sent_sub: bool,
    wbuf: Vec<u8>,
    idx: usize,
}

/// What a run counted.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    /// Connections open at the end.
    pub held: u64,
    /// Connections that completed the handshake at least once.
    pub established: u64,
    /// Connect or handshake failures.
    pub errors: u64,
    /// Connections the server closed or reset.
    pub closed: u64,
    /// Reconnections made.
    pub reconnects: u64,
    /// Messages received (all types) in the window.
    pub messages: u64,
    /// Update messages in the window.
    pub updates: u64,
    /// Quote objects in update messages in the window.
    pub quotes: u64,
    /// Sequence holes seen.
    pub holes: u64,
}

/// Reads a connection's frames: counts the messages, checks `seq`, records update ages.
struct Meter {
    seq_key: memmem::Finder<'static>,
    rx_key: memmem::Finder<'static>,
    /// Inside the measuring window (counts and ages are kept only then; `seq` always).
    measuring: bool,
    /// When this batch of reads began (ns since the epoch).
    now_ns: u64,
    /// Messages, updates, quotes and holes.
    n: Counts,
    /// Update ages, µs.
    hist: Histogram<u64>,
}

impl Meter {
    /// Takes every whole frame at the start of `data` and returns how many bytes they span.
    /// A ping's pong goes into `out`; a close frame sets `fail`.
    fn frames(&mut self, data: &[u8], seq: &mut u64, out: &mut Vec<u8>, fail: &mut bool) -> usize {
        let mut at = 0;
        while data.len() - at >= 2 {
            let b = &data[at..];
            let (len, hl) = match b[1] & 0x7f {
                126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
                127 if b.len() >= 10 => (
                    u64::from_be_bytes(b[2..10].try_into().expect("8")) as usize,
                    10,
                ),
                126 | 127 => break,
                l => (l as usize, 2),
            };
            if b.len() - hl < len {
                break;
            }
            let p = &b[hl..hl + len];
            match b[0] & 0x0f {
                1 => self.text(p, seq),
                8 => *fail = true,
                9 => out.extend_from_slice(&frame(10, p)),
                _ => {}
            }
            at += hl + len;
        }
        at
    }

    fn text(&mut self, p: &[u8], seq: &mut u64) {
        if let Some(i) = self.seq_key.find(p) {
            let s = num_at(p, i + 6);
            if s != *seq + 1 {
                self.n.holes += 1;
            }
            *seq = s;
        }
        if !self.measuring {
            return;
        }
        self.n.messages += 1;
        if p.starts_with(b"{\"type\":\"update\"") {
            self.n.updates += 1;
            let mut max_rx = 0;
            for i in self.rx_key.find_iter(p) {
                max_rx = max_rx.max(num_at(p, i + 5));
                self.n.quotes += 1;
            }
            if max_rx > 0 {
                let age_us = self.now_ns.saturating_sub(max_rx) / 1000;
                let _ = self.hist.record(age_us.max(1));
            }
        }
    }
}

fn find(h: &[u8], n: &[u8], from: usize) -> Option<usize> {
    memmem::find(h.get(from..)?, n).map(|i| i + from)
}

fn num_at(h: &[u8], at: usize) -> u64 {
    h[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .fold(0u64, |a, b| a * 10 + (b - b'0') as u64)
}

/// A masked client frame.
fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x80 | opcode];
    let n = payload.len();
    if n < 126 {
        f.push(0x80 | n as u8);
    } else if n < 65536 {
        f.push(0x80 | 126);
        f.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        f.push(0x80 | 127);
        f.extend_from_slice(&(n as u64).to_be_bytes());
    }
    let key = [0x12, 0x34, 0x56, 0x78];
    f.extend_from_slice(&key);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    f
}

fn connect(o: &LoadOpts, k: usize) -> io::Result<TcpStream> {
    let src = o.sources[k % o.sources.len()];
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    // choose the port at connect time, per destination (IP_BIND_ADDRESS_NO_PORT = 24)
    let one: libc::c_int = 1;
    // SAFETY: a valid fd and a c_int option value of the right size.
    unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&s),
            libc::IPPROTO_IP,
            24,
            &one as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as u32,
        )
    };
    s.bind(&SocketAddr::new(src, 0).into())?;
    s.set_nonblocking(true)?;
    s.set_tcp_nodelay(true)?;
    match s.connect(&o.connect.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(s.into()))
}

/// Runs the client; returns its counts and the age histogram (µs).
pub fn run(o: &LoadOpts) -> Result<(Counts, Histogram<u64>), String> {
    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    let mut events = Events::with_capacity(4096);
    let mut meter = Meter {
        seq_key: memmem::Finder::new(b"\"seq\":"),
        rx_key: memmem::Finder::new(b"\"rx\":"),
        measuring: false,
        now_ns: 0,
        n: Counts::default(),
        hist: Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).map_err(|e| e.to_string())?,
    };
    let mut n = Counts::default();
    let mut conns: Vec<Option<C>> = (0..o.conns).map(|_| None).collect();
    let mut next = 0usize;
    let mut connecting = 0usize;
    let start = Instant::now();
    let mut window: Option<Instant> = None;
    let request = format!(
        "GET /v1/ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        o.connect
    );
    let names: Vec<String> = match &o.symbols_from {
        Some(u) => fetch_symbols(u)?,
        None => (0..o.universe.max(1))
            .map(gateway::synth::symbol_name)
            .collect(),
    };
    if names.is_empty() {
        return Err("no symbols to subscribe to".into());
    }
    let subscribe = |idx: usize| -> Vec<u8> {
        let syms: Vec<String> = (0..o.per_conn.min(names.len()))
            .map(|j| format!("\"{}\"", names[(idx * 7919 + j * 101) % names.len()]))
            .collect();
        let text = format!(
            r#"{{"op":"subscribe","symbols":[{}],"throttle_ms":{}}}"#,
            syms.join(","),
            o.throttle_ms
        );
        frame(1, text.as_bytes())
    };
    let mut open = 0usize;
    let mut rbuf = vec![0u8; 65536];
    let mut dead: Vec<usize> = Vec::new();
    loop {
        // keep connections being made, a bounded number at a time
        while connecting < o.in_flight {
            let k = match dead.pop() {
                Some(k) => {
                    n.reconnects += 1;
                    k
                }
                None if next < o.conns => {
                    next += 1;
                    next - 1
                }
                None => break,
            };
            match connect(o, k) {
                Ok(mut s) => {
                    poll.registry()
                        .register(&mut s, Token(k), Interest::READABLE | Interest::WRITABLE)
                        .map_err(|e| e.to_string())?;
                    conns[k] = Some(C {
                        s,
                        st: St::Connecting,
                        buf: Vec::new(),
                        seq: 0,
                        sent_sub: false,
                        wbuf: Vec::new(),
                        idx: k,
                    });
                    connecting += 1;
                }
                Err(e) => {
                    n.errors += 1;
                    if n.errors < 5 {
                        eprintln!("fanout-client: connect: {e}");
                    }
                    dead.push(k);
                    break;
                }
            }
        }
        if window.is_none() && (open == o.conns || start.elapsed().as_secs() >= o.connect_timeout_s)
        {
            eprintln!(
                "fanout-client: {open} of {} connected in {:.1} s; measuring {} s",
                o.conns,
                start.elapsed().as_secs_f64(),
                o.duration_s
            );
            window = Some(Instant::now());
            if let Some(p) = &o.ready_file {
                let _ = std::fs::write(p, b"ready\n");
            }
            meter.n = Counts {
                holes: meter.n.holes,
                ..Counts::default()
            };
            meter.hist.reset();
        }
        if let Some(w) = window
            && w.elapsed() >= Duration::from_secs(o.duration_s)
        {
            break;
        }
        if o.poll_interval_us > 0 {
            std::thread::sleep(Duration::from_micros(o.poll_interval_us));
            poll.poll(&mut events, Some(Duration::ZERO))
        } else {
            poll.poll(&mut events, Some(Duration::from_millis(5)))
        }
        .map_err(|e| e.to_string())?;
        meter.measuring = window.is_some();
        for ev in events.iter() {
            let k = ev.token().0;
            let Some(c) = conns[k].as_mut() else { continue };
            // each connection's frames are stamped when it is read
            meter.now_ns = feed_handler::sock::realtime_ns();
            let mut fail = false;
            if c.st == St::Connecting && (ev.is_writable() || ev.is_error()) {
                if ev.is_error() || c.s.peer_addr().is_err() {
                    fail = true;
                } else {
                    c.st = St::Handshake;
                    c.wbuf.extend_from_slice(request.as_bytes());
                }
            }
            if !fail && !c.wbuf.is_empty() {
                match c.s.write(&c.wbuf) {
                    Ok(w) => {
                        c.wbuf.drain(..w);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => fail = true,
                }
            }
            if !fail && (ev.is_readable() || ev.is_read_closed()) {
                loop {
                    match c.s.read(&mut rbuf) {
                        Ok(0) => {
                            fail = true;
                            break;
                        }
                        Ok(r) => {
                            if c.st == St::Open && c.buf.is_empty() {
                                // the usual case: whole frames, read where they landed
                                let used =
                                    meter.frames(&rbuf[..r], &mut c.seq, &mut c.wbuf, &mut fail);
                                c.buf.extend_from_slice(&rbuf[used..r]);
                            } else {
                                c.buf.extend_from_slice(&rbuf[..r]);
                            }
                            // a short read drained the socket: the next data is a new edge
                            if r < rbuf.len() {
                                break;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(_) => {
                            fail = true;
                            break;
                        }
                    }
                }
            }
            if c.st == St::Handshake
                && let Some(end) = find(&c.buf, b"\r\n\r\n", 0)
            {
                if !c.buf.starts_with(b"HTTP/1.1 101") {
                    fail = true;
                } else {
                    c.buf.drain(..end + 4);
                    c.st = St::Open;
                    connecting -= 1;
                    open += 1;
                    n.established += 1;
                    if !c.sent_sub && o.per_conn > 0 {
                        c.sent_sub = true;
                        let f = subscribe(c.idx);
                        c.wbuf.extend_from_slice(&f);
                        if let Ok(w) = c.s.write(&c.wbuf) {
                            c.wbuf.drain(..w);
                        }
                    }
                }
            }
            if c.st == St::Open && !c.buf.is_empty() {
                // bytes that came with the handshake, or a frame split across reads
                let used = meter.frames(&c.buf, &mut c.seq, &mut c.wbuf, &mut fail);
                c.buf.drain(..used);
            }
            if !fail && !c.wbuf.is_empty() {
                // pongs
                if let Ok(w) = c.s.write(&c.wbuf) {
                    c.wbuf.drain(..w);
                }
            }
            if fail {
                match c.st {
                    St::Open => {
                        open -= 1;
                        n.closed += 1;
                    }
                    St::Connecting | St::Handshake => {
                        connecting -= 1;
                        n.errors += 1;
                    }
                    St::Dead => {}
                }
                c.st = St::Dead;
                let _ = poll.registry().deregister(&mut c.s);
                conns[k] = None;
                dead.push(k);
            }
        }
    }
    n.held = open as u64;
    n.messages = meter.n.messages;
    n.updates = meter.n.updates;
    n.quotes = meter.n.quotes;
    n.holes = meter.n.holes;
    Ok((n, meter.hist))
}

/// Writes a histogram as a `.hdr` file (V2 serialization).
pub fn save_hdr(h: &Histogram<u64>, path: &std::path::Path) -> Result<(), String> {
    use hdrhistogram::serialization::{Serializer, V2Serializer};
    let mut f = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    V2Serializer::new()
        .serialize(h, &mut f)
        .map_err(|e| format!("{}: {e:?}", path.display()))?;
    Ok(())
}

/// Reads a `.hdr` file.
pub fn load_hdr(path: &std::path::Path) -> Result<Histogram<u64>, String> {
    use hdrhistogram::serialization::Deserializer;
    let mut f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Deserializer::new()
        .deserialize(&mut f)
        .map_err(|e| format!("{}: {e:?}", path.display()))
}

/// `bench fanout-client`: runs and prints the counts as one JSON line.
pub fn main(o: &LoadOpts) -> Result<(), String> {
    if o.sched_batch {
        let p = libc::sched_param { sched_priority: 0 };
        // SAFETY: sched_setscheduler reads `p` (a valid sched_param) during the call only;
        // pid 0 is this thread.
        if unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &p) } != 0 {
            return Err(format!("SCHED_BATCH: {}", std::io::Error::last_os_error()));
        }
    }
    let (n, h) = run(o)?;
    if let Some(p) = &o.hdr {
        save_hdr(&h, p)?;
    }
    println!(
        "{}",
        serde_json::json!({
            "held": n.held, "established": n.established, "errors": n.errors,
            "closed": n.closed, "reconnects": n.reconnects, "messages": n.messages,
            "updates": n.updates, "quotes": n.quotes, "holes": n.holes,
            "p50_us": h.value_at_quantile(0.5), "p99_us": h.value_at_quantile(0.99),
        })
    );
    Ok(())
}
