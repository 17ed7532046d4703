//! The ring's shared-memory layout: one file under `/dev/shm`, mapped by one writer and any
//! number of reader processes.
//!
//! ```text
//!  offset  size  written by   field
//!  ------  ----  -----------  -----------------------------------------------------------
//!       0     8  creator      magic "ITCHRNG1" (written last: a reader that sees it sees the rest)
//!       8     4  creator      version (LAYOUT_VERSION)
//!      12     4  creator      slot size in bytes (SLOT_SIZE = 128)
//!      16     8  creator      capacity in slots (a power of two)
//!      24     8  creator      generation: creation time, ns since the epoch (a restart changes it)
//!      32     4  creator      writer pid
//!      36    92  -            reserved (zero)
//!     128     8  writer       head: the next position to be written (u64, never wraps)
//!     136   120  -            padding: head alone on its 128-byte line
//!     256     8  writer       journal_end: positions below it are in the journal file
//!     264     8  writer       journal_state: 0 writing, 1 off (no journal), 2 stopped (full or
//!                             failed): positions from journal_end on will never be in it
//!     272    48  -            padding
//!     320     8  writer       wake: bumped before each wake-up (a futex word: its low 32 bits)
//!     328     8  readers      sleepers: readers inside a doorbell wait
//!     336    48  -            padding
//!     384     -  writer       slots[capacity], SLOT_SIZE bytes each, position p at p & (capacity-1)
//!
//!  slot (128 bytes, 16 little-endian u64 words, each an AtomicU64):
//!   word 0   stamp: 2p+1 while position p is being written, 2p+2 once it is complete
//!   word 1   kind (bits 0-7) | channel (bits 16-31) | data length (bits 32-47)
//!   word 2   sequence number (ITCH/MoldUDP64) of the message, or the first of a gap
//!   word 3   exchange timestamp, ns since midnight (from the ITCH header)
//!   word 4   local receive timestamp, ns since the epoch (kernel timestamp when available)
//!   word 5-15  data: the raw ITCH message (up to 88 bytes), or for a gap its count (word 5)
//! ```
//!
//! Publish rule (single writer): store stamp 2p+1, release fence, store the words, store stamp
//! 2p+2 with release, then store head p+1 with release. A reader acquires head, acquires the
//! stamp, reads the words, acquire fence, and reads the stamp again: if both stamps are not
//! 2p+2 the slot was overwritten (the reader was overrun) and the record is not used. The
//! writer never waits for readers; readers detect being lapped and say so.
//!
//! `wake` and `sleepers` follow the doorbell rule in [`super::doorbell`].

use core::sync::atomic::AtomicU64;

/// "ITCHRNG1" as a little-endian u64.
pub const MAGIC: u64 = u64::from_le_bytes(*b"ITCHRNG1");
/// Bumped on any layout change; readers refuse other versions.
pub const LAYOUT_VERSION: u32 = 3;
/// Bytes per slot.
pub const SLOT_SIZE: usize = 128;
/// Bytes of header before the first slot.
pub const HEADER_SIZE: usize = 384;
/// Largest message a slot carries.
pub const MAX_DATA: usize = 88;
/// Words in a slot.
pub const SLOT_WORDS: usize = SLOT_SIZE / 8;
/// Offset of `head`.
pub const HEAD_OFFSET: usize = 128;
/// Offset of `journal_end`.
pub const JOURNAL_END_OFFSET: usize = 256;
/// Offset of `journal_state` ([`JournalState`]).
pub const JOURNAL_STATE_OFFSET: usize = 264;
/// Offset of `wake` (the doorbell's futex word is its low half: the layout is little-endian).
pub const WAKE_OFFSET: usize = 320;
/// Offset of `sleepers`.
pub const SLEEPERS_OFFSET: usize = 328;

/// Whether the journal will hold what the ring drops (the `journal_state` word).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum JournalState {
    /// Every record is appended; positions below `journal_end` are in the file, later ones
    /// will be.
    Writing = 0,
    /// The feed handler keeps no journal (`journal = false`).
    Off = 1,
    /// The journal stopped at `journal_end` (its cap or its filesystem was full, or a write
    /// failed); the ring goes on without it.
    Stopped = 2,
}

impl JournalState {
    /// From its word (an unknown value reads as stopped: nothing more will come).
    pub fn from_word(w: u64) -> JournalState {
        match w {
            0 => JournalState::Writing,
            1 => JournalState::Off,
            _ => JournalState::Stopped,
        }
    }
}

