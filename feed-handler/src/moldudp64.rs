//! MoldUDP64 1.00: the packet framing Nasdaq puts ITCH in on multicast.
//!
//! ```text
//!  downstream packet                       request packet (client -> re-request server)
//!  0        10          18     20          0        10          18     20
//!  +--------+-----------+------+---...     +--------+-----------+------+
//!  |session |sequence   |count |blocks     |session |sequence   |count |
//!  | a10    |u64 BE     |u16 BE|           | a10    |u64 BE     |u16 BE|
//!  +--------+-----------+------+---...     +--------+-----------+------+
//!  block = length u16 BE (data bytes only) + data; blocks follow each other directly.
//!  count 0 = heartbeat, 0xFFFF = end of session: both carry the next expected sequence.
//! ```
//!
//! [`Packet::parse`] checks the whole block structure before it hands out anything: a packet
//! whose blocks do not add up exactly (truncated, a length past the end, a count that
//! disagrees, trailing bytes) is one error, so a caller never applies half a packet and can take
//! the packet from the other line or the re-request server instead.

use crate::itch::{Alpha, U16, U64};
use core::fmt;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Header and request length in bytes.
pub const HEADER_LEN: usize = 20;
/// Message count of a heartbeat.
pub const COUNT_HEARTBEAT: u16 = 0;
/// Message count of an end-of-session packet.
pub const COUNT_END_OF_SESSION: u16 = 0xFFFF;
/// The largest message count a data packet may carry.
pub const MAX_MESSAGE_COUNT: u16 = 0xFFFE;
/// The payload size Nasdaq's reference implementation packs to (fits a 1500-byte MTU).
pub const DEFAULT_MAX_PAYLOAD: usize = 1400;
/// The largest UDP payload on IPv4.
pub const MAX_UDP_PAYLOAD: usize = 65_507;

/// A MoldUDP64 session name: 10 ASCII bytes, space padded.
pub type Session = Alpha<10>;

/// The 20-byte header of a downstream packet; also the whole of a request packet.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct PacketHeader {
    /// Session name.
    pub session: Session,
    /// Sequence number of the first message (data) or the next expected one (heartbeat, EOS).
    pub sequence: U64,
    /// Number of messages, or 0 / 0xFFFF.
    pub message_count: U16,
}
const _: () = assert!(core::mem::size_of::<PacketHeader>() == HEADER_LEN);

/// What a downstream packet is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketKind {
    /// One or more messages.
    Messages,
    /// No messages; carries the next expected sequence number.
    Heartbeat,
    /// The session is over; carries the next expected sequence number.
    EndOfSession,
}

/// A downstream packet whose block structure has been checked.
#[derive(Debug, Clone, Copy)]
pub struct Packet<'a> {
    header: &'a PacketHeader,
    blocks: &'a [u8],
}

