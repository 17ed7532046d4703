//! Order-by-order books for every instrument of one feed, and each instrument's latest price
//! state (best bid and offer, depth, last trade, volume, trading state).
//!
//! Semantics (TotalView-ITCH 5.0, see `../shared/design/itch.md`):
//! - `A`/`F` add an order; `E` executes part or all of it at its own price; `C` executes at the
//!   execution price; `X` cancels part of it; `D` deletes what is left; `U` deletes the original
//!   reference and adds the new one with the same side and instrument (at the back of its level).
//!   An order at 0 shares is gone. The order's stored locate wins over the message's.
//! - Last and volume: the most recent of `E`, `C` with printable `Y`, `P`, and `Q` with more than
//!   0 shares; volume is the sum of their shares. A `C` with printable `N` changes the book but
//!   not last or volume (those shares print later in the cross).
//! - `P` and `Q` never change the book. `B` (broken trade) is counted; last and volume are not
//!   rewound (Nasdaq's recommendation, as LOBSTER does).
//! - `H` sets the trading state; the book keeps changing during halts (order maintenance goes on).
//!   `h` (operational halt on one market) is kept beside it.
//! - `R` names the instrument and its round lot; `J` (LULD collars) and `I` (imbalance) are kept.
//!
//! Invariants, checked by [`Books::validate`]: levels are sorted, each level's size and order
//! count equal the sum over its orders, no level is empty, and in continuous trading no book is
//! crossed.

use crate::bars::{History, HistoryConfig};
use crate::ladder::Ladder;
use feed_handler::itch::{self, Handler, Stock};
use std::collections::HashMap;

pub use crate::orders::OrderTable;

/// One resting order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Order {
    /// Instrument.
    pub locate: u16,
    /// b'B' or b'S'.
    pub side: u8,
    /// Limit price, Price(4).
    pub px_e4: u32,
    /// Shares still displayed.
    pub shares: u32,
}
// An order's place in its level's queue is its reference's rank: Nasdaq assigns references in
// increasing order through the day, and a replace's new reference is the newest, so it goes to
// the back. The books aggregate levels, so nothing more is kept: 12 bytes an order (24 with
// its key in the map) keeps 1.6M live orders in fewer cache lines.
const _: () = assert!(std::mem::size_of::<Order>() == 12);

/// One aggregated price level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Level {
    /// Total shares.
    pub shares: u64,
    /// Orders.
    pub orders: u32,
}

/// Price levels of one side, best first: `(px_e4, level)`.
pub type Depth = Vec<(u32, Level)>;

/// The latest Net Order Imbalance Indicator of an instrument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Imbalance {
    /// Paired shares.
    pub paired: u64,
    /// Imbalance shares.
    pub imbalance: u64,
    /// B, S, N, O or P.
    pub direction: u8,
    /// Current reference price, Price(4).
    pub ref_px_e4: u32,
    /// O, C, H or A.
    pub cross_type: u8,
}

/// A trade print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Last {
    /// Price(4).
    pub px_e4: u32,
    /// Shares.
    pub qty: u64,
}

/// One instrument.
#[derive(Debug, Clone)]
pub struct Instrument {
    /// Symbol from the Stock Directory (blank until its `R` arrives).
    pub symbol: Option<Stock>,
    /// Round lot.
    pub round_lot: u32,
    /// Bids (best = highest).
    pub bids: Ladder,
    /// Offers (best = lowest).
    pub asks: Ladder,
    /// Trading state byte (`H`, `P`, `Q`, `T`; 0 before any `H`).
    pub state: u8,
    /// Last trade.
    pub last: Option<Last>,
    /// Shares traded (printable).
    pub volume: u64,
    /// Σ price × shares of those trades (Price(4) × shares): volume-weighted average price is
    /// `notional_e4 / volume`.
    pub notional_e4: u128,
    /// Exchange timestamp of the last trade (ns since midnight; 0 before any).
    pub last_trade_ns: u64,
    /// LULD auction collar (reference, upper, lower), Price(4).
    pub luld: Option<(u32, u32, u32)>,
    /// An operational halt (`h`) is in force on some market (Q Nasdaq, B BX, X PSX).
    pub operational_halt: Option<u8>,
    /// The latest imbalance (`I`).
    pub imbalance: Option<Imbalance>,
    /// True when the state cannot be trusted (data was lost).
    pub stale: bool,
    /// Exchange timestamp of the last message applied, ns since midnight.
    pub exch_ts_ns: u64,
    /// Changes applied.
    pub updates: u64,
    /// Bars and the anomaly test (made at the first trade).
    pub history: Option<Box<History>>,
    /// The last trade was an anomaly (kept here as well as in `history`, so publishing a quote
    /// does not follow the pointer).
    last_anomaly: bool,
}

impl Default for Instrument {
    fn default() -> Self {
        Instrument {
            symbol: None,
            round_lot: 0,
            bids: Ladder::bids(),
            asks: Ladder::asks(),
            state: 0,
            last: None,
            volume: 0,
            notional_e4: 0,
            last_trade_ns: 0,
            luld: None,
            operational_halt: None,
            imbalance: None,
            stale: false,
            exch_ts_ns: 0,
            updates: 0,
            history: None,
            last_anomaly: false,
        }
    }
}