/// What a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// An ITCH message.
    Message = 1,
    /// Messages `seq .. seq + count` are lost for good.
    Gap = 2,
    /// The channel's session ended.
    EndOfSession = 3,
}

impl Kind {
    /// From its byte.
    pub fn from_u8(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Message),
            2 => Some(Kind::Gap),
            3 => Some(Kind::EndOfSession),
            _ => None,
        }
    }
}

/// The fixed part of the header, as the creator writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderInfo {
    /// Layout version.
    pub version: u32,
    /// Slot size.
    pub slot_size: u32,
    /// Slots.
    pub capacity: u64,
    /// Creation time (ns since the epoch).
    pub generation: u64,
    /// Writer process.
    pub writer_pid: u32,
}

/// One slot as it sits in shared memory.
#[repr(C, align(128))]
#[derive(Debug)]
pub struct Slot {
    /// Words; see the module docs.
    pub words: [AtomicU64; SLOT_WORDS],
}

const _: () = assert!(core::mem::size_of::<Slot>() == SLOT_SIZE);
const _: () = assert!(core::mem::align_of::<Slot>() == 128);
const _: () =
    assert!(HEADER_SIZE % 128 == 0 && HEAD_OFFSET % 128 == 0 && JOURNAL_END_OFFSET % 128 == 0);
const _: () = assert!((SLOT_WORDS - 5) * 8 == MAX_DATA);
const _: () = assert!(WAKE_OFFSET > JOURNAL_END_OFFSET && SLEEPERS_OFFSET + 8 <= HEADER_SIZE);

/// A record as a reader gets it (a copy out of the slot).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// Position in the ring (0 for the first record written).
    pub position: u64,
    /// What it is.
    pub kind: Kind,
    /// The feed channel it came from (one per venue).
    pub channel: u16,
    /// Sequence number of the message (or first of the gap).
    pub seq: u64,
    /// Exchange timestamp, ns since midnight.
    pub exch_ts_ns: u64,
    /// Local receive timestamp, ns since the epoch.
    pub recv_ns: u64,
    /// For a gap: its count. Otherwise 0.
    pub gap_count: u64,
    len: u16,
    data: [u8; MAX_DATA],
}

impl core::fmt::Debug for Record {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Record")
            .field("position", &self.position)
            .field("kind", &self.kind)
            .field("channel", &self.channel)
            .field("seq", &self.seq)
            .field("exch_ts_ns", &self.exch_ts_ns)
            .field("recv_ns", &self.recv_ns)
            .field("gap_count", &self.gap_count)
            .field("len", &self.len)
            .finish()
    }
}

impl Record {
    /// A message record.
    pub fn message(
        channel: u16,
        seq: u64,
        exch_ts_ns: u64,
        recv_ns: u64,
        msg: &[u8],
    ) -> Option<Record> {
        if msg.len() > MAX_DATA {
            return None;
        }
        let mut data = [0u8; MAX_DATA];
        data[..msg.len()].copy_from_slice(msg);
        Some(Record {
            position: 0,
            kind: Kind::Message,
            channel,
            seq,
            exch_ts_ns,
            recv_ns,
            gap_count: 0,
            len: msg.len() as u16,
            data,
        })
    }

    /// A gap record: `count` messages from `first` are lost.
    pub fn gap(channel: u16, first: u64, count: u64, recv_ns: u64) -> Record {
        Record {
            position: 0,
            kind: Kind::Gap,
            channel,
            seq: first,
            exch_ts_ns: 0,
            recv_ns,
            gap_count: count,
            len: 0,
            data: [0; MAX_DATA],
        }
    }

    /// An end-of-session record; `seq` is the next sequence the session would have had.
    pub fn end_of_session(channel: u16, next_seq: u64, recv_ns: u64) -> Record {
        Record {
            position: 0,
            kind: Kind::EndOfSession,
            channel,
            seq: next_seq,
            exch_ts_ns: 0,
            recv_ns,
            gap_count: 0,
            len: 0,
            data: [0; MAX_DATA],
        }
    }

    /// The ITCH message (empty for other kinds).
    pub fn data(&self) -> &[u8] {
        &self.data[..self.len as usize]
    }

