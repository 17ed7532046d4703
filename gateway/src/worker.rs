//! A worker thread: its own mio `Poll`, its own listening socket on the shared port
//! (SO_REUSEPORT), its own quote source and market view, and every connection it accepted.
//! Each tick (1 ms by default) it reads the source, flushes throttle-0 sessions whose symbols
//! changed, and wakes the connections the timer wheel says are due. A connection is written once
//! per flush: the session's messages go into the WebSocket's (or SSE stream's) buffer and out in
//! one write; while that buffer has not drained the session is not flushed (it is conflated).

use crate::deflate::{Deflater, WsStream};
use crate::http::{self, Head};
use crate::market::Market;
use crate::server::Shared;
use crate::session::{Outbox, Session, Verdict};
use crate::source::{Health, QuoteSource};
use crate::wheel::Wheel;
use bytes::BytesMut;
use feed_handler::sock::realtime_ns;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use tungstenite::handshake::MidHandshake;
use tungstenite::handshake::server::{Callback, ErrorResponse, Request, Response, ServerHandshake};
use tungstenite::protocol::WebSocketConfig;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::frame::coding::{Data as OpData, OpCode};
use tungstenite::protocol::frame::{CloseFrame, Frame, FrameHeader};
use tungstenite::{HandshakeError, Message, Utf8Bytes, WebSocket};

const LISTENER: Token = Token(usize::MAX - 1);

/// The memory messages are copied into on their way to tungstenite, at least (a worker's).
const PAYLOADS: usize = 64 << 10;

/// Shorter messages are not worth compressing: each costs about 5 µs however short (the
/// compressor's reset), and a 300-byte update shrinks by a third at most.
const DEFLATE_AT_LEAST: usize = 512;

type Mid = MidHandshake<ServerHandshake<WsStream, Extensions>>;

/// The handshake's answer to the client's extension offers: permessage-deflate accepted, or
/// nothing.
struct Extensions(Option<crate::deflate::Accepted>);

impl Callback for Extensions {
    fn on_request(self, _: &Request, mut r: Response) -> Result<Response, ErrorResponse> {
        if let Some(a) = self.0
            && let Ok(v) = a.header().parse()
        {
            r.headers_mut().insert("sec-websocket-extensions", v);
        }
        Ok(r)
    }
}

enum State {
    /// Waiting for a whole request head (peeked, not consumed).
    Request(TcpStream),
    /// tungstenite's handshake, interrupted by WouldBlock.
    Handshake(Box<Mid>),
    /// A WebSocket session.
    Ws(Box<WebSocket<WsStream>>),
    /// An SSE stream and the bytes not yet written.
    Sse(TcpStream, Vec<u8>),
    /// A plain response being written; the connection closes after it.
    Respond(TcpStream, Vec<u8>),
    /// Being torn down.
    Gone,
}

struct Conn {
    state: State,
    session: Option<Session>,
    gn: u32,
    since_ns: u64,
    last_in_ns: u64,
    last_ping_ns: u64,
    blocked_since: Option<u64>,
    closing_until: Option<u64>,
    due_ms: u64,
    queued: bool,
    /// The WebSocket reader failed (protocol error): only drain and discard inbound bytes.
    no_read: bool,
    /// A request for quotes held (in `State::Request`, its head unread) until the source is
    /// ready.
    held: bool,
}

/// The worker.
pub struct Worker {
    shared: Arc<Shared>,
    poll: Poll,
    listener: TcpListener,
    source: Box<dyn QuoteSource>,
    market: Market,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    gens: Vec<u32>,
    wheel: Wheel,
    outbox: Outbox,
    /// Where each message sent is copied to become a frame's payload: carved off, copied
    /// into the connection's write buffer by tungstenite and dropped at once, so the same
    /// memory serves the next message (no allocation per message).
    payloads: BytesMut,
    /// The compressor for every connection with permessage-deflate (made at the first
    /// message to compress: a few hundred KB), and its output.
    deflater: Option<Deflater>,
    deflated: Vec<u8>,
    due: Vec<(u64, u64)>,
    changed: Vec<u32>,
    immediate: Vec<u64>,
    peek: Vec<u8>,
    health: Health,
    live_counted: bool,
    next_source_text_ns: u64,
    next_limit_log_ns: u64,
    next_gauges_ns: u64,
    local: crate::metrics::Local,
    index: usize,
    /// The source has given every quote it held when first reached ([`QuoteSource::ready`]):
    /// until then requests for quotes are held, not told a symbol is unknown.
    ready: bool,
    /// The connections whose requests are held (keys; some may be gone since).
    held: Vec<u64>,
}

/// Quote changes taken from the source at most a tick.
const POLL_AT_MOST: usize = 200_000;

fn key(i: usize, gn: u32) -> u64 {
    (gn as u64) << 32 | i as u64
}

