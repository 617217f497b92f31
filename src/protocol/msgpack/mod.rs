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

pub mod socketio;

/// One event as a complete WebSocket binary frame holding a MessagePack map.
pub fn encode(ev: &Event<'_>) -> Frame {
    let text = json::encode(ev, Dialect::Json);
    let value: Value = serde_json::from_slice(ws::frame_payload(&text)).unwrap_or(Value::Null);
    // A serde_json value always has a MessagePack form.
    let bytes = rmp_serde::to_vec(&value).unwrap_or_default();
    ws::encode_frame(OpCode::Binary, &bytes)
}

/// How deep a client's MessagePack value may nest.
const MAX_DEPTH: usize = 64;

/// A client's MessagePack value as JSON. JavaScript's `undefined` (which
/// `notepack.io`, the official parser's encoder, writes as the extension
/// `fixext 1` of type 0) becomes null; binary, other extensions and
/// non-string map keys have no JSON form and are refused.
///
/// # Errors
/// "Invalid message format" style messages for the `error` reply.
pub fn to_json(mut bytes: &[u8]) -> Result<Value, String> {
    let v = rmpv::decode::read_value_with_max_depth(&mut bytes, MAX_DEPTH).map_err(|e| {
        let why: String = e.to_string().chars().take(200).collect();
        format!("Invalid message format: not MessagePack ({why})")
    })?;
    if !bytes.is_empty() {
        return Err("Invalid message format: bytes after the MessagePack value".into());
    }
    json_of(v)
}

fn json_of(v: rmpv::Value) -> Result<Value, String> {
    use rmpv::Value as M;
    Ok(match v {
        M::Nil => Value::Null,
        M::Boolean(b) => Value::Bool(b),
        M::Integer(i) => match (i.as_u64(), i.as_i64()) {
            (Some(u), _) => Value::from(u),
            (None, Some(n)) => Value::from(n),
            _ => Value::Null,
        },
        M::F32(f) => Value::from(f64::from(f)),
        M::F64(f) => Value::from(f),
        M::String(s) => match s.into_str() {
            Some(s) => Value::String(s),
            None => return Err("Invalid message format: a string that is not UTF-8".into()),
        },
        M::Array(a) => Value::Array(a.into_iter().map(json_of).collect::<Result<_, _>>()?),
        M::Map(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                let M::String(k) = k else {
                    return Err("Invalid message format: map keys must be strings".into());
                };
                let Some(k) = k.into_str() else {
                    return Err("Invalid message format: a key that is not UTF-8".into());
                };
                out.insert(k, json_of(v)?);
            }
            Value::Object(out)
        }
        M::Ext(0, _) => Value::Null, // JavaScript's undefined (notepack.io)
        M::Binary(_) | M::Ext(..) => {
            return Err(
                "Invalid message format: binary and extension values are not accepted".into(),
            );
        }
    })
}

/// One binary message: the request's `type` and its map.
///
/// # Errors
/// "Invalid message format" style messages for the `error` reply.
pub fn decode(bytes: &[u8]) -> Result<(String, Map<String, Value>), String> {
    let Value::Object(obj) = to_json(bytes)? else {
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
