//! Real Nasdaq bytes decode to the golden values of `../shared/design/itch.md` §4, every field.
//! The captures are read where they are (`../shared/data/nasdaq-itch50-captures/`).

mod common;

use common::{captures_dir, hex, packets};
use feed_handler::capture::{self, Item};
use feed_handler::itch::{self, Message};
use feed_handler::moldudp64::{Packet, PacketKind};
use feed_handler::report::{DecodeOptions, decode_file};

const DAY: &str = "Nasdaq.Equities.TotalView.Itch.v5.0.20230822";

/// Asserts the golden message is one of the real messages in `file`, then returns it parsed.
fn golden(file: &str, hexstr: &str) -> Vec<u8> {
    let bytes = hex(hexstr);
    if let Some(dir) = captures_dir() {
        let all: Vec<Vec<u8>> = packets(&dir.join(DAY).join(file))
            .into_iter()
            .flat_map(|p| p.messages.into_iter().map(|(_, m)| m))
            .collect();
        assert!(all.contains(&bytes), "golden vector not found in {file}");
        for m in &all {
            let parsed = itch::parse(m).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!(
                parsed.msg_type(),
                bytes[0],
                "{file} holds only its own type"
            );
        }
    }
    bytes
}

fn hdr(m: &Message<'_>) -> (u16, u16, u64) {
    let h = m.header();
    (
        h.stock_locate.get(),
        h.tracking_number.get(),
        h.timestamp_ns.get(),
    )
}

#[test]
fn system_event() {
    let b = golden("SystemEvent.pcap", "53000000001f1acedb02f051");
    let m = itch::parse(&b).unwrap();
    let Message::SystemEvent(s) = m else {
        panic!("{m:?}")
    };
    assert_eq!(hdr(&m), (0, 0, 34_200_000_070_384)); // 09:30:00.000070384
    assert_eq!(s.event_code, b'Q');
}

#[test]
fn add_order() {
    let b = golden(
        "AddOrderNoMPID.pcap",
        "41159800001f1aced85306000000000166b53e420000064049564f4f20202020000d55ac",
    );
    let m = itch::parse(&b).unwrap();
    let Message::AddOrder(a) = m else {
        panic!("{m:?}")
    };
    assert_eq!(hdr(&m), (5528, 0, 34_199_999_894_278));
    assert_eq!(a.order_ref.get(), 23_508_286);
    assert_eq!(a.side, b'B');
    assert_eq!(a.shares.get(), 1600);
    assert_eq!(a.stock.as_str(), Some("IVOO"));
    assert_eq!(a.price_e4.get(), 873_900);
}

#[test]
fn add_order_mpid() {
    let b = golden(
        "AddOrderWithMPID.pcap",
        "4606ca00001f1aced99936000000000120be75530000006443415359202020200026fd40464c5455",
    );
    let m = itch::parse(&b).unwrap();
    let Message::AddOrderMpid(a) = m else {
        panic!("{m:?}")
    };
    assert_eq!(hdr(&m), (1738, 0, 34_199_999_977_782));
    assert_eq!(a.order_ref.get(), 18_923_125);
    assert_eq!(a.side, b'S');
    assert_eq!(a.shares.get(), 100);
    assert_eq!(a.stock.as_str(), Some("CASY"));
    assert_eq!(a.price_e4.get(), 2_555_200);
    assert_eq!(a.attribution.as_str(), Some("FLTU"));
}

#[test]
fn order_executed() {
    let b = golden(
        "OrderExecuted.pcap",
        "45092900021f1aced8f061000000000166929a00000019000000000003e63b",
    );
    let m = itch::parse(&b).unwrap();
    let Message::OrderExecuted(e) = m else {
        panic!("{m:?}")
    };
    assert_eq!(hdr(&m), (2345, 2, 34_199_999_934_561));
    assert_eq!(e.order_ref.get(), 23_499_418);
    assert_eq!(e.executed_shares.get(), 25);
    assert_eq!(e.match_number.get(), 255_547);
}

#[test]
fn order_executed_with_price() {
    let b = golden(
        "OrderExecutedWithPrice.pcap",
        "4313e400011f1aceebb03b00000000013113de0000133e000000000003e65d4e00036e20",
    );
    let m = itch::parse(&b).unwrap();
    let Message::OrderExecutedWithPrice(c) = m else {
        panic!("{m:?}")
    };
    assert_eq!(hdr(&m), (5092, 1, 34_200_001_163_323));
    assert_eq!(c.order_ref.get(), 19_993_566);
    assert_eq!(c.executed_shares.get(), 4926);
    assert_eq!(c.match_number.get(), 255_581);
    assert_eq!(c.printable, b'N');
    assert_eq!(c.execution_price_e4.get(), 224_800);
}

