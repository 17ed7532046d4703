//! What a replica may show as fresh, sans I/O (the clock is passed in): the quotes it holds,
//! each node link's state, and the rule of [`super`]'s module docs. [`ReplicaCore`] is told what
//! happened (a link up or down, a heartbeat, a value, time passing) and says which quotes to
//! write, with `stale` set as the rule decides.

use super::cluster::{SLOTS, key_slot, parse_map_text};
use super::decode;
use book::quotes::Quote;
use std::collections::HashMap;

/// What a replica does with each symbol it has.
pub type Out<'a> = &'a mut dyn FnMut(usize, &Quote);

/// A publisher heartbeat: `EPOCH_NS SENT_NS MAP_ID RESTORING [MAP]` (see [`super`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat<'a> {
    /// When the publisher last began rewriting every key, ns since the epoch.
    pub epoch_ns: u64,
    /// When it sent this heartbeat, ns since the epoch.
    pub sent_ns: u64,
    /// The slot map it writes by ([`super::cluster::Topology::map_id`]).
    pub map_id: u64,
    /// Bar lists may lack bars that will go in without a publish (a restore under way, or not
    /// yet ruled out): a replica reads them once this is over.
    pub restoring: bool,
    /// That map ([`super::cluster::Topology::map_text`]), when the heartbeat carried it.
    pub map_text: Option<&'a str>,
}

