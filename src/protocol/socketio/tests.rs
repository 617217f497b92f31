//! Unit tests for the codec. The `REAL_*` vectors are exact frames captured
//! between the official `socket.io` 4.8.4 server and `socket.io-client`
//! 4.8.4 (Node 20) through a logging WebSocket proxy.

use serde_json::{Value, json};

use super::encode::{escape_into, escaped_len};
use super::*;

/// Frames the real client sent (C->S), each one Engine.IO packet.
const REAL_CLIENT_FRAMES: &[&str] = &[
    "40",
    "40{\"token\":\"abc\"}",
    "40/admin,",
    "42[\"start_log_stream\",{\"container_id\":\"c1\"}]",
    "420[\"start_log_stream\",{\"container_id\":\"c2\"}]",
    "42[\"noargs\"]",
    "42[\"multi\",1,\"two\",null,[3],{\"é\":\"\u{2028}\"}]",
    "42[\"e\",\"x\",1.5,-2,true,{\"a\":[]}]",
    "430[\"back\",1]",
    "42/admin,0[\"x\",1]",
    "3",
    "41/admin,",
    "41",
];

/// Frames the real server sent (S->C), to check our encoders byte for byte.
const REAL_OPEN: &str = "0{\"sid\":\"UARVVIOk8Oy_jvlgAAAA\",\"upgrades\":[],\"pingInterval\":25000,\"pingTimeout\":20000,\"maxPayload\":1000000}";
const REAL_CONNECT_OK: &str = "40{\"sid\":\"Rea1xz3oGVehk9zdAAAA\"}";
const REAL_EVENT: &str = "42[\"connection_established\",{\"message\":\"hi\"}]";
const REAL_ACK: &str = "430[{\"ok\":true},2]";
const REAL_ACK_NSP: &str = "43/admin,0[\"y\"]";
const REAL_CONNECT_ERROR: &str = "44{\"message\":\"not authorized\"}";
const REAL_CONNECT_ERROR_NSP: &str = "44/nope,{\"message\":\"Invalid namespace\"}";
const REAL_SERVER_DISCONNECT: &str = "41";
/// The real client's text frame for `emit("bin", Buffer.from([1,2,3]))`.
const REAL_BINARY_EVENT: &str = "451-[\"bin\",{\"_placeholder\":true,\"num\":0}]";

/// Engine.IO first, then Socket.IO, as the event loop will do it.
fn decode(frame: &str) -> Result<SioPacket, SioError> {
    match parse_eio(frame)? {
        EioPacket::Message(m) => parse_sio(m),
        other => panic!("expected a MESSAGE, got {other:?}"),
    }
}

fn nsp(s: &str) -> String {
    s.to_owned()
}

#[test]
fn real_client_frames_decode() {
    for frame in REAL_CLIENT_FRAMES {
        let eio = parse_eio(frame).unwrap_or_else(|e| panic!("{frame:?}: {e}"));
        if let EioPacket::Message(m) = eio {
            parse_sio(m).unwrap_or_else(|e| panic!("{frame:?}: {e}"));
        }
    }
    assert_eq!(
        decode("40").unwrap(),
        SioPacket::Connect {
            nsp: nsp("/"),
            auth: None
        }
    );
    assert_eq!(
        decode("40{\"token\":\"abc\"}").unwrap(),
        SioPacket::Connect {
            nsp: nsp("/"),
            auth: Some(json!({"token": "abc"}))
        }
    );
    assert_eq!(
        decode("40/admin,").unwrap(),
        SioPacket::Connect {
            nsp: nsp("/admin"),
            auth: None
        }
    );
    assert_eq!(
        decode("42[\"start_log_stream\",{\"container_id\":\"c1\"}]").unwrap(),
        SioPacket::Event {
            nsp: nsp("/"),
            id: None,
            name: "start_log_stream".into(),
            args: vec![json!({"container_id": "c1"})],
        }
    );
    assert_eq!(
        decode("420[\"start_log_stream\",{\"container_id\":\"c2\"}]").unwrap(),
        SioPacket::Event {
            nsp: nsp("/"),
            id: Some(0),
            name: "start_log_stream".into(),
            args: vec![json!({"container_id": "c2"})],
        }
    );
    assert_eq!(
        decode("42[\"noargs\"]").unwrap(),
        SioPacket::Event {
            nsp: nsp("/"),
            id: None,
            name: "noargs".into(),
            args: vec![]
        }
    );
    assert_eq!(
        decode("42[\"multi\",1,\"two\",null,[3],{\"é\":\"\u{2028}\"}]").unwrap(),
        SioPacket::Event {
            nsp: nsp("/"),
            id: None,
            name: "multi".into(),
            args: vec![
                json!(1),
                json!("two"),
                Value::Null,
                json!([3]),
                json!({"é": "\u{2028}"})
            ],
        }
    );
    assert_eq!(
        decode("430[\"back\",1]").unwrap(),
        SioPacket::Ack {
            nsp: nsp("/"),
            id: 0,
            args: vec![json!("back"), json!(1)]
        }
    );
    assert_eq!(
        decode("42/admin,0[\"x\",1]").unwrap(),
        SioPacket::Event {
            nsp: nsp("/admin"),
            id: Some(0),
            name: "x".into(),
            args: vec![json!(1)]
        }
    );
    assert_eq!(
        decode("41/admin,").unwrap(),
        SioPacket::Disconnect { nsp: nsp("/admin") }
    );
    assert_eq!(
        decode("41").unwrap(),
        SioPacket::Disconnect { nsp: nsp("/") }
    );
    assert_eq!(decode("41").unwrap().nsp(), "/");
}

