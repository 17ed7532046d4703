//! What a replica may show as fresh, sans I/O (the clock is passed in): the quotes it holds,
//! each node link's state, and the rule of [`super`]'s module docs. [`ReplicaCore`] is told what
//! happened (a link up or down, a heartbeat, a value, time passing) and says which quotes to
//! write, with `stale` set as the rule decides.

use super::decode;
use book::quotes::Quote;
use std::collections::HashMap;

/// What a replica does with each symbol it has.
pub type Out<'a> = &'a mut dyn FnMut(usize, &Quote);

#[derive(Debug, Clone)]
struct Sym {
    q: Quote,
    pub_ns: u64,
    link: usize,
    /// The link generation the value was last confirmed in.
    generation: u64,
    /// What was last written: (quote as shown).
    shown: Option<Quote>,
}

#[derive(Debug, Clone, Default)]
struct LinkState {
    up: bool,
    generation: u64,
    hb_seen: bool,
    hb_last_ns: u64,
    epoch_ns: u64,
    /// The slot map the publisher announced in its last heartbeat.
    hb_map: u64,
    ok: bool,
}

/// The replica's logic: which quotes are known, and which of them can be shown fresh.
#[derive(Debug)]
pub struct ReplicaCore {
    syms: Vec<Sym>,
    /// By symbol, and by venue too when `by_venue`.
    index: HashMap<([u8; 8], u16), usize>,
    by_venue: bool,
    cap: usize,
    links: Vec<LinkState>,
    hb_timeout_ns: u64,
    /// Symbols refused because the table was full.
    pub full: u64,
    /// Values that were not quotes.
    pub bad_values: u64,
    /// Values older than the one held (ignored).
    pub older: u64,
    /// Values taken.
    pub values: u64,
    /// The slot map this replica links by ([`super::cluster::Topology::map_id`]): a link is
    /// trusted only while the publisher's heartbeats name the same map. After a failover (a
    /// promoted replica may lag its dead master) or a resharding, nothing is fresh until the
    /// publisher has seen the new map, rewritten every key under a new epoch and said so.
    map_id: u64,
}

impl ReplicaCore {
    /// A replica of at most `cap` symbols whose links are down until they say otherwise; a link
    /// without a heartbeat for `hb_timeout_ns` makes its symbols stale.
    pub fn new(cap: usize, hb_timeout_ns: u64) -> ReplicaCore {
        ReplicaCore {
            syms: Vec::new(),
            index: HashMap::new(),
            by_venue: false,
            cap,
            links: Vec::new(),
            hb_timeout_ns,
            full: 0,
            bad_values: 0,
            older: 0,
            values: 0,
            map_id: 0,
        }
    }

    /// The same for quotes of one venue each (the book's per-venue table): a value is held per
    /// symbol and venue (the quote's `channel`), at most `cap` of them.
    pub fn per_venue(cap: usize, hb_timeout_ns: u64) -> ReplicaCore {
        ReplicaCore {
            by_venue: true,
            ..ReplicaCore::new(cap, hb_timeout_ns)
        }
    }

    /// Quotes held (symbols, or symbols and venues).
    pub fn len(&self) -> usize {
        self.syms.len()
    }

    /// Whether no symbol is held.
    pub fn is_empty(&self) -> bool {
        self.syms.is_empty()
    }

    fn link(&mut self, k: usize) -> &mut LinkState {
        if self.links.len() <= k {
            self.links.resize(k + 1, LinkState::default());
        }
        &mut self.links[k]
    }

    /// Links known (the highest link index seen, plus one).
    pub fn links(&self) -> usize {
        self.links.len()
    }

    /// The heartbeat timeout, ns.
    pub fn hb_timeout_ns(&self) -> u64 {
        self.hb_timeout_ns
    }

    /// Whether link `k` is up with a heartbeat within the timeout that names this replica's
    /// slot map.
    pub fn link_ok(&self, k: usize, now_ns: u64) -> bool {
        self.links.get(k).is_some_and(|l| {
            l.up && l.hb_seen
                && l.hb_map == self.map_id
                && now_ns.saturating_sub(l.hb_last_ns) <= self.hb_timeout_ns
        })
    }

