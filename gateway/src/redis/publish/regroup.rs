//! Bars grouped by list, apart from the I/O. A backlog of bars (a restore writes a log's bars
//! again when Redis lost them; a publisher that starts late, or finds Redis back after a while,
//! writes what it missed) holds many bars of each list: up to 600 of every series, millions for
//! a day of thousands of symbols. The log holds them in time order, every list's bars
//! interleaved, so written in that order each list gets one bar a command. Grouped, a list takes
//! a run of them in one `RPUSH` (and one `HSET` of its newest bar, one trim at most) and Redis
//! does a tenth of the work or less; a bar to publish still takes its own publish, after the
//! push.
//!
//! Bars checked (or not to be) are moved here from the front of the bars waiting, each to its
//! list's group, in log order; a group is taken whole (up to [`MAX_GROUP`], and as far as the
//! flush's commands go), and the lists are taken in the order they got their first bar. Each
//! list's bars stay in log order, which is all its list and its channel need: the lists do not
//! depend on one another. What a write did not settle goes back to the head of its list.
//!
//! Bounded: reading runs a window ahead ([`super::runs::REGROUP_WINDOW`], the bars
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

/// Commands a group costs besides its publishes: its push, its trim and its hash write.
pub(super) const GROUP_COMMANDS: usize = 3;

/// Bars to write, by list.
#[derive(Debug, Default)]
pub(super) struct Regroup {
    /// Each list's bars in order, in chunks (none empty).
    lists: FastMap<List, VecDeque<Vec<PendingBar>>>,
    /// Lists holding bars, each once, in the order they got their first.
    order: VecDeque<List>,
    len: usize,
    /// Of those, bars restored (not published).
    quiet: usize,
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

    /// Bars held that are restored, not published: a restore is under way.
    pub(super) fn quiet(&self) -> usize {
        self.quiet
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
        self.quiet += usize::from(p.quiet);
    }