#[test]
fn real_binary_event_is_refused() {
    let err = decode(REAL_BINARY_EVENT).unwrap_err();
    assert!(matches!(err, SioError::BinaryUnsupported), "{err:?}");
    assert_eq!(
        err.to_string(),
        "binary attachments are not supported: send JSON-only events"
    );
    assert!(matches!(
        parse_sio("61-0[{\"_placeholder\":true,\"num\":0}]"),
        Err(SioError::BinaryUnsupported)
    ));
    // Engine.IO base64 binary message.
    assert!(matches!(
        parse_eio("bAQID"),
        Err(SioError::BinaryUnsupported)
    ));
}

#[test]
fn encoders_match_real_server_bytes() {
    let open = open_packet(&OpenParams {
        sid: "UARVVIOk8Oy_jvlgAAAA".into(),
        ping_interval_ms: 25000,
        ping_timeout_ms: 20000,
        max_payload: 1_000_000,
    });
    assert_eq!(open, REAL_OPEN);
    assert_eq!(connect_ok("Rea1xz3oGVehk9zdAAAA"), REAL_CONNECT_OK);
    assert_eq!(
        event("connection_established", "{\"message\":\"hi\"}"),
        REAL_EVENT
    );
    assert_eq!(ack("/", 0, "[{\"ok\":true},2]"), REAL_ACK);
    assert_eq!(ack("/admin", 0, "[\"y\"]"), REAL_ACK_NSP);
    assert_eq!(connect_error("/", "not authorized"), REAL_CONNECT_ERROR);
    assert_eq!(connect_error("", "not authorized"), REAL_CONNECT_ERROR);
    assert_eq!(
        connect_error("/nope", "Invalid namespace"),
        REAL_CONNECT_ERROR_NSP
    );
    assert_eq!(disconnect("/"), REAL_SERVER_DISCONNECT);
    assert_eq!(disconnect("/admin"), "41/admin,");
    assert_eq!((PING, PONG_PACKET, CLOSE, NOOP), ("2", "3", "1", "6"));
}

#[test]
fn open_packet_is_valid_json_with_escaped_sid() {
    let open = open_packet(&OpenParams {
        sid: "a\"b\\c\n".into(),
        ping_interval_ms: 1000,
        ping_timeout_ms: 500,
        max_payload: 65536,
    });
    let body: Value = serde_json::from_str(&open[1..]).unwrap();
    assert_eq!(
        body,
        json!({"sid": "a\"b\\c\n", "upgrades": [], "pingInterval": 1000, "pingTimeout": 500, "maxPayload": 65536})
    );
}

