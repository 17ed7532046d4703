//! Consolidation across venues, sans I/O: one symbol's quotes on several venues (Nasdaq, BX,
//! PSX: one feed channel each, with its own locates) into one quote.
//!
//! The rules, in the order a reader checks them:
//! - A venue is *trusted* when its quote is not stale and the caller does not distrust its
//!   channel (an unhealthy or silent line). Only trusted venues give best prices.
//! - Best bid: the highest trusted bid; on equal prices the venue with the most shares, then the
//!   lowest channel. Its size is that venue's size. Best offer likewise with the lowest offer.
//! - Last trade: the venue whose last trade is the most recent by exchange timestamp (ties: the
//!   lowest channel), trusted or not: a trade printed is history, not a standing price.
//! - Volume and VWAP: over every venue (trusted or not), volume is the sum of printable shares
//!   and VWAP is Σ price × shares / Σ shares, rounded half up to Price(4).
//! - Stale: only when no trusted venue remains. `untrusted` names the venues left out.
//! - Trading state: the state of the first trusted venue that has one, else of any venue.

/// A hasher for the conflation thread's small keys (symbols, channels, locates): a multiply per
/// 8 bytes (the keys are not attacker-chosen, so std's SipHash buys nothing here and costs
/// several times as much on every record).
#[derive(Debug, Default, Clone, Copy)]
pub struct SymbolHasher(u64);

impl SymbolHasher {
    #[inline]
    fn mix(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(23) ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

impl std::hash::Hasher for SymbolHasher {
    #[inline]
    fn finish(&self) -> u64 {
        // hashbrown takes its control bits from the top and the bucket from the bottom
        self.0 ^ (self.0 >> 29)
    }
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.mix(u64::from_le_bytes(c.try_into().unwrap_or_default()));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut b = [0u8; 8];
            b[..rest.len()].copy_from_slice(rest);
            self.mix(u64::from_le_bytes(b) ^ (rest.len() as u64) << 59);
        }
    }
    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.mix(n as u64);
    }
    #[inline]
    fn write_u16(&mut self, n: u16) {
        self.mix(n as u64);
    }
    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.mix(n as u64);
    }
    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.mix(n);
    }
    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.mix(n as u64);
    }
}

/// A map with [`SymbolHasher`].
pub type FastMap<K, V> =
    std::collections::HashMap<K, V, std::hash::BuildHasherDefault<SymbolHasher>>;

/// A map keyed by symbol with [`SymbolHasher`].
pub type SymbolMap<V> =
    std::collections::HashMap<[u8; 8], V, std::hash::BuildHasherDefault<SymbolHasher>>;

/// One venue's view of one symbol.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VenueQuote {
    /// Feed channel (the venue).
    pub channel: u16,
    /// Best bid (Price(4), shares).
    pub bid: Option<(u32, u64)>,
    /// Best offer.
    pub ask: Option<(u32, u64)>,
    /// Last trade (Price(4), shares).
    pub last: Option<(u32, u64)>,
    /// Exchange timestamp of the last trade, ns since midnight.
    pub last_trade_ns: u64,
    /// Printable shares traded.
    pub volume: u64,
    /// Σ price × shares of those trades.
    pub notional_e4: u128,
    /// Trading state byte (0 unknown).
    pub state: u8,
    /// Cannot be trusted (data lost on this venue).
    pub stale: bool,
}

impl VenueQuote {
    /// The view of instrument `x` on venue `channel`; `stale` as the caller judges it (the
    /// conflation thread adds "not caught up yet" to the instrument's own flag).
    pub fn of(channel: u16, x: &crate::books::Instrument, stale: bool) -> Self {
        VenueQuote {
            channel,
            bid: x.best_bid().map(|(p, l)| (p, l.shares)),
            ask: x.best_ask().map(|(p, l)| (p, l.shares)),
            last: x.last.map(|t| (t.px_e4, t.qty)),
            last_trade_ns: x.last_trade_ns,
            volume: x.volume,
            notional_e4: x.notional_e4,
            state: x.state,
            stale,
        }
    }
}

