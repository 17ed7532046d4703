//! Classic libpcap files: read (either byte order, µs or ns timestamps) and write.
//!
//! ```text
//!  file header (24 B): magic u32 | major u16 | minor u16 | thiszone i32 | sigfigs u32 |
//!                      snaplen u32 | linktype u32
//!  record header (16 B): ts_sec u32 | ts_frac u32 (µs or ns) | incl_len u32 | orig_len u32
//!  magic a1b2c3d4 = µs, a1b23c4d = ns; written in the writer's byte order.
//! ```

use super::{CaptureError, Record, read_full};
use std::io::{Read, Write};

/// Magic of a microsecond pcap.
pub const MAGIC_US: u32 = 0xa1b2_c3d4;
/// Magic of a nanosecond pcap.
pub const MAGIC_NS: u32 = 0xa1b2_3c4d;
/// The largest record this reader accepts; anything larger is taken as garbage, not allocated.
pub const MAX_RECORD: usize = 256 * 1024;

/// A streaming reader over a classic pcap.
#[derive(Debug)]
pub struct PcapReader<R> {
    inner: R,
    swapped: bool,
    nanos: bool,
    linktype: u32,
    buf: Vec<u8>,
    offset: u64,
}

impl<R: Read> PcapReader<R> {
    /// Reads the file header.
    pub fn new(mut inner: R) -> Result<Self, CaptureError> {
        let mut h = [0u8; 24];
        if read_full(&mut inner, &mut h)? != 24 {
            return Err(CaptureError::Truncated {
                offset: 0,
                what: "pcap file header",
            });
        }
        let magic_le = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        let (swapped, nanos) = match magic_le {
            MAGIC_US => (false, false),
            MAGIC_NS => (false, true),
            m if m.swap_bytes() == MAGIC_US => (true, false),
            m if m.swap_bytes() == MAGIC_NS => (true, true),
            _ => return Err(CaptureError::Format("not a pcap file (bad magic)".into())),
        };
        let rd = |at: usize| {
            let v = u32::from_le_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
            if swapped { v.swap_bytes() } else { v }
        };
        // The link type's low 16 bits are the type; the high bits carry FCS flags.
        let linktype = rd(20) & 0xffff;
        Ok(PcapReader {
            inner,
            swapped,
            nanos,
            linktype,
            buf: Vec::with_capacity(2048),
            offset: 24,
        })
    }

    /// The file's link type.
    pub fn linktype(&self) -> u32 {
        self.linktype
    }

    /// True when timestamps have nanosecond resolution.
    pub fn nanos(&self) -> bool {
        self.nanos
    }

    /// The next record, or `None` at a clean end of file.
    pub fn next_record(&mut self) -> Result<Option<Record<'_>>, CaptureError> {
        let mut h = [0u8; 16];
        match read_full(&mut self.inner, &mut h)? {
            0 => return Ok(None),
            16 => {}
            _ => {
                return Err(CaptureError::Truncated {
                    offset: self.offset,
                    what: "pcap record header",
                });
            }
        }
        let rd = |at: usize| {
            let v = u32::from_le_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
            if self.swapped { v.swap_bytes() } else { v }
        };
        let (sec, frac, incl, orig) = (rd(0), rd(4), rd(8) as usize, rd(12));
        if incl > MAX_RECORD {
            return Err(CaptureError::Garbage {
                offset: self.offset,
                what: format!("pcap record of {incl} bytes (the limit is {MAX_RECORD})"),
            });
        }
        let frac_ns = if self.nanos {
            frac as u64
        } else {
            frac as u64 * 1000
        };
        self.buf.resize(incl, 0);
        if read_full(&mut self.inner, &mut self.buf)? != incl {
            return Err(CaptureError::Truncated {
                offset: self.offset,
                what: "pcap record data",
            });
        }
        let at = self.offset;
        self.offset += 16 + incl as u64;
        Ok(Some(Record {
            ts_ns: sec as u64 * 1_000_000_000 + frac_ns,
            orig_len: orig,
            linktype: self.linktype,
            offset: at,
            data: &self.buf,
        }))
    }
}

/// Writes a classic pcap in little-endian order.
#[derive(Debug)]
pub struct PcapWriter<W: Write> {
    inner: W,
    nanos: bool,
}

