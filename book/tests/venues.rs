//! Several venues at once: three generated sessions (one per venue, as Nasdaq, BX and PSX
//! publish three TotalView-ITCH feeds) replayed together on loopback multicast into one feed
//! handler with three channels, then the conflation thread. Every symbol's consolidated quote
//! equals a plain reference computed here from the three sessions' own books: best bid and
//! offer over the venues with the venue of each, latest last trade, summed volume, and VWAP.

use book::books::Books;
use book::conflate::Conflator;
use book::quotes::QuoteReader;
use feed_handler::agent::Agent;
use feed_handler::config::Config;
use pcap_replays::lines::{LinesConfig, default_lines};
use pcap_replays::market::{Market, MarketConfig};
use pcap_replays::packetize::PacketizerConfig;
use pcap_replays::replay::{self, Exchange, Pace};
use pcap_replays::session::{Progress, to_binaryfile};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const VENUES: u16 = 3;

// test k's venue v: groups 239.204.(4k+v).1/.2, ports 36000 + 100k + 10v (+1), re-request
// server 36500 + 100k + v
fn group(k: u16, v: u16, line: u8) -> Ipv4Addr {
    Ipv4Addr::new(239, 204, (4 * k + v) as u8, line)
}
fn port(k: u16, v: u16, line: u16) -> u16 {
    26_000 + 100 * k + 10 * v + line
}
fn server(k: u16, v: u16) -> u16 {
    26_500 + 100 * k + v
}

/// Replays the three venues into a feed handler and a conflation thread until every record
/// arrived; with `gap_on`, that venue loses a range on both lines and its re-request server is
/// down. Returns the conflation thread, each venue's own books, the table and the directory.
fn run(tag: &str, k: u16, gap_on: Option<u16>) -> (Conflator, Vec<Books>, PathBuf, PathBuf) {
    run_with(tag, k, gap_on, None)
}