fn ws_config(shared: &Shared) -> WebSocketConfig {
    // write() never writes on its own (one flush writes everything a flush queued); the hard cap
    // leaves room over the session's budget for one more message and control frames
    let queued = shared.limits.out_budget + 2 * shared.limits.message_chunk;
    WebSocketConfig::default()
        .read_buffer_size(shared.cfg.read_buffer_bytes)
        .write_buffer_size(queued)
        .max_write_buffer_size(queued + 64 * 1024)
        .max_message_size(Some(shared.cfg.max_frame_bytes))
        .max_frame_size(Some(shared.cfg.max_frame_bytes))
}

impl Worker {
    /// A worker on `listener` reading `source`.
    pub fn new(
        index: usize,
        shared: Arc<Shared>,
        listener: std::net::TcpListener,
        source: Box<dyn QuoteSource>,
    ) -> io::Result<Self> {
        let poll = Poll::new()?;
        listener.set_nonblocking(true)?;
        let mut listener = TcpListener::from_std(listener);
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let now = realtime_ns();
        Ok(Worker {
            market: Market::new(shared.cfg.max_table_symbols),
            shared,
            poll,
            listener,
            source,
            conns: Vec::new(),
            free: Vec::new(),
            gens: Vec::new(),
            wheel: Wheel::new(now),
            outbox: Outbox::default(),
            payloads: BytesMut::new(),
            deflater: None,
            deflated: Vec::new(),
            due: Vec::new(),
            changed: Vec::new(),
            immediate: Vec::new(),
            peek: vec![0; http::MAX_HEAD],
            health: Health::Down("starting".into()),
            live_counted: false,
            next_source_text_ns: 0,
            next_limit_log_ns: 0,
            next_gauges_ns: 0,
            local: Default::default(),
            index,
            ready: false,
            held: Vec::new(),
        })
    }

