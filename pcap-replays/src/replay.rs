//! `pcap-replay play`: the exchange simulator. Replays a capture (pcap, pcapng or BinaryFILE)
//! onto multicast lines A and B, at the capture's pace, N times it, a fixed message rate or top
//! speed, with per-line faults, and serves MoldUDP64 re-requests for everything it has sent.
//!
//! The capture's MoldUDP64 packets are taken once each (a capture of both lines holds every
//! packet twice; the first copy of each sequence wins), so the replay's own fault injection
//! decides what each line loses. A BinaryFILE is packed into MoldUDP64 packets as
//! `pcap-replay generate` does.

use crate::lines::{FrameOut, LineSpec, LineStats, LinesConfig, LinesWriter};
use crate::packetize::{OutPacket, Packetizer, PacketizerConfig};
use crate::passes;
use feed_handler::capture::{self, Capture, Item};
use feed_handler::moldudp64::{self, Packet, PacketKind, PacketWriter, Request, Session};
use std::net::{SocketAddrV4, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// One packet to replay.
#[derive(Debug, Clone)]
pub struct ReplayPacket {
    /// Capture time (ns; only differences matter).
    pub ts_ns: u64,
    /// Sequence of its first message (or the next expected for heartbeat/EOS).
    pub seq: u64,
    /// Messages in it.
    pub messages: u16,
    /// The MoldUDP64 payload.
    pub payload: Vec<u8>,
}

/// Every message of the session by sequence number, for the re-request server.
#[derive(Debug, Default)]
pub struct MessageStore {
    /// Session.
    pub session: Option<Session>,
    /// Serve sequence numbers past the end as the same messages again (a looping replay),
    /// their clock moved on by this much a pass ([`crate::passes`]); see
    /// [`MessageStore::set_looped`].
    looped: Option<u64>,
    first_seq: u64,
    bytes: Vec<u8>,
    /// Offsets into `bytes`; message `first_seq + i` is `bytes[offsets[i]..offsets[i + 1]]`.
    offsets: Vec<u64>,
}

impl MessageStore {
    fn push(&mut self, seq: u64, msg: &[u8]) {
        if self.offsets.is_empty() {
            self.first_seq = seq;
            self.offsets.push(0);
        }
        if seq != self.first_seq + self.offsets.len() as u64 - 1 {
            return; // a hole in the capture itself: those messages cannot be served
        }
        self.bytes.extend_from_slice(msg);
        self.offsets.push(self.bytes.len() as u64);
    }

    /// The store of the messages in `packets` (data packets, in order).
    pub fn from_packets(packets: &[ReplayPacket]) -> Self {
        let mut s = MessageStore::default();
        for p in packets {
            if let Ok(pk) = Packet::parse(&p.payload) {
                s.session.get_or_insert(*pk.session());
                for (seq, m) in pk.messages() {
                    s.push(seq, m);
                }
            }
        }
        s
    }

    /// Serve sequence numbers past the end as the passes of a looped replay do
    /// ([`play_looped`]): the same messages again, each pass's clock moved on.
    pub fn set_looped(&mut self, looped: bool) {
        self.looped = looped.then(|| {
            let msgs = (0..self.len()).filter_map(|i| self.get_pass(self.first_seq + i));
            passes::span(msgs.map(|(_, m)| m)).map_or(0, |(a, b)| passes::pass_ns(a, b))
        });
    }

    /// Message `seq` of the capture (of the pass it is in), and that pass.
    fn get_pass(&self, seq: u64) -> Option<(u64, &[u8])> {
        let mut i = seq.checked_sub(self.first_seq)?;
        let mut pass = 0;
        if self.looped.is_some() && !self.is_empty() {
            // a looping replay numbers each pass after the last: pass k is message i + k * len
            pass = i / self.len();
            i %= self.len();
        }
        let i = i as usize;
        let (a, b) = (*self.offsets.get(i)?, *self.offsets.get(i + 1)?);
        Some((pass, &self.bytes[a as usize..b as usize]))
    }

    /// Message `seq`, if the capture has it: in a looped replay's later passes, with its clock
    /// moved on as that pass sent it.
    pub fn get(&self, seq: u64) -> Option<std::borrow::Cow<'_, [u8]>> {
        use std::borrow::Cow;
        let (pass, m) = self.get_pass(seq)?;
        match self.looped {
            Some(pass_ns) if pass > 0 && pass_ns > 0 => {
                let mut m = m.to_vec();
                passes::shift_ts(&mut m, pass.wrapping_mul(pass_ns));
                Some(Cow::Owned(m))
            }
            _ => Some(Cow::Borrowed(m)),
        }
    }

    /// Messages held.
    pub fn len(&self) -> u64 {
        self.offsets.len().saturating_sub(1) as u64
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Loads a capture: its packets in order (each sequence once) and the message store.
pub fn load(
    path: &Path,
    pk: PacketizerConfig,
) -> Result<(Vec<ReplayPacket>, MessageStore), String> {
    let cap = capture::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut packets = Vec::new();
    let mut store = MessageStore::default();
    match cap {
        Capture::BinaryFile(mut r) => {
            store.session = Some(pk.session);
            let mut packer = Packetizer::new(pk);
            let mut push = |p: OutPacket<'_>| {
                packets.push(ReplayPacket {
                    ts_ns: p.ts_ns,
                    seq: p.seq,
                    messages: p.messages,
                    payload: p.payload.to_vec(),
                });
            };
            let mut last_ts = 0;
            while let Some((seq, msg)) = r
                .next_message()
                .map_err(|e| format!("{}: {e}", path.display()))?
            {
                store.push(seq, msg);
                let ts = feed_handler::itch::timestamp_of(msg)
                    .unwrap_or(last_ts)
                    .max(last_ts);
                last_ts = ts;
                packer.push(ts, msg, &mut push)?;
            }
            packer.finish(3, &mut push);
        }
        mut cap => {
            let mut next = 0u64;
            let mut eos_seen = 0;
            while let Some(item) = cap
                .next_item()
                .map_err(|e| format!("{}: {e}", path.display()))?
            {
                let Item::Frame(rec) = item else { continue };
                let Ok(Some(d)) = capture::udp_in_frame(rec.linktype, rec.data) else {
                    continue;
                };
                let Ok(p) = Packet::parse(d.payload) else {
                    continue;
                };
                if store.session.is_none() {
                    store.session = Some(*p.session());
                }
                if Some(*p.session()) != store.session {
                    continue;
                }
                match p.kind() {
                    PacketKind::Messages => {
                        if p.next_sequence() <= next {
                            continue; // the other line's copy
                        }
                        for (seq, m) in p.messages() {
                            store.push(seq, m);
                        }
                        next = p.next_sequence();
                    }
                    PacketKind::Heartbeat => continue,
                    PacketKind::EndOfSession => {
                        eos_seen += 1;
                        if eos_seen > 3 {
                            continue;
                        }
                    }
                }
                packets.push(ReplayPacket {
                    ts_ns: rec.ts_ns,
                    seq: p.sequence(),
                    messages: p.message_count(),
                    payload: d.payload.to_vec(),
                });
            }
        }
    }
    if packets.is_empty() {
        return Err(format!(
            "{}: no MoldUDP64 packets to replay",
            path.display()
        ));
    }
    Ok((packets, store))
}

/// How fast to replay.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// The capture's timing divided by this factor (1.0 = as recorded).
    Speed(f64),
    /// A fixed message rate, messages per second.
    Rate(u64),
    /// As fast as the sockets take them.
    Top,
}

