//! The receive agent: one pinned thread that reads every line of every channel in batches,
//! runs each channel's arbiter, and publishes in-sequence messages (and gap events) to the
//! shared-memory ring and the journal. Its duty cycle is [`Agent::do_work`]: it returns how
//! many datagrams it handled, and the idle strategy runs when that is 0.
//!
//! The ring has one writer, so all channels of a process share this thread; a host that needs
//! more cores runs more feed-handler processes, each with its own ring.

use crate::arbiter::{ArbSink, Arbiter, Line};
use crate::config::{Config, Idle};
use crate::counters::{Breaker, ChannelValues, CountersWriter, counters_path};
use crate::journal::{JournalLimits, JournalWriter, journal_path};
use crate::moldudp64::{Packet, PacketKind, Request};
use crate::ring::layout::SLOT_WORDS;
use crate::ring::{JournalState, Record, RingWriter, ring_path};
use crate::sock::{self, RecvBatch, realtime_ns};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

struct ChannelState {
    id: u16,
    name: String,
    arb: Arbiter,
    socks: [Option<UdpSocket>; 3],
    rerequest: Option<SocketAddrV4>,
    breakers: [Breaker; 2],
    drops: [u64; 3],
    line_gaps: [u64; 2],
    send_errors: u64,
}

/// Where the receive thread's records and requests go; shared by every channel.
struct Outputs {
    ring: RingWriter,
    journal: Option<JournalWriter>,
    requests: Vec<Request>,
    io_error: Option<std::io::Error>,
    oversize: u64,
    latency: Option<hdrhistogram::Histogram<u64>>,
}

/// Publishes what one channel's arbiter delivers.
struct Publisher<'a> {
    channel: u16,
    out: &'a mut Outputs,
}

impl Publisher<'_> {
    #[inline]
    fn put_words(&mut self, words: &[u64; SLOT_WORDS]) {
        let p = self.out.ring.publish_words(words);
        // (after a failed append the journal takes nothing more: it stops at the cycle's end)
        if let Some(j) = self.out.journal.as_mut()
            && self.out.io_error.is_none()
            && let Err(e) = j.append_words(p, words)
        {
            self.out.io_error = Some(e);
        }
    }

    fn put(&mut self, rec: &Record) {
        self.put_words(&rec.to_words());
    }
}

impl ArbSink for Publisher<'_> {
    #[inline]
    fn message(&mut self, seq: u64, msg: &[u8], recv_ns: u64, _line: Line) {
        match Record::message_words(
            self.channel,
            seq,
            crate::itch::timestamp_of(msg).unwrap_or(0),
            recv_ns,
            msg,
        ) {
            Some(w) => {
                self.put_words(&w);
                if let Some(h) = self.out.latency.as_mut() {
                    h.saturating_record(realtime_ns().saturating_sub(recv_ns));
                }
            }
            None => {
                // Longer than any ITCH 5.0 message: published as a one-message gap so the
                // sequence stays whole and downstream knows something is missing.
                self.out.oversize += 1;
                self.put(&Record::gap(self.channel, seq, 1, recv_ns));
            }
        }
    }
    fn gap(&mut self, first: u64, count: u64) {
        self.put(&Record::gap(self.channel, first, count, realtime_ns()));
    }
    fn request(&mut self, req: Request) {
        self.out.requests.push(req);
    }
    fn end_of_session(&mut self, next_seq: u64) {
        self.put(&Record::end_of_session(
            self.channel,
            next_seq,
            realtime_ns(),
        ));
    }
}

/// The receive agent.
pub struct Agent {
    cfg: Config,
    channels: Vec<ChannelState>,
    out: Outputs,
    counters: CountersWriter,
    batch: RecvBatch,
    last_counters_ns: u64,
    last_poll_ns: u64,
    ring_journal_end: u64,
    fds: Vec<RawFd>,
    /// Warnings from start-up (clamped socket buffers and the like), for the log.
    pub warnings: Vec<String>,
}

