//! Socket.IO packets as `socket.io-msgpack-parser` (npm) writes them: one
//! binary WebSocket frame per packet holding the map `{type, nsp, data,
//! id?}` (`type` 0 CONNECT, 1 DISCONNECT, 2 EVENT, 3 ACK, 4 CONNECT_ERROR;
//! `data` the CONNECT auth or error object, or the EVENT/ACK argument
//! array). Engine.IO's packets (open, ping, pong, close) stay text frames,
//! as with the JSON parser.
//!
//! Outgoing packets are made by the JSON Socket.IO dialect and re-encoded
//! here ([`binary`]): one definition of every packet (payload shapes, the
//! seed's event names), converted once per published frame, shared by its
//! subscribers. Incoming maps become the same [`SioPacket`]s the text
//! parser yields and go through the same checks ([`decode`]).
//!
//! Connection state recovery (offsets as a last argument) is not offered
//! on this parser: a recovery request is treated as a fresh connection.

use serde_json::{Map, Value};

use crate::protocol::dialect::{DialectState, Inbound, sio_inbound};
use crate::protocol::socketio::SioPacket;
use crate::ws::{self, Frame, OpCode};

/// The binary form of one of our Socket.IO text frames (`4` + a packet);
/// any other frame (Engine.IO open, ping) is returned as it is.
pub fn binary(frame: Frame) -> Frame {
    let Some(packet) = ws::frame_payload(&frame).strip_prefix(b"4") else {
        return frame;
    };
    let Some((&kind, rest)) = packet.split_first() else {
        return frame;
    };
    let rest = std::str::from_utf8(rest).unwrap_or("");
    // `/nsp,` then, for EVENT and ACK, an ack id, then the JSON data.
    let (nsp, rest) = match rest.strip_prefix('/') {
        Some(_) => rest.split_once(',').unwrap_or((rest, "")),
        None => ("/", rest),
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let (id, data) = rest.split_at(digits);
    let mut map = Map::new();
    map.insert("type".into(), Value::from(kind.wrapping_sub(b'0')));
    map.insert("nsp".into(), Value::from(nsp));
    if !data.is_empty() {
        let data: Value = serde_json::from_str(data).unwrap_or(Value::Null);
        map.insert("data".into(), data);
    }
    if let Ok(id) = id.parse::<u64>() {
        map.insert("id".into(), Value::from(id));
    }
    let bytes = rmp_serde::to_vec(&Value::Object(map)).unwrap_or_default();
    ws::encode_frame(OpCode::Binary, &bytes)
}

fn invalid(message: &str) -> Inbound {
    Inbound::Invalid {
        message: message.into(),
        stat: "socketio_packet",
    }
}

/// One binary frame from a client using `socket.io-msgpack-parser`.
pub fn decode(bytes: &[u8], state: &DialectState) -> Inbound {
    let obj = match super::to_json(bytes) {
        Ok(Value::Object(o)) => o,
        Ok(_) => return invalid("Invalid Socket.IO packet: expected a map"),
        Err(message) => {
            return Inbound::Invalid {
                message,
                stat: "socketio_packet",
            };
        }
    };
    let nsp = match obj.get("nsp") {
        Some(Value::String(s)) if s.len() <= 256 => s.clone(),
        _ => return invalid("Invalid Socket.IO packet: \"nsp\" must be a short string"),
    };
    let id = match obj.get("id") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(id) => Some(id),
            None => return invalid("Invalid Socket.IO packet: \"id\" must be an integer"),
        },
    };
    let data = obj.get("data").cloned().unwrap_or(Value::Null);
    let packet = match obj.get("type").and_then(Value::as_u64) {
        Some(0) => SioPacket::Connect {
            nsp,
            auth: data.is_object().then_some(data),
        },
        Some(1) => SioPacket::Disconnect { nsp },
        Some(2) => {
            let Value::Array(mut args) = data else {
                return invalid("Invalid Socket.IO packet: EVENT data must be an array");
            };
            if args.is_empty() {
                return invalid("Invalid Socket.IO packet: EVENT data must start with its name");
            }
            let name = match args.remove(0) {
                Value::String(s) => s,
                Value::Number(n) => n.to_string(),
                _ => return invalid("Invalid Socket.IO packet: the event name must be a string"),
            };
            SioPacket::Event {
                nsp,
                id,
                name,
                args,
            }
        }
        Some(3) => {
            let (Some(id), Value::Array(args)) = (id, data) else {
                return invalid("Invalid Socket.IO packet: ACK needs an id and an array");
            };
            SioPacket::Ack { nsp, id, args }
        }
        _ => return invalid("Invalid Socket.IO packet: type must be 0, 1, 2 or 3"),
    };
    match sio_inbound(packet, state) {
        // No recovery on this parser (see the module's note).
        Inbound::Connect { token, .. } => Inbound::Connect {
            token,
            recovery: crate::protocol::socketio::RecoveryAuth::OFF,
        },
        Inbound::Refuse { frame, stat } => Inbound::Refuse {
            frame: binary(frame),
            stat,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map_of(f: &Frame) -> Value {
        assert_eq!(f[0], 0x82, "a binary frame");
        super::super::to_json(ws::frame_payload(f)).unwrap()
    }

    #[test]
    fn our_text_packets_become_parser_maps() {
        let t = |s: &str| ws::text_frame(s.as_bytes());
        assert_eq!(
            map_of(&binary(t(r#"42["log_update",{"log":"x\n"}]"#))),
            json!({"type": 2, "nsp": "/", "data": ["log_update", {"log": "x\n"}]})
        );
        assert_eq!(
            map_of(&binary(t(r#"40{"sid":"abc"}"#))),
            json!({"type": 0, "nsp": "/", "data": {"sid": "abc"}})
        );
        assert_eq!(
            map_of(&binary(t(r#"437[{"ok":true}]"#))),
            json!({"type": 3, "nsp": "/", "id": 7, "data": [{"ok": true}]})
        );
        assert_eq!(
            map_of(&binary(t(r#"44/admin,{"message":"no"}"#))),
            json!({"type": 4, "nsp": "/admin", "data": {"message": "no"}})
        );
        // Engine.IO's own packets stay text.
        assert_eq!(binary(t("2"))[0], 0x81);
    }

    #[test]
    fn parser_maps_decode_like_text_packets() {
        let st = DialectState {
            connected: true,
            ..Default::default()
        };
        // What notepack.io writes for {type: 2, data: [...], options: {...}, nsp: "/"}.
        let ev = rmp_serde::to_vec(
            &json!({"type": 2, "data": ["start_log_stream", {"container_id": "web"}],
            "options": {"compress": true}, "nsp": "/"}),
        )
        .unwrap();
        match decode(&ev, &st) {
            Inbound::Request { kind, obj, ack } => {
                assert_eq!(kind, "start_log_stream");
                assert_eq!(obj["container_id"], "web");
                assert_eq!(ack, None);
            }
            other => panic!("{other:?}"),
        }
        // CONNECT without auth: notepack writes `data: undefined` as fixext 1.
        let mut connect = vec![0x83];
        connect.extend(rmp_serde::to_vec("type").unwrap());
        connect.push(0x00);
        connect.extend(rmp_serde::to_vec("data").unwrap());
        connect.extend([0xd4, 0x00, 0x00]);
        connect.extend(rmp_serde::to_vec("nsp").unwrap());
        connect.extend(rmp_serde::to_vec("/").unwrap());
        let fresh = DialectState::default();
        assert!(matches!(
            decode(&connect, &fresh),
            Inbound::Connect { token: None, .. }
        ));
        for bad in [
            json!({"type": 9, "nsp": "/"}),
            json!({"type": 2, "nsp": "/", "data": "x"}),
            json!({"type": 2, "nsp": "/", "data": []}),
            json!({"type": 2, "data": ["a"]}),
            json!({"type": 3, "nsp": "/", "data": []}),
            json!([1, 2]),
        ] {
            let b = rmp_serde::to_vec(&bad).unwrap();
            assert!(matches!(decode(&b, &st), Inbound::Invalid { .. }), "{bad}");
        }
        let other_nsp = rmp_serde::to_vec(&json!({"type": 0, "nsp": "/admin"})).unwrap();
        match decode(&other_nsp, &fresh) {
            Inbound::Refuse { frame, .. } => assert_eq!(map_of(&frame)["type"], 4),
            other => panic!("{other:?}"),
        }
    }
}
