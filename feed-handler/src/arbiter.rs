//! A/B arbitration and gap recovery for one MoldUDP64 channel, sans I/O.
//!
//! Packets from line A, line B and the re-request server (`Line::Recovery`) go in through
//! [`Arbiter::on_packet`] with their receive time; [`Arbiter::poll`] runs the timers. Out come, in
//! sequence order and each exactly once, the messages ([`ArbSink::message`]), explicit gaps
//! ([`ArbSink::gap`]) when recovery fails, and MoldUDP64 requests to send
//! ([`ArbSink::request`]). Time is only what the caller passes in, so tests step it by hand.
//!
//! - The first copy of a sequence number wins; later copies are counted as duplicates.
//! - A packet ahead of the next expected sequence waits in a bounded window of preallocated
//!   slots. When the window is full the packet is dropped and counted; it is requested again
//!   later like any other missing message. Nothing here allocates after construction.
//! - A hole at the head waits `line_wait_ns` for the other line, then its missing ranges are
//!   requested (at most `max_request` messages a request, at most `max_outstanding` messages
//!   outstanding). A reply that covers only part of a request (the server sends what fits in one
//!   packet) is followed at once by a request for the rest. A request unanswered for
//!   `request_timeout_ns` is sent again, `max_retries` times; then its range is given up: a
//!   [`ArbSink::gap`] with the exact range, and delivery goes on after it.
//! - A heartbeat or end-of-session packet announces the next sequence: a hole before it is
//!   detected even when no later data arrives.
//! - Packets of another session are counted and ignored.

use crate::moldudp64::{Packet, PacketKind, Request, Session};

/// Where a packet came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line {
    /// Line A (multicast).
    A = 0,
    /// Line B (multicast).
    B = 1,
    /// A unicast reply of the re-request server.
    Recovery = 2,
}

impl Line {
    /// All lines, in index order.
    pub const ALL: [Line; 3] = [Line::A, Line::B, Line::Recovery];
    /// Short name.
    pub fn name(self) -> &'static str {
        match self {
            Line::A => "a",
            Line::B => "b",
            Line::Recovery => "recovery",
        }
    }
}

/// What the arbiter produces.
pub trait ArbSink {
    /// The message of sequence `seq`, received at `recv_ns` on `line`. Called in sequence order.
    fn message(&mut self, seq: u64, msg: &[u8], recv_ns: u64, line: Line);
    /// Messages `first .. first + count` are lost for good (recovery failed or is off).
    fn gap(&mut self, first: u64, count: u64);
    /// Send this request to the re-request server.
    fn request(&mut self, req: Request);
    /// The session ended and every message of it has been delivered (or declared lost).
    fn end_of_session(&mut self, next_seq: u64) {
        let _ = next_seq;
    }
}

/// Tuning; every field documents its default.
#[derive(Debug, Clone)]
pub struct ArbConfig {
    /// The expected session; `None` learns it from the first packet.
    pub session: Option<Session>,
    /// The first sequence to deliver; `None` starts at the first packet seen (a late join).
    pub start_seq: Option<u64>,
    /// Out-of-order packets held (default 8192; 12 MB of 1,500-byte slots).
    pub window_slots: usize,
    /// Largest packet held, bytes (default 1500; larger packets are only taken in order).
    pub max_payload: usize,
    /// How long a hole may wait for the other line before it is requested (default 200 µs).
    pub line_wait_ns: u64,
    /// Whether to send re-requests at all (default true). When false, a hole that outlives
    /// `line_wait_ns` is a gap.
    pub recovery: bool,
    /// How long to wait for a reply before asking again (default 50 ms).
    pub request_timeout_ns: u64,
    /// Requests for a range before it is given up (default 3 retries after the first).
    pub max_retries: u32,
    /// Messages in one request (default 48: about what one 1,400-byte reply holds, so a large
    /// hole is asked for in many requests at once rather than one after another).
    pub max_request: u16,
    /// Messages requested and not yet answered (default 10,000).
    pub max_outstanding: u64,
    /// Requests in flight (default 256).
    pub max_requests: usize,
}

impl Default for ArbConfig {
    fn default() -> Self {
        ArbConfig {
            session: None,
            start_seq: None,
            window_slots: 8192,
            max_payload: 1500,
            line_wait_ns: 200_000,
            recovery: true,
            request_timeout_ns: 50_000_000,
            max_retries: 3,
            max_request: 48,
            max_outstanding: 10_000,
            max_requests: 256,
        }
    }
}

