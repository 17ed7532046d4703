//! Property tests: encode then decode is the identity, for every ITCH type, for MoldUDP64 packets
//! of random messages, for BinaryFILE streams and for SoupBinTCP packets; and fields land at the
//! offsets the specification's tables give.

use feed_handler::capture::binaryfile::{BinaryFileReader, BinaryFileWriter, Records};
use feed_handler::itch::{self, *};
use feed_handler::moldudp64::{Packet, PacketWriter, Session};
use feed_handler::soupbintcp::{self, SoupPacket};
use proptest::prelude::*;
use zerocopy::IntoBytes;

/// A message of any of the 23 types with random field bytes.
fn any_message() -> impl Strategy<Value = Vec<u8>> {
    (0..ALL_TYPES.len()).prop_flat_map(|i| {
        let t = ALL_TYPES[i];
        let len = expected_len(t).unwrap();
        proptest::collection::vec(any::<u8>(), len - 1).prop_map(move |mut body| {
            body.insert(0, t);
            body
        })
    })
}

fn be(bytes: &[u8], at: usize, width: usize) -> u64 {
    bytes[at..at + width]
        .iter()
        .fold(0, |a, &b| (a << 8) | b as u64)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn every_type_decodes_then_encodes_to_the_same_bytes(bytes in any_message()) {
        let m = itch::parse(&bytes).unwrap();
        prop_assert_eq!(m.msg_type(), bytes[0]);
        prop_assert_eq!(m.as_bytes(), &bytes[..]);
        // the header fields sit at the spec's offsets: locate 1..3, tracking 3..5, time 5..11
        prop_assert_eq!(m.stock_locate() as u64, be(&bytes, 1, 2));
        prop_assert_eq!(m.header().tracking_number.get() as u64, be(&bytes, 3, 2));
        prop_assert_eq!(m.timestamp_ns(), be(&bytes, 5, 6));
        // re-encoding a header from its values gives the same bytes
        let h = Header::new(m.msg_type(), m.stock_locate(), m.header().tracking_number.get(), m.timestamp_ns());
        prop_assert_eq!(h.as_bytes(), &bytes[..11]);
    }

    #[test]
    fn book_fields_land_at_spec_offsets(
        locate in any::<u16>(), ts in 0u64..(1 << 48), oref in any::<u64>(), nref in any::<u64>(),
        shares in any::<u32>(), px in any::<u32>(), matchno in any::<u64>(), big in any::<u64>(),
        side in prop::sample::select(b"BS".to_vec()), sym in "[A-Z]{1,8}",
    ) {
        let stock = Stock::new(&sym).unwrap();
        let mut out = Vec::new();
        let a = AddOrder { header: Header::new(b'A', locate, 0, ts), order_ref: oref.into(), side, shares: shares.into(), stock, price_e4: px.into() };
        encode(&a, &mut out);
        prop_assert_eq!((be(&out, 11, 8), out[19], be(&out, 20, 4), &out[24..32], be(&out, 32, 4)), (oref, side, shares as u64, &stock.0[..], px as u64));
        let Message::AddOrder(back) = itch::parse(&out).unwrap() else { panic!() };
        prop_assert_eq!(*back, a);

        out.clear();
        let c = OrderExecutedWithPrice { header: Header::new(b'C', locate, 1, ts), order_ref: oref.into(), executed_shares: shares.into(), match_number: matchno.into(), printable: b'Y', execution_price_e4: px.into() };
        encode(&c, &mut out);
        prop_assert_eq!((be(&out, 11, 8), be(&out, 19, 4), be(&out, 23, 8), out[31], be(&out, 32, 4)), (oref, shares as u64, matchno, b'Y', px as u64));
        prop_assert_eq!(itch::parse(&out).unwrap(), Message::OrderExecutedWithPrice(&c));

        out.clear();
        let u = OrderReplace { header: Header::new(b'U', locate, 2, ts), original_order_ref: oref.into(), new_order_ref: nref.into(), shares: shares.into(), price_e4: px.into() };
        encode(&u, &mut out);
        prop_assert_eq!((be(&out, 11, 8), be(&out, 19, 8), be(&out, 27, 4), be(&out, 31, 4)), (oref, nref, shares as u64, px as u64));
        prop_assert_eq!(itch::parse(&out).unwrap(), Message::OrderReplace(&u));

        out.clear();
        let q = CrossTrade { header: Header::new(b'Q', locate, 3, ts), shares: big.into(), stock, cross_price_e4: px.into(), match_number: matchno.into(), cross_type: b'C' };
        encode(&q, &mut out);
        prop_assert_eq!((be(&out, 11, 8), &out[19..27], be(&out, 27, 4), be(&out, 31, 8), out[39]), (big, &stock.0[..], px as u64, matchno, b'C'));
        prop_assert_eq!(itch::parse(&out).unwrap(), Message::CrossTrade(&q));

        out.clear();
        let p = Trade { header: Header::new(b'P', locate, 4, ts), order_ref: oref.into(), side, shares: shares.into(), stock, price_e4: px.into(), match_number: matchno.into() };
        encode(&p, &mut out);
        prop_assert_eq!((be(&out, 11, 8), out[19], be(&out, 20, 4), be(&out, 32, 4), be(&out, 36, 8)), (oref, side, shares as u64, px as u64, matchno));
        prop_assert_eq!(itch::parse(&out).unwrap(), Message::Trade(&p));

        out.clear();
        let i = Noii { header: Header::new(b'I', locate, 5, ts), paired_shares: big.into(), imbalance_shares: matchno.into(), imbalance_direction: b'B', stock, far_price_e4: px.into(), near_price_e4: shares.into(), current_reference_price_e4: 7.into(), cross_type: b'O', price_variation_indicator: b'L' };
        encode(&i, &mut out);
        prop_assert_eq!((be(&out, 11, 8), be(&out, 19, 8), out[27], be(&out, 36, 4), be(&out, 40, 4), be(&out, 44, 4), out[48], out[49]), (big, matchno, b'B', px as u64, shares as u64, 7, b'O', b'L'));
        prop_assert_eq!(itch::parse(&out).unwrap(), Message::Noii(&i));

        out.clear();
        let o = DirectListingCapitalRaise { header: Header::new(b'O', locate, 6, ts), stock, open_eligibility_status: b'Y', minimum_allowable_price_e4: px.into(), maximum_allowable_price_e4: shares.into(), near_execution_price_e4: 1.into(), near_execution_time_ns: big.into(), lower_price_range_collar_e4: 2.into(), upper_price_range_collar_e4: 3.into() };
        encode(&o, &mut out);
        prop_assert_eq!((out[19], be(&out, 20, 4), be(&out, 24, 4), be(&out, 28, 4), be(&out, 32, 8), be(&out, 40, 4), be(&out, 44, 4)), (b'Y', px as u64, shares as u64, 1, big, 2, 3));
        prop_assert_eq!(itch::parse(&out).unwrap(), Message::DirectListingCapitalRaise(&o));
    }

    #[test]
    fn moldudp64_packets_carry_random_messages(msgs in proptest::collection::vec(any_message(), 0..120), first in 1u64..1u64 << 40, max_payload in 72usize..1500) {
        let session = Session::new("PROP000001").unwrap();
        let mut w = PacketWriter::new(session, first, max_payload);
        let mut packets = Vec::new();
        for m in &msgs {
            if !w.push(m) {
                packets.push(w.finish().to_vec());
                w.next_packet();
                prop_assert!(w.push(m), "a lone message always fits");
            }
        }
        if !w.is_empty() {
            packets.push(w.finish().to_vec());
        }
        let mut got = Vec::new();
        let mut next = first;
        for p in &packets {
            prop_assert!(p.len() <= max_payload);
            let pk = Packet::parse(p).unwrap();
            prop_assert_eq!(pk.sequence(), next);
            prop_assert_eq!(pk.session(), &session);
            for (seq, m) in pk.messages() {
                prop_assert_eq!(seq, next);
                next += 1;
                got.push(itch::parse(m).unwrap().as_bytes().to_vec());
            }
        }
        prop_assert_eq!(got, msgs);
    }

    #[test]
    fn binaryfile_streams_round_trip(msgs in proptest::collection::vec(any_message(), 0..200)) {
        let mut w = BinaryFileWriter::new(Vec::new());
        for m in &msgs {
            w.write_message(m).unwrap();
        }
        let bytes = w.into_inner().unwrap();
        let walked: Vec<Vec<u8>> = Records::new(&bytes).map(|r| r.unwrap().to_vec()).collect();
        prop_assert_eq!(&walked, &msgs);
        let mut r = BinaryFileReader::new(&bytes[..]);
        let mut n = 0;
        while let Some((seq, m)) = r.next_message().unwrap() {
            n += 1;
            prop_assert_eq!(seq, n);
            prop_assert_eq!(m, &msgs[n as usize - 1][..]);
        }
        prop_assert_eq!(n as usize, msgs.len());
    }

    #[test]
    fn soupbintcp_sequenced_data_round_trips(msgs in proptest::collection::vec(any_message(), 1..50), seq in any::<u64>()) {
        let mut stream = Vec::new();
        let s = Session::new("SOUP000001").unwrap();
        let login = SoupPacket::LoginAccepted { session: s, sequence: seq };
        prop_assert!(soupbintcp::encode(&login, &mut stream));
        for m in &msgs {
            prop_assert!(soupbintcp::encode(&SoupPacket::SequencedData(m), &mut stream));
        }
        let mut rest = &stream[..];
        let (first, n) = soupbintcp::decode(rest).unwrap().unwrap();
        prop_assert_eq!(first, SoupPacket::LoginAccepted { session: s, sequence: seq });
        rest = &rest[n..];
        for m in &msgs {
            let (p, n) = soupbintcp::decode(rest).unwrap().unwrap();
            prop_assert_eq!(p, SoupPacket::SequencedData(m));
            rest = &rest[n..];
        }
        prop_assert!(rest.is_empty());
    }
}
