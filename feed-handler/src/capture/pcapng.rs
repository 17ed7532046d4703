//! pcapng files: read (what Wireshark and recent tcpdump write).
//!
//! ```text
//!  block: type u32 | total_len u32 | body (padded to 4) | total_len u32
//!  SHB 0x0A0D0D0A: byte-order magic 0x1A2B3C4D | major u16 | minor u16 | section_len i64 | opts
//!  IDB 0x00000001: linktype u16 | reserved u16 | snaplen u32 | opts (if_tsresol = code 9)
//!  EPB 0x00000006: iface u32 | ts_high u32 | ts_low u32 | caplen u32 | origlen u32 | data | opts
//!  SPB 0x00000003: origlen u32 | data            OPB 0x00000002: iface u16 | drops u16 | ts ...
//! ```
//! Other blocks (name resolution, statistics, custom) are skipped. Each section (SHB) has its
//! own byte order and interfaces.

use super::{CaptureError, Record, read_full};
use std::io::Read;

const SHB: u32 = 0x0A0D_0D0A;
const IDB: u32 = 1;
const OPB: u32 = 2;
const SPB: u32 = 3;
const EPB: u32 = 6;
const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;
/// The largest block this reader accepts; anything larger is taken as garbage.
pub const MAX_BLOCK: usize = 1 << 20;

#[derive(Debug, Clone, Copy)]
struct Interface {
    linktype: u32,
    snaplen: u32,
    /// Timestamp unit: (is_power_of_two, exponent).
    tsresol: (bool, u8),
}

/// A streaming reader over a pcapng file.
#[derive(Debug)]
pub struct PcapngReader<R> {
    inner: R,
    swapped: bool,
    interfaces: Vec<Interface>,
    buf: Vec<u8>,
    offset: u64,
}

impl<R: Read> PcapngReader<R> {
    /// Starts reading; the first block must be a Section Header Block.
    pub fn new(inner: R) -> Result<Self, CaptureError> {
        let mut r = PcapngReader {
            inner,
            swapped: false,
            interfaces: Vec::new(),
            buf: Vec::new(),
            offset: 0,
        };
        match r.read_block()? {
            Some(SHB) => Ok(r),
            _ => Err(CaptureError::Format(
                "not a pcapng file (no section header block)".into(),
            )),
        }
    }

    fn u32_at(&self, at: usize) -> u32 {
        let b = &self.buf;
        let v = u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        if self.swapped { v.swap_bytes() } else { v }
    }

    fn u16_at(&self, at: usize) -> u16 {
        let v = u16::from_le_bytes([self.buf[at], self.buf[at + 1]]);
        if self.swapped { v.swap_bytes() } else { v }
    }

