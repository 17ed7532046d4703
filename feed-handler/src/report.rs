//! `feed-handler decode`: what a capture holds. Walks every MoldUDP64 packet (or BinaryFILE
//! record), decodes every ITCH message once (the first copy of each sequence number wins, as in
//! A/B arbitration) and counts packets, messages per type, sequence coverage, gaps, duplicates
//! and errors.

use crate::capture::{self, Capture, CaptureError, Format, Item};
use crate::itch::MessageCounts;
use crate::moldudp64::{Packet, PacketKind};
use std::collections::{BTreeMap, BTreeSet};

/// Sequence numbers seen, as disjoint half-open ranges `[start, end)`.
#[derive(Debug, Clone, Default)]
pub struct SeqCoverage {
    ranges: BTreeMap<u64, u64>,
}

impl SeqCoverage {
    /// True when `seq` has been seen.
    pub fn contains(&self, seq: u64) -> bool {
        self.ranges
            .range(..=seq)
            .next_back()
            .is_some_and(|(_, &end)| seq < end)
    }

    /// Marks `[start, end)` as seen.
    pub fn insert(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let (mut s, mut e) = (start, end);
        // merge with a range that starts before and touches `start`
        if let Some((&ps, &pe)) = self.ranges.range(..=s).next_back()
            && pe >= s
        {
            s = ps;
            e = e.max(pe);
        }
        // swallow every range that starts inside [s, e]
        let inside: Vec<u64> = self.ranges.range(s..=e).map(|(&k, _)| k).collect();
        for k in inside {
            if let Some(ke) = self.ranges.remove(&k) {
                e = e.max(ke);
            }
        }
        self.ranges.insert(s, e);
    }

    /// The smallest sequence seen.
    pub fn first(&self) -> Option<u64> {
        self.ranges.keys().next().copied()
    }
    /// The largest sequence seen.
    pub fn last(&self) -> Option<u64> {
        self.ranges.values().next_back().map(|e| e - 1)
    }
    /// The holes between the first and the last sequence seen, as `[start, end)`.
    pub fn holes(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.ranges
            .iter()
            .zip(self.ranges.iter().skip(1))
            .map(|((_, &e), (&s, _))| (e, s))
    }
}

/// Per MoldUDP64 session figures.
#[derive(Debug, Clone, Default)]
pub struct SessionReport {
    /// Sequences seen.
    pub coverage: SeqCoverage,
    /// The highest "next expected sequence" a heartbeat or end-of-session announced.
    pub announced_next: u64,
    /// Data packets.
    pub packets: u64,
}

impl SessionReport {
    /// Missing ranges: holes, plus a tail announced by a heartbeat but never received.
    pub fn gaps(&self) -> Vec<(u64, u64)> {
        let mut g: Vec<_> = self.coverage.holes().collect();
        let end = self.coverage.last().map_or(0, |l| l + 1);
        if self.announced_next > end && end > 0 {
            g.push((end, self.announced_next));
        }
        g
    }
}

/// What `feed-handler decode` prints.
#[derive(Debug, Clone)]
pub struct DecodeReport {
    /// The file's format.
    pub format: Format,
    /// Frames in the capture (0 for BinaryFILE).
    pub frames: u64,
    /// Frames skipped because they are not IPv4/UDP, or not to a selected port.
    pub skipped_frames: u64,
    /// MoldUDP64 packets (data, heartbeat and end-of-session), duplicates included.
    pub packets: u64,
    /// Heartbeat packets.
    pub heartbeats: u64,
    /// End-of-session packets.
    pub end_of_session: u64,
    /// Distinct messages decoded, by type; unknown types and bad lengths are counted here too.
    pub messages: MessageCounts,
    /// Message copies dropped because their sequence number was already seen.
    pub duplicates: u64,
    /// Frames that claimed UDP but whose headers were broken.
    pub frame_errors: u64,
    /// UDP payloads that are not valid MoldUDP64 packets.
    pub packet_errors: u64,
    /// The first few errors, for the reader.
    pub error_samples: Vec<String>,
    /// Per session (by name).
    pub sessions: BTreeMap<String, SessionReport>,
    /// Data packets by destination `group:port`.
    pub flows: BTreeMap<String, u64>,
}

const MAX_ERROR_SAMPLES: usize = 5;

