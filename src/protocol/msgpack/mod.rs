//! The MessagePack wire (SPEC 12): `/api/v1/ws?format=msgpack` speaks the
//! JSON dialect's messages as MessagePack maps in binary frames, both ways.
//!
//! An event is encoded by the JSON dialect first and that object is
//! re-encoded as MessagePack with `rmp-serde`: one definition of every
//! message, so the two wires cannot drift apart. That is two encodes per
//! published frame, not per subscriber: [`Dialect::encode`] is still a pure
//! function of the event, and a frame is shared by every MessagePack
//! subscriber of a topic.
//!
//! Decoding is bounded by the socket's `max_message_bytes` (the frame
//! reader refuses larger messages) and by `rmp-serde`'s nesting limit; a
//! MessagePack value with no JSON counterpart (binary, extension types,
//! non-string map keys) is refused with an `error`, like bad JSON.
//!
//! [`Dialect::encode`]: super::Dialect::encode

use serde_json::{Map, Value};

use crate::ws::{self, Frame, OpCode};

use super::Dialect;
use super::json::{self, Event};

/// One event as a complete WebSocket binary frame holding a MessagePack map.
pub fn encode(ev: &Event<'_>) -> Frame {
    let text = json::encode(ev, Dialect::Json);
    let value: Value = serde_json::from_slice(ws::frame_payload(&text)).unwrap_or(Value::Null);
    // A serde_json value always has a MessagePack form.
    let bytes = rmp_serde::to_vec(&value).unwrap_or_default();
    ws::encode_frame(OpCode::Binary, &bytes)
}

/// One binary message: the request's `type` and its map.
///
/// # Errors
/// "Invalid message format" style messages for the `error` reply.
pub fn decode(bytes: &[u8]) -> Result<(String, Map<String, Value>), String> {
    let v: Value = rmp_serde::from_slice(bytes).map_err(|e| {
        let why: String = e.to_string().chars().take(200).collect();
        format!("Invalid message format: not a MessagePack map with string keys ({why})")
    })?;
    let Value::Object(obj) = v else {
        return Err("Invalid message format: expected a MessagePack map".into());
    };
    match obj.get("type") {
        Some(Value::String(t)) => Ok((t.clone(), obj)),
        _ => Err("Invalid message format: missing \"type\"".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_maps_with_the_json_fields() {
        let ev = Event::LogUpdate {
            server_id: "s",
            container_id: "c",
            log: "a\nb\n",
            seq: 7,
        };
        let f = encode(&ev);
        assert_eq!(f[0], 0x82, "a final binary frame");
        let v: Value = rmp_serde::from_slice(ws::frame_payload(&f)).unwrap();
        let j: Value =
            serde_json::from_slice(ws::frame_payload(&json::encode(&ev, Dialect::Json))).unwrap();
        assert_eq!(v, j);
        assert_eq!(v["seq"], 7);
    }

    #[test]
    fn requests_decode_and_bad_input_is_refused() {
        let req = serde_json::json!({"type": "start_log_stream", "container_id": "web", "tail": 5});
        let (kind, obj) = decode(&rmp_serde::to_vec(&req).unwrap()).unwrap();
        assert_eq!(kind, "start_log_stream");
        assert_eq!(obj["tail"], 5);
        for bad in [
            vec![0xc1],                                               // never used
            vec![0x93, 1, 2, 3],                                      // an array
            rmp_serde::to_vec(&serde_json::json!({"a": 1})).unwrap(), // no type
            vec![0x81, 0x01, 0x02],                                   // an integer key
            vec![0xdf, 0xff, 0xff, 0xff, 0xff],                       // a map claiming 4G entries
            vec![0x91; 100_000],                                      // nested arrays, deep
        ] {
            let e = decode(&bad).unwrap_err();
            assert!(e.starts_with("Invalid message format"), "{bad:?}: {e}");
        }
    }
}