/// The consolidated quote of one symbol.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Consolidated {
    /// Best bid: (Price(4), shares, channel).
    pub bid: Option<(u32, u64, u16)>,
    /// Best offer: (Price(4), shares, channel).
    pub ask: Option<(u32, u64, u16)>,
    /// Last trade: (Price(4), shares, channel).
    pub last: Option<(u32, u64, u16)>,
    /// Printable shares over every venue.
    pub volume: u64,
    /// Volume-weighted average price, Price(4) (none before any trade).
    pub vwap_e4: Option<u32>,
    /// Trading state.
    pub state: u8,
    /// No trusted venue remains.
    pub stale: bool,
    /// Channels left out of the best prices (bit `c` for channel `c` < 64).
    pub untrusted: u64,
}

/// Consolidates `venues` (one entry per channel quoting the symbol); `distrust(channel)` says
/// which channels the caller knows to be unhealthy.
pub fn consolidate(venues: &[VenueQuote], distrust: impl Fn(u16) -> bool) -> Consolidated {
    let mut c = Consolidated::default();
    let mut last_ns = 0u64;
    let mut any_trusted = false;
    // (each venue's are at most u64::MAX shares and u32::MAX times that: their sums over any
    // number of venues a channel can name fit)
    let (mut volume, mut notional) = (0u128, 0u128);
    for v in venues {
        let trusted = !v.stale && !distrust(v.channel);
        if !trusted {
            c.untrusted |= 1u64.checked_shl(v.channel as u32).unwrap_or(0);
        } else {
            any_trusted = true;
            if let Some((p, q)) = v.bid {
                let better = match c.bid {
                    None => true,
                    Some((bp, bq, bc)) => {
                        p > bp || p == bp && (q > bq || q == bq && v.channel < bc)
                    }
                };
                if better {
                    c.bid = Some((p, q, v.channel));
                }
            }
            if let Some((p, q)) = v.ask {
                let better = match c.ask {
                    None => true,
                    Some((ap, aq, ac)) => {
                        p < ap || p == ap && (q > aq || q == aq && v.channel < ac)
                    }
                };
                if better {
                    c.ask = Some((p, q, v.channel));
                }
            }
            if c.state == 0 {
                c.state = v.state;
            }
        }
        if let Some((p, q)) = v.last {
            let newer = match c.last {
                None => true,
                Some((_, _, lc)) => {
                    v.last_trade_ns > last_ns || v.last_trade_ns == last_ns && v.channel < lc
                }
            };
            if newer {
                c.last = Some((p, q, v.channel));
                last_ns = v.last_trade_ns;
            }
        }
        volume += v.volume as u128;
        notional += v.notional_e4;
    }
    if c.state == 0 {
        c.state = venues
            .iter()
            .map(|v| v.state)
            .find(|&s| s != 0)
            .unwrap_or(0);
    }
    c.volume = u64::try_from(volume).unwrap_or(u64::MAX);
    c.vwap_e4 = vwap_e4(notional, volume);
    c.stale = !any_trusted;
    c
}