impl<'a> Packet<'a> {
    /// Reads and checks a UDP payload.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, MoldError> {
        let Ok((header, blocks)) = PacketHeader::ref_from_prefix(bytes) else {
            return Err(MoldError::TooShort { len: bytes.len() });
        };
        let count = header.message_count.get();
        if header.sequence.get().checked_add(count as u64).is_none() {
            return Err(MoldError::SequenceOverflow {
                sequence: header.sequence.get(),
            });
        }
        if count == COUNT_HEARTBEAT || count == COUNT_END_OF_SESSION {
            if !blocks.is_empty() {
                return Err(MoldError::TrailingBytes {
                    count,
                    extra: blocks.len(),
                });
            }
        } else {
            let mut off = 0usize;
            for index in 0..count {
                let Some(len_bytes) = blocks.get(off..off + 2) else {
                    return Err(MoldError::CountMismatch {
                        declared: count,
                        found: index,
                    });
                };
                let len = u16::from_be_bytes([len_bytes[0], len_bytes[1]]) as usize;
                if off + 2 + len > blocks.len() {
                    return Err(MoldError::BlockOverrun {
                        index,
                        offset: HEADER_LEN + off,
                        len,
                    });
                }
                off += 2 + len;
            }
            if off != blocks.len() {
                return Err(MoldError::TrailingBytes {
                    count,
                    extra: blocks.len() - off,
                });
            }
        }
        Ok(Packet { header, blocks })
    }

    /// The header.
    #[inline]
    pub fn header(&self) -> &'a PacketHeader {
        self.header
    }
    /// The session.
    #[inline]
    pub fn session(&self) -> &'a Session {
        &self.header.session
    }
    /// Sequence number of the first message, or the next expected one for a heartbeat / EOS.
    #[inline]
    pub fn sequence(&self) -> u64 {
        self.header.sequence.get()
    }
    /// The raw count field.
    #[inline]
    pub fn count_field(&self) -> u16 {
        self.header.message_count.get()
    }
    /// Number of messages in the packet (0 for heartbeat and EOS).
    #[inline]
    pub fn message_count(&self) -> u16 {
        match self.kind() {
            PacketKind::Messages => self.count_field(),
            _ => 0,
        }
    }
    /// What the packet is.
    #[inline]
    pub fn kind(&self) -> PacketKind {
        match self.count_field() {
            COUNT_HEARTBEAT => PacketKind::Heartbeat,
            COUNT_END_OF_SESSION => PacketKind::EndOfSession,
            _ => PacketKind::Messages,
        }
    }
    /// The sequence number after this packet's messages.
    #[inline]
    pub fn next_sequence(&self) -> u64 {
        self.sequence().saturating_add(self.message_count() as u64)
    }
    /// The messages with their sequence numbers, in order.
    #[inline]
    pub fn messages(&self) -> Messages<'a> {
        Messages {
            rest: self.blocks,
            seq: self.sequence(),
            left: self.message_count(),
        }
    }
}

/// Iterator over `(sequence, message bytes)` of a checked packet.
#[derive(Debug, Clone)]
pub struct Messages<'a> {
    rest: &'a [u8],
    seq: u64,
    left: u16,
}

impl<'a> Iterator for Messages<'a> {
    type Item = (u64, &'a [u8]);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        // Packet::parse checked every block fits; `get` keeps this safe even if it did not.
        let len = u16::from_be_bytes([*self.rest.first()?, *self.rest.get(1)?]) as usize;
        let msg = self.rest.get(2..2 + len)?;
        self.rest = &self.rest[2 + len..];
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        self.left -= 1;
        Some((seq, msg))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left as usize, Some(self.left as usize))
    }
}

/// Why a UDP payload is not a valid MoldUDP64 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoldError {
    /// Shorter than the 20-byte header.
    TooShort {
        /// Payload length.
        len: usize,
    },
    /// Fewer blocks than the count says.
    CountMismatch {
        /// The count field.
        declared: u16,
        /// Blocks present.
        found: u16,
    },
    /// A block's length runs past the end of the payload.
    BlockOverrun {
        /// Block index (0-based).
        index: u16,
        /// Offset of its length field in the payload.
        offset: usize,
        /// The length it declares.
        len: usize,
    },
    /// A sequence number so large that the packet's messages would pass 2^64.
    SequenceOverflow {
        /// The sequence field.
        sequence: u64,
    },
    /// Bytes after the last block (or after a heartbeat / end-of-session header).
    TrailingBytes {
        /// The count field.
        count: u16,
        /// Extra bytes.
        extra: usize,
    },
}

impl fmt::Display for MoldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            MoldError::TooShort { len } => {
                write!(
                    f,
                    "MoldUDP64 packet of {len} bytes is shorter than its 20-byte header"
                )
            }
            MoldError::CountMismatch { declared, found } => {
                write!(
                    f,
                    "MoldUDP64 packet declares {declared} messages but holds {found}"
                )
            }
            MoldError::BlockOverrun { index, offset, len } => write!(
                f,
                "MoldUDP64 message block {index} at offset {offset} declares {len} bytes, past the end of the packet"
            ),
            MoldError::SequenceOverflow { sequence } => {
                write!(
                    f,
                    "MoldUDP64 packet sequence {sequence} overflows with its message count"
                )
            }
            MoldError::TrailingBytes { count, extra } => {
                write!(
                    f,
                    "MoldUDP64 packet (count {count}) has {extra} bytes after its last block"
                )
            }
        }
    }
}