impl<'a> Heartbeat<'a> {
    /// Parses a heartbeat message; `None` if it is not one.
    pub fn parse(payload: &'a [u8]) -> Option<Heartbeat<'a>> {
        let text = std::str::from_utf8(payload).ok()?;
        let mut f = text.split(' ');
        let mut num = || f.next()?.parse::<u64>().ok();
        let (epoch_ns, sent_ns, map_id, restoring) = (num()?, num()?, num()?, num()?);
        let map_text = f.next();
        (f.next().is_none() && restoring <= 1).then_some(Heartbeat {
            epoch_ns,
            sent_ns,
            map_id,
            restoring: restoring == 1,
            map_text,
        })
    }
}

#[derive(Debug, Clone)]
struct Sym {
    q: Quote,
    pub_ns: u64,
    link: usize,
    /// The symbol's hash slot (of its key and channels).
    slot: u16,
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
    /// Quotes shown fresh that this replica then showed stale (their link down or without a
    /// heartbeat in time, their slot moved, a new epoch before their rewrite arrived).
    pub marked_stale: u64,
    /// The slot map this replica links by ([`super::cluster::Topology::map_id`]), and which
    /// link serves each slot in it (empty: any link, as before the first map).
    map_id: u64,
    owner: Vec<u16>,
    /// Each link's node, by hashed cluster node ID ([`super::cluster::Topology::ids`]).
    link_ids: Vec<u64>,
    /// The slot map of the publisher's latest heartbeat (by its send time): its ID, and which
    /// node (hashed ID) serves each slot in it when the heartbeat carried the map.
    pub_map_id: u64,
    pub_owner: Option<Vec<u64>>,
    pub_sent_ns: u64,
}

/// A heartbeat sent this much before the latest one is from another publisher's clock, ns.
const OTHER_CLOCK_NS: u64 = 10_000_000_000;

/// A generation no link has: a value that must arrive again before it is shown fresh.
const UNCONFIRMED: u64 = u64::MAX;

/// The slot of a symbol's key `P:{SYM}` (whatever the prefix: only the hash tag counts).
fn symbol_slot(sym: &[u8; 8]) -> u16 {
    let n = sym.iter().rposition(|&b| b != b' ').map_or(0, |p| p + 1);
    let mut key = [0u8; 10];
    key[0] = b'{';
    key[1..=n].copy_from_slice(&sym[..n]);
    key[n + 1] = b'}';
    key_slot(&key[..n + 2])
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
            marked_stale: 0,
            map_id: 0,
            owner: Vec::new(),
            link_ids: Vec::new(),
            pub_map_id: 0,
            pub_owner: None,
            pub_sent_ns: 0,
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

    /// The heartbeat timeout, ns.
    pub fn hb_timeout_ns(&self) -> u64 {
        self.hb_timeout_ns
    }

    /// Whether link `k` is up with a publisher heartbeat since it connected and within the
    /// timeout.
    pub fn link_ok(&self, k: usize, now_ns: u64) -> bool {
        self.links.get(k).is_some_and(|l| {
            l.up && l.hb_seen && now_ns.saturating_sub(l.hb_last_ns) <= self.hb_timeout_ns
        })
    }

    /// The slot map this replica now links by: its ID, the link serving each slot (`owner`,
    /// [`SLOTS`] entries, or empty for any link), and the node (hashed ID) behind each link
    /// (`link_ids`: (link, ID)). A symbol is fresh only through the link of its slot's node,
    /// and only where the publisher's map puts the slot on the same node: after a failover (a
    /// promoted replica may lag its dead master) or while slots move, the slots that changed
    /// node are stale until the publisher writes them on the new map (and says so in its
    /// heartbeat), while the others stay fresh.
    pub fn set_map(
        &mut self,
        map_id: u64,
        owner: Vec<u16>,
        link_ids: &[(usize, u64)],
        now_ns: u64,
        out: Out<'_>,
    ) {
        debug_assert!(owner.is_empty() || owner.len() == SLOTS);
        // a symbol whose slot changed link is confirmed again only by a value through its new
        // link (were the slot to come back, what the old link held may have been overtaken)
        for s in &mut self.syms {
            let was = self.owner.get(s.slot as usize);
            if was.is_some() && was != owner.get(s.slot as usize) {
                s.generation = UNCONFIRMED;
            }
        }
        self.map_id = map_id;
        self.owner = owner;
        for &(k, id) in link_ids {
            if self.link_ids.len() <= k {
                self.link_ids.resize(k + 1, 0);
            }
            self.link_ids[k] = id;
        }
        for k in 0..self.links.len() {
            self.links[k].ok = self.link_ok(k, now_ns);
        }
        self.emit_all(out);
    }

    /// Whether link `k` serves `slot` in this replica's map and in the publisher's.
    fn agrees(&self, slot: u16, k: usize) -> bool {
        if !self.owner.is_empty() && self.owner[slot as usize] as usize != k {
            return false;
        }
        if self.pub_map_id == self.map_id {
            return true;
        }
        match (&self.pub_owner, self.link_ids.get(k)) {
            (Some(p), Some(&id)) => !self.owner.is_empty() && p[slot as usize] == id,
            _ => false,
        }
    }

    /// Link `k` no longer follows `symbol` (the server unsubscribed it: its slot moved): what
    /// it brought is unconfirmed until a value comes again.
    pub fn lost(&mut self, k: usize, symbol: &[u8; 8], out: Out<'_>) {
        for i in 0..self.syms.len() {
            let s = &mut self.syms[i];
            if s.link == k && s.q.symbol == *symbol {
                s.generation = UNCONFIRMED;
                self.emit(i, out);
            }
        }
    }

    /// The symbols held (once each, without padding).
    pub fn symbols(&self) -> Vec<String> {
        let mut v: Vec<String> = self.syms.iter().map(|s| s.q.symbol_str()).collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    fn emit_all(&mut self, out: Out<'_>) {
        for i in 0..self.syms.len() {
            self.emit(i, out);
        }
    }

    fn emit(&mut self, i: usize, out: Out<'_>) {
        let s = &self.syms[i];
        let l = &self.links[s.link];
        let fresh = l.ok
            && s.generation == l.generation
            && s.pub_ns >= l.epoch_ns
            && !s.q.stale
            && self.agrees(s.slot, s.link);
        let mut q = s.q;
        q.stale = !fresh;
        if !fresh && !s.q.stale && s.shown.is_some_and(|x| !x.stale) {
            self.marked_stale += 1;
        }
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

    /// A heartbeat through link `k`: the publisher's epoch, and the slot map it writes by.
    pub fn heartbeat(&mut self, k: usize, hb: &Heartbeat<'_>, now_ns: u64, out: Out<'_>) {
        let l = self.link(k);
        l.hb_seen = true;
        l.hb_last_ns = now_ns;
        let new_epoch = hb.epoch_ns != l.epoch_ns;
        l.epoch_ns = hb.epoch_ns;
        // the latest map the publisher wrote by: heartbeats come through every node, and one
        // sent earlier may arrive later through another; one sent long before is from another
        // clock (a publisher restarted on another host)
        let latest =
            hb.sent_ns >= self.pub_sent_ns || self.pub_sent_ns - hb.sent_ns > OTHER_CLOCK_NS;
        let new_map = latest && hb.map_id != self.pub_map_id;
        if latest {
            self.pub_sent_ns = hb.sent_ns;
        }
        if new_map {
            self.pub_map_id = hb.map_id;
            self.pub_owner = hb.map_text.and_then(parse_map_text);
        }
        self.update(k, now_ns, out);
        if new_map {
            self.emit_all(out);
        } else if new_epoch {
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
                    slot: symbol_slot(&q.symbol),
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

    fn hb(epoch_ns: u64, map_id: u64) -> Heartbeat<'static> {
        Heartbeat {
            epoch_ns,
            sent_ns: 0,
            map_id,
            restoring: false,
            map_text: None,
        }
    }

    #[test]
    fn fresh_needs_a_link_a_heartbeat_since_connect_and_a_value_at_or_after_the_epoch() {
        let mut c = ReplicaCore::new(10, 2 * S);
        let seen = Seen(Default::default());
        let mut out = |_: usize, q: &Quote| seen.0.borrow_mut().push(*q);
        c.link_up(0, 0, &mut out);
        // a value before any heartbeat: held, shown stale
        c.value(0, &encode(100, &q(b"AAAA    ", 1, false)), &mut out);
        c.heartbeat(0, &hb(50, 0), S / 10, &mut out);
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
        // counted as the replica's doing; the source's own stale flag above was not
        assert_eq!(c.marked_stale, 1);
        c.heartbeat(0, &hb(50, 0), 3 * S + 1, &mut out);
        assert_eq!(seen.take(), vec![(4, false)]);

        // the link drops: stale; it comes back: still stale until the value and a heartbeat
        // arrive through the new connection
        c.link_down(0, 4 * S, &mut out);
        assert_eq!(seen.take(), vec![(4, true)]);
        c.link_up(0, 4 * S, &mut out);
        c.heartbeat(0, &hb(50, 0), 4 * S, &mut out);
        assert!(seen.take().is_empty(), "the old value is not confirmed yet");
        c.value(0, &encode(400, &q(b"AAAA    ", 4, false)), &mut out);
        assert_eq!(seen.take(), vec![(4, false)], "the same value, confirmed");

        // a publisher that reconnected announces a new epoch: older values are not trusted
        c.link_down(0, 5 * S, &mut out);
        c.link_up(0, 5 * S, &mut out);
        seen.take();
        c.value(0, &encode(400, &q(b"AAAA    ", 4, false)), &mut out);
        c.heartbeat(0, &hb(500, 0), 5 * S, &mut out);
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
        c.set_map(7, Vec::new(), &[], 0, &mut out);
        c.link_up(0, 0, &mut out);
        c.heartbeat(0, &hb(50, 7), 0, &mut out);
        c.value(0, &encode(100, &q(b"AAAA    ", 1, false)), &mut out);
        assert_eq!(seen.take(), vec![(1, false)]);
        // a failover: this replica sees the new map first; the publisher's heartbeats still
        // name the old one (it has not rewritten the keys the promoted node may lack)
        c.set_map(8, Vec::new(), &[], 1, &mut out);
        assert_eq!(seen.take(), vec![(1, true)]);
        c.heartbeat(0, &hb(50, 7), 2, &mut out);
        assert!(seen.take().is_empty());
        // the publisher's rewrite under a new epoch, and its heartbeat on the new map
        c.value(0, &encode(200, &q(b"AAAA    ", 2, false)), &mut out);
        c.heartbeat(0, &hb(150, 8), 3, &mut out);
        assert_eq!(seen.take(), vec![(2, true), (2, false)]);
        // the other order: the publisher moves to a new map before this replica does
        c.heartbeat(0, &hb(250, 9), 4, &mut out);
        assert_eq!(seen.take(), vec![(2, true)]);
        c.value(0, &encode(300, &q(b"AAAA    ", 3, false)), &mut out);
        c.set_map(9, Vec::new(), &[], 5, &mut out);
        assert_eq!(seen.take(), vec![(3, true), (3, false)]);
    }

    #[test]
    fn a_slot_moving_stales_only_its_symbols() {
        use crate::redis::cluster::Topology;
        let mut c = ReplicaCore::new(10, 2 * S);
        let seen = std::cell::RefCell::new(Vec::new());
        let mut out = |_: usize, q: &Quote| seen.borrow_mut().push((q.symbol, q.stale));
        let (a, b) = (*b"AAAA    ", *b"BBBB    ");
        let slot_b = symbol_slot(&b) as usize;
        assert_ne!(symbol_slot(&a) as usize, slot_b);
        assert_eq!(
            slot_b,
            crate::redis::cluster::key_slot(b"quotes:{BBBB}") as usize
        );
        // two masters (links 0 and 1; node IDs hashed to 100 and 200): B's slot on the second
        let map = |map_id: u64, b_on: u16| {
            let mut owner = vec![0u16; SLOTS];
            owner[slot_b] = b_on;
            let t = Topology {
                nodes: vec![
                    "127.0.0.1:1".parse().unwrap(),
                    "127.0.0.1:2".parse().unwrap(),
                ],
                owner: owner.clone(),
                cluster: true,
                map_id,
                ids: vec![100, 200],
            };
            (owner, t.map_text().unwrap())
        };
        let ids = [(0, 100), (1, 200)];
        let beat = |c: &mut ReplicaCore, out: Out<'_>, sent: u64, map_id: u64, text: &str| {
            for k in 0..2 {
                let h = Heartbeat {
                    epoch_ns: 1,
                    sent_ns: sent,
                    map_id,
                    restoring: false,
                    map_text: Some(text),
                };
                c.heartbeat(k, &h, sent, out);
            }
        };
        let (owner7, text7) = map(7, 1);
        c.set_map(7, owner7.clone(), &ids, 0, &mut out);
        for k in 0..2 {
            c.link_up(k, 0, &mut out);
        }
        beat(&mut c, &mut out, 1, 7, &text7);
        c.value(0, &encode(10, &q(&a, 1, false)), &mut out);
        c.value(1, &encode(10, &q(&b, 1, false)), &mut out);
        assert_eq!(*seen.borrow(), vec![(a, false), (b, false)]);
        seen.borrow_mut().clear();

        // B's slot moves to the first master; this replica sees it before the publisher: B is
        // stale (its value came from the old node), A stays fresh (both maps agree on it)
        let (owner8, text8) = map(8, 0);
        c.set_map(8, owner8.clone(), &ids, 2, &mut out);
        assert_eq!(*seen.borrow(), vec![(b, true)]);
        beat(&mut c, &mut out, 3, 7, &text7);
        assert_eq!(
            seen.borrow().len(),
            1,
            "the old map's heartbeat changes nothing"
        );
        // B's value through its new node, the publisher still on the old map: stale
        c.value(0, &encode(20, &q(&b, 2, false)), &mut out);
        assert_eq!(seen.borrow().last(), Some(&(b, true)));
        // the publisher on the new map: fresh
        beat(&mut c, &mut out, 4, 8, &text8);
        assert_eq!(seen.borrow().last(), Some(&(b, false)));
        seen.borrow_mut().clear();

        // back to the second master, whose link delivers B again: fresh
        c.set_map(7, owner7.clone(), &ids, 5, &mut out);
        beat(&mut c, &mut out, 6, 7, &text7);
        assert_eq!(*seen.borrow(), vec![(b, true)]);
        c.value(1, &encode(30, &q(&b, 3, false)), &mut out);
        assert_eq!(seen.borrow().last(), Some(&(b, false)));
        seen.borrow_mut().clear();
        // away and back again with nothing through the first master meanwhile: what the second
        // held before is not taken for current (the value may have moved on while away)
        c.set_map(8, owner8.clone(), &ids, 7, &mut out);
        c.set_map(7, owner7, &ids, 8, &mut out);
        beat(&mut c, &mut out, 9, 7, &text7);
        assert_eq!(*seen.borrow(), vec![(b, true)]);
        c.value(1, &encode(40, &q(&b, 4, false)), &mut out);
        assert_eq!(seen.borrow().last(), Some(&(b, false)));
        seen.borrow_mut().clear();

        // the server unsubscribes B on its link: unconfirmed until a value comes again
        c.lost(1, &b, &mut out);
        assert_eq!(*seen.borrow(), vec![(b, true)]);
        seen.borrow_mut().clear();

        // a heartbeat naming a map without saying it (too scattered to write): only the map ID
        // can be compared, and it differs: nothing is fresh
        let h = Heartbeat {
            epoch_ns: 1,
            sent_ns: 10,
            map_id: 9,
            restoring: false,
            map_text: None,
        };
        c.heartbeat(0, &h, 10, &mut out);
        assert_eq!(*seen.borrow(), vec![(a, true)]);
        // an older heartbeat (sent before it) does not bring back the old map
        beat(&mut c, &mut out, 9, 7, &text7);
        assert_eq!(seen.borrow().len(), 1);
    }

    #[test]
    fn heartbeats_parse() {
        let h = Heartbeat::parse(b"5 6 7 1 0-16383:ab").unwrap();
        assert_eq!(
            (h.epoch_ns, h.sent_ns, h.map_id, h.restoring, h.map_text),
            (5, 6, 7, true, Some("0-16383:ab"))
        );
        let h = Heartbeat::parse(b"5 6 7 0").unwrap();
        assert_eq!((h.restoring, h.map_text), (false, None));
        for bad in [
            &b""[..],
            b"5 6 7",
            b"5 x 7 0",
            b"5 6 7 2",
            b"5 6 7 0 a b",
            b"\xff",
        ] {
            assert_eq!(Heartbeat::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn links_are_independent() {
        let mut c = ReplicaCore::new(10, 2 * S);
        let seen = std::cell::RefCell::new(Vec::new());
        let mut out = |_: usize, q: &Quote| seen.borrow_mut().push((q.symbol, q.stale));
        for k in 0..2 {
            c.link_up(k, 0, &mut out);
            c.heartbeat(k, &hb(1, 0), 0, &mut out);
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
        c.heartbeat(0, &hb(1, 0), 0, &mut out);
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
