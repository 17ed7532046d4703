//! The quote table end to end and across processes.

use book::books::Books;
use book::conflate::Conflator;
use book::quotes::{Quote, QuoteReader, QuoteWriter};
use feed_handler::agent::Agent;
use feed_handler::config::Config;
use pcap_replays::lines::{LineFaults, LinesConfig, default_lines};
use pcap_replays::market::{Market, MarketConfig};
use pcap_replays::packetize::PacketizerConfig;
use pcap_replays::replay::{self, Exchange, Pace};
use pcap_replays::session::{Progress, to_binaryfile};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A feed agent on its own thread for test `idx` (groups 239.203.idx.1/.2, ports 25000 +
/// 100 idx, re-request server 127.0.0.1:25500 + 100 idx), with `extra` channel settings.
fn start_feed(
    ring: &std::path::Path,
    idx: u16,
    extra: &str,
) -> (Arc<AtomicBool>, std::thread::JoinHandle<()>) {
    let cfg = format!(
        "ring = \"{}\"\nring_capacity = 65536\nidle = \"yield\"\n[[channel]]\nname = \"t\"\nsession = \"GEN0000001\"\nstart_seq = 1\n{extra}\n\
         line_a = {{ group = \"239.203.{idx}.1\", port = {} }}\nline_b = {{ group = \"239.203.{idx}.2\", port = {} }}\nrerequest = \"127.0.0.1:{}\"\n",
        ring.display(),
        25_000 + 100 * idx,
        25_001 + 100 * idx,
        25_500 + 100 * idx,
    );
    let mut agent = Agent::new(Config::parse(&cfg).unwrap()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    (stop, std::thread::spawn(move || agent.run(&s2).unwrap()))
}

/// The lines of test `idx`'s feed.
fn test_lines(idx: u16) -> Vec<pcap_replays::lines::LineSpec> {
    let mut lines = default_lines();
    lines[0].dst = SocketAddrV4::new(Ipv4Addr::new(239, 203, idx as u8, 1), 25_000 + 100 * idx);
    lines[1].dst = SocketAddrV4::new(Ipv4Addr::new(239, 203, idx as u8, 2), 25_001 + 100 * idx);
    lines
}

/// A generated session written as a BinaryFILE in `dir`, loaded for replay, and the books it
/// must end with.
fn session(
    dir: &std::path::Path,
    cfg: MarketConfig,
) -> (Vec<replay::ReplayPacket>, replay::MessageStore, Books) {
    let mut m = Market::new(cfg);
    let (bytes, _) = to_binaryfile(&mut m, Vec::new(), &mut Progress::new("t", false)).unwrap();
    let file = dir.join("s.itch");
    std::fs::write(&file, &bytes).unwrap();
    let mut expected = Books::new();
    for r in feed_handler::capture::binaryfile::Records::new(&bytes) {
        expected.apply(r.unwrap());
    }
    let (packets, store) = replay::load(&file, PacketizerConfig::default()).unwrap();
    (packets, store, expected)
}

/// Rebuilds from the re-request server at `addr`, the generator's session, 20 ms a request.
fn rebuild_from(addr: SocketAddrV4) -> book::rebuild::RebuildConfig {
    book::rebuild::RebuildConfig {
        server: addr,
        session: feed_handler::moldudp64::Session::new("GEN0000001").unwrap(),
        request_timeout_ns: 20_000_000,
    }
}

/// Every symbol of `expected` is published fresh in its channel-0 slot, with the best bid,
/// best ask and volume of `expected`; returns how many symbols that was.
fn fresh_and_right(r: &QuoteReader, conf: &Conflator, expected: &Books) -> usize {
    let mut seen = 0;
    for (_, x) in expected.iter() {
        let Some(sym) = x.symbol else { continue };
        let q = r.read(conf.slot(0, &sym.to_string()).unwrap()).unwrap();
        assert!(!q.stale, "{sym} stale");
        assert_eq!(
            (q.bid, q.ask, q.volume),
            (
                x.best_bid().map(|(p, l)| (p, l.shares)),
                x.best_ask().map(|(p, l)| (p, l.shares)),
                x.volume
            ),
            "{sym}"
        );
        seen += 1;
    }
    seen
}

/// Generated session → replayer (drops on both lines, server on) → feed agent → ring →
/// conflation → quote table: every symbol's quote equals books built straight from the
/// session's messages, and none is stale.
#[test]
fn replay_to_quote_table_matches_the_session() {
    let dir = std::env::temp_dir().join(format!("book-live-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ring = dir.join("ring");
    let (stop, h) = start_feed(&ring, 0, "");
    // 10,000 msg/s of exchange time: 3 seconds of trading, so 1-second bars close
    let (packets, store, expected) = session(
        &dir,
        MarketConfig {
            seed: 21,
            symbols: 100,
            messages: 30_000,
            rate_per_s: 10_000,
            ..Default::default()
        },
    );
    let exchange = Exchange::start(
        store,
        Some(Exchange::server_at(SocketAddrV4::new(
            Ipv4Addr::LOCALHOST,
            25_500,
        ))),
    )
    .unwrap();
    let mut lines = test_lines(0);
    lines[0].faults = LineFaults::parse("drop=0.05").unwrap();
    lines[1].faults = LineFaults::parse("drop=0.05").unwrap();

    // the conflation thread starts while the replay runs
    let quotes = dir.join("quotes");
    let mut conf = Conflator::new(&ring, &quotes, 1024).unwrap();
    let lc = LinesConfig {
        lines,
        gaps: vec![],
        seed: 3,
        epoch_offset_ns: 0,
    };
    let exchange = Arc::new(exchange);
    let ex = exchange.clone();
    let player = std::thread::spawn(move || {
        ex.play(&packets, Pace::Rate(300_000), lc).unwrap();
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while conf.records < 30_001 {
        assert!(
            Instant::now() < deadline,
            "the session did not arrive: {} records",
            conf.records
        );
        if conf.do_work().unwrap() == 0 {
            std::thread::yield_now();
        }
    }
    player.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    h.join().unwrap();
    drop(exchange);

    let r = QuoteReader::attach(&quotes).unwrap();
    let mut seen = 0;
    for (locate, x) in expected.iter() {
        let Some(sym) = x.symbol else { continue };
        let slot = conf
            .slot(0, &sym.to_string())
            .expect("every symbol has a slot");
        let q = r.read(slot).unwrap();
        assert_eq!(q.locate, locate);
        assert_eq!(q.bid, x.best_bid().map(|(p, l)| (p, l.shares)), "{sym} bid");
        assert_eq!(q.ask, x.best_ask().map(|(p, l)| (p, l.shares)), "{sym} ask");
        assert_eq!(q.last, x.last.map(|l| (l.px_e4, l.qty)), "{sym} last");
        assert_eq!(
            (q.volume, q.state, q.stale),
            (x.volume, x.state, false),
            "{sym}"
        );
        assert!(q.feed_seq > 0 && q.recv_ns > 0);
        seen += 1;
    }
    assert_eq!(seen, 100);
    // every closed 1-second bar is in the bar log, as the books computed it
    let mut log_path = quotes.as_os_str().to_owned();
    log_path.push(".bars");
    let logged = book::barlog::read_all(std::path::Path::new(&log_path)).unwrap();
    let mut closed = 0;
    for (_, x) in expected.iter() {
        let (Some(sym), Some(h)) = (x.symbol, x.history.as_ref()) else {
            continue;
        };
        // the closed ones: by a trade that began the next, or by the clock past their end
        let want: Vec<_> = h
            .seconds
            .bars()
            .take(h.seconds.closed_len())
            .copied()
            .collect();
        let got: Vec<_> = logged
            .iter()
            .filter(|r| r.symbol == sym.0 && r.interval_s == 1)
            .map(|r| r.bar)
            .collect();
        assert_eq!(got, want, "{sym} 1-second bars");
        // every bar the session's last message is past the end of is closed
        let newest = h.seconds.bars().next_back().unwrap();
        assert_eq!(
            h.seconds.is_open(),
            newest.start_ns + 1_000_000_000 > expected.clock_ns(),
            "{sym}"
        );
        closed += want.len();
    }
    assert!(closed > 50, "{closed} closed bars");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn checksum(q: &Quote) -> u64 {
    // every field but `updates` folds into `updates`
    [
        q.bid.map_or(0, |b| b.0 as u64 ^ b.1),
        q.ask.map_or(0, |a| a.0 as u64 ^ a.1),
        q.volume,
        q.exch_ts_ns,
        q.recv_ns,
        q.feed_seq,
    ]
    .iter()
    .fold(0xcbf2_9ce4_8422_2325u64, |h, v| {
        (h ^ v).wrapping_mul(0x100_0000_01b3)
    })
}

/// A writer publishes checksummed quotes as fast as it can; a reader in another process reads
/// them concurrently and never sees a torn one.
#[test]
fn readers_in_other_processes_never_see_a_torn_quote() {
    let path = std::env::temp_dir().join(format!(
        "book-torn-{}",
        std::env::var("TORN_ID").unwrap_or_else(|_| std::process::id().to_string())
    ));
    if std::env::var("TORN_ROLE").as_deref() == Ok("reader") {
        let r = QuoteReader::attach(&path).unwrap();
        let mut checked = 0u64;
        let deadline = Instant::now() + Duration::from_secs(30);
        while checked < 2_000_000 && Instant::now() < deadline {
            for i in 0..r.slots() {
                if let Some(q) = r.read(i) {
                    assert_eq!(q.updates, checksum(&q), "torn quote in slot {i}");
                    checked += 1;
                }
            }
        }
        println!("checked {checked}");
        return;
    }
    let mut w = QuoteWriter::create(&path, 8, 64).unwrap();
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "readers_in_other_processes_never_see_a_torn_quote",
            "--nocapture",
        ])
        .env("TORN_ROLE", "reader")
        .env("TORN_ID", std::process::id().to_string())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut i = 0u64;
    let mut child = child;
    while child.try_wait().unwrap().is_none() {
        i += 1;
        let mut q = Quote {
            symbol: *b"TEST    ",
            bid: Some((i as u32, i * 3)),
            ask: Some((i as u32 + 1, i * 5)),
            volume: i * 7,
            exch_ts_ns: i * 11,
            recv_ns: i * 13,
            feed_seq: i,
            ..Default::default()
        };
        q.updates = checksum(&q);
        w.publish((i % 8) as usize, &q);
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("checked"), "{text}");
    let _ = std::fs::remove_file(&path);
}

/// A range lost on both lines while the re-request server is down: the feed handler publishes a
/// gap, every quote turns stale at once; when the server answers again the conflation thread
/// rebuilds the session from sequence 1, stale clears, and every quote equals a clean replay's.
#[test]
fn an_unrecovered_gap_marks_stale_then_a_full_rerequest_rebuilds() {
    let dir = std::env::temp_dir().join(format!("book-rebuild-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ring = dir.join("ring");
    let off = dir.join("server-off");
    std::fs::write(&off, b"").unwrap();
    let (stop, h) = start_feed(&ring, 1, "request_timeout_ms = 20");
    let (packets, store, expected) = session(
        &dir,
        MarketConfig {
            seed: 22,
            symbols: 80,
            messages: 20_000,
            rate_per_s: 2_000,
            ..Default::default()
        },
    );
    let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 25_600);
    let mut server = Exchange::server_at(addr);
    server.off_file = Some(off.clone());
    let exchange = Arc::new(Exchange::start(store, Some(server)).unwrap());
    let lines = test_lines(1);
    let lc = LinesConfig {
        lines,
        gaps: vec![(10_000, 40)],
        seed: 4,
        epoch_offset_ns: 0,
    };
    let quotes = dir.join("quotes");
    let rebuild = rebuild_from(addr);
    let mut conf = Conflator::new(&ring, &quotes, 1024)
        .unwrap()
        .with_rebuild(rebuild);
    let ex = exchange.clone();
    let player = std::thread::spawn(move || {
        ex.play(&packets, Pace::Rate(300_000), lc).unwrap();
    });
    let r = QuoteReader::attach(&quotes).unwrap();
    let mut saw_stale = false;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(conf.end_of_session > 0 && conf.rebuilds > 0 && !conf.rebuilding()) {
        assert!(
            Instant::now() < deadline,
            "no rebuild: gaps {} rebuilds {} records {}",
            conf.gaps,
            conf.rebuilds,
            conf.records
        );
        if conf.do_work().unwrap() == 0 {
            std::thread::yield_now();
        }
        if conf.gaps > 0 && !saw_stale {
            // every published quote is stale at once, and stays so while the server is down
            let slots: Vec<usize> = (0..80).filter_map(|i| r.read(i).map(|_| i)).collect();
            assert!(!slots.is_empty());
            assert!(
                slots.iter().all(|&i| r.read(i).unwrap().stale),
                "a quote shown fresh after the gap"
            );
            saw_stale = true;
            assert_eq!(conf.rebuilds, 0);
            std::fs::remove_file(&off).unwrap(); // the server comes back
        }
    }
    assert!(saw_stale);
    player.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    h.join().unwrap();
    drop(exchange);
    let mut seen = 0;
    for (_, x) in expected.iter() {
        let Some(sym) = x.symbol else { continue };
        let q = r.read(conf.slot(0, &sym.to_string()).unwrap()).unwrap();
        assert!(!q.stale, "{sym} still stale after the rebuild");
        assert_eq!(q.bid, x.best_bid().map(|(p, l)| (p, l.shares)), "{sym} bid");
        assert_eq!(q.ask, x.best_ask().map(|(p, l)| (p, l.shares)), "{sym} ask");
        assert_eq!(
            (q.last, q.volume),
            (x.last.map(|l| (l.px_e4, l.qty)), x.volume),
            "{sym}"
        );
        seen += 1;
    }
    assert_eq!(seen, 80);
    // the charts: the bars a reader folds from the log are a clean replay's, each once; the
    // rebuild logged only what the log lacked or had wrong (before, it logged the day again)
    let mut clean = Books::new();
    clean.collect_closed_bars(true);
    for m in
        feed_handler::capture::binaryfile::Records::new(&std::fs::read(dir.join("s.itch")).unwrap())
    {
        clean.apply(m.unwrap());
    }
    let mut want: std::collections::HashMap<([u8; 8], u8), Vec<book::bars::Bar>> =
        Default::default();
    let mut closed = Vec::new();
    clean.take_closed_bars(&mut closed);
    for c in &closed {
        let sym = clean.get(c.locate).unwrap().symbol.unwrap().0;
        want.entry((sym, c.interval_s)).or_default().push(c.bar);
    }
    let logged = book::barlog::read_all(&book::barlog::beside(&quotes)).unwrap();
    let mut folded: std::collections::HashMap<_, std::collections::VecDeque<_>> =
        Default::default();
    for r in &logged {
        book::barlog::apply(
            folded.entry((r.symbol, r.interval_s)).or_default(),
            *r,
            1 << 20,
        );
    }
    let got: std::collections::HashMap<_, Vec<book::bars::Bar>> = folded
        .into_iter()
        .map(|(k, v)| (k, v.into_iter().map(|r| r.bar).collect()))
        .collect();
    let bars = want.values().map(Vec::len).sum::<usize>();
    assert!(bars > 200, "bars to compare: {bars}");
    let wrong: Vec<_> = want
        .iter()
        .filter(|(k, w)| got.get(*k) != Some(*w))
        .map(|(k, w)| {
            (
                String::from_utf8_lossy(&k.0).to_string(),
                k.1,
                w.len(),
                got.get(k).map(Vec::len),
            )
        })
        .collect();
    assert!(
        wrong.is_empty() && got.len() == want.len(),
        "{} of {} series differ from a clean replay's (symbol, interval, bars, folded): {:?}",
        wrong.len(),
        want.len(),
        &wrong[..wrong.len().min(5)]
    );
    // the rebuild logged only what the log lacked or had wrong, not the day again: each bar
    // once, plus each correction
    assert!(
        logged.len() as u64 <= bars as u64 + conf.bars_revised,
        "logged {} records for {bars} bars ({} known, {} revised)",
        logged.len(),
        conf.bars_known,
        conf.bars_revised
    );
    assert!(conf.bars_known > 100, "known: {}", conf.bars_known);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A conflation thread lapped by the ring publishes its quotes stale at once, catches up from
/// the journal, and publishes them fresh (and right) again.
#[test]
fn a_lapped_conflation_thread_says_stale_until_the_journal_catches_it_up() {
    use feed_handler::journal::{JournalWriter, journal_path};
    use feed_handler::ring::{Record, RingWriter};
    let dir = std::env::temp_dir().join(format!("book-lapped-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ring = dir.join("ring");
    let mut w = RingWriter::create(&ring, 1024).unwrap();
    let mut j = JournalWriter::create(&journal_path(&ring), w.generation()).unwrap();
    let mut m = Market::new(MarketConfig {
        seed: 23,
        symbols: 50,
        messages: 30_000,
        ..Default::default()
    });
    let mut expected = Books::new();
    let mut seq = 0u64;
    let mut publish = |w: &mut RingWriter, j: &mut JournalWriter, msg: &[u8]| {
        seq += 1;
        let rec = Record::message(0, seq, 0, seq, msg).unwrap();
        let p = w.publish(&rec);
        j.append(p, &rec).unwrap();
        let n = j.flush().unwrap();
        w.set_journal_end(n);
    };
    let quotes = dir.join("quotes");
    let mut conf = Conflator::new(&ring, &quotes, 256).unwrap();
    let r = QuoteReader::attach(&quotes).unwrap();
    // 5,000 messages read as they come
    for _ in 0..5_000 {
        let msg = m.next_message().unwrap().to_vec();
        expected.apply(&msg);
        publish(&mut w, &mut j, &msg);
        conf.do_work().unwrap();
    }
    assert!(conf.caught_up());
    assert!((0..50).filter_map(|i| r.read(i)).all(|q| !q.stale));
    // then 10,000 while it does not read: the 1,024-slot ring laps it
    for _ in 0..10_000 {
        let msg = m.next_message().unwrap().to_vec();
        expected.apply(&msg);
        publish(&mut w, &mut j, &msg);
    }
    conf.do_work().unwrap();
    let published: Vec<_> = (0..50).filter_map(|i| r.read(i)).collect();
    assert!(!published.is_empty());
    assert!(
        published.iter().all(|q| q.stale),
        "lapped: every quote stale at once"
    );
    while conf.do_work().unwrap() > 0 {}
    assert!(conf.caught_up());
    fresh_and_right(&r, &conf, &expected);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A conflation thread lapped by a ring with no journal behind it (the feed handler keeps
/// none, or its journal stopped when full) is told which records it lost instead of waiting
/// for them for ever: its quotes turn stale at once, the channel is rebuilt from the
/// re-request server as after a gap, and every quote is fresh and right again.
#[test]
fn a_lapped_conflation_thread_without_a_journal_rebuilds_what_it_lost() {
    use feed_handler::ring::{JournalState, Record, RingWriter};
    let dir = std::env::temp_dir().join(format!("book-lost-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ring = dir.join("ring");
    let mut w = RingWriter::create(&ring, 1024).unwrap();
    w.set_journal_state(JournalState::Off);
    let (_, store, expected) = session(
        &dir,
        MarketConfig {
            seed: 24,
            symbols: 50,
            messages: 15_000,
            ..Default::default()
        },
    );
    let msgs: Vec<Vec<u8>> = feed_handler::capture::binaryfile::Records::new(
        &std::fs::read(dir.join("s.itch")).unwrap(),
    )
    .map(|m| m.unwrap().to_vec())
    .collect();
    // the exchange's re-request server, with the whole session sent
    let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 25_650);
    let sock = std::net::UdpSocket::bind(addr).unwrap();
    let sent = Arc::new(std::sync::atomic::AtomicU64::new(store.len() + 1));
    let server_stop = Arc::new(AtomicBool::new(false));
    let server = {
        let (store, stop) = (Arc::new(store), server_stop.clone());
        let stats = Arc::new(replay::ServerStats::default());
        std::thread::spawn(move || {
            replay::serve_rerequests(sock, Exchange::server_at(addr), store, sent, stop, stats)
        })
    };
    let quotes = dir.join("quotes");
    let mut conf = Conflator::new(&ring, &quotes, 256)
        .unwrap()
        .with_rebuild(rebuild_from(addr));
    let r = QuoteReader::attach(&quotes).unwrap();
    let publish = |w: &mut RingWriter, i: usize| {
        let seq = i as u64 + 1;
        w.publish(&Record::message(0, seq, 0, seq, &msgs[i]).unwrap());
    };
    // 5,000 messages read as they come
    for i in 0..5_000 {
        publish(&mut w, i);
        conf.do_work().unwrap();
    }
    assert!(conf.caught_up());
    assert!((0..50).filter_map(|i| r.read(i)).all(|q| !q.stale));
    // the rest while it does not read: the 1,024-slot ring laps it, and nothing holds what
    // it dropped
    for i in 5_000..msgs.len() {
        publish(&mut w, i);
    }
    conf.do_work().unwrap();
    let lost = msgs.len() as u64 - 5_000 - 512;
    assert_eq!(conf.lost_records, lost);
    let said = conf.lost_said.take().unwrap();
    assert!(
        said.contains(&format!("records 5000..{} are lost", 5_000 + lost))
            && said.contains("keeps no journal"),
        "{said}"
    );
    let published: Vec<_> = (0..50).filter_map(|i| r.read(i)).collect();
    assert!(
        published.iter().all(|q| q.stale),
        "every quote stale at once"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while conf.rebuilds == 0 || conf.rebuilding() {
        assert!(Instant::now() < deadline, "no rebuild within 60 s");
        if conf.do_work().unwrap() == 0 {
            std::thread::yield_now();
        }
    }
    assert!(conf.caught_up());
    assert_eq!(fresh_and_right(&r, &conf, &expected), 50);
    // a book started now, after the ring dropped the session's start: never a partial book
    // shown fresh; stale, then rebuilt and right
    let late_quotes = dir.join("late-quotes");
    let mut late = Conflator::new(&ring, &late_quotes, 256)
        .unwrap()
        .with_rebuild(rebuild_from(addr));
    let lr = QuoteReader::attach(&late_quotes).unwrap();
    late.do_work().unwrap();
    assert!(late.lost_said.take().unwrap().contains("records 0.."));
    assert!(late.rebuilding());
    while late.do_work().unwrap() > 0 {}
    // (the symbols' directory messages were among the records lost: whatever the ring's
    // last records name is stale)
    assert!(
        (0..50).filter_map(|i| lr.read(i)).all(|q| q.stale),
        "a book built from the ring's last records alone is shown stale"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while late.rebuilds == 0 || late.rebuilding() {
        assert!(Instant::now() < deadline, "no rebuild within 60 s");
        if late.do_work().unwrap() == 0 {
            std::thread::yield_now();
        }
    }
    assert_eq!(fresh_and_right(&lr, &late, &expected), 50);
    server_stop.store(true, Ordering::Relaxed);
    server.join().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The feed handler started again replaces its ring and journal at the same path and
/// publishes its session again from the start. The book used to follow the old ring for ever
/// (every quote stale, `/healthz` 503, until the book too was restarted); it now sees the new
/// ring and follows it as a book started anew would, and its quotes are right again.
#[test]
fn a_book_follows_the_feed_handler_started_again() {
    use feed_handler::journal::{JournalWriter, journal_path};
    use feed_handler::ring::{Record, RingWriter};
    let dir = std::env::temp_dir().join(format!("book-restarted-feed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ring = dir.join("ring");
    let mut m = Market::new(MarketConfig {
        seed: 25,
        symbols: 50,
        messages: 6_000,
        ..Default::default()
    });
    let mut msgs = Vec::new();
    let mut expected = Books::new();
    while let Some(msg) = m.next_message() {
        expected.apply(msg);
        msgs.push(msg.to_vec());
    }
    let publish = |w: &mut RingWriter, j: &mut JournalWriter, i: usize| {
        let seq = i as u64 + 1;
        let rec = Record::message(0, seq, 0, seq, &msgs[i]).unwrap();
        let p = w.publish(&rec);
        j.append(p, &rec).unwrap();
        w.set_journal_end(j.flush().unwrap());
    };
    let mut w = RingWriter::create(&ring, 1024).unwrap();
    let mut j = JournalWriter::create(&journal_path(&ring), w.generation()).unwrap();
    let quotes = dir.join("quotes");
    let mut conf = Conflator::new(&ring, &quotes, 256).unwrap();
    for i in 0..3_000 {
        publish(&mut w, &mut j, i);
        conf.do_work().unwrap();
    }
    assert!(!conf.ring_replaced());
    // the feed handler dies and starts again: a new ring and journal, from sequence 1
    drop((w, j));
    let mut w = RingWriter::create(&ring, 1024).unwrap();
    let mut j = JournalWriter::create(&journal_path(&ring), w.generation()).unwrap();
    assert!(conf.ring_replaced());
    let mut conf = conf.reattach().unwrap();
    assert!(!conf.ring_replaced());
    for i in 0..msgs.len() {
        publish(&mut w, &mut j, i);
    }
    while conf.do_work().unwrap() > 0 {}
    assert!(conf.caught_up());
    let r = QuoteReader::attach(&quotes).unwrap();
    // each message once: not the old ring's and the new one's
    assert_eq!(fresh_and_right(&r, &conf, &expected), 50);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// With nothing to read, the conflation thread sleeps on the ring's doorbell (not a fixed
/// sleep), and the feed handler's next batch wakes it.
#[test]
fn an_idle_conflation_thread_sleeps_on_the_ring_until_the_writer_publishes() {
    use feed_handler::ring::{Record, RingReader, RingWriter};
    let dir = std::env::temp_dir().join(format!("book-idle-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ring = dir.join("ring");
    let mut w = RingWriter::create(&ring, 1024).unwrap();
    let mut conf = Conflator::new(&ring, &dir.join("quotes"), 16).unwrap();
    assert!(conf.has_doorbell());
    assert_eq!(conf.do_work().unwrap(), 0);
    let watch = RingReader::attach(&ring).unwrap();
    // each idle sleeps at most IDLE_WAIT_NS, so it idles until the record lands (were it to
    // idle once, this thread could miss its one sleep on a busy machine and wait forever)
    let sleeper = std::thread::spawn(move || {
        loop {
            conf.idle();
            let n = conf.do_work().unwrap();
            if n > 0 {
                return n;
            }
        }
    });
    while watch.sleepers() == 0 {
        std::hint::spin_loop();
    }
    w.publish(&Record::end_of_session(0, 1, 1));
    w.wake_readers();
    assert_eq!(sleeper.join().unwrap(), 1, "the record that woke it");
    assert_eq!(watch.sleepers(), 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A book restarted on the same ring goes on with the bar log it wrote: the records and the
/// log's identity stay (so `gateway publish` goes on where Redis stands), and the bars its
/// catch-up closes again are not logged again. Before, a restart began a new log and made the
/// whole day again, which the publisher took for new bars.
#[test]
fn a_restarted_book_goes_on_with_its_bar_log() {
    use feed_handler::journal::{JournalWriter, journal_path};
    use feed_handler::ring::{Record, RingWriter};
    let dir = std::env::temp_dir().join(format!("book-restart-bars-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ring = dir.join("ring");
    let mut w = RingWriter::create(&ring, 1 << 16).unwrap();
    let mut j = JournalWriter::create(&journal_path(&ring), w.generation()).unwrap();
    let mut m = Market::new(MarketConfig {
        seed: 24,
        symbols: 50,
        messages: 30_000,
        rate_per_s: 2_000,
        ..Default::default()
    });
    let mut clean = Books::new();
    clean.collect_closed_bars(true);
    let mut seq = 0u64;
    let mut publish = |n: usize, clean: &mut Books| {
        for _ in 0..n {
            let msg = m.next_message().unwrap().to_vec();
            clean.apply(&msg);
            seq += 1;
            let rec = Record::message(0, seq, 0, seq, &msg).unwrap();
            let p = w.publish(&rec);
            j.append(p, &rec).unwrap();
            let e = j.flush().unwrap();
            w.set_journal_end(e);
        }
    };
    let quotes = dir.join("quotes");
    let log = book::barlog::beside(&quotes);
    let identity = || {
        let b = std::fs::read(&log).unwrap();
        book::barlog::created_ns(&b[..book::barlog::HEADER])
    };
    publish(12_000, &mut clean);
    let mut conf = Conflator::new(&ring, &quotes, 256).unwrap();
    while conf.do_work().unwrap() > 0 {}
    let before = book::barlog::read_all(&log).unwrap();
    assert!(before.len() > 50, "bars to go on from: {}", before.len());
    let id = identity();
    // the book stops; the feed goes on; a new book starts on the same ring
    drop(conf);
    publish(12_000, &mut clean);
    let mut conf = Conflator::new(&ring, &quotes, 256).unwrap();
    while conf.do_work().unwrap() > 0 {}
    assert!(conf.caught_up());
    assert_eq!(identity(), id, "the same log, gone on with");
    let after = book::barlog::read_all(&log).unwrap();
    assert_eq!(after[..before.len()], before[..], "what it held stays");
    assert!(
        conf.bars_known as usize >= before.len() * 9 / 10,
        "{}",
        conf.bars_known
    );
    // each bar once, and the day's bars are a clean replay's
    let mut want = std::collections::BTreeMap::<_, Vec<book::bars::Bar>>::new();
    let mut closed = Vec::new();
    clean.take_closed_bars(&mut closed);
    for c in &closed {
        let sym = clean.get(c.locate).unwrap().symbol.unwrap().0;
        want.entry((sym, c.interval_s)).or_default().push(c.bar);
    }
    let mut got = std::collections::BTreeMap::<_, Vec<book::bars::Bar>>::new();
    for r in &after {
        assert!(!r.revision);
        got.entry((r.symbol, r.interval_s)).or_default().push(r.bar);
    }
    assert_eq!(got.len(), want.len());
    for (k, w) in &want {
        assert_eq!(got.get(k), Some(w), "{}", String::from_utf8_lossy(&k.0));
    }
    // a new ring (the feed handler restarted) begins a new log
    drop(conf);
    drop(w);
    let _w2 = RingWriter::create(&ring, 1 << 16).unwrap();
    let _conf = Conflator::new(&ring, &quotes, 256).unwrap();
    assert_ne!(identity(), id, "a new ring's bars in a new log");
    assert!(book::barlog::read_all(&log).unwrap().is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}
