//! One side of a book: price levels in two parallel sorted vectors with the best price at the
//! end, so the common changes (at or near the best price) move little memory. The search runs
//! over the keys alone (4 bytes a level: 16 levels a cache line), so finding a level touches a
//! line or two where a vector of whole levels touched one per probe; it is a branchless count
//! (vectorised) for the usual few dozen levels and a binary search beyond that.
//!
//! Keys are ascending on both sides: a bid's key is its price, an offer's is `!price` (so the
//! lowest offer has the highest key and sits at the end).

use crate::books::Level;

/// At most this many levels are searched by counting; more by binary search.
const LINEAR_MAX: usize = 64;

/// Price levels of one side.
#[derive(Debug, Clone, Default)]
pub struct Ladder {
    /// Keys, ascending: worst first, best last.
    keys: Vec<u32>,
    /// `levels[i]` is the level of `keys[i]`.
    levels: Vec<Level>,
    /// True for offers (key = `!px`).
    descending: bool,
}

impl Ladder {
    /// A bid ladder.
    pub fn bids() -> Self {
        Ladder {
            keys: Vec::new(),
            levels: Vec::new(),
            descending: false,
        }
    }
    /// An offer ladder.
    pub fn asks() -> Self {
        Ladder {
            keys: Vec::new(),
            levels: Vec::new(),
            descending: true,
        }
    }

    #[inline]
    fn key(&self, px: u32) -> u32 {
        if self.descending { !px } else { px }
    }

    /// `Ok(i)` when `keys[i] == key`, else `Err(i)` where it would go.
    #[inline]
    fn find(&self, px: u32) -> Result<usize, usize> {
        let key = self.key(px);
        let i = if self.keys.len() <= LINEAR_MAX {
            // keys below `key`: no data-dependent branch, and LLVM vectorises it
            self.keys.iter().map(|&k| (k < key) as usize).sum()
        } else {
            self.keys.partition_point(|&k| k < key)
        };
        if self.keys.get(i) == Some(&key) {
            Ok(i)
        } else {
            Err(i)
        }
    }

    /// Adds an order of `shares` at `px`.
    #[inline]
    pub fn add(&mut self, px: u32, shares: u64) {
        match self.find(px) {
            Ok(i) => {
                let l = &mut self.levels[i];
                l.shares += shares;
                l.orders += 1;
            }
            Err(i) => {
                let key = self.key(px);
                self.keys.insert(i, key);
                self.levels.insert(i, Level { shares, orders: 1 });
            }
        }
    }

    /// Takes `shares` off the level at `px`, and one order when `gone`; drops an emptied level.
    #[inline]
    pub fn take(&mut self, px: u32, shares: u64, gone: bool) {
        if let Ok(i) = self.find(px) {
            let l = &mut self.levels[i];
            l.shares -= shares.min(l.shares);
            if gone {
                l.orders = l.orders.saturating_sub(1);
            }
            if l.orders == 0 {
                self.keys.remove(i);
                self.levels.remove(i);
            }
        }
    }

    /// Starts loading the best level (key and level): a hint, for a reader that will soon
    /// ask for [`Ladder::best`].
    #[inline]
    pub fn prefetch_best(&self) {
        let n = self.keys.len().saturating_sub(1);
        crate::orders::prefetch(self.keys.as_ptr().wrapping_add(n) as *const u8);
        crate::orders::prefetch(self.levels.as_ptr().wrapping_add(n) as *const u8);
    }

    /// The best level.
    #[inline]
    pub fn best(&self) -> Option<(u32, Level)> {
        Some((self.key(*self.keys.last()?), *self.levels.last()?))
    }
    /// Levels.
    pub fn len(&self) -> usize {
        self.keys.len()
    }
    /// True when there is no level.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
    /// Levels, best first.
    pub fn best_first(&self) -> impl Iterator<Item = (u32, Level)> + '_ {
        self.keys
            .iter()
            .zip(&self.levels)
            .rev()
            .map(|(&k, &l)| (self.key(k), l))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_is_last_on_both_sides() {
        let mut b = Ladder::bids();
        let mut a = Ladder::asks();
        for px in [100, 300, 200] {
            b.add(px, 10);
            a.add(px, 10);
        }
        b.add(300, 5);
        assert_eq!(
            b.best(),
            Some((
                300,
                Level {
                    shares: 15,
                    orders: 2
                }
            ))
        );
        assert_eq!(
            a.best(),
            Some((
                100,
                Level {
                    shares: 10,
                    orders: 1
                }
            ))
        );
        assert_eq!(
            b.best_first().map(|l| l.0).collect::<Vec<_>>(),
            vec![300, 200, 100]
        );
        assert_eq!(
            a.best_first().map(|l| l.0).collect::<Vec<_>>(),
            vec![100, 200, 300]
        );
        a.take(100, 10, true);
        assert_eq!(a.best().map(|l| l.0), Some(200));
        b.take(300, 10, true);
        assert_eq!(
            b.best(),
            Some((
                300,
                Level {
                    shares: 5,
                    orders: 1
                }
            ))
        );
        b.take(999, 1, true); // no such level: nothing happens
        assert_eq!(b.len(), 3);
    }

    /// Random adds and takes over up to a few hundred prices (both search paths) agree with a
    /// sorted map on both sides.
    #[test]
    fn agrees_with_a_sorted_map_past_the_linear_limit() {
        use std::collections::BTreeMap;
        let mut rng = pcap_replays::rng::Rng::new(7);
        let mut next = move |n: u64| rng.below(n);
        for descending in [false, true] {
            let mut l = if descending {
                Ladder::asks()
            } else {
                Ladder::bids()
            };
            let mut m: BTreeMap<u32, Level> = BTreeMap::new();
            let mut max_len = 0;
            for step in 0..20_000 {
                // the range of prices widens, then narrows, so the ladder crosses LINEAR_MAX
                let width = if step < 10_000 { 300 } else { 40 };
                let px = 1 + next(width) as u32 * 7;
                if next(3) > 0 || step >= 10_000 && m.len() > 30 {
                    if next(2) == 0 {
                        if let Some(v) = m.get_mut(&px) {
                            let n = v.shares.min(1 + next(5));
                            v.shares -= n;
                            v.orders -= 1;
                            if v.orders == 0 {
                                m.remove(&px);
                            }
                            l.take(px, n, true);
                            continue;
                        }
                    }
                    if step < 10_000 || m.contains_key(&px) {
                        let e = m.entry(px).or_default();
                        e.shares += 10;
                        e.orders += 1;
                        l.add(px, 10);
                    }
                }
                max_len = max_len.max(l.len());
                let want: Vec<(u32, Level)> = if descending {
                    m.iter().map(|(&p, &v)| (p, v)).collect()
                } else {
                    m.iter().rev().map(|(&p, &v)| (p, v)).collect()
                };
                assert_eq!(l.best_first().collect::<Vec<_>>(), want, "step {step}");
            }
            assert!(
                max_len > LINEAR_MAX,
                "the binary search path ran ({max_len} levels)"
            );
        }
    }
}
