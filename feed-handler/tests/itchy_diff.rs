//! Differential decode against the `itchy` crate (an independent nom-based ITCH 5.0 parser) over a
//! generated session of every type it supports (all but `h` and `O`): every field equal.

use bench::fields;
use feed_handler::capture::binaryfile::Records;
use feed_handler::itch::{self, Message};
use itchy::MessageStream;
use pcap_replays::market::{Market, MarketConfig};
use pcap_replays::session::{MessageSource, Progress, to_binaryfile};

/// Both decoders' fields of one message, in the spec's order (see `bench::fields`).
fn compare(ours: &Message<'_>, theirs: &itchy::Message) {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    fields::ours(ours, &mut |v| a.push(v));
    fields::theirs(theirs, &mut |v| b.push(v));
    assert_eq!(a, b, "fields differ: ours {ours:?}, itchy {theirs:?}");
}

#[test]
fn every_field_equals_itchys() {
    let cfg = MarketConfig {
        seed: 99,
        symbols: 300,
        messages: 300_000,
        itchy_compatible: true,
        ..Default::default()
    };
    let mut market = Market::new(cfg);
    let src: &mut dyn MessageSource = &mut market;
    let (bytes, _) = to_binaryfile(src, Vec::new(), &mut Progress::new("test", false)).unwrap();
    let mut types = [0u64; 256];
    let mut n = 0;
    let theirs = MessageStream::from_reader(&bytes[..]);
    let mut ours = Records::new(&bytes);
    for t in theirs {
        let t = t.expect("itchy reads every generated message");
        let o = itch::parse(ours.next().expect("same count").unwrap()).unwrap();
        compare(&o, &t);
        types[o.msg_type() as usize] += 1;
        n += 1;
    }
    assert!(ours.next().is_none(), "same count");
    assert_eq!(n, 300_000);
    // every type itchy supports was compared
    for &t in b"SRHYLVWKJAFECXDUPQBIN" {
        assert!(types[t as usize] > 0, "type {} not covered", t as char);
    }
}