impl Instrument {
    /// Whether the last trade was more than 3 standard deviations from the rolling mean.
    pub fn anomaly(&self) -> bool {
        self.last_anomaly
    }
}

impl Instrument {
    /// Best bid `(px, level)`.
    pub fn best_bid(&self) -> Option<(u32, Level)> {
        self.bids.best()
    }
    /// Best offer `(px, level)`.
    pub fn best_ask(&self) -> Option<(u32, Level)> {
        self.asks.best()
    }
    /// The best `n` levels of each side: bids high to low, offers low to high.
    pub fn depth(&self, n: usize) -> (Depth, Depth) {
        (
            self.bids.best_first().take(n).collect(),
            self.asks.best_first().take(n).collect(),
        )
    }
    fn side(&mut self, side: u8) -> &mut Ladder {
        if side == b'B' {
            &mut self.bids
        } else {
            &mut self.asks
        }
    }
}

/// What the books met that they could not apply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BookCounters {
    /// Messages applied.
    pub messages: u64,
    /// Executions, cancels, deletes or replaces of an order reference not on the book.
    pub unknown_refs: u64,
    /// Adds of a reference already on the book (the old one is replaced).
    pub duplicate_refs: u64,
    /// Adds for locate 0, which names no instrument (not put on a book).
    pub bad_locates: u64,
    /// Broken trades.
    pub broken_trades: u64,
    /// Messages that could not be read.
    pub bad_messages: u64,
    /// Trades flagged as anomalies.
    pub anomalies: u64,
    /// Adds whose side was neither `B` nor `S` (not put on a book).
    pub bad_sides: u64,
}

impl BookCounters {
    /// Adds another's counts (channels summed).
    pub fn add(&mut self, o: &BookCounters) {
        self.messages += o.messages;
        self.unknown_refs += o.unknown_refs;
        self.duplicate_refs += o.duplicate_refs;
        self.bad_locates += o.bad_locates;
        self.broken_trades += o.broken_trades;
        self.bad_messages += o.bad_messages;
        self.anomalies += o.anomalies;
        self.bad_sides += o.bad_sides;
    }

    /// What the feed sent that could not be applied: messages unread, and adds with no side or
    /// for no instrument.
    pub fn refused(&self) -> u64 {
        self.bad_messages + self.bad_sides + self.bad_locates
    }
}

/// Every instrument's book, indexed by stock locate.
#[derive(Debug, Clone)]
pub struct Books {
    instruments: Vec<Instrument>,
    orders: OrderTable,
    /// Counters.
    pub counters: BookCounters,
    /// Locates touched since the last [`Books::take_changed`].
    changed: Vec<u16>,
    changed_flag: Vec<bool>,
    history: HistoryConfig,
    collect_bars: bool,
    closed_bars: Vec<ClosedBar>,
    /// The exchange time of the latest message (ns since midnight): this venue's clock, which
    /// closes bars whose end it passes.
    clock_ns: u64,
    /// Instruments that may have a bar open (each once; at most every instrument), looked at
    /// when the clock enters a new second.
    open_bars: Vec<u16>,
    open_flag: Vec<bool>,
    /// What [`Books::set_all_stale`] said last: an instrument first seen after it is stale too
    /// (its orders before the loss are missing as much as anyone's).
    all_stale: bool,
}

/// A bar that a trade closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClosedBar {
    /// Instrument.
    pub locate: u16,
    /// 1 or 60 seconds.
    pub interval_s: u8,
    /// The bar.
    pub bar: crate::bars::Bar,
}

/// Nanoseconds in a day: ITCH timestamps (since midnight) are below it.
const DAY_NS: u64 = 86_400_000_000_000;

/// How many messages ahead an [`Ahead`] window prefetches.
pub const LOOKAHEAD: usize = 8;

/// The longest message an [`Ahead`] window holds (ITCH 5.0's longest, NOII, is 50 bytes);
/// a longer one is applied at once, after the window.
const AHEAD_MAX: usize = 64;

/// A window of the last [`LOOKAHEAD`] messages, held back (copied) so that each one's order
/// table slot and instrument are prefetched ([`Books::prefetch`]) that many messages before it
/// is applied. With a million live orders the order table and most books are not in cache, and
/// a message that waits for memory costs more than the rest of its work. A caller that has no
/// more messages at hand calls [`Ahead::flush`], so holding back never delays a message that
/// could be applied now. Bounded: a fixed array, no allocation.
#[derive(Debug, Clone)]
pub struct Ahead {
    bufs: [[u8; AHEAD_MAX]; LOOKAHEAD],
    lens: [u8; LOOKAHEAD],
    /// The next slot to fill; when all are held, also the oldest.
    head: usize,
    held: usize,
}

