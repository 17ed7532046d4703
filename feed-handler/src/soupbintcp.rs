//! SoupBinTCP 3.0 / 4.1 framing, for the TCP snapshot path (GLIMPSE) and TCP replays.
//!
//! ```text
//!  0       2      3
//!  +-------+------+------------------+
//!  |length |type  | payload          |   length = 1 + payload bytes (u16 BE)
//!  +-------+------+------------------+
//! ```
//!
//! Packets do not line up with TCP segments: [`Framer`] reassembles them from whatever the
//! socket delivers, in a bounded buffer (one maximal packet plus one read), and hands out one
//! packet at a time. Login Request is 47 bytes in 3.0 and 52 in 4.1 (which adds a requested
//! heartbeat timeout); both are read and written. Sequence numbers travel as ASCII.

use crate::itch::Alpha;
use crate::moldudp64::Session;
use core::fmt;

/// Packet types.
pub mod kind {
    /// Debug (either direction).
    pub const DEBUG: u8 = b'+';
    /// Login Accepted (server).
    pub const LOGIN_ACCEPTED: u8 = b'A';
    /// Login Rejected (server).
    pub const LOGIN_REJECTED: u8 = b'J';
    /// Sequenced Data (server).
    pub const SEQUENCED_DATA: u8 = b'S';
    /// Server Heartbeat.
    pub const SERVER_HEARTBEAT: u8 = b'H';
    /// End of Session (server).
    pub const END_OF_SESSION: u8 = b'Z';
    /// Login Request (client).
    pub const LOGIN_REQUEST: u8 = b'L';
    /// Unsequenced Data (client).
    pub const UNSEQUENCED_DATA: u8 = b'U';
    /// Client Heartbeat.
    pub const CLIENT_HEARTBEAT: u8 = b'R';
    /// Logout Request (client).
    pub const LOGOUT_REQUEST: u8 = b'O';
}

/// Largest packet on the wire: the 2-byte length plus up to 65,535 bytes.
pub const MAX_PACKET: usize = 2 + u16::MAX as usize;

/// One SoupBinTCP packet, borrowing its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SoupPacket<'a> {
    /// `+` free text.
    Debug(&'a [u8]),
    /// `A`: the session and the sequence number of the next message the server will send.
    LoginAccepted {
        /// Session.
        session: Session,
        /// Next sequence number.
        sequence: u64,
    },
    /// `J`: A not authorized, S session not available.
    LoginRejected {
        /// Reason code.
        reason: u8,
    },
    /// `S`: one message of the sequenced stream (an ITCH message for GLIMPSE).
    SequencedData(&'a [u8]),
    /// `H`.
    ServerHeartbeat,
    /// `Z`.
    EndOfSession,
    /// `L`: 3.0 when `heartbeat_timeout_ms` is `None`, 4.1 otherwise.
    LoginRequest {
        /// Username.
        username: Alpha<6>,
        /// Password.
        password: Alpha<10>,
        /// Requested session; blank for the current one.
        session: Session,
        /// Requested sequence number; 0 for the next live message.
        sequence: u64,
        /// SoupBinTCP 4.1's requested heartbeat timeout in milliseconds.
        heartbeat_timeout_ms: Option<u32>,
    },
    /// `U`.
    UnsequencedData(&'a [u8]),
    /// `R`.
    ClientHeartbeat,
    /// `O`.
    LogoutRequest,
}

/// Why bytes are not a SoupBinTCP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SoupError {
    /// A length field of 0 (a packet has at least its type byte).
    ZeroLength,
    /// A type this protocol does not define.
    UnknownType(u8),
    /// A packet whose length is wrong for its type.
    BadLength {
        /// The type.
        kind: u8,
        /// Its payload length.
        len: usize,
    },
    /// An ASCII numeric field that is not a number.
    BadNumber {
        /// The type.
        kind: u8,
    },
}

impl fmt::Display for SoupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SoupError::ZeroLength => write!(f, "SoupBinTCP packet with length 0"),
            SoupError::UnknownType(t) => write!(f, "unknown SoupBinTCP packet type 0x{t:02x}"),
            SoupError::BadLength { kind, len } => write!(
                f,
                "SoupBinTCP packet '{}' has a {len}-byte payload, which its type does not allow",
                kind as char
            ),
            SoupError::BadNumber { kind } => {
                write!(
                    f,
                    "SoupBinTCP packet '{}' has a non-numeric number field",
                    kind as char
                )
            }
        }
    }
}