    /// Reads one block into `buf` (its body, without the type and lengths) and handles section
    /// and interface blocks. Returns the block type, or `None` at a clean end of file.
    fn read_block(&mut self) -> Result<Option<u32>, CaptureError> {
        let at = self.offset;
        let mut h = [0u8; 8];
        match read_full(&mut self.inner, &mut h)? {
            0 => return Ok(None),
            8 => {}
            _ => {
                return Err(CaptureError::Truncated {
                    offset: at,
                    what: "pcapng block header",
                });
            }
        }
        let raw_type = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        let raw_len = [h[4], h[5], h[6], h[7]];
        if raw_type == SHB {
            // The byte order is in the body; peek at it first.
            let mut bom = [0u8; 4];
            if read_full(&mut self.inner, &mut bom)? != 4 {
                return Err(CaptureError::Truncated {
                    offset: at,
                    what: "pcapng section header",
                });
            }
            self.swapped = match u32::from_le_bytes(bom) {
                BYTE_ORDER_MAGIC => false,
                m if m.swap_bytes() == BYTE_ORDER_MAGIC => true,
                _ => {
                    return Err(CaptureError::Format(
                        "pcapng section header has a bad byte-order magic".into(),
                    ));
                }
            };
            self.interfaces.clear();
        }
        let total = {
            let v = u32::from_le_bytes(raw_len);
            (if self.swapped { v.swap_bytes() } else { v }) as usize
        };
        if total < 12 || total % 4 != 0 || total > MAX_BLOCK {
            return Err(CaptureError::Garbage {
                offset: at,
                what: format!("pcapng block length {total}"),
            });
        }
        let block_type = if self.swapped {
            raw_type.swap_bytes()
        } else {
            raw_type
        };
        let already = if block_type == SHB { 4 } else { 0 };
        let body_len = total - 12;
        if body_len < already {
            return Err(CaptureError::Garbage {
                offset: at,
                what: "pcapng section header too short".into(),
            });
        }
        self.buf.resize(body_len + 4, 0);
        if already > 0 {
            self.buf[..4].copy_from_slice(&BYTE_ORDER_MAGIC.to_le_bytes());
        }
        let want = body_len + 4 - already;
        if read_full(&mut self.inner, &mut self.buf[already..])? != want {
            return Err(CaptureError::Truncated {
                offset: at,
                what: "pcapng block",
            });
        }
        if self.u32_at(body_len) as usize != total {
            return Err(CaptureError::Garbage {
                offset: at,
                what: "pcapng block trailer length differs".into(),
            });
        }
        self.buf.truncate(body_len);
        self.offset += total as u64;
        if block_type == IDB {
            if body_len < 8 {
                return Err(CaptureError::Garbage {
                    offset: at,
                    what: "pcapng interface block too short".into(),
                });
            }
            let mut iface = Interface {
                linktype: self.u16_at(0) as u32,
                snaplen: self.u32_at(4),
                tsresol: (false, 6),
            };
            let mut o = 8;
            while o + 4 <= body_len {
                let (code, len) = (self.u16_at(o), self.u16_at(o + 2) as usize);
                if code == 0 {
                    break;
                }
                if code == 9 && len >= 1 && o + 4 < body_len {
                    let v = self.buf[o + 4];
                    iface.tsresol = (v & 0x80 != 0, v & 0x7f);
                }
                o += 4 + len.div_ceil(4) * 4;
            }
            self.interfaces.push(iface);
        }
        Ok(Some(block_type))
    }

    fn ts_ns(&self, iface: &Interface, high: u32, low: u32) -> u64 {
        let t = ((high as u128) << 32) | low as u128;
        let ns = match iface.tsresol {
            (false, e) if e <= 9 => t * 10u128.pow(9 - e as u32),
            (false, e) => t / 10u128.pow((e as u32 - 9).min(38)),
            (true, e) => (t * 1_000_000_000) >> e.min(127),
        };
        ns.min(u64::MAX as u128) as u64
    }