impl core::fmt::Debug for Agent {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "Agent({} channels, ring {})",
            self.channels.len(),
            self.out.ring.path().display()
        )
    }
}

impl Agent {
    /// Opens the sockets, creates the ring, the journal and the counters file.
    pub fn new(cfg: Config) -> Result<Agent, String> {
        let path = ring_path(&cfg.ring);
        let mut ring = RingWriter::create(&path, cfg.ring_capacity).map_err(|e| e.to_string())?;
        let journal = if cfg.journal {
            let jp = journal_path(&path);
            let limits = JournalLimits {
                preallocate_bytes: cfg.journal_preallocate_mb << 20,
                max_bytes: cfg.journal_max_mb << 20,
                min_free_bytes: cfg.journal_min_free_mb.map(|mb| mb << 20),
            };
            Some(
                JournalWriter::create_with(&jp, ring.generation(), limits).map_err(|e| {
                    format!(
                        "journal {}: {e} (journal_preallocate_mb = {})",
                        jp.display(),
                        cfg.journal_preallocate_mb
                    )
                })?,
            )
        } else {
            ring.set_journal_state(JournalState::Off);
            None
        };
        let names: Vec<String> = cfg.channel.iter().map(|c| c.name.clone()).collect();
        let cp = counters_path(&path);
        let counters = CountersWriter::create(&cp, &names)
            .map_err(|e| format!("counters {}: {e}", cp.display()))?;
        let mut warnings = Vec::new();
        let mut channels = Vec::new();
        let mut fds = Vec::new();
        for (i, ch) in cfg.channel.iter().enumerate() {
            let open = |l| {
                sock::multicast_receiver(l, cfg.rcvbuf_bytes).map_err(|e| {
                    let hint = match e.raw_os_error() {
                        Some(libc::ENODEV) | Some(libc::EADDRNOTAVAIL) => format!(
                            " (interface {} must be an address of this host whose interface \
                             carries multicast; on loopback use 127.0.0.1, see \
                             docs/deployment.md)",
                            l.interface
                        ),
                        Some(libc::ENOBUFS) => {
                            " (too many memberships: net.ipv4.igmp_max_memberships)".into()
                        }
                        _ => String::new(),
                    };
                    format!(
                        "channel {}: cannot join {}:{}: {e}{hint}",
                        ch.name, l.group, l.port
                    )
                })
            };
            let (a, wa) = open(&ch.line_a)?;
            warnings.extend(wa);
            let b = match &ch.line_b {
                Some(l) => {
                    let (b, wb) = open(l)?;
                    warnings.extend(wb);
                    Some(b)
                }
                None => None,
            };
            let rq = match ch.rerequest {
                Some(_) => {
                    let (s, w) = sock::unicast_socket(Ipv4Addr::UNSPECIFIED, cfg.rcvbuf_bytes)
                        .map_err(|e| format!("channel {}: re-request socket: {e}", ch.name))?;
                    warnings.extend(w.map(|w| format!("channel {}: {w}", ch.name)));
                    Some(s)
                }
                None => None,
            };
            for s in [Some(&a), b.as_ref(), rq.as_ref()].into_iter().flatten() {
                fds.push(s.as_raw_fd());
            }
            channels.push(ChannelState {
                id: ch.id.unwrap_or(i as u16),
                name: ch.name.clone(),
                arb: Arbiter::new(ch.arbiter()),
                socks: [Some(a), b, rq],
                rerequest: ch.rerequest,
                breakers: [
                    Breaker::new(ch.breaker_window_s, ch.breaker_gap_rate),
                    Breaker::new(ch.breaker_window_s, ch.breaker_gap_rate),
                ],
                drops: [0; 3],
                line_gaps: [0; 2],
                send_errors: 0,
            });
        }
        let cfg_latency = cfg.measure_latency;
        let out = Outputs {
            ring,
            journal,
            requests: Vec::with_capacity(256),
            io_error: None,
            oversize: 0,
            latency: cfg_latency.then(|| {
                hdrhistogram::Histogram::new_with_bounds(1, 60_000_000_000, 3)
                    .expect("valid bounds")
            }),
        };
        Ok(Agent {
            batch: RecvBatch::new(cfg.batch),
            cfg,
            channels,
            out,
            counters,
            last_counters_ns: 0,
            last_poll_ns: 0,
            ring_journal_end: 0,
            fds,
            warnings,
        })
    }

