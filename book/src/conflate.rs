//! The conflation thread: follows the feed ring (reading the journal first when it starts, or
//! when it falls behind), applies every message to the books, and publishes each changed
//! instrument's latest quote to the quote table once per batch.
//!
//! Two tables: `<quotes>` holds one consolidated quote per symbol over every venue (channel)
//! quoting it (best prices from trusted venues only, last, volume, VWAP; see
//! [`crate::consolidate`]), and `<quotes>.venues` one quote per venue and symbol. With one
//! venue the two carry the same prices.
//!
//! Staleness: while it rebuilds from the journal after a start, what it publishes is marked
//! stale, and everything is published fresh once it has caught up with the ring. A gap record
//! (messages lost for good on a channel) marks every instrument of that channel stale at once;
//! with a re-request server configured ([`Conflator::with_rebuild`]) the channel is rebuilt
//! from a full re-request of the session and published fresh again, otherwise it stays stale.

use crate::barlog::{BarLogWriter, BarRecord};
use crate::bars::Rebuilt;
use crate::books::{Books, ClosedBar, LOOKAHEAD};
use crate::consolidate::{FastMap, VenueQuote, consolidate};
use crate::quotes::{Quote, QuoteWriter};
use crate::rebuild::{Rebuild, RebuildConfig};
use feed_handler::journal::{Start, Subscriber};
use feed_handler::ring::{Kind, Record, RingError};
use std::path::Path;

/// Records handled per duty cycle before quotes are published.
pub const BATCH: usize = 4096;

/// Longest sleep on the ring's doorbell when there is nothing to read: how late a stop, a line
/// health check, or a record from a writer that does not ring (not the feed handler) is seen.
pub const IDLE_WAIT_NS: u64 = 1_000_000;
/// The sleep when there is nothing to read and no doorbell to wait on (the ring file is not
/// writable by this process), or while a rebuild waits for its re-request server.
pub const IDLE_SLEEP: std::time::Duration = std::time::Duration::from_micros(50);

/// One symbol over every venue.
#[derive(Debug)]
struct SymEntry {
    updates: u64,
    venues: Vec<VenueQuote>,
    last: Quote,
}

/// What a locate of a channel resolves to (`sym` all zero: not known yet).
#[derive(Debug, Default, Clone, Copy)]
struct LocateSlots {
    sym: [u8; 8],
    venue_slot: u32,
    sym_idx: u32,
}

#[derive(Debug, Default, Clone, Copy)]
struct Meta {
    seq: u64,
    recv_ns: u64,
}