impl std::error::Error for SoupError {}

/// Parses an ASCII numeric field, space padded on either side; all blanks read as 0.
fn ascii_number(field: &[u8], kind: u8) -> Result<u64, SoupError> {
    let t = field.trim_ascii();
    if t.is_empty() {
        return Ok(0);
    }
    let mut v: u64 = 0;
    for &c in t {
        if !c.is_ascii_digit() {
            return Err(SoupError::BadNumber { kind });
        }
        v = v
            .checked_mul(10)
            .and_then(|v| v.checked_add((c - b'0') as u64))
            .ok_or(SoupError::BadNumber { kind })?;
    }
    Ok(v)
}

fn alpha<const N: usize>(b: &[u8]) -> Alpha<N> {
    let mut a = [b' '; N];
    a.copy_from_slice(&b[..N]);
    Alpha(a)
}

/// Tries to read one packet from the front of `buf`. `Ok(None)`: not all of it is there yet.
/// `Ok(Some((packet, n)))`: the packet and the `n` bytes it took.
pub fn decode(buf: &[u8]) -> Result<Option<(SoupPacket<'_>, usize)>, SoupError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let len = u16::from_be_bytes([buf[0], buf[1]]) as usize;
    if len == 0 {
        return Err(SoupError::ZeroLength);
    }
    if buf.len() < 2 + len {
        return Ok(None);
    }
    let kind = buf[2];
    let p = &buf[3..2 + len];
    let bad = || SoupError::BadLength { kind, len: p.len() };
    let packet = match kind {
        kind::DEBUG => SoupPacket::Debug(p),
        kind::SEQUENCED_DATA => SoupPacket::SequencedData(p),
        kind::UNSEQUENCED_DATA => SoupPacket::UnsequencedData(p),
        kind::LOGIN_ACCEPTED => {
            if p.len() != 30 {
                return Err(bad());
            }
            SoupPacket::LoginAccepted {
                session: alpha(&p[..10]),
                sequence: ascii_number(&p[10..30], kind)?,
            }
        }
        kind::LOGIN_REJECTED => {
            if p.len() != 1 {
                return Err(bad());
            }
            SoupPacket::LoginRejected { reason: p[0] }
        }
        kind::LOGIN_REQUEST => {
            let heartbeat_timeout_ms = match p.len() {
                46 => None,
                51 => Some(ascii_number(&p[46..51], kind)? as u32),
                _ => return Err(bad()),
            };
            SoupPacket::LoginRequest {
                username: alpha(&p[..6]),
                password: alpha(&p[6..16]),
                session: alpha(&p[16..26]),
                sequence: ascii_number(&p[26..46], kind)?,
                heartbeat_timeout_ms,
            }
        }
        kind::SERVER_HEARTBEAT
        | kind::END_OF_SESSION
        | kind::CLIENT_HEARTBEAT
        | kind::LOGOUT_REQUEST => {
            if !p.is_empty() {
                return Err(bad());
            }
            match kind {
                kind::SERVER_HEARTBEAT => SoupPacket::ServerHeartbeat,
                kind::END_OF_SESSION => SoupPacket::EndOfSession,
                kind::CLIENT_HEARTBEAT => SoupPacket::ClientHeartbeat,
                _ => SoupPacket::LogoutRequest,
            }
        }
        other => return Err(SoupError::UnknownType(other)),
    };
    Ok(Some((packet, 2 + len)))
}

fn right_justified(v: u64, width: usize, out: &mut Vec<u8>) {
    let s = v.to_string();
    out.extend(std::iter::repeat_n(b' ', width.saturating_sub(s.len())));
    out.extend_from_slice(s.as_bytes());
}

