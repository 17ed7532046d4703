//! A deterministic market generator: a trading session of TotalView-ITCH 5.0 messages from a
//! seed.
//!
//! The session opens like a real one (System Event `O` and `S`, MWCB levels, a Stock Directory
//! and a Trading Action for every symbol, some Reg SHO and market-maker messages, `Q` market
//! open), seeds each book with resting orders, then runs order flow in Nasdaq's proportions
//! (12302019: adds 44%, deletes 43%, replaces 8%, the rest executions, cancels, trades, crosses,
//! imbalances, halts and the rarer types), and closes with `M`, `E`, `C`.
//!
//! Books never cross: a new bid is always below the best offer and a new offer above the best
//! bid; each symbol's reference price walks a tick at a time and executions eat the best level,
//! so prices move. Books never empty a side during the flow either, as a listed stock's market
//! makers keep a bid and an offer all day: the seeding puts orders on both sides, a delete
//! never takes a side's last order (it takes another, or moves that one), and an execution
//! leaves it a share. Activity is skewed: a few symbols carry most of the flow. Timestamps are
//! Poisson arrivals at the configured rate.

use crate::rng::Rng;
use feed_handler::itch::*;
use std::collections::{BTreeMap, HashMap, VecDeque};
use zerocopy::IntoBytes;

/// What to generate.
#[derive(Debug, Clone)]
pub struct MarketConfig {
    /// Everything follows from the seed.
    pub seed: u64,
    /// Number of instruments (locates 1..=symbols).
    pub symbols: usize,
    /// Total messages, start and end of day included.
    pub messages: u64,
    /// Mean message rate in exchange time, messages per second.
    pub rate_per_s: u64,
    /// Resting orders per symbol placed before the flow starts.
    pub initial_orders: u32,
    /// ITCH time of the first message, nanoseconds since midnight.
    pub start_ns: u64,
    /// Only message types and codes that the `itchy` crate decodes (no `h`, no `O`, no NOII
    /// direction `P`): for differential tests.
    pub itchy_compatible: bool,
    /// The venue publishing this session (0 Nasdaq, 1 BX, 2 PSX, ...). Every venue of a seed
    /// lists the same symbols at the same starting prices, but under its own locates (the
    /// directory order is shuffled per venue) and with its own order flow; venues past 0 carry a
    /// smaller share of the messages and rate (BX 30%, PSX 20%, others 15% of `messages` and
    /// `rate_per_s`), roughly as the three Nasdaq markets compare.
    pub venue: u8,
    /// Delete every order still resting at the end of the flow (before the closing system
    /// events), so the book ends empty: a session replayed in a loop then starts each pass from
    /// an empty book instead of piling its orders on the last pass's. These deletes come on top
    /// of `messages`.
    pub delete_at_close: bool,
}

/// 09:29:59.500, half a second before the open.
pub const DEFAULT_START_NS: u64 = (9 * 3600 + 29 * 60 + 59) * 1_000_000_000 + 500_000_000;
/// 09:30:00, the open.
pub const MARKET_OPEN_NS: u64 = (9 * 3600 + 30 * 60) * 1_000_000_000;

impl Default for MarketConfig {
    fn default() -> Self {
        MarketConfig {
            seed: 1,
            symbols: 1000,
            messages: 1_000_000,
            rate_per_s: 100_000,
            initial_orders: 10,
            start_ns: DEFAULT_START_NS,
            itchy_compatible: false,
            venue: 0,
            delete_at_close: false,
        }
    }
}

/// The share of messages and rate a venue carries, in percent of venue 0's.
pub fn venue_share_pct(venue: u8) -> u64 {
    match venue {
        0 => 100,
        1 => 30,
        2 => 20,
        _ => 15,
    }
}

/// Well-known tickers first, so a demo shows familiar names; the rest are generated.
const FAMOUS: &[&str] = &[
    "AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "GOOG", "META", "TSLA", "AVGO", "COST", "NFLX", "AMD",
    "PEP", "ADBE", "CSCO", "TMUS", "INTC", "CMCSA", "QCOM", "TXN", "AMGN", "INTU", "HON", "AMAT",
    "ISRG", "BKNG", "SBUX", "MDLZ", "GILD", "ADP", "VRTX", "REGN", "ADI", "LRCX", "PANW", "MU",
    "PYPL", "SNPS", "KLAC", "CDNS", "MELI", "ASML", "MAR", "ORLY", "ABNB", "CRWD", "CTAS", "FTNT",
    "MRVL", "WDAY", "QQQ", "TQQQ", "SQQQ", "PLTR", "COIN", "HOOD",
];
const MPIDS: &[&str] = &[
    "NITE", "GSCO", "MSCO", "UBSS", "CDRG", "VIRT", "JPMS", "SUSQ", "FLTU", "MAXM",
];

#[derive(Debug, Clone)]
struct Sym {
    stock: Stock,
    ref_px_e4: u32,
    tick_e4: u32,
    bids: BTreeMap<u32, VecDeque<u64>>,
    asks: BTreeMap<u32, VecDeque<u64>>,
    halted: bool,
}