/// The volume-weighted average price of `notional_e4` over `volume` shares, rounded to the
/// nearest 1e-4 (halves up); `None` with no volume. Never overflows, and never truncates: an
/// average past `u32::MAX` (sums that do not go together) is `u32::MAX`.
pub fn vwap_e4(notional_e4: u128, volume: u128) -> Option<u32> {
    let v = volume;
    (v > 0).then(|| {
        let (q, r) = (notional_e4 / v, notional_e4 % v);
        u32::try_from(q + (r * 2 >= v) as u128).unwrap_or(u32::MAX)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v(channel: u16, bid: u32, ask: u32) -> VenueQuote {
        VenueQuote {
            channel,
            bid: Some((bid, 100 * (channel as u64 + 1))),
            ask: Some((ask, 100)),
            state: b'T',
            ..VenueQuote::default()
        }
    }

    #[test]
    fn best_prices_come_from_trusted_venues_only() {
        let venues = [v(0, 100, 110), v(1, 102, 109), v(2, 103, 108)];
        let c = consolidate(&venues, |_| false);
        assert_eq!(c.bid, Some((103, 300, 2)));
        assert_eq!(c.ask, Some((108, 100, 2)));
        assert!(!c.stale);
        // venue 2 stale, venue 1 distrusted: only venue 0 gives prices, and the quote says so
        let mut s = venues;
        s[2].stale = true;
        let c = consolidate(&s, |ch| ch == 1);
        assert_eq!((c.bid, c.ask), (Some((100, 100, 0)), Some((110, 100, 0))));
        assert_eq!(c.untrusted, 0b110);
        assert!(!c.stale);
        let c = consolidate(&s, |_| true);
        assert!(c.stale, "no trusted venue left");
        assert_eq!((c.bid, c.ask), (None, None));
    }

    #[test]
    fn vwap_rounds_to_the_nearest_and_never_overflows() {
        assert_eq!(vwap_e4(0, 0), None);
        // 10.5 rounds up, 10.4 down, as (notional + volume / 2) / volume did
        assert_eq!(vwap_e4(21, 2), Some(11));
        assert_eq!(vwap_e4(52, 5), Some(10));
        for (n, v) in [(1_234_567u128, 89u128), (10_000 * 3, 3), (7, 1_000)] {
            assert_eq!(vwap_e4(n, v), Some(((n + v / 2) / v) as u32));
        }
        // the largest sums: no overflow, no truncated price
        let most = u32::MAX as u128 * u64::MAX as u128;
        assert_eq!(vwap_e4(most, u64::MAX as u128), Some(u32::MAX));
        assert_eq!(vwap_e4(u128::MAX, 1), Some(u32::MAX));
        assert_eq!(vwap_e4(u128::MAX, u128::MAX), Some(1));
    }

    #[test]
    fn last_is_the_latest_trade_and_vwap_covers_every_venue() {
        let mut a = v(0, 100, 110);
        a.last = Some((105, 10));
        a.last_trade_ns = 50;
        a.volume = 30;
        a.notional_e4 = 105 * 10 + 104 * 20;
        let mut b = v(1, 100, 110);
        b.last = Some((107, 5));
        b.last_trade_ns = 60;
        b.volume = 5;
        b.notional_e4 = 107 * 5;
        b.stale = true;
        let c = consolidate(&[a, b], |_| false);
        assert_eq!(
            c.last,
            Some((107, 5, 1)),
            "a stale venue's trade still happened"
        );
        assert_eq!(c.volume, 35);
        // (1050 + 2080 + 535) / 35 = 104.71 -> 105
        assert_eq!(c.vwap_e4, Some(105));
    }

    proptest! {
        #[test]
        fn agrees_with_a_plain_reference(
            raw in proptest::collection::vec(
                (1u32..50, 1u64..5, 1u32..50, 1u64..5, any::<bool>(), 0u64..100, 1u32..60, 1u64..9),
                1..4,
            ),
            distrusted in 0u64..8,
        ) {
            let venues: Vec<VenueQuote> = raw.iter().enumerate().map(|(i, r)| VenueQuote {
                channel: i as u16,
                bid: Some((r.0, r.1)),
                ask: Some((r.0 + r.2, r.3)),
                last: Some((r.6, r.7)),
                last_trade_ns: r.5,
                volume: r.7 * 3,
                notional_e4: r.6 as u128 * r.7 as u128 * 3,
                state: b'T',
                stale: r.4,
            }).collect();
            let dis = |ch: u16| distrusted & (1 << ch) != 0;
            let c = consolidate(&venues, dis);
            let trusted: Vec<&VenueQuote> =
                venues.iter().filter(|v| !v.stale && !dis(v.channel)).collect();
            let best_bid = trusted.iter().map(|v| v.bid.unwrap().0).max();
            let best_ask = trusted.iter().map(|v| v.ask.unwrap().0).min();
            prop_assert_eq!(c.bid.map(|b| b.0), best_bid);
            prop_assert_eq!(c.ask.map(|a| a.0), best_ask);
            if let Some((p, q, ch)) = c.bid {
                let src = venues.iter().find(|v| v.channel == ch).unwrap();
                prop_assert_eq!(src.bid, Some((p, q)));
                prop_assert!(trusted.iter().any(|v| v.channel == ch));
            }
            prop_assert_eq!(c.stale, trusted.is_empty());
            let vol: u64 = venues.iter().map(|v| v.volume).sum();
            let notional: u128 = venues.iter().map(|v| v.notional_e4).sum();
            prop_assert_eq!(c.volume, vol);
            // VWAP within half a tick of the exact ratio
            let vw = c.vwap_e4.unwrap() as u128;
            prop_assert!(vw * 2 * vol as u128 + vol as u128 >= notional * 2);
            prop_assert!(vw * 2 * (vol as u128) <= notional * 2 + vol as u128);
            let latest = venues.iter().map(|v| v.last_trade_ns).max().unwrap();
            let (_, _, lc) = c.last.unwrap();
            prop_assert_eq!(venues[lc as usize].last_trade_ns, latest);
        }
    }
}
