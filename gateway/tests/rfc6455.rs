//! WebSocket framing conformance of the server role, case by case from RFC 6455 (the Autobahn
//! suite cannot run on this machine): fragmentation, control frames, the close handshake, UTF-8
//! validation, masking and size limits; then permessage-deflate (RFC 7692) the same way. Each
//! case uses a fresh connection; a last one checks that the server kept serving throughout.

mod common;
use common::*;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};

fn gw(tag: &str) -> (Table, Gw) {
    let t = Table::new(tag, 10);
    let (mut cfg, lim) = test_cfg(&t.path);
    cfg.max_frame_bytes = 4096;
    cfg.deflate = tag.contains("deflate");
    let lim = gateway::session::Limits {
        max_message_bytes: 1024,
        ..lim
    };
    let g = Gw::start(cfg, lim);
    (t, g)
}

fn ping_reply(c: &mut Raw, id: u64) {
    let v = c.json();
    assert_eq!(v["type"], "pong", "{v}");
    assert_eq!(v["id"], id);
}

#[test]
fn framing_follows_rfc6455() {
    let (_t, g) = gw("rfc");
    let a = g.addr;

    // 5.4: a text message in three fragments, with a ping (5.5.2) between them: the ping is
    // answered at once with the same payload, and the message is assembled
    let mut c = Raw::connect(a);
    c.frame(false, 0, 1, br#"{"op":"pi"#, true);
    c.frame(true, 0, 9, b"hello", true);
    let (fin, op, p) = c.read_frame().unwrap();
    assert_eq!(
        (fin, op, p.as_slice()),
        (true, 10, &b"hello"[..]),
        "pong echoes the ping"
    );
    c.frame(false, 0, 0, br#"ng","id""#, true);
    c.frame(true, 0, 0, b":7}", true);
    ping_reply(&mut c, 7);

    // 8.1: UTF-8 split across fragments is valid ("é" is 0xC3 0xA9)
    c.frame(false, 0, 1, b"{\"op\":\"ping\",\"id\":\"\xC3", true);
    c.frame(true, 0, 0, b"\xA9\"}", true);
    let v = c.json();
    assert_eq!(v["id"], "é");

    // 5.5.1: the close handshake: our close is echoed with the same code, then TCP closes
    c.frame(true, 0, 8, &1000u16.to_be_bytes(), true);
    assert_eq!(c.close_code(), Some(1000));
    assert!(
        c.read_frame().is_none(),
        "the server closes the TCP connection"
    );

    // 8.1: invalid UTF-8 in a text frame: close 1007
    let mut c = Raw::connect(a);
    c.frame(true, 0, 1, b"{\"op\":\"\xff\"}", true);
    assert_eq!(c.close_code(), Some(1007));

    // 5.1: an unmasked client frame: close 1002
    let mut c = Raw::connect(a);
    c.frame(true, 0, 1, br#"{"op":"ping"}"#, false);
    assert_eq!(c.close_code(), Some(1002));

    // 5.2: reserved bits without an extension: 1002
    let mut c = Raw::connect(a);
    c.frame(true, 0b100, 1, br#"{"op":"ping"}"#, true);
    assert_eq!(c.close_code(), Some(1002));

    // 5.2: a reserved opcode: 1002 (data 3 and control 11)
    for opcode in [3u8, 11] {
        let mut c = Raw::connect(a);
        c.frame(true, 0, opcode, b"x", true);
        assert_eq!(c.close_code(), Some(1002), "opcode {opcode}");
    }

    // 5.5: a control frame over 125 bytes, and a fragmented control frame: 1002
    let mut c = Raw::connect(a);
    c.frame(true, 0, 9, &[b'p'; 126], true);
    assert_eq!(c.close_code(), Some(1002));
    let mut c = Raw::connect(a);
    c.frame(false, 0, 9, b"p", true);
    assert_eq!(c.close_code(), Some(1002));

    // 5.4: a continuation with nothing to continue, and a new message inside a fragmented one
    let mut c = Raw::connect(a);
    c.frame(true, 0, 0, b"x", true);
    assert_eq!(c.close_code(), Some(1002));
    let mut c = Raw::connect(a);
    c.frame(false, 0, 1, b"{", true);
    c.frame(true, 0, 1, b"{}", true);
    assert_eq!(c.close_code(), Some(1002));

    // 10.4: a frame over the limit (4096 here): 1009; a message over it in small fragments too
    let mut c = Raw::connect(a);
    c.frame(true, 0, 1, &[b' '; 5000], true);
    assert_eq!(c.close_code(), Some(1009));
    let mut c = Raw::connect(a);
    c.frame(false, 0, 1, &[b' '; 1000], true);
    for _ in 0..4 {
        c.frame(false, 0, 0, &[b' '; 1000], true);
    }
    c.frame(true, 0, 0, b" ", true);
    assert_eq!(c.close_code(), Some(1009));

    // 5.5.3: an unsolicited pong is ignored; the connection goes on
    let mut c = Raw::connect(a);
    c.frame(true, 0, 10, b"unsolicited", true);
    c.text(r#"{"op":"ping","id":1}"#);
    ping_reply(&mut c, 1);

    // the server kept serving: a fresh connection works and every closed one was counted
    let mut c = Raw::connect(a);
    c.text(r#"{"op":"ping","id":2}"#);
    ping_reply(&mut c, 2);
    assert!(g.metric("gateway_protocol_closed_total") >= 10);
}

/// A message as permessage-deflate sends it: raw deflate, sync-flushed, its tail dropped.
fn deflate(msg: &[u8]) -> Vec<u8> {
    let mut c = Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(msg.len() + 64);
    c.compress_vec(msg, &mut out, FlushCompress::Sync).unwrap();
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    out
}

fn inflate(payload: &[u8]) -> Vec<u8> {
    let mut d = Decompress::new(false);
    let mut data = payload.to_vec();
    data.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut out = Vec::with_capacity(1 << 20);
    d.decompress_vec(&data, &mut out, FlushDecompress::Sync)
        .unwrap();
    out
}

/// The next text message, inflated when it came compressed: (JSON, came compressed).
fn message(c: &mut Raw) -> (serde_json::Value, bool) {
    loop {
        let (fin, rsv1, op, p) = c.read_frame_rsv1().expect("a frame");
        match op {
            1 => {
                assert!(fin, "our messages are single frames");
                let text = if rsv1 { inflate(&p) } else { p };
                return (serde_json::from_slice(&text).unwrap(), rsv1);
            }
            9 | 10 => continue,
            _ => panic!("unexpected opcode {op}"),
        }
    }
}

const OFFER: &str = "permessage-deflate; client_max_window_bits";

#[test]
fn compression_follows_rfc7692() {
    let (_t, g) = gw("rfc-deflate");
    let a = g.addr;
    let connect = |offer| Raw::offering(std::net::TcpStream::connect(a).unwrap(), offer);

    // 5, 7: accepted without context takeover either way, each message compressed on its own
    let (mut c, head) = connect(Some(OFFER));
    assert!(
        head.contains(
            "sec-websocket-extensions: permessage-deflate; server_no_context_takeover; \
             client_no_context_takeover\r\n"
        ),
        "{head}"
    );
    // 6.1: a compressed message with RSV1 on its first frame, answered
    c.frame(true, 0b100, 1, &deflate(br#"{"op":"ping","id":1}"#), true);
    let (v, _) = message(&mut c);
    assert_eq!(
        (v["type"].as_str(), v["id"].as_u64()),
        (Some("pong"), Some(1))
    );
    // 6.1 and RFC 6455 5.4: a compressed message in three fragments (RSV1 on the first only),
    // with a ping between them; the snapshot (over 512 bytes) comes compressed, the short
    // subscribed reply plain
    let sub = deflate(
        br#"{"op":"subscribe","symbols":["AAAA","AAAB","AAAC","AAAD","AAAE","AAAF"],"id":2}"#,
    );
    c.frame(false, 0b100, 1, &sub[..5], true);
    c.frame(false, 0, 0, &sub[5..9], true);
    c.frame(true, 0, 9, b"hi", true);
    c.frame(true, 0, 0, &sub[9..], true);
    let (fin, rsv1, op, p) = c.read_frame_rsv1().unwrap();
    assert_eq!((fin, rsv1, op, p.as_slice()), (true, false, 10, &b"hi"[..]));
    let (v, compressed) = message(&mut c);
    assert_eq!(v["type"], "subscribed", "{v}");
    assert!(!compressed);
    let (v, compressed) = message(&mut c);
    assert_eq!(v["quotes"].as_array().map(Vec::len), Some(6), "{v}");
    assert!(compressed);
    // 8.2.3.1-style: the same message compressed twice gives the same bytes (no context kept)
    c.frame(true, 0b100, 1, &deflate(br#"{"op":"ping","id":3}"#), true);
    assert_eq!(message(&mut c).0["id"], 3);

    // RSV1 on a continuation frame, or on a control frame: 1002
    let mut c = connect(Some(OFFER)).0;
    c.frame(false, 0b100, 1, &sub[..5], true);
    c.frame(true, 0b100, 0, &sub[5..], true);
    assert_eq!(c.close_code(), Some(1002));
    let mut c = connect(Some(OFFER)).0;
    c.frame(true, 0b100, 9, b"hi", true);
    assert_eq!(c.close_code(), Some(1002));
    // RFC 6455 5.4: a new message inside a compressed one still being fragmented: 1002
    let mut c = connect(Some(OFFER)).0;
    c.frame(false, 0b100, 1, &sub[..5], true);
    c.text(r#"{"op":"ping","id":9}"#);
    assert_eq!(c.close_code(), Some(1002));
    // RSV1 on something that is not deflate data: 1002
    let mut c = connect(Some(OFFER)).0;
    c.frame(true, 0b100, 1, &[0xff; 16], true);
    assert_eq!(c.close_code(), Some(1002));
    // a bomb: 1 MB of spaces in a kilobyte; over the limit once inflated (4096 here): 1009
    let mut c = connect(Some(OFFER)).0;
    let bomb = deflate(&vec![b' '; 1 << 20]);
    assert!(bomb.len() < 4096);
    c.frame(true, 0b100, 1, &bomb, true);
    assert_eq!(c.close_code(), Some(1009));

    // an offer it cannot take (a parameter RFC 7692 does not define) is declined, and then RSV1
    // is a protocol error again; so it is for a client that offered nothing, which never gets
    // a compressed message
    let (mut c, head) = connect(Some("permessage-deflate; x_custom=1"));
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("sec-websocket-extensions"),
        "{head}"
    );
    c.frame(true, 0b100, 1, &deflate(br#"{"op":"ping","id":4}"#), true);
    assert_eq!(c.close_code(), Some(1002));
    let (mut c, head) = connect(None);
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("sec-websocket-extensions"),
        "{head}"
    );
    c.text(r#"{"op":"subscribe","symbols":["AAAA","AAAB","AAAC","AAAD","AAAE","AAAF"]}"#);
    assert!(!message(&mut c).1);
    assert!(!message(&mut c).1);

    // the server kept serving
    let mut c = connect(Some(OFFER)).0;
    c.frame(true, 0b100, 1, &deflate(br#"{"op":"ping","id":5}"#), true);
    assert_eq!(message(&mut c).0["id"], 5);
    assert_eq!(g.metric("gateway_protocol_closed_total"), 6);
    assert_eq!(g.metric("gateway_deflate_sessions_total"), 7);
}