impl Default for Ahead {
    fn default() -> Self {
        Ahead {
            bufs: [[0; AHEAD_MAX]; LOOKAHEAD],
            lens: [0; LOOKAHEAD],
            head: 0,
            held: 0,
        }
    }
}

impl Ahead {
    /// Takes `msg` and starts loading its order slot and instrument; applies the oldest held
    /// message when the window is full. (Prefetching a held message's ladder a few messages
    /// later as well, keys then level, measured slower: the extra order-table lookup and its
    /// mispredicted branches cost more than the misses they saved.)
    #[inline]
    pub fn push(&mut self, books: &mut Books, msg: &[u8]) {
        if msg.len() > AHEAD_MAX {
            self.flush(books);
            books.apply(msg);
            return;
        }
        if self.held == LOOKAHEAD {
            let oldest = &self.bufs[self.head][..self.lens[self.head] as usize];
            books.apply(oldest);
        } else {
            self.held += 1;
        }
        self.bufs[self.head][..msg.len()].copy_from_slice(msg);
        self.lens[self.head] = msg.len() as u8;
        self.head = (self.head + 1) % LOOKAHEAD;
        books.prefetch(msg);
    }

    /// Applies every held message, oldest first.
    pub fn flush(&mut self, books: &mut Books) {
        for i in 0..self.held {
            let j = (self.head + LOOKAHEAD - self.held + i) % LOOKAHEAD;
            books.apply(&self.bufs[j][..self.lens[j] as usize]);
        }
        self.held = 0;
    }

    /// Messages held.
    pub fn held(&self) -> usize {
        self.held
    }
}

/// The highest locate a book accepts.
pub const MAX_LOCATE: usize = 65_535;

impl Default for Books {
    fn default() -> Self {
        Self::new()
    }
}

impl Books {
    /// Empty books.
    pub fn new() -> Self {
        Self::with_order_capacity(1 << 15)
    }

    /// Empty books whose order table starts with room for `orders` (it grows as needed).
    pub fn with_order_capacity(orders: usize) -> Self {
        Books {
            instruments: vec![Instrument::default(); 1],
            orders: OrderTable::with_capacity(orders),
            counters: BookCounters::default(),
            changed: Vec::new(),
            changed_flag: vec![false; 1],
            history: HistoryConfig::default(),
            collect_bars: false,
            closed_bars: Vec::new(),
            clock_ns: 0,
            open_bars: Vec::new(),
            open_flag: Vec::new(),
            all_stale: false,
        }
    }

    /// Empty books with these bar and anomaly settings.
    pub fn with_history(history: HistoryConfig) -> Self {
        Books {
            history,
            ..Books::new()
        }
    }

    /// The instrument of `locate`, if any message has named it.
    pub fn get(&self, locate: u16) -> Option<&Instrument> {
        self.instruments.get(locate as usize)
    }

    /// `(locate, instrument)` for every locate seen.
    pub fn iter(&self) -> impl Iterator<Item = (u16, &Instrument)> {
        self.instruments
            .iter()
            .enumerate()
            .skip(1)
            .map(|(i, x)| (i as u16, x))
    }

    /// Orders on the books.
    pub fn live_orders(&self) -> usize {
        self.orders.len()
    }

    /// One order.
    pub fn order(&self, order_ref: u64) -> Option<&Order> {
        self.orders.get(order_ref)
    }

    fn inst(&mut self, locate: u16) -> &mut Instrument {
        let i = locate as usize;
        if i >= self.instruments.len() {
            let stale = self.all_stale;
            self.instruments.resize_with(i + 1, || Instrument {
                stale,
                ..Instrument::default()
            });
            self.changed_flag.resize(i + 1, false);
        }
        if !self.changed_flag[i] {
            self.changed_flag[i] = true;
            self.changed.push(locate);
        }
        let x = &mut self.instruments[i];
        x.updates += 1;
        x
    }

    /// The locates changed since the last call, in the order they first changed.
    pub fn take_changed(&mut self, out: &mut Vec<u16>) {
        for &l in &self.changed {
            self.changed_flag[l as usize] = false;
        }
        out.append(&mut self.changed);
    }

    /// Applies one ITCH message (its bytes). A message that cannot be read is counted. Its
    /// timestamp moves the venue's clock; entering a new second, the clock first closes the bars
    /// whose end it passed.
    pub fn apply(&mut self, msg: &[u8]) {
        if let Some(t) = msg.get(5..11) {
            let ts = u64::from_be_bytes([0, 0, t[0], t[1], t[2], t[3], t[4], t[5]]);
            // a time past midnight is garbage: it must not close every bar of the day
            if ts < DAY_NS && ts / 1_000_000_000 > self.clock_ns / 1_000_000_000 {
                self.close_bars_due(ts);
            }
            if ts < DAY_NS {
                self.clock_ns = self.clock_ns.max(ts);
            }
        }
        itch::dispatch(msg, self);
    }