    /// Groups of bars to write, one list each and in its order, lists first come first, until
    /// they hold `bars` at least or cost `commands` (a group [`GROUP_COMMANDS`], and one more a
    /// bar published), or every list held gave one; one group at least, with one bar at least.
    /// A list with more than [`MAX_GROUP`] (or `bars`), or more to publish than the commands
    /// left, keeps the rest, and goes last in line.
    pub(super) fn take(&mut self, bars: usize, commands: usize) -> Vec<Vec<PendingBar>> {
        let most = MAX_GROUP.min(bars.max(1));
        let mut groups = Vec::new();
        let (mut taken, mut cost) = (0, 0);
        // each list once: two groups of one list in a flush, both put back after a failure,
        // would go back the wrong way round
        let mut lists = self.order.len();
        while taken < bars
            && (cost < commands || groups.is_empty())
            && lists > 0
            && let Some(l) = self.order.pop_front()
        {
            lists -= 1;
            let Some(q) = self.lists.get_mut(&l) else {
                continue;
            };
            cost += GROUP_COMMANDS;
            let mut group: Vec<PendingBar> = Vec::new();
            while let Some(c) = q.front_mut() {
                // this chunk's bars that fit: up to `most` in the group, and a publish each
                // while commands are left (the group's first bar always)
                let mut k = 0;
                let mut full = false;
                for p in c.iter() {
                    if group.len() + k == most {
                        full = true;
                        break;
                    }
                    if !p.quiet {
                        if cost >= commands && group.len() + k > 0 {
                            full = true;
                            break;
                        }
                        cost += 1;
                    }
                    k += 1;
                }
                if k == c.len() {
                    let whole = q.pop_front().unwrap_or_default();
                    if group.is_empty() {
                        group = whole;
                    } else {
                        group.extend(whole);
                    }
                } else {
                    group.extend(c.drain(..k));
                }
                if full {
                    break;
                }
            }
            if q.is_empty() {
                self.lists.remove(&l);
            } else {
                self.order.push_back(l);
            }
            taken += group.len();
            self.len -= group.len();
            self.quiet -= group.iter().filter(|p| p.quiet).count();
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
        self.quiet += group.iter().filter(|p| p.quiet).count();
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
        self.quiet = 0;
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

    /// No bound on commands.
    const ALL: usize = usize::MAX;

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
        let g = r.take(3, ALL);
        assert_eq!(g.len(), 1, "one list is enough for three bars");
        assert_eq!(ats(&g[0]), [0, 3, 5]);
        assert_eq!(r.len(), 3);
        let g = r.take(100, ALL);
        assert_eq!(
            g.iter().map(|g| ats(g)).collect::<Vec<_>>(),
            [vec![1, 4], vec![2]]
        );
        assert!(r.is_empty());
        assert!(r.take(10, ALL).is_empty());
        // a list emptied and filled again goes to the back of the line
        r.push(bar("A", 1, 10));
        r.push(bar("B", 1, 11));
        r.push(bar("A", 1, 12));
        assert_eq!(ats(&r.take(2, ALL)[0]), [10, 12]);
    }

    #[test]
    fn a_group_is_at_most_what_a_list_keeps_and_the_rest_waits_its_turn() {
        let mut r = Regroup::default();
        for k in 0..(MAX_GROUP as u64 + 5) {
            r.push(bar("A", 1, 2 * k));
        }
        r.push(bar("B", 1, 1));
        let g = r.take(MAX_GROUP, ALL);
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].len(), MAX_GROUP);
        assert_eq!(g[0].last().map(|p| p.at), Some(2 * (MAX_GROUP as u64 - 1)));
        let g = r.take(1000, ALL);
        assert_eq!(ats(&g[0]), [1], "B was waiting");
        assert_eq!(g[1].len(), 5);
        assert_eq!(g[1][0].at, 2 * MAX_GROUP as u64);
        // nor more than asked for
        for k in 0..10 {
            r.push(bar("C", 1, k));
        }
        assert_eq!(ats(&r.take(4, ALL)[0]), [0, 1, 2, 3]);
        assert_eq!(r.len(), 6);
        assert_eq!(ats(&r.take(10, ALL)[0]), [4, 5, 6, 7, 8, 9]);
    }

    #[test]
    fn bars_not_settled_go_back_first_and_before_their_lists_later_bars() {
        let mut r = Regroup::default();
        for (k, s) in ["A", "B", "A", "C"].into_iter().enumerate() {
            r.push(bar(s, 1, k as u64));
        }
        let mut g = r.take(2, ALL);
        assert_eq!(ats(&g[0]), [0, 2]);
        // read meanwhile
        r.push(bar("A", 1, 7));
        let unsettled = g.remove(0);
        r.put_back(unsettled);
        assert_eq!(r.len(), 5);
        let g = r.take(3, ALL);
        assert_eq!(ats(&g[0]), [0, 2, 7], "A first again, its bars in order");
        // back to an empty list: first in line
        r.put_back(g.into_iter().next().unwrap());
        assert_eq!(ats(&r.take(3, ALL)[0]), [0, 2, 7]);
        let rest = r.drain_in_log_order();
        assert_eq!(ats(&rest), [1, 3]);
        assert!(r.is_empty() && r.take(5, ALL).is_empty());
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

    #[test]
    fn bars_to_publish_take_a_command_each_and_a_group_stops_where_the_commands_end() {
        let mut r = Regroup::default();
        let published = |s, k| PendingBar {
            quiet: false,
            ..bar(s, 1, k)
        };
        // A: 2 restored, then 6 to publish; B: 3 to publish; C: 1 restored
        for k in 0..2 {
            r.push(bar("A", 1, k));
        }
        for k in 2..8 {
            r.push(published("A", k));
        }
        for k in 8..11 {
            r.push(published("B", k));
        }
        r.push(bar("C", 1, 11));
        assert_eq!((r.len(), r.quiet()), (12, 3));
        // 3 for A's group, then a command a publish: A's restored bars and 4 published
        let g = r.take(1000, GROUP_COMMANDS + 4);
        assert_eq!(g.len(), 1);
        assert_eq!(ats(&g[0]), [0, 1, 2, 3, 4, 5]);
        assert_eq!((r.len(), r.quiet()), (6, 1));
        // A waits behind B and C now; its first bar always goes, whatever the commands
        let g = r.take(1000, 1);
        assert_eq!(ats(&g[0]), [8], "B's first, then the commands are spent");
        let g = r.take(1000, 2 * GROUP_COMMANDS + 2);
        assert_eq!(
            g.iter().map(|g| ats(g)).collect::<Vec<_>>(),
            [vec![11], vec![6, 7]],
            "C (nothing to publish), then A's two left"
        );
        assert_eq!(r.quiet(), 0);
        let g = r.take(1000, ALL);
        assert_eq!(ats(&g[0]), [9, 10]);
        assert!(r.is_empty());
        // quiet ones count no command: a whole restore's group in a few
        for k in 0..100 {
            r.push(bar("D", 1, k));
        }
        assert_eq!(r.take(1000, GROUP_COMMANDS)[0].len(), 100);
        // put back: counted again
        let mut g = r.take(1000, ALL);
        assert!(g.is_empty());
        r.push(bar("E", 1, 1));
        r.push(published("E", 2));
        g = r.take(1000, ALL);
        r.put_back(g.remove(0));
        assert_eq!((r.len(), r.quiet()), (2, 1));
        assert_eq!(r.drain_in_log_order().len(), 2);
        assert_eq!((r.len(), r.quiet()), (0, 0));
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Bars of list 0..4 (quiet: restored, not published).
        Push(u8, bool, u16),
        /// A flush's take, within these bars and commands.
        Take(usize, usize),
        /// The last take not settled: back it goes.
        PutBack,
        /// A reconnection: everything held, in log order.
        Drain,
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            6 => (0u8..4, any::<bool>(), 1u16..4).prop_map(|(l, q, n)| Op::Push(l, q, n)),
            1 => (0u8..4, any::<bool>(), 500u16..800).prop_map(|(l, q, n)| Op::Push(l, q, n)),
            3 => (1usize..40, 1usize..40).prop_map(|(b, c)| Op::Take(b, c)),
            1 => (600usize..1500, 1usize..2000).prop_map(|(b, c)| Op::Take(b, c)),
            1 => Just(Op::PutBack),
            1 => Just(Op::Drain),
        ]
    }

    proptest::proptest! {
        /// Whatever comes in and goes out: each list's bars leave in log order, from its head,
        /// a group is one list's and never empty, a take keeps to its bars and commands (past
        /// them by one group's at most), and the counts are what is held.
        #[test]
        fn each_list_leaves_in_order_within_the_budget(
            ops in proptest::collection::vec(op(), 1..200)
        ) {
            let mut r = Regroup::default();
            // per list, the bars held (at, quiet): a list's must leave in log order, from its
            // oldest
            let mut held: [std::collections::BTreeSet<(u64, bool)>; 4] = Default::default();
            let mut last_take: Vec<Vec<PendingBar>> = Vec::new();
            let name = |l: u8| ["A", "B", "C", "D"][l as usize];
            let mut next_at = 0u64;
            for op in ops {
                match op {
                    Op::Push(l, quiet, n) => {
                        for _ in 0..n {
                            next_at += 1;
                            let at = next_at;
                            r.push(PendingBar { quiet, ..bar(name(l), 1, at) });
                            held[l as usize].insert((at, quiet));
                        }
                    }
                    Op::Take(bars, commands) => {
                        let groups = r.take(bars, commands);
                        let (mut n, mut cost) = (0, 0);
                        for g in &groups {
                            proptest::prop_assert!(!g.is_empty());
                            proptest::prop_assert!(g.len() <= MAX_GROUP.min(bars));
                            let l = usize::from(g[0].rec.symbol[0] - b'A');
                            for p in g {
                                proptest::prop_assert_eq!(p.rec.symbol, g[0].rec.symbol);
                                let first = held[l].pop_first();
                                proptest::prop_assert_eq!(first, Some((p.at, p.quiet)));
                            }
                            n += g.len();
                            cost += GROUP_COMMANDS + g.iter().filter(|p| !p.quiet).count();
                        }
                        proptest::prop_assert!(n <= bars + MAX_GROUP);
                        proptest::prop_assert!(cost <= commands + GROUP_COMMANDS);
                        last_take = groups;
                    }
                    Op::PutBack => {
                        // every group of it, in the order taken, as a flush whose connection
                        // failed puts them back
                        for g in std::mem::take(&mut last_take) {
                            let l = usize::from(g[0].rec.symbol[0] - b'A');
                            held[l].extend(g.iter().map(|p| (p.at, p.quiet)));
                            r.put_back(g);
                        }
                    }
                    Op::Drain => {
                        let all = r.drain_in_log_order();
                        let mut want: Vec<(u64, bool)> =
                            held.iter_mut().flat_map(std::mem::take).collect();
                        want.sort();
                        let got: Vec<(u64, bool)> = all.iter().map(|p| (p.at, p.quiet)).collect();
                        proptest::prop_assert_eq!(got, want);
                        last_take.clear();
                    }
                }
                let n: usize = held.iter().map(|h| h.len()).sum();
                let quiet: usize = held.iter().flatten().filter(|(_, q)| *q).count();
                proptest::prop_assert_eq!((r.len(), r.quiet()), (n, quiet));
                proptest::prop_assert_eq!(r.is_empty(), n == 0);
            }
        }
    }
}