/// The conflation agent.
#[derive(Debug)]
pub struct Conflator {
    sub: Subscriber,
    quotes: QuoteWriter,
    venue_table: QuoteWriter,
    /// Symbol → its index in `sym_entries` (which is also its consolidated slot).
    sym_index: crate::consolidate::SymbolMap<usize>,
    /// Per symbol: updates published, each venue's view, the last consolidated quote.
    sym_entries: Vec<SymEntry>,
    /// Per channel, by locate: the symbol it names and its venue slot and symbol index, so a
    /// publish needs no hash lookup (checked against the symbol: a new session may reuse it).
    by_locate: FastMap<u16, Vec<LocateSlots>>,
    /// The feed handler's counters (line health), opened when it exists.
    counters: Option<feed_handler::counters::CountersReader>,
    counters_path: std::path::PathBuf,
    /// Per channel: packets seen on its lines A and B, and when that last changed.
    line_packets: FastMap<u16, (u64, u64)>,
    /// Channels whose lines are unhealthy or silent (bit per channel): left out of best prices.
    distrusted: u64,
    next_health_ns: u64,
    silence_ns: u64,
    ended: Vec<u16>,
    pending: Vec<(usize, Quote)>,
    books: FastMap<u16, Books>,
    /// Sleeps until the feed handler publishes (see [`Conflator::idle`]).
    doorbell: Option<feed_handler::ring::Doorbell>,
    /// Records read but not yet applied (see [`Conflator::do_work`]); at most [`LOOKAHEAD`].
    window: std::collections::VecDeque<Record>,
    meta: FastMap<(u16, u16), Meta>,
    slot_of: FastMap<(u16, [u8; 8]), usize>,
    next_slot: usize,
    catch_up_to: u64,
    caught_up: bool,
    gap_channels: Vec<u16>,
    changed: Vec<u16>,
    bar_log: BarLogWriter,
    /// The bar log this book went on with: each series' newest bar in it (bars closed again
    /// while catching up, not starting after it, are not logged again).
    logged_before: crate::barlog::Newest,
    closed: Vec<ClosedBar>,
    history: crate::bars::HistoryConfig,
    overruns_seen: u64,
    next_seq: FastMap<u16, u64>,
    rebuild_cfg: Option<RebuildConfig>,
    channel_rebuild: FastMap<u16, RebuildConfig>,
    /// Channels waiting for a rebuild while another one runs.
    rebuild_queue: Vec<u16>,
    rebuild: Option<(u16, Rebuild)>,
    /// Rebuilds completed.
    pub rebuilds: u64,
    /// End-of-session records seen.
    pub end_of_session: u64,
    /// Bar log writes that failed.
    pub bar_log_errors: u64,
    /// Bars closed again that were logged before (by the books a rebuild replaced, or in the
    /// bar log this book went on with): not logged again.
    pub bars_known: u64,
    /// Bars a rebuild logged as revisions (the gap had taken some or all of their trades).
    pub bars_revised: u64,
    /// Records applied.
    pub records: u64,
    /// Quotes published.
    pub published: u64,
    /// Gap records seen.
    pub gaps: u64,
    /// Records the ring dropped before this book read them that no journal held.
    pub lost_records: u64,
    /// What the last loss was, for the log (taken by whoever logs it).
    pub lost_said: Option<String>,
    /// Channels whose next record must carry on their sequence, after records were lost: a
    /// channel that lost messages is then rebuilt as after a gap.
    seq_check: Vec<u16>,
    /// Records were lost: a channel first seen since then may have lost its first messages
    /// (a book started after the ring dropped them, with no journal to read them from).
    lost_any: bool,
}

impl Conflator {
    /// Attaches to the feed ring at `ring` and creates the quote table at `quotes`.
    pub fn new(ring: &Path, quotes: &Path, slots: usize) -> Result<Self, String> {
        let sub = Subscriber::attach(ring, Start::Beginning).map_err(|e| {
            format!(
                "{e} (start `feed-handler run` first: its config's `ring` names the ring, \
                 here {})",
                ring.display()
            )
        })?;
        let catch_up_to = sub.ring().head();
        let doorbell = sub.ring().doorbell().ok();
        let venues_path = crate::quotes::venues_beside(quotes);
        let venue_table = QuoteWriter::create(&venues_path, slots, (slots as u64 * 4).max(1024))
            .map_err(|e| format!("{}: {e}", venues_path.display()))?;
        let quotes = QuoteWriter::create(quotes, slots, (slots as u64 * 4).max(1024))
            .map_err(|e| format!("{}: {e}", quotes.display()))?;
        // a book restarted on the same ring goes on with its bar log
        let (bar_log, logged_before) = BarLogWriter::resume(
            &crate::barlog::beside(quotes.path()),
            sub.ring().info().generation,
        )
        .map_err(|e| format!("bar log: {e}"))?;
        Ok(Conflator {
            sub,
            bar_log,
            logged_before: logged_before.unwrap_or_default(),
            closed: Vec::new(),
            history: crate::bars::HistoryConfig::default(),
            overruns_seen: 0,
            lost_records: 0,
            lost_said: None,
            seq_check: Vec::new(),
            lost_any: false,
            quotes,
            venue_table,
            sym_index: Default::default(),
            sym_entries: Vec::new(),
            by_locate: FastMap::default(),
            counters: None,
            counters_path: feed_handler::counters::counters_path(ring),
            line_packets: FastMap::default(),
            distrusted: 0,
            next_health_ns: 0,
            silence_ns: 3_000_000_000,
            ended: Vec::new(),
            pending: Vec::new(),
            books: FastMap::default(),
            window: std::collections::VecDeque::with_capacity(LOOKAHEAD),
            doorbell,
            meta: FastMap::default(),
            slot_of: FastMap::default(),
            next_slot: 0,
            catch_up_to,
            caught_up: catch_up_to == 0,
            gap_channels: Vec::new(),
            changed: Vec::new(),
            next_seq: FastMap::default(),
            rebuild_cfg: None,
            channel_rebuild: FastMap::default(),
            rebuild_queue: Vec::new(),
            rebuild: None,
            rebuilds: 0,
            end_of_session: 0,
            bar_log_errors: 0,
            bars_known: 0,
            bars_revised: 0,
            records: 0,
            published: 0,
            gaps: 0,
        })
    }