    /// Wire-to-ring latency of every message published, ns (with `measure_latency`).
    pub fn latency(&self) -> Option<&hdrhistogram::Histogram<u64>> {
        self.out.latency.as_ref()
    }

    /// Channel counters: (name, arbiter counters, socket drops per line).
    pub fn channel_counters(&self) -> Vec<(String, crate::arbiter::ArbCounters, [u64; 3])> {
        self.channels
            .iter()
            .map(|c| (c.name.clone(), *c.arb.counters(), c.drops))
            .collect()
    }

    /// The ring's file.
    pub fn ring_path(&self) -> &std::path::Path {
        self.out.ring.path()
    }

    /// One duty cycle: reads every socket once, runs the timers, flushes the journal; returns
    /// the number of datagrams handled.
    pub fn do_work(&mut self) -> Result<usize, String> {
        let mut work = 0;
        for c in 0..self.channels.len() {
            for li in 0..3 {
                let Some(fd) = self.channels[c].socks[li].as_ref().map(|s| s.as_raw_fd()) else {
                    continue;
                };
                let n = self
                    .batch
                    .recv(fd)
                    .map_err(|e| format!("channel {}: receive: {e}", self.channels[c].name))?;
                work += n;
                let line = Line::ALL[li];
                for i in 0..n {
                    let d = self.batch.get(i);
                    let recv_ns = d.kernel_ns.unwrap_or_else(realtime_ns);
                    let ch = &mut self.channels[c];
                    if let Some(dropped) = d.dropped {
                        ch.drops[li] = dropped as u64;
                    }
                    if li < 2
                        && let Ok(p) = Packet::parse(d.payload)
                        && p.kind() == PacketKind::Messages
                        && ch.breakers[li].on_packet(recv_ns, p.sequence(), p.next_sequence())
                    {
                        ch.line_gaps[li] += 1;
                    }
                    let mut publisher = Publisher {
                        channel: ch.id,
                        out: &mut self.out,
                    };
                    ch.arb.on_packet(recv_ns, line, d.payload, &mut publisher);
                }
            }
        }
        let now = realtime_ns();
        // Timers run when every socket is drained (so a copy still queued on the other line is
        // not re-requested for nothing), or at least every millisecond under load.
        if work > 0 && now < self.last_poll_ns + 1_000_000 {
            return self.finish_cycle(now, work);
        }
        self.last_poll_ns = now;
        for ch in &mut self.channels {
            let mut publisher = Publisher {
                channel: ch.id,
                out: &mut self.out,
            };
            if work == 0 {
                ch.arb.poll(now, &mut publisher);
            } else {
                ch.arb.poll_busy(now, &mut publisher);
            }
            if !self.out.requests.is_empty() {
                if let (Some(sock), Some(to)) = (&ch.socks[2], ch.rerequest) {
                    for r in self.out.requests.drain(..) {
                        if sock.send_to(&r.to_bytes(), to).is_err() {
                            ch.send_errors += 1;
                        }
                    }
                }
                self.out.requests.clear();
            }
        }
        self.finish_cycle(now, work)
    }