    /// The bars the clock at `now_ns` has passed the end of are closed (collected, when on).
    fn close_bars_due(&mut self, now_ns: u64) {
        let mut i = 0;
        while i < self.open_bars.len() {
            let locate = self.open_bars[i];
            let Some(h) = self
                .instruments
                .get_mut(locate as usize)
                .and_then(|x| x.history.as_mut())
            else {
                i += 1;
                continue;
            };
            let (second, minute) = h.close_due(now_ns);
            let open = h.is_open();
            if self.collect_bars {
                for (interval_s, bar) in [(1u8, second), (60, minute)] {
                    if let Some(bar) = bar {
                        self.closed_bars.push(ClosedBar {
                            locate,
                            interval_s,
                            bar,
                        });
                    }
                }
            }
            if open {
                i += 1;
            } else {
                self.open_flag[locate as usize] = false;
                self.open_bars.swap_remove(i);
            }
        }
    }

    /// The venue's clock: the exchange time of the latest message applied (ns since midnight).
    pub fn clock_ns(&self) -> u64 {
        self.clock_ns
    }

    /// Applies messages in order through an [`Ahead`] window (each one's memory is
    /// prefetched [`LOOKAHEAD`] messages before it is applied); the result is exactly that of
    /// [`Books::apply`] on each in turn.
    pub fn apply_all<'a>(&mut self, msgs: impl IntoIterator<Item = &'a [u8]>) {
        let mut ahead = Ahead::default();
        for m in msgs {
            ahead.push(self, m);
        }
        ahead.flush(self);
    }

    /// Starts loading instrument `locate` (a hint: for a reader about to publish it).
    #[inline]
    pub fn prefetch_instrument(&self, locate: u16) {
        let x = self.instruments.as_ptr().wrapping_add(locate as usize) as *const u8;
        for line in 0..std::mem::size_of::<Instrument>().div_ceil(64) {
            crate::orders::prefetch(x.wrapping_add(line * 64));
        }
    }

    /// Starts loading the best bid and offer of `locate` (reads the instrument, which should
    /// be in cache by now: see [`Books::prefetch_instrument`]).
    #[inline]
    pub fn prefetch_top(&self, locate: u16) {
        if let Some(x) = self.instruments.get(locate as usize) {
            x.bids.prefetch_best();
            x.asks.prefetch_best();
        }
    }

    /// Starts loading what applying `msg` will touch first: the order table slot of the
    /// reference at bytes 11..19 (every order message has one there) and the instrument of the
    /// locate in its header. Only hints: no branch on the type (it would mispredict as often
    /// as the types change), and for a message without a reference the slot loaded is simply
    /// not used.
    #[inline(always)]
    pub fn prefetch(&self, msg: &[u8]) {
        if let Some(r) = msg.get(11..19) {
            let r: [u8; 8] = r.try_into().unwrap_or_default();
            self.orders.prefetch(u64::from_be_bytes(r));
            self.prefetch_instrument(u16::from_be_bytes([msg[1], msg[2]]));
        }
    }

    /// Marks every instrument stale (data was lost) or fresh again (rebuilt).
    pub fn set_all_stale(&mut self, stale: bool) {
        self.all_stale = stale;
        for l in 1..self.instruments.len() {
            let x = self.inst(l as u16);
            x.stale = stale;
        }
    }

    /// Forgets everything (before a rebuild from the start of the session).
    pub fn clear(&mut self) {
        let (counters, history, collect) = (self.counters, self.history, self.collect_bars);
        *self = Books::with_history(history);
        self.counters = counters;
        self.collect_bars = collect;
    }

    fn add(&mut self, locate: u16, order_ref: u64, side: u8, shares: u32, px_e4: u32, ts: u64) {
        if shares == 0 {
            return;
        }
        // any other byte is not an order of either side: on the asks (where x.side puts what is
        // not a buy) it would be a phantom offer
        if side != b'B' && side != b'S' {
            self.counters.bad_sides += 1;
            return;
        }
        if locate == 0 {
            self.counters.bad_locates += 1;
            return;
        }
        let o = Order {
            locate,
            side,
            px_e4,
            shares,
        };
        if let Some(old) = self.orders.insert(order_ref, o) {
            // a reference already on the book: the old order leaves its level
            self.counters.duplicate_refs += 1;
            self.off_level(old, old.shares, true, ts);
        }
        let x = self.inst(locate);
        x.exch_ts_ns = ts;
        x.side(side).add(px_e4, shares as u64);
    }

    /// Takes `n` shares off an order (all of them: it is gone) with one lookup of the order
    /// table, then off its level. Returns the order as it was, or `None` if it is not on the
    /// book (counted).
    fn reduce(&mut self, order_ref: u64, n: u32, ts: u64) -> Option<Order> {
        let Some((o, taken)) = self.orders.take(order_ref, n) else {
            self.counters.unknown_refs += 1;
            return None;
        };
        self.off_level(o, taken, taken == o.shares, ts);
        Some(o)
    }

    /// Takes `shares` of order `o` off its level, and the order itself when `gone`.
    fn off_level(&mut self, o: Order, shares: u32, gone: bool, ts: u64) {
        let x = self.inst(o.locate);
        x.exch_ts_ns = ts;
        x.side(o.side).take(o.px_e4, shares as u64, gone);
    }

    fn print(&mut self, locate: u16, px_e4: u32, qty: u64, ts: u64) {
        let cfg = self.history;
        let x = self.inst(locate);
        x.last = Some(Last { px_e4, qty });
        // saturating: a cross's shares are a u64 anyone's input can fill (fuzzed:
        // `book_messages`); the notional takes only the shares the volume took, so VWAP stays
        // an average of the prices traded
        let took = x.volume.saturating_add(qty) - x.volume;
        x.volume += took;
        x.notional_e4 += px_e4 as u128 * took as u128;
        x.last_trade_ns = ts;
        x.exch_ts_ns = ts;
        let h = x
            .history
            .get_or_insert_with(|| Box::new(History::new(&cfg)));
        let t = h.on_trade(ts, px_e4, qty);
        x.last_anomaly = t.anomaly;
        if t.anomaly {
            self.counters.anomalies += 1;
        }
        if self.open_flag.len() <= locate as usize {
            self.open_flag.resize(locate as usize + 1, false);
        }
        if !self.open_flag[locate as usize] {
            self.open_flag[locate as usize] = true;
            self.open_bars.push(locate);
        }
        if self.collect_bars {
            for (interval_s, bar) in [(1u8, t.closed_second), (60, t.closed_minute)] {
                if let Some(bar) = bar {
                    self.closed_bars.push(ClosedBar {
                        locate,
                        interval_s,
                        bar,
                    });
                }
            }
        }
    }

    /// Keep the bars each trade closes for [`Books::take_closed_bars`] (off by default: the
    /// caller must drain them).
    pub fn collect_closed_bars(&mut self, on: bool) {
        self.collect_bars = on;
    }

    /// The bars closed since the last call, in the order they closed.
    pub fn take_closed_bars(&mut self, out: &mut Vec<ClosedBar>) {
        out.append(&mut self.closed_bars);
    }

    /// Checks the invariants; `Err` says which broke.
    pub fn validate(&self) -> Result<(), String> {
        self.check(true)
    }

    /// Checks every invariant but one: a book may be crossed (what anyone's input can make).
    pub fn validate_structure(&self) -> Result<(), String> {
        self.check(false)
    }

    fn check(&self, uncrossed: bool) -> Result<(), String> {
        let mut sums: HashMap<(u16, u8, u32), (u64, u32)> = HashMap::new();
        for (_, o) in self.orders.iter() {
            if o.shares == 0 {
                return Err("an order with 0 shares is on the book".into());
            }
            let e = sums.entry((o.locate, o.side, o.px_e4)).or_default();
            e.0 += o.shares as u64;
            e.1 += 1;
        }
        let mut levels = 0;
        for (loc, x) in self.iter() {
            for (side, book) in [(b'B', &x.bids), (b'S', &x.asks)] {
                for (px, l) in book.best_first() {
                    levels += 1;
                    if l.orders == 0 || l.shares == 0 {
                        return Err(format!(
                            "locate {loc}: empty level {px} on side {}",
                            side as char
                        ));
                    }
                    if sums.get(&(loc, side, px)) != Some(&(l.shares, l.orders)) {
                        return Err(format!(
                            "locate {loc}: level {px} side {} is {l:?}, its orders say {:?}",
                            side as char,
                            sums.get(&(loc, side, px))
                        ));
                    }
                }
            }
            if uncrossed
                && x.state == b'T'
                && let (Some((b, _)), Some((a, _))) = (x.best_bid(), x.best_ask())
                && b >= a
            {
                return Err(format!(
                    "locate {loc}: crossed book in continuous trading: bid {b} >= ask {a}"
                ));
            }
        }
        if levels != sums.len() {
            return Err(format!(
                "{} levels but orders sit at {} prices",
                levels,
                sums.len()
            ));
        }
        Ok(())
    }
}

