//! History and anomalies from trades: 1-second and 1-minute OHLCV bars per instrument (bounded:
//! the newest bars are kept, the oldest dropped), and the anomaly test: a trade more than three
//! standard deviations from the rolling mean of the last minutes' closing prices.
//!
//! Everything is integer: prices are Price(4), the rolling sums are exact (`u128`), and the test
//! `(n·px − Σ)² > 9·(n·Σx² − Σ²)` is the 3-sigma test multiplied out, with no division and no
//! floating point. Bars are keyed by exchange time (ns since midnight).

use std::collections::VecDeque;

/// One bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bar {
    /// Start of the bar, ns since midnight (a multiple of the interval).
    pub start_ns: u64,
    /// First trade price, Price(4).
    pub open: u32,
    /// Highest.
    pub high: u32,
    /// Lowest.
    pub low: u32,
    /// Last.
    pub close: u32,
    /// Shares.
    pub volume: u64,
    /// Trades.
    pub trades: u32,
    /// When the opening trade was made, exchange time (ns since midnight): which venue's
    /// open is the consolidated bar's.
    pub first_ns: u64,
    /// When the closing trade was made (the last one folded in).
    pub last_ns: u64,
}

/// Bars of one interval, at most `cap` of them. Every bar but the newest is closed; the newest
/// closes when a trade starts the next one, or when its venue's clock (the exchange time of
/// its latest message) passes its end ([`Series::close_due`]), whichever comes first: a bar is
/// closed once.
#[derive(Debug, Clone)]
pub struct Series {
    interval_ns: u64,
    cap: usize,
    bars: VecDeque<Bar>,
    /// The newest bar is closed (by the clock) too.
    newest_closed: bool,
}

impl Series {
    /// Bars of `interval_ns`, keeping the newest `cap`.
    pub fn new(interval_ns: u64, cap: usize) -> Self {
        Series {
            interval_ns: interval_ns.max(1),
            cap: cap.max(1),
            bars: VecDeque::new(),
            newest_closed: false,
        }
    }

    /// Adds a trade. Returns the bar it closed, if it started a new one and the clock had not
    /// closed that bar already. A trade older than the newest bar (out of order) is folded
    /// into the newest bar, which opens again if the clock had closed it (and closes again,
    /// to be logged again: it replaces itself).
    pub fn on_trade(&mut self, ts_ns: u64, px: u32, qty: u64) -> Option<Bar> {
        let start = ts_ns - ts_ns % self.interval_ns;
        match self.bars.back_mut() {
            Some(b) if b.start_ns >= start => {
                self.newest_closed = false;
                b.high = b.high.max(px);
                b.low = b.low.min(px);
                b.close = px;
                b.volume = b.volume.saturating_add(qty);
                b.trades += 1;
                b.last_ns = ts_ns;
                None
            }
            last => {
                let closed = last.map(|b| *b).filter(|_| !self.newest_closed);
                self.newest_closed = false;
                if self.bars.len() == self.cap {
                    self.bars.pop_front();
                }
                self.bars.push_back(Bar {
                    start_ns: start,
                    open: px,
                    high: px,
                    low: px,
                    close: px,
                    volume: qty,
                    trades: 1,
                    first_ns: ts_ns,
                    last_ns: ts_ns,
                });
                closed
            }
        }
    }

    /// Closes the newest bar when `clock_ns` (its venue's exchange time now) is past its end,
    /// and returns it; `None` when there is none open, or it has not ended.
    pub fn close_due(&mut self, clock_ns: u64) -> Option<Bar> {
        let b = self.bars.back()?;
        if self.newest_closed || clock_ns < b.start_ns.saturating_add(self.interval_ns) {
            return None;
        }
        self.newest_closed = true;
        Some(*b)
    }

    /// Whether the newest bar is open.
    pub fn is_open(&self) -> bool {
        !self.bars.is_empty() && !self.newest_closed
    }

    /// How many of the bars (the oldest) are closed: all, or all but the newest.
    pub fn closed_len(&self) -> usize {
        self.bars.len() - self.is_open() as usize
    }

    /// The bars, oldest first.
    pub fn bars(&self) -> impl DoubleEndedIterator<Item = &Bar> + ExactSizeIterator {
        self.bars.iter()
    }

