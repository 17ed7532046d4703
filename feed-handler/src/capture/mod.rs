//! Capture files: classic pcap (read, write), pcapng (read) and Nasdaq BinaryFILE (read, write;
//! plain or gzipped), with the format found from the file's first bytes by [`open`].
//!
//! Readers stream from a reusable buffer (no allocation per record) and never trust a length
//! from the file to size an allocation beyond a fixed limit. A file that ends inside a record
//! is [`CaptureError::Truncated`]; one that is not a capture at all is [`CaptureError::Format`].

pub mod binaryfile;
pub mod net;
pub mod pcap;
pub mod pcapng;

use core::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

pub use binaryfile::{BinaryFileReader, BinaryFileWriter};
pub use net::{UdpDatagram, udp_in_frame, write_udp_frame};
pub use pcap::{PcapReader, PcapWriter};
pub use pcapng::PcapngReader;

/// One captured frame.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// Capture time, nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    /// Length of the frame on the wire (may exceed `data.len()` when the capture was cut).
    pub orig_len: u32,
    /// Link type of the frame.
    pub linktype: u32,
    /// Offset of the record in the (decompressed) file.
    pub offset: u64,
    /// The captured bytes.
    pub data: &'a [u8],
}

/// Why a capture could not be read.
#[derive(Debug)]
pub enum CaptureError {
    /// The operating system said no.
    Io(io::Error),
    /// Not a format this reader knows.
    Format(String),
    /// The file ends inside a structure.
    Truncated {
        /// Offset of the structure.
        offset: u64,
        /// What was being read.
        what: &'static str,
    },
    /// A structure whose fields cannot be right.
    Garbage {
        /// Offset of the structure.
        offset: u64,
        /// What is wrong.
        what: String,
    },
}

impl fmt::Display for CaptureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CaptureError::Io(e) => write!(f, "{e}"),
            CaptureError::Format(s) => f.write_str(s),
            CaptureError::Truncated { offset, what } => {
                write!(
                    f,
                    "file is truncated: it ends inside the {what} at byte {offset}"
                )
            }
            CaptureError::Garbage { offset, what } => {
                write!(f, "corrupt file at byte {offset}: {what}")
            }
        }
    }
}

impl std::error::Error for CaptureError {}

impl From<io::Error> for CaptureError {
    fn from(e: io::Error) -> Self {
        CaptureError::Io(e)
    }
}

/// Reads until `buf` is full or the input ends; returns how many bytes were read.
pub(crate) fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The formats [`open`] recognises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Classic libpcap.
    Pcap,
    /// pcapng.
    Pcapng,
    /// Nasdaq BinaryFILE.
    BinaryFile,
}

impl Format {
    /// A short lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Format::Pcap => "pcap",
            Format::Pcapng => "pcapng",
            Format::BinaryFile => "binaryfile",
        }
    }
}

/// A boxed byte source (a file, a gzip decoder over one, or anything else that reads).
pub struct Source(pub Box<dyn Read + Send>);

impl Read for Source {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Source")
    }
}

/// An opened capture of any supported format.
#[derive(Debug)]
pub enum Capture {
    /// Classic pcap.
    Pcap(PcapReader<Source>),
    /// pcapng.
    Pcapng(PcapngReader<Source>),
    /// BinaryFILE.
    BinaryFile(BinaryFileReader<Source>),
}

impl Capture {
    /// The format.
    pub fn format(&self) -> Format {
        match self {
            Capture::Pcap(_) => Format::Pcap,
            Capture::Pcapng(_) => Format::Pcapng,
            Capture::BinaryFile(_) => Format::BinaryFile,
        }
    }
}

/// What a capture holds, one item at a time.
#[derive(Debug, Clone, Copy)]
pub enum Item<'a> {
    /// A frame of a packet capture.
    Frame(Record<'a>),
    /// A message of a BinaryFILE, with its implicit sequence number.
    Message {
        /// Sequence number (1 for the first message).
        seq: u64,
        /// The message bytes.
        bytes: &'a [u8],
    },
}

