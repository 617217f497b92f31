//! What the coordinator tells a worker, and what a worker says back.
//!
//! Owns the control protocol between the coordinator process and its worker
//! processes: one JSON object per line, commands on the worker's stdin,
//! events on its stdout. The run has three phases and every worker moves
//! through them in lock step:
//! 1. *prepare*: publishers and agents connect and authenticate; the worker
//!    reports the `server_id`s it learned (`Prepared`);
//! 2. *connect*: on `Connect` (carrying every `server_id`), subscribers and
//!    browsers connect; the worker reports `Ready`;
//! 3. *run*: on `Start` the measurement window opens; the worker sends
//!    `Progress` once a second and one `Result` when it ends.
//!
//! A worker whose stdin closes stops at once: it never outlives its coordinator.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::cli::Placement;
use crate::stats::{Counters, WorkerResult};
use crate::target::SourceSpread;

/// Framing and setup steps a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Dialect {
    /// dockwire's JSON dialect: optional `{"type":"auth","token"}` first,
    /// established on `auth_success` (or right after the upgrade without a token).
    Json,
    /// Engine.IO v4 / Socket.IO: wait for `0{..}`, send `40` (with
    /// `{"token"}` when given), established on `40{..}`; answer `2` with `3`.
    SocketIo,
    /// Plain WebSocket: established right after the upgrade.
    Raw,
    /// The JSON dialect's messages as MessagePack maps in binary frames
    /// (`/api/v1/ws?format=msgpack`); set up like `Json`.
    MsgPack,
}

/// Where a subscriber finds the send timestamps in what it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Extract {
    /// `{"type":"log","data":{"message":"<stamp line>"}}`.
    LogMessage,
    /// `{"type":"log_update","log":"<line>\n<line>..."}`: one item per line.
    LogUpdate,
    /// `42["log_update",{"log":"..."}]`: one item per line.
    SioLogUpdate,
    /// `{"type":"metrics","data":{"sent_ns":N,"seq":N,...}}`.
    Metrics,
    /// `{"type":"container_state_change",...,"container":{...,"labels":
    /// {"dw_sent_ns":"N","dw_seq":"N"}}}` from a remote agent's server.
    ContainerChange,
    /// `42["message",{"ts":"<ns>","seq":N,...}]`.
    SioRelay,
    /// A text message `{"ts":"<ns>","seq":N,...}`.
    WsRelay,
    /// Nothing is expected (idle, storm); frames are still counted.
    Nothing,
}

/// How a subscriber (or browser, or idle/storm connection) behaves.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubSpec {
    /// Request path; `{sid}` is replaced by the `server_id` this connection watches.
    pub path: String,
    pub dialect: Dialect,
    /// JWT sent as the first message (JSON) or in the CONNECT packet (Socket.IO).
    pub token: Option<String>,
    /// Text message sent once the connection is set up (e.g. `start_log_stream`).
    pub subscribe: Option<String>,
    pub extract: Extract,
}

/// The single publisher of a fan-out run (lives in worker 0).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum PubSpec {
    /// An agent on `/api/v1/agents/ws` sending `log` messages.
    Agent { api_key: String },
    /// A Docker agent (SPEC 6) with one container, sending its lines as
    /// `log_batch` messages of at least `batch` lines.
    RemoteAgent {
        api_key: String,
        container_id: String,
        batch: usize,
    },
    /// A Socket.IO client emitting `publish` events (relay contract, peers/README.md).
    SioRelay,
    /// A plain WebSocket client sending text messages on `path`.
    WsRelay { path: String },
    /// A writer thread feeding stamp lines into a FIFO that a container `cat`s.
    Fifo { path: String },
}

/// One agent of the `agents` scenario.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentSlot {
    /// Run-wide agent index (also its source-address index).
    pub index: u64,
    pub api_key: String,
}

/// Connect/disconnect churn settings, per worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StormSpec {
    /// Connections per second this worker starts.
    pub rate: f64,
    /// Most connections this worker starts in total.
    pub max: u64,
}

/// TLS settings of a `--tls` run (the same for every connection).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TlsPlan {
    /// Name the certificate is verified against (DNS name or IP address).
    pub server_name: String,
    /// PEM text of `--ca-file`; `None`: the system's roots.
    pub ca_pem: Option<String>,
}

/// One hub a connection may go to (an address already checked to be loopback).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// Value of the HTTP `Host` header.
    pub host_header: String,
}

/// Everything a worker needs; sent as the first command.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerPlan {
    pub worker: usize,
    pub workers: usize,
    pub target: SocketAddr,
    pub host_header: String,
    pub spread: SourceSpread,
    pub connect_timeout_ms: u64,
    /// Most connections in setup at once in this worker.
    pub connect_concurrency: usize,
    /// Connects started per second in this worker (0: as fast as concurrency allows).
    pub connect_rate: f64,
    /// Bound on the prepare and connect phases each.
    pub setup_timeout_ms: u64,
    /// Measurement window (the hold time for idle).
    pub duration_ms: u64,
    /// Time after the window in which late deliveries still count.
    pub drain_ms: u64,
    pub max_message: usize,
    /// Poll with a zero timeout instead of sleeping.
    pub busy_poll: bool,
    /// Offer permessage-deflate and inflate compressed messages.
    #[serde(default)]
    pub deflate: bool,
    /// Subscriber behaviour and this worker's run-wide index range `[start, end)`.
    pub sub: Option<SubSpec>,
    pub subs: (u64, u64),
    /// Total subscribers in the run (for `{sid}` spreading).
    pub subs_total: u64,
    pub publisher: Option<PubSpec>,
    /// Publisher messages per second.
    pub rate: f64,
    /// Payload size in bytes (stamp line length).
    pub payload: usize,
    pub agents: Vec<AgentSlot>,
    pub agents_total: u64,
    pub agent_interval_ms: u64,
    /// Containers each agent reports as a Docker agent (SPEC 6); 0: agents
    /// send host `metrics` instead.
    pub remote_containers: u32,
    /// A remote agent sends a `container_state_change` every this many
    /// intervals (its `container_stats` go every interval).
    pub change_every: u64,
    pub storm: Option<StormSpec>,
    /// Speak TLS on every connection.
    #[serde(default)]
    pub tls: Option<TlsPlan>,
    /// Hubs agents (and the publisher, as index 0) connect to: agent `i`
    /// uses `agent_targets[i % len]`. Empty: `target`.
    #[serde(default)]
    pub agent_targets: Vec<Endpoint>,
    /// Hubs subscribers connect to (see [`WorkerPlan::sub_endpoint`]). Empty: `target`.
    #[serde(default)]
    pub sub_targets: Vec<Endpoint>,
    /// How a browser's hub follows the agent it watches.
    #[serde(default)]
    pub placement: Placement,
}