/// [`run`], and with `pause`, that venue sends half its session, goes silent until the
/// conflation thread has left it out of every consolidated price (checked here), then sends
/// the rest.
fn run_with(
    tag: &str,
    k: u16,
    gap_on: Option<u16>,
    pause: Option<u16>,
) -> (Conflator, Vec<Books>, PathBuf, PathBuf) {
    let resume = Arc::new(AtomicBool::new(false));
    let dir = std::env::temp_dir().join(format!("book-venues-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ring = dir.join("ring");
    let off = dir.join("server-off");
    std::fs::write(&off, b"").unwrap();
    let mut cfg = format!(
        "ring = \"{}\"\nring_capacity = 65536\nidle = \"yield\"\n",
        ring.display()
    );
    for v in 0..VENUES {
        cfg += &format!(
            "[[channel]]\nname = \"venue{v}\"\nsession = \"GEN0000001\"\nstart_seq = 1\n\
             request_timeout_ms = 20\n\
             line_a = {{ group = \"{}\", port = {} }}\nline_b = {{ group = \"{}\", port = {} }}\n\
             rerequest = \"127.0.0.1:{}\"\n",
            group(k, v, 1),
            port(k, v, 0),
            group(k, v, 2),
            port(k, v, 1),
            server(k, v)
        );
    }
    let mut agent = Agent::new(Config::parse(&cfg).unwrap()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let feed = std::thread::spawn(move || agent.run(&s2).unwrap());

    // three venues of one seed: the same symbols and starting prices under each venue's own
    // locates and order flow; BX and PSX with smaller shares of the messages
    let mut expected: Vec<Books> = Vec::new();
    let mut counts: Vec<u64> = Vec::new();
    let mut players = Vec::new();
    let mut exchanges = Vec::new();
    for v in 0..VENUES {
        let mut m = Market::new(MarketConfig {
            seed: 100,
            symbols: 40,
            messages: 20_000,
            rate_per_s: 1_000,
            venue: v as u8,
            ..Default::default()
        });
        let (bytes, _) = to_binaryfile(&mut m, Vec::new(), &mut Progress::new("t", false)).unwrap();
        let file = dir.join(format!("v{v}.itch"));
        std::fs::write(&file, &bytes).unwrap();
        let mut books = Books::new();
        let mut n = 0;
        for r in feed_handler::capture::binaryfile::Records::new(&bytes) {
            books.apply(r.unwrap());
            n += 1;
        }
        counts.push(n);
        expected.push(books);
        let (packets, store) = replay::load(&file, PacketizerConfig::default()).unwrap();
        let mut srv = Exchange::server_at(SocketAddrV4::new(Ipv4Addr::LOCALHOST, server(k, v)));
        if gap_on == Some(v) {
            srv.off_file = Some(off.clone());
        }
        let ex = Arc::new(Exchange::start(store, Some(srv)).unwrap());
        let mut lines = default_lines();
        lines[0].dst = SocketAddrV4::new(group(k, v, 1), port(k, v, 0));
        lines[1].dst = SocketAddrV4::new(group(k, v, 2), port(k, v, 1));
        let lc = LinesConfig {
            lines,
            gaps: if gap_on == Some(v) {
                vec![(1_500, 30)]
            } else {
                vec![]
            },
            seed: 7 + v as u64,
            epoch_offset_ns: 0,
        };
        let e2 = ex.clone();
        let paused = pause == Some(v);
        let go = resume.clone();
        players.push(std::thread::spawn(move || {
            if paused {
                let half = packets.len() / 2;
                e2.play(&packets[..half], Pace::Rate(100_000), lc.clone())
                    .unwrap();
                while !go.load(Ordering::Relaxed) {
                    std::thread::park_timeout(Duration::from_millis(10));
                }
                e2.play(&packets[half..], Pace::Rate(100_000), lc).unwrap();
            } else {
                e2.play(&packets, Pace::Rate(100_000), lc).unwrap();
            }
        }));
        exchanges.push(ex);
    }
    let quotes = dir.join("quotes");
    let mut conf = Conflator::new(&ring, &quotes, 1024)
        .unwrap()
        .with_silence(Duration::from_millis(300));
    if let Some(v) = gap_on {
        // the venue rebuilds from its own server once that comes back
        conf = conf.with_channel_rebuild(
            v,
            book::rebuild::RebuildConfig {
                server: SocketAddrV4::new(Ipv4Addr::LOCALHOST, server(k, v)),
                session: feed_handler::moldudp64::Session::new("GEN0000001").unwrap(),
                request_timeout_ns: 20_000_000,
            },
        );
    }
    let mut left_out_seen = false;
    let mut gap_seen = false;
    let deadline = Instant::now() + Duration::from_secs(90);
    // every message arrives, or for the gapped venue its gap record in place of the range
    let want = counts.iter().map(|n| n + 1).sum::<u64>() - gap_on.map_or(0, |_| 30 - 1);
    while conf.records < want
        || gap_on.is_some() && (conf.rebuilds == 0 || conf.rebuilding())
        || pause.is_some() && conf.distrusted() != 0
    {
        assert!(
            Instant::now() < deadline,
            "the sessions did not arrive: {} records, {} gaps",
            conf.records,
            conf.gaps
        );
        if conf.do_work().unwrap() == 0 {
            // the line check runs every 100 ms of this loop
            std::thread::sleep(Duration::from_millis(1));
        }
        if let Some(v) = gap_on
            && !gap_seen
            && conf.gaps > 0
        {
            // lost for good (its server is down): out of every consolidated best price
            assert_left_out(&quotes, v);
            gap_seen = true;
            std::fs::remove_file(&off).unwrap(); // the server comes back: the venue rebuilds
        }
        if let Some(v) = pause
            && !left_out_seen
            && conf.distrusted() & 1 << v != 0
        {
            // silent: out of every consolidated best price, and the quotes say so
            assert_left_out(&quotes, v);
            left_out_seen = true;
            resume.store(true, Ordering::Relaxed);
        }
    }
    assert_eq!(left_out_seen, pause.is_some());
    assert_eq!(gap_seen, gap_on.is_some());
    assert_eq!(conf.distrusted(), 0, "every venue back");
    for p in players {
        p.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    feed.join().unwrap();
    drop(exchanges);
    (conf, expected, quotes, dir)
}

/// Every symbol of the table (all 40) leaves venue `v` out of its best prices and says so, and
/// none is stale while other venues remain.
fn assert_left_out(quotes: &std::path::Path, v: u16) {
    let r = QuoteReader::attach(quotes).unwrap();
    let mut n = 0;
    for i in 0..1024 {
        let Some(q) = r.read(i) else { break };
        let sym = q.symbol_str();
        assert!(q.untrusted & 1 << v != 0, "{sym} does not say so");
        assert!(
            q.bid.is_none() || q.bid_venue as u16 != v,
            "{sym}: a bid from venue {v}"
        );
        assert!(
            q.ask.is_none() || q.ask_venue as u16 != v,
            "{sym}: an offer from venue {v}"
        );
        assert!(!q.stale, "{sym}: other venues remain");
        n += 1;
    }
    assert_eq!(n, 40);
}

#[test]
fn three_venues_consolidate_to_the_reference() {
    let (conf, expected, quotes, dir) = run("all", 0, None);
    check_reference(&conf, &expected, &quotes);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Every symbol's consolidated quote equals the plain reference from the venues' own books.
fn check_reference(conf: &Conflator, expected: &[Books], quotes: &std::path::Path) {
    let r = QuoteReader::attach(quotes).unwrap();
    let mut checked = 0;
    for (_, x0) in expected[0].iter() {
        let Some(sym) = x0.symbol else { continue };
        let name = sym.to_string();
        // the plain reference: each venue's own instrument of this symbol
        let per: Vec<(u16, &book::books::Instrument)> = (0..VENUES)
            .filter_map(|v| {
                expected[v as usize]
                    .iter()
                    .find(|(_, x)| x.symbol == Some(sym))
                    .map(|(_, x)| (v, x))
            })
            .collect();
        let best = |side: fn(&book::books::Instrument) -> Option<(u32, u64)>, higher: bool| {
            per.iter()
                .filter_map(|(v, x)| side(x).map(|(p, q)| (p, q, *v)))
                .reduce(|a, b| {
                    let better = if higher { b.0 > a.0 } else { b.0 < a.0 };
                    if better || b.0 == a.0 && (b.1 > a.1 || b.1 == a.1 && b.2 < a.2) {
                        b
                    } else {
                        a
                    }
                })
        };
        let bid = best(|x| x.best_bid().map(|(p, l)| (p, l.shares)), true);
        let ask = best(|x| x.best_ask().map(|(p, l)| (p, l.shares)), false);
        let volume: u64 = per.iter().map(|(_, x)| x.volume).sum();
        let notional: u128 = per.iter().map(|(_, x)| x.notional_e4).sum();
        let vwap = (volume > 0).then(|| ((notional + volume as u128 / 2) / volume as u128) as u32);
        let last = per
            .iter()
            .filter(|(_, x)| x.last.is_some())
            .max_by_key(|(v, x)| (x.last_trade_ns, std::cmp::Reverse(*v)))
            .and_then(|(_, x)| x.last.map(|l| (l.px_e4, l.qty)));

        let slot = conf.consolidated_slot(&name).expect("a consolidated slot");
        let q = r.read(slot).unwrap();
        assert_eq!(q.bid, bid.map(|b| (b.0, b.1)), "{name} bid");
        assert_eq!(q.ask, ask.map(|a| (a.0, a.1)), "{name} ask");
        if let Some(b) = bid {
            assert_eq!(q.bid_venue as u16, b.2, "{name} bid venue");
        }
        if let Some(a) = ask {
            assert_eq!(q.ask_venue as u16, a.2, "{name} ask venue");
        }
        assert_eq!(q.volume, volume, "{name} volume");
        assert_eq!(q.vwap_e4, vwap, "{name} vwap");
        assert_eq!(q.last, last, "{name} last");
        assert!(!q.stale && q.untrusted == 0, "{name}");
        checked += 1;
    }
    assert_eq!(checked, 40);
    check_bars(expected, quotes);
}

/// The bar log holds each venue's closed bars once (folded as a reader folds it, revisions
/// after a rebuild included), under its venue, with the trade times that order the opens and
/// closes: every symbol's chart (the venues' bars merged) is the reference's, and it has bars
/// several venues made.
fn check_bars(expected: &[Books], quotes: &std::path::Path) {
    use book::barlog::{self, BarRecord};
    use std::collections::{HashMap, VecDeque};
    let log = barlog::read_all(&barlog::beside(quotes)).unwrap();
    let day = log.first().expect("bars were logged").day;
    assert_ne!(day, 0, "bars carry their trading day");
    let mut got: HashMap<([u8; 8], u8, u16), VecDeque<BarRecord>> = HashMap::new();
    for r in log {
        assert_eq!(r.day, day);
        let s = got.entry((r.symbol, r.interval_s, r.channel)).or_default();
        barlog::apply(s, r, usize::MAX);
    }
    let (mut charts, mut merged) = (0, 0);
    for (_, x0) in expected[0].iter() {
        let Some(sym) = x0.symbol else { continue };
        for interval_s in [1u8, 60] {
            // the reference: each venue's own closed bars
            let want: Vec<VecDeque<BarRecord>> = (0..VENUES)
                .filter_map(|v| {
                    let (_, x) = expected[v as usize]
                        .iter()
                        .find(|(_, x)| x.symbol == Some(sym))?;
                    let h = x.history.as_ref()?;
                    let s = if interval_s == 1 {
                        &h.seconds
                    } else {
                        &h.minutes
                    };
                    let bars: VecDeque<BarRecord> = s
                        .bars()
                        .take(s.closed_len())
                        .map(|&bar| BarRecord {
                            symbol: sym.0,
                            channel: v,
                            interval_s,
                            bar,
                            revision: false,
                            day,
                        })
                        .collect();
                    (!bars.is_empty()).then_some(bars)
                })
                .collect();
            let theirs: Vec<&VecDeque<BarRecord>> = (0..VENUES)
                .filter_map(|v| got.get(&(sym.0, interval_s, v)))
                .collect();
            assert_eq!(theirs.len(), want.len(), "{sym} {interval_s}s: venues");
            let want = barlog::consolidate(&want.iter().collect::<Vec<_>>(), usize::MAX);
            let chart = barlog::consolidate(&theirs, usize::MAX);
            assert_eq!(chart, want, "{sym} {interval_s}s");
            charts += !chart.is_empty() as usize;
            merged += chart
                .iter()
                .filter(|r| r.channel == barlog::ALL_VENUES)
                .count();
        }
    }
    assert!(
        charts > 0 && merged > 0,
        "{charts} charts, {merged} merged bars"
    );
}

/// A venue that lost data for good is left out of every consolidated best price at once (the
/// quotes say so, none goes stale while other venues remain: checked while it happens), is
/// rebuilt from its own re-request server when that comes back, and then every quote equals
/// the three-venue reference again.
#[test]
fn a_gapped_venue_leaves_the_consolidated_prices_until_rebuilt() {
    let (conf, expected, quotes, dir) = run("gap", 1, Some(2));
    assert!(conf.gaps > 0 && conf.rebuilds > 0);
    check_reference(&conf, &expected, &quotes);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A venue whose lines go silent leaves the consolidated prices, and comes back when they
/// speak again: at the end every quote equals the three-venue reference.
#[test]
fn a_silent_venue_leaves_and_comes_back() {
    let (conf, expected, quotes, dir) = run_with("silent", 2, None, Some(1));
    let r = QuoteReader::attach(&quotes).unwrap();
    for (_, x0) in expected[0].iter() {
        let Some(sym) = x0.symbol else { continue };
        let q = r
            .read(conf.consolidated_slot(&sym.to_string()).unwrap())
            .unwrap();
        assert_eq!(q.untrusted, 0, "{sym}");
        let bid = (0..3usize)
            .filter_map(|v| {
                expected[v]
                    .iter()
                    .find(|(_, x)| x.symbol == Some(sym))
                    .and_then(|(_, x)| x.best_bid().map(|(p, _)| p))
            })
            .max();
        assert_eq!(q.bid.map(|b| b.0), bid, "{sym}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The real captures of the three venues (Nasdaq, BX, PSX, 2023-08-22) decode and apply side by
/// side, one set of books per venue: every message is understood, no book breaks its
/// invariants, and their quotes consolidate (volume adds up over the venues).
#[test]
fn real_nasdaq_bx_and_psx_captures_apply_alongside() {
    let root =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/nasdaq-itch50-captures");
    if !root.is_dir() {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "captures missing in CI"
        );
        eprintln!("skipped: {} not found", root.display());
        return;
    }
    let venues = [
        "Nasdaq.Equities.TotalView.Itch.v5.0.20230822",
        "Bx.Equities.TotalView.Itch.v5.0.20230822",
        "Psx.Equities.TotalView.Itch.v5.0.20230822",
    ];
    let mut books: Vec<Books> = Vec::new();
    for v in venues {
        let mut b = Books::new();
        let mut files: Vec<PathBuf> = std::fs::read_dir(root.join(v))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        let mut messages = 0;
        for f in &files {
            let mut cap = feed_handler::capture::open(f).unwrap();
            while let Some(item) = cap.next_item().unwrap() {
                let feed_handler::capture::Item::Frame(rec) = item else {
                    continue;
                };
                let Some(udp) =
                    feed_handler::capture::net::udp_in_frame(rec.linktype, rec.data).unwrap()
                else {
                    continue;
                };
                let p = feed_handler::moldudp64::Packet::parse(udp.payload).unwrap();
                for (_, m) in p.messages() {
                    b.apply(m);
                    messages += 1;
                }
            }
        }
        assert!(messages >= 10, "{v}: {messages} messages");
        assert_eq!(b.counters.bad_messages, 0, "{v}: every message understood");
        b.validate().unwrap_or_else(|e| panic!("{v}: {e}"));
        books.push(b);
    }
    // every instrument any venue touched, consolidated by locate over the venues quoting it
    let mut locates: Vec<u16> = books
        .iter()
        .flat_map(|b| b.iter().map(|(l, _)| l))
        .collect();
    locates.sort();
    locates.dedup();
    let mut traded = 0;
    for l in locates {
        let views: Vec<book::consolidate::VenueQuote> = books
            .iter()
            .enumerate()
            .filter_map(|(ch, b)| {
                b.get(l)
                    .map(|x| book::consolidate::VenueQuote::of(ch as u16, x, x.stale))
            })
            .collect();
        let c = book::consolidate::consolidate(&views, |_| false);
        assert_eq!(c.volume, views.iter().map(|v| v.volume).sum::<u64>());
        if c.volume > 0 {
            traded += 1;
            assert!(c.vwap_e4.is_some() && c.last.is_some());
        }
    }
    assert!(traded > 0, "the trade captures print");
}