#[test]
fn order_cancel() {
    let b = golden(
        "OrderCancel.pcap",
        "5824c500001f1acefe785d0000000002041a0000000064",
    );
    let m = itch::parse(&b).unwrap();
    let Message::OrderCancel(x) = m else {
        panic!("{m:?}")
    };
    assert_eq!(hdr(&m), (9413, 0, 34_200_002_394_205));
    assert_eq!(x.order_ref.get(), 33_823_232);
    assert_eq!(x.cancelled_shares.get(), 100);
}

#[test]
fn order_delete() {
    let b = golden("OrderDelete.pcap", "440d1900001f1aced840ed000000000165b51a");
    let m = itch::parse(&b).unwrap();
    let Message::OrderDelete(d) = m else {
        panic!("{m:?}")
    };
    assert_eq!(hdr(&m), (3353, 0, 34_199_999_889_645));
    assert_eq!(d.order_ref.get(), 23_442_714);
}

#[test]
fn order_replace() {
    let b = golden(
        "OrderReplace.pcap",
        "551db300001f1aced771e90000000000e6897f000000000145f2c700000064001036c8",
    );
    let m = itch::parse(&b).unwrap();
    let Message::OrderReplace(u) = m else {
        panic!("{m:?}")
    };
    assert_eq!(hdr(&m), (7603, 0, 34_199_999_836_649));
    assert_eq!(u.original_order_ref.get(), 15_108_479);
    assert_eq!(u.new_order_ref.get(), 21_361_351);
    assert_eq!(u.shares.get(), 100);
    assert_eq!(u.price_e4.get(), 1_062_600);
}

#[test]
fn trade_non_cross() {
    let b = golden(
        "NonCrossTrade.pcap",
        "50119300021f1acee462a900000000000000004200000064474f4f474c202020001399f8000000000003e642",
    );
    let m = itch::parse(&b).unwrap();
    let Message::Trade(p) = m else {
        panic!("{m:?}")
    };
    assert_eq!(hdr(&m), (4499, 2, 34_200_000_684_713));
    assert_eq!(p.order_ref.get(), 0);
    assert_eq!(p.side, b'B');
    assert_eq!(p.shares.get(), 100);
    assert_eq!(p.stock.as_str(), Some("GOOGL"));
    assert_eq!(p.price_e4.get(), 1_284_600);
    assert_eq!(p.match_number.get(), 255_554);
}

#[test]
fn cross_trade() {
    let b = golden(
        "CrossTrade.pcap",
        "5103d700011f1acee1500300000000000000004241432d5120202000000000000000000003e63e4f",
    );
    let m = itch::parse(&b).unwrap();
    let Message::CrossTrade(q) = m else {
        panic!("{m:?}")
    };
    assert_eq!(hdr(&m), (983, 1, 34_200_000_483_331));
    assert_eq!(q.shares.get(), 0);
    assert_eq!(q.stock.as_str(), Some("BAC-Q"));
    assert_eq!(q.cross_price_e4.get(), 0);
    assert_eq!(q.match_number.get(), 255_550);
    assert_eq!(q.cross_type, b'O');
}

#[test]
fn noii() {
    let b = golden(
        "NetOrderImbalanceIndicator.pcap",
        "491ead00001f1acedb43f1000000000000000000000000000000004f50465441572020200000000000000000000000004f20",
    );
    let m = itch::parse(&b).unwrap();
    let Message::Noii(i) = m else { panic!("{m:?}") };
    assert_eq!(hdr(&m), (7853, 0, 34_200_000_087_025));
    assert_eq!((i.paired_shares.get(), i.imbalance_shares.get()), (0, 0));
    assert_eq!(i.imbalance_direction, b'O');
    assert_eq!(i.stock.as_str(), Some("PFTAW"));
    assert_eq!(
        (
            i.far_price_e4.get(),
            i.near_price_e4.get(),
            i.current_reference_price_e4.get()
        ),
        (0, 0, 0)
    );
    assert_eq!(i.cross_type, b'O');
    assert_eq!(i.price_variation_indicator, b' ');
}

#[test]
fn stock_trading_action() {
    let b = golden(
        "StockTradingAction.pcap",
        "482c3d00001f1e7036e4655a585a5a5420202050204c554450",
    );
    let m = itch::parse(&b).unwrap();
    let Message::StockTradingAction(h) = m else {
        panic!("{m:?}")
    };
    assert_eq!(hdr(&m), (11325, 0, 34_215_592_125_541));
    assert_eq!(h.stock.as_str(), Some("ZXZZT"));
    assert_eq!(h.trading_state, b'P');
    assert_eq!(h.reserved, b' ');
    assert_eq!(h.reason.as_str(), Some("LUDP"));
}