    fn finish_cycle(&mut self, now: u64, work: usize) -> Result<usize, String> {
        // Journal appends are copies into a mapping of the file: what was appended this cycle
        // is readable now, so the journal end is published every cycle.
        if let Some(j) = &mut self.out.journal {
            let n = j
                .flush()
                .map_err(|e| format!("journal write failed: {e}"))?;
            if n != self.ring_journal_end {
                self.out.ring.set_journal_end(n);
                self.ring_journal_end = n;
            }
        }
        if let Some(e) = self.out.io_error.take() {
            self.stop_journal(&e);
        }
        if now >= self.last_counters_ns + 1_000_000 {
            self.last_counters_ns = now;
            self.store_counters(now);
        }
        Ok(work)
    }

    /// The journal cannot take more (full, or a write failed): it stops where it is, the ring
    /// header says so, and the feed goes on without it. Readers the ring laps from now on
    /// lose records, and are told ([`crate::ring::RingError::Lost`]), instead of every reader
    /// losing the feed.
    fn stop_journal(&mut self, e: &std::io::Error) {
        let Some(j) = self.out.journal.take() else {
            return;
        };
        let end = j.written();
        self.out.ring.set_journal_end(end);
        self.ring_journal_end = end;
        self.out.ring.set_journal_state(JournalState::Stopped);
        eprintln!(
            "feed-handler: journal {} stopped at record {end}: {e}; the ring goes on without it \
             (a reader more than the ring behind now loses records)",
            journal_path(self.out.ring.path()).display()
        );
    }

    fn store_counters(&mut self, now: u64) {
        // (a stopped journal keeps the end it stopped at)
        let journal_end = self
            .out
            .journal
            .as_ref()
            .map_or(self.ring_journal_end, |j| j.written());
        for (i, ch) in self.channels.iter_mut().enumerate() {
            let c = ch.arb.counters();
            let mut v = ChannelValues {
                name: ch.name.clone(),
                channel: [
                    ch.arb.next_seq(),
                    c.delivered,
                    c.holes,
                    c.requests,
                    c.recovered,
                    c.unrecovered,
                    c.gaps,
                    ch.arb.held() as u64,
                    ch.arb.outstanding(),
                    self.out.ring.head(),
                    journal_end,
                ],
                lines: [[0; 13]; 3],
            };
            for li in 0..3 {
                let l = &c.lines[li];
                let (gaps, healthy, ppm) = if li < 2 {
                    ch.breakers[li].tick(now);
                    (
                        ch.line_gaps[li],
                        ch.breakers[li].healthy() as u64,
                        ch.breakers[li].rate_ppm(now),
                    )
                } else {
                    (0, 1, 0)
                };
                v.lines[li] = [
                    l.packets,
                    l.messages,
                    l.duplicates,
                    l.out_of_order,
                    l.window_full,
                    l.malformed,
                    l.wrong_session,
                    l.heartbeats,
                    l.delivered,
                    gaps,
                    ch.drops[li],
                    healthy,
                    ppm,
                ];
            }
            self.counters.store(i, &v, now);
        }
    }

    /// Runs duty cycles until `stop` is set, idling as configured; stores the counters a last
    /// time before returning.
    pub fn run(&mut self, stop: &AtomicBool) -> Result<(), String> {
        while !stop.load(Ordering::Relaxed) {
            let n = self.do_work()?;
            // readers asleep on the ring's doorbell (the book when idle) wake for this batch
            self.out.ring.wake_readers();
            if n == 0 {
                match self.cfg.idle {
                    Idle::BusySpin => std::hint::spin_loop(),
                    Idle::Yield => std::thread::yield_now(),
                    Idle::Park => {
                        // the arbiter's timers need the short park; a quiet feed does not
                        let timers = self.channels.iter().any(|c| c.arb.timers_pending());
                        let us = if timers {
                            self.cfg.park_us
                        } else {
                            self.cfg.park_quiet_us.max(self.cfg.park_us)
                        };
                        sock::wait_readable(&self.fds, us)
                    }
                }
            }
        }
        if let Some(j) = &mut self.out.journal {
            let n = j
                .flush()
                .map_err(|e| format!("journal write failed: {e}"))?;
            self.out.ring.set_journal_end(n);
        }
        self.store_counters(realtime_ns());
        Ok(())
    }
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// Makes SIGINT and SIGTERM set the returned flag instead of killing the process, so a
/// command can stop its threads and clean up (every long-running command uses this).
pub fn stop_on_signals() -> &'static AtomicBool {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    &STOP
}

