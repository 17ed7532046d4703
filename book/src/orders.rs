//! The live orders of one feed, by order reference: an open-addressing table with linear probing
//! and backward-shift deletion (no tombstones), sized to a power of two and kept at most half
//! full, so a lookup is usually one slot in one cache line. A general-purpose map (hashbrown)
//! reads a control byte array and then a bucket: two cache misses per lookup when 1.6M orders
//! do not fit in cache. The slot's address is known from the reference alone, so
//! [`OrderTable::prefetch`] can start the miss several messages ahead (see
//! [`crate::books::Books::apply_all`]).
//!
//! Hash: Fibonacci hashing (one multiply, the top bits), which spreads Nasdaq's increasing,
//! nearly dense references evenly. Growth doubles the table and reinserts every order (a pause
//! proportional to the live orders; size it with [`OrderTable::with_capacity`]).

use crate::books::Order;

/// One slot: 24 bytes.
#[derive(Debug, Clone, Copy)]
struct Slot {
    key: u64,
    order: Order,
    used: bool,
}

const EMPTY: Slot = Slot {
    key: 0,
    order: Order {
        locate: 0,
        side: 0,
        px_e4: 0,
        shares: 0,
    },
    used: false,
};

/// Live orders by reference.
#[derive(Debug, Clone)]
pub struct OrderTable {
    slots: Vec<Slot>,
    /// 64 − log2(slots).
    shift: u32,
    len: usize,
}

impl Default for OrderTable {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

impl OrderTable {
    /// A table that holds `orders` without growing.
    pub fn with_capacity(orders: usize) -> Self {
        let slots = (orders.max(8) * 2).next_power_of_two();
        OrderTable {
            slots: vec![EMPTY; slots],
            shift: 64 - slots.trailing_zeros(),
            len: 0,
        }
    }

    #[inline]
    fn home(&self, key: u64) -> usize {
        (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.shift) as usize
    }

    #[inline]
    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    /// `Ok(slot)` holding `key`, or `Err(slot)`: the empty slot where it would go.
    #[inline]
    fn find(&self, key: u64) -> Result<usize, usize> {
        let mask = self.mask();
        let mut i = self.home(key);
        loop {
            let s = &self.slots[i];
            if !s.used {
                return Err(i);
            }
            if s.key == key {
                return Ok(i);
            }
            i = (i + 1) & mask;
        }
    }

    /// Orders in the table.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when there is none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The order of `key`.
    #[inline]
    pub fn get(&self, key: u64) -> Option<&Order> {
        self.find(key).ok().map(|i| &self.slots[i].order)
    }

    /// Inserts `order` under `key`; returns the order it replaced, if any.
    #[inline]
    pub fn insert(&mut self, key: u64, order: Order) -> Option<Order> {
        if (self.len + 1) * 2 > self.slots.len() {
            self.grow();
        }
        match self.find(key) {
            Ok(i) => Some(std::mem::replace(&mut self.slots[i].order, order)),
            Err(i) => {
                self.slots[i] = Slot {
                    key,
                    order,
                    used: true,
                };
                self.len += 1;
                None
            }
        }
    }

    /// Takes up to `n` shares off the order of `key`, removing it when none are left. Returns
    /// the order as it was and the shares taken, or `None` when `key` is not live.
    #[inline]
    pub fn take(&mut self, key: u64, n: u32) -> Option<(Order, u32)> {
        let i = self.find(key).ok()?;
        let o = self.slots[i].order;
        let taken = n.min(o.shares);
        if taken == o.shares {
            self.remove_at(i);
        } else {
            self.slots[i].order.shares -= taken;
        }
        Some((o, taken))
    }

    /// Removes the order of `key`.
    pub fn remove(&mut self, key: u64) -> Option<Order> {
        let i = self.find(key).ok()?;
        let o = self.slots[i].order;
        self.remove_at(i);
        Some(o)
    }