/// Re-request server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on.
    pub addr: SocketAddrV4,
    /// While this file exists, requests are ignored (the server is "down").
    pub off_file: Option<PathBuf>,
    /// Wait this long before answering.
    pub delay: Duration,
    /// Largest reply payload, bytes.
    pub max_payload: usize,
}

/// What the server did.
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Requests received.
    pub requests: AtomicU64,
    /// Requests ignored (server off, wrong session, malformed).
    pub ignored: AtomicU64,
    /// Messages sent in replies.
    pub messages: AtomicU64,
}

/// Runs the re-request server until `stop`: answers each request with one packet holding the
/// requested messages that fit, among those already sent (`sent_upto`).
pub fn serve_rerequests(
    sock: UdpSocket,
    cfg: ServerConfig,
    store: Arc<MessageStore>,
    sent_upto: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    stats: Arc<ServerStats>,
) {
    let _ = sock.set_read_timeout(Some(Duration::from_millis(20)));
    let mut buf = [0u8; 2048];
    let Some(session) = store.session else { return };
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            continue;
        };
        stats.requests.fetch_add(1, Ordering::Relaxed);
        let Ok(req) = Request::parse(&buf[..n]) else {
            stats.ignored.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        if req.session != session
            || req.sequence == 0
            || cfg.off_file.as_ref().is_some_and(|f| f.exists())
        {
            stats.ignored.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        if !cfg.delay.is_zero() {
            std::thread::sleep(cfg.delay);
        }
        let upto = sent_upto.load(Ordering::Acquire);
        let mut w = PacketWriter::new(session, req.sequence, cfg.max_payload);
        let end = req.sequence.saturating_add(req.count as u64).min(upto);
        let mut seq = req.sequence;
        while seq < end {
            let Some(m) = store.get(seq) else { break };
            if !w.push(&m) {
                break;
            }
            seq += 1;
        }
        if w.is_empty() {
            continue; // nothing available: send nothing, as Nasdaq's server does
        }
        stats.messages.fetch_add(w.len() as u64, Ordering::Relaxed);
        let _ = sock.send_to(w.finish(), from);
    }
}

