//! A looped replay's passes (`play --loop`): pass k of a session goes out with its sequence
//! numbers after pass k-1's and its ITCH clock moved on by the session's span, so the feed
//! handler, the book and its bars see one long session whose clock keeps going. (With the
//! clock repeating, every pass closed the same bars as the first: a chart stopped after one
//! pass, however long the replay ran.)
//!
//! The clock is ITCH's: nanoseconds since midnight in bytes 5..11 of every message. Past
//! midnight it wraps, as a new day would.

/// Nanoseconds in a day.
pub const DAY_NS: u64 = 86_400 * SECOND;
const SECOND: u64 = 1_000_000_000;

/// ITCH time one pass moves the clock on, for a session whose messages run from `first_ns` to
/// `last_ns`: its span rounded up to whole seconds, and at least one more (so bars keep their
/// boundaries, and a pass starts after the last one ended).
pub fn pass_ns(first_ns: u64, last_ns: u64) -> u64 {
    (last_ns.saturating_sub(first_ns) / SECOND + 1) * SECOND
}

/// A message's ITCH timestamp, if it is long enough to have one.
pub fn itch_ts(msg: &[u8]) -> Option<u64> {
    let b = msg.get(5..11)?;
    Some(b.iter().fold(0u64, |t, &x| (t << 8) | u64::from(x)))
}

/// The earliest and latest ITCH timestamps of `msgs`.
pub fn span<'a>(msgs: impl Iterator<Item = &'a [u8]>) -> Option<(u64, u64)> {
    msgs.filter_map(itch_ts).fold(None, |acc, t| match acc {
        None => Some((t, t)),
        Some((lo, hi)) => Some((lo.min(t), hi.max(t))),
    })
}

/// Moves a message's timestamp on by `add_ns` (modulo a day); a message too short to have one
/// is left as it is.
pub fn shift_ts(msg: &mut [u8], add_ns: u64) {
    let Some(t) = itch_ts(msg) else { return };
    let t = (t % DAY_NS + add_ns % DAY_NS) % DAY_NS;
    msg[5..11].copy_from_slice(&t.to_be_bytes()[2..]);
}

/// Rewrites a MoldUDP64 downstream payload for a later pass: its sequence number plus
/// `seq_add`, each message's timestamp plus `ts_add_ns`. A payload cut short is rewritten as
/// far as it goes.
pub fn rewrite(payload: &mut [u8], seq_add: u64, ts_add_ns: u64) {
    if payload.len() < 20 {
        return;
    }
    // (a capture's own numbers near the top wrap rather than panic)
    let seq =
        u64::from_be_bytes(payload[10..18].try_into().expect("8 bytes")).wrapping_add(seq_add);
    payload[10..18].copy_from_slice(&seq.to_be_bytes());
    if ts_add_ns == 0 {
        return;
    }
    let count = u16::from_be_bytes([payload[18], payload[19]]);
    // (0xFFFF: end of session, no messages)
    let count = if count == u16::MAX { 0 } else { count };
    let mut at = 20;
    for _ in 0..count {
        let Some(len) = payload.get(at..at + 2) else {
            return;
        };
        let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        let Some(msg) = payload.get_mut(at + 2..at + 2 + len) else {
            return;
        };
        shift_ts(msg, ts_add_ns);
        at += 2 + len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message of `len` bytes with type `t` at ITCH time `ts`.
    fn msg(t: u8, ts: u64, len: usize) -> Vec<u8> {
        let mut m = vec![0u8; len];
        m[0] = t;
        m[5..11].copy_from_slice(&ts.to_be_bytes()[2..]);
        m
    }

    #[test]
    fn a_pass_moves_on_by_the_span_in_whole_seconds() {
        let open = 34_200 * SECOND;
        assert_eq!(pass_ns(open, open + 28_400_000_000), 29 * SECOND);
        assert_eq!(pass_ns(open, open + 29 * SECOND), 30 * SECOND);
        assert_eq!(pass_ns(open, open), SECOND);
        let (a, b) = (msg(b'S', open, 12), msg(b'A', open + 5, 36));
        let short = [b'X'; 4];
        assert_eq!(
            span([&b[..], &short[..], &a[..]].into_iter()),
            Some((open, open + 5))
        );
        assert_eq!(span(std::iter::once(&short[..])), None);
    }

    #[test]
    fn a_later_pass_has_its_sequence_and_every_message_clock_moved_on() {
        let open = 34_200 * SECOND;
        let msgs = [msg(b'A', open + 7, 36), msg(b'D', open + 9, 19)];
        let mut p = b"SESSION001".to_vec();
        p.extend_from_slice(&41u64.to_be_bytes());
        p.extend_from_slice(&2u16.to_be_bytes());
        for m in &msgs {
            p.extend_from_slice(&(m.len() as u16).to_be_bytes());
            p.extend_from_slice(m);
        }
        let before = p.clone();
        rewrite(&mut p, 1_000, 30 * SECOND);
        assert_eq!(u64::from_be_bytes(p[10..18].try_into().unwrap()), 1_041);
        let parsed = feed_handler::moldudp64::Packet::parse(&p).unwrap();
        let got: Vec<(u64, Option<u64>, u8)> = parsed
            .messages()
            .map(|(seq, m)| (seq, itch_ts(m), m[0]))
            .collect();
        assert_eq!(
            got,
            [
                (1_041, Some(open + 30 * SECOND + 7), b'A'),
                (1_042, Some(open + 30 * SECOND + 9), b'D')
            ]
        );
        // nothing else moved
        assert_eq!(p.len(), before.len());
        for (m, (_, was)) in parsed.messages().map(|(_, m)| m).zip(
            feed_handler::moldudp64::Packet::parse(&before)
                .unwrap()
                .messages(),
        ) {
            assert_eq!((&m[..5], &m[11..]), (&was[..5], &was[11..]));
        }
        // past midnight: a new day
        let mut m = msg(b'A', DAY_NS - SECOND, 36);
        shift_ts(&mut m, 3 * SECOND);
        assert_eq!(itch_ts(&m), Some(2 * SECOND));
        // cut short, or end of session: as far as it goes, never a panic
        let mut cut = p[..30].to_vec();
        rewrite(&mut cut, 1, SECOND);
        let mut eos = before[..20].to_vec();
        eos[18..20].copy_from_slice(&u16::MAX.to_be_bytes());
        rewrite(&mut eos, 5, SECOND);
        assert_eq!(u64::from_be_bytes(eos[10..18].try_into().unwrap()), 46);
    }

    #[test]
    fn any_bytes_are_rewritten_without_a_panic() {
        // lengths and counts that lie, numbers at the top
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for len in 0..200 {
            for _ in 0..20 {
                let mut p: Vec<u8> = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8
                    })
                    .collect();
                rewrite(&mut p, u64::MAX, u64::MAX);
                assert_eq!(p.len(), len);
            }
        }
    }
}