    /// Empties slot `i` and shifts back the slots after it that probed past it, so every key
    /// stays reachable from its home slot without tombstones.
    fn remove_at(&mut self, mut i: usize) {
        let mask = self.mask();
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            if !self.slots[j].used {
                break;
            }
            let k = self.home(self.slots[j].key);
            // `j` may stay when its home lies cyclically in (i, j]
            let stays = if i <= j {
                i < k && k <= j
            } else {
                i < k || k <= j
            };
            if !stays {
                self.slots[i] = self.slots[j];
                i = j;
            }
        }
        self.slots[i] = EMPTY;
        self.len -= 1;
    }

    fn grow(&mut self) {
        let old = std::mem::replace(self, OrderTable::with_capacity(self.slots.len()));
        for s in old.slots.into_iter().filter(|s| s.used) {
            let Err(i) = self.find(s.key) else {
                unreachable!("keys are unique")
            };
            self.slots[i] = s;
            self.len += 1;
        }
    }

    /// Every live order, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &Order)> {
        self.slots
            .iter()
            .filter(|s| s.used)
            .map(|s| (s.key, &s.order))
    }

    /// Asks the CPU to start loading the slot `key` hashes to (a hint: no effect on the
    /// table's contents, and harmless for a reference that is not there).
    #[inline(always)]
    pub fn prefetch(&self, key: u64) {
        let p = self.slots.as_ptr().wrapping_add(self.home(key)) as *const u8;
        prefetch(p);
        // a slot that straddles two cache lines
        prefetch(p.wrapping_add(std::mem::size_of::<Slot>() - 1));
    }
}

/// Hints the CPU to load the cache line of `p` (never dereferenced; any address is fine).
#[inline(always)]
pub fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: a prefetch is a hint that never faults or reads memory architecturally, for
        // any address; SSE is part of the x86_64 baseline.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p as *const i8) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn order(shares: u32) -> Order {
        Order {
            locate: 1,
            side: b'B',
            px_e4: 100,
            shares,
        }
    }

    #[test]
    fn insert_get_take_remove() {
        let mut t = OrderTable::with_capacity(4);
        assert_eq!(t.insert(7, order(10)), None);
        assert_eq!(t.insert(7, order(20)), Some(order(10)));
        assert_eq!(t.len(), 1);
        assert_eq!(t.take(7, 5), Some((order(20), 5)));
        assert_eq!(t.get(7).map(|o| o.shares), Some(15));
        assert_eq!(t.take(7, u32::MAX), Some((order(15), 15)));
        assert_eq!(t.get(7), None);
        assert_eq!(t.take(7, 1), None);
        assert_eq!(t.remove(8), None);
        assert!(t.is_empty());
    }

    /// Random inserts, partial and full takes and removes, with the table growing from a tiny
    /// start and keys crowded into few slots (consecutive and strided references), agree with
    /// std's map after every step.
    #[test]
    fn agrees_with_a_hash_map() {
        let mut rng = pcap_replays::rng::Rng::new(7);
        let mut next = move |n: u64| rng.below(n);
        let mut t = OrderTable::with_capacity(1);
        let mut m: HashMap<u64, Order> = HashMap::new();
        for step in 0..200_000u64 {
            let key = match next(3) {
                0 => next(2_000),
                1 => next(500) * 4096,
                _ => u64::MAX - next(100),
            };
            match next(4) {
                0 | 1 => {
                    let o = Order {
                        locate: next(100) as u16,
                        side: b'S',
                        px_e4: next(1000) as u32,
                        shares: 1 + next(50) as u32,
                    };
                    assert_eq!(t.insert(key, o), m.insert(key, o), "step {step}");
                }
                2 => {
                    let n = 1 + next(60) as u32;
                    let want = m.get(&key).copied().map(|o| (o, n.min(o.shares)));
                    if let Some((o, taken)) = want {
                        if taken == o.shares {
                            m.remove(&key);
                        } else {
                            m.get_mut(&key).unwrap().shares -= taken;
                        }
                    }
                    assert_eq!(t.take(key, n), want, "step {step}");
                }
                _ => assert_eq!(t.remove(key), m.remove(&key), "step {step}"),
            }
            assert_eq!(t.len(), m.len());
            if step % 10_000 == 0 {
                for (k, o) in &m {
                    assert_eq!(t.get(*k), Some(o), "step {step} key {k}");
                }
                assert_eq!(t.iter().count(), m.len());
            }
        }
    }
}
