//! A worker's view of the market: every symbol's latest quote, a version that counts its
//! changes, the version at which each field last changed, and encoded quote objects cached per
//! set of changed fields. A symbol's bytes for a given set of fields are encoded once per change
//! and then copied by every connection that needs them, whatever their conflation window:
//! a connection that last saw version `v` gets exactly the fields changed since `v`.

use crate::encode::{self, ALL, FIELDS};
use book::quotes::Quote;
use std::collections::HashMap;

/// Index of a symbol in [`Market::syms`].
pub type SymId = u32;

/// One symbol.
#[derive(Debug)]
pub struct Sym {
    /// The latest quote.
    pub quote: Quote,
    /// Changes applied (0: never quoted).
    pub version: u64,
    field_ver: [u64; FIELDS],
    frags: Vec<u8>,
    cache: Vec<(u16, u32, u32)>,
    /// Connections with throttle 0 subscribed to this symbol (worker connection keys).
    pub immediate: Vec<u64>,
    in_changed: bool,
}

/// Every symbol a worker knows.
#[derive(Debug, Default)]
pub struct Market {
    /// Symbols in the order first seen.
    pub syms: Vec<Sym>,
    /// `syms[i].version`, packed: what a flush scans for every subscription.
    pub versions: Vec<u64>,
    index: HashMap<[u8; 8], SymId>,
    /// Symbols changed since the last [`Market::take_changed`].
    changed: Vec<SymId>,
    /// Quotes ignored because the table is full.
    pub overflow: u64,
    max: usize,
}

/// Pads a symbol to the 8 bytes ITCH uses; `None` when it cannot be one (empty, longer than 8,
/// not printable ASCII).
pub fn key(s: &str) -> Option<[u8; 8]> {
    let b = s.as_bytes();
    if b.is_empty() || b.len() > 8 || !b.iter().all(|c| c.is_ascii_graphic()) {
        return None;
    }
    let mut k = [b' '; 8];
    k[..b.len()].copy_from_slice(b);
    Some(k)
}

impl Market {
    /// A market of at most `max` symbols.
    pub fn new(max: usize) -> Self {
        Market {
            max,
            ..Market::default()
        }
    }

    /// The symbol's id.
    pub fn lookup(&self, s: &str) -> Option<SymId> {
        key(s).and_then(|k| self.index.get(&k).copied())
    }

    /// Applies a quote; returns the symbol when something a client sees changed.
    pub fn apply(&mut self, q: &Quote) -> Option<SymId> {
        let id = match self.index.get(&q.symbol) {
            Some(&id) => id,
            None => {
                if self.syms.len() >= self.max {
                    self.overflow += 1;
                    return None;
                }
                let id = self.syms.len() as SymId;
                self.index.insert(q.symbol, id);
                self.syms.push(Sym {
                    quote: *q,
                    version: 0,
                    field_ver: [0; FIELDS],
                    frags: Vec::new(),
                    cache: Vec::new(),
                    immediate: Vec::new(),
                    in_changed: false,
                });
                self.versions.push(0);
                id
            }
        };
        let s = &mut self.syms[id as usize];
        let m = if s.version == 0 {
            ALL
        } else {
            encode::changed(&s.quote, q)
        };
        s.quote = *q;
        if m == 0 {
            return None;
        }
        s.version += 1;
        self.versions[id as usize] = s.version;
        for f in 0..FIELDS {
            if m & 1 << f != 0 {
                s.field_ver[f] = s.version;
            }
        }
        s.frags.clear();
        s.cache.clear();
        if !s.in_changed {
            s.in_changed = true;
            self.changed.push(id);
        }
        Some(id)
    }

    /// Takes the symbols changed since the last call (into `out`, which is cleared first).
    pub fn take_changed(&mut self, out: &mut Vec<SymId>) {
        out.clear();
        for &id in &self.changed {
            self.syms[id as usize].in_changed = false;
        }
        std::mem::swap(out, &mut self.changed);
    }

    /// The fields of `id` changed after version `since` (all of them for 0).
    pub fn mask_since(&self, id: SymId, since: u64) -> u16 {
        let s = &self.syms[id as usize];
        if since == 0 {
            return ALL;
        }
        let mut m = 0;
        for (f, &v) in s.field_ver.iter().enumerate() {
            if v > since {
                m |= 1 << f;
            }
        }
        m
    }

    /// The quote object of `id` with the fields changed since version `since`, encoded at most
    /// once per (change, set of fields).
    pub fn fragment(&mut self, id: SymId, since: u64) -> &[u8] {
        let m = self.mask_since(id, since);
        let s = &mut self.syms[id as usize];
        let (a, b) = match s.cache.iter().find(|c| c.0 == m) {
            Some(&(_, a, b)) => (a, b),
            None => {
                let a = s.frags.len() as u32;
                encode::quote(&mut s.frags, &s.quote, m);
                let b = s.frags.len() as u32;
                s.cache.push((m, a, b));
                (a, b)
            }
        };
        &s.frags[a as usize..b as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(bid: u32) -> Quote {
        Quote {
            symbol: *b"MSFT    ",
            bid: Some((bid, 100)),
            state: b'T',
            ..Quote::default()
        }
    }

    #[test]
    fn versions_and_fragments_follow_what_changed() {
        let mut m = Market::new(10);
        assert_eq!(m.apply(&q(1)), Some(0));
        assert_eq!(m.apply(&q(1)), None, "nothing a client sees changed");
        assert_eq!(m.apply(&q(2)), Some(0));
        assert_eq!(m.syms[0].version, 2);
        assert_eq!(m.lookup("MSFT"), Some(0));
        assert_eq!(m.lookup("NOPE"), None);
        let d = String::from_utf8(m.fragment(0, 1).to_vec()).unwrap();
        assert_eq!(d, r#"{"s":"MSFT","bid":"0.0002"}"#);
        let full = String::from_utf8(m.fragment(0, 0).to_vec()).unwrap();
        assert!(full.contains("\"state\":\"trading\""), "{full}");
        // cached: the same bytes again without encoding
        let before = m.syms[0].frags.len();
        let _ = m.fragment(0, 1);
        assert_eq!(m.syms[0].frags.len(), before);
        // a connection two versions behind gets the union of the changes
        let mut q3 = q(2);
        q3.volume = 5;
        m.apply(&q3);
        let d = String::from_utf8(m.fragment(0, 1).to_vec()).unwrap();
        assert_eq!(d, r#"{"s":"MSFT","bid":"0.0002","vol":5}"#);
    }

    #[test]
    fn the_table_is_bounded_and_keys_are_checked() {
        let mut m = Market::new(1);
        m.apply(&q(1));
        let mut other = q(1);
        other.symbol = *b"AAPL    ";
        assert_eq!(m.apply(&other), None);
        assert_eq!(m.overflow, 1);
        assert_eq!(key("TOOLONGSYM"), None);
        assert_eq!(key(""), None);
        assert_eq!(key("A B"), None);
        assert_eq!(key("BRK.A"), Some(*b"BRK.A   "));
    }
}