#[test]
fn luld_auction_collar() {
    let b = golden(
        "LULDAuctionCollar.pcap",
        "4a2c3d00001f1e703b4f955a585a5a5420202000020918000223440001aa9000000000",
    );
    let m = itch::parse(&b).unwrap();
    let Message::LuldAuctionCollar(j) = m else {
        panic!("{m:?}")
    };
    assert_eq!(hdr(&m), (11325, 0, 34_215_592_415_125));
    assert_eq!(j.stock.as_str(), Some("ZXZZT"));
    assert_eq!(j.auction_collar_reference_price_e4.get(), 133_400);
    assert_eq!(j.upper_auction_collar_price_e4.get(), 140_100);
    assert_eq!(j.lower_auction_collar_price_e4.get(), 109_200);
    assert_eq!(j.auction_collar_extension.get(), 0);
}

#[test]
fn reg_sho_restriction() {
    let b = golden(
        "RegSHORestriction.pcap",
        "5924bd00001f1ad5cc18b7534f50412020202031",
    );
    let m = itch::parse(&b).unwrap();
    let Message::RegShoRestriction(y) = m else {
        panic!("{m:?}")
    };
    assert_eq!(hdr(&m), (9405, 0, 34_200_116_533_431));
    assert_eq!(y.stock.as_str(), Some("SOPA"));
    assert_eq!(y.reg_sho_action, b'1');
}

#[test]
fn market_participant_position() {
    let b = golden(
        "MarketParticipantPosition.pcap",
        "4c0e4000001f208142f8464d41584d46444c5320202020594e41",
    );
    let m = itch::parse(&b).unwrap();
    let Message::MarketParticipantPosition(l) = m else {
        panic!("{m:?}")
    };
    assert_eq!(hdr(&m), (3648, 0, 34_224_468_064_326));
    assert_eq!(l.mpid.as_str(), Some("MAXM"));
    assert_eq!(l.stock.as_str(), Some("FDLS"));
    assert_eq!(
        (
            l.primary_market_maker,
            l.market_maker_mode,
            l.market_participant_state
        ),
        (b'Y', b'N', b'A')
    );
}