#[test]
fn write_event_appends_and_length_is_exact() {
    let mut out = b"HDR".to_vec();
    let data = br#"{"container_id":"abc","log":"l1\nl2\n"}"#;
    write_event(&mut out, "log_update", data);
    assert_eq!(&out[..3], b"HDR");
    assert_eq!(
        &out[3..],
        format!("42[\"log_update\",{}]", std::str::from_utf8(data).unwrap()).as_bytes()
    );
    assert_eq!(out.len() - 3, event_encoded_len("log_update", data.len()));
    for name in [
        "",
        "a\"b",
        "tab\there",
        "\u{1}\u{1f}",
        "é\u{2028}",
        "back\\slash",
    ] {
        let mut buf = Vec::new();
        write_event(&mut buf, name, b"null");
        assert_eq!(buf.len(), event_encoded_len(name, 4), "{name:?}");
        assert_eq!(String::from_utf8(buf).unwrap(), event(name, "null"));
    }
}

#[test]
fn event_round_trips_through_the_parser() {
    for name in [
        "log_update",
        "with \"quotes\"",
        "nl\nand\\",
        "é€😀",
        "\u{0}\u{7f}",
    ] {
        let frame = event(name, "{\"k\":[1,2]}");
        match decode(&frame).unwrap() {
            SioPacket::Event {
                nsp,
                id,
                name: got,
                args,
            } => {
                assert_eq!((nsp.as_str(), id, got.as_str()), ("/", None, name));
                assert_eq!(args, vec![json!({"k": [1, 2]})]);
            }
            other => panic!("{other:?}"),
        }
    }
}

/// Small deterministic PRNG so the fuzz tests are reproducible.
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const FUZZ_ALPHABET: &[char] = &[
    '0', '1', '2', '3', '4', '5', '6', '7', '9', 'b', '/', ',', '[', ']', '{', '}', '"', ':', '-',
    '\\', 'a', 'n', 'u', 'l', ' ', '\n', '\u{0}', 'é', '😀', '\u{2028}', '.', 'e', '+',
];

#[test]
fn escaping_matches_serde_json() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut samples: Vec<String> = (0u8..=0x7f).map(|b| (b as char).to_string()).collect();
    for _ in 0..2000 {
        let len = rng.below(12);
        samples.push(
            (0..len)
                .map(|_| FUZZ_ALPHABET[rng.below(FUZZ_ALPHABET.len())])
                .collect(),
        );
    }
    for s in samples {
        let mut out = Vec::new();
        escape_into(&mut out, &s);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            serde_json::to_string(&s).unwrap(),
            "{s:?}"
        );
        assert_eq!(escaped_len(&s), serde_json::to_string(&s).unwrap().len());
    }
}

