//! Lines A and B: every MoldUDP64 packet goes out on both redundant lines (two multicast groups
//! and ports), each with its own injected faults, into one pcap in time order.
//!
//! Faults, per line: random drops, burst drops (a run of consecutive packets), duplicates (the
//! same packet again 500 ns later) and reordering (a packet held back and sent 1 µs after the
//! next one). Gaps, on both lines at once: every packet holding a message of a given sequence
//! range is dropped from A and B, which only a re-request can recover. Faults use their own
//! random stream, so the same seed gives the same market whatever faults are chosen.

use crate::packetize::OutPacket;
use crate::rng::Rng;
use feed_handler::capture::{PcapWriter, net};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddrV4};

/// Faults injected on one line.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LineFaults {
    /// Probability that a packet is dropped.
    pub drop: f64,
    /// Probability that a burst of drops starts at a packet.
    pub burst: f64,
    /// Packets in a burst.
    pub burst_len: u32,
    /// Probability that a packet is sent twice.
    pub dup: f64,
    /// Probability that a packet is sent after the next one.
    pub reorder: f64,
}

impl LineFaults {
    /// Parses `drop=0.01,burst=0.001,burst_len=20,dup=0.001,reorder=0.001` (any subset; `none`
    /// for no faults).
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut f = LineFaults {
            burst_len: 10,
            ..Default::default()
        };
        if s.trim() == "none" || s.trim().is_empty() {
            return Ok(f);
        }
        for kv in s.split(',') {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| format!("fault {kv:?}: expected key=value"))?;
            let prob = || -> Result<f64, String> {
                let p: f64 = v
                    .parse()
                    .map_err(|_| format!("fault {k}: {v:?} is not a number"))?;
                if (0.0..=1.0).contains(&p) {
                    Ok(p)
                } else {
                    Err(format!("fault {k}: {p} is not a probability (0..1)"))
                }
            };
            match k.trim() {
                "drop" => f.drop = prob()?,
                "burst" => f.burst = prob()?,
                "dup" => f.dup = prob()?,
                "reorder" => f.reorder = prob()?,
                "burst_len" => {
                    f.burst_len = v
                        .parse()
                        .map_err(|_| format!("fault burst_len: {v:?} is not a count"))?
                }
                other => {
                    return Err(format!(
                        "unknown fault {other:?} (known: drop, burst, burst_len, dup, reorder)"
                    ));
                }
            }
        }
        Ok(f)
    }
}

/// One line's addresses and faults.
#[derive(Debug, Clone)]
pub struct LineSpec {
    /// Name in reports (`A`, `B`).
    pub name: &'static str,
    /// Source address and port written in the frames.
    pub src: SocketAddrV4,
    /// Multicast group and port.
    pub dst: SocketAddrV4,
    /// Injected faults.
    pub faults: LineFaults,
    /// Sent this long after the packet's time (B usually trails A a little).
    pub delay_ns: u64,
}

/// Both lines and the gaps common to both.
#[derive(Debug, Clone)]
pub struct LinesConfig {
    /// Line A and line B (or just A).
    pub lines: Vec<LineSpec>,
    /// Sequence ranges `[first, first + count)` lost on every line.
    pub gaps: Vec<(u64, u64)>,
    /// Seed of the fault stream.
    pub seed: u64,
    /// Added to every timestamp (the capture date's midnight, ns since the epoch).
    pub epoch_offset_ns: u64,
}

/// The default groups: line A 239.100.1.1:26400, line B 239.100.1.2:26401, from 198.18.0.1 and
/// 198.18.0.2 (a non-local source, so tcpreplay's frames are not dropped as martians).
pub fn default_lines() -> Vec<LineSpec> {
    vec![
        LineSpec {
            name: "A",
            src: SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 1), 40_000),
            dst: SocketAddrV4::new(Ipv4Addr::new(239, 100, 1, 1), 26_400),
            faults: LineFaults::default(),
            delay_ns: 0,
        },
        LineSpec {
            name: "B",
            src: SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 2), 40_001),
            dst: SocketAddrV4::new(Ipv4Addr::new(239, 100, 1, 2), 26_401),
            faults: LineFaults::default(),
            delay_ns: 3_000,
        },
    ]
}

