//! The books against a plain reference written here: a map of live orders from which every
//! level, last trade and volume are recomputed from scratch at checkpoints, over more than a
//! million generated messages and several seeds. Every level of every instrument must agree,
//! applied one by one and through the prefetching window (`Ahead`).

use book::books::{Ahead, Books};
use feed_handler::itch::{self, Message};
use pcap_replays::market::{Market, MarketConfig};
use std::collections::{BTreeMap, HashMap};

/// The obviously correct book: live orders, and last/volume by the rules of the book issue.
#[derive(Default)]
struct Reference {
    orders: HashMap<u64, (u16, u8, u32, u32)>, // locate, side, px, shares
    last: HashMap<u16, (u32, u64)>,
    volume: HashMap<u16, u64>,
}

impl Reference {
    fn print(&mut self, loc: u16, px: u32, qty: u64) {
        self.last.insert(loc, (px, qty));
        *self.volume.entry(loc).or_default() += qty;
    }

    fn take(&mut self, r: u64, n: u32) -> Option<(u16, u8, u32, u32)> {
        let o = *self.orders.get(&r)?;
        if n >= o.3 {
            self.orders.remove(&r);
        } else {
            self.orders.get_mut(&r).unwrap().3 -= n;
        }
        Some(o)
    }

    fn apply(&mut self, m: &Message<'_>) {
        match *m {
            Message::AddOrder(a) => {
                self.orders.insert(
                    a.order_ref.get(),
                    (
                        a.header.stock_locate.get(),
                        a.side,
                        a.price_e4.get(),
                        a.shares.get(),
                    ),
                );
            }
            Message::AddOrderMpid(a) => {
                self.orders.insert(
                    a.order_ref.get(),
                    (
                        a.header.stock_locate.get(),
                        a.side,
                        a.price_e4.get(),
                        a.shares.get(),
                    ),
                );
            }
            Message::OrderExecuted(e) => {
                if let Some(o) = self.take(e.order_ref.get(), e.executed_shares.get()) {
                    self.print(o.0, o.2, e.executed_shares.get() as u64);
                }
            }
            Message::OrderExecutedWithPrice(c) => {
                if let Some(o) = self.take(c.order_ref.get(), c.executed_shares.get())
                    && c.printable == b'Y'
                {
                    self.print(
                        o.0,
                        c.execution_price_e4.get(),
                        c.executed_shares.get() as u64,
                    );
                }
            }
            Message::OrderCancel(x) => {
                self.take(x.order_ref.get(), x.cancelled_shares.get());
            }
            Message::OrderDelete(d) => {
                self.orders.remove(&d.order_ref.get());
            }
            Message::OrderReplace(u) => {
                if let Some(o) = self.orders.remove(&u.original_order_ref.get()) {
                    self.orders.insert(
                        u.new_order_ref.get(),
                        (o.0, o.1, u.price_e4.get(), u.shares.get()),
                    );
                }
            }
            Message::Trade(p) => self.print(
                p.header.stock_locate.get(),
                p.price_e4.get(),
                p.shares.get() as u64,
            ),
            Message::CrossTrade(q) if q.shares.get() > 0 => self.print(
                q.header.stock_locate.get(),
                q.cross_price_e4.get(),
                q.shares.get(),
            ),
            _ => {}
        }
    }

    fn levels(&self) -> BTreeMap<(u16, u8, u32), (u64, u32)> {
        let mut m: BTreeMap<(u16, u8, u32), (u64, u32)> = BTreeMap::new();
        for &(loc, side, px, sh) in self.orders.values() {
            let e = m.entry((loc, side, px)).or_default();
            e.0 += sh as u64;
            e.1 += 1;
        }
        m
    }
}

fn compare(books: &Books, r: &Reference, at: u64) {
    books
        .validate()
        .unwrap_or_else(|e| panic!("after {at} messages: {e}"));
    let mut ours = BTreeMap::new();
    for (loc, x) in books.iter() {
        for (side, book) in [(b'B', &x.bids), (b'S', &x.asks)] {
            for (px, l) in book.best_first() {
                ours.insert((loc, side, px), (l.shares, l.orders));
            }
        }
        assert_eq!(
            x.last.map(|l| (l.px_e4, l.qty)),
            r.last.get(&loc).copied(),
            "last of {loc} after {at}"
        );
        assert_eq!(
            x.volume,
            r.volume.get(&loc).copied().unwrap_or(0),
            "volume of {loc} after {at}"
        );
    }
    assert_eq!(ours, r.levels(), "every level after {at} messages");
    assert_eq!(books.live_orders(), r.orders.len());
}

#[test]
fn books_equal_a_plain_reference_over_a_million_messages() {
    let mut total = 0;
    for seed in [1, 2, 3] {
        let mut m = Market::new(MarketConfig {
            seed,
            symbols: 300,
            messages: 350_000,
            initial_orders: 20,
            ..Default::default()
        });
        let mut books = Books::new();
        // the same messages through the prefetching window the live paths use
        let mut ahead_books = Books::new();
        let mut ahead = Ahead::default();
        let mut r = Reference::default();
        let mut n = 0u64;
        while let Some(msg) = m.next_message() {
            books.apply(msg);
            ahead.push(&mut ahead_books, msg);
            r.apply(&itch::parse(msg).unwrap());
            n += 1;
            if n % 50_000 == 0 {
                compare(&books, &r, n);
                assert!(ahead.held() > 0, "the window holds messages back");
                ahead.flush(&mut ahead_books);
                compare(&ahead_books, &r, n);
            }
        }
        compare(&books, &r, n);
        ahead.flush(&mut ahead_books);
        compare(&ahead_books, &r, n);
        assert_eq!(ahead_books.counters, books.counters);
        assert_eq!(books.counters.unknown_refs, 0);
        assert!(books.live_orders() > 1000);
        total += n;
    }
    assert!(total >= 1_000_000);
}
