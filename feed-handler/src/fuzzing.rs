//! The bodies of the `cargo fuzz` targets (`feed-handler/fuzz/`). Each takes arbitrary bytes
//! and must neither panic nor loop; each checks what it can about the result. The tests run
//! them over the committed seeds and over mutations of them, so the targets cannot rot.

use crate::capture::{self, Source};
use crate::itch;
use crate::moldudp64::{Packet, Request};
use crate::soupbintcp;
use zerocopy::IntoBytes;

/// One ITCH message: a good parse re-encodes to the same bytes.
pub fn itch_message(data: &[u8]) {
    if let Ok(m) = itch::parse(data) {
        assert_eq!(m.as_bytes(), data);
        assert_eq!(itch::expected_len(m.msg_type()), Some(data.len()));
    }
}

/// One MoldUDP64 packet: a good parse accounts for every byte; every message inside is parsed.
pub fn mold_packet(data: &[u8]) {
    if let Ok(p) = Packet::parse(data) {
        let mut bytes = 20usize;
        let mut n = 0u64;
        for (seq, msg) in p.messages() {
            assert_eq!(seq, p.sequence() + n);
            bytes += 2 + msg.len();
            n += 1;
            itch_message(msg);
        }
        assert_eq!(n, p.message_count() as u64);
        assert_eq!(bytes, data.len());
        assert_eq!(p.header().as_bytes(), &data[..20]);
    }
    if let Ok(r) = Request::parse(data) {
        assert_eq!(&r.to_bytes()[..], data);
    }
}

fn drain(data: &[u8]) {
    let src = Source(Box::new(std::io::Cursor::new(data.to_vec())));
    if let Ok(mut cap) = capture::from_reader(src) {
        let mut n = 0;
        while let Ok(Some(item)) = cap.next_item() {
            if let capture::Item::Frame(rec) = item
                && let Ok(Some(d)) = capture::udp_in_frame(rec.linktype, rec.data)
            {
                mold_packet(d.payload);
            }
            n += 1;
            if n > 100_000 {
                break;
            }
        }
    }
}

/// A pcap file: read every record and every datagram in it.
pub fn pcap_file(data: &[u8]) {
    drain(data)
}

/// A pcapng file: read every block.
pub fn pcapng_file(data: &[u8]) {
    drain(data)
}

/// A BinaryFILE: walk every record, streaming and in memory, and the two must agree.
pub fn binaryfile(data: &[u8]) {
    let walked: Vec<_> = capture::binaryfile::Records::new(data).collect();
    let mut r = capture::BinaryFileReader::new(data);
    let mut streamed = Vec::new();
    loop {
        match r.next_message() {
            Ok(Some((_, m))) => {
                itch_message(m);
                streamed.push(Ok(m.to_vec()));
            }
            Ok(None) => break,
            Err(_) => {
                streamed.push(Err(()));
                break;
            }
        }
    }
    let walked: Vec<_> = walked
        .into_iter()
        .map(|r| r.map(|m| m.to_vec()).map_err(|_| ()))
        .collect();
    assert_eq!(walked, streamed);
}

/// A SoupBinTCP stream: split at every packet; a decoded packet re-encodes to the same bytes.
pub fn soup_stream(data: &[u8]) {
    let mut rest = data;
    while let Ok(Some((p, n))) = soupbintcp::decode(rest) {
        let mut out = Vec::new();
        if soupbintcp::encode(&p, &mut out) {
            // numbers may be written with other padding, so compare by decoding again
            assert_eq!(soupbintcp::decode(&out).unwrap().unwrap().0, p);
        }
        rest = &rest[n..];
    }
}
