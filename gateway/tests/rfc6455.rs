//! WebSocket framing conformance of the server role, case by case from RFC 6455 (the Autobahn
//! suite cannot run on this machine): fragmentation, control frames, the close handshake, UTF-8
//! validation, masking and size limits. Each case uses a fresh connection; a last one checks
//! that the server kept serving throughout.

mod common;
use common::*;

fn gw(tag: &str) -> (Table, Gw) {
    let t = Table::new(tag, 10);
    let (mut cfg, lim) = test_cfg(&t.path);
    cfg.max_frame_bytes = 4096;
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