    /// What a rebuild's closed `bar` is to this series, the live one it replaces (whose closed
    /// bars were logged as they closed).
    pub fn judge_rebuilt(&self, bar: &Bar) -> Rebuilt {
        let logged = self.closed_len();
        let (Some(first), Some(last)) = (
            self.bars.front(),
            logged.checked_sub(1).map(|i| &self.bars[i]),
        ) else {
            return Rebuilt::New;
        };
        if bar.start_ns > last.start_ns {
            return Rebuilt::New;
        }
        if bar.start_ns < first.start_ns {
            // older than every bar kept: logged before and dropped since when the series is
            // full (every reader's window is shorter); else the gap took it whole
            return if self.bars.len() == self.cap {
                Rebuilt::Known
            } else {
                Rebuilt::Revision
            };
        }
        // bars start in order (a late trade folds into the newest)
        match self
            .bars
            .binary_search_by_key(&bar.start_ns, |b| b.start_ns)
        {
            Ok(i) if i < logged && self.bars[i] == *bar => Rebuilt::Known,
            _ => Rebuilt::Revision,
        }
    }

    /// The newest `n` bars, oldest first.
    pub fn last(&self, n: usize) -> Vec<Bar> {
        self.bars
            .iter()
            .skip(self.bars.len().saturating_sub(n))
            .copied()
            .collect()
    }
}

/// What a bar closed by a channel's rebuild is to the bars logged before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rebuilt {
    /// Newer than every bar logged: log it.
    New,
    /// Logged before with other values (the gap took some of its trades), or never logged though
    /// newer bars were (the gap took all of them): log it as a revision.
    Revision,
    /// Logged before with these values, or older than the history kept (and every window
    /// readers keep): not logged again.
    Known,
}

/// Rolling statistics of the closing prices of the last `window` completed bars.
#[derive(Debug, Clone)]
pub struct Rolling {
    window: usize,
    min_sample: usize,
    closes: VecDeque<u32>,
    sum: u128,
    sum_sq: u128,
}

impl Rolling {
    /// Over `window` closes, judging only with at least `min_sample` of them.
    pub fn new(window: usize, min_sample: usize) -> Self {
        Rolling {
            window: window.max(1),
            min_sample: min_sample.max(2),
            closes: VecDeque::new(),
            sum: 0,
            sum_sq: 0,
        }
    }

    /// Adds a completed bar's close.
    pub fn push(&mut self, close: u32) {
        if self.closes.len() == self.window
            && let Some(old) = self.closes.pop_front()
        {
            self.sum -= old as u128;
            self.sum_sq -= (old as u128) * (old as u128);
        }
        self.closes.push_back(close);
        self.sum += close as u128;
        self.sum_sq += (close as u128) * (close as u128);
    }

    /// True when `px` is more than 3 standard deviations from the mean (and the sample is big
    /// enough to say).
    pub fn is_anomaly(&self, px: u32) -> bool {
        let n = self.closes.len() as i128;
        if (n as usize) < self.min_sample {
            return false;
        }
        let (sum, sum_sq) = (self.sum as i128, self.sum_sq as i128);
        let dev = n * px as i128 - sum; // n·(px − mean)
        let var_n2 = n * sum_sq - sum * sum; // n²·variance
        // (px − mean)² > 9·variance, times n²; a flat history (variance 0) flags any move
        dev.checked_mul(dev).is_none_or(|d2| d2 > 9 * var_n2)
    }

    /// Closes held.
    pub fn len(&self) -> usize {
        self.closes.len()
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.closes.is_empty()
    }
}

/// Bar and anomaly settings.
#[derive(Debug, Clone, Copy)]
pub struct HistoryConfig {
    /// 1-second bars kept per instrument (default 900: the last 15 minutes).
    pub second_bars: usize,
    /// 1-minute bars kept per instrument (default 1440: a whole day).
    pub minute_bars: usize,
    /// Anomaly window in 1-minute bars (default 60: an hour).
    pub anomaly_window: usize,
    /// Closes needed before the anomaly test says anything (default 20).
    pub anomaly_min_sample: usize,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            second_bars: 900,
            minute_bars: 1440,
            anomaly_window: 60,
            anomaly_min_sample: 20,
        }
    }
}