    /// Whether the feed handler's ring at this book's path was replaced: the feed handler was
    /// started again (a new ring and journal, its session published again from where its
    /// config starts). This book then follows nothing: see [`Conflator::reattach`].
    pub fn ring_replaced(&self) -> bool {
        self.sub.ring().replaced()
    }

    /// A conflation thread on the ring now at this one's path, with this one's settings, as
    /// if `book run` were started again: a new quote table at the same path (its readers
    /// re-attach, every quote stale until caught up) and, for the new ring, a new bar log.
    pub fn reattach(&self) -> Result<Conflator, String> {
        let mut c = Conflator::new(
            self.sub.ring().path(),
            self.quotes.path(),
            self.quotes.slots(),
        )?
        .with_history(self.history);
        c.rebuild_cfg = self.rebuild_cfg;
        c.channel_rebuild = self.channel_rebuild.clone();
        c.silence_ns = self.silence_ns;
        Ok(c)
    }

    /// After an unrecovered gap, rebuild the channel from a full re-request of its session
    /// (see [`crate::rebuild`]); without this, a gap leaves the channel stale.
    pub fn with_rebuild(mut self, cfg: RebuildConfig) -> Self {
        self.rebuild_cfg = Some(cfg);
        self
    }

    /// A venue whose lines carry no packet (not even a heartbeat) for this long is left out of
    /// the consolidated best prices until they do again (default 3 s; MoldUDP64 sends a
    /// heartbeat every second on an idle line). A venue past its end of session is not.
    pub fn with_silence(mut self, silence: std::time::Duration) -> Self {
        self.silence_ns = silence.as_nanos() as u64;
        self
    }

    /// Channels currently left out for their lines (bit per channel).
    pub fn distrusted(&self) -> u64 {
        self.distrusted
    }

    /// Reads the feed handler's line counters (every 100 ms): a channel with no packet on
    /// either line for the silence limit is distrusted; every symbol it quotes is published
    /// again when that changes. (A line whose breaker tripped for loss is not enough: the other
    /// line and re-requests keep the data whole, and a loss that is not recovered is a gap,
    /// which makes the venue stale anyway.)
    fn check_lines(&mut self) {
        use feed_handler::counters::{CountersReader, LINE_COUNTERS};
        let now = feed_handler::sock::realtime_ns();
        if now < self.next_health_ns {
            return;
        }
        self.next_health_ns = now + 100_000_000;
        // (the feed handler started again: its new file, not the old one, says how its lines
        // are; a book that follows a new ring may have opened the old file just before)
        if self.counters.as_ref().is_some_and(|c| c.replaced()) {
            self.counters = None;
        }
        if self.counters.is_none() {
            self.counters = CountersReader::open(&self.counters_path).ok();
        }
        let Some(c) = &self.counters else { return };
        let idx = |name: &str| LINE_COUNTERS.iter().position(|x| x.0 == name);
        let Some(pk) = idx("packets") else {
            return;
        };
        let mut distrusted = self.distrusted;
        for (i, ch) in c.read().iter().enumerate().take(64) {
            let packets = ch.lines[0][pk] + ch.lines[1][pk];
            let e = self.line_packets.entry(i as u16).or_insert((packets, now));
            if packets != e.0 {
                *e = (packets, now);
            }
            let silent =
                now.saturating_sub(e.1) > self.silence_ns && !self.ended.contains(&(i as u16));
            if silent {
                distrusted |= 1 << i;
            } else {
                distrusted &= !(1u64 << i);
            }
        }
        let changed = distrusted ^ self.distrusted;
        if changed == 0 {
            return;
        }
        self.distrusted = distrusted;
        let syms: Vec<usize> = (0..self.sym_entries.len())
            .filter(|&i| {
                self.sym_entries[i]
                    .venues
                    .iter()
                    .any(|v| v.channel < 64 && changed & 1 << v.channel != 0)
            })
            .collect();
        for i in syms {
            self.publish_consolidated(i, None);
        }
    }