#[test]
fn the_38_message_packet_decodes_completely() {
    let Some(dir) = captures_dir() else { return };
    let path = dir.join("Nasdaq.Equities.TotalView.Itch.v5.0/Multiple.Packets.pcap");
    let pk = packets(&path);
    assert_eq!(pk.len(), 2);
    assert_eq!(
        (pk[0].port, pk[0].sequence, pk[0].count),
        (26477, 14_764_496, 1)
    );
    assert_eq!(pk[0].messages[0].1[0], b'D');
    let p = &pk[1];
    assert_eq!(
        (p.sequence, p.count, p.messages.len()),
        (19_009_117, 38, 38)
    );
    let seqs: Vec<u64> = p.messages.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, (19_009_117..19_009_155).collect::<Vec<_>>());
    let (mut adds, mut mpid) = (0, 0);
    for (_, m) in &p.messages {
        let msg = itch::parse(m).unwrap();
        assert_eq!(
            msg.timestamp_ns(),
            ((9 * 60 + 30) * 60 + 38) * 1_000_000_000 + 952_381_153
        );
        match msg {
            Message::AddOrder(a) => {
                adds += 1;
                assert_eq!(a.stock.as_str(), Some("META"));
            }
            Message::AddOrderMpid(f) => {
                mpid += 1;
                assert_eq!(f.stock.as_str(), Some("META"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((adds, mpid), (36, 2));
    // The UDP payload is 1,472 bytes; its header bytes are the ones in itch.md.
    let mut cap = capture::open(&path).unwrap();
    let Some(Item::Frame(rec)) = cap.next_item().unwrap() else {
        panic!()
    };
    let d = capture::udp_in_frame(rec.linktype, rec.data)
        .unwrap()
        .unwrap();
    assert_eq!(
        d.payload[..20],
        hex("303030303130303539420000000000e149d00001")[..],
        "packet 1 header"
    );
    assert_eq!(
        Packet::parse(d.payload).unwrap().session().as_str(),
        Some("000010059B")
    );
    let Some(Item::Frame(rec)) = cap.next_item().unwrap() else {
        panic!()
    };
    assert_eq!(
        capture::udp_in_frame(rec.linktype, rec.data)
            .unwrap()
            .unwrap()
            .payload
            .len(),
        1472
    );
    // and the CLI's summary agrees
    let rep = decode_file(&path, &DecodeOptions::default()).unwrap();
    let j = rep.to_json();
    assert_eq!(j["packets"], 2);
    assert_eq!(j["messages"], 39);
    assert_eq!(j["by_type"]["A"], 36);
    assert_eq!(j["by_type"]["F"], 2);
    assert_eq!(j["by_type"]["D"], 1);
    assert_eq!(j["first_seq"], 14_764_496);
    assert_eq!(j["last_seq"], 19_009_154);
    assert_eq!(j["gaps"], 1);
    assert_eq!(j["errors"], 0);
}

#[test]
fn real_heartbeat() {
    let Some(dir) = captures_dir() else { return };
    let pk = packets(&dir.join("Ise.OrderComboFeed.v1.1/Heartbeat.pcap"));
    assert_eq!(pk.len(), 1);
    assert_eq!((pk[0].sequence, pk[0].count), (383_265, 0));
    let mut cap = capture::open(dir.join("Ise.OrderComboFeed.v1.1/Heartbeat.pcap")).unwrap();
    let Some(Item::Frame(rec)) = cap.next_item().unwrap() else {
        panic!()
    };
    let d = capture::udp_in_frame(rec.linktype, rec.data)
        .unwrap()
        .unwrap();
    let p = Packet::parse(d.payload).unwrap();
    assert_eq!(
        (p.kind(), p.session().as_str()),
        (PacketKind::Heartbeat, Some("000008367I"))
    );
}

#[test]
fn every_real_capture_decodes_without_errors() {
    let Some(dir) = captures_dir() else { return };
    let mut files = 0;
    let mut types = std::collections::BTreeSet::new();
    for venue in std::fs::read_dir(&dir).unwrap() {
        let venue = venue.unwrap().path();
        if !venue.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&venue).unwrap() {
            let f = f.unwrap().path();
            let rep = decode_file(&f, &DecodeOptions::default())
                .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            assert_eq!(rep.errors(), 0, "{}: {:?}", f.display(), rep.error_samples);
            assert!(rep.packets > 0);
            types.extend(rep.messages.iter().map(|(t, _)| t));
            files += 1;
        }
    }
    assert!(files >= 50, "{files} files");
    // Nasdaq, BX and PSX together cover 16 types.
    assert_eq!(
        types.iter().map(|&t| t as char).collect::<String>(),
        "ACDEFHIJLNPQSUXY"
    );
}

#[test]
fn the_binaryfile_prefix_of_a_real_day() {
    // The first 260 bytes of 01302019.NASDAQ_ITCH50 (itch.md §4): S 'O' then six R.
    let b = hex(concat!(
        "000c53000000000a0a60aadb934f",
        "002752000100000a4a4cee559941202020202020204e20000000644e435a20504e20314e000000004e",
        "002752000200000a4a4d062d2d41412020202020204e20000000644e435a20504e20314e000000014e",
        "002752000300000a4a4d07016f41414155202020205020000000644e514920504e203259000000014e",
        "002752000400000a4a4d07b0964141424120202020514e000000644e435120504e4e324e000000014e",
        "002752000500000a4a4d08856c41414320202020204e20000000644e435a20504e20324e000000004e",
        "002752000600000a4a4d09611041414452202020205020000000644e514920504e203259000000004e",
    ));
    assert_eq!(b.len(), 260);
    let msgs: Vec<&[u8]> = capture::binaryfile::Records::new(&b)
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(msgs.len(), 7);
    let Message::SystemEvent(s) = itch::parse(msgs[0]).unwrap() else {
        panic!()
    };
    assert_eq!(s.event_code, b'O');
    assert_eq!(
        s.header.timestamp_ns.get(),
        (3 * 3600 + 3 * 60 + 59) * 1_000_000_000 + 687_760_787
    );
    let syms = ["A", "AA", "AAAU", "AABA", "AAC", "AADR"];
    for (i, m) in msgs[1..].iter().enumerate() {
        let Message::StockDirectory(r) = itch::parse(m).unwrap() else {
            panic!()
        };
        assert_eq!(r.header.stock_locate.get() as usize, i + 1);
        assert_eq!(r.stock.as_str(), Some(syms[i]));
        assert_eq!(r.round_lot_size.get(), 100);
        assert_eq!(r.authenticity, b'P');
    }
    // The 8th record is cut after 6 bytes of its body: the reader says so.
    let mut cut = b.clone();
    cut.extend_from_slice(&hex("002752000700000a"));
    let last = capture::binaryfile::Records::new(&cut).last().unwrap();
    assert_eq!(last, Err(260));
    let dir = std::env::temp_dir().join(format!("fh-golden-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("01302019.NASDAQ_ITCH50");
    std::fs::write(&path, &cut).unwrap();
    let err = decode_file(&path, &DecodeOptions::default()).unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
    std::fs::write(&path, &b).unwrap();
    let rep = decode_file(&path, &DecodeOptions::default()).unwrap();
    assert_eq!(
        (rep.first_seq(), rep.last_seq(), rep.messages.total()),
        (Some(1), Some(7), 7)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
