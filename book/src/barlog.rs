//! The bar log: every closed 1-second and 1-minute bar, appended to a file the gateway reads for
//! charts. It is written by the conflation thread once per batch and made again from the journal
//! when the book restarts (the rebuild replays every trade of the day), so a restart keeps the
//! day.
//!
//! ```text
//!  offset 0    magic "ITCHBAR1" | version u32 | record size u32 (48) | zero padding to 64
//!  then        records of 48 bytes, little-endian:
//!              symbol [u8; 8] | channel u16 | interval_s u8 | pad u8 | trades u32 |
//!              start_ns u64 | open u32 | high u32 | low u32 | close u32 | volume u64
//! ```

use crate::bars::Bar;
use std::io::{BufWriter, Write};
use std::path::Path;

/// The bar log beside a quote table: `<quotes>.bars`.
pub fn beside(quotes: &Path) -> std::path::PathBuf {
    let mut p = quotes.as_os_str().to_owned();
    p.push(".bars");
    p.into()
}

/// "ITCHBAR1".
pub const MAGIC: [u8; 8] = *b"ITCHBAR1";
/// Format version.
pub const VERSION: u32 = 1;
/// Header bytes.
pub const HEADER: usize = 64;
/// Record bytes.
pub const RECORD: usize = 48;

/// One logged bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarRecord {
    /// Symbol, space padded.
    pub symbol: [u8; 8],
    /// Feed channel.
    pub channel: u16,
    /// 1 or 60.
    pub interval_s: u8,
    /// The bar.
    pub bar: Bar,
}

impl BarRecord {
    /// The record's bytes in the log (and in Redis).
    pub fn to_bytes(self) -> [u8; RECORD] {
        let mut b = [0u8; RECORD];
        b[..8].copy_from_slice(&self.symbol);
        b[8..10].copy_from_slice(&self.channel.to_le_bytes());
        b[10] = self.interval_s;
        b[12..16].copy_from_slice(&self.bar.trades.to_le_bytes());
        b[16..24].copy_from_slice(&self.bar.start_ns.to_le_bytes());
        b[24..28].copy_from_slice(&self.bar.open.to_le_bytes());
        b[28..32].copy_from_slice(&self.bar.high.to_le_bytes());
        b[32..36].copy_from_slice(&self.bar.low.to_le_bytes());
        b[36..40].copy_from_slice(&self.bar.close.to_le_bytes());
        b[40..48].copy_from_slice(&self.bar.volume.to_le_bytes());
        b
    }

    fn from_bytes(b: &[u8]) -> BarRecord {
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"));
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
        BarRecord {
            symbol: b[..8].try_into().expect("8 bytes"),
            channel: u16::from_le_bytes([b[8], b[9]]),
            interval_s: b[10],
            bar: Bar {
                trades: u32_at(12),
                start_ns: u64_at(16),
                open: u32_at(24),
                high: u32_at(28),
                low: u32_at(32),
                close: u32_at(36),
                volume: u64_at(40),
            },
        }
    }
}

/// Appends bars.
#[derive(Debug)]
pub struct BarLogWriter {
    out: BufWriter<std::fs::File>,
}

impl BarLogWriter {
    /// Creates (replaces) the log.
    pub fn create(path: &Path) -> std::io::Result<Self> {
        Self::create_in(std::fs::File::create(path)?)
    }

    /// Starts a log in `f`, a new empty file (e.g. a memfd).
    pub fn create_in(f: std::fs::File) -> std::io::Result<Self> {
        let mut out = BufWriter::new(f);
        let mut h = [0u8; HEADER];
        h[..8].copy_from_slice(&MAGIC);
        h[8..12].copy_from_slice(&VERSION.to_le_bytes());
        h[12..16].copy_from_slice(&(RECORD as u32).to_le_bytes());
        out.write_all(&h)?;
        out.flush()?;
        Ok(BarLogWriter { out })
    }

    /// Appends one bar (buffered until [`BarLogWriter::flush`]).
    pub fn append(&mut self, r: BarRecord) -> std::io::Result<()> {
        self.out.write_all(&r.to_bytes())
    }

    /// Writes what is buffered.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// Reads every complete record of a log (a record being written at the end is left out).
pub fn read_all(path: &Path) -> Result<Vec<BarRecord>, String> {
    let b = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if b.len() < HEADER
        || b[..8] != MAGIC
        || u32::from_le_bytes(b[8..12].try_into().expect("4")) != VERSION
    {
        return Err(format!(
            "{}: not a bar log of version {VERSION}",
            path.display()
        ));
    }
    Ok(b[HEADER..]
        .chunks_exact(RECORD)
        .map(BarRecord::from_bytes)
        .collect())
}

/// Decodes one record of [`RECORD`] bytes (as found after the header).
pub fn record_from_bytes(b: &[u8]) -> BarRecord {
    BarRecord::from_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_round_trip_and_a_cut_record_is_left_out() {
        let p = std::env::temp_dir().join(format!("barlog-{}", std::process::id()));
        let mut w = BarLogWriter::create(&p).unwrap();
        let r = BarRecord {
            symbol: *b"AAPL    ",
            channel: 2,
            interval_s: 60,
            bar: Bar {
                start_ns: 34_200_000_000_000,
                open: 1,
                high: 5,
                low: 1,
                close: 4,
                volume: 900,
                trades: 3,
            },
        };
        w.append(r).unwrap();
        w.append(BarRecord { interval_s: 1, ..r }).unwrap();
        w.flush().unwrap();
        assert_eq!(
            read_all(&p).unwrap(),
            vec![r, BarRecord { interval_s: 1, ..r }]
        );
        let mut bytes = std::fs::read(&p).unwrap();
        bytes.truncate(bytes.len() - 10);
        std::fs::write(&p, &bytes).unwrap();
        assert_eq!(read_all(&p).unwrap(), vec![r]);
        std::fs::write(&p, b"nope").unwrap();
        assert!(read_all(&p).is_err());
        std::fs::remove_file(&p).unwrap();
    }
}