    /// Consolidates symbol `idx` over its venues and publishes it in slot `idx`; `base`
    /// carries the fields of the change that caused it (the last published quote's when `None`).
    fn publish_consolidated(&mut self, idx: usize, base: Option<Quote>) {
        let distrusted = self.distrusted;
        let caught_up = self.caught_up;
        let Some(entry) = self.sym_entries.get_mut(idx) else {
            return;
        };
        entry.updates += 1;
        if idx >= self.quotes.slots() {
            return;
        }
        let c = consolidate(&entry.venues, |ch| ch < 64 && distrusted & 1 << ch != 0);
        let q = base.unwrap_or(entry.last);
        let cq = Quote {
            bid: c.bid.map(|(p, s, _)| (p, s)),
            ask: c.ask.map(|(p, s, _)| (p, s)),
            last: c.last.map(|(p, s, _)| (p, s)),
            volume: c.volume,
            state: c.state,
            stale: c.stale || !caught_up,
            updates: entry.updates,
            vwap_e4: c.vwap_e4,
            bid_venue: c.bid.map_or(0, |b| b.2.min(255) as u8),
            ask_venue: c.ask.map_or(0, |a| a.2.min(255) as u8),
            untrusted: c.untrusted as u8,
            ..q
        };
        entry.last = cq;
        self.quotes.publish(idx, &cq);
    }

    /// Rebuild `channel` (one venue) from its own re-request server and session after an
    /// unrecovered gap; overrides [`Conflator::with_rebuild`] for that channel. One rebuild
    /// runs at a time; channels that gap meanwhile wait their turn (stale until then).
    pub fn with_channel_rebuild(mut self, channel: u16, cfg: RebuildConfig) -> Self {
        self.channel_rebuild.insert(channel, cfg);
        self
    }

    /// Whether any channel can be rebuilt (a re-request server is configured).
    pub fn rebuilds_configured(&self) -> bool {
        self.rebuild_cfg.is_some() || !self.channel_rebuild.is_empty()
    }

    fn rebuild_config(&self, channel: u16) -> Option<RebuildConfig> {
        self.channel_rebuild
            .get(&channel)
            .copied()
            .or(self.rebuild_cfg)
    }

    /// Bar and anomaly settings for the books this thread keeps.
    pub fn with_history(mut self, cfg: crate::bars::HistoryConfig) -> Self {
        self.history = cfg;
        self
    }

    /// Whether a rebuild is in progress.
    pub fn rebuilding(&self) -> bool {
        self.rebuild.is_some()
    }

    /// The books of a channel.
    pub fn books(&self, channel: u16) -> Option<&Books> {
        self.books.get(&channel)
    }

    /// Every channel's book counters, summed (a channel's start again when it is rebuilt).
    pub fn book_counters(&self) -> crate::books::BookCounters {
        let mut c = crate::books::BookCounters::default();
        for b in self.books.values() {
            c.add(&b.counters);
        }
        c
    }