/// What happened on one line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LineStats {
    /// Packets written (duplicates included).
    pub written: u64,
    /// Packets dropped at random or in bursts.
    pub dropped: u64,
    /// Packets dropped because they fall in a gap on both lines.
    pub gap_dropped: u64,
    /// Extra copies written.
    pub duplicated: u64,
    /// Packets sent after their successor.
    pub reordered: u64,
    /// Message sequence ranges `[first, end)` this line did not carry.
    pub missing: Vec<(u64, u64)>,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Pending {
    ts_ns: u64,
    order: u64,
    line: usize,
    payload: Vec<u8>,
}

/// Where the lines' frames go, in time order.
pub trait FrameOut {
    /// One datagram of line `line` (an index into `LinesConfig::lines`) at time `ts_ns`.
    fn frame(&mut self, ts_ns: u64, line: &LineSpec, payload: &[u8]) -> std::io::Result<()>;
}

/// Frames into a pcap (nanosecond timestamps, Ethernet/IPv4/UDP).
#[derive(Debug)]
pub struct PcapOut<W: Write> {
    pcap: PcapWriter<W>,
    frame: Vec<u8>,
    ip_id: u16,
    epoch_offset_ns: u64,
}

impl<W: Write> PcapOut<W> {
    /// Starts a pcap; frames are stamped `epoch_offset_ns + ts_ns`.
    pub fn new(out: W, epoch_offset_ns: u64) -> std::io::Result<Self> {
        Ok(PcapOut {
            pcap: PcapWriter::new(out, true, net::LINKTYPE_ETHERNET)?,
            frame: Vec::with_capacity(1600),
            ip_id: 0,
            epoch_offset_ns,
        })
    }
    /// Flushes and returns the output.
    pub fn into_inner(self) -> std::io::Result<W> {
        self.pcap.into_inner()
    }
}

impl<W: Write> FrameOut for PcapOut<W> {
    fn frame(&mut self, ts_ns: u64, line: &LineSpec, payload: &[u8]) -> std::io::Result<()> {
        self.frame.clear();
        self.ip_id = self.ip_id.wrapping_add(1);
        net::write_udp_frame(line.src, line.dst, self.ip_id, payload, &mut self.frame);
        self.pcap
            .write_record(self.epoch_offset_ns + ts_ns, &self.frame)
    }
}

/// Sends packets on every line with faults, in time order, to a [`FrameOut`].
#[derive(Debug)]
pub struct LinesWriter<O: FrameOut> {
    cfg: LinesConfig,
    out: O,
    rng: Rng,
    stats: Vec<LineStats>,
    burst_left: Vec<u32>,
    held: Vec<Option<Pending>>,
    heap: BinaryHeap<Reverse<Pending>>,
    order: u64,
}

impl<O: FrameOut> LinesWriter<O> {
    /// Lines writing to `out`.
    pub fn new(out: O, cfg: LinesConfig) -> std::io::Result<Self> {
        let n = cfg.lines.len();
        Ok(LinesWriter {
            out,
            rng: Rng::new(cfg.seed ^ 0x5eed_fa17_0000_0001),
            stats: vec![LineStats::default(); n],
            burst_left: vec![0; n],
            held: (0..n).map(|_| None).collect(),
            heap: BinaryHeap::new(),
            order: 0,
            cfg,
        })
    }

    fn queue(&mut self, ts_ns: u64, line: usize, payload: Vec<u8>) {
        self.order += 1;
        self.heap.push(Reverse(Pending {
            ts_ns,
            order: self.order,
            line,
            payload,
        }));
    }

    /// Writes every queued frame stamped at or before `ts_ns`.
    fn drain(&mut self, upto_ns: u64) -> std::io::Result<()> {
        while self
            .heap
            .peek()
            .is_some_and(|Reverse(p)| p.ts_ns <= upto_ns)
        {
            let Reverse(p) = self.heap.pop().expect("peeked");
            self.out
                .frame(p.ts_ns, &self.cfg.lines[p.line], &p.payload)?;
            self.stats[p.line].written += 1;
        }
        Ok(())
    }