/// One instrument's bars and anomaly state.
#[derive(Debug, Clone)]
pub struct History {
    /// 1-second bars.
    pub seconds: Series,
    /// 1-minute bars.
    pub minutes: Series,
    rolling: Rolling,
    /// Whether the last trade was an anomaly.
    pub anomaly: bool,
}

impl History {
    /// Empty history.
    pub fn new(c: &HistoryConfig) -> Self {
        History {
            seconds: Series::new(1_000_000_000, c.second_bars),
            minutes: Series::new(60_000_000_000, c.minute_bars),
            rolling: Rolling::new(c.anomaly_window, c.anomaly_min_sample),
            anomaly: false,
        }
    }

    /// Closes the bars whose end `clock_ns` (the venue's exchange time now) has passed: the
    /// 1-second and the 1-minute bar it closed, if any. A minute's close joins the rolling
    /// window as when a trade closes it.
    pub fn close_due(&mut self, clock_ns: u64) -> (Option<Bar>, Option<Bar>) {
        let second = self.seconds.close_due(clock_ns);
        let minute = self.minutes.close_due(clock_ns);
        if let Some(closed) = minute {
            self.rolling.push(closed.close);
        }
        (second, minute)
    }

    /// Whether a bar of either interval is open.
    pub fn is_open(&self) -> bool {
        self.seconds.is_open() || self.minutes.is_open()
    }

    /// Adds a trade; says whether it was an anomaly and which bars it closed.
    pub fn on_trade(&mut self, ts_ns: u64, px: u32, qty: u64) -> TradeOutcome {
        self.anomaly = self.rolling.is_anomaly(px);
        let closed_second = self.seconds.on_trade(ts_ns, px, qty);
        let closed_minute = self.minutes.on_trade(ts_ns, px, qty);
        if let Some(closed) = closed_minute {
            self.rolling.push(closed.close);
        }
        TradeOutcome {
            anomaly: self.anomaly,
            closed_second,
            closed_minute,
        }
    }
}

