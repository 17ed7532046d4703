//! One side of a book: price levels in a sorted vector with the best price at the end, so the
//! common changes (at or near the best price) move little memory and a lookup is a binary
//! search over a few cache lines. Bids are kept ascending, offers descending.

use crate::books::Level;

/// Price levels of one side.
#[derive(Debug, Clone, Default)]
pub struct Ladder {
    /// `(px_e4, level)`, worst first, best last.
    levels: Vec<(u32, Level)>,
    /// True for offers (best = lowest price, kept at the end).
    descending: bool,
}

impl Ladder {
    /// A bid ladder.
    pub fn bids() -> Self {
        Ladder {
            levels: Vec::new(),
            descending: false,
        }
    }
    /// An offer ladder.
    pub fn asks() -> Self {
        Ladder {
            levels: Vec::new(),
            descending: true,
        }
    }

    #[inline]
    fn find(&self, px: u32) -> Result<usize, usize> {
        if self.descending {
            self.levels.binary_search_by(|(p, _)| px.cmp(p))
        } else {
            self.levels.binary_search_by(|(p, _)| p.cmp(&px))
        }
    }

    /// Adds an order of `shares` at `px`.
    #[inline]
    pub fn add(&mut self, px: u32, shares: u64) {
        match self.find(px) {
            Ok(i) => {
                let l = &mut self.levels[i].1;
                l.shares += shares;
                l.orders += 1;
            }
            Err(i) => self.levels.insert(i, (px, Level { shares, orders: 1 })),
        }
    }

    /// Takes `shares` off the level at `px`, and one order when `gone`; drops an emptied level.
    #[inline]
    pub fn take(&mut self, px: u32, shares: u64, gone: bool) {
        if let Ok(i) = self.find(px) {
            let l = &mut self.levels[i].1;
            l.shares -= shares.min(l.shares);
            if gone {
                l.orders = l.orders.saturating_sub(1);
            }
            if l.orders == 0 {
                self.levels.remove(i);
            }
        }
    }

    /// The best level.
    #[inline]
    pub fn best(&self) -> Option<(u32, Level)> {
        self.levels.last().copied()
    }
    /// Levels.
    pub fn len(&self) -> usize {
        self.levels.len()
    }
    /// True when there is no level.
    pub fn is_empty(&self) -> bool {
        self.levels.is_empty()
    }
    /// Levels, best first.
    pub fn best_first(&self) -> impl Iterator<Item = (u32, Level)> + '_ {
        self.levels.iter().rev().copied()
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
}