impl DecodeReport {
    fn new(format: Format) -> Self {
        DecodeReport {
            format,
            frames: 0,
            skipped_frames: 0,
            packets: 0,
            heartbeats: 0,
            end_of_session: 0,
            messages: MessageCounts::default(),
            duplicates: 0,
            frame_errors: 0,
            packet_errors: 0,
            error_samples: Vec::new(),
            sessions: BTreeMap::new(),
            flows: BTreeMap::new(),
        }
    }

    fn sample(&mut self, s: String) {
        if self.error_samples.len() < MAX_ERROR_SAMPLES {
            self.error_samples.push(s);
        }
    }

    /// All errors: broken frames, broken packets, bad messages.
    pub fn errors(&self) -> u64 {
        self.frame_errors + self.packet_errors + self.messages.errors()
    }
    /// The smallest sequence number over all sessions.
    pub fn first_seq(&self) -> Option<u64> {
        self.sessions
            .values()
            .filter_map(|s| s.coverage.first())
            .min()
    }
    /// The largest sequence number over all sessions.
    pub fn last_seq(&self) -> Option<u64> {
        self.sessions
            .values()
            .filter_map(|s| s.coverage.last())
            .max()
    }
    /// Every missing range over all sessions.
    pub fn gap_ranges(&self) -> Vec<(String, u64, u64)> {
        self.sessions
            .iter()
            .flat_map(|(name, s)| s.gaps().into_iter().map(move |(a, b)| (name.clone(), a, b)))
            .collect()
    }

    /// The summary as one JSON object.
    pub fn to_json(&self) -> serde_json::Value {
        let by_type: serde_json::Map<String, serde_json::Value> = self
            .messages
            .iter()
            .map(|(t, n)| ((t as char).to_string(), n.into()))
            .collect();
        let gaps = self.gap_ranges();
        serde_json::json!({
            "format": self.format.name(),
            "frames": self.frames,
            "packets": self.packets,
            "heartbeats": self.heartbeats,
            "end_of_session": self.end_of_session,
            "messages": self.messages.total() + self.messages.errors(),
            "by_type": by_type,
            "first_seq": self.first_seq(),
            "last_seq": self.last_seq(),
            "gaps": gaps.len(),
            "missing_messages": gaps.iter().map(|(_, a, b)| b - a).sum::<u64>(),
            "gap_ranges": gaps.iter().map(|(s, a, b)| serde_json::json!({"session": s, "first": a, "last": b - 1})).collect::<Vec<_>>(),
            "duplicates": self.duplicates,
            "errors": self.errors(),
            "unknown_types": self.messages.unknown_type,
            "bad_lengths": self.messages.length_mismatch,
            "bad_packets": self.packet_errors,
            "bad_frames": self.frame_errors,
            "skipped_frames": self.skipped_frames,
            "error_samples": self.error_samples,
            "sessions": self.sessions.keys().collect::<Vec<_>>(),
            "flows": self.flows,
        })
    }

    /// The summary for a person.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(s, "format          {}", self.format.name());
        if self.format != Format::BinaryFile {
            let _ = writeln!(
                s,
                "frames          {} ({} skipped: not UDP or not a selected port)",
                self.frames, self.skipped_frames
            );
            let _ = writeln!(
                s,
                "packets         {} ({} heartbeat, {} end of session)",
                self.packets, self.heartbeats, self.end_of_session
            );
            for (flow, n) in &self.flows {
                let _ = writeln!(s, "  to {flow:<21} {n} data packets");
            }
            for name in self.sessions.keys() {
                let _ = writeln!(s, "session         {name:?}");
            }
        }
        let _ = writeln!(
            s,
            "messages        {}",
            self.messages.total() + self.messages.errors()
        );
        for (t, n) in self.messages.iter() {
            let _ = writeln!(s, "  {}  {n}", t as char);
        }
        let fmt_opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
        let _ = writeln!(s, "first seq       {}", fmt_opt(self.first_seq()));
        let _ = writeln!(s, "last seq        {}", fmt_opt(self.last_seq()));
        let gaps = self.gap_ranges();
        let _ = writeln!(
            s,
            "gaps            {} ({} messages)",
            gaps.len(),
            gaps.iter().map(|(_, a, b)| b - a).sum::<u64>()
        );
        for (sess, a, b) in gaps.iter().take(10) {
            let _ = writeln!(s, "  {sess} {a}..={}", b - 1);
        }
        let _ = writeln!(s, "duplicates      {}", self.duplicates);
        let _ = writeln!(
            s,
            "errors          {} ({} bad frames, {} bad packets, {} unknown types, {} bad lengths)",
            self.errors(),
            self.frame_errors,
            self.packet_errors,
            self.messages.unknown_type,
            self.messages.length_mismatch
        );
        for e in &self.error_samples {
            let _ = writeln!(s, "  {e}");
        }
        s
    }
}