    /// The slot map this replica now links by.
    pub fn set_map(&mut self, map_id: u64, now_ns: u64, out: Out<'_>) {
        self.map_id = map_id;
        for k in 0..self.links.len() {
            self.update(k, now_ns, out);
        }
    }

    fn emit(&mut self, i: usize, out: Out<'_>) {
        let s = &self.syms[i];
        let l = &self.links[s.link];
        let fresh = l.ok && s.generation == l.generation && s.pub_ns >= l.epoch_ns && !s.q.stale;
        let mut q = s.q;
        q.stale = !fresh;
        if s.shown != Some(q) {
            self.syms[i].shown = Some(q);
            out(i, &q);
        }
    }

    fn emit_link(&mut self, k: usize, out: Out<'_>) {
        for i in 0..self.syms.len() {
            if self.syms[i].link == k {
                self.emit(i, out);
            }
        }
    }

    /// Re-evaluates link `k` after its state changed.
    fn update(&mut self, k: usize, now_ns: u64, out: Out<'_>) {
        let ok = self.link_ok(k, now_ns);
        if self.links[k].ok != ok {
            self.links[k].ok = ok;
            self.emit_link(k, out);
        }
    }

    /// Link `k` (re)connected: nothing it held is confirmed until it arrives again, and nothing
    /// is fresh until a heartbeat comes through it.
    pub fn link_up(&mut self, k: usize, now_ns: u64, out: Out<'_>) {
        let l = self.link(k);
        l.up = true;
        l.generation += 1;
        l.hb_seen = false;
        self.update(k, now_ns, out);
    }

    /// Link `k` lost its node: its symbols go stale.
    pub fn link_down(&mut self, k: usize, now_ns: u64, out: Out<'_>) {
        self.link(k).up = false;
        self.update(k, now_ns, out);
    }

    /// A heartbeat through link `k`: the publisher's epoch and the slot map it writes by.
    pub fn heartbeat(&mut self, k: usize, epoch_ns: u64, map_id: u64, now_ns: u64, out: Out<'_>) {
        let l = self.link(k);
        l.hb_seen = true;
        l.hb_last_ns = now_ns;
        l.hb_map = map_id;
        let new_epoch = epoch_ns != l.epoch_ns;
        l.epoch_ns = epoch_ns;
        self.update(k, now_ns, out);
        if new_epoch {
            self.emit_link(k, out);
        }
    }

    /// Heartbeat timeouts.
    pub fn tick(&mut self, now_ns: u64, out: Out<'_>) {
        for k in 0..self.links.len() {
            self.update(k, now_ns, out);
        }
    }

