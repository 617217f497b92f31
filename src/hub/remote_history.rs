//! Metrics history of a server another hub owns (SPEC 7's
//! `GET /api/v1/servers/{id}/metrics` on any hub of a cluster, SPEC 11).
//!
//! The history lives where the samples arrive: on the owner. A viewer hub
//! asked for it asks the owner over NATS (`P.hist.<owner>`, request and
//! reply) while the HTTP connection waits off the loop's hot path
//! (`server/requests.rs`); the owner answers from its own rings with a
//! status and the JSON body. A hub that is gone answers 502 at once (NATS
//! "no responders"), a slow one 504; a history over NATS's 1 MiB payload
//! is refused with 502 and the reason.

use bytes::Bytes;
use serde_json::{Value, json};

use crate::cluster::{ClusterOp, MAX_PAYLOAD};

use super::State;
use super::history::HistoryRange;

/// The `range` parameter as the request names it.
fn range_name(r: HistoryRange) -> &'static str {
    match r {
        HistoryRange::Hour => "1h",
        HistoryRange::SixHours => "6h",
        HistoryRange::Day => "24h",
    }
}

fn answer(status: u16, body: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(body.len() + 3);
    out.extend_from_slice(format!("{status:03}").as_bytes());
    out.extend_from_slice(body);
    Bytes::from(out)
}

fn error_answer(status: u16, why: &str) -> Bytes {
    answer(status, json!({"error": why}).to_string().as_bytes())
}

impl State {
    /// The hub that holds `server_id`'s metrics history, when another does.
    pub fn metrics_owner(&self, server_id: &str) -> Option<&str> {
        self.relay_hub(server_id)
    }

    /// Asks the owner of `server_id` for its history, for the HTTP
    /// connection `conn` (`serial`). `false`: it could not be asked.
    pub fn ask_history(
        &self,
        server_id: &str,
        range: HistoryRange,
        conn: usize,
        serial: u64,
    ) -> bool {
        let (Some(hub), Some(c)) = (self.relay_hub(server_id), &self.cluster) else {
            return false;
        };
        let body = json!({"server_id": server_id, "range": range_name(range)});
        c.link.push(ClusterOp::AskHistory {
            to: hub.to_string(),
            body: Bytes::from(body.to_string()),
            conn,
            serial,
        })
    }

    /// Another hub asks for the history of a server this hub owns.
    pub(super) fn on_history_ask(&mut self, reply: String, body: &[u8], now_unix: u64) {
        let Some(c) = &self.cluster else { return };
        let asked = serde_json::from_slice::<Value>(body).ok().and_then(|v| {
            let sid = v.get("server_id")?.as_str()?.to_string();
            let range = HistoryRange::parse(v.get("range")?.as_str()?)?;
            Some((sid, range))
        });
        let out = match asked {
            None => error_answer(400, "a bad history request"),
            Some((sid, _)) if !self.owns(&sid) => {
                error_answer(404, "this hub does not hold that server")
            }
            Some((sid, range)) => match self.metrics_history_json(&sid, range, now_unix) {
                Some(b) if b.len() + 3 <= MAX_PAYLOAD => answer(200, &b),
                Some(b) => error_answer(
                    502,
                    &format!(
                        "the history is {} bytes, over the cluster's {MAX_PAYLOAD}: ask the server's hub",
                        b.len()
                    ),
                ),
                None => error_answer(404, "unknown server"),
            },
        };
        c.link.push(ClusterOp::Reply {
            subject: reply,
            body: out,
        });
    }
}