impl Capture {
    /// The next item, or `None` at the end.
    pub fn next_item(&mut self) -> Result<Option<Item<'_>>, CaptureError> {
        Ok(match self {
            Capture::Pcap(r) => r.next_record()?.map(Item::Frame),
            Capture::Pcapng(r) => r.next_record()?.map(Item::Frame),
            Capture::BinaryFile(r) => r
                .next_message()?
                .map(|(seq, bytes)| Item::Message { seq, bytes }),
        })
    }
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

fn peek<R: BufRead>(r: &mut R, n: usize) -> io::Result<Vec<u8>> {
    let b = r.fill_buf()?;
    Ok(b[..b.len().min(n)].to_vec())
}

/// Opens a capture file, finding its format from its first bytes (gzip is undone first).
pub fn open(path: impl AsRef<Path>) -> Result<Capture, CaptureError> {
    let path = path.as_ref();
    let file = File::open(path)
        .map_err(|e| CaptureError::Format(format!("cannot open {}: {e}", path.display())))?;
    from_reader(Source(Box::new(file)))
}

/// Like [`open`], from any byte source.
pub fn from_reader(src: Source) -> Result<Capture, CaptureError> {
    let mut r = BufReader::with_capacity(1 << 16, src);
    let mut head = peek(&mut r, 4)?;
    let r = if head.starts_with(&GZIP_MAGIC) {
        let mut z = BufReader::with_capacity(1 << 16, flate2::read::MultiGzDecoder::new(r));
        head = peek(&mut z, 4).map_err(|e| CaptureError::Format(format!("bad gzip data: {e}")))?;
        Source(Box::new(z))
    } else {
        Source(Box::new(r))
    };
    if head.is_empty() {
        return Err(CaptureError::Format("the file is empty".into()));
    }
    if head.len() == 4 {
        let le = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        if [pcap::MAGIC_US, pcap::MAGIC_NS]
            .iter()
            .any(|&m| le == m || le == m.swap_bytes())
        {
            return Ok(Capture::Pcap(PcapReader::new(r)?));
        }
        if le == 0x0A0D_0D0A {
            return Ok(Capture::Pcapng(PcapngReader::new(r)?));
        }
    }
    // BinaryFILE has no magic: its first record must be a well-formed ITCH message.
    let looks_like_itch = head.len() >= 3 && {
        let len = u16::from_be_bytes([head[0], head[1]]) as usize;
        crate::itch::expected_len(head[2]) == Some(len)
    };
    if !looks_like_itch {
        return Err(CaptureError::Format(
            "not a pcap, pcapng or Nasdaq BinaryFILE (ITCH 5.0) file: the first bytes match none of them".into(),
        ));
    }
    Ok(Capture::BinaryFile(BinaryFileReader::new(r)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn binaryfile_bytes() -> Vec<u8> {
        let mut w = BinaryFileWriter::new(Vec::new());
        w.write_message(&[b'S', 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, b'O'])
            .unwrap();
        w.into_inner().unwrap()
    }

    #[test]
    fn detects_every_format_plain_and_gzipped() {
        let mut pw = PcapWriter::new(Vec::new(), true, 1).unwrap();
        pw.write_record(1, b"x").unwrap();
        let pcap = pw.into_inner().unwrap();
        let ng = pcapng::tests::build(&[(1, b"x")]);
        let bf = binaryfile_bytes();
        for (bytes, fmt) in [
            (pcap, Format::Pcap),
            (ng, Format::Pcapng),
            (bf, Format::BinaryFile),
        ] {
            let c = from_reader(Source(Box::new(io::Cursor::new(bytes.clone())))).unwrap();
            assert_eq!(c.format(), fmt);
            let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            z.write_all(&bytes).unwrap();
            let gz = z.finish().unwrap();
            let mut c = from_reader(Source(Box::new(io::Cursor::new(gz)))).unwrap();
            assert_eq!(c.format(), fmt);
            assert!(c.next_item().unwrap().is_some());
        }
    }

    #[test]
    fn garbage_and_empty_files_are_clear_errors() {
        for bytes in [
            &b""[..],
            b"hello world, not a capture",
            &[0u8; 100],
            &[0x1f, 0x8b, 1, 2, 3],
        ] {
            let e = from_reader(Source(Box::new(io::Cursor::new(bytes.to_vec())))).unwrap_err();
            assert!(matches!(e, CaptureError::Format(_)), "{e}");
        }
    }
}