/// Appends the wire bytes of `packet`. Returns `false` (and writes nothing) when a payload is
/// longer than a packet can carry or a number does not fit its field.
pub fn encode(packet: &SoupPacket<'_>, out: &mut Vec<u8>) -> bool {
    let start = out.len();
    out.extend_from_slice(&[0, 0]);
    match *packet {
        SoupPacket::Debug(p) | SoupPacket::SequencedData(p) | SoupPacket::UnsequencedData(p) => {
            out.push(match packet {
                SoupPacket::Debug(_) => kind::DEBUG,
                SoupPacket::SequencedData(_) => kind::SEQUENCED_DATA,
                _ => kind::UNSEQUENCED_DATA,
            });
            out.extend_from_slice(p);
        }
        SoupPacket::LoginAccepted { session, sequence } => {
            out.push(kind::LOGIN_ACCEPTED);
            out.extend_from_slice(&session.0);
            right_justified(sequence, 20, out);
        }
        SoupPacket::LoginRejected { reason } => {
            out.extend_from_slice(&[kind::LOGIN_REJECTED, reason])
        }
        SoupPacket::ServerHeartbeat => out.push(kind::SERVER_HEARTBEAT),
        SoupPacket::EndOfSession => out.push(kind::END_OF_SESSION),
        SoupPacket::ClientHeartbeat => out.push(kind::CLIENT_HEARTBEAT),
        SoupPacket::LogoutRequest => out.push(kind::LOGOUT_REQUEST),
        SoupPacket::LoginRequest {
            username,
            password,
            session,
            sequence,
            heartbeat_timeout_ms,
        } => {
            out.push(kind::LOGIN_REQUEST);
            out.extend_from_slice(&username.0);
            out.extend_from_slice(&password.0);
            out.extend_from_slice(&session.0);
            right_justified(sequence, 20, out);
            if let Some(ms) = heartbeat_timeout_ms {
                right_justified(ms as u64, 5, out);
            }
        }
    }
    let len = out.len() - start - 2;
    let numbers_fit = match *packet {
        SoupPacket::LoginAccepted { .. } => len == 31,
        SoupPacket::LoginRequest {
            heartbeat_timeout_ms,
            ..
        } => {
            len == if heartbeat_timeout_ms.is_some() {
                52
            } else {
                47
            }
        }
        _ => true,
    };
    if len > u16::MAX as usize || !numbers_fit {
        out.truncate(start);
        return false;
    }
    out[start..start + 2].copy_from_slice(&(len as u16).to_be_bytes());
    true
}