/// Per line counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LineCounters {
    /// Valid packets of the right session (data, heartbeat, end of session).
    pub packets: u64,
    /// Messages in those packets.
    pub messages: u64,
    /// Messages already delivered or held when this copy came.
    pub duplicates: u64,
    /// Packets that arrived ahead of the next expected sequence.
    pub out_of_order: u64,
    /// Packets held back because of a hole, and then dropped because the window was full.
    pub window_full: u64,
    /// Payloads that are not valid MoldUDP64.
    pub malformed: u64,
    /// Packets of another session.
    pub wrong_session: u64,
    /// Heartbeats.
    pub heartbeats: u64,
    /// Messages this line delivered first.
    pub delivered: u64,
}

/// Channel counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ArbCounters {
    /// Per line, indexed by `Line as usize`.
    pub lines: [LineCounters; 3],
    /// Holes seen at the head of the stream.
    pub holes: u64,
    /// Requests sent (retries included).
    pub requests: u64,
    /// Messages delivered from re-request replies.
    pub recovered: u64,
    /// Messages given up (sum of gap counts).
    pub unrecovered: u64,
    /// Gap events.
    pub gaps: u64,
    /// Messages delivered.
    pub delivered: u64,
}

#[derive(Debug)]
struct Slot {
    first: u64,
    end: u64,
    recv_ns: u64,
    line: Line,
    len: usize,
    data: Box<[u8]>,
}

#[derive(Debug, Clone, Copy)]
struct Req {
    first: u64,
    end: u64,
    sent_ns: u64,
    tries: u32,
}

/// The arbiter of one channel.
#[derive(Debug)]
pub struct Arbiter {
    cfg: ArbConfig,
    session: Option<Session>,
    started: bool,
    next_seq: u64,
    /// The upstream has sent everything below this (from data, heartbeats and EOS).
    known_end: u64,
    hole_since: Option<u64>,
    /// The head sequence `hole_since` is about.
    hole_head: u64,
    /// Ranges below this whose requests were exhausted: lost.
    abandon_upto: u64,
    slots: Vec<Slot>,
    /// Indices of used slots, sorted by `first` (a deque: delivery pops the front, arrivals
    /// mostly land at the back).
    order: std::collections::VecDeque<usize>,
    free: Vec<usize>,
    reqs: Vec<Req>,
    eos_at: Option<u64>,
    eos_sent: bool,
    /// Per multicast line: the end of the highest sequence it has shown (data, heartbeat or
    /// EOS) and when its last packet came (0: never).
    line_end: [u64; 2],
    line_last_ns: [u64; 2],
    counters: ArbCounters,
}

impl Arbiter {
    /// An arbiter; allocates its whole window now.
    pub fn new(cfg: ArbConfig) -> Self {
        let slots = (0..cfg.window_slots)
            .map(|_| Slot {
                first: 0,
                end: 0,
                recv_ns: 0,
                line: Line::A,
                len: 0,
                data: vec![0; cfg.max_payload].into_boxed_slice(),
            })
            .collect();
        Arbiter {
            session: cfg.session,
            started: false,
            next_seq: 0,
            known_end: 0,
            hole_since: None,
            hole_head: 0,
            abandon_upto: 0,
            order: std::collections::VecDeque::with_capacity(cfg.window_slots),
            free: (0..cfg.window_slots).rev().collect(),
            reqs: Vec::with_capacity(cfg.max_requests),
            slots,
            eos_at: None,
            eos_sent: false,
            line_end: [0; 2],
            line_last_ns: [0; 2],
            counters: ArbCounters::default(),
            cfg,
        }
    }