#[test]
fn engine_io_packets() {
    assert_eq!(parse_eio("3").unwrap(), EioPacket::Pong(""));
    assert_eq!(parse_eio("3probe").unwrap(), EioPacket::Pong("probe"));
    assert_eq!(parse_eio("2probe").unwrap(), EioPacket::Ping("probe"));
    assert_eq!(parse_eio("1").unwrap(), EioPacket::Close);
    assert_eq!(parse_eio("5").unwrap(), EioPacket::Upgrade);
    assert_eq!(parse_eio("6").unwrap(), EioPacket::Noop);
    assert_eq!(parse_eio("0").unwrap(), EioPacket::Open);
    assert_eq!(parse_eio("4").unwrap(), EioPacket::Message(""));
    assert_eq!(
        parse_eio("42[\"a\"]").unwrap(),
        EioPacket::Message("2[\"a\"]")
    );
    assert!(matches!(parse_eio(""), Err(SioError::EmptyPacket)));
    let err = parse_eio("9hello").unwrap_err();
    assert!(matches!(err, SioError::UnknownEioType('9')));
    assert_eq!(err.to_string(), "unknown Engine.IO packet type '9'");
    assert!(matches!(parse_eio("é"), Err(SioError::UnknownEioType('é'))));
    assert!(matches!(parse_eio("x"), Err(SioError::UnknownEioType('x'))));
    for bad in ["1x", "5x", "6 ", "0{}"] {
        assert!(
            matches!(parse_eio(bad), Err(SioError::MalformedEio(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn socket_io_refusals() {
    let cases: &[(&str, &str)] = &[
        ("", "malformed Socket.IO packet: empty packet"),
        ("7", "unknown Socket.IO packet type '7'"),
        ("x[]", "unknown Socket.IO packet type 'x'"),
        ("€", "unknown Socket.IO packet type '€'"),
        (
            "4{\"message\":\"x\"}",
            "CONNECT_ERROR may only be sent by the server",
        ),
        (
            "2",
            "malformed Socket.IO packet: EVENT payload must be a JSON array",
        ),
        (
            "2{}",
            "malformed Socket.IO packet: EVENT payload must be a JSON array",
        ),
        (
            "2[]",
            "malformed Socket.IO packet: EVENT payload must start with the event name",
        ),
        (
            "2[null]",
            "malformed Socket.IO packet: event name must be a string",
        ),
        (
            "2[{\"a\":1}]",
            "malformed Socket.IO packet: event name must be a string",
        ),
        (
            "2[\"connect\"]",
            "event name \"connect\" is reserved by Socket.IO",
        ),
        (
            "2[\"disconnecting\",1]",
            "event name \"disconnecting\" is reserved by Socket.IO",
        ),
        (
            "3[\"x\"]",
            "malformed Socket.IO packet: ACK needs an ack id",
        ),
        (
            "31{}",
            "malformed Socket.IO packet: ACK payload must be a JSON array",
        ),
        (
            "31",
            "malformed Socket.IO packet: ACK payload must be a JSON array",
        ),
        (
            "0[]",
            "malformed Socket.IO packet: CONNECT payload must be a JSON object",
        ),
        (
            "0\"tok\"",
            "malformed Socket.IO packet: CONNECT payload must be a JSON object",
        ),
        (
            "01{}",
            "malformed Socket.IO packet: CONNECT carries no ack id",
        ),
        (
            "1{}",
            "malformed Socket.IO packet: DISCONNECT carries no data",
        ),
        (
            "12",
            "malformed Socket.IO packet: DISCONNECT carries no data",
        ),
        (
            "299999999999999999999[\"x\"]",
            "malformed Socket.IO packet: ack id out of range",
        ),
        (
            "2/a b,[\"x\"]",
            "invalid namespace: contains whitespace, control or reserved characters",
        ),
        (
            "2/admin[\"x\"]",
            "invalid namespace: contains whitespace, control or reserved characters",
        ),
        (
            "0/a?x=1,",
            "invalid namespace: contains whitespace, control or reserved characters",
        ),
    ];
    for (input, message) in cases {
        let err = parse_sio(input).expect_err(input);
        assert_eq!(err.to_string(), *message, "{input:?}");
    }
    let long = format!("0/{},", "a".repeat(MAX_NAMESPACE_LEN));
    assert!(matches!(
        parse_sio(&long),
        Err(SioError::InvalidNamespace(_))
    ));
    // Malformed JSON is reported with serde_json's reason.
    for bad in [
        "2[\"start_log_stream\",{",
        "2[\"a\",]",
        "0{token}",
        "2[\"a\"] x",
        "31[1,]",
    ] {
        let err = parse_sio(bad).expect_err(bad);
        assert!(matches!(err, SioError::InvalidJson(_)), "{bad:?}: {err:?}");
        assert!(
            err.to_string()
                .starts_with("malformed Socket.IO packet: invalid JSON payload: ")
        );
    }
}

#[test]
fn socket_io_accepted_shapes() {
    // Largest ack id, numeric event names (allowed by the official parser),
    // namespace with no trailing comma, whitespace around JSON.
    assert_eq!(
        parse_sio("218446744073709551615[\"x\"]").unwrap(),
        SioPacket::Event {
            nsp: nsp("/"),
            id: Some(u64::MAX),
            name: "x".into(),
            args: vec![]
        }
    );
    assert_eq!(
        parse_sio("2[7,\"a\"]").unwrap(),
        SioPacket::Event {
            nsp: nsp("/"),
            id: None,
            name: "7".into(),
            args: vec![json!("a")]
        }
    );
    assert_eq!(
        parse_sio("1/admin").unwrap(),
        SioPacket::Disconnect { nsp: nsp("/admin") }
    );
    assert_eq!(
        parse_sio("0/admin,{\"token\":\"t\"}").unwrap(),
        SioPacket::Connect {
            nsp: nsp("/admin"),
            auth: Some(json!({"token": "t"}))
        }
    );
    assert_eq!(
        parse_sio("2/ns/deep-1_x,7 [\"ev\", {\"a\": 1}] ").unwrap(),
        SioPacket::Event {
            nsp: nsp("/ns/deep-1_x"),
            id: Some(7),
            name: "ev".into(),
            args: vec![json!({"a": 1})]
        }
    );
    assert_eq!(
        parse_sio("3/admin,12[]").unwrap(),
        SioPacket::Ack {
            nsp: nsp("/admin"),
            id: 12,
            args: vec![]
        }
    );
}

#[test]
fn deep_nesting_is_refused_without_overflowing_the_stack() {
    let deep = format!("2[\"x\",{}{}]", "[".repeat(100_000), "]".repeat(100_000));
    assert!(matches!(parse_sio(&deep), Err(SioError::InvalidJson(_))));
}

fn check_invariants(input: &str) {
    if let Ok(EioPacket::Message(m)) = parse_eio(input) {
        check_invariants_sio(m);
    }
    check_invariants_sio(input);
}

fn check_invariants_sio(input: &str) {
    match parse_sio(input) {
        Ok(p) => {
            assert!(p.nsp().starts_with('/'), "{input:?} -> {p:?}");
            assert!(!p.nsp().contains(','), "{input:?} -> {p:?}");
            if let SioPacket::Event { name, .. } = &p {
                assert!(!["connect", "disconnect", "connect_error"].contains(&name.as_str()));
            }
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

#[test]
fn fuzz_random_strings_never_panic() {
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    for _ in 0..50_000 {
        let len = rng.below(24);
        let s: String = (0..len)
            .map(|_| FUZZ_ALPHABET[rng.below(FUZZ_ALPHABET.len())])
            .collect();
        check_invariants(&s);
    }
}

#[test]
fn fuzz_mutated_real_frames_never_panic() {
    let mut rng = XorShift(0xdead_beef_cafe_f00d);
    let seeds: Vec<&str> = REAL_CLIENT_FRAMES
        .iter()
        .copied()
        .chain([REAL_BINARY_EVENT])
        .collect();
    for _ in 0..50_000 {
        let mut chars: Vec<char> = seeds[rng.below(seeds.len())].chars().collect();
        for _ in 0..=rng.below(3) {
            let at = rng.below(chars.len() + 1);
            match rng.below(3) {
                0 => chars.insert(at, FUZZ_ALPHABET[rng.below(FUZZ_ALPHABET.len())]),
                1 if at < chars.len() => {
                    chars.remove(at);
                }
                _ => chars.truncate(at),
            }
        }
        let s: String = chars.into_iter().collect();
        check_invariants(&s);
    }
}

#[test]
fn query_check() {
    assert_eq!(check_query("EIO=4&transport=websocket"), Ok(()));
    assert_eq!(
        check_query("?transport=websocket&EIO=4&t=Pabc&token=x"),
        Ok(())
    );
    let refused = [
        "",
        "transport=websocket",
        "EIO=3&transport=websocket",
        "EIO=&transport=websocket",
        "EIO=4",
        "EIO=4&transport=polling",
        "EIO=4&transport=webtransport",
        "EIO=4&EIO=4&transport=websocket",
        "EIO=4&transport=websocket&transport=polling",
        "EIO=4&transport=websocket&sid=abc",
    ];
    for q in refused {
        let msg = check_query(q).expect_err(q);
        assert!(
            msg.contains("Engine.IO v4") && msg.contains("websocket"),
            "{q:?}: {msg}"
        );
    }
    assert_eq!(
        check_query("EIO=4&transport=polling").unwrap_err(),
        "only the websocket transport of Engine.IO v4 is served: set transports: ['websocket'] on the client"
    );
    assert!(
        check_query("EIO=3&transport=websocket")
            .unwrap_err()
            .starts_with("unsupported Engine.IO protocol version")
    );
    assert!(
        check_query("transport=websocket")
            .unwrap_err()
            .starts_with("missing EIO")
    );
}