impl<W: Write> PcapWriter<W> {
    /// Writes the file header: `nanos` picks ns (`a1b23c4d`) over µs timestamps.
    pub fn new(mut inner: W, nanos: bool, linktype: u32) -> std::io::Result<Self> {
        let mut h = Vec::with_capacity(24);
        h.extend_from_slice(&(if nanos { MAGIC_NS } else { MAGIC_US }).to_le_bytes());
        h.extend_from_slice(&2u16.to_le_bytes());
        h.extend_from_slice(&4u16.to_le_bytes());
        h.extend_from_slice(&0i32.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes());
        h.extend_from_slice(&(MAX_RECORD as u32).to_le_bytes());
        h.extend_from_slice(&linktype.to_le_bytes());
        inner.write_all(&h)?;
        Ok(PcapWriter { inner, nanos })
    }

    /// Writes one record stamped `ts_ns` (nanoseconds since the Unix epoch).
    pub fn write_record(&mut self, ts_ns: u64, data: &[u8]) -> std::io::Result<()> {
        let sec = (ts_ns / 1_000_000_000) as u32;
        let frac = if self.nanos {
            ts_ns % 1_000_000_000
        } else {
            ts_ns % 1_000_000_000 / 1000
        } as u32;
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&sec.to_le_bytes());
        h[4..8].copy_from_slice(&frac.to_le_bytes());
        h[8..12].copy_from_slice(&(data.len() as u32).to_le_bytes());
        h[12..16].copy_from_slice(&(data.len() as u32).to_le_bytes());
        self.inner.write_all(&h)?;
        self.inner.write_all(data)
    }

    /// Flushes and returns the inner writer.
    pub fn into_inner(mut self) -> std::io::Result<W> {
        self.inner.flush()?;
        Ok(self.inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read_both_resolutions() {
        for nanos in [false, true] {
            let mut w = PcapWriter::new(Vec::new(), nanos, 1).unwrap();
            w.write_record(1_700_000_000_123_456_789, b"abc").unwrap();
            w.write_record(1_700_000_001_000_000_000, b"").unwrap();
            let bytes = w.into_inner().unwrap();
            let mut r = PcapReader::new(&bytes[..]).unwrap();
            assert_eq!(r.linktype(), 1);
            let a = r.next_record().unwrap().unwrap();
            let want = if nanos {
                1_700_000_000_123_456_789
            } else {
                1_700_000_000_123_456_000
            };
            assert_eq!((a.ts_ns, a.data), (want, &b"abc"[..]));
            assert_eq!(r.next_record().unwrap().unwrap().data.len(), 0);
            assert!(r.next_record().unwrap().is_none());
        }
    }

    #[test]
    fn big_endian_files_read() {
        let mut f = Vec::new();
        f.extend_from_slice(&MAGIC_US.to_be_bytes());
        f.extend_from_slice(&[
            0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 1,
        ]);
        f.extend_from_slice(&[0, 0, 0, 5, 0, 0, 0, 7, 0, 0, 0, 2, 0, 0, 0, 2, 0xaa, 0xbb]);
        let mut r = PcapReader::new(&f[..]).unwrap();
        let rec = r.next_record().unwrap().unwrap();
        assert_eq!((rec.ts_ns, rec.data), (5_000_007_000, &[0xaa, 0xbb][..]));
    }

    #[test]
    fn truncation_and_garbage_are_errors() {
        let mut w = PcapWriter::new(Vec::new(), true, 1).unwrap();
        w.write_record(1, &[1; 100]).unwrap();
        let bytes = w.into_inner().unwrap();
        assert!(PcapReader::new(&bytes[..10]).is_err());
        let mut r = PcapReader::new(&bytes[..24 + 16 + 50]).unwrap();
        assert!(matches!(
            r.next_record(),
            Err(CaptureError::Truncated { .. })
        ));
        let mut r = PcapReader::new(&bytes[..24 + 8]).unwrap();
        assert!(matches!(
            r.next_record(),
            Err(CaptureError::Truncated { .. })
        ));
        let mut huge = bytes.clone();
        huge[24 + 8..24 + 12].copy_from_slice(&u32::MAX.to_le_bytes());
        let mut r = PcapReader::new(&huge[..]).unwrap();
        assert!(matches!(r.next_record(), Err(CaptureError::Garbage { .. })));
        assert!(PcapReader::new(&[0u8; 24][..]).is_err());
    }
}