    /// The counters.
    pub fn counters(&self) -> &ArbCounters {
        &self.counters
    }
    /// The next sequence number to deliver (0 before the first packet).
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }
    /// The session, once known.
    pub fn session(&self) -> Option<Session> {
        self.session
    }
    /// Packets waiting in the window.
    pub fn held(&self) -> usize {
        self.order.len()
    }
    /// Messages requested and not yet received.
    pub fn outstanding(&self) -> u64 {
        self.reqs
            .iter()
            .map(|r| r.end - r.first.max(self.next_seq).min(r.end))
            .sum()
    }

    /// Takes one UDP payload received at `now_ns` on `line`.
    pub fn on_packet(&mut self, now_ns: u64, line: Line, payload: &[u8], sink: &mut impl ArbSink) {
        let li = line as usize;
        let Ok(p) = Packet::parse(payload) else {
            self.counters.lines[li].malformed += 1;
            return;
        };
        match self.session {
            Some(s) if s != *p.session() => {
                self.counters.lines[li].wrong_session += 1;
                return;
            }
            Some(_) => {}
            None => self.session = Some(*p.session()),
        }
        let c = &mut self.counters.lines[li];
        c.packets += 1;
        let (first, end) = (p.sequence(), p.next_sequence());
        if li < 2 {
            self.line_end[li] = self.line_end[li].max(end);
            self.line_last_ns[li] = self.line_last_ns[li].max(now_ns);
        }
        if p.kind() != PacketKind::Messages {
            if p.kind() == PacketKind::Heartbeat {
                c.heartbeats += 1;
            } else {
                self.eos_at = Some(self.eos_at.map_or(first, |e| e.max(first)));
            }
            if !self.started {
                // A late joiner starts at what the heartbeat announces; a configured start
                // (say 1) makes everything before the announced sequence a hole to fill.
                self.start(self.cfg.start_seq.unwrap_or(first));
            }
            self.known_end = self.known_end.max(first);
            self.after_change(now_ns, sink);
            return;
        }
        c.messages += p.message_count() as u64;
        if !self.started {
            self.start(self.cfg.start_seq.unwrap_or(first));
        }
        if end <= self.next_seq {
            self.counters.lines[li].duplicates += p.message_count() as u64;
            return;
        }
        self.known_end = self.known_end.max(end);
        if first <= self.next_seq {
            self.counters.lines[li].duplicates += self.next_seq - first;
            self.deliver(&p, now_ns, line, sink);
            self.drain(sink);
        } else {
            self.hold(&p, payload, now_ns, line);
        }
        self.after_change(now_ns, sink);
    }

    fn start(&mut self, seq: u64) {
        self.started = true;
        self.next_seq = seq;
        self.known_end = seq;
        self.abandon_upto = seq;
    }

    fn deliver(&mut self, p: &Packet<'_>, recv_ns: u64, line: Line, sink: &mut impl ArbSink) {
        let mut n = 0;
        for (seq, msg) in p.messages() {
            if seq >= self.next_seq {
                sink.message(seq, msg, recv_ns, line);
                n += 1;
            }
        }
        self.next_seq = p.next_sequence();
        self.counted_delivery(line, n);
    }

    fn counted_delivery(&mut self, line: Line, n: u64) {
        self.counters.lines[line as usize].delivered += n;
        self.counters.delivered += n;
        if line == Line::Recovery {
            self.counters.recovered += n;
        }
    }

    fn hold(&mut self, p: &Packet<'_>, payload: &[u8], recv_ns: u64, line: Line) {
        let li = line as usize;
        let (first, end) = (p.sequence(), p.next_sequence());
        // Already covered by what is held: a duplicate.
        let pos = self.order.partition_point(|&i| self.slots[i].first < first);
        let covered = |i: usize| self.slots[i].first <= first && end <= self.slots[i].end;
        if (pos > 0 && covered(self.order[pos - 1]))
            || (pos < self.order.len() && covered(self.order[pos]))
        {
            self.counters.lines[li].duplicates += p.message_count() as u64;
            return;
        }
        self.counters.lines[li].out_of_order += 1;
        let Some(slot) = (if payload.len() <= self.cfg.max_payload {
            self.free.pop()
        } else {
            None
        }) else {
            self.counters.lines[li].window_full += 1;
            return;
        };
        let s = &mut self.slots[slot];
        s.first = first;
        s.end = end;
        s.recv_ns = recv_ns;
        s.line = line;
        s.len = payload.len();
        s.data[..payload.len()].copy_from_slice(payload);
        self.order.insert(pos, slot);
    }

    /// Delivers held packets that now continue the stream; frees the ones made useless.
    fn drain(&mut self, sink: &mut impl ArbSink) {
        while let Some(&i) = self.order.front() {
            if self.slots[i].first > self.next_seq {
                break;
            }
            self.order.pop_front();
            self.free.push(i);
            let s = &self.slots[i];
            if s.end <= self.next_seq {
                self.counters.lines[s.line as usize].duplicates += s.end - s.first;
                continue;
            }
            let (recv_ns, line) = (s.recv_ns, s.line);
            // Split borrows: the slot's bytes stay in place while the sink reads them.
            let data = std::mem::take(&mut self.slots[i].data);
            if let Ok(p) = Packet::parse(&data[..self.slots[i].len]) {
                self.counters.lines[line as usize].duplicates +=
                    self.next_seq.saturating_sub(p.sequence());
                self.deliver(&p, recv_ns, line, sink);
            }
            self.slots[i].data = data;
        }
    }

    /// Bookkeeping after anything that may have moved the head or revealed a hole.
    fn after_change(&mut self, now_ns: u64, sink: &mut impl ArbSink) {
        self.give_up_abandoned(sink);
        if self.next_seq >= self.known_end {
            self.hole_since = None;
        } else if self.hole_since.is_none() || self.hole_head != self.next_seq {
            // A new hole at the head: it has been known since the first packet held after it
            // arrived (or now, for a hole only a heartbeat revealed).
            if self.hole_since.is_none() {
                self.counters.holes += 1;
            }
            let first_held = self.order.front().map(|&i| self.slots[i].recv_ns);
            self.hole_since = Some(first_held.unwrap_or(now_ns).min(now_ns));
            self.hole_head = self.next_seq;
        }
        let next = self.next_seq;
        self.reqs.retain(|r| r.end > next);
        if let Some(e) = self.eos_at
            && !self.eos_sent
            && self.next_seq >= e
        {
            self.eos_sent = true;
            sink.end_of_session(self.next_seq);
        }
    }

    /// Declares lost everything missing at the head below `abandon_upto`, and delivers what
    /// is held after it.
    fn give_up_abandoned(&mut self, sink: &mut impl ArbSink) {
        while self.next_seq < self.abandon_upto {
            let held_first = self.order.front().map(|&i| self.slots[i].first);
            let lost_end = held_first.map_or(self.abandon_upto, |f| f.min(self.abandon_upto));
            if lost_end > self.next_seq {
                let n = lost_end - self.next_seq;
                sink.gap(self.next_seq, n);
                self.counters.gaps += 1;
                self.counters.unrecovered += n;
                self.next_seq = lost_end;
            }
            self.drain(sink);
            if held_first.is_none() || lost_end == self.abandon_upto {
                break;
            }
        }
    }

    /// The missing runs between the head and `known_end`, in order, each at most `max` long.
    ///
    /// Starts from a binary search on the held packets (sorted by first sequence), looking back
    /// a few packets for one that reaches over `from`: a packet further back that does (only a
    /// large overlapping reply could) makes a run look missing that is not, which costs one
    /// needless request, never a loss. So a poll stays cheap with thousands of packets held.
    fn next_missing_from(&self, from: u64) -> Option<(u64, u64)> {
        let mut cursor = from.max(self.next_seq);
        let at = self
            .order
            .partition_point(|&i| self.slots[i].first <= cursor);
        for &i in self.order.range(at.saturating_sub(64)..at) {
            cursor = cursor.max(self.slots[i].end);
        }
        for &i in self.order.range(at..) {
            let s = &self.slots[i];
            if s.end <= cursor {
                continue;
            }
            if s.first > cursor {
                return Some((cursor, s.first));
            }
            cursor = s.end;
        }
        (cursor < self.known_end).then_some((cursor, self.known_end))
    }

    /// Whether every multicast line has had its chance to fill the hole that opened at `since`:
    /// it has shown sequences past the hole, or a packet received `line_wait` after the hole
    /// opened (so what it has not delivered it lost), or it has been silent for `line_wait`.
    /// A line that is merely read later than the other (its copies still queued in its socket)
    /// has not, so its copy is not re-requested for nothing.
    /// With `drained` false (the caller has not read every socket empty), a silent line is
    /// not taken as lossy: it may only be unread.
    fn lines_have_passed(&self, since: u64, now_ns: u64, drained: bool) -> bool {
        let wait = self.cfg.line_wait_ns;
        (0..2).all(|l| {
            let last = self.line_last_ns[l];
            last == 0
                || self.line_end[l] >= self.known_end
                || last >= since + wait
                || (drained && now_ns >= last + wait)
        })
    }

    /// Whether a timer runs: a hole waits for the other line, or requests wait for replies.
    /// When not, [`Arbiter::poll`] has nothing to do until a packet comes.
    pub fn timers_pending(&self) -> bool {
        self.hole_since.is_some() || !self.reqs.is_empty()
    }

    /// Runs the timers after the caller has read every socket empty: requests holes that
    /// outlived the line wait, retries timed-out requests, gives up exhausted ones.
    pub fn poll(&mut self, now_ns: u64, sink: &mut impl ArbSink) {
        self.run_timers(now_ns, true, sink);
    }

    /// Runs the timers while sockets still hold unread data (a caller under sustained load
    /// calls this now and then): the same, except that a line that has not been read lately is
    /// not taken for a line that lost the hole.
    pub fn poll_busy(&mut self, now_ns: u64, sink: &mut impl ArbSink) {
        self.run_timers(now_ns, false, sink);
    }

    fn run_timers(&mut self, now_ns: u64, drained: bool, sink: &mut impl ArbSink) {
        let Some(since) = self.hole_since else { return };
        if now_ns < since + self.cfg.line_wait_ns || !self.lines_have_passed(since, now_ns, drained)
        {
            return;
        }
        let Some(session) = self.session else { return };
        if !self.cfg.recovery {
            // No re-requests: everything missing up to what the lines have shown is lost.
            self.abandon_upto = self.abandon_upto.max(self.known_end);
            self.after_change(now_ns, sink);
            return;
        }
        // Retry or give up requests that timed out; re-ask at once for what a reply left out.
        let mut i = 0;
        while i < self.reqs.len() {
            let r = self.reqs[i];
            let missing = self.next_missing_from(r.first).filter(|&(a, _)| a < r.end);
            let Some((a, _)) = missing else {
                self.reqs.swap_remove(i);
                continue;
            };
            let partial_reply = a > r.first;
            if partial_reply || now_ns >= r.sent_ns + self.cfg.request_timeout_ns {
                if r.tries > self.cfg.max_retries {
                    self.reqs.swap_remove(i);
                    self.abandon_upto = self.abandon_upto.max(r.end);
                    continue;
                }
                let count = (r.end - a).min(self.cfg.max_request as u64);
                sink.request(Request {
                    session,
                    sequence: a,
                    count: count as u16,
                });
                self.counters.requests += 1;
                self.reqs[i] = Req {
                    first: a,
                    end: r.end,
                    sent_ns: now_ns,
                    tries: if partial_reply { r.tries } else { r.tries + 1 },
                };
            }
            i += 1;
        }
        // What was just given up is declared before anything new is asked for.
        self.give_up_abandoned(sink);
        // New requests for missing runs no request covers yet.
        let mut from = self.next_seq.max(self.abandon_upto);
        let mut outstanding = self.outstanding();
        while self.reqs.len() < self.cfg.max_requests {
            let Some((a, b)) = self.next_missing_from(from) else {
                break;
            };
            let covered_to = self
                .reqs
                .iter()
                .filter(|r| r.first <= a && a < r.end)
                .map(|r| r.end)
                .max();
            if let Some(e) = covered_to {
                from = e;
                continue;
            }
            let room = self.cfg.max_outstanding.saturating_sub(outstanding);
            let count = (b - a).min(self.cfg.max_request as u64).min(room);
            if count == 0 {
                break;
            }
            sink.request(Request {
                session,
                sequence: a,
                count: count as u16,
            });
            self.counters.requests += 1;
            self.reqs.push(Req {
                first: a,
                end: a + count,
                sent_ns: now_ns,
                tries: 1,
            });
            outstanding += count;
            from = a + count;
        }
        self.after_change(now_ns, sink);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::moldudp64::{PacketWriter, control_packet};

    #[derive(Default, Debug)]
    struct Rec {
        msgs: Vec<(u64, Vec<u8>, Line)>,
        gaps: Vec<(u64, u64)>,
        reqs: Vec<Request>,
        eos: Option<u64>,
    }
    impl ArbSink for Rec {
        fn message(&mut self, seq: u64, msg: &[u8], _recv_ns: u64, line: Line) {
            self.msgs.push((seq, msg.to_vec(), line));
        }
        fn gap(&mut self, first: u64, count: u64) {
            self.gaps.push((first, count));
        }
        fn request(&mut self, req: Request) {
            self.reqs.push(req);
        }
        fn end_of_session(&mut self, next_seq: u64) {
            self.eos = Some(next_seq);
        }
    }

    fn session() -> Session {
        Session::new("TEST000001").unwrap()
    }

    /// A packet of messages `first..first+n`, each message being its sequence as 8 bytes.
    fn pkt(first: u64, n: u64) -> Vec<u8> {
        let mut w = PacketWriter::new(session(), first, 1400);
        for s in first..first + n {
            assert!(w.push(&s.to_be_bytes()));
        }
        w.finish().to_vec()
    }

    fn seqs(r: &Rec) -> Vec<u64> {
        r.msgs.iter().map(|m| m.0).collect()
    }

    fn cfg() -> ArbConfig {
        ArbConfig {
            session: Some(session()),
            start_seq: Some(1),
            ..Default::default()
        }
    }

    #[test]
    fn first_copy_wins_and_duplicates_are_counted() {
        let mut a = Arbiter::new(cfg());
        let mut r = Rec::default();
        a.on_packet(1, Line::A, &pkt(1, 3), &mut r);
        a.on_packet(2, Line::B, &pkt(1, 3), &mut r);
        a.on_packet(3, Line::B, &pkt(4, 2), &mut r);
        a.on_packet(4, Line::A, &pkt(4, 2), &mut r);
        assert_eq!(seqs(&r), vec![1, 2, 3, 4, 5]);
        assert_eq!(r.msgs[3].2, Line::B);
        let c = a.counters();
        assert_eq!((c.lines[0].duplicates, c.lines[1].duplicates), (2, 3));
        assert_eq!(
            (c.lines[0].delivered, c.lines[1].delivered, c.delivered),
            (3, 2, 5)
        );
        assert!(r.reqs.is_empty() && r.gaps.is_empty());
    }

    #[test]
    fn a_hole_on_one_line_is_filled_by_the_other_without_a_request() {
        let mut a = Arbiter::new(cfg());
        let mut r = Rec::default();
        a.on_packet(0, Line::A, &pkt(1, 2), &mut r);
        assert!(!a.timers_pending(), "in sequence: nothing to time");
        a.on_packet(10, Line::A, &pkt(5, 2), &mut r); // 3,4 lost on A
        assert_eq!(a.held(), 1);
        assert!(a.timers_pending(), "the hole waits for line B");
        a.poll(100, &mut r); // within the line wait
        assert!(r.reqs.is_empty());
        a.on_packet(150, Line::B, &pkt(3, 2), &mut r);
        assert_eq!(seqs(&r), vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(a.held(), 0);
        assert!(!a.timers_pending(), "filled");
        a.poll(10_000_000, &mut r);
        assert!(r.reqs.is_empty());
        assert_eq!(a.counters().holes, 1);
    }

    #[test]
    fn a_line_read_late_is_waited_for_while_it_keeps_coming() {
        // Line A is read ahead of line B (B's copies still queued): A shows a hole at 3..5
        // while B has only reached 2. B keeps delivering, so no request goes out.
        let mut a = Arbiter::new(cfg());
        let mut r = Rec::default();
        a.on_packet(0, Line::A, &pkt(1, 2), &mut r);
        a.on_packet(10, Line::A, &pkt(5, 2), &mut r);
        a.on_packet(20, Line::B, &pkt(1, 2), &mut r);
        // long after the line wait, but B's sockets are not drained and its last packet came at 20
        a.poll_busy(1_000_000, &mut r);
        assert!(r.reqs.is_empty(), "B is behind, not lossy");
        // now B's later packets, received long ago, are read: B was not lossy after all
        a.on_packet(30, Line::B, &pkt(3, 2), &mut r);
        assert_eq!(seqs(&r), vec![1, 2, 3, 4, 5, 6]);
        // but a B that shows a packet received past the wait without the hole's data, does
        a.on_packet(40, Line::A, &pkt(9, 1), &mut r); // hole 7..9 since t=40
        a.on_packet(300_000, Line::B, &pkt(10, 1), &mut r);
        a.on_packet(300_000, Line::A, &pkt(11, 1), &mut r);
        a.poll_busy(300_001, &mut r);
        assert_eq!(
            r.reqs,
            vec![Request {
                session: session(),
                sequence: 7,
                count: 2
            }]
        );
    }

    #[test]
    fn reordered_packets_wait_and_come_out_in_order() {
        let mut a = Arbiter::new(cfg());
        let mut r = Rec::default();
        for (t, first) in [(0, 1), (1, 7), (2, 4), (3, 10), (4, 3), (5, 5)] {
            let n = match first {
                1 => 2,
                3 => 1,
                4 => 1,
                5 => 2,
                _ => 3,
            };
            a.on_packet(t, Line::A, &pkt(first, n), &mut r);
        }
        assert_eq!(seqs(&r), (1..=12).collect::<Vec<_>>());
        assert_eq!(a.counters().lines[0].out_of_order, 3);
    }

    #[test]
    fn lost_on_both_lines_is_requested_and_recovered() {
        let mut a = Arbiter::new(cfg());
        let mut r = Rec::default();
        a.on_packet(0, Line::A, &pkt(1, 2), &mut r);
        a.on_packet(1, Line::A, &pkt(10, 2), &mut r);
        a.on_packet(2, Line::B, &pkt(10, 2), &mut r);
        a.poll(200_000, &mut r); // line wait is 200 µs from the hole at t=1
        assert!(r.reqs.is_empty());
        a.poll(200_001, &mut r);
        assert_eq!(
            r.reqs,
            vec![Request {
                session: session(),
                sequence: 3,
                count: 7
            }]
        );
        // the server answers part of it; the rest is asked for at once
        a.on_packet(300_000, Line::Recovery, &pkt(3, 4), &mut r);
        a.poll(300_001, &mut r);
        assert_eq!(
            r.reqs[1],
            Request {
                session: session(),
                sequence: 7,
                count: 3
            }
        );
        a.on_packet(400_000, Line::Recovery, &pkt(7, 3), &mut r);
        assert_eq!(seqs(&r), (1..=11).collect::<Vec<_>>());
        assert_eq!(a.counters().recovered, 7);
        assert_eq!(a.outstanding(), 0);
        a.poll(1_000_000_000, &mut r);
        assert_eq!(r.reqs.len(), 2);
        assert!(r.gaps.is_empty());
        assert!(!a.timers_pending(), "recovered: no hole, no request");
    }

    #[test]
    fn unanswered_requests_are_retried_then_become_one_exact_gap() {
        let mut a = Arbiter::new(cfg());
        let mut r = Rec::default();
        a.on_packet(0, Line::A, &pkt(1, 2), &mut r);
        a.on_packet(1, Line::B, &pkt(20, 5), &mut r);
        let mut t = 200_001;
        a.poll(t, &mut r);
        for _ in 0..3 {
            t += 50_000_000;
            a.poll(t, &mut r);
        }
        assert_eq!(r.reqs.len(), 4, "first request and 3 retries");
        assert!(a.timers_pending(), "the last retry waits for its reply");
        assert!(r.reqs.iter().all(|q| q.sequence == 3 && q.count == 17));
        assert!(r.gaps.is_empty());
        t += 50_000_000;
        a.poll(t, &mut r);
        assert_eq!(r.gaps, vec![(3, 17)]);
        assert_eq!(seqs(&r), vec![1, 2, 20, 21, 22, 23, 24]);
        assert!(!a.timers_pending(), "given up: nothing left to time");
        a.on_packet(t + 1, Line::A, &pkt(25, 1), &mut r);
        assert_eq!(*seqs(&r).last().unwrap(), 25);
        let c = a.counters();
        assert_eq!((c.gaps, c.unrecovered, c.requests), (1, 17, 4));
        // a late reply for the lost range is a duplicate, not a second copy
        a.on_packet(t + 2, Line::Recovery, &pkt(3, 5), &mut r);
        assert_eq!(r.msgs.len(), 8);
    }

    #[test]
    fn without_recovery_a_hole_is_a_gap_after_the_line_wait() {
        let mut a = Arbiter::new(ArbConfig {
            recovery: false,
            ..cfg()
        });
        let mut r = Rec::default();
        a.on_packet(0, Line::A, &pkt(1, 1), &mut r);
        a.on_packet(0, Line::A, &pkt(5, 1), &mut r);
        a.poll(199_999, &mut r);
        assert!(r.gaps.is_empty());
        a.poll(200_000, &mut r);
        assert_eq!(r.gaps, vec![(2, 3)]);
        assert_eq!(seqs(&r), vec![1, 5]);
        assert!(r.reqs.is_empty());
    }

    #[test]
    fn heartbeats_reveal_a_lost_tail_and_eos_ends_the_session() {
        let mut a = Arbiter::new(cfg());
        let mut r = Rec::default();
        a.on_packet(0, Line::A, &pkt(1, 3), &mut r);
        a.on_packet(1, Line::A, &control_packet(session(), 6, 0), &mut r); // 4, 5 never came
        a.poll(200_001, &mut r);
        assert_eq!(
            r.reqs,
            vec![Request {
                session: session(),
                sequence: 4,
                count: 2
            }]
        );
        a.on_packet(300_000, Line::Recovery, &pkt(4, 2), &mut r);
        a.on_packet(
            400_000,
            Line::A,
            &control_packet(session(), 6, 0xffff),
            &mut r,
        );
        assert_eq!(seqs(&r), vec![1, 2, 3, 4, 5]);
        assert_eq!(r.eos, Some(6));
    }

    #[test]
    fn a_heartbeat_before_any_data_opens_the_hole_from_the_configured_start() {
        let mut a = Arbiter::new(ArbConfig {
            line_wait_ns: 0,
            ..cfg()
        });
        let mut r = Rec::default();
        a.on_packet(0, Line::A, &control_packet(session(), 101, 0), &mut r);
        a.poll(1, &mut r);
        let asked: Vec<(u64, u16)> = r.reqs.iter().map(|q| (q.sequence, q.count)).collect();
        assert_eq!(
            asked,
            vec![(1, 48), (49, 48), (97, 4)],
            "1..=100 in requests of at most 48"
        );
    }

    #[test]
    fn other_sessions_and_garbage_are_counted_and_ignored() {
        let mut a = Arbiter::new(cfg());
        let mut r = Rec::default();
        let mut w = PacketWriter::new(Session::new("OTHER00001").unwrap(), 1, 100);
        w.push(b"x");
        a.on_packet(0, Line::A, w.finish(), &mut r);
        a.on_packet(0, Line::B, b"short", &mut r);
        assert!(r.msgs.is_empty());
        let c = a.counters();
        assert_eq!((c.lines[0].wrong_session, c.lines[1].malformed), (1, 1));
    }

    #[test]
    fn a_full_window_drops_and_the_drop_is_recovered_later() {
        let mut a = Arbiter::new(ArbConfig {
            window_slots: 2,
            ..cfg()
        });
        let mut r = Rec::default();
        a.on_packet(0, Line::A, &pkt(1, 1), &mut r);
        for s in [3, 4, 5, 6] {
            a.on_packet(1, Line::A, &pkt(s, 1), &mut r);
        }
        assert_eq!(a.counters().lines[0].window_full, 2);
        a.poll(200_001, &mut r);
        // 2 is missing, and so are 5.. (dropped): known_end is 7
        assert_eq!(
            r.reqs[0],
            Request {
                session: session(),
                sequence: 2,
                count: 1
            }
        );
        assert_eq!(
            r.reqs[1],
            Request {
                session: session(),
                sequence: 5,
                count: 2
            }
        );
        a.on_packet(300_000, Line::Recovery, &pkt(2, 1), &mut r);
        a.on_packet(300_001, Line::Recovery, &pkt(5, 2), &mut r);
        assert_eq!(seqs(&r), (1..=6).collect::<Vec<_>>());
    }

    #[test]
    fn late_join_starts_at_the_first_packet_and_learns_the_session() {
        let mut a = Arbiter::new(ArbConfig::default());
        let mut r = Rec::default();
        a.on_packet(0, Line::B, &pkt(1000, 2), &mut r);
        a.on_packet(1, Line::A, &pkt(1000, 3), &mut r);
        assert_eq!(seqs(&r), vec![1000, 1001, 1002]);
        assert_eq!(a.session(), Some(session()));
    }

    #[test]
    fn random_loss_reorder_and_duplication_deliver_everything_exactly_once() {
        // A small deterministic simulation: 3000 messages, each line loses 20%, reorders and
        // duplicates; the re-request server answers every request with at most 5 messages.
        let mut x = 0x1234_5678_9abc_def0u64;
        let mut rnd = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let mut a = Arbiter::new(cfg());
        let mut r = Rec::default();
        let mut t = 0;
        let mut pending: Vec<(Line, Vec<u8>)> = Vec::new();
        let mut first = 1;
        while first <= 3000 {
            let n = 1 + rnd(4);
            let p = pkt(first, n);
            for line in [Line::A, Line::B] {
                match rnd(10) {
                    0 | 1 => {}
                    2 => pending.push((line, p.clone())),
                    _ => {
                        a.on_packet(t, line, &p, &mut r);
                        if rnd(20) == 0 {
                            a.on_packet(t, line, &p, &mut r);
                        }
                    }
                }
            }
            if rnd(3) == 0
                && let Some((l, p)) = pending.pop()
            {
                a.on_packet(t, l, &p, &mut r);
            }
            first += n;
            t += 10_000;
            let before = r.reqs.len();
            a.poll(t, &mut r);
            let asked: Vec<Request> = r.reqs[before..].to_vec();
            for q in asked {
                let n = (q.count as u64).min(5);
                a.on_packet(t, Line::Recovery, &pkt(q.sequence, n), &mut r);
            }
        }
        a.on_packet(t, Line::A, &control_packet(session(), 3001, 0), &mut r);
        for _ in 0..100 {
            t += 1_000_000;
            let before = r.reqs.len();
            a.poll(t, &mut r);
            let asked: Vec<Request> = r.reqs[before..].to_vec();
            for q in asked {
                let n = (q.count as u64).min(5);
                a.on_packet(t, Line::Recovery, &pkt(q.sequence, n), &mut r);
            }
        }
        assert!(r.gaps.is_empty(), "{:?}", r.gaps);
        assert_eq!(seqs(&r), (1..=3000).collect::<Vec<_>>());
        for (s, m, _) in &r.msgs {
            assert_eq!(m, &s.to_be_bytes());
        }
        assert!(a.counters().recovered > 0);
    }
}