    /// One duty cycle: applies up to [`BATCH`] records, publishes what changed; returns how
    /// many records it applied.
    ///
    /// Messages pass through a window of [`LOOKAHEAD`] records: each one's order slot and
    /// instrument are prefetched when it is read and it is applied once the window is full
    /// (the books' memory is mostly out of cache, see [`crate::books::Ahead`]). The window is
    /// emptied before a gap or end-of-session record is handled and whenever the ring has
    /// nothing more, so holding back never delays a record that could be applied now.
    pub fn do_work(&mut self) -> Result<usize, String> {
        let mut n = 0;
        let mut touched: Vec<u16> = Vec::new();
        while n < BATCH {
            let r = match self.sub.next_record() {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e @ RingError::Lost { .. }) => {
                    while let Some(old) = self.window.pop_front() {
                        self.handle(&old, &mut touched)?;
                    }
                    self.lost(&e);
                    continue;
                }
                Err(e) => return Err(e.to_string()),
            };
            n += 1;
            if r.kind == Kind::Message {
                if let Some(b) = self.books.get(&r.channel) {
                    b.prefetch(r.data());
                }
                if self.window.len() == LOOKAHEAD
                    && let Some(old) = self.window.pop_front()
                {
                    self.handle(&old, &mut touched)?;
                }
                self.window.push_back(r);
            } else {
                while let Some(old) = self.window.pop_front() {
                    self.handle(&old, &mut touched)?;
                }
                self.handle(&r, &mut touched)?;
            }
        }
        while let Some(old) = self.window.pop_front() {
            self.handle(&old, &mut touched)?;
        }
        self.step_rebuild()?;
        self.check_lines();
        // Lapped by the ring: what is published is behind until the journal has caught the
        // reader up again; say so (stale) instead of showing old prices as current.
        if self.sub.overruns > self.overruns_seen {
            self.overruns_seen = self.sub.overruns;
            self.fell_behind();
        }
        let was_caught_up = self.caught_up;
        if !self.caught_up && self.sub.position() >= self.catch_up_to {
            self.caught_up = true;
        }
        for ch in touched {
            self.publish_changed(ch, false, None);
        }
        if self.caught_up && !was_caught_up {
            // rebuilt: publish every instrument with its real staleness
            let chans: Vec<u16> = self.books.keys().copied().collect();
            for ch in chans {
                self.publish_changed(ch, true, None);
            }
        }
        // readers asleep on the tables' doorbells (publishers, gateways) wake for this batch
        self.quotes.wake_readers();
        self.venue_table.wake_readers();
        Ok(n)
    }

    /// The channel's books, new ones the first time.
    fn books_of(&mut self, channel: u16) -> &mut Books {
        let history = self.history;
        self.books.entry(channel).or_insert_with(|| {
            let mut b = Books::with_history(history);
            b.collect_closed_bars(true);
            b
        })
    }

    /// What is published is behind until this book has caught up with the ring's head as it
    /// is now: every quote says so (stale) meanwhile.
    fn fell_behind(&mut self) {
        self.caught_up = false;
        self.catch_up_to = self.sub.ring().head();
        let chans: Vec<u16> = self.books.keys().copied().collect();
        for ch in chans {
            self.publish_changed(ch, true, None);
        }
    }

    /// Records the ring dropped and no journal holds (the feed handler keeps none, or it
    /// stopped): the reader has moved past them. Every channel's next record shows whether
    /// the channel lost messages; one that did is rebuilt as after a gap (stale until then).
    fn lost(&mut self, e: &RingError) {
        if let RingError::Lost { from, to, .. } = e {
            self.lost_records += to - from;
        }
        self.lost_said = Some(e.to_string());
        self.lost_any = true;
        for &ch in self.books.keys() {
            if !self.seq_check.contains(&ch) {
                self.seq_check.push(ch);
            }
        }
        self.fell_behind();
    }

    /// Applies one record read from the ring or journal.
    fn handle(&mut self, r: &Record, touched: &mut Vec<u16>) -> Result<(), String> {
        // after a loss: the messages this channel lost are a gap before this record
        if let Some(i) = self.seq_check.iter().position(|&c| c == r.channel) {
            self.seq_check.swap_remove(i);
            if let Some(&want) = self.next_seq.get(&r.channel)
                && r.seq > want
            {
                self.gap(r.channel, r.seq, r.position)?;
            }
        } else if self.lost_any && r.seq > 1 && !self.next_seq.contains_key(&r.channel) {
            // first seen after a loss, past its first message: what came before is lost
            self.gap(r.channel, r.seq, r.position)?;
        }
        self.records += 1;
        let books = self.books_of(r.channel);
        match r.kind {
            Kind::Message => {
                books.apply(r.data());
                self.next_seq.insert(r.channel, r.seq + 1);
                let locate = r
                    .data()
                    .get(1..3)
                    .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
                self.meta.insert(
                    (r.channel, locate),
                    Meta {
                        seq: r.seq,
                        recv_ns: r.recv_ns,
                    },
                );
            }
            Kind::Gap => {
                self.gaps += 1;
                self.gap(r.channel, r.seq + r.gap_count, self.sub.position())?;
            }
            Kind::EndOfSession => {
                self.end_of_session += 1;
                if !self.ended.contains(&r.channel) {
                    self.ended.push(r.channel);
                }
            }
        }
        if !touched.contains(&r.channel) {
            touched.push(r.channel);
        }
        Ok(())
    }

    /// The channel's messages before `until` are not all on its books: every quote of the
    /// channel is stale, and with a re-request server the channel is rebuilt (from sequence 1
    /// up to `until`, then the records from ring position `from_position` on).
    fn gap(&mut self, channel: u16, until: u64, from_position: u64) -> Result<(), String> {
        self.books_of(channel).set_all_stale(true);
        if !self.gap_channels.contains(&channel) {
            self.gap_channels.push(channel);
        }
        self.next_seq.insert(channel, until);
        if let Some(cfg) = self.rebuild_config(channel) {
            match &self.rebuild {
                Some((other, _)) if *other != channel => {
                    if !self.rebuild_queue.contains(&channel) {
                        self.rebuild_queue.push(channel);
                    }
                }
                _ => {
                    // (re)start: a new gap makes an earlier rebuild's target stale
                    let rb = Rebuild::start(cfg, until, from_position)
                        .map_err(|e| format!("rebuild: {e}"))?;
                    self.rebuild = Some((channel, rb));
                }
            }
        }
        Ok(())
    }

    /// Advances a rebuild; when the re-requested part is complete, applies what the ring
    /// carried since the gap, swaps the fresh books in and publishes them all.
    fn step_rebuild(&mut self) -> Result<(), String> {
        let Some((channel, rb)) = &mut self.rebuild else {
            return Ok(());
        };
        if !rb.poll()? {
            return Ok(());
        }
        let channel = *channel;
        let mut since = Subscriber::attach(self.sub.ring().path(), Start::At(rb.from_position))
            .map_err(|e| e.to_string())?;
        let mut ahead = crate::books::Ahead::default();
        let mut lost = None;
        while since.position() < self.sub.position() {
            let r = match since.next_record() {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e @ RingError::Lost { .. }) => {
                    lost = Some(e);
                    break;
                }
                Err(e) => return Err(e.to_string()),
            };
            if r.channel == channel && r.kind == Kind::Message {
                ahead.push(&mut rb.books, r.data());
            }
        }
        ahead.flush(&mut rb.books);
        // (what was applied is not applied again next cycle)
        rb.from_position = since.position();
        if let Some(e) = lost {
            // the live records since the rebuild began are gone (no journal to read them
            // from): it begins again, up to where the channel's stream is now
            self.lost_said = Some(format!("rebuild of channel {channel} begun again: {e}"));
            let until = self.next_seq.get(&channel).copied().unwrap_or(1);
            return self.gap(channel, until, self.sub.position());
        }
        if since.position() < self.sub.position() {
            return Ok(()); // the journal is behind: try again next cycle
        }
        let Some((_, rb)) = self.rebuild.take() else {
            return Ok(());
        };
        // bars the live books closed in this cycle, not logged yet: logged now, before the
        // rebuilt books are judged against them as logged (else a bar they closed just before
        // the swap was never logged: the rebuild took it for known, and the live books that
        // held it were gone)
        self.publish_changed(channel, false, None);
        let replaced = self.books.insert(channel, rb.books);
        self.gap_channels.retain(|&c| c != channel);
        // the next channel waiting, from sequence 1 up to where its stream is now
        if !self.rebuild_queue.is_empty() {
            let next = self.rebuild_queue.remove(0);
            if let Some(cfg) = self.rebuild_config(next) {
                let until = self.next_seq.get(&next).copied().unwrap_or(1);
                let rb = Rebuild::start(cfg, until, self.sub.position())
                    .map_err(|e| format!("rebuild: {e}"))?;
                self.rebuild = Some((next, rb));
            }
        }
        self.rebuilds += 1;
        self.publish_changed(channel, true, replaced.as_ref());
        Ok(())
    }

    /// Publishes the channel's changed quotes (all of them with `all`) and logs the bars closed
    /// since. `replaced` is the channel's books a rebuild just replaced: the rebuilt books'
    /// bars are then the whole day's, and only the ones the log lacks or got wrong are logged.
    fn publish_changed(&mut self, channel: u16, all: bool, replaced: Option<&Books>) {
        let Some(books) = self.books.get_mut(&channel) else {
            return;
        };
        let mut bars = BarSink {
            log: &mut self.bar_log,
            logged_before: &self.logged_before,
            channel,
            wrote: false,
            known: 0,
            revised: 0,
            errors: 0,
        };
        match replaced {
            // a rebuild: its books' whole history (bounded per instrument), each closed bar
            // judged against the live books' it replaces; from now on they collect as they go
            Some(old) => {
                for (locate, x) in books.iter() {
                    let (Some(h), Some(sym)) = (x.history.as_ref(), x.symbol) else {
                        continue;
                    };
                    let was = old.get(locate).and_then(|o| o.history.as_ref());
                    for (interval_s, series) in [(1u8, &h.seconds), (60, &h.minutes)] {
                        for bar in series.bars().take(series.closed_len()) {
                            let judged = was.map_or(Rebuilt::New, |w| {
                                let s = if interval_s == 1 {
                                    &w.seconds
                                } else {
                                    &w.minutes
                                };
                                s.judge_rebuilt(bar)
                            });
                            bars.log(sym.0, interval_s, *bar, judged);
                        }
                    }
                }
                books.collect_closed_bars(true);
            }
            None => {
                self.closed.clear();
                books.take_closed_bars(&mut self.closed);
                for c in &self.closed {
                    if let Some(sym) = books.get(c.locate).and_then(|x| x.symbol) {
                        bars.log(sym.0, c.interval_s, c.bar, Rebuilt::New);
                    }
                }
            }
        }
        // a failed write of history must not stop prices: counted, not fatal
        if bars.wrote && bars.log.flush().is_err() {
            bars.errors += 1;
        }
        self.bars_known += bars.known;
        self.bars_revised += bars.revised;
        self.bar_log_errors += bars.errors;
        self.changed.clear();
        books.take_changed(&mut self.changed);
        if all {
            self.changed = books.iter().map(|(l, _)| l).collect();
        }
        let mut consolidated = std::mem::take(&mut self.pending);
        consolidated.clear();
        let mut by_locate = self.by_locate.remove(&channel).unwrap_or_default();
        // the instruments (and then their best levels) a few places ahead: each publish reads
        // state the batch's later records pushed out of cache
        for (i, &locate) in self.changed.iter().enumerate() {
            if let Some(&l) = self.changed.get(i + 8) {
                books.prefetch_instrument(l);
            }
            if let Some(&l) = self.changed.get(i + 4) {
                books.prefetch_top(l);
                if let Some(e) = by_locate.get(l as usize)
                    && let Some(se) = self.sym_entries.get(e.sym_idx as usize)
                {
                    crate::orders::prefetch(se.venues.as_ptr() as *const u8);
                }
            }
            let Some(x) = books.get(locate) else { continue };
            let Some(sym) = x.symbol else { continue };
            let known = by_locate
                .get(locate as usize)
                .filter(|e| e.sym == sym.0)
                .copied();
            let known = match known {
                Some(e) => e,
                None => {
                    let slot = match self.slot_of.get(&(channel, sym.0)) {
                        Some(&s) => s,
                        None => {
                            if self.next_slot >= self.venue_table.slots() {
                                continue; // table full: counted by the caller through `published`
                            }
                            self.slot_of.insert((channel, sym.0), self.next_slot);
                            self.next_slot += 1;
                            self.next_slot - 1
                        }
                    };
                    let n = self.sym_entries.len();
                    let idx = *self.sym_index.entry(sym.0).or_insert(n);
                    if idx == n {
                        self.sym_entries.push(SymEntry {
                            updates: 0,
                            venues: Vec::new(),
                            last: Quote::default(),
                        });
                    }
                    let e = LocateSlots {
                        sym: sym.0,
                        venue_slot: slot as u32,
                        sym_idx: idx as u32,
                    };
                    if by_locate.len() <= locate as usize {
                        by_locate.resize(locate as usize + 1, LocateSlots::default());
                    }
                    by_locate[locate as usize] = e;
                    e
                }
            };
            let slot = known.venue_slot as usize;
            let meta = self
                .meta
                .get(&(channel, locate))
                .copied()
                .unwrap_or_default();
            let stale = x.stale || !self.caught_up;
            let venue = channel.min(255) as u8;
            let q = Quote {
                symbol: sym.0,
                bid: x.best_bid().map(|(p, l)| (p, l.shares)),
                ask: x.best_ask().map(|(p, l)| (p, l.shares)),
                last: x.last.map(|l| (l.px_e4, l.qty)),
                volume: x.volume,
                state: x.state,
                stale,
                anomaly: x.anomaly(),
                exch_ts_ns: x.exch_ts_ns,
                recv_ns: meta.recv_ns,
                feed_seq: meta.seq,
                updates: x.updates,
                channel,
                locate,
                vwap_e4: crate::consolidate::vwap_e4(x.notional_e4, x.volume as u128),
                bid_venue: venue,
                ask_venue: venue,
                untrusted: if stale && channel < 8 {
                    1 << channel
                } else {
                    0
                },
            };
            self.venue_table.publish(slot, &q);
            // the symbol over every venue
            let idx = known.sym_idx as usize;
            let entry = &mut self.sym_entries[idx];
            if entry.venues.is_empty() && entry.updates == 0 {
                entry.last = q;
            }
            let view = VenueQuote::of(channel, x, stale);
            match entry.venues.iter_mut().find(|v| v.channel == channel) {
                Some(v) => *v = view,
                None => entry.venues.push(view),
            }
            consolidated.push((idx, q));
        }
        self.by_locate.insert(channel, by_locate);
        for &(i, q) in &consolidated {
            self.publish_consolidated(i, Some(q));
            self.published += 1;
        }
        self.pending = consolidated;
    }

    /// What to do when [`Conflator::do_work`] found nothing: sleep on the ring's doorbell until
    /// the feed handler publishes more (at most [`IDLE_WAIT_NS`]), so an idle book costs no CPU
    /// and a new record is applied as soon as it lands. While a rebuild talks to its server,
    /// or without a doorbell, sleep [`IDLE_SLEEP`] instead.
    pub fn idle(&mut self) {
        match (&self.doorbell, &self.rebuild) {
            (Some(bell), None) => {
                if !bell.wait(self.sub.position(), IDLE_WAIT_NS) {
                    // more in the ring already, or a journal flush awaited: look again soon
                    std::thread::yield_now();
                }
            }
            _ => std::thread::sleep(IDLE_SLEEP),
        }
    }

    /// Whether [`Conflator::idle`] sleeps on the ring's doorbell (it needs write access to the
    /// ring file) rather than polling.
    pub fn has_doorbell(&self) -> bool {
        self.doorbell.is_some()
    }

    /// Whether it has caught up with the ring since it started.
    pub fn caught_up(&self) -> bool {
        self.caught_up
    }

    /// The quote table's slot of a symbol on a channel.
    pub fn slot(&self, channel: u16, symbol: &str) -> Option<usize> {
        let s = feed_handler::itch::Stock::new(symbol)?;
        self.slot_of.get(&(channel, s.0)).copied()
    }

    /// The slot of `symbol` in the consolidated table.
    pub fn consolidated_slot(&self, symbol: &str) -> Option<usize> {
        let s = feed_handler::itch::Stock::new(symbol)?;
        self.sym_index.get(&s.0).copied()
    }
}
/// Logs the bars a batch (or a rebuild) closed: a bar judged logged before, or not starting
/// after its series' last one in the log this book went on with, is not logged again.
struct BarSink<'a> {
    log: &'a mut BarLogWriter,
    logged_before: &'a crate::barlog::Newest,
    channel: u16,
    wrote: bool,
    known: u64,
    revised: u64,
    errors: u64,
}

impl BarSink<'_> {
    fn log(&mut self, symbol: [u8; 8], interval_s: u8, bar: crate::bars::Bar, judged: Rebuilt) {
        let before = self
            .logged_before
            .get(&(self.channel, symbol, interval_s))
            .is_some_and(|&n| bar.start_ns <= n);
        if judged == Rebuilt::Known || (judged == Rebuilt::New && before) {
            self.known += 1;
            return;
        }
        let rec = BarRecord {
            symbol,
            channel: self.channel,
            interval_s,
            bar,
            revision: judged == Rebuilt::Revision,
            day: self.log.day(),
        };
        self.revised += rec.revision as u64;
        self.wrote = true;
        if self.log.append(rec).is_err() {
            self.errors += 1;
        }
    }
}
