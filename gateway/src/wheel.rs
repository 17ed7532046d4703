//! A hashed timer wheel of 1 ms slots: each connection is in it once, at its next wake-up
//! (flush window, heartbeat, timeouts). An entry names the connection key and the due time it
//! was filed with; the connection keeps its current due time, so an entry that no longer matches
//! is dropped when visited (rescheduling never searches). Entries due beyond one turn stay in
//! their slot until their turn comes.

/// Slots (a turn is this many ms).
pub const SLOTS: usize = 1024;

/// The wheel.
#[derive(Debug)]
pub struct Wheel {
    slots: Vec<Vec<(u64, u64)>>,
    spare: Vec<(u64, u64)>,
    /// The last ms processed.
    now_ms: u64,
}

impl Wheel {
    /// A wheel starting at `now_ns`.
    pub fn new(now_ns: u64) -> Self {
        Wheel {
            slots: (0..SLOTS).map(|_| Vec::new()).collect(),
            spare: Vec::new(),
            now_ms: now_ns / 1_000_000,
        }
    }

    /// Files `key` to wake at `due_ns` (not before the next ms). Returns the due time filed,
    /// which the caller keeps to recognise the entry.
    pub fn schedule(&mut self, key: u64, due_ns: u64) -> u64 {
        let due_ms = (due_ns / 1_000_000).max(self.now_ms + 1);
        self.slots[due_ms as usize % SLOTS].push((key, due_ms));
        due_ms
    }

    /// Every entry due up to `now_ns`, in time order, into `out` (cleared first) as
    /// (key, filed due ms).
    pub fn advance(&mut self, now_ns: u64, out: &mut Vec<(u64, u64)>) {
        out.clear();
        let target = now_ns / 1_000_000;
        // after a long stall visit each slot once
        let from = self.now_ms.max(target.saturating_sub(SLOTS as u64 - 1));
        for ms in from + 1..=target {
            let slot = ms as usize % SLOTS;
            let mut v = std::mem::replace(&mut self.slots[slot], std::mem::take(&mut self.spare));
            for &(k, due) in &v {
                if due <= target {
                    out.push((k, due));
                } else {
                    self.slots[slot].push((k, due));
                }
            }
            v.clear();
            self.spare = v;
        }
        self.now_ms = self.now_ms.max(target);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_come_out_when_due_and_not_before() {
        let ms = 1_000_000;
        let mut w = Wheel::new(1000 * ms);
        let a = w.schedule(1, 1005 * ms);
        let b = w.schedule(2, 1000 * ms + 3 * SLOTS as u64 * ms);
        let c = w.schedule(3, 0);
        assert_eq!(c, 1001, "never in the past");
        let mut out = Vec::new();
        w.advance(1004 * ms, &mut out);
        assert_eq!(out, vec![(3, 1001)]);
        w.advance(1005 * ms, &mut out);
        assert_eq!(out, vec![(1, a)]);
        w.advance((1000 + SLOTS as u64 * 2) * ms, &mut out);
        assert!(out.is_empty(), "two turns later, still not due");
        w.advance((1000 + 3 * SLOTS as u64) * ms, &mut out);
        assert_eq!(out, vec![(2, b)]);
    }
}
