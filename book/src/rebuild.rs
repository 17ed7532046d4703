//! Rebuilding a channel's books after an unrecovered gap: the whole session is re-requested
//! from sequence 1 from the MoldUDP64 re-request server (through the same sans-I/O arbiter as
//! the feed handler, asking again every timeout for as long as it takes: the server may be down
//! for a while), applied to fresh books, then the records the ring carried since the gap are
//! applied on top; only then do the fresh books replace the stale ones.

use crate::books::{Ahead, Books};
use feed_handler::arbiter::{ArbConfig, ArbSink, Arbiter, Line};
use feed_handler::moldudp64::{self, Request, Session};
use feed_handler::sock::{RecvBatch, realtime_ns};
use std::net::{SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;

/// Where to ask.
#[derive(Debug, Clone, Copy)]
pub struct RebuildConfig {
    /// The re-request server.
    pub server: SocketAddrV4,
    /// The session of the feed.
    pub session: Session,
    /// How long to wait for a reply before asking again, ns.
    pub request_timeout_ns: u64,
}

struct Fill<'a> {
    books: &'a mut Books,
    ahead: &'a mut Ahead,
    requests: &'a mut Vec<Request>,
    lost: &'a mut bool,
}

impl ArbSink for Fill<'_> {
    fn message(&mut self, _seq: u64, msg: &[u8], _recv_ns: u64, _line: Line) {
        self.ahead.push(self.books, msg);
    }
    fn gap(&mut self, _first: u64, _count: u64) {
        *self.lost = true;
    }
    fn request(&mut self, req: Request) {
        self.requests.push(req);
    }
}

/// Receive buffer of a rebuild's re-request socket, bytes.
pub const REPLY_BUFFER: usize = 16 << 20;

/// One rebuild in progress.
#[derive(Debug)]
pub struct Rebuild {
    arb: Arbiter,
    sock: UdpSocket,
    batch: RecvBatch,
    cfg: RebuildConfig,
    /// The fresh books being filled.
    pub books: Books,
    /// The sequence the re-requested part ends before (the live stream's next sequence when the
    /// rebuild began).
    pub until_seq: u64,
    /// The ring position after which the live records still have to be applied.
    pub from_position: u64,
    /// Re-requested messages on their way into `books` (flushed at the end of every poll).
    ahead: Ahead,
    requests: Vec<Request>,
    lost: bool,
    /// Requests sent.
    pub sent: u64,
}

impl Rebuild {
    /// Starts re-requesting `1 .. until_seq`; the ring's records from `from_position` on are
    /// applied once that is done.
    pub fn start(cfg: RebuildConfig, until_seq: u64, from_position: u64) -> std::io::Result<Self> {
        // (the replies to a whole session's requests come in bursts; a buffer the kernel
        // clamps is the feed handler's warning to give, at its start, for the same rmem_max)
        let (sock, _clamped) =
            feed_handler::sock::unicast_socket(std::net::Ipv4Addr::UNSPECIFIED, REPLY_BUFFER)?;
        let arb = Arbiter::new(ArbConfig {
            session: Some(cfg.session),
            start_seq: Some(1),
            line_wait_ns: 0,
            recovery: true,
            request_timeout_ns: cfg.request_timeout_ns,
            max_retries: u32::MAX - 1,
            ..ArbConfig::default()
        });
        let mut r = Rebuild {
            arb,
            sock,
            batch: RecvBatch::new(32),
            cfg,
            // its bars are not collected as they close (a whole day's would be): once swapped
            // in, its history (bounded) is judged against the books it replaces
            books: Books::new(),
            until_seq,
            from_position,
            ahead: Ahead::default(),
            requests: Vec::new(),
            lost: false,
            sent: 0,
        };
        // Tell the arbiter where the session stands: everything below `until_seq` is missing.
        let hb = moldudp64::control_packet(cfg.session, until_seq, moldudp64::COUNT_HEARTBEAT);
        let now = realtime_ns();
        let mut fill = Fill {
            books: &mut r.books,
            ahead: &mut r.ahead,
            requests: &mut r.requests,
            lost: &mut r.lost,
        };
        r.arb.on_packet(now, Line::Recovery, &hb, &mut fill);
        r.ahead.flush(&mut r.books);
        Ok(r)
    }

    /// Reads replies, sends (re)requests; returns true once every message below `until_seq`
    /// has been applied.
    pub fn poll(&mut self) -> Result<bool, String> {
        let now = realtime_ns();
        let n = self
            .batch
            .recv(self.sock.as_raw_fd())
            .map_err(|e| format!("rebuild: {e}"))?;
        for i in 0..n {
            let d = self.batch.get(i);
            let mut fill = Fill {
                books: &mut self.books,
                ahead: &mut self.ahead,
                requests: &mut self.requests,
                lost: &mut self.lost,
            };
            self.arb
                .on_packet(now, Line::Recovery, d.payload, &mut fill);
        }
        let mut fill = Fill {
            books: &mut self.books,
            ahead: &mut self.ahead,
            requests: &mut self.requests,
            lost: &mut self.lost,
        };
        self.arb.poll(now, &mut fill);
        self.ahead.flush(&mut self.books);
        for r in self.requests.drain(..) {
            let _ = self.sock.send_to(&r.to_bytes(), self.cfg.server);
            self.sent += 1;
        }
        if self.lost {
            return Err("the re-request server lost messages of the session for good".into());
        }
        Ok(self.arb.next_seq() >= self.until_seq)
    }
}
