//! ITCH 5.0 field types that zerocopy's big-endian integers do not cover: the 6-byte
//! timestamp and the space-padded alpha fields.

use core::fmt;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

pub use zerocopy::byteorder::big_endian::{U16, U32, U64};

/// A 48-bit big-endian unsigned integer: ITCH's Timestamp (nanoseconds since midnight).
///
/// Read as six single bytes, never as an 8-byte load at offset 5: the last message of a buffer
/// may end right after it.
#[derive(
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Default,
    FromBytes,
    IntoBytes,
    KnownLayout,
    Immutable,
    Unaligned,
)]
#[repr(transparent)]
pub struct U48(pub [u8; 6]);

impl U48 {
    /// The largest value a U48 holds.
    pub const MAX: u64 = (1 << 48) - 1;

    /// Encodes `v`; bits above 48 are dropped (a timestamp never has them: a day is < 2^47 ns).
    #[inline]
    pub const fn new(v: u64) -> Self {
        let b = v.to_be_bytes();
        U48([b[2], b[3], b[4], b[5], b[6], b[7]])
    }

    /// The value.
    #[inline]
    pub const fn get(self) -> u64 {
        // two loads (2 + 4 bytes) rather than six
        let b = self.0;
        let hi = u16::from_be_bytes([b[0], b[1]]) as u64;
        let lo = u32::from_be_bytes([b[2], b[3], b[4], b[5]]) as u64;
        (hi << 32) | lo
    }
}

impl fmt::Debug for U48 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.get())
    }
}

impl From<u64> for U48 {
    fn from(v: u64) -> Self {
        U48::new(v)
    }
}

/// A fixed-width ASCII field, left-justified and padded with spaces on the right
/// (ITCH "Alpha"). `Alpha<8>` is a stock symbol, `Alpha<4>` an MPID or a halt reason.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(transparent)]
pub struct Alpha<const N: usize>(pub [u8; N]);

/// An 8-byte stock symbol.
pub type Stock = Alpha<8>;

impl<const N: usize> Alpha<N> {
    /// All spaces.
    pub const BLANK: Self = Alpha([b' '; N]);

    /// Pads `s` with spaces; `None` if it is longer than `N` bytes.
    pub fn new(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        if b.len() > N {
            return None;
        }
        let mut out = [b' '; N];
        out[..b.len()].copy_from_slice(b);
        Some(Alpha(out))
    }

    /// The bytes without the right padding.
    #[inline]
    pub fn trimmed(&self) -> &[u8] {
        let mut end = N;
        while end > 0 && self.0[end - 1] == b' ' {
            end -= 1;
        }
        &self.0[..end]
    }

    /// The text without the right padding, or `None` if it is not UTF-8 (real feeds send
    /// ASCII; a corrupt byte must not panic anyone).
    pub fn as_str(&self) -> Option<&str> {
        core::str::from_utf8(self.trimmed()).ok()
    }
}

impl<const N: usize> fmt::Debug for Alpha<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

impl<const N: usize> fmt::Display for Alpha<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(self.trimmed()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn u48_round_trips_and_is_big_endian() {
        let v = 0x1f1a_cedb_02f0;
        let t = U48::new(v);
        assert_eq!(t.0, [0x1f, 0x1a, 0xce, 0xdb, 0x02, 0xf0]);
        assert_eq!(t.get(), v);
        assert_eq!(U48::new(U48::MAX).get(), U48::MAX);
    }

    #[test]
    fn alpha_pads_and_trims() {
        let s = Stock::new("AAPL").unwrap();
        assert_eq!(&s.0, b"AAPL    ");
        assert_eq!(s.as_str(), Some("AAPL"));
        assert!(Stock::new("TOOLONGSYM").is_none());
        assert_eq!(Alpha::<8>::BLANK.as_str(), Some(""));
        assert_eq!(Alpha([0xff, b'A', b' ']).as_str(), None);
    }
}