/// Reassembles packets from a byte stream in a bounded buffer.
///
/// Feed it what the socket read with [`Framer::buffer`] + [`Framer::filled`], then take packets
/// with [`Framer::next_packet`] until it returns `Ok(None)`. The buffer never grows past
/// [`MAX_PACKET`] plus the read size given to [`Framer::new`].
#[derive(Debug)]
pub struct Framer {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

impl Framer {
    /// A framer that reads up to `read_size` bytes at a time.
    pub fn new(read_size: usize) -> Self {
        Framer {
            buf: vec![0; MAX_PACKET + read_size.max(1)].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    /// Free space to read into (moves pending bytes to the front first).
    pub fn buffer(&mut self) -> &mut [u8] {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.buf[self.end..]
    }

    /// Marks `n` bytes of [`Framer::buffer`] as read.
    pub fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// Bytes received but not yet handed out.
    pub fn pending(&self) -> usize {
        self.end - self.start
    }

    /// The next complete packet. After an error the stream cannot be resynchronised (TCP has
    /// no packet boundaries to find again): the caller drops the connection.
    pub fn next_packet(&mut self) -> Result<Option<SoupPacket<'_>>, SoupError> {
        let (start, end) = (self.start, self.end);
        match decode(&self.buf[start..end])? {
            None => Ok(None),
            Some((packet, n)) => {
                // Only the indices change; the packet's bytes stay in place until `buffer()`.
                if start + n == end {
                    (self.start, self.end) = (0, 0);
                } else {
                    self.start = start + n;
                }
                Ok(Some(packet))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(p: SoupPacket<'_>) {
        let mut out = Vec::new();
        assert!(encode(&p, &mut out));
        let (q, n) = decode(&out).unwrap().unwrap();
        assert_eq!(n, out.len());
        assert_eq!(q, p);
    }

    #[test]
    fn every_packet_type_round_trips() {
        let s = Session::new("000010059B").unwrap();
        round_trip(SoupPacket::Debug(b"hi"));
        round_trip(SoupPacket::LoginAccepted {
            session: s,
            sequence: 135,
        });
        round_trip(SoupPacket::LoginRejected { reason: b'A' });
        round_trip(SoupPacket::SequencedData(&[1, 2, 3]));
        round_trip(SoupPacket::ServerHeartbeat);
        round_trip(SoupPacket::EndOfSession);
        let login = SoupPacket::LoginRequest {
            username: Alpha::new("user").unwrap(),
            password: Alpha::new("password").unwrap(),
            session: Session::BLANK,
            sequence: 1,
            heartbeat_timeout_ms: None,
        };
        round_trip(login);
        if let SoupPacket::LoginRequest {
            username,
            password,
            session,
            sequence,
            ..
        } = login
        {
            round_trip(SoupPacket::LoginRequest {
                username,
                password,
                session,
                sequence,
                heartbeat_timeout_ms: Some(15000),
            });
        }
        round_trip(SoupPacket::UnsequencedData(b""));
        round_trip(SoupPacket::ClientHeartbeat);
        round_trip(SoupPacket::LogoutRequest);
    }

    #[test]
    fn real_packets_from_omi_captures() {
        // Login Request and Login Accepted from Jnx OUCH captures; a server heartbeat.
        let mut login = vec![0x00, 0x2f, b'L'];
        login.extend_from_slice(b"user  password  ");
        login.extend_from_slice(&[b' '; 10]);
        login.extend_from_slice(&[b' '; 19]);
        login.push(b'0');
        let (p, n) = decode(&login).unwrap().unwrap();
        assert_eq!(n, 49);
        assert!(matches!(
            p,
            SoupPacket::LoginRequest {
                sequence: 0,
                heartbeat_timeout_ms: None,
                ..
            }
        ));
        let mut acc = vec![0x00, 0x1f, b'A'];
        acc.extend_from_slice(b"1689192121                 135");
        assert_eq!(
            decode(&acc).unwrap().unwrap().0,
            SoupPacket::LoginAccepted {
                session: Session::new("1689192121").unwrap(),
                sequence: 135
            }
        );
        assert_eq!(
            decode(&[0, 1, b'H']).unwrap().unwrap().0,
            SoupPacket::ServerHeartbeat
        );
    }

    #[test]
    fn bad_packets_are_errors() {
        assert_eq!(decode(&[0, 0]), Err(SoupError::ZeroLength));
        assert_eq!(decode(&[0, 1, b'?']), Err(SoupError::UnknownType(b'?')));
        assert_eq!(
            decode(&[0, 2, b'H', 0]),
            Err(SoupError::BadLength { kind: b'H', len: 1 })
        );
        assert_eq!(
            decode(&[0, 3, b'A', 0, 0]),
            Err(SoupError::BadLength { kind: b'A', len: 2 })
        );
        let mut acc = vec![0x00, 0x1f, b'A'];
        acc.extend_from_slice(b"1689192121                 1x5");
        assert_eq!(decode(&acc), Err(SoupError::BadNumber { kind: b'A' }));
        assert_eq!(decode(&[0, 5, b'S']), Ok(None));
    }

    #[test]
    fn framer_reassembles_across_reads() {
        let mut stream = Vec::new();
        for i in 0..50u8 {
            encode(
                &SoupPacket::SequencedData(&vec![i; i as usize]),
                &mut stream,
            );
            encode(&SoupPacket::ServerHeartbeat, &mut stream);
        }
        let mut f = Framer::new(7);
        let mut got = Vec::new();
        let mut pos = 0;
        while pos < stream.len() {
            let b = f.buffer();
            let n = b.len().min(7).min(stream.len() - pos);
            b[..n].copy_from_slice(&stream[pos..pos + n]);
            f.filled(n);
            pos += n;
            while let Some(p) = f.next_packet().unwrap() {
                got.push(match p {
                    SoupPacket::SequencedData(d) => d.len() as i32,
                    SoupPacket::ServerHeartbeat => -1,
                    _ => panic!("unexpected"),
                });
            }
        }
        let want: Vec<i32> = (0..50).flat_map(|i| [i, -1]).collect();
        assert_eq!(got, want);
        assert_eq!(f.pending(), 0);
    }
}