/// For the live views (`stat --watch SECS`): waits `secs` (at least 1) in 100 ms steps; false
/// as soon as `stop` is set (Ctrl-C), true when the time is up.
pub fn wait_unless_stopped(secs: u64, stop: &AtomicBool) -> bool {
    for _ in 0..secs.max(1) * 10 {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    !stop.load(Ordering::Relaxed)
}

/// For commands that print to a pipe (`stat`, `tail`, ...): a reader that closes the pipe early
/// (`| head`) ends the process quietly, as for any Unix filter, instead of a panic in `println!`.
/// Not for processes with TCP clients, where a closed peer must not kill the process.
pub fn quiet_on_closed_pipe() {
    // SAFETY: restoring the default disposition of SIGPIPE has no preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// `feed-handler run`: starts the agent on its own (pinned) thread and runs until SIGINT or
/// SIGTERM. Prints where the ring, the journal and the counters are.
pub fn run(cfg: Config) -> Result<(), String> {
    let signalled = stop_on_signals();
    let core = cfg.core;
    // files this start creates are removed again if it fails (a bad interface, say)
    let rp = crate::ring::ring_path(&cfg.ring);
    let files = [rp.clone(), journal_path(&rp), counters_path(&rp)];
    let existed: Vec<bool> = files.iter().map(|f| f.exists()).collect();
    let mut agent = match Agent::new(cfg) {
        Ok(a) => a,
        Err(e) => {
            for (f, was) in files.iter().zip(existed) {
                if !was {
                    let _ = std::fs::remove_file(f);
                }
            }
            return Err(e);
        }
    };
    for w in &agent.warnings {
        eprintln!("feed-handler: warning: {w}");
    }
    let rp = agent.ring_path().to_path_buf();
    eprintln!("feed-handler: ring {}", rp.display());
    eprintln!("feed-handler: journal {}", journal_path(&rp).display());
    eprintln!(
        "feed-handler: counters {} (read with `feed-handler stat`)",
        counters_path(&rp).display()
    );
    for ch in &agent.cfg.channel {
        eprintln!(
            "feed-handler: channel {}: line A {}:{}{}{}",
            ch.name,
            ch.line_a.group,
            ch.line_a.port,
            ch.line_b
                .map(|b| format!(", line B {}:{}", b.group, b.port))
                .unwrap_or_default(),
            ch.rerequest
                .map(|r| format!(", re-requests to {r}"))
                .unwrap_or_else(|| ", no re-request server".into())
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let t = std::thread::Builder::new()
        .name("feed-rx".into())
        .spawn(move || {
            if let Some(c) = core {
                if sock::pin_current_thread(c) {
                    eprintln!("feed-handler: receive thread pinned to CPU {c}");
                } else {
                    eprintln!("feed-handler: warning: could not pin the receive thread to CPU {c}");
                }
            }
            agent.run(&stop2).map(|_| agent)
        })
        .map_err(|e| e.to_string())?;
    while !signalled.load(Ordering::Relaxed) && !t.is_finished() {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    let agent = t
        .join()
        .map_err(|_| "the receive thread panicked".to_string())??;
    let c: Vec<_> = agent
        .channels
        .iter()
        .map(|ch| (ch.name.clone(), *ch.arb.counters()))
        .collect();
    for (name, c) in c {
        eprintln!(
            "feed-handler: channel {name}: {} messages delivered, {} recovered, {} lost in {} gaps, {} re-requests",
            c.delivered, c.recovered, c.unrecovered, c.gaps, c.requests
        );
    }
    Ok(())
}
