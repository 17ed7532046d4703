//! From a source of ITCH messages (the generator, or a BinaryFILE day file) to a pcap of lines A
//! and B, or to a BinaryFILE.

use crate::lines::{LineStats, LinesConfig, LinesWriter, PcapOut};
use crate::market::Market;
use crate::packetize::{Packetizer, PacketizerConfig};
use feed_handler::capture::{BinaryFileReader, BinaryFileWriter, CaptureError};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// Anything that yields ITCH messages in sequence order.
pub trait MessageSource {
    /// The next message, `Ok(None)` at the end.
    fn next_msg(&mut self) -> Result<Option<&[u8]>, String>;
}

impl MessageSource for Market {
    fn next_msg(&mut self) -> Result<Option<&[u8]>, String> {
        Ok(self.next_message())
    }
}

impl<R: Read> MessageSource for BinaryFileReader<R> {
    fn next_msg(&mut self) -> Result<Option<&[u8]>, String> {
        self.next_message()
            .map(|m| m.map(|(_, b)| b))
            .map_err(|e: CaptureError| e.to_string())
    }
}

/// What a run wrote.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Messages read from the source.
    pub messages: u64,
    /// Message bytes (without framing).
    pub message_bytes: u64,
    /// MoldUDP64 data packets made (per line, before faults).
    pub packets: u64,
    /// Per line figures (empty for BinaryFILE output).
    pub lines: Vec<(String, LineStats)>,
}

impl Summary {
    /// A short report for stderr.
    pub fn to_text(&self) -> String {
        let mut s = format!("{} messages ({} bytes)", self.messages, self.message_bytes);
        if !self.lines.is_empty() {
            s += &format!(", {} MoldUDP64 packets per line", self.packets);
        }
        s.push('\n');
        for (name, l) in &self.lines {
            s += &format!(
                "line {name}: {} frames written, {} dropped, {} dropped in gaps, {} duplicated, {} reordered, {} missing ranges\n",
                l.written,
                l.dropped,
                l.gap_dropped,
                l.duplicated,
                l.reordered,
                l.missing.len()
            );
        }
        s
    }
}

/// Prints progress to stderr every few seconds of a long run.
#[derive(Debug)]
pub struct Progress {
    label: &'static str,
    start: Instant,
    next: Instant,
    every: Duration,
    enabled: bool,
}

impl Progress {
    /// A meter that prints every `every` once a run has lasted that long.
    pub fn new(label: &'static str, enabled: bool) -> Self {
        let every = Duration::from_secs(2);
        let now = Instant::now();
        Progress {
            label,
            start: now,
            next: now + every,
            every,
            enabled,
        }
    }

    /// Reports `messages` and `bytes` done (cheap to call often: checks the clock every 64k).
    #[inline]
    pub fn tick(&mut self, messages: u64, bytes: u64) {
        if !self.enabled || messages & 0xffff != 0 {
            return;
        }
        let now = Instant::now();
        if now >= self.next {
            self.next = now + self.every;
            let secs = now.duration_since(self.start).as_secs_f64();
            eprintln!(
                "{}: {:.1}M messages, {:.0} MB, {:.2}M msg/s, {:.0} s",
                self.label,
                messages as f64 / 1e6,
                bytes as f64 / 1e6,
                messages as f64 / secs / 1e6,
                secs
            );
        }
    }
}

/// Packs every message of `src` into MoldUDP64 packets on the configured lines, written as a pcap.
pub fn to_pcap<W: Write>(
    src: &mut dyn MessageSource,
    pk: PacketizerConfig,
    lines: LinesConfig,
    out: W,
    progress: &mut Progress,
) -> Result<(W, Summary), String> {
    let names: Vec<String> = lines.lines.iter().map(|l| l.name.to_string()).collect();
    let mut packer = Packetizer::new(pk);
    let epoch = lines.epoch_offset_ns;
    let mut w = LinesWriter::new(
        PcapOut::new(out, epoch).map_err(|e| format!("write: {e}"))?,
        lines,
    )
    .map_err(|e| format!("write: {e}"))?;
    let mut sum = Summary::default();
    let mut io_err: Option<std::io::Error> = None;
    let mut last_ts = 0u64;
    while let Some(msg) = src.next_msg()? {
        // A message too short to carry a timestamp keeps the previous one; time never goes back.
        let ts = feed_handler::itch::timestamp_of(msg)
            .unwrap_or(last_ts)
            .max(last_ts);
        last_ts = ts;
        sum.messages += 1;
        sum.message_bytes += msg.len() as u64;
        packer.push(ts, msg, &mut |p| {
            if io_err.is_none()
                && let Err(e) = w.send(p)
            {
                io_err = Some(e);
            }
        })?;
        if let Some(e) = io_err.take() {
            return Err(format!("write: {e}"));
        }
        progress.tick(sum.messages, sum.message_bytes);
    }
    packer.finish(3, &mut |p| {
        if io_err.is_none()
            && let Err(e) = w.send(p)
        {
            io_err = Some(e);
        }
    });
    if let Some(e) = io_err {
        return Err(format!("write: {e}"));
    }
    sum.packets = packer.packets();
    let (out, stats) = w.finish().map_err(|e| format!("write: {e}"))?;
    let out = out.into_inner().map_err(|e| format!("write: {e}"))?;
    sum.lines = names.into_iter().zip(stats).collect();
    Ok((out, sum))
}

/// Writes every message of `src` as a BinaryFILE.
pub fn to_binaryfile<W: Write>(
    src: &mut dyn MessageSource,
    out: W,
    progress: &mut Progress,
) -> Result<(W, Summary), String> {
    let mut w = BinaryFileWriter::new(out);
    let mut sum = Summary::default();
    while let Some(msg) = src.next_msg()? {
        w.write_message(msg).map_err(|e| format!("write: {e}"))?;
        sum.messages += 1;
        sum.message_bytes += msg.len() as u64;
        progress.tick(sum.messages, sum.message_bytes);
    }
    Ok((w.into_inner().map_err(|e| format!("write: {e}"))?, sum))
}
