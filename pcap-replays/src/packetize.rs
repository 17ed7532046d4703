//! Packs timestamped ITCH messages into MoldUDP64 packets the way a feed does: a packet holds
//! the messages that arrive within a short batching window and fit in the payload limit; an idle
//! feed sends a heartbeat each second; the session ends with an end-of-session packet.

use feed_handler::moldudp64::{self, PacketWriter, Session};

/// How packets are made.
#[derive(Debug, Clone)]
pub struct PacketizerConfig {
    /// MoldUDP64 session name.
    pub session: Session,
    /// Largest UDP payload, bytes.
    pub max_payload: usize,
    /// Messages within this many ns of a packet's first message share the packet.
    pub batch_ns: u64,
    /// A heartbeat after this long without a packet, ns.
    pub heartbeat_ns: u64,
    /// Sequence number of the first message.
    pub first_seq: u64,
}

impl Default for PacketizerConfig {
    fn default() -> Self {
        PacketizerConfig {
            session: Session::new("GEN0000001").expect("10 bytes"),
            max_payload: moldudp64::DEFAULT_MAX_PAYLOAD,
            batch_ns: 5_000,
            heartbeat_ns: 1_000_000_000,
            first_seq: 1,
        }
    }
}

/// A finished packet.
#[derive(Debug, Clone, Copy)]
pub struct OutPacket<'a> {
    /// Send time: the last message's timestamp (ns, same clock as the input).
    pub ts_ns: u64,
    /// Sequence of the first message (or the next expected, for heartbeat and EOS).
    pub seq: u64,
    /// Messages in the packet (0 for heartbeat and EOS).
    pub messages: u16,
    /// The UDP payload.
    pub payload: &'a [u8],
}

/// The packer.
#[derive(Debug)]
pub struct Packetizer {
    cfg: PacketizerConfig,
    w: PacketWriter,
    first_ts: u64,
    last_ts: u64,
    last_sent_ts: Option<u64>,
    packets: u64,
}

impl Packetizer {
    /// A packer starting at `cfg.first_seq`.
    pub fn new(cfg: PacketizerConfig) -> Self {
        let w = PacketWriter::new(cfg.session, cfg.first_seq, cfg.max_payload);
        Packetizer {
            cfg,
            w,
            first_ts: 0,
            last_ts: 0,
            last_sent_ts: None,
            packets: 0,
        }
    }

    /// Data packets made so far.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    fn flush(&mut self, out: &mut impl FnMut(OutPacket<'_>)) {
        if self.w.is_empty() {
            return;
        }
        let (seq, n, ts) = (self.w.sequence(), self.w.len(), self.last_ts);
        out(OutPacket {
            ts_ns: ts,
            seq,
            messages: n,
            payload: self.w.finish(),
        });
        self.packets += 1;
        self.last_sent_ts = Some(ts);
        self.w.next_packet();
    }

    fn heartbeats_until(&mut self, ts_ns: u64, out: &mut impl FnMut(OutPacket<'_>)) {
        let Some(mut last) = self.last_sent_ts else {
            return;
        };
        while ts_ns > last + self.cfg.heartbeat_ns {
            last += self.cfg.heartbeat_ns;
            let hb = moldudp64::control_packet(
                self.cfg.session,
                self.w.sequence(),
                moldudp64::COUNT_HEARTBEAT,
            );
            out(OutPacket {
                ts_ns: last,
                seq: self.w.sequence(),
                messages: 0,
                payload: &hb,
            });
        }
        self.last_sent_ts = Some(last);
    }

    /// Adds a message stamped `ts_ns`; finished packets (and heartbeats for idle time before
    /// it) go to `out`. A message too large for any packet is an error.
    pub fn push(
        &mut self,
        ts_ns: u64,
        msg: &[u8],
        out: &mut impl FnMut(OutPacket<'_>),
    ) -> Result<(), String> {
        if !self.w.is_empty() && ts_ns > self.first_ts + self.cfg.batch_ns {
            self.flush(out);
        }
        if self.w.is_empty() {
            self.heartbeats_until(ts_ns, out);
            self.first_ts = ts_ns;
        }
        if !self.w.push(msg) {
            self.flush(out);
            self.first_ts = ts_ns;
            if !self.w.push(msg) {
                return Err(format!(
                    "a {}-byte message does not fit a {}-byte packet",
                    msg.len(),
                    self.cfg.max_payload
                ));
            }
        }
        self.last_ts = ts_ns.max(self.last_ts);
        Ok(())
    }

    /// Sends what is pending, then `eos_packets` end-of-session packets 1 ms apart (short, so a
    /// replay ends promptly).
    pub fn finish(&mut self, eos_packets: u32, out: &mut impl FnMut(OutPacket<'_>)) {
        self.flush(out);
        let mut ts = self.last_ts;
        for _ in 0..eos_packets {
            ts += 1_000_000;
            let eos = moldudp64::control_packet(
                self.cfg.session,
                self.w.sequence(),
                moldudp64::COUNT_END_OF_SESSION,
            );
            out(OutPacket {
                ts_ns: ts,
                seq: self.w.sequence(),
                messages: 0,
                payload: &eos,
            });
        }
    }

    /// The sequence number the next message will get.
    pub fn next_seq(&self) -> u64 {
        self.w.sequence() + self.w.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use feed_handler::moldudp64::{Packet, PacketKind};

    #[test]
    fn batches_by_window_and_size_with_heartbeats() {
        let mut p = Packetizer::new(PacketizerConfig {
            max_payload: 20 + 3 * 12,
            batch_ns: 100,
            ..Default::default()
        });
        let mut got: Vec<(u64, u64, u16, PacketKind)> = Vec::new();
        let mut sink = |o: OutPacket<'_>| {
            let pk = Packet::parse(o.payload).unwrap();
            assert_eq!(pk.sequence(), o.seq);
            got.push((o.ts_ns, o.seq, pk.message_count(), pk.kind()));
        };
        let m = [0u8; 10];
        for ts in [0, 10, 20, 30, 500, 3_000_000_600] {
            p.push(ts, &m, &mut sink).unwrap();
        }
        p.finish(1, &mut sink);
        assert_eq!(
            got,
            vec![
                (20, 1, 3, PacketKind::Messages),  // full after 3
                (30, 4, 1, PacketKind::Messages),  // window closed by ts 500
                (500, 5, 1, PacketKind::Messages), // then 3 s of silence
                (1_000_000_500, 6, 0, PacketKind::Heartbeat),
                (2_000_000_500, 6, 0, PacketKind::Heartbeat),
                (3_000_000_500, 6, 0, PacketKind::Heartbeat),
                (3_000_000_600, 6, 1, PacketKind::Messages),
                (3_001_000_600, 7, 0, PacketKind::EndOfSession),
            ]
        );
    }
}