    /// Runs until the server's stop flag is set, then closes every connection with 1001.
    pub fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let tick_ns = self.shared.cfg.tick_ns;
        let mut next_tick = realtime_ns();
        while !self.shared.stop.load(Relaxed) {
            let wait = next_tick.saturating_sub(realtime_ns()).min(tick_ns);
            let wait = std::time::Duration::from_nanos(wait);
            if let Err(e) = self.poll.poll(&mut events, Some(wait)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    eprintln!("gateway: worker {}: poll: {e}", self.index);
                    break;
                }
            }
            let now = realtime_ns();
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept(now),
                    Token(i) => {
                        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                            self.on_readable(i, now);
                        }
                        if ev.is_writable() {
                            self.on_writable(i, now);
                        }
                    }
                }
            }
            // the source is read and flushes happen once per tick, however many socket events
            // come in between: a busy loop does not turn into one write per change
            if now >= next_tick {
                next_tick = now + tick_ns;
                self.tick(now);
            }
        }
        let now = realtime_ns();
        for i in 0..self.conns.len() {
            self.close_ws(i, now, 1001, "server shutting down");
            self.drop_conn(i);
        }
    }

    fn tick(&mut self, now: u64) {
        let m = &mut self.market;
        // ready before this poll, and the poll took all there was: every quote is in
        let ready = self.ready || self.source.ready();
        let n = self.source.poll(now, POLL_AT_MOST, &mut |q| {
            m.apply(q);
        });
        if !self.ready && ready && n < POLL_AT_MOST {
            self.ready = true;
            self.release_held(now);
        }
        if n > 0 && self.index == 0 {
            self.shared
                .metrics
                .source_quotes_total
                .fetch_add(n as u64, Relaxed);
        }
        if self.index == 0 && now >= self.next_source_text_ns {
            self.next_source_text_ns = now + 1_000_000_000;
            let mut t = String::new();
            self.source.prometheus(&mut t);
            if let Ok(mut g) = self.shared.source_text.lock() {
                *g = t;
            }
        }
        let h = self.source.health();
        if h != self.health || !self.live_counted {
            if self.index == 0 {
                self.shared
                    .metrics
                    .source_live
                    .store((h == Health::Live) as i64, Relaxed);
                if let Ok(mut g) = self.shared.health.lock() {
                    *g = h.clone();
                }
            }
            self.health = h;
            self.live_counted = true;
        }
        let mut changed = std::mem::take(&mut self.changed);
        self.market.take_changed(&mut changed);
        for &s in &changed {
            for &k in &self.market.syms[s as usize].immediate {
                let i = k as u32 as usize;
                if let Some(Some(c)) = self.conns.get_mut(i)
                    && !c.queued
                {
                    c.queued = true;
                    self.immediate.push(k);
                }
            }
        }
        if self.index == 0 && !changed.is_empty() {
            let m = &self.shared.metrics;
            m.symbols.store(self.market.syms.len() as i64, Relaxed);
        }
        self.changed = changed;
        let imm = std::mem::take(&mut self.immediate);
        for &k in &imm {
            let i = k as u32 as usize;
            if let Some(Some(c)) = self.conns.get_mut(i) {
                c.queued = false;
                if c.gn == (k >> 32) as u32 {
                    self.service(i, now, true);
                }
            }
        }
        self.immediate = imm;
        self.immediate.clear();
        let mut due = std::mem::take(&mut self.due);
        self.wheel.advance(now, &mut due);
        for &(k, ms) in &due {
            let i = k as u32 as usize;
            if let Some(Some(c)) = self.conns.get(i)
                && c.gn == (k >> 32) as u32
                && c.due_ms == ms
            {
                self.service(i, now, false);
            }
        }
        self.due = due;
        self.local.publish(&self.shared.metrics);
        if self.index == 0 && now >= self.next_gauges_ns {
            self.next_gauges_ns = now + 1_000_000_000;
            let stale = self.market.syms.iter().filter(|s| s.quote.stale).count();
            self.shared
                .metrics
                .stale_symbols
                .store(stale as i64, Relaxed);
        }
    }

    fn accept(&mut self, now: u64) {
        loop {
            let (stream, _) = match self.listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    // EMFILE and friends: say so, rate-limited, and try again next event
                    if now >= self.next_limit_log_ns {
                        self.next_limit_log_ns = now + 10_000_000_000;
                        eprintln!("gateway: accept: {e}");
                    }
                    return;
                }
            };
            let m = &self.shared.metrics;
            let open = self.shared.open.fetch_add(1, Relaxed) + 1;
            if open > self.shared.cfg.max_connections {
                self.shared.open.fetch_sub(1, Relaxed);
                m.rejected_total.fetch_add(1, Relaxed);
                if now >= self.next_limit_log_ns {
                    self.next_limit_log_ns = now + 10_000_000_000;
                    eprintln!(
                        "gateway: connection limit {} reached; refusing new connections (--max-connections; each connection is one of this process's open files)",
                        self.shared.cfg.max_connections
                    );
                }
                let mut s = stream;
                let _ = s.write_all(&http::error(
                    "503 Service Unavailable",
                    "connection limit reached; try another gateway",
                ));
                continue;
            }
            m.accepted_total.fetch_add(1, Relaxed);
            m.connections.fetch_add(1, Relaxed);
            let _ = stream.set_nodelay(true);
            if let Some(b) = self.shared.cfg.sndbuf_bytes {
                let _ = socket2::SockRef::from(&stream).set_send_buffer_size(b);
            }
            let i = match self.free.pop() {
                Some(i) => i,
                None => {
                    self.conns.push(None);
                    self.gens.push(0);
                    self.conns.len() - 1
                }
            };
            self.gens[i] = self.gens[i].wrapping_add(1);
            let mut stream = stream;
            if let Err(e) = self.poll.registry().register(
                &mut stream,
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                eprintln!("gateway: register: {e}");
                self.conns[i] = None;
                self.free.push(i);
                self.shared.open.fetch_sub(1, Relaxed);
                m.connections.fetch_sub(1, Relaxed);
                continue;
            }
            self.conns[i] = Some(Conn {
                state: State::Request(stream),
                session: None,
                gn: self.gens[i],
                since_ns: now,
                last_in_ns: now,
                last_ping_ns: now,
                blocked_since: None,
                closing_until: None,
                due_ms: 0,
                queued: false,
                no_read: false,
                held: false,
            });
            self.schedule(i, now + self.shared.cfg.handshake_timeout_ns);
        }
    }

    fn schedule(&mut self, i: usize, due_ns: u64) {
        let k = key(i, self.gens[i]);
        let ms = self.wheel.schedule(k, due_ns);
        if let Some(Some(c)) = self.conns.get_mut(i) {
            c.due_ms = ms;
        }
    }

    fn drop_conn(&mut self, i: usize) {
        let Some(mut c) = self.conns.get_mut(i).and_then(Option::take) else {
            return;
        };
        let m = &self.shared.metrics;
        if let Some(s) = c.session.as_mut() {
            m.subscriptions.fetch_sub(s.subscriptions() as i64, Relaxed);
            s.detach(&mut self.market);
            match c.state {
                State::Sse(..) => m.sse_connections.fetch_sub(1, Relaxed),
                _ => m.websocket_connections.fetch_sub(1, Relaxed),
            };
        }
        let reg = self.poll.registry();
        match &mut c.state {
            State::Request(s) | State::Sse(s, _) | State::Respond(s, _) => {
                let _ = reg.deregister(s);
            }
            State::Ws(ws) => {
                let _ = reg.deregister(&mut ws.get_mut().sock);
            }
            State::Handshake(mid) => {
                let _ = reg.deregister(&mut mid.get_mut().get_mut().sock);
            }
            State::Gone => {}
        }
        self.free.push(i);
        self.shared.open.fetch_sub(1, Relaxed);
        m.connections.fetch_sub(1, Relaxed);
    }

    fn on_readable(&mut self, i: usize, now: u64) {
        let Some(Some(c)) = self.conns.get_mut(i) else {
            return;
        };
        c.last_in_ns = now;
        match std::mem::replace(&mut c.state, State::Gone) {
            State::Request(s) => self.on_request(i, s, now),
            State::Handshake(mid) => {
                let offer = mid.get_ref().get_ref().pending_deflate;
                self.on_handshake(i, mid.handshake(), offer, now)
            }
            State::Ws(mut ws) => {
                if c.no_read {
                    // after a protocol error: discard what comes until the peer closes
                    let mut buf = [0u8; 4096];
                    loop {
                        match ws.get_mut().sock.read(&mut buf) {
                            Ok(0) => return self.drop_conn(i),
                            Ok(_) => continue,
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(_) => return self.drop_conn(i),
                        }
                    }
                    c.state = State::Ws(ws);
                    return;
                }
                c.state = State::Ws(ws);
                self.read_ws(i, now);
            }
            State::Sse(mut s, out) => {
                // SSE clients send nothing; read to notice the close
                let mut buf = [0u8; 512];
                loop {
                    match s.read(&mut buf) {
                        Ok(0) => return self.drop_conn(i),
                        Ok(_) => continue,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(_) => return self.drop_conn(i),
                    }
                }
                c.state = State::Sse(s, out);
            }
            st @ State::Respond(..) => c.state = st,
            State::Gone => {}
        }
    }

    fn on_request(&mut self, i: usize, mut s: TcpStream, now: u64) {
        let n = match s.peek(&mut self.peek) {
            Ok(0) => return self.drop_conn(i),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.set_state(i, State::Request(s));
                return;
            }
            Err(_) => return self.drop_conn(i),
        };
        let head = match http::parse_head(&self.peek[..n]) {
            Ok(Some(h)) => h,
            Ok(None) => {
                self.set_state(i, State::Request(s));
                return;
            }
            Err(e) => {
                let r = http::error("400 Bad Request", e);
                return self.respond(i, s, r, now);
            }
        };
        if !self.ready && http::needs_quotes(&head) {
            return self.hold(i, s);
        }
        if head.path == "/v1/ws" && head.upgrade {
            let offer = head.deflate.filter(|_| self.shared.cfg.deflate);
            let hs = tungstenite::accept_hdr_with_config(
                WsStream::new(s),
                Extensions(offer),
                Some(ws_config(&self.shared)),
            );
            return self.on_handshake(i, hs, offer, now);
        }
        // consume the head (a GET has no body)
        let mut rest = head.len;
        let mut sink = [0u8; 1024];
        while rest > 0 {
            match s.read(&mut sink[..rest.min(1024)]) {
                Ok(0) | Err(_) => return self.drop_conn(i),
                Ok(k) => rest -= k,
            }
        }
        if head.path == "/v1/sse" && head.method == "GET" {
            return self.start_sse(i, s, &head, now);
        }
        self.shared
            .metrics
            .http_requests_total
            .fetch_add(1, Relaxed);
        let ctx = http::Ctx {
            market: &self.market,
            metrics: &self.shared.metrics,
            source_text: &self.shared.source_text,
            health: self.health.clone(),
            ready: self.ready,
            bars: &self.shared.bars,
            max_symbols: self.shared.limits.max_symbols,
            venues_table: &self.shared.venues_table,
            quotes_table: &self.shared.cfg.quotes,
            venue_names: self.shared.cfg.venue_names.as_deref(),
        };
        let r = http::answer(&head, &ctx);
        let r = if head.method == "HEAD" {
            let end = r
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map_or(r.len(), |p| p + 4);
            r[..end].to_vec()
        } else {
            r
        };
        self.respond(i, s, r, now);
    }

    /// Holds a request for quotes until the source is ready (or the handshake timeout, when
    /// it is answered 503): a gateway just started has not loaded its quotes, and would call
    /// every symbol unknown.
    fn hold(&mut self, i: usize, s: TcpStream) {
        self.set_state(i, State::Request(s));
        let Some(Some(c)) = self.conns.get_mut(i) else {
            return;
        };
        if c.held {
            return;
        }
        c.held = true;
        self.shared
            .metrics
            .requests_held_total
            .fetch_add(1, Relaxed);
        // (keys of connections gone since are dropped before the list outgrows the live ones)
        if self.held.len() >= self.conns.len() {
            let (conns, gens) = (&self.conns, &self.gens);
            self.held.retain(|&k| {
                let j = k as u32 as usize;
                matches!(conns.get(j), Some(Some(c)) if c.held && key(j, gens[j]) == k)
            });
        }
        self.held.push(key(i, self.gens[i]));
    }

    /// The source is ready: the requests held are answered.
    fn release_held(&mut self, now: u64) {
        for k in std::mem::take(&mut self.held) {
            let i = k as u32 as usize;
            if key(i, self.gens[i]) != k {
                continue;
            }
            let Some(Some(c)) = self.conns.get_mut(i) else {
                continue;
            };
            if !c.held {
                continue;
            }
            c.held = false;
            if let State::Request(s) = std::mem::replace(&mut c.state, State::Gone) {
                self.on_request(i, s, now);
            }
        }
    }

    /// A request held past the handshake timeout: `503`, its head read first (closing with
    /// it unread would reset the connection, and the answer could be lost).
    fn refuse_held(&mut self, i: usize, s: TcpStream, now: u64) {
        let mut s = s;
        let head_len = match s.peek(&mut self.peek) {
            Ok(n) => match http::parse_head(&self.peek[..n]) {
                Ok(Some(h)) => h.len,
                _ => return self.drop_conn(i),
            },
            Err(_) => return self.drop_conn(i),
        };
        let mut rest = head_len;
        let mut sink = [0u8; 1024];
        while rest > 0 {
            match s.read(&mut sink[..rest.min(1024)]) {
                Ok(0) | Err(_) => return self.drop_conn(i),
                Ok(k) => rest -= k,
            }
        }
        self.shared
            .metrics
            .requests_unready_total
            .fetch_add(1, Relaxed);
        let why = match self.source.health() {
            Health::Down(why) => why,
            Health::Live => "still loading".into(),
        };
        let r = http::error(
            "503 Service Unavailable",
            &format!("quotes not loaded yet ({why}); ask again in a moment"),
        );
        self.respond(i, s, r, now);
    }

    fn set_state(&mut self, i: usize, st: State) {
        if let Some(Some(c)) = self.conns.get_mut(i) {
            c.state = st;
        }
    }

    fn respond(&mut self, i: usize, s: TcpStream, r: Vec<u8>, now: u64) {
        self.set_state(i, State::Respond(s, r));
        if let Some(Some(c)) = self.conns.get_mut(i) {
            c.closing_until = Some(now + self.shared.cfg.close_linger_ns);
        }
        self.on_writable(i, now);
    }

    fn new_session(&mut self, i: usize, now: u64) -> Session {
        let k = key(i, self.gens[i]);
        // spread flush instants over the window: a phase from the key
        let phase = (k.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 20) % 60_000_000_000;
        Session::new(k, now, phase, &self.shared.limits)
    }

    fn start_sse(&mut self, i: usize, s: TcpStream, head: &Head, now: u64) {
        let names = http::list_param(&head.query, "symbols");
        let throttle = http::param(&head.query, "throttle_ms").map(|t| t.parse::<u64>());
        let throttle = match throttle {
            None => None,
            Some(Ok(t)) if t <= self.shared.limits.max_throttle_ms => Some(t),
            Some(_) => {
                let r = http::error(
                    "400 Bad Request",
                    "throttle_ms must be an integer of milliseconds",
                );
                return self.respond(i, s, r, now);
            }
        };
        if names.len() > self.shared.limits.max_symbols {
            let r = http::error(
                "400 Bad Request",
                &format!("at most {} symbols", self.shared.limits.max_symbols),
            );
            return self.respond(i, s, r, now);
        }
        let mut session = self.new_session(i, now);
        self.outbox.clear();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let lim = self.shared.limits;
        let _ = session.subscribe(
            now,
            &refs,
            throttle,
            None,
            &mut self.market,
            &lim,
            &mut self.outbox,
        );
        let m = &self.shared.metrics;
        m.sse_connections.fetch_add(1, Relaxed);
        m.subscriptions
            .fetch_add(session.subscriptions() as i64, Relaxed);
        let mut out = http::SSE_HEAD.to_vec();
        let first = session.seq() + 1 - self.outbox.messages().count() as u64;
        sse_frames(&mut out, &self.outbox, first);
        Self::count_sent(&mut self.local, &self.outbox);
        if let Some(Some(c)) = self.conns.get_mut(i) {
            c.session = Some(session);
            c.state = State::Sse(s, out);
        }
        self.on_writable(i, now);
        self.reschedule(i, now);
    }

    fn count_sent(local: &mut crate::metrics::Local, out: &Outbox) {
        local.messages += out.messages().count() as u64;
        local.bytes += out.len() as u64;
    }

    fn on_handshake(
        &mut self,
        i: usize,
        r: Result<WebSocket<WsStream>, HandshakeError<ServerHandshake<WsStream, Extensions>>>,
        offer: Option<crate::deflate::Accepted>,
        now: u64,
    ) {
        match r {
            Ok(mut ws) => {
                if let Some(a) = offer {
                    // compressed from here on (the client waited for the 101 to send anything)
                    ws.get_mut().inflate(a, self.shared.cfg.max_frame_bytes);
                    self.shared
                        .metrics
                        .deflate_sessions_total
                        .fetch_add(1, Relaxed);
                }
                let session = self.new_session(i, now);
                self.shared
                    .metrics
                    .websocket_connections
                    .fetch_add(1, Relaxed);
                if let Some(Some(c)) = self.conns.get_mut(i) {
                    c.state = State::Ws(Box::new(ws));
                    c.session = Some(session);
                    c.since_ns = now;
                }
                self.reschedule(i, now);
                self.read_ws(i, now);
            }
            Err(HandshakeError::Interrupted(mut mid)) => {
                mid.get_mut().get_mut().pending_deflate = offer;
                self.set_state(i, State::Handshake(Box::new(mid)))
            }
            Err(HandshakeError::Failure(_)) => self.drop_conn(i),
        }
    }

    fn read_ws(&mut self, i: usize, now: u64) {
        let lim = self.shared.limits;
        let mut verdict = Verdict::Ok;
        self.outbox.clear();
        let Some(Some(c)) = self.conns.get_mut(i) else {
            return;
        };
        let State::Ws(ws) = &mut c.state else { return };
        let Some(session) = c.session.as_mut() else {
            return;
        };
        let subs_before = session.subscriptions() as i64;
        let mut gone = false;
        let mut close: Option<(u16, &'static str)> = None;
        loop {
            match ws.read() {
                Ok(Message::Text(t)) => {
                    verdict =
                        session.on_text(now, t.as_str(), &mut self.market, &lim, &mut self.outbox);
                }
                Ok(Message::Binary(_)) => {
                    verdict = session.on_binary(now, &lim, &mut self.outbox);
                }
                Ok(_) => {} // ping (answered by tungstenite), pong, close (answered too)
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(tungstenite::Error::Capacity(_)) => {
                    close = Some((1009, "frame or message over the size limit"));
                    break;
                }
                Err(tungstenite::Error::Utf8(_)) => {
                    close = Some((1007, "text frame is not valid UTF-8"));
                    break;
                }
                Err(tungstenite::Error::Protocol(
                    tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
                )) => {
                    gone = true;
                    break;
                }
                Err(tungstenite::Error::Protocol(_)) => {
                    close = Some((1002, "WebSocket protocol error"));
                    break;
                }
                Err(tungstenite::Error::WriteBufferFull(_)) => break,
                Err(_) => {
                    gone = true;
                    break;
                }
            }
            if verdict != Verdict::Ok {
                break;
            }
        }
        let subs_after = session.subscriptions() as i64;
        let m = &self.shared.metrics;
        m.subscriptions.fetch_add(subs_after - subs_before, Relaxed);
        let errors = self
            .outbox
            .messages()
            .filter(|b| b.starts_with(b"{\"type\":\"error\""))
            .count();
        m.errors_sent_total.fetch_add(errors as u64, Relaxed);
        if gone {
            return self.drop_conn(i);
        }
        if !self.outbox.is_empty() {
            self.send_outbox(i, now);
        } else if let Some(Some(c)) = self.conns.get_mut(i)
            && let State::Ws(ws) = &mut c.state
        {
            // pongs and close replies tungstenite queued
            let _ = ws.flush();
        }
        if let Verdict::Close(code, reason) = verdict {
            self.shared
                .metrics
                .policy_closed_total
                .fetch_add(1, Relaxed);
            self.close_ws(i, now, code, reason);
        } else if let Some((code, reason)) = close {
            // tungstenite's reader cannot go on after its error: close, then only drain
            self.shared
                .metrics
                .protocol_closed_total
                .fetch_add(1, Relaxed);
            if let Some(Some(c)) = self.conns.get_mut(i) {
                c.no_read = true;
            }
            self.close_ws(i, now, code, reason);
        }
        self.reschedule(i, now);
    }

    /// Sends the outbox on connection `i` (one write) and notes whether it drained.
    fn send_outbox(&mut self, i: usize, now: u64) {
        Self::count_sent(&mut self.local, &self.outbox);
        let Some(Some(c)) = self.conns.get_mut(i) else {
            return;
        };
        let t0 = std::time::Instant::now();
        let mut overflow = false;
        let drained = match &mut c.state {
            State::Ws(ws) => {
                let mut ok = true;
                for msg in self.outbox.messages() {
                    if self.payloads.capacity() < msg.len() {
                        // back to the start of its memory when every payload carved off is
                        // gone (they are: tungstenite copies each one), else more memory
                        self.payloads.reserve(msg.len().max(PAYLOADS));
                    }
                    // compressed when negotiated, within the client's window, and smaller (and
                    // UTF-8, as the plain path checks: else it goes that way, and not at all)
                    let deflated = ws.get_ref().deflate_max().is_some_and(|max| {
                        msg.len() >= DEFLATE_AT_LEAST
                            && msg.len() <= max
                            && std::str::from_utf8(msg).is_ok()
                            && self
                                .deflater
                                .get_or_insert_with(Deflater::default)
                                .compress(msg, &mut self.deflated)
                    });
                    let m = if deflated {
                        self.local.deflated += 1;
                        self.local.deflated_in += msg.len() as u64;
                        self.local.deflated_out += self.deflated.len() as u64;
                        self.payloads.extend_from_slice(&self.deflated);
                        let header = FrameHeader {
                            rsv1: true,
                            opcode: OpCode::Data(OpData::Text),
                            ..FrameHeader::default()
                        };
                        Message::Frame(Frame::from_payload(header, self.payloads.split().freeze()))
                    } else {
                        self.payloads.extend_from_slice(msg);
                        let payload = self.payloads.split().freeze();
                        // our JSON is UTF-8 by construction; checked anyway, never sent if not
                        let Ok(text) = Utf8Bytes::try_from(payload) else {
                            continue;
                        };
                        Message::Text(text)
                    };
                    match ws.write(m) {
                        Ok(()) => {}
                        Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                        }
                        Err(tungstenite::Error::WriteBufferFull(_)) => {
                            // numbered but not queued: the client would see a hole
                            overflow = true;
                            ok = false;
                            break;
                        }
                        Err(_) => {
                            ok = false;
                            break;
                        }
                    }
                }
                match ws.flush() {
                    Ok(()) => ok,
                    Err(_) => false,
                }
            }
            State::Sse(s, out) => {
                let first = c.session.as_ref().map_or(0, |x| x.seq()) + 1
                    - self.outbox.messages().count() as u64;
                sse_frames(out, &self.outbox, first);
                write_some(s, out)
            }
            _ => true,
        };
        self.local.flushes += 1;
        self.local.flush_ns += t0.elapsed().as_nanos() as u64;
        if drained {
            c.blocked_since = None;
        } else if c.blocked_since.is_none() {
            // a slow-client event: conflated until its buffer drains
            c.blocked_since = Some(now);
            self.local.slow += 1;
        }
        if overflow {
            // replies to a client that is not reading (a subscribe while its buffer is full):
            // close rather than leave a hole in its seq
            self.shared
                .metrics
                .slow_client_closed_total
                .fetch_add(1, Relaxed);
            self.close_ws(i, now, 1013, "slow consumer: outbound buffer full");
        }
    }

    fn on_writable(&mut self, i: usize, now: u64) {
        let Some(Some(c)) = self.conns.get_mut(i) else {
            return;
        };
        let drained = match &mut c.state {
            State::Ws(ws) => ws.flush().is_ok(),
            State::Sse(s, out) => write_some(s, out),
            State::Respond(s, out) => {
                if write_some(s, out) {
                    let _ = s.shutdown(std::net::Shutdown::Write);
                    return self.drop_conn(i);
                }
                false
            }
            State::Handshake(_) => return self.on_readable(i, now),
            _ => true,
        };
        if drained && c.blocked_since.take().is_some() {
            // it drained: flush what it missed right away
            self.reschedule(i, now);
        }
        if drained
            && let Some(Some(c)) = self.conns.get_mut(i)
            && c.closing_until.is_some()
            && c.no_read
            && let State::Ws(ws) = &mut c.state
        {
            // the close frame is out: FIN, and drain the peer until it closes too
            let _ = ws.get_mut().sock.shutdown(std::net::Shutdown::Write);
        }
    }

    fn close_ws(&mut self, i: usize, now: u64, code: u16, reason: &'static str) {
        let linger = self.shared.cfg.close_linger_ns;
        let Some(Some(c)) = self.conns.get_mut(i) else {
            return;
        };
        if c.closing_until.is_some() {
            return;
        }
        c.closing_until = Some(now + linger);
        match &mut c.state {
            State::Ws(ws) => {
                let _ = ws.close(Some(CloseFrame {
                    code: CloseCode::from(code),
                    reason: reason.into(),
                }));
                if ws.flush().is_ok() && c.no_read {
                    let _ = ws.get_mut().sock.shutdown(std::net::Shutdown::Write);
                }
            }
            State::Sse(s, _) => {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
            _ => {}
        }
        self.schedule(i, now + linger);
    }

    fn reschedule(&mut self, i: usize, now: u64) {
        let cfg = &self.shared.cfg;
        let Some(Some(c)) = self.conns.get(i) else {
            return;
        };
        let mut due = match (&c.session, c.blocked_since) {
            (_, Some(b)) => b + self.shared.cfg.stall_timeout_ns,
            (Some(s), None) => s.due_ns(&self.shared.limits),
            (None, None) => c.since_ns + cfg.handshake_timeout_ns,
        };
        if let State::Ws(_) = c.state {
            due = due
                .min(c.last_in_ns.max(c.last_ping_ns) + cfg.ping_interval_ns)
                .min(c.last_in_ns + cfg.idle_timeout_ns);
        }
        if let Some(u) = c.closing_until {
            due = due.min(u);
        }
        self.schedule(i, due.max(now));
    }

    /// Wakes connection `i`: timeouts, then a flush if its buffer is empty.
    fn service(&mut self, i: usize, now: u64, immediate: bool) {
        let cfg = Timeouts::of(&self.shared.cfg);
        let Some(Some(c)) = self.conns.get_mut(i) else {
            return;
        };
        if let Some(u) = c.closing_until {
            if now >= u {
                return self.drop_conn(i);
            }
            if let State::Ws(ws) = &mut c.state
                && !c.no_read
            {
                // keep reading for the peer's close; tungstenite ends it
                match ws.read() {
                    Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => return self.drop_conn(i),
                    Ok(_) => {}
                }
            }
            return self.reschedule(i, now);
        }
        match &c.state {
            State::Request(_) | State::Handshake(_) => {
                if now >= c.since_ns + cfg.handshake_timeout_ns {
                    if c.held {
                        c.held = false;
                        if let State::Request(s) = std::mem::replace(&mut c.state, State::Gone) {
                            return self.refuse_held(i, s, now);
                        }
                    }
                    self.shared
                        .metrics
                        .handshake_timeouts_total
                        .fetch_add(1, Relaxed);
                    return self.drop_conn(i);
                }
                return self.reschedule(i, now);
            }
            State::Respond(..) | State::Gone => return self.reschedule(i, now),
            _ => {}
        }
        if let Some(b) = c.blocked_since {
            if now >= b + cfg.stall_timeout_ns {
                self.shared
                    .metrics
                    .slow_client_closed_total
                    .fetch_add(1, Relaxed);
                return self.close_ws(
                    i,
                    now,
                    1013,
                    "slow consumer: outbound buffer full past the stall limit",
                );
            }
            return self.reschedule(i, now);
        }
        if let State::Ws(ws) = &mut c.state {
            if now >= c.last_in_ns + cfg.idle_timeout_ns {
                self.shared.metrics.idle_closed_total.fetch_add(1, Relaxed);
                return self.close_ws(
                    i,
                    now,
                    1001,
                    "idle timeout: nothing received (not even a pong)",
                );
            }
            if now >= c.last_in_ns.max(c.last_ping_ns) + cfg.ping_interval_ns {
                c.last_ping_ns = now;
                let _ = ws.write(Message::Ping(Default::default()));
                let _ = ws.flush();
            }
        }
        let Some(s) = c.session.as_mut() else {
            return self.reschedule(i, now);
        };
        if immediate || now >= s.due_ns(&self.shared.limits) {
            self.outbox.clear();
            let f = s.flush(now, &mut self.market, &self.shared.limits, &mut self.outbox);
            if !self.outbox.is_empty() {
                if f.quotes > 0 {
                    let l = &mut self.local;
                    l.quotes += f.quotes;
                    l.conflated += f.conflated;
                    if f.max_rx_ns > 0 {
                        l.age_rx.observe_ns(now.saturating_sub(f.max_rx_ns));
                    }
                    if f.max_x_ts_ns > 0 {
                        let day = 86_400_000_000_000i64;
                        let local = (now as i64 + cfg.exchange_utc_offset_ns).rem_euclid(day);
                        let age = (local - f.max_x_ts_ns as i64).rem_euclid(day);
                        l.age_x.observe_ns(age as u64);
                    }
                }
                self.send_outbox(i, now);
            }
        }
        self.reschedule(i, now);
    }
}