impl Sym {
    fn best_bid(&self) -> Option<u32> {
        self.bids.keys().next_back().copied()
    }
    fn best_ask(&self) -> Option<u32> {
        self.asks.keys().next().copied()
    }
    fn side_mut(&mut self, side: u8) -> &mut BTreeMap<u32, VecDeque<u64>> {
        if side == b'B' {
            &mut self.bids
        } else {
            &mut self.asks
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Order {
    locate: u16,
    side: u8,
    px_e4: u32,
    shares: u32,
    live_idx: usize,
}

/// Counts of what was generated, by type.
pub type TypeCounts = [u64; 256];

/// The generator. Call [`Market::next_message`] until it returns `None`.
#[derive(Debug)]
pub struct Market {
    cfg: MarketConfig,
    rng: Rng,
    syms: Vec<Sym>,
    orders: HashMap<u64, Order>,
    live: Vec<u64>,
    opening: VecDeque<Vec<u8>>,
    next_ref: u64,
    next_match: u64,
    recent_matches: VecDeque<u64>,
    now_ns: u64,
    mean_gap_ns: f64,
    emitted: u64,
    flow_left: u64,
    seeded: u64,
    closing: u8,
    buf: Vec<u8>,
    counts: TypeCounts,
    peak_live: usize,
}

fn random_mpid(r: &mut Rng) -> Alpha<4> {
    let name: &&str = r.pick(MPIDS);
    Alpha::new(name).expect("MPIDs are 4 bytes")
}

fn put<M: ItchMessage>(buf: &mut Vec<u8>, m: M) {
    buf.extend_from_slice(m.as_bytes());
}

fn symbol_names(rng: &mut Rng, n: usize) -> Vec<String> {
    let mut names: Vec<String> = FAMOUS.iter().take(n).map(|s| s.to_string()).collect();
    let mut seen: std::collections::HashSet<String> = names.iter().cloned().collect();
    while names.len() < n {
        let len = if rng.chance(0.3) {
            3
        } else if rng.chance(0.1) {
            5
        } else {
            4
        };
        let s: String = (0..len)
            .map(|_| (b'A' + rng.below(26) as u8) as char)
            .collect();
        if seen.insert(s.clone()) {
            names.push(s);
        }
    }
    names.sort();
    names
}

impl Market {
    /// A market for `cfg`. Symbols are capped at 65,535 (the locate is 16 bits).
    pub fn new(mut cfg: MarketConfig) -> Self {
        cfg.symbols = cfg.symbols.clamp(1, 65_535);
        let share = venue_share_pct(cfg.venue);
        cfg.messages = (cfg.messages as u128 * share as u128 / 100) as u64;
        cfg.rate_per_s = ((cfg.rate_per_s as u128 * share as u128 / 100) as u64).max(1);
        let mut rng = Rng::new(cfg.seed);
        let names = symbol_names(&mut rng, cfg.symbols);
        let mut syms: Vec<Sym> = names
            .iter()
            .map(|n| {
                // prices from $2 to ~$600, log-uniform-ish, on a one-cent tick
                let dollars = [2u64, 5, 10, 20, 50, 100, 200, 400][rng.below(8) as usize];
                let cents = dollars * 100 + rng.below(dollars * 50);
                Sym {
                    stock: Stock::new(n).expect("names are at most 8 bytes"),
                    ref_px_e4: (cents * 100) as u32,
                    tick_e4: 100,
                    bids: BTreeMap::new(),
                    asks: BTreeMap::new(),
                    halted: false,
                }
            })
            .collect();
        if cfg.venue > 0 {
            // the same symbols and prices under this venue's own locates, and its own flow
            let mut shuffle = Rng::new(cfg.seed ^ (0x5645_4e55_0000_0000 | cfg.venue as u64));
            for i in (1..syms.len()).rev() {
                let j = shuffle.below(i as u64 + 1) as usize;
                syms.swap(i, j);
            }
            rng = Rng::new(
                cfg.seed
                    .wrapping_add(0x9e37_79b9_7f4a_7c15u64.wrapping_mul(cfg.venue as u64)),
            );
        }
        let mean_gap_ns = 1e9 / cfg.rate_per_s as f64;
        let mut m = Market {
            rng,
            syms,
            orders: HashMap::new(),
            live: Vec::new(),
            opening: VecDeque::new(),
            next_ref: 1,
            next_match: 1,
            recent_matches: VecDeque::new(),
            now_ns: cfg.start_ns,
            mean_gap_ns,
            emitted: 0,
            flow_left: 0,
            seeded: 0,
            closing: 0,
            buf: Vec::with_capacity(64),
            counts: [0; 256],
            peak_live: 0,
            cfg,
        };
        m.build_opening();
        let fixed = m.opening.len() as u64 + 3;
        m.flow_left = m.cfg.messages.saturating_sub(fixed);
        m
    }

    /// Messages of each type generated so far (indexed by type byte).
    pub fn counts(&self) -> &TypeCounts {
        &self.counts
    }
    /// The most orders live at once so far.
    pub fn peak_live_orders(&self) -> usize {
        self.peak_live
    }
    /// Orders live now.
    pub fn live_orders(&self) -> usize {
        self.live.len()
    }
    /// The symbols, in locate order (locate = index + 1).
    pub fn symbols(&self) -> Vec<String> {
        self.syms.iter().map(|s| s.stock.to_string()).collect()
    }

    fn hdr(&mut self, t: u8, locate: u16) -> Header {
        Header::new(t, locate, self.rng.below(8) as u16, self.now_ns)
    }

    fn build_opening(&mut self) {
        let step = |m: &mut Self| m.now_ns += 1_000;
        let mut msgs: Vec<Vec<u8>> = Vec::new();
        let h = self.hdr(b'S', 0);
        msgs.push(
            SystemEvent {
                header: h,
                event_code: b'O',
            }
            .as_bytes()
            .to_vec(),
        );
        step(self);
        let h = self.hdr(b'S', 0);
        msgs.push(
            SystemEvent {
                header: h,
                event_code: b'S',
            }
            .as_bytes()
            .to_vec(),
        );
        step(self);
        let h = self.hdr(b'V', 0);
        msgs.push(
            MwcbDeclineLevel {
                header: h,
                level1_e8: 5_012_345_000_000.into(),
                level2_e8: 4_634_567_000_000.into(),
                level3_e8: 4_012_345_000_000.into(),
            }
            .as_bytes()
            .to_vec(),
        );
        for i in 0..self.syms.len() {
            step(self);
            let locate = (i + 1) as u16;
            let stock = self.syms[i].stock;
            let r = &mut self.rng;
            let etf = r.chance(0.1);
            let dir = StockDirectory {
                header: Header::new(b'R', locate, 0, self.now_ns),
                stock,
                market_category: *r.pick(b"QQQGGSNPAZV"),
                financial_status: if r.chance(0.95) {
                    b'N'
                } else {
                    *r.pick(b"DEQSGHJKC")
                },
                round_lot_size: 100.into(),
                round_lots_only: b'N',
                issue_classification: if etf { b'Q' } else { *r.pick(b"CCCCCAO") },
                issue_sub_type: Alpha(if etf { *b"I " } else { *b"Z " }),
                authenticity: b'P',
                short_sale_threshold: *r.pick(b"NNNNY "),
                ipo_flag: *r.pick(b"NNNN Y"),
                luld_ref_price_tier: *r.pick(b"12 "),
                etp_flag: if etf { b'Y' } else { b'N' },
                etp_leverage_factor: (if etf { r.below(4) as u32 } else { 0 }).into(),
                inverse_indicator: if etf && r.chance(0.2) { b'Y' } else { b'N' },
            };
            msgs.push(dir.as_bytes().to_vec());
        }
        for i in 0..self.syms.len() {
            step(self);
            let locate = (i + 1) as u16;
            let h = self.hdr(b'H', locate);
            let stock = self.syms[i].stock;
            msgs.push(
                StockTradingAction {
                    header: h,
                    stock,
                    trading_state: b'T',
                    reserved: b' ',
                    reason: Alpha::BLANK,
                }
                .as_bytes()
                .to_vec(),
            );
            if self.rng.chance(0.05) {
                let h = self.hdr(b'Y', locate);
                msgs.push(
                    RegShoRestriction {
                        header: h,
                        stock,
                        reg_sho_action: b'0',
                    }
                    .as_bytes()
                    .to_vec(),
                );
            }
            if self.rng.chance(0.05) {
                let h = self.hdr(b'L', locate);
                let mpid = random_mpid(&mut self.rng);
                msgs.push(
                    MarketParticipantPosition {
                        header: h,
                        mpid,
                        stock,
                        primary_market_maker: *self.rng.pick(b"YN"),
                        market_maker_mode: b'N',
                        market_participant_state: b'A',
                    }
                    .as_bytes()
                    .to_vec(),
                );
            }
        }
        self.now_ns = self.now_ns.max(MARKET_OPEN_NS);
        let h = self.hdr(b'S', 0);
        msgs.push(
            SystemEvent {
                header: h,
                event_code: b'Q',
            }
            .as_bytes()
            .to_vec(),
        );
        self.opening = msgs.into();
    }

    /// The next message (its bytes, valid until the next call), or `None` when the session is
    /// over.
    pub fn next_message(&mut self) -> Option<&[u8]> {
        self.buf.clear();
        if let Some(m) = self.opening.pop_front() {
            self.buf = m;
        } else if self.flow_left > 0 {
            self.flow_left -= 1;
            self.now_ns += self.rng.exp(self.mean_gap_ns).max(1.0) as u64;
            let seed_total = self.cfg.initial_orders as u64 * self.syms.len() as u64;
            if self.seeded < seed_total {
                let n = self.syms.len() as u64;
                let i = (self.seeded % n) as usize;
                // each round of seeding puts one order on every symbol, bids and offers in turn
                let side = if (self.seeded / n) % 2 == 0 {
                    b'B'
                } else {
                    b'S'
                };
                self.seeded += 1;
                self.add_on(i, false, Some(side));
            } else {
                self.flow_step();
            }
        } else if self.cfg.delete_at_close
            && self.closing == 0
            && let Some(&r) = self.live.last()
        {
            self.now_ns += 1_000;
            self.delete_ref(r);
        } else if self.closing < 3 {
            self.now_ns += 1_000;
            let code = [b'M', b'E', b'C'][self.closing as usize];
            self.closing += 1;
            let h = self.hdr(b'S', 0);
            self.buf.extend_from_slice(
                SystemEvent {
                    header: h,
                    event_code: code,
                }
                .as_bytes(),
            );
        } else {
            return None;
        }
        self.emitted += 1;
        self.counts[self.buf[0] as usize] += 1;
        self.peak_live = self.peak_live.max(self.live.len());
        Some(&self.buf)
    }

    /// A symbol index, skewed: low indices of a random permutation are busier. Uses the square
    /// of a uniform draw, so activity density falls like 1/sqrt(rank).
    fn pick_symbol(&mut self) -> usize {
        let n = self.syms.len() as u64;
        let u = self.rng.below(1 << 20);
        let idx = (((u * u) >> 20) * n) >> 20;
        // spread the busy ones over the alphabet with a fixed odd multiplier
        ((idx.wrapping_mul(0x9E37_79B1) ^ self.cfg.seed) % n) as usize
    }

    fn lot(&mut self) -> u32 {
        if self.rng.chance(0.05) {
            self.rng.between(1, 99) as u32
        } else {
            100 * self.rng.between(1, 10) as u32
        }
    }

    fn add(&mut self, i: usize, mpid: bool) {
        self.add_on(i, mpid, None)
    }

    /// Adds an order to symbol `i`, on `side` or on a random one.
    fn add_on(&mut self, i: usize, mpid: bool, side: Option<u8>) {
        let locate = (i + 1) as u16;
        let random = if self.rng.chance(0.5) { b'B' } else { b'S' };
        let mut side = side.unwrap_or(random);
        let k = (self.rng.exp(3.0) as u32).min(50);
        let s = &mut self.syms[i];
        if self.rng.chance(0.02) {
            // the reference price walks
            if self.rng.chance(0.5) {
                s.ref_px_e4 = s.ref_px_e4.saturating_add(s.tick_e4).min(1_999_990_000);
            } else if s.ref_px_e4 > 10 * s.tick_e4 {
                s.ref_px_e4 -= s.tick_e4;
            }
        }
        let tick = s.tick_e4;
        let mut px = if side == b'B' {
            let mut p = s.ref_px_e4.saturating_sub(k * tick).max(tick);
            if let Some(a) = s.best_ask() {
                p = p.min(a.saturating_sub(tick));
            }
            p
        } else {
            let mut p = s.ref_px_e4 + k * tick;
            if let Some(b) = s.best_bid() {
                p = p.max(b + tick);
            }
            p
        };
        if px < tick {
            // no room below the best offer: make it an offer above the best bid instead
            side = b'S';
            px = s.best_bid().map_or(s.ref_px_e4, |b| b + tick).max(tick);
        }
        let shares = self.lot();
        let order_ref = self.next_ref;
        self.next_ref += 1 + self.rng.below(3);
        self.insert_order(
            order_ref,
            Order {
                locate,
                side,
                px_e4: px,
                shares,
                live_idx: 0,
            },
        );
        let stock = self.syms[i].stock;
        let h = self.hdr(if mpid { b'F' } else { b'A' }, locate);
        if mpid {
            let attribution = random_mpid(&mut self.rng);
            put(
                &mut self.buf,
                AddOrderMpid {
                    header: h,
                    order_ref: order_ref.into(),
                    side,
                    shares: shares.into(),
                    stock,
                    price_e4: px.into(),
                    attribution,
                },
            );
        } else {
            put(
                &mut self.buf,
                AddOrder {
                    header: h,
                    order_ref: order_ref.into(),
                    side,
                    shares: shares.into(),
                    stock,
                    price_e4: px.into(),
                },
            );
        }
    }

    fn insert_order(&mut self, order_ref: u64, mut o: Order) {
        o.live_idx = self.live.len();
        self.live.push(order_ref);
        let s = &mut self.syms[o.locate as usize - 1];
        s.side_mut(o.side)
            .entry(o.px_e4)
            .or_default()
            .push_back(order_ref);
        self.orders.insert(order_ref, o);
    }

    fn remove_order(&mut self, order_ref: u64) -> Order {
        let o = self.orders.remove(&order_ref).expect("live order");
        let last = *self.live.last().expect("live order");
        self.live.swap_remove(o.live_idx);
        if last != order_ref {
            self.orders.get_mut(&last).expect("live order").live_idx = o.live_idx;
        }
        let level = self.syms[o.locate as usize - 1].side_mut(o.side);
        let q = level.get_mut(&o.px_e4).expect("order's level");
        let pos = q
            .iter()
            .position(|&r| r == order_ref)
            .expect("order in its level");
        q.remove(pos);
        if q.is_empty() {
            level.remove(&o.px_e4);
        }
        o
    }

    fn random_live(&mut self) -> Option<u64> {
        if self.live.is_empty() {
            None
        } else {
            Some(self.live[self.rng.below(self.live.len() as u64) as usize])
        }
    }

    fn flow_step(&mut self) {
        let r = self.rng.below(10_000);
        match r {
            0..4000 => {
                let i = self.pick_symbol();
                self.add(i, false)
            }
            4000..4400 => {
                let i = self.pick_symbol();
                self.add(i, true)
            }
            4400..8700 => self.delete(),
            8700..9500 => self.replace(),
            9500..9750 => self.execute(false),
            9750..9850 => self.cancel(),
            9850..9900 => self.execute(true),
            9900..9960 => self.trade(),
            _ => self.rare(),
        }
        if self.buf.is_empty() {
            // the chosen event was not possible (no orders, halted): add instead
            let i = self.pick_symbol();
            self.add(i, false);
        }
    }

    /// Whether a live order is the only one on its side of its book.
    fn alone_on_side(&self, r: u64) -> bool {
        let o = &self.orders[&r];
        let s = &self.syms[o.locate as usize - 1];
        let levels = if o.side == b'B' { &s.bids } else { &s.asks };
        levels.len() == 1 && levels.values().all(|q| q.len() == 1)
    }

    fn delete(&mut self) {
        // a side's last order is not pulled: another order is, or (after a few draws) the last
        // one drawn is moved instead, so books stay two-sided and deletes keep their share
        let mut alone = None;
        for _ in 0..8 {
            let Some(r) = self.random_live() else { return };
            if !self.alone_on_side(r) {
                return self.delete_ref(r);
            }
            alone = Some(r);
        }
        if let Some(r) = alone {
            self.replace_ref(r);
        }
    }

    fn delete_ref(&mut self, r: u64) {
        let o = self.remove_order(r);
        let h = self.hdr(b'D', o.locate);
        put(
            &mut self.buf,
            OrderDelete {
                header: h,
                order_ref: r.into(),
            },
        );
    }

    fn replace(&mut self) {
        let Some(r) = self.random_live() else { return };
        self.replace_ref(r);
    }

    fn replace_ref(&mut self, r: u64) {
        let o = self.remove_order(r);
        let s = &self.syms[o.locate as usize - 1];
        let tick = s.tick_e4;
        let delta = self.rng.below(5) as u32 * tick;
        // the new price: a few ticks from the old one, kept on its side of the book
        let moved = if self.rng.chance(0.5) {
            o.px_e4 + delta
        } else {
            o.px_e4.saturating_sub(delta)
        }
        .max(tick);
        let px = if o.side == b'B' {
            s.best_ask()
                .map_or(moved, |a| moved.min(a.saturating_sub(tick)))
        } else {
            s.best_bid().map_or(moved, |b| moved.max(b + tick))
        };
        if px < tick {
            // a bid with no room below the offer: keep the old price
            self.insert_order(r, o);
            return;
        }
        let shares = self.lot();
        let new_ref = self.next_ref;
        self.next_ref += 1 + self.rng.below(3);
        self.insert_order(
            new_ref,
            Order {
                px_e4: px,
                shares,
                ..o
            },
        );
        let h = self.hdr(b'U', o.locate);
        put(
            &mut self.buf,
            OrderReplace {
                header: h,
                original_order_ref: r.into(),
                new_order_ref: new_ref.into(),
                shares: shares.into(),
                price_e4: px.into(),
            },
        );
    }

    fn take_match(&mut self) -> u64 {
        let m = self.next_match;
        self.next_match += 1;
        self.recent_matches.push_back(m);
        if self.recent_matches.len() > 64 {
            self.recent_matches.pop_front();
        }
        m
    }

    /// Executes part or all of the oldest order at the best price of a side of a symbol that
    /// has orders (the symbol of a random live order).
    fn execute(&mut self, with_price: bool) {
        let Some(r) = self.random_live() else { return };
        let locate = self.orders[&r].locate;
        let s = &self.syms[locate as usize - 1];
        if s.halted {
            return;
        }
        let side = if self.rng.chance(0.5) { b'B' } else { b'S' };
        let best = |side: u8| {
            if side == b'B' {
                s.bids.iter().next_back()
            } else {
                s.asks.iter().next()
            }
        };
        let Some((_, q)) = best(side).or_else(|| best(if side == b'B' { b'S' } else { b'B' }))
        else {
            return;
        };
        let target = *q.front().expect("levels are never empty");
        let o = self.orders[&target];
        let want = self.lot();
        let mut exec = want.min(o.shares);
        if exec == o.shares && self.alone_on_side(target) {
            // the side's last order: a share stays on the book (none left: an add instead)
            exec = o.shares - 1;
            if exec == 0 {
                return;
            }
        }
        if exec == o.shares {
            self.remove_order(target);
        } else {
            self.orders.get_mut(&target).expect("live").shares -= exec;
        }
        let match_number = self.take_match();
        let h = self.hdr(if with_price { b'C' } else { b'E' }, locate);
        if with_price {
            let printable = if self.rng.chance(0.9) { b'Y' } else { b'N' };
            put(
                &mut self.buf,
                OrderExecutedWithPrice {
                    header: h,
                    order_ref: target.into(),
                    executed_shares: exec.into(),
                    match_number: match_number.into(),
                    printable,
                    execution_price_e4: o.px_e4.into(),
                },
            );
        } else {
            put(
                &mut self.buf,
                OrderExecuted {
                    header: h,
                    order_ref: target.into(),
                    executed_shares: exec.into(),
                    match_number: match_number.into(),
                },
            );
        }
    }

    fn cancel(&mut self) {
        let Some(r) = self.random_live() else { return };
        let o = self.orders[&r];
        if o.shares < 2 {
            return;
        }
        let n = self.rng.between(1, o.shares as u64 - 1) as u32;
        self.orders.get_mut(&r).expect("live").shares -= n;
        let h = self.hdr(b'X', o.locate);
        put(
            &mut self.buf,
            OrderCancel {
                header: h,
                order_ref: r.into(),
                cancelled_shares: n.into(),
            },
        );
    }

    fn mid(&self, i: usize) -> u32 {
        let s = &self.syms[i];
        match (s.best_bid(), s.best_ask()) {
            (Some(b), Some(a)) => (b + (a - b) / 2) / s.tick_e4 * s.tick_e4,
            (Some(b), None) => b,
            (None, Some(a)) => a,
            (None, None) => s.ref_px_e4,
        }
    }

    fn trade(&mut self) {
        let i = self.pick_symbol();
        if self.syms[i].halted {
            return;
        }
        let px = self.mid(i).max(self.syms[i].tick_e4);
        let shares = self.lot();
        let match_number = self.take_match();
        let stock = self.syms[i].stock;
        let h = self.hdr(b'P', (i + 1) as u16);
        put(
            &mut self.buf,
            Trade {
                header: h,
                order_ref: 0.into(),
                side: b'B',
                shares: shares.into(),
                stock,
                price_e4: px.into(),
                match_number: match_number.into(),
            },
        );
    }

    fn rare(&mut self) {
        let i = self.pick_symbol();
        let locate = (i + 1) as u16;
        let stock = self.syms[i].stock;
        let px = self.mid(i);
        let compat = self.cfg.itchy_compatible;
        match self.rng.below(40) {
            0..5 => {
                if self.syms[i].halted {
                    return;
                }
                let shares = self.rng.between(0, 50_000) * 100;
                let match_number = self.take_match();
                let h = self.hdr(b'Q', locate);
                let cross_type = *self.rng.pick(b"OCH");
                put(
                    &mut self.buf,
                    CrossTrade {
                        header: h,
                        shares: shares.into(),
                        stock,
                        cross_price_e4: px.into(),
                        match_number: match_number.into(),
                        cross_type,
                    },
                );
            }
            5..15 | 37..40 => {
                let h = self.hdr(b'I', locate);
                let dirs: &[u8] = if compat { b"BSNO" } else { b"BSNOP" };
                let r = &mut self.rng;
                put(
                    &mut self.buf,
                    Noii {
                        header: h,
                        paired_shares: (r.below(100_000) * 100).into(),
                        imbalance_shares: (r.below(10_000) * 100).into(),
                        imbalance_direction: *r.pick(dirs),
                        stock,
                        far_price_e4: px.into(),
                        near_price_e4: (px + 100).into(),
                        current_reference_price_e4: px.into(),
                        cross_type: *r.pick(b"OCHA"),
                        price_variation_indicator: *r.pick(b"L123456789ABC "),
                    },
                );
            }
            15..18 => {
                let halted: Vec<usize> = (0..self.syms.len())
                    .filter(|&j| self.syms[j].halted)
                    .take(16)
                    .collect();
                let (j, state, reason) = if !halted.is_empty() && self.rng.chance(0.6) {
                    let j = *self.rng.pick(&halted);
                    (j, b'T', Alpha::BLANK)
                } else if self.rng.chance(0.5) {
                    (i, b'H', Alpha::new("T1").expect("short"))
                } else {
                    (i, b'P', Alpha::new("LUDP").expect("short"))
                };
                self.syms[j].halted = state != b'T';
                let h = self.hdr(b'H', (j + 1) as u16);
                let stock = self.syms[j].stock;
                put(
                    &mut self.buf,
                    StockTradingAction {
                        header: h,
                        stock,
                        trading_state: state,
                        reserved: b' ',
                        reason,
                    },
                );
            }
            18..21 => {
                let h = self.hdr(b'Y', locate);
                let a = *self.rng.pick(b"012");
                put(
                    &mut self.buf,
                    RegShoRestriction {
                        header: h,
                        stock,
                        reg_sho_action: a,
                    },
                );
            }
            21..26 => {
                let h = self.hdr(b'N', locate);
                let f = *self.rng.pick(b"BSAN");
                put(
                    &mut self.buf,
                    RetailInterest {
                        header: h,
                        stock,
                        interest_flag: f,
                    },
                );
            }
            26..29 => {
                let h = self.hdr(b'L', locate);
                let r = &mut self.rng;
                let mpid = random_mpid(r);
                put(
                    &mut self.buf,
                    MarketParticipantPosition {
                        header: h,
                        mpid,
                        stock,
                        primary_market_maker: *r.pick(b"YN"),
                        market_maker_mode: *r.pick(b"NPSRL"),
                        market_participant_state: *r.pick(b"AEWSD"),
                    },
                );
            }
            29..31 => {
                let h = self.hdr(b'J', locate);
                let ext = self.rng.below(3) as u32;
                put(
                    &mut self.buf,
                    LuldAuctionCollar {
                        header: h,
                        stock,
                        auction_collar_reference_price_e4: px.into(),
                        upper_auction_collar_price_e4: (px + px / 20).into(),
                        lower_auction_collar_price_e4: (px - px / 20).into(),
                        auction_collar_extension: ext.into(),
                    },
                );
            }
            31 => {
                let h = self.hdr(b'K', locate);
                let q = *self.rng.pick(b"AC");
                let (t, p) = if q == b'A' {
                    (((self.now_ns / 1_000_000_000) + 600) as u32, px)
                } else {
                    (0, 0)
                };
                put(
                    &mut self.buf,
                    IpoQuotingPeriod {
                        header: h,
                        stock,
                        ipo_quotation_release_time_s: t.into(),
                        ipo_quotation_release_qualifier: q,
                        ipo_price_e4: p.into(),
                    },
                );
            }
            32 if !compat => {
                let h = self.hdr(b'h', locate);
                let r = &mut self.rng;
                put(
                    &mut self.buf,
                    OperationalHalt {
                        header: h,
                        stock,
                        market_code: *r.pick(b"QBX"),
                        operational_halt_action: *r.pick(b"HT"),
                    },
                );
            }
            33..35 => {
                if self.recent_matches.is_empty() {
                    return;
                }
                let k = self.rng.below(self.recent_matches.len() as u64) as usize;
                let m = self.recent_matches[k];
                let h = self.hdr(b'B', 0);
                put(
                    &mut self.buf,
                    BrokenTrade {
                        header: h,
                        match_number: m.into(),
                    },
                );
            }
            35 if !compat => {
                let h = self.hdr(b'O', locate);
                let t = self.now_ns + 60_000_000_000;
                put(
                    &mut self.buf,
                    DirectListingCapitalRaise {
                        header: h,
                        stock,
                        open_eligibility_status: *self.rng.pick(b"NY"),
                        minimum_allowable_price_e4: (px / 2).into(),
                        maximum_allowable_price_e4: (px * 2).into(),
                        near_execution_price_e4: px.into(),
                        near_execution_time_ns: t.into(),
                        lower_price_range_collar_e4: (px - px / 10).into(),
                        upper_price_range_collar_e4: (px + px / 10).into(),
                    },
                );
            }
            36 => {
                let h = self.hdr(b'W', 0);
                let l = *self.rng.pick(b"123");
                put(
                    &mut self.buf,
                    MwcbStatus {
                        header: h,
                        breached_level: l,
                    },
                );
            }
            _ => {}
        }
    }

    /// Checks the generator's own books: sorted, uncrossed, every order in its level.
    /// For tests.
    pub fn check_books(&self) -> Result<(), String> {
        for (i, s) in self.syms.iter().enumerate() {
            if let (Some(b), Some(a)) = (s.best_bid(), s.best_ask())
                && b >= a
            {
                return Err(format!("{} crossed: bid {b} >= ask {a}", s.stock));
            }
            for (side, levels) in [(b'B', &s.bids), (b'S', &s.asks)] {
                for (px, q) in levels {
                    for r in q {
                        let o = self
                            .orders
                            .get(r)
                            .ok_or(format!("order {r} in a level but not live"))?;
                        if o.side != side || o.px_e4 != *px || o.locate as usize != i + 1 {
                            return Err(format!("order {r} is in the wrong level"));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(cfg: MarketConfig) -> (Vec<Vec<u8>>, Market) {
        let mut m = Market::new(cfg);
        let mut out = Vec::new();
        while let Some(b) = m.next_message() {
            out.push(b.to_vec());
        }
        (out, m)
    }

    #[test]
    fn deterministic_from_the_seed() {
        let cfg = MarketConfig {
            symbols: 50,
            messages: 5_000,
            ..Default::default()
        };
        let (a, _) = run(cfg.clone());
        let (b, _) = run(cfg.clone());
        assert_eq!(a, b);
        let (c, _) = run(MarketConfig { seed: 2, ..cfg });
        assert_ne!(a, c);
    }

    #[test]
    fn proportions_order_and_books() {
        let cfg = MarketConfig {
            symbols: 200,
            messages: 200_000,
            initial_orders: 5,
            ..Default::default()
        };
        let (msgs, m) = run(cfg);
        assert_eq!(msgs.len(), 200_000);
        m.check_books().unwrap();
        let mut last_ts = 0;
        for b in &msgs {
            let msg = parse(b).expect("every generated message parses");
            assert!(msg.timestamp_ns() >= last_ts, "timestamps never go back");
            last_ts = msg.timestamp_ns();
        }
        let c = m.counts();
        let n = |t: u8| c[t as usize] as f64 / msgs.len() as f64;
        assert!(
            (0.42..0.47).contains(&(n(b'A') + n(b'F'))),
            "adds {}",
            n(b'A') + n(b'F')
        );
        assert!((0.40..0.45).contains(&n(b'D')), "deletes {}", n(b'D'));
        assert!((0.06..0.09).contains(&n(b'U')), "replaces {}", n(b'U'));
        for &t in ALL_TYPES {
            assert!(c[t as usize] > 0, "type {} never generated", t as char);
        }
        let first = parse(&msgs[0]).unwrap();
        assert!(matches!(first, Message::SystemEvent(s) if s.event_code == b'O'));
        let last = parse(msgs.last().unwrap()).unwrap();
        assert!(matches!(last, Message::SystemEvent(s) if s.event_code == b'C'));
        assert_eq!(c[b'R' as usize], 200);
    }

    #[test]
    fn every_symbol_keeps_a_bid_and_an_offer_through_the_flow() {
        // a demo's session: a price screen whose books drain shows symbols without a bid
        let mut m = Market::new(MarketConfig {
            symbols: 500,
            messages: 600_000,
            rate_per_s: 20_000,
            ..Default::default()
        });
        let seed_total = m.cfg.initial_orders as u64 * 500;
        let (mut samples, mut one_sided) = (0u64, 0u64);
        while m.next_message().is_some() {
            if m.seeded == seed_total && m.flow_left > 0 && m.emitted % 1_000 == 0 {
                samples += 1;
                one_sided += m
                    .syms
                    .iter()
                    .filter(|s| s.bids.is_empty() || s.asks.is_empty())
                    .count() as u64;
            }
        }
        assert!(samples > 500);
        assert_eq!(
            one_sided,
            0,
            "symbol-samples with an empty side, of {}",
            samples * 500
        );
    }

    #[test]
    fn itchy_mode_leaves_out_what_itchy_cannot_read() {
        let cfg = MarketConfig {
            symbols: 100,
            messages: 100_000,
            itchy_compatible: true,
            ..Default::default()
        };
        let (msgs, m) = run(cfg);
        assert_eq!(m.counts()[b'h' as usize] + m.counts()[b'O' as usize], 0);
        for b in msgs {
            if let Ok(Message::Noii(i)) = parse(&b) {
                assert_ne!(i.imbalance_direction, b'P');
            }
        }
    }
}

#[cfg(test)]
mod venue_tests {
    use super::*;

    #[test]
    fn venues_share_symbols_and_prices_under_their_own_locates() {
        let cfg = |venue| MarketConfig {
            seed: 9,
            symbols: 50,
            messages: 10_000,
            venue,
            ..Default::default()
        };
        let (a, b) = (Market::new(cfg(0)), Market::new(cfg(1)));
        let (mut sa, mut sb) = (a.symbols(), b.symbols());
        assert_ne!(sa, sb, "locates differ");
        let px = |m: &Market, s: &str| {
            m.syms
                .iter()
                .find(|x| x.stock.to_string() == s)
                .map(|x| x.ref_px_e4)
        };
        for s in &sa {
            assert_eq!(px(&a, s), px(&b, s), "{s}: the same starting price");
        }
        sa.sort();
        sb.sort();
        assert_eq!(sa, sb, "the same symbols");
        assert_eq!(b.cfg.messages, 3_000, "BX carries 30%");
        assert_eq!(Market::new(cfg(2)).cfg.messages, 2_000);
    }

    #[test]
    fn a_session_that_deletes_at_close_ends_with_an_empty_book() {
        let mut m = Market::new(MarketConfig {
            seed: 3,
            symbols: 30,
            messages: 5_000,
            delete_at_close: true,
            ..Default::default()
        });
        let mut deletes_at_end = 0;
        let mut flow_done = false;
        while let Some(msg) = m.next_message() {
            if msg[0] == b'D' && m.flow_left == 0 {
                flow_done = true;
                deletes_at_end += 1;
            }
        }
        assert!(flow_done && deletes_at_end > 0);
        assert_eq!(m.live_orders(), 0);
        assert!(
            m.syms
                .iter()
                .all(|s| s.bids.is_empty() && s.asks.is_empty())
        );
    }
}
