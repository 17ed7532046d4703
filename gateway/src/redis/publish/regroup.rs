//! A restore's bars grouped by list, apart from the I/O. A restore writes a log's bars again
//! (Redis lost them): up to 600 of every series, millions for a day of thousands of symbols.
//! The log holds them in time order, every list's bars interleaved, so written in that order
//! each list gets one bar a command. Grouped, a list takes a run of them in one `RPUSH` (and one
//! `HSET` of its newest bar, one trim at most) and Redis does a tenth of the work or less.
//!
//! The restore's bars (quiet, checked) are moved here from the front of the bars waiting as they
//! become ready, each to its list's group, in log order; a group is taken whole (up to
//! [`MAX_GROUP`]), and the lists are taken in the order they got their first bar. Each list's
//! bars stay in log order, which is all its list needs: the lists do not depend on one
//! another. What a write did not settle goes back to the head of its list.
//!
//! Bounded: a restore reads a window ahead ([`super::restore::REGROUP_WINDOW`], the bars
//! waiting and these together), and everything held counts against
//! [`super::bars::MAX_PENDING_BARS`]. Lists grow a chunk at a time, so memory freed by one
//! group is reused by the next and no list is ever copied whole.

use super::bars::PendingBar;
use book::consolidate::FastMap;
use std::collections::VecDeque;

/// A bar list: symbol and interval.
pub(super) type List = ([u8; 8], u8);

/// Bars one command appends at most (a list keeps 600; more would be trimmed at once, and the
/// restore leaves those out already).
pub(super) const MAX_GROUP: usize = 600;

/// Bars a chunk of a list's holds: a list grows a chunk at a time, never copied. (Every list
/// gets a bar a second of the log, so growing each list's one buffer by doubling made all of
/// them grow at once: 5,000 buffers copied in one flush, a 20-30 ms stall of the quotes.)
const CHUNK: usize = 32;

/// The restore's bars, by list.
#[derive(Debug, Default)]
pub(super) struct Regroup {
    /// Each list's bars in order, in chunks (none empty).
    lists: FastMap<List, VecDeque<Vec<PendingBar>>>,
    /// Lists holding bars, each once, in the order they got their first.
    order: VecDeque<List>,
    len: usize,
}

fn list_of(p: &PendingBar) -> List {
    (p.rec.symbol, p.rec.interval_s)
}

impl Regroup {
    /// Bars held.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A bar read after every one held of its list.
    pub(super) fn push(&mut self, p: PendingBar) {
        let l = list_of(&p);
        let q = self.lists.entry(l).or_default();
        if q.is_empty() {
            self.order.push_back(l);
        }
        match q.back_mut() {
            Some(c) if c.len() < CHUNK => c.push(p),
            _ => {
                let mut c = Vec::with_capacity(CHUNK);
                c.push(p);
                q.push_back(c);
            }
        }
        self.len += 1;
    }

    /// Groups of bars to write, one list each and in its order, lists first come first, until
    /// they hold `bars` at least (or every bar held). A list with more than [`MAX_GROUP`] (or
    /// `bars`) keeps the rest, and goes last in line.
    pub(super) fn take(&mut self, bars: usize) -> Vec<Vec<PendingBar>> {
        let most = MAX_GROUP.min(bars.max(1));
        let mut groups = Vec::new();
        let mut taken = 0;
        while taken < bars
            && let Some(l) = self.order.pop_front()
        {
            let Some(q) = self.lists.get_mut(&l) else {
                continue;
            };
            let mut group: Vec<PendingBar> = Vec::new();
            while let Some(c) = q.front_mut() {
                let need = most - group.len();
                if need == 0 {
                    break;
                }
                if c.len() > need {
                    group.extend(c.drain(..need));
                } else if group.is_empty() {
                    group = q.pop_front().unwrap_or_default();
                } else {
                    group.append(c);
                    q.pop_front();
                }
            }
            if q.is_empty() {
                self.lists.remove(&l);
            } else {
                self.order.push_back(l);
            }
            taken += group.len();
            self.len -= group.len();
            groups.push(group);
        }
        groups
    }

    /// Bars of a group (one list's, in order) that its write did not settle: first again, at
    /// the head of their list, and the list first in line.
    pub(super) fn put_back(&mut self, group: Vec<PendingBar>) {
        let Some(l) = group.first().map(list_of) else {
            return;
        };
        self.len += group.len();
        let q = self.lists.entry(l).or_default();
        if q.is_empty() {
            self.order.push_front(l);
        } else if let Some(i) = self.order.iter().position(|&x| x == l) {
            // (a list with more than a group's bars: rare, and `order` holds one entry a list)
            self.order.remove(i);
            self.order.push_front(l);
        }
        q.push_front(group);
    }