impl WorkerPlan {
    fn default_endpoint(&self) -> Endpoint {
        Endpoint {
            addr: self.target,
            host_header: self.host_header.clone(),
        }
    }

    /// The hub agent `index` (run-wide; the publisher is 0) connects to.
    pub fn agent_endpoint(&self, index: u64) -> Endpoint {
        match self.agent_targets.len() {
            0 => self.default_endpoint(),
            n => self.agent_targets[(index % n as u64) as usize].clone(),
        }
    }

    /// The hub subscriber `j` (run-wide) connects to; `agent` is the
    /// run-wide index of the agent whose server it watches, when known.
    /// `Index` placement (or no agent): `sub_targets[j % m]`; `Same`:
    /// `sub_targets[agent % m]`; `Other`: `sub_targets[(agent + 1) % m]`.
    pub fn sub_endpoint(&self, j: u64, agent: Option<u64>) -> Endpoint {
        let m = self.sub_targets.len() as u64;
        if m == 0 {
            return self.default_endpoint();
        }
        let k = match (self.placement, agent) {
            (Placement::Same, Some(a)) => a % m,
            (Placement::Other, Some(a)) => (a + 1) % m,
            _ => j % m,
        };
        self.sub_targets[k as usize].clone()
    }
}

/// Coordinator → worker, one per line on stdin.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    Plan(Box<WorkerPlan>),
    /// Connect subscribers; `sids` are the `server_id`s to spread them over
    /// (subscriber `i` watches `sids[i % len]`); may be empty.
    Connect {
        sids: Vec<String>,
        /// `indices[k]`: the run-wide agent index whose server is `sids[k]`
        /// (the fan-out publisher is 0); may be empty (then unknown).
        #[serde(default)]
        indices: Vec<u64>,
    },
    /// Open the window; `watchers[k]` is how many established subscribers
    /// watch `sids[k]` across all workers (for expected delivery counts).
    Start {
        watchers: Vec<u64>,
    },
    /// End the window now.
    Stop,
}

/// Worker → coordinator, one per line on stdout.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum WorkerEvent {
    /// Prepare phase over; `sids` pairs a run-wide agent index with the
    /// `server_id` the hub gave it (the fan-out publisher is index 0).
    Prepared {
        sids: Vec<(u64, String)>,
        failed: u64,
    },
    /// Connect phase over; `by_sid[k]` counts this worker's established
    /// subscribers on `sids[k]`.
    Ready {
        established: u64,
        failed: u64,
        by_sid: Vec<u64>,
    },
    Progress {
        counters: Counters,
        p99_us: f64,
    },
    Result(Box<WorkerResult>),
    /// Something that ends the worker (bad plan, cannot open the FIFO, ...).
    Fatal {
        message: String,
    },
}

/// Splits `total` items into `parts` contiguous ranges; part `i` gets `[start, end)`.
pub fn split_range(total: u64, parts: usize, i: usize) -> (u64, u64) {
    let parts = parts.max(1) as u64;
    let i = i as u64;
    (total * i / parts, total * (i + 1) / parts)
}

/// Parses one line a worker printed.
///
/// # Errors
/// Anything that is not a [`WorkerEvent`] in JSON.
pub fn parse_event(line: &str) -> Result<WorkerEvent, serde_json::Error> {
    serde_json::from_str(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_everything_once() {
        for (total, parts) in [(1000u64, 3usize), (7, 7), (5, 8), (0, 2), (19_000, 1)] {
            let mut next = 0;
            for i in 0..parts {
                let (s, e) = split_range(total, parts, i);
                assert_eq!(s, next);
                assert!(e >= s);
                next = e;
            }
            assert_eq!(next, total);
        }
    }

    #[test]
    fn commands_roundtrip_as_lines() {
        let c = Command::Connect {
            sids: vec!["a".into(), "b".into()],
            indices: vec![0, 1],
        };
        let line = serde_json::to_string(&c).unwrap();
        assert!(!line.contains('\n'));
        assert!(line.contains(r#""cmd":"connect""#));
        match serde_json::from_str::<Command>(&line).unwrap() {
            Command::Connect { sids, indices } => {
                assert_eq!(sids, vec!["a", "b"]);
                assert_eq!(indices, vec![0, 1]);
            }
            other => panic!("{other:?}"),
        }
        let e: WorkerEvent =
            serde_json::from_str(r#"{"event":"ready","established":5,"failed":1,"by_sid":[5]}"#)
                .unwrap();
        assert!(matches!(
            e,
            WorkerEvent::Ready {
                established: 5,
                failed: 1,
                ..
            }
        ));
    }
}