/// Options of a decode.
#[derive(Debug, Clone, Default)]
pub struct DecodeOptions {
    /// Only UDP datagrams to these ports (empty: every UDP datagram).
    pub ports: BTreeSet<u16>,
}

/// Decodes a whole capture. Bad frames, packets and messages are counted; a file that ends
/// inside a record or is not a capture is an error.
pub fn decode_file(
    path: &std::path::Path,
    opts: &DecodeOptions,
) -> Result<DecodeReport, CaptureError> {
    decode_capture(capture::open(path)?, opts)
}

/// [`decode_file`] on an opened capture.
pub fn decode_capture(
    mut cap: Capture,
    opts: &DecodeOptions,
) -> Result<DecodeReport, CaptureError> {
    let mut rep = DecodeReport::new(cap.format());
    while let Some(item) = cap.next_item()? {
        match item {
            Item::Message { seq, bytes } => {
                if rep.messages.parse(bytes).is_none() {
                    rep.sample(format!(
                        "message {seq}: {}",
                        crate::itch::parse(bytes).unwrap_err()
                    ));
                }
                rep.sessions
                    .entry(String::new())
                    .or_default()
                    .coverage
                    .insert(seq, seq + 1);
            }
            Item::Frame(rec) => {
                rep.frames += 1;
                let frame_no = rep.frames;
                let d = match capture::udp_in_frame(rec.linktype, rec.data) {
                    Ok(Some(d)) if opts.ports.is_empty() || opts.ports.contains(&d.dst.port()) => d,
                    Ok(_) => {
                        rep.skipped_frames += 1;
                        continue;
                    }
                    Err(e) => {
                        rep.frame_errors += 1;
                        rep.sample(format!("frame {frame_no} at byte {}: {e}", rec.offset));
                        continue;
                    }
                };
                let packet = match Packet::parse(d.payload) {
                    Ok(p) => p,
                    Err(e) => {
                        rep.packet_errors += 1;
                        rep.sample(format!("frame {frame_no} to {}: {e}", d.dst));
                        continue;
                    }
                };
                rep.packets += 1;
                let name = String::from_utf8_lossy(&packet.session().0).into_owned();
                let sess = rep.sessions.entry(name).or_default();
                match packet.kind() {
                    PacketKind::Heartbeat | PacketKind::EndOfSession => {
                        sess.announced_next = sess.announced_next.max(packet.sequence());
                        if packet.kind() == PacketKind::Heartbeat {
                            rep.heartbeats += 1;
                        } else {
                            rep.end_of_session += 1;
                        }
                    }
                    PacketKind::Messages => {
                        sess.packets += 1;
                        *rep.flows.entry(d.dst.to_string()).or_default() += 1;
                        let mut dups = 0;
                        let mut bad = Vec::new();
                        for (seq, msg) in packet.messages() {
                            if sess.coverage.contains(seq) {
                                dups += 1;
                            } else if rep.messages.parse(msg).is_none() {
                                bad.push(format!(
                                    "frame {frame_no} message {seq}: {}",
                                    crate::itch::parse(msg).unwrap_err()
                                ));
                            }
                        }
                        sess.coverage
                            .insert(packet.sequence(), packet.next_sequence());
                        rep.duplicates += dups;
                        for b in bad {
                            rep.sample(b);
                        }
                    }
                }
            }
        }
    }
    Ok(rep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coverage_merges_and_finds_holes() {
        let mut c = SeqCoverage::default();
        c.insert(10, 20);
        c.insert(30, 40);
        c.insert(20, 25);
        assert!(c.contains(24) && !c.contains(25) && c.contains(10) && !c.contains(9));
        assert_eq!(c.holes().collect::<Vec<_>>(), vec![(25, 30)]);
        c.insert(5, 50);
        assert_eq!(c.holes().count(), 0);
        assert_eq!((c.first(), c.last()), (Some(5), Some(49)));
        c.insert(60, 61);
        c.insert(55, 58);
        assert_eq!(c.holes().collect::<Vec<_>>(), vec![(50, 55), (58, 60)]);
    }
}