    /// A value (from GET or a channel) through link `k`; returns the quote's slot if the value
    /// was taken.
    pub fn value(&mut self, k: usize, v: &[u8], out: Out<'_>) -> Option<usize> {
        let Some((pub_ns, q)) = decode(v) else {
            self.bad_values += 1;
            return None;
        };
        let generation = self.link(k).generation;
        self.values += 1;
        let key = (q.symbol, if self.by_venue { q.channel } else { 0 });
        let i = match self.index.get(&key) {
            Some(&i) => i,
            None => {
                if self.syms.len() >= self.cap {
                    self.full += 1;
                    return None;
                }
                self.index.insert(key, self.syms.len());
                self.syms.push(Sym {
                    q,
                    pub_ns,
                    link: k,
                    generation,
                    shown: None,
                });
                self.emit(self.syms.len() - 1, out);
                return Some(self.syms.len() - 1);
            }
        };
        let s = &mut self.syms[i];
        if pub_ns < s.pub_ns {
            self.older += 1;
            return None;
        }
        s.q = q;
        s.pub_ns = pub_ns;
        s.link = k;
        s.generation = generation;
        self.emit(i, out);
        Some(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::encode;

    fn q(sym: &[u8; 8], bid: u32, stale: bool) -> Quote {
        Quote {
            symbol: *sym,
            bid: Some((bid, 100)),
            stale,
            ..Quote::default()
        }
    }

    struct Seen(std::cell::RefCell<Vec<Quote>>);
    impl Seen {
        fn take(&self) -> Vec<(u32, bool)> {
            self.0
                .borrow_mut()
                .drain(..)
                .map(|q| (q.bid.unwrap().0, q.stale))
                .collect()
        }
    }

    const S: u64 = 1_000_000_000;

    #[test]
    fn fresh_needs_a_link_a_heartbeat_since_connect_and_a_value_at_or_after_the_epoch() {
        let mut c = ReplicaCore::new(10, 2 * S);
        let seen = Seen(Default::default());
        let mut out = |_: usize, q: &Quote| seen.0.borrow_mut().push(*q);
        c.link_up(0, 0, &mut out);
        // a value before any heartbeat: held, shown stale
        c.value(0, &encode(100, &q(b"AAAA    ", 1, false)), &mut out);
        c.heartbeat(0, 50, 0, S / 10, &mut out);
        assert_eq!(seen.take(), vec![(1, true), (1, false)]);
        // newer wins, older is ignored
        c.value(0, &encode(200, &q(b"AAAA    ", 2, false)), &mut out);
        c.value(0, &encode(150, &q(b"AAAA    ", 9, false)), &mut out);
        assert_eq!(seen.take(), vec![(2, false)]);
        assert_eq!(c.older, 1);
        // a stale quote from the source stays stale
        c.value(0, &encode(300, &q(b"AAAA    ", 3, true)), &mut out);
        assert_eq!(seen.take(), vec![(3, true)]);
        c.value(0, &encode(400, &q(b"AAAA    ", 4, false)), &mut out);
        assert_eq!(seen.take(), vec![(4, false)]);

        // the heartbeat stops: stale after the timeout, not before
        c.tick(2 * S, &mut out);
        assert!(seen.take().is_empty());
        c.tick(3 * S, &mut out);
        assert_eq!(seen.take(), vec![(4, true)]);
        c.heartbeat(0, 50, 0, 3 * S + 1, &mut out);
        assert_eq!(seen.take(), vec![(4, false)]);

        // the link drops: stale; it comes back: still stale until the value and a heartbeat
        // arrive through the new connection
        c.link_down(0, 4 * S, &mut out);
        assert_eq!(seen.take(), vec![(4, true)]);
        c.link_up(0, 4 * S, &mut out);
        c.heartbeat(0, 50, 0, 4 * S, &mut out);
        assert!(seen.take().is_empty(), "the old value is not confirmed yet");
        c.value(0, &encode(400, &q(b"AAAA    ", 4, false)), &mut out);
        assert_eq!(seen.take(), vec![(4, false)], "the same value, confirmed");

        // a publisher that reconnected announces a new epoch: older values are not trusted
        c.link_down(0, 5 * S, &mut out);
        c.link_up(0, 5 * S, &mut out);
        seen.take();
        c.value(0, &encode(400, &q(b"AAAA    ", 4, false)), &mut out);
        c.heartbeat(0, 500, 0, 5 * S, &mut out);
        assert_eq!(
            seen.take(),
            vec![],
            "a value from before the epoch stays stale"
        );
        c.value(0, &encode(600, &q(b"AAAA    ", 6, false)), &mut out);
        assert_eq!(seen.take(), vec![(6, false)]);

        // garbage is counted; a full table refuses new symbols
        assert_eq!(c.value(0, b"nonsense", &mut out), None);
        assert_eq!(c.bad_values, 1);
        let mut small = ReplicaCore::new(1, S);
        small.value(0, &encode(1, &q(b"AAAA    ", 1, false)), &mut out);
        assert_eq!(
            small.value(0, &encode(1, &q(b"BBBB    ", 1, false)), &mut out),
            None
        );
        assert_eq!(small.full, 1);
    }

    #[test]
    fn trust_needs_the_publisher_on_the_same_slot_map() {
        let mut c = ReplicaCore::new(10, 2 * S);
        let seen = Seen(Default::default());
        let mut out = |_: usize, q: &Quote| seen.0.borrow_mut().push(*q);
        c.set_map(7, 0, &mut out);
        c.link_up(0, 0, &mut out);
        c.heartbeat(0, 50, 7, 0, &mut out);
        c.value(0, &encode(100, &q(b"AAAA    ", 1, false)), &mut out);
        assert_eq!(seen.take(), vec![(1, false)]);
        // a failover: this replica sees the new map first; the publisher's heartbeats still
        // name the old one (it has not rewritten the keys the promoted node may lack)
        c.set_map(8, 1, &mut out);
        assert_eq!(seen.take(), vec![(1, true)]);
        c.heartbeat(0, 50, 7, 2, &mut out);
        assert!(seen.take().is_empty());
        // the publisher's rewrite under a new epoch, and its heartbeat on the new map
        c.value(0, &encode(200, &q(b"AAAA    ", 2, false)), &mut out);
        c.heartbeat(0, 150, 8, 3, &mut out);
        assert_eq!(seen.take(), vec![(2, true), (2, false)]);
        // the other order: the publisher moves to a new map before this replica does
        c.heartbeat(0, 250, 9, 4, &mut out);
        assert_eq!(seen.take(), vec![(2, true)]);
        c.value(0, &encode(300, &q(b"AAAA    ", 3, false)), &mut out);
        c.set_map(9, 5, &mut out);
        assert_eq!(seen.take(), vec![(3, true), (3, false)]);
    }

    #[test]
    fn links_are_independent() {
        let mut c = ReplicaCore::new(10, 2 * S);
        let seen = std::cell::RefCell::new(Vec::new());
        let mut out = |_: usize, q: &Quote| seen.borrow_mut().push((q.symbol, q.stale));
        for k in 0..2 {
            c.link_up(k, 0, &mut out);
            c.heartbeat(k, 1, 0, 0, &mut out);
        }
        c.value(0, &encode(10, &q(b"AAAA    ", 1, false)), &mut out);
        c.value(1, &encode(10, &q(b"BBBB    ", 1, false)), &mut out);
        seen.borrow_mut().clear();
        c.link_down(1, 1, &mut out);
        assert_eq!(
            *seen.borrow(),
            vec![(*b"BBBB    ", true)],
            "only node 1's symbols"
        );
    }

    #[test]
    fn per_venue_holds_one_quote_per_symbol_and_venue() {
        let venue = |ch: u16, bid: u32| Quote {
            channel: ch,
            ..q(b"AAAA    ", bid, false)
        };
        let mut c = ReplicaCore::per_venue(2, 2 * S);
        let seen = std::cell::RefCell::new(Vec::new());
        let mut out = |i: usize, q: &Quote| seen.borrow_mut().push((i, q.channel, q.stale));
        c.link_up(0, 0, &mut out);
        c.heartbeat(0, 1, 0, 0, &mut out);
        assert_eq!(c.value(0, &encode(10, &venue(0, 1)), &mut out), Some(0));
        assert_eq!(c.value(0, &encode(11, &venue(2, 1)), &mut out), Some(1));
        assert_eq!(c.value(0, &encode(12, &venue(0, 2)), &mut out), Some(0));
        assert_eq!(c.len(), 2);
        // a third venue is refused when full, as a new symbol is
        assert_eq!(c.value(0, &encode(13, &venue(1, 1)), &mut out), None);
        assert_eq!(c.full, 1);
        c.link_down(0, 1, &mut out);
        assert_eq!(
            seen.borrow()[3..],
            [(0, 0, true), (1, 2, true)],
            "every venue goes stale with its link"
        );
        // by symbol alone (the consolidated quotes), the venue is not part of the key
        let mut by_sym = ReplicaCore::new(2, 2 * S);
        by_sym.value(0, &encode(10, &venue(0, 1)), &mut out);
        assert_eq!(
            by_sym.value(0, &encode(11, &venue(2, 1)), &mut out),
            Some(0)
        );
    }
}