    fn in_gap(&self, pkt: &OutPacket<'_>) -> bool {
        let end = pkt.seq + pkt.messages as u64;
        pkt.messages > 0
            && self
                .cfg
                .gaps
                .iter()
                .any(|&(first, count)| pkt.seq < first + count && first < end)
    }

    /// Sends one packet on every line, with faults.
    pub fn send(&mut self, pkt: OutPacket<'_>) -> std::io::Result<()> {
        // Frames are queued up to a line delay ahead; everything before this packet is final.
        self.drain(pkt.ts_ns)?;
        let gap = self.in_gap(&pkt);
        for line in 0..self.cfg.lines.len() {
            let spec = &self.cfg.lines[line];
            let f = spec.faults;
            let ts = pkt.ts_ns + spec.delay_ns;
            let missing = (pkt.seq, pkt.seq + pkt.messages as u64);
            // A held (reordered) packet goes out right after this one.
            let held = self.held[line].take();
            if gap {
                self.stats[line].gap_dropped += 1;
                self.stats[line].missing.push(missing);
            } else if self.burst_left[line] > 0 || self.rng.chance(f.drop) {
                self.burst_left[line] = self.burst_left[line].saturating_sub(1);
                self.stats[line].dropped += 1;
                if pkt.messages > 0 {
                    self.stats[line].missing.push(missing);
                }
            } else if self.rng.chance(f.burst) {
                self.burst_left[line] = f.burst_len.saturating_sub(1);
                self.stats[line].dropped += 1;
                if pkt.messages > 0 {
                    self.stats[line].missing.push(missing);
                }
            } else if held.is_none() && self.rng.chance(f.reorder) {
                self.stats[line].reordered += 1;
                self.held[line] = Some(Pending {
                    ts_ns: ts,
                    order: 0,
                    line,
                    payload: pkt.payload.to_vec(),
                });
            } else {
                self.queue(ts, line, pkt.payload.to_vec());
                if self.rng.chance(f.dup) {
                    self.stats[line].duplicated += 1;
                    self.queue(ts + 500, line, pkt.payload.to_vec());
                }
            }
            if let Some(h) = held {
                self.queue(ts.max(h.ts_ns) + 1_000, line, h.payload);
            }
        }
        Ok(())
    }

    /// Writes what is still queued or held; returns the output and the stats.
    pub fn finish(mut self) -> std::io::Result<(O, Vec<LineStats>)> {
        for line in 0..self.held.len() {
            if let Some(h) = self.held[line].take() {
                self.queue(h.ts_ns + 1_000, line, h.payload);
            }
        }
        self.drain(u64::MAX)?;
        for s in &mut self.stats {
            s.missing = merge_ranges(std::mem::take(&mut s.missing));
        }
        Ok((self.out, self.stats))
    }
}

/// Sorts and merges touching half-open ranges.
pub fn merge_ranges(mut r: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    r.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(r.len());
    for (a, b) in r {
        match out.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fault_specs() {
        let f =
            LineFaults::parse("drop=0.1,dup=0.01,reorder=0.02,burst=0.001,burst_len=5").unwrap();
        assert_eq!(
            (f.drop, f.dup, f.reorder, f.burst, f.burst_len),
            (0.1, 0.01, 0.02, 0.001, 5)
        );
        assert_eq!(LineFaults::parse("none").unwrap().drop, 0.0);
        assert!(LineFaults::parse("drop=2").is_err());
        assert!(LineFaults::parse("loss=0.1").is_err());
        assert!(LineFaults::parse("drop").is_err());
    }

    #[test]
    fn merges_ranges() {
        assert_eq!(
            merge_ranges(vec![(5, 7), (1, 3), (3, 4), (6, 9)]),
            vec![(1, 4), (5, 9)]
        );
    }
}