/// What one trade did to a [`History`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TradeOutcome {
    /// The trade is more than 3 standard deviations from the rolling mean.
    pub anomaly: bool,
    /// The 1-second bar the trade closed (it started a new one).
    pub closed_second: Option<Bar>,
    /// The 1-minute bar the trade closed.
    pub closed_minute: Option<Bar>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn bars_aggregate_and_stay_bounded() {
        let mut s = Series::new(S, 3);
        assert_eq!(s.on_trade(10 * S + 1, 100, 5), None);
        s.on_trade(10 * S + 2, 120, 1);
        s.on_trade(10 * S + 3, 90, 1);
        let closed = s.on_trade(11 * S, 110, 2).unwrap();
        assert_eq!(
            closed,
            Bar {
                start_ns: 10 * S,
                open: 100,
                high: 120,
                low: 90,
                close: 90,
                volume: 7,
                trades: 3,
                first_ns: 10 * S + 1,
                last_ns: 10 * S + 3,
            }
        );
        s.on_trade(12 * S, 1, 1);
        s.on_trade(13 * S, 2, 1);
        assert_eq!(s.bars().len(), 3, "bounded");
        assert_eq!(s.bars().next().unwrap().start_ns, 11 * S, "oldest dropped");
        s.on_trade(12 * S, 3, 1); // late trade folds into the newest bar
        assert_eq!(s.last(1)[0].volume, 2);
    }

    #[test]
    fn a_rebuilt_bar_is_new_known_or_a_revision() {
        let mut live = Series::new(S, 4);
        for (t, q) in [(10, 1), (11, 1), (13, 1), (14, 1)] {
            live.on_trade(t * S, 100, q);
        }
        // logged as they closed: 10, 11 and 13 (14 is still open)
        let bar = |t: u64, q: u64| Bar {
            start_ns: t * S,
            open: 100,
            high: 100,
            low: 100,
            close: 100,
            volume: q,
            trades: 1,
            first_ns: t * S,
            last_ns: t * S,
        };
        assert_eq!(live.judge_rebuilt(&bar(11, 1)), Rebuilt::Known);
        assert_eq!(
            live.judge_rebuilt(&bar(11, 2)),
            Rebuilt::Revision,
            "a trade the gap took"
        );
        assert_eq!(
            live.judge_rebuilt(&bar(12, 1)),
            Rebuilt::Revision,
            "a bar the gap took"
        );
        assert_eq!(
            live.judge_rebuilt(&bar(14, 2)),
            Rebuilt::New,
            "the open bar, closed"
        );
        assert_eq!(live.judge_rebuilt(&bar(20, 1)), Rebuilt::New);
        // older than the history kept: every reader's window is shorter
        live.on_trade(15 * S, 100, 1);
        assert_eq!(live.judge_rebuilt(&bar(10, 5)), Rebuilt::Known);
        // nothing logged yet (one open bar, or none)
        let mut one = Series::new(S, 4);
        assert_eq!(one.judge_rebuilt(&bar(3, 1)), Rebuilt::New);
        one.on_trade(9 * S, 100, 1);
        assert_eq!(one.judge_rebuilt(&bar(3, 1)), Rebuilt::New);
        // the clock closed (logged) bar 9: a bar before it, in a series that dropped nothing,
        // is one the gap took whole
        assert_eq!(one.close_due(10 * S).map(|b| b.start_ns), Some(9 * S));
        assert_eq!(one.judge_rebuilt(&bar(3, 1)), Rebuilt::Revision);
        assert_eq!(one.judge_rebuilt(&bar(9, 1)), Rebuilt::Known);
        assert_eq!(one.judge_rebuilt(&bar(10, 1)), Rebuilt::New);
    }

    #[test]
    fn the_clock_closes_a_bar_once_at_its_end() {
        let mut s = Series::new(S, 10);
        assert_eq!(s.close_due(5 * S), None, "no bar");
        s.on_trade(10 * S + 5, 100, 1);
        assert_eq!(s.close_due(11 * S - 1), None, "not ended");
        assert!(s.is_open() && s.closed_len() == 0);
        let closed = s.close_due(11 * S).unwrap();
        assert_eq!((closed.start_ns, closed.volume), (10 * S, 1));
        assert!(!s.is_open() && s.closed_len() == 1);
        assert_eq!(s.close_due(12 * S), None, "once");
        // the next trade begins a bar and closes nothing more
        assert_eq!(s.on_trade(12 * S, 101, 2), None);
        assert!(s.is_open());
        // which a trade closes as before
        assert_eq!(s.on_trade(13 * S, 102, 1).map(|b| b.volume), Some(2));
        // a late trade into a bar the clock closed opens it again, to close again
        s.close_due(14 * S);
        assert_eq!(s.on_trade(13 * S + 1, 99, 1), None);
        assert!(s.is_open());
        assert_eq!(s.close_due(14 * S).map(|b| b.volume), Some(2));
    }

    #[test]
    fn three_sigma_in_integers() {
        let mut r = Rolling::new(60, 20);
        for i in 0..30 {
            r.push(1_000_000 + (i % 5) * 100); // mean 1,000,200, sd ~141
        }
        assert!(!r.is_anomaly(1_000_200));
        assert!(!r.is_anomaly(1_000_600)); // ~2.8 sd
        assert!(r.is_anomaly(1_000_700)); // ~3.5 sd
        assert!(r.is_anomaly(999_500));
        let small = Rolling::new(60, 20);
        assert!(!small.is_anomaly(1), "too few samples to judge");
        let mut flat = Rolling::new(5, 2);
        for _ in 0..5 {
            flat.push(500);
        }
        assert!(!flat.is_anomaly(500));
        assert!(flat.is_anomaly(501), "any move off a flat history");
        // the window slides: old closes leave the sums
        for _ in 0..5 {
            flat.push(700);
        }
        assert!(!flat.is_anomaly(700));
        assert_eq!(flat.len(), 5);
    }

    #[test]
    fn history_flags_a_jump_after_a_calm_hour() {
        let mut h = History::new(&HistoryConfig::default());
        let m = 60 * S;
        for i in 0..40u64 {
            let t = h.on_trade(i * m, 1_000_000 + (i % 3) as u32 * 100, 100);
            assert!(!t.anomaly);
            assert_eq!(
                t.closed_minute.is_some(),
                i > 0,
                "each new minute closes the last"
            );
        }
        assert!(h.on_trade(40 * m + 1, 1_500_000, 100).anomaly);
        assert!(h.anomaly);
        assert!(!h.on_trade(40 * m + 2, 1_000_100, 100).anomaly);
        assert_eq!(h.minutes.bars().len(), 41);
    }
}