/// Receive buffer of the re-request server's socket, bytes (the kernel clamps it to
/// net.core.rmem_max).
pub const REQUEST_BUFFER: usize = 8 << 20;

/// The exchange side in one process: the re-request server on its own thread, serving what
/// [`Exchange::play`] has sent.
#[derive(Debug)]
pub struct Exchange {
    store: Arc<MessageStore>,
    sent: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    stats: Arc<ServerStats>,
    server: Option<std::thread::JoinHandle<()>>,
}

impl Exchange {
    /// Starts the re-request server on `server.addr` (no server with `None`).
    pub fn start(store: MessageStore, server: Option<ServerConfig>) -> std::io::Result<Self> {
        let store = Arc::new(store);
        let (sent, stop, stats) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
            Arc::new(ServerStats::default()),
        );
        let server = match server {
            Some(cfg) => {
                let sock = UdpSocket::bind(cfg.addr)?;
                // a feed handler catching up sends a burst of hundreds of requests: the
                // default receive buffer (~208 KiB) dropped some, which it then gave up on
                let _ = socket2::SockRef::from(&sock).set_recv_buffer_size(REQUEST_BUFFER);
                let (a, b, c, d) = (store.clone(), sent.clone(), stop.clone(), stats.clone());
                Some(std::thread::spawn(move || {
                    serve_rerequests(sock, cfg, a, b, c, d)
                }))
            }
            None => None,
        };
        Ok(Exchange {
            store,
            sent,
            stop,
            stats,
            server,
        })
    }

    /// A server configuration at `addr` with no delay and Nasdaq-sized replies.
    pub fn server_at(addr: SocketAddrV4) -> ServerConfig {
        ServerConfig {
            addr,
            off_file: None,
            delay: Duration::ZERO,
            max_payload: REPLY_PAYLOAD,
        }
    }

    /// Plays `passes` passes of `packets` (see [`play_looped`]) on the sockets given, one per
    /// line; `stop` ends it early.
    pub fn play_on(
        &self,
        socks: Vec<UdpSocket>,
        packets: &[ReplayPacket],
        pace: Pace,
        lines: LinesConfig,
        passes: u64,
        stop: &AtomicBool,
    ) -> std::io::Result<(NetOut, Vec<LineStats>)> {
        self.play_on_with_slack(socks, packets, pace, lines, passes, stop, Duration::ZERO)
    }

    /// [`Exchange::play_on`], sending a frame up to `slack` before it is due instead of spinning
    /// for it: pacing within `slack`, for far less CPU (see [`NetOut::with_slack`]).
    #[allow(clippy::too_many_arguments)]
    pub fn play_on_with_slack(
        &self,
        socks: Vec<UdpSocket>,
        packets: &[ReplayPacket],
        pace: Pace,
        lines: LinesConfig,
        passes: u64,
        stop: &AtomicBool,
        slack: Duration,
    ) -> std::io::Result<(NetOut, Vec<LineStats>)> {
        play_looped(
            packets,
            pace,
            lines,
            NetOut::new(socks, speed_of(pace)).with_slack(slack),
            &self.sent,
            stop,
            passes,
        )
    }

    /// Plays `packets` once on loopback multicast (127.0.0.1).
    pub fn play(
        &self,
        packets: &[ReplayPacket],
        pace: Pace,
        lines: LinesConfig,
    ) -> std::io::Result<(NetOut, Vec<LineStats>)> {
        let socks = (0..lines.lines.len())
            .map(|_| {
                feed_handler::sock::multicast_sender(
                    std::net::Ipv4Addr::LOCALHOST,
                    SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 0),
                )
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        self.play_on(socks, packets, pace, lines, 1, &AtomicBool::new(false))
    }

    /// The message store.
    pub fn store(&self) -> &MessageStore {
        &self.store
    }

    /// What the server did so far.
    pub fn stats(&self) -> &ServerStats {
        &self.stats
    }

    /// Stops the server and returns its figures.
    pub fn stop(mut self) -> Arc<ServerStats> {
        self.halt();
        self.stats.clone()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.server.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Sends frames on UDP sockets, one per line, paced to wall time.
#[derive(Debug)]
pub struct NetOut {
    socks: Vec<UdpSocket>,
    start: Option<(Instant, u64)>,
    speed: f64,
    slack: Duration,
    sent: u64,
    /// Send errors (a full socket buffer, say).
    pub errors: u64,
}

impl NetOut {
    /// One socket per line; `speed` divides the capture's time (0 = no waiting).
    pub fn new(socks: Vec<UdpSocket>, speed: f64) -> Self {
        NetOut {
            socks,
            start: None,
            speed,
            slack: Duration::ZERO,
            sent: 0,
            errors: 0,
        }
    }

    /// Sends a frame as soon as it is due within `slack` (0: spin for the exact time, which
    /// costs a core at tens of thousands of frames per second).
    pub fn with_slack(mut self, slack: Duration) -> Self {
        self.slack = slack;
        self
    }
    /// Frames sent.
    pub fn sent(&self) -> u64 {
        self.sent
    }
}

impl FrameOut for NetOut {
    fn frame(&mut self, ts_ns: u64, line: &LineSpec, payload: &[u8]) -> std::io::Result<()> {
        if self.speed > 0.0 {
            let (t0, ts0) = *self.start.get_or_insert((Instant::now(), ts_ns));
            let due =
                t0 + Duration::from_nanos(((ts_ns.saturating_sub(ts0)) as f64 / self.speed) as u64);
            loop {
                let now = Instant::now();
                if now + self.slack >= due {
                    break;
                }
                let left = due - now;
                if left > Duration::from_micros(200) {
                    std::thread::sleep(left - Duration::from_micros(100));
                } else {
                    std::hint::spin_loop();
                }
            }
        }
        let idx = if line.name == "A" { 0 } else { 1 }.min(self.socks.len() - 1);
        match self.socks[idx].send_to(payload, line.dst) {
            Ok(_) => self.sent += 1,
            Err(_) => self.errors += 1,
        }
        Ok(())
    }
}

/// Replays `packets` on the lines: re-stamps them for `pace`, updates `sent_upto` as each
/// packet goes (so the server can serve it), and returns each line's figures.
pub fn play(
    packets: &[ReplayPacket],
    pace: Pace,
    lines: LinesConfig,
    out: NetOut,
    sent_upto: &AtomicU64,
    stop: &AtomicBool,
) -> std::io::Result<(NetOut, Vec<LineStats>)> {
    play_looped(packets, pace, lines, out, sent_upto, stop, 1)
}

/// Like [`play`], `passes` times over (0: until `stop`). Each pass after the first continues
/// the sequence numbers (pass k adds k times the session's message count) and the clock, the
/// pacing's and ITCH's (each message's timestamp moves on by the session's span a pass,
/// [`crate::passes`]), so a feed handler sees one long session; end-of-session packets go out
/// only after the last pass. The rest of the ITCH content repeats, order references included.
pub fn play_looped(
    packets: &[ReplayPacket],
    pace: Pace,
    lines: LinesConfig,
    out: NetOut,
    sent_upto: &AtomicU64,
    stop: &AtomicBool,
    passes: u64,
) -> std::io::Result<(NetOut, Vec<LineStats>)> {
    let mut lines = lines;
    if pace == Pace::Top {
        // No clock at top speed: B goes right after A, packet by packet.
        for l in &mut lines.lines {
            l.delay_ns = 0;
        }
    }
    let mut w = LinesWriter::new(out, lines)?;
    let t0 = packets.first().map_or(0, |p| p.ts_ns);
    let t_end = packets.last().map_or(0, |p| p.ts_ns);
    let span_msgs: u64 = packets.iter().map(|p| p.messages as u64).sum();
    // the session's span moves each later pass's clock on; one pass has none to move, and the
    // scan of every message (about 90 ms for 10M) would delay its first packet
    let pass_ns = if passes == 1 {
        0
    } else {
        passes::span(
            packets
                .iter()
                .filter_map(|p| Packet::parse(&p.payload).ok())
                .flat_map(|pk| pk.messages().map(|(_, m)| m).collect::<Vec<_>>()),
        )
        .map_or(0, |(a, b)| passes::pass_ns(a, b))
    };
    let mut msgs_before = 0u64;
    let mut scratch = Vec::new();
    let mut pass = 0u64;
    'passes: while passes == 0 || pass < passes {
        let last_pass = passes != 0 && pass + 1 == passes;
        for p in packets {
            if stop.load(Ordering::Relaxed) {
                break 'passes;
            }
            let eos = p.messages == 0 && p.payload.get(18..20) == Some(&[0xff, 0xff][..]);
            if eos && !last_pass {
                continue;
            }
            let ts = match pace {
                // (a pass of the pace's clock as long as one of ITCH's: the two keep together)
                Pace::Speed(_) => {
                    pass * (t_end - t0 + 1_000_000).max(pass_ns) + p.ts_ns - t0.min(p.ts_ns)
                }
                Pace::Rate(r) => msgs_before * 1_000_000_000 / r.max(1),
                Pace::Top => msgs_before,
            };
            msgs_before += p.messages as u64;
            let shift = pass * span_msgs;
            let payload: &[u8] = if shift == 0 {
                &p.payload
            } else {
                scratch.clear();
                scratch.extend_from_slice(&p.payload);
                passes::rewrite(&mut scratch, shift, pass.wrapping_mul(pass_ns));
                &scratch
            };
            w.send(OutPacket {
                ts_ns: ts,
                seq: p.seq + shift,
                messages: p.messages,
                payload,
            })?;
            if p.messages > 0 {
                sent_upto.fetch_max(p.seq + shift + p.messages as u64, Ordering::Release);
            }
        }
        pass += 1;
    }
    w.finish()
}

/// The pace's speed factor for [`NetOut`].
pub fn speed_of(pace: Pace) -> f64 {
    match pace {
        Pace::Speed(s) => s,
        Pace::Rate(_) => 1.0,
        Pace::Top => 0.0,
    }
}

/// `moldudp64::DEFAULT_MAX_PAYLOAD`, for the server's replies.
pub const REPLY_PAYLOAD: usize = moldudp64::DEFAULT_MAX_PAYLOAD;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_serves_by_sequence() {
        let mut s = MessageStore::default();
        s.push(5, b"five");
        s.push(6, b"six");
        s.push(8, b"eight"); // a hole in the capture: refused
        let get = |s: &MessageStore, seq| s.get(seq).map(|m| m.into_owned());
        assert_eq!(
            (get(&s, 5), get(&s, 6), get(&s, 7), get(&s, 4), s.len()),
            (Some(b"five".to_vec()), Some(b"six".to_vec()), None, None, 2)
        );
    }

    #[test]
    fn a_looped_store_serves_later_passes_with_their_clock_moved_on() {
        let open = 34_200_000_000_000u64;
        let msg = |t: u8, ts: u64| {
            let mut m = vec![t; 19];
            m[5..11].copy_from_slice(&ts.to_be_bytes()[2..]);
            m
        };
        let mut s = MessageStore::default();
        s.push(1, &msg(b'S', open));
        s.push(2, &msg(b'D', open + 2_500_000_000));
        s.set_looped(true);
        let ts = |s: &MessageStore, seq| s.get(seq).and_then(|m| passes::itch_ts(&m));
        // the span, 2.5 s, rounds up to 3 s a pass
        assert_eq!(
            [ts(&s, 1), ts(&s, 2), ts(&s, 3), ts(&s, 4), ts(&s, 6)],
            [
                Some(open),
                Some(open + 2_500_000_000),
                Some(open + 3_000_000_000),
                Some(open + 5_500_000_000),
                Some(open + 8_500_000_000)
            ]
        );
        assert_eq!(s.get(5).map(|m| m[0]), Some(b'S'));
        // not looped: nothing past the end
        s.set_looped(false);
        assert_eq!(ts(&s, 3), None);
    }
}