    /// The slot words of a message record, built straight from the message bytes (what the
    /// feed handler's hot path publishes); `None` if the message is longer than a slot holds.
    #[inline]
    pub fn message_words(
        channel: u16,
        seq: u64,
        exch_ts_ns: u64,
        recv_ns: u64,
        msg: &[u8],
    ) -> Option<[u64; SLOT_WORDS]> {
        if msg.len() > MAX_DATA {
            return None;
        }
        let mut w = [0u64; SLOT_WORDS];
        w[1] = Kind::Message as u64 | (channel as u64) << 16 | (msg.len() as u64) << 32;
        w[2] = seq;
        w[3] = exch_ts_ns;
        w[4] = recv_ns;
        let mut chunks = msg.chunks_exact(8);
        let mut i = 5;
        for c in &mut chunks {
            w[i] = u64::from_le_bytes(c.try_into().expect("8 bytes"));
            i += 1;
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut b = [0u8; 8];
            b[..rest.len()].copy_from_slice(rest);
            w[i] = u64::from_le_bytes(b);
        }
        Some(w)
    }

    /// The 16 words of the slot (stamp word 0 is left for the caller).
    pub fn to_words(&self) -> [u64; SLOT_WORDS] {
        let mut w = [0u64; SLOT_WORDS];
        w[1] = self.kind as u64 | (self.channel as u64) << 16 | (self.len as u64) << 32;
        w[2] = self.seq;
        w[3] = self.exch_ts_ns;
        w[4] = self.recv_ns;
        if self.kind == Kind::Gap {
            w[5] = self.gap_count;
        } else {
            for (i, chunk) in self.data.chunks_exact(8).enumerate() {
                w[5 + i] = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
            }
        }
        w
    }

    /// A record from slot words, or `None` if they cannot be a record (an unknown kind or a
    /// length past the slot).
    pub fn from_words(position: u64, w: &[u64; SLOT_WORDS]) -> Option<Record> {
        let kind = Kind::from_u8(w[1] as u8)?;
        let len = (w[1] >> 32) as u16;
        if len as usize > MAX_DATA {
            return None;
        }
        let mut data = [0u8; MAX_DATA];
        let mut gap_count = 0;
        if kind == Kind::Gap {
            gap_count = w[5];
        } else {
            for i in 0..MAX_DATA / 8 {
                data[i * 8..i * 8 + 8].copy_from_slice(&w[5 + i].to_le_bytes());
            }
        }
        Some(Record {
            position,
            kind,
            channel: (w[1] >> 16) as u16,
            seq: w[2],
            exch_ts_ns: w[3],
            recv_ns: w[4],
            gap_count,
            len,
            data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_offsets_and_sizes() {
        assert_eq!(core::mem::size_of::<Slot>(), 128);
        assert_eq!(core::mem::align_of::<Slot>(), 128);
        assert_eq!(HEADER_SIZE, 3 * 128);
        assert_eq!(MAGIC.to_le_bytes(), *b"ITCHRNG1");
        assert_eq!(MAX_DATA, 88);
        // the longest ITCH 5.0 message fits a slot
        let longest = crate::itch::ALL_TYPES
            .iter()
            .map(|&t| crate::itch::expected_len(t).unwrap())
            .max()
            .unwrap();
        assert!(longest <= MAX_DATA, "{longest}");
    }

    #[test]
    fn records_round_trip_through_words() {
        let msg: Vec<u8> = (0..50u8).collect();
        let r =
            Record::message(7, 123, 34_200_000_000_000, 1_700_000_000_000_000_000, &msg).unwrap();
        let back = Record::from_words(9, &r.to_words()).unwrap();
        assert_eq!(back.data(), &msg[..]);
        assert_eq!(
            (
                back.channel,
                back.seq,
                back.exch_ts_ns,
                back.recv_ns,
                back.position
            ),
            (7, 123, 34_200_000_000_000, 1_700_000_000_000_000_000, 9)
        );
        let g = Record::gap(2, 1000, 20, 5);
        let back = Record::from_words(0, &g.to_words()).unwrap();
        assert_eq!(
            (back.kind, back.seq, back.gap_count, back.data().len()),
            (Kind::Gap, 1000, 20, 0)
        );
        assert!(Record::message(0, 0, 0, 0, &[0; 89]).is_none());
        assert_eq!(
            Record::message_words(7, 123, 34_200_000_000_000, 1_700_000_000_000_000_000, &msg),
            Some(r.to_words())
        );
        for len in 0..=MAX_DATA {
            let m: Vec<u8> = (0..len as u8).collect();
            assert_eq!(
                Record::message_words(1, 2, 3, 4, &m),
                Some(Record::message(1, 2, 3, 4, &m).unwrap().to_words()),
                "len {len}"
            );
        }
        let mut w = r.to_words();
        w[1] = 99;
        assert!(Record::from_words(0, &w).is_none());
    }
}