impl std::error::Error for MoldError {}

/// Builds downstream packets into a reusable buffer.
#[derive(Debug, Clone)]
pub struct PacketWriter {
    buf: Vec<u8>,
    max_payload: usize,
    count: u16,
}

impl PacketWriter {
    /// A writer whose packets never exceed `max_payload` bytes (clamped to 24..=65507).
    pub fn new(session: Session, first_seq: u64, max_payload: usize) -> Self {
        let max_payload = max_payload.clamp(HEADER_LEN + 4, MAX_UDP_PAYLOAD);
        let mut w = PacketWriter {
            buf: Vec::with_capacity(max_payload),
            max_payload,
            count: 0,
        };
        w.start(session, first_seq);
        w
    }

    fn start(&mut self, session: Session, seq: u64) {
        self.buf.clear();
        let h = PacketHeader {
            session,
            sequence: seq.into(),
            message_count: 0.into(),
        };
        self.buf.extend_from_slice(h.as_bytes());
        self.count = 0;
    }

    /// Adds one message if it fits; `false` (and nothing written) if the packet is full.
    /// A message that cannot fit even in an empty packet is refused too.
    pub fn push(&mut self, msg: &[u8]) -> bool {
        if msg.len() > u16::MAX as usize
            || self.buf.len() + 2 + msg.len() > self.max_payload
            || self.count == MAX_MESSAGE_COUNT
        {
            return false;
        }
        self.buf
            .extend_from_slice(&(msg.len() as u16).to_be_bytes());
        self.buf.extend_from_slice(msg);
        self.count += 1;
        true
    }

    /// Messages in the packet being built.
    pub fn len(&self) -> u16 {
        self.count
    }
    /// True when no message has been added.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
    /// Payload bytes so far.
    pub fn payload_len(&self) -> usize {
        self.buf.len()
    }
    /// Sequence number of the packet's first message.
    pub fn sequence(&self) -> u64 {
        u64::from_be_bytes(self.buf[10..18].try_into().expect("header is written"))
    }

    /// The finished packet's bytes (count filled in). Call [`PacketWriter::next_packet`] to
    /// start the following one.
    pub fn finish(&mut self) -> &[u8] {
        self.buf[18..20].copy_from_slice(&self.count.to_be_bytes());
        &self.buf
    }

    /// Starts the packet after this one, numbered after its messages.
    pub fn next_packet(&mut self) {
        let session = Session::read_from_bytes(&self.buf[..10]).expect("header is written");
        let next = self.sequence() + self.count as u64;
        self.start(session, next);
    }
}

/// A heartbeat (`count` 0) or end-of-session (`count` 0xFFFF) packet.
pub fn control_packet(session: Session, next_seq: u64, count: u16) -> [u8; HEADER_LEN] {
    let h = PacketHeader {
        session,
        sequence: next_seq.into(),
        message_count: count.into(),
    };
    let mut out = [0u8; HEADER_LEN];
    out.copy_from_slice(h.as_bytes());
    out
}

/// A retransmission request: `count` messages from `sequence` of `session`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// Session.
    pub session: Session,
    /// First sequence requested.
    pub sequence: u64,
    /// Number of messages requested.
    pub count: u16,
}

impl Request {
    /// Reads a request packet (exactly 20 bytes).
    pub fn parse(bytes: &[u8]) -> Result<Self, MoldError> {
        match PacketHeader::ref_from_bytes(bytes) {
            Ok(h) => Ok(Request {
                session: h.session,
                sequence: h.sequence.get(),
                count: h.message_count.get(),
            }),
            Err(_) if bytes.len() < HEADER_LEN => Err(MoldError::TooShort { len: bytes.len() }),
            Err(_) => Err(MoldError::TrailingBytes {
                count: 0,
                extra: bytes.len() - HEADER_LEN,
            }),
        }
    }