/// The body of the `book_messages` fuzz target: `data` is BinaryFILE records (a u16 length,
/// then the message; its locate folded into 0-7), applied to one [`Books`] directly and to
/// another through [`Ahead`] (the conflation thread's prefetching path). Checks beyond no
/// panic: at the end the books' structure holds ([`Books::validate_structure`]: a crossed book
/// is allowed, the input being anyone's), both paths end in the same state (live orders;
/// each instrument's best bid and ask, last trade, volume, trading state), and each
/// instrument's VWAP lies between the lowest and the highest price it printed.
#[doc(hidden)]
pub fn fuzz(data: &[u8]) {
    // small order tables: a run allocates and scans less, and the growth path is taken
    let mut direct = Books::with_order_capacity(16);
    let mut held = Books::with_order_capacity(16);
    let mut ahead = Ahead::default();
    let mut buf = [0u8; 64];
    // per locate (0-7): volume so far, and the lowest and highest price printed
    let mut printed = [(0u64, u32::MAX, 0u32); 8];
    for rec in feed_handler::capture::binaryfile::Records::new(data) {
        let Ok(mut msg) = rec else { break };
        // locates folded into 0-7: a book per locate up to 65,535 made each run slow (100 a
        // second) and finds nothing more than a few locates do
        if msg.len() >= 3 && msg.len() <= buf.len() {
            buf[..msg.len()].copy_from_slice(msg);
            buf[1] = 0;
            buf[2] &= 7;
            msg = &buf[..msg.len()];
        }
        direct.apply(msg);
        ahead.push(&mut held, msg);
        // a message prints at most once: a volume that grew printed at the last price
        for (loc, p) in printed.iter_mut().enumerate() {
            if let Some(x) = direct.get(loc as u16)
                && x.volume != p.0
                && let Some(last) = x.last
            {
                *p = (x.volume, p.1.min(last.px_e4), p.2.max(last.px_e4));
            }
        }
    }
    ahead.flush(&mut held);
    direct.validate_structure().expect("applied directly");
    held.validate_structure().expect("through Ahead");
    assert_eq!(direct.live_orders(), held.live_orders());
    for (loc, x) in direct.iter() {
        let y = held.get(loc).expect("the same instruments");
        let top = |i: &Instrument| (i.best_bid(), i.best_ask(), i.last, i.volume, i.state);
        assert_eq!(top(x), top(y), "locate {loc}");
        if let Some(vwap) = crate::consolidate::vwap_e4(x.notional_e4, x.volume as u128) {
            let (_, lo, hi) = printed[loc as usize];
            assert!(
                (lo..=hi).contains(&vwap),
                "locate {loc}: VWAP {vwap} outside the prices printed, {lo} to {hi}"
            );
        }
    }
}