    /// The next packet record, or `None` at a clean end of file.
    pub fn next_record(&mut self) -> Result<Option<Record<'_>>, CaptureError> {
        loop {
            let at = self.offset;
            let Some(t) = self.read_block()? else {
                return Ok(None);
            };
            let garbage = |what: &str| CaptureError::Garbage {
                offset: at,
                what: what.into(),
            };
            let (iface_id, high, low, caplen, orig, data_at) = match t {
                EPB => {
                    if self.buf.len() < 20 {
                        return Err(garbage("pcapng enhanced packet block too short"));
                    }
                    (
                        self.u32_at(0) as usize,
                        self.u32_at(4),
                        self.u32_at(8),
                        self.u32_at(12) as usize,
                        self.u32_at(16),
                        20,
                    )
                }
                OPB => {
                    if self.buf.len() < 20 {
                        return Err(garbage("pcapng packet block too short"));
                    }
                    (
                        self.u16_at(0) as usize,
                        self.u32_at(4),
                        self.u32_at(8),
                        self.u32_at(12) as usize,
                        self.u32_at(16),
                        20,
                    )
                }
                SPB => {
                    if self.buf.len() < 4 {
                        return Err(garbage("pcapng simple packet block too short"));
                    }
                    let orig = self.u32_at(0);
                    let snap = self.interfaces.first().map_or(u32::MAX, |i| i.snaplen);
                    let snap = if snap == 0 { u32::MAX } else { snap };
                    let cap = (orig.min(snap) as usize).min(self.buf.len() - 4);
                    (0, 0, 0, cap, orig, 4)
                }
                _ => continue,
            };
            let Some(iface) = self.interfaces.get(iface_id).copied() else {
                return Err(garbage(
                    "pcapng packet refers to an interface that was not described",
                ));
            };
            if data_at + caplen > self.buf.len() {
                return Err(garbage("pcapng packet data runs past its block"));
            }
            let ts_ns = self.ts_ns(&iface, high, low);
            return Ok(Some(Record {
                ts_ns,
                orig_len: orig,
                linktype: iface.linktype,
                offset: at,
                data: &self.buf[data_at..data_at + caplen],
            }));
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a little pcapng: SHB, IDB (ns resolution), then one EPB per packet.
    pub(crate) fn build(packets: &[(u64, &[u8])]) -> Vec<u8> {
        let mut f = Vec::new();
        let block = |f: &mut Vec<u8>, t: u32, body: &[u8]| {
            let pad = body.len().div_ceil(4) * 4;
            let total = (12 + pad) as u32;
            f.extend_from_slice(&t.to_le_bytes());
            f.extend_from_slice(&total.to_le_bytes());
            f.extend_from_slice(body);
            f.extend(std::iter::repeat_n(0, pad - body.len()));
            f.extend_from_slice(&total.to_le_bytes());
        };
        let mut shb = BYTE_ORDER_MAGIC.to_le_bytes().to_vec();
        shb.extend_from_slice(&[1, 0, 0, 0]);
        shb.extend_from_slice(&(-1i64).to_le_bytes());
        block(&mut f, SHB, &shb);
        let mut idb = vec![1, 0, 0, 0];
        idb.extend_from_slice(&0u32.to_le_bytes());
        idb.extend_from_slice(&[9, 0, 1, 0, 9, 0, 0, 0, 0, 0, 0, 0]); // if_tsresol = 9, end
        block(&mut f, IDB, &idb);
        for (ts, data) in packets {
            let mut epb = 0u32.to_le_bytes().to_vec();
            epb.extend_from_slice(&((ts >> 32) as u32).to_le_bytes());
            epb.extend_from_slice(&(*ts as u32).to_le_bytes());
            epb.extend_from_slice(&(data.len() as u32).to_le_bytes());
            epb.extend_from_slice(&(data.len() as u32).to_le_bytes());
            epb.extend_from_slice(data);
            block(&mut f, EPB, &epb);
        }
        f
    }

    #[test]
    fn reads_enhanced_packets_with_ns_resolution() {
        let f = build(&[(1_700_000_000_123_456_789, b"hello"), (5, b"")]);
        let mut r = PcapngReader::new(&f[..]).unwrap();
        let a = r.next_record().unwrap().unwrap();
        assert_eq!(
            (a.ts_ns, a.data, a.linktype),
            (1_700_000_000_123_456_789, &b"hello"[..], 1)
        );
        let b = r.next_record().unwrap().unwrap();
        assert_eq!((b.ts_ns, b.data.len()), (5, 0));
        assert!(r.next_record().unwrap().is_none());
    }

    #[test]
    fn truncated_and_garbage_blocks_are_errors() {
        let f = build(&[(1, b"hello world")]);
        // 28 and 60 end the section and interface blocks: a clean (empty) file there.
        for cut in (1..f.len()).filter(|c| *c != 28 && *c != 60) {
            let res = PcapngReader::new(&f[..cut]).and_then(|mut r| {
                while r.next_record()?.is_some() {}
                Ok(())
            });
            assert!(res.is_err(), "cut at {cut}");
        }
        let mut g = f.clone();
        g[4] = 13; // SHB length not a multiple of 4
        assert!(PcapngReader::new(&g[..]).is_err());
        assert!(PcapngReader::new(&[0u8; 32][..]).is_err());
    }
}