    /// The request's bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        control_packet(self.session, self.sequence, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> Session {
        Session::new("000010059B").unwrap()
    }

    #[test]
    fn writer_and_parser_agree() {
        let mut w = PacketWriter::new(session(), 7, 100);
        assert!(w.push(b"abc"));
        assert!(w.push(b""));
        assert!(w.push(&[9u8; 40]));
        let bytes = w.finish().to_vec();
        let p = Packet::parse(&bytes).unwrap();
        assert_eq!(p.kind(), PacketKind::Messages);
        assert_eq!(
            (p.sequence(), p.message_count(), p.next_sequence()),
            (7, 3, 10)
        );
        let got: Vec<_> = p.messages().collect();
        assert_eq!(
            got,
            vec![(7, &b"abc"[..]), (8, &b""[..]), (9, &[9u8; 40][..])]
        );
        w.next_packet();
        assert_eq!(w.sequence(), 10);
        assert!(w.is_empty());
    }

    #[test]
    fn writer_respects_max_payload() {
        let mut w = PacketWriter::new(session(), 1, 40);
        assert!(w.push(&[1u8; 10])); // 20 + 12 = 32
        assert!(!w.push(&[1u8; 7])); // 32 + 9 = 41 > 40
        assert!(w.push(&[1u8; 6])); // 40
        assert_eq!(w.payload_len(), 40);
    }

    #[test]
    fn control_packets_and_requests() {
        let hb = control_packet(session(), 383_265, COUNT_HEARTBEAT);
        let p = Packet::parse(&hb).unwrap();
        assert_eq!(
            (p.kind(), p.sequence(), p.message_count()),
            (PacketKind::Heartbeat, 383_265, 0)
        );
        assert_eq!(p.messages().count(), 0);
        let eos = control_packet(session(), 9, COUNT_END_OF_SESSION);
        assert_eq!(
            Packet::parse(&eos).unwrap().kind(),
            PacketKind::EndOfSession
        );
        let r = Request {
            session: session(),
            sequence: 42,
            count: 5,
        };
        assert_eq!(Request::parse(&r.to_bytes()), Ok(r));
        assert_eq!(
            Request::parse(&[0; 19]),
            Err(MoldError::TooShort { len: 19 })
        );
        assert!(Request::parse(&[0; 21]).is_err());
    }

    #[test]
    fn malformed_packets_are_errors() {
        let mut w = PacketWriter::new(session(), 1, 200);
        w.push(b"hello");
        w.push(b"world!");
        let good = w.finish().to_vec();
        assert!(Packet::parse(&good).is_ok());
        assert_eq!(
            Packet::parse(&good[..19]).unwrap_err(),
            MoldError::TooShort { len: 19 }
        );
        // truncated inside the last block
        assert!(matches!(
            Packet::parse(&good[..good.len() - 1]),
            Err(MoldError::BlockOverrun { index: 1, .. })
        ));
        // count says 3, holds 2
        let mut bad = good.clone();
        bad[19] = 3;
        assert_eq!(
            Packet::parse(&bad).unwrap_err(),
            MoldError::CountMismatch {
                declared: 3,
                found: 2
            }
        );
        // count says 1, holds 2
        bad[19] = 1;
        assert!(matches!(
            Packet::parse(&bad),
            Err(MoldError::TrailingBytes { count: 1, .. })
        ));
        // heartbeat with a body
        let mut hb = control_packet(session(), 1, 0).to_vec();
        hb.push(0);
        assert!(Packet::parse(&hb).is_err());
        // found by cargo fuzz: a sequence at the top of the range
        let mut top = good.clone();
        top[10..18].copy_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(
            Packet::parse(&top).unwrap_err(),
            MoldError::SequenceOverflow { sequence: u64::MAX }
        );
    }
}