/// The settings a wake-up needs, copied out of the shared config.
#[derive(Clone, Copy)]
struct Timeouts {
    handshake_timeout_ns: u64,
    stall_timeout_ns: u64,
    idle_timeout_ns: u64,
    ping_interval_ns: u64,
    exchange_utc_offset_ns: i64,
}

impl Timeouts {
    fn of(c: &crate::server::ServerCfg) -> Self {
        Timeouts {
            handshake_timeout_ns: c.handshake_timeout_ns,
            stall_timeout_ns: c.stall_timeout_ns,
            idle_timeout_ns: c.idle_timeout_ns,
            ping_interval_ns: c.ping_interval_ns,
            exchange_utc_offset_ns: c.exchange_utc_offset_ns,
        }
    }
}

/// Appends the outbox's messages as SSE events, `id:` being each message's `seq`.
fn sse_frames(out: &mut Vec<u8>, ob: &Outbox, first_seq: u64) {
    for (k, m) in ob.messages().enumerate() {
        let _ = write!(out, "id: {}\ndata: ", first_seq + k as u64);
        out.extend_from_slice(m);
        out.extend_from_slice(b"\n\n");
    }
}

/// Writes as much of `out` as the socket takes; true when it is all out.
fn write_some(s: &mut TcpStream, out: &mut Vec<u8>) -> bool {
    let mut done = 0;
    while done < out.len() {
        match s.write(&out[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    out.drain(..done);
    out.is_empty()
}