    /// Every bar held, in log order (log, then offset); none left.
    pub(super) fn drain_in_log_order(&mut self) -> Vec<PendingBar> {
        let mut all: Vec<PendingBar> = self.lists.drain().flat_map(|(_, q)| q).flatten().collect();
        all.sort_by_key(|p| (p.log, p.at));
        self.order.clear();
        self.len = 0;
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use book::barlog::{RECORD, record_from_bytes};

    fn bar(sym: &str, interval_s: u8, at: u64) -> PendingBar {
        let mut b = [0u8; RECORD];
        b[..8].copy_from_slice(b"        ");
        b[..sym.len()].copy_from_slice(sym.as_bytes());
        b[10] = interval_s;
        PendingBar {
            rec: record_from_bytes(&b),
            log: 1,
            at,
            quiet: true,
            check: false,
        }
    }

    fn ats(g: &[PendingBar]) -> Vec<u64> {
        g.iter().map(|p| p.at).collect()
    }

    #[test]
    fn each_list_comes_whole_and_in_order_first_come_first() {
        let mut r = Regroup::default();
        // the log's order: every list's bars interleaved
        for (k, (s, i)) in [("A", 1), ("B", 1), ("A", 60), ("A", 1), ("B", 1), ("A", 1)]
            .into_iter()
            .enumerate()
        {
            r.push(bar(s, i, k as u64));
        }
        assert_eq!(r.len(), 6);
        let g = r.take(3);
        assert_eq!(g.len(), 1, "one list is enough for three bars");
        assert_eq!(ats(&g[0]), [0, 3, 5]);
        assert_eq!(r.len(), 3);
        let g = r.take(100);
        assert_eq!(
            g.iter().map(|g| ats(g)).collect::<Vec<_>>(),
            [vec![1, 4], vec![2]]
        );
        assert!(r.is_empty());
        assert!(r.take(10).is_empty());
        // a list emptied and filled again goes to the back of the line
        r.push(bar("A", 1, 10));
        r.push(bar("B", 1, 11));
        r.push(bar("A", 1, 12));
        assert_eq!(ats(&r.take(2)[0]), [10, 12]);
    }

    #[test]
    fn a_group_is_at_most_what_a_list_keeps_and_the_rest_waits_its_turn() {
        let mut r = Regroup::default();
        for k in 0..(MAX_GROUP as u64 + 5) {
            r.push(bar("A", 1, 2 * k));
        }
        r.push(bar("B", 1, 1));
        let g = r.take(MAX_GROUP);
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].len(), MAX_GROUP);
        assert_eq!(g[0].last().map(|p| p.at), Some(2 * (MAX_GROUP as u64 - 1)));
        let g = r.take(1000);
        assert_eq!(ats(&g[0]), [1], "B was waiting");
        assert_eq!(g[1].len(), 5);
        assert_eq!(g[1][0].at, 2 * MAX_GROUP as u64);
        // nor more than asked for
        for k in 0..10 {
            r.push(bar("C", 1, k));
        }
        assert_eq!(ats(&r.take(4)[0]), [0, 1, 2, 3]);
        assert_eq!(r.len(), 6);
        assert_eq!(ats(&r.take(10)[0]), [4, 5, 6, 7, 8, 9]);
    }

    #[test]
    fn bars_not_settled_go_back_first_and_before_their_lists_later_bars() {
        let mut r = Regroup::default();
        for (k, s) in ["A", "B", "A", "C"].into_iter().enumerate() {
            r.push(bar(s, 1, k as u64));
        }
        let mut g = r.take(2);
        assert_eq!(ats(&g[0]), [0, 2]);
        // read meanwhile
        r.push(bar("A", 1, 7));
        let unsettled = g.remove(0);
        r.put_back(unsettled);
        assert_eq!(r.len(), 5);
        let g = r.take(3);
        assert_eq!(ats(&g[0]), [0, 2, 7], "A first again, its bars in order");
        // back to an empty list: first in line
        r.put_back(g.into_iter().next().unwrap());
        assert_eq!(ats(&r.take(3)[0]), [0, 2, 7]);
        let rest = r.drain_in_log_order();
        assert_eq!(ats(&rest), [1, 3]);
        assert!(r.is_empty() && r.take(5).is_empty());
    }

    #[test]
    fn drained_in_log_order_across_logs() {
        let mut r = Regroup::default();
        let mut late = bar("A", 1, 1);
        late.log = 2;
        r.push(late);
        r.push(bar("B", 1, 9));
        r.push(bar("A", 1, 3));
        let all = r.drain_in_log_order();
        assert_eq!(
            all.iter().map(|p| (p.log, p.at)).collect::<Vec<_>>(),
            [(1, 3), (1, 9), (2, 1)]
        );
        assert_eq!(r.len(), 0);
    }
}