impl Handler for Books {
    fn on_stock_directory(&mut self, m: &itch::StockDirectory) {
        self.counters.messages += 1;
        let x = self.inst(m.header.stock_locate.get());
        x.symbol = Some(m.stock);
        x.round_lot = m.round_lot_size.get();
        x.exch_ts_ns = m.header.timestamp_ns.get();
    }
    fn on_stock_trading_action(&mut self, m: &itch::StockTradingAction) {
        self.counters.messages += 1;
        let x = self.inst(m.header.stock_locate.get());
        x.state = m.trading_state;
        x.exch_ts_ns = m.header.timestamp_ns.get();
        if x.symbol.is_none() {
            x.symbol = Some(m.stock);
        }
    }
    fn on_operational_halt(&mut self, m: &itch::OperationalHalt) {
        self.counters.messages += 1;
        let x = self.inst(m.header.stock_locate.get());
        x.operational_halt = (m.operational_halt_action == b'H').then_some(m.market_code);
        x.exch_ts_ns = m.header.timestamp_ns.get();
    }
    fn on_noii(&mut self, m: &itch::Noii) {
        self.counters.messages += 1;
        let x = self.inst(m.header.stock_locate.get());
        x.imbalance = Some(Imbalance {
            paired: m.paired_shares.get(),
            imbalance: m.imbalance_shares.get(),
            direction: m.imbalance_direction,
            ref_px_e4: m.current_reference_price_e4.get(),
            cross_type: m.cross_type,
        });
        x.exch_ts_ns = m.header.timestamp_ns.get();
    }
    fn on_luld_auction_collar(&mut self, m: &itch::LuldAuctionCollar) {
        self.counters.messages += 1;
        let x = self.inst(m.header.stock_locate.get());
        x.luld = Some((
            m.auction_collar_reference_price_e4.get(),
            m.upper_auction_collar_price_e4.get(),
            m.lower_auction_collar_price_e4.get(),
        ));
    }
    fn on_add_order(&mut self, m: &itch::AddOrder) {
        self.counters.messages += 1;
        self.add(
            m.header.stock_locate.get(),
            m.order_ref.get(),
            m.side,
            m.shares.get(),
            m.price_e4.get(),
            m.header.timestamp_ns.get(),
        );
    }
    fn on_add_order_mpid(&mut self, m: &itch::AddOrderMpid) {
        self.counters.messages += 1;
        self.add(
            m.header.stock_locate.get(),
            m.order_ref.get(),
            m.side,
            m.shares.get(),
            m.price_e4.get(),
            m.header.timestamp_ns.get(),
        );
    }
    fn on_order_executed(&mut self, m: &itch::OrderExecuted) {
        self.counters.messages += 1;
        let n = m.executed_shares.get();
        let ts = m.header.timestamp_ns.get();
        if let Some(o) = self.reduce(m.order_ref.get(), n, ts) {
            self.print(o.locate, o.px_e4, n as u64, ts);
        }
    }
    fn on_order_executed_with_price(&mut self, m: &itch::OrderExecutedWithPrice) {
        self.counters.messages += 1;
        let n = m.executed_shares.get();
        let ts = m.header.timestamp_ns.get();
        if let Some(o) = self.reduce(m.order_ref.get(), n, ts)
            && m.printable == b'Y'
        {
            self.print(o.locate, m.execution_price_e4.get(), n as u64, ts);
        }
    }
    fn on_order_cancel(&mut self, m: &itch::OrderCancel) {
        self.counters.messages += 1;
        self.reduce(
            m.order_ref.get(),
            m.cancelled_shares.get(),
            m.header.timestamp_ns.get(),
        );
    }
    fn on_order_delete(&mut self, m: &itch::OrderDelete) {
        self.counters.messages += 1;
        self.reduce(m.order_ref.get(), u32::MAX, m.header.timestamp_ns.get());
    }
    fn on_order_replace(&mut self, m: &itch::OrderReplace) {
        self.counters.messages += 1;
        let ts = m.header.timestamp_ns.get();
        if let Some(o) = self.reduce(m.original_order_ref.get(), u32::MAX, ts) {
            self.add(
                o.locate,
                m.new_order_ref.get(),
                o.side,
                m.shares.get(),
                m.price_e4.get(),
                ts,
            );
        }
    }
    fn on_trade(&mut self, m: &itch::Trade) {
        self.counters.messages += 1;
        self.print(
            m.header.stock_locate.get(),
            m.price_e4.get(),
            m.shares.get() as u64,
            m.header.timestamp_ns.get(),
        );
    }
    fn on_cross_trade(&mut self, m: &itch::CrossTrade) {
        self.counters.messages += 1;
        if m.shares.get() > 0 {
            self.print(
                m.header.stock_locate.get(),
                m.cross_price_e4.get(),
                m.shares.get(),
                m.header.timestamp_ns.get(),
            );
        }
    }
    fn on_broken_trade(&mut self, _m: &itch::BrokenTrade) {
        self.counters.messages += 1;
        self.counters.broken_trades += 1;
    }
    fn on_error(&mut self, _e: itch::ItchError) {
        self.counters.bad_messages += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use feed_handler::itch::*;
    use zerocopy::IntoBytes;

    /// The fuzz target over its committed seeds and deterministic mutations of them.
    #[test]
    fn the_fuzz_target_survives_its_seeds_and_their_mutations() {
        feed_handler::fuzzing::seeds_and_mutations("book_messages", 3, fuzz);
    }

    fn add(b: &mut Books, r: u64, side: u8, sh: u32, px: u32) {
        add_on(b, 1, r, side, sh, px);
    }

    /// An add for the instrument at `locate`.
    fn add_on(b: &mut Books, locate: u16, r: u64, side: u8, sh: u32, px: u32) {
        let m = AddOrder {
            header: Header::new(b'A', locate, 0, 1),
            order_ref: r.into(),
            side,
            shares: sh.into(),
            stock: Stock::new("T").unwrap(),
            price_e4: px.into(),
        };
        b.apply(m.as_bytes());
    }

    /// Found by the `book_messages` fuzz target: an add whose side byte was neither `B` nor `S`
    /// went onto the asks as a phantom offer (its order saying one side, its level another),
    /// and one for locate 0, which names no instrument, onto a book no one sees.
    #[test]
    fn an_add_of_no_side_or_no_instrument_is_counted_and_not_booked() {
        let mut b = Books::new();
        add(&mut b, 1, b'S', 100, 10_100);
        add(&mut b, 2, 0, 100, 9_000);
        add(&mut b, 3, b's', 100, 9_500);
        add_on(&mut b, 0, 4, b'B', 100, 9_000);
        assert_eq!(b.counters.bad_sides, 2);
        assert_eq!(b.counters.bad_locates, 1);
        assert_eq!(b.live_orders(), 1);
        let x = b.get(1).unwrap();
        assert_eq!(
            x.best_ask().map(|a| a.0),
            Some(10_100),
            "no phantom offer below"
        );
        b.validate().unwrap();
    }

    /// After a loss every instrument is stale, and so is one first seen after it: its orders
    /// from before the loss are missing as much as any other's.
    #[test]
    fn an_instrument_first_seen_after_a_loss_is_stale_too() {
        let mut b = Books::new();
        add(&mut b, 1, b'S', 100, 10_100);
        b.set_all_stale(true);
        assert!(b.get(1).unwrap().stale);
        add_on(&mut b, 7, 2, b'B', 100, 9_000);
        assert!(b.get(7).unwrap().stale, "first seen after the loss");
        b.set_all_stale(false);
        assert!(!b.get(7).unwrap().stale);
    }

    /// A bar closes when the venue's clock passes its end, not only when its instrument trades
    /// again: a quiet symbol's last bar is charted once its second (or minute) is over, and the
    /// day's last bars when the end-of-day events come.
    #[test]
    fn the_venue_clock_closes_a_quiet_symbols_bars() {
        let s = 1_000_000_000u64;
        let trade = |locate: u16, ts: u64, px: u32| Trade {
            header: Header::new(b'P', locate, 0, ts),
            order_ref: 0.into(),
            side: b'B',
            shares: 100.into(),
            stock: Stock::new("T").unwrap(),
            price_e4: px.into(),
            match_number: 1.into(),
        };
        let mut b = Books::new();
        b.collect_closed_bars(true);
        let mut closed = Vec::new();
        let mut take = |b: &mut Books| -> Vec<(u16, u8, u64)> {
            closed.clear();
            b.take_closed_bars(&mut closed);
            closed
                .iter()
                .map(|c| (c.locate, c.interval_s, c.bar.start_ns / s))
                .collect()
        };
        b.apply(trade(1, 34_200 * s + 5, 1_000).as_bytes());
        b.apply(trade(2, 34_200 * s + 7, 2_000).as_bytes());
        assert_eq!(take(&mut b), []);
        // locate 2 trades on into the next second: locate 1's bar ended, and closes too
        b.apply(trade(2, 34_201 * s + 1, 2_000).as_bytes());
        let mut got = take(&mut b);
        got.sort();
        assert_eq!(got, [(1, 1, 34_200), (2, 1, 34_200)]);
        assert_eq!(b.clock_ns(), 34_201 * s + 1);
        // a trade of locate 1 later begins a new bar, and closes nothing again
        b.apply(trade(1, 34_230 * s, 1_001).as_bytes());
        assert_eq!(take(&mut b), [(2, 1, 34_201)]);
        // the end of market hours, a minute on: every bar open is over
        let end = SystemEvent {
            header: Header::new(b'S', 0, 0, 34_300 * s),
            event_code: b'M',
        };
        b.apply(end.as_bytes());
        let mut got = take(&mut b);
        got.sort();
        assert_eq!(
            got,
            [(1, 1, 34_230), (1, 60, 34_200), (2, 60, 34_200)],
            "each bar once"
        );
        b.apply(end.as_bytes());
        assert_eq!(take(&mut b), []);
    }

    /// Found by the `book_messages` fuzz target: a cross trade's shares are 64 bits, and two
    /// crosses near 2^64 overflowed the instrument's volume (a panic where overflow is checked,
    /// a wrapped volume and VWAP elsewhere). Volume and notional saturate now, and VWAP stays a
    /// price.
    #[test]
    fn crosses_of_absurd_size_saturate_the_volume() {
        let mut b = Books::new();
        for px_e4 in [1_000_000, 2_000_000] {
            let m = CrossTrade {
                header: Header::new(b'Q', 1, 0, 1),
                shares: u64::MAX.into(),
                stock: Stock::new("T").unwrap(),
                cross_price_e4: px_e4.into(),
                match_number: 1.into(),
                cross_type: b'O',
            };
            b.apply(m.as_bytes());
        }
        let x = b.get(1).unwrap();
        assert_eq!(x.volume, u64::MAX);
        assert_eq!(x.last.map(|l| l.px_e4), Some(2_000_000));
        let vwap = crate::consolidate::vwap_e4(x.notional_e4, x.volume as u128).unwrap();
        assert!((1_000_000..=2_000_000).contains(&vwap), "{vwap}");
        b.validate().unwrap();
    }

    #[test]
    fn adds_executions_and_replaces_keep_levels_right() {
        let mut b = Books::new();
        add(&mut b, 1, b'B', 100, 10_000);
        add(&mut b, 2, b'B', 200, 10_000);
        add(&mut b, 3, b'S', 300, 10_100);
        let x = b.get(1).unwrap();
        assert_eq!(
            x.best_bid(),
            Some((
                10_000,
                Level {
                    shares: 300,
                    orders: 2
                }
            ))
        );
        let e = OrderExecuted {
            header: Header::new(b'E', 1, 0, 2),
            order_ref: 1.into(),
            executed_shares: 100.into(),
            match_number: 1.into(),
        };
        b.apply(e.as_bytes());
        let x = b.get(1).unwrap();
        assert_eq!(
            x.best_bid(),
            Some((
                10_000,
                Level {
                    shares: 200,
                    orders: 1
                }
            ))
        );
        assert_eq!(
            (x.last, x.volume),
            (
                Some(Last {
                    px_e4: 10_000,
                    qty: 100
                }),
                100
            )
        );
        let u = OrderReplace {
            header: Header::new(b'U', 9, 0, 3),
            original_order_ref: 3.into(),
            new_order_ref: 4.into(),
            shares: 50.into(),
            price_e4: 10_200.into(),
        };
        b.apply(u.as_bytes());
        let x = b.get(1).unwrap();
        assert_eq!(
            x.best_ask(),
            Some((
                10_200,
                Level {
                    shares: 50,
                    orders: 1
                }
            ))
        );
        assert_eq!(b.order(4).unwrap().locate, 1, "the original's locate wins");
        let c = OrderExecutedWithPrice {
            header: Header::new(b'C', 1, 0, 4),
            order_ref: 4.into(),
            executed_shares: 50.into(),
            match_number: 2.into(),
            printable: b'N',
            execution_price_e4: 10_150.into(),
        };
        b.apply(c.as_bytes());
        let x = b.get(1).unwrap();
        assert!(x.asks.is_empty());
        assert_eq!(x.volume, 100, "non-printable executions do not print");
        let d = OrderDelete {
            header: Header::new(b'D', 1, 0, 5),
            order_ref: 77.into(),
        };
        b.apply(d.as_bytes());
        assert_eq!(b.counters.unknown_refs, 1);
        b.validate().unwrap();
    }
}
