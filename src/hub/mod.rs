//! The hub: who is connected, what they are subscribed to, and everything
//! that is fanned out to them. Logic only, no I/O.
//!
//! The hub takes [`Input`]s from the event loop (a connection opened, a
//! message, a feed event, a tick, a connection closed or drained) and
//! answers through an [`Outbox`]: frames to queue (with a priority) and
//! closes (with a code). It never sees a socket, so its tests drive it in
//! memory with [`MemoryOutbox`] (`tests.rs`).
//!
//! It owns the sessions (keyed by [`ConnId`]), the topics (everything fanned
//! out, one [`Topics::publish`] path), the container table, the servers
//! (local host plus agents), pending commands and alert states.
//!
//! Files: `session.rs` (a connection's state), `outbox.rs` (the way out),
//! `topics.rs` (fan-out), `browser.rs` (browser requests), `logs.rs` (log
//! followers), `docker.rs` (Docker feed events), `agents.rs` (agents and
//! metrics), `commands.rs` (relayed commands and the audit trail),
//! `servers.rs` (the server directory, agents' containers),
//! `events.rs` (event filters, container stats), `alerts.rs` (alert rules), `history.rs` (metrics history),
//! `reload.rs` (a new config on SIGHUP, and what it revokes), `logring.rs`
//! (a log stream's numbered lines, `since_seq`, idle streams), `resume.rs`
//! (log streams suspended and resumed across outages),
//! `drive.rs` (arbitrary inputs, for fuzzing), `cluster.rs` (the other
//! hubs of a cluster: their servers, and their sessions on this one).

mod agents;
mod alerts;
mod browser;
mod cluster;
mod commands;
mod docker;
mod drive;
mod events;
pub mod history;
mod log_store;
mod logring;
mod logs;
mod outbox;
mod recovery;
mod reload;
mod remote_history;
mod resume;
mod servers;
#[cfg(test)]
mod servers_tests;
mod session;
#[cfg(test)]
mod tests;
mod topics;

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use crate::auth::{ApiKeys, Claims, JwtVerifier};
use crate::config::Config;
use crate::feed::FeedEvent;
use crate::feed::docker::DockerHandle;
use crate::protocol::model::Container;
use crate::stats::{Endpoint, Stats};
use crate::ws::close_code;

pub use agents::{ServerState, WARN_EVERY, WarnBudget};
pub use alerts::{AlertKey, AlertState, Alerts, alert_id};
pub use browser::unix_now;
pub use commands::{Audit, PendingCommand};
pub use drive::{DRIVE_AGENT_KEY, drive_hub};
pub use history::HistoryRange;
pub use logring::{IdleLogs, LogRing};
pub use logs::{
    FilterGroup, LOG_COALESCE, LogFollow, MAX_FILTERED_STREAMS_PER_SOCKET,
    MAX_FILTERS_PER_CONTAINER,
};
pub use outbox::{Close, Io, MemoryConn, MemoryOutbox, Outbox};
pub use reload::Reload;
pub use servers::{DockerStatus, MAX_REMOTE_CONTAINERS, RemoteTable};
pub use session::{AuthState, ConnId, Session, Sessions};
pub use topics::{
    DialectSets, Publish, SubscriberSet, Topic, TopicId, TopicKey, Topics, drained_below,
};

/// What the event loop tells the hub.
#[derive(Debug)]
pub enum Input<'a> {
    /// A WebSocket was accepted on `endpoint` (`target`: the server id in its path).
    Opened {
        conn: ConnId,
        serial: u64,
        endpoint: Endpoint,
        /// The wire the upgrade asked for ([`crate::protocol::Dialect::for_request`]).
        dialect: crate::protocol::Dialect,
        target: Option<String>,
        /// A browser socket whose upgrade carried a valid session token
        /// (cookie or Bearer, checked by the router): it opens authenticated.
        claims: Option<Claims>,
        /// The peer's address, for the operator's logs.
        peer: Option<std::net::IpAddr>,
    },
    /// One complete text message.
    Text { conn: ConnId, text: &'a str },
    /// One complete binary message (MessagePack sockets take them).
    Binary { conn: ConnId, data: &'a [u8] },
    /// The connection is gone or closing (not by the hub's own close).
    Closed { conn: ConnId },
    /// The connection's queue drained below half its cap after it lost frames.
    Drained { conn: ConnId },
    /// An event from a feed thread.
    Feed(FeedEvent),
    /// The periodic sweep: deadlines, token expiry, heartbeats, alerts.
    Tick { unix_now: u64 },
    /// A deadline of the hub's own came ([`Hub::next_deadline`]).
    Timers,
    /// SIGHUP: run with a new (merged, validated) config from now on;
    /// connections it revokes are closed with 1008 (`reload.rs`).
    Reload(Box<Reload>),
}

/// All hub state but the sessions.
pub struct State {
    pub config: Config,
    pub jwt: Option<JwtVerifier>,
    pub api_keys: ApiKeys,
    pub docker: Option<DockerHandle>,
    pub docker_up: bool,
    /// Why the local engine is down (its last `Down` reason), while it is.
    pub docker_error: Option<String>,
    /// Local container table by full id.
    pub containers: HashMap<String, Container>,
    pub topics: Topics,
    /// follow_id -> its log topic (an index into `topics`).
    pub follows: HashMap<u64, TopicKey>,
    /// Log topics holding lines back for coalescing (an index into `topics`).
    pub held_logs: HashSet<TopicKey>,
    /// Log streams nobody follows, kept a while for a resume (SPEC 7).
    pub idle_logs: IdleLogs,
    pub next_follow_id: u64,
    pub servers: HashMap<String, ServerState>,
    pub pending: HashMap<String, PendingCommand>,
    /// Local Docker actions: request id -> command id.
    pub local_actions: HashMap<u64, String>,
    pub next_request_id: u64,
    pub audit: Audit,
    /// Refused agent keys: logged at most every few seconds.
    pub refused_agent_warnings: WarnBudget,
    /// Keys used by two agents at once: their own budget, so a flood of
    /// refused keys cannot hide them.
    pub shared_key_warnings: WarnBudget,
    /// Alert states, recent changes and the notifiers.
    pub alerts: Alerts,
    /// The cluster this hub is part of (`cluster.rs`); `None`: one hub.
    pub cluster: Option<cluster::Cluster>,
}

/// The hub: its state and the sessions of every connection.
pub struct Hub {
    state: State,
    sessions: Sessions,
    closed: Vec<ConnId>,
    to_peers: Vec<(ConnId, crate::ws::Frame)>,
}

impl Hub {
    pub fn new(config: Config, docker: Option<DockerHandle>, now: Instant) -> Self {
        let jwt = config.jwt_secret.clone().map(JwtVerifier::new);
        let api_keys = ApiKeys::new(config.agents.clone());
        let mut servers = HashMap::new();
        servers.insert(
            config.server_id.clone(),
            ServerState::new("local".into(), true, None),
        );
        for a in &config.agents {
            servers.insert(
                a.server_id.clone(),
                ServerState::new(a.name.clone(), false, Some(now)),
            );
        }
        let audit = Audit::open(config.audit_log.as_deref());
        Hub {
            state: State {
                config,
                jwt,
                api_keys,
                docker,
                docker_up: false,
                docker_error: Some("not connected yet".into()),
                containers: HashMap::new(),
                topics: Topics::default(),
                follows: HashMap::new(),
                held_logs: HashSet::new(),
                idle_logs: IdleLogs::default(),
                next_follow_id: 1,
                servers,
                pending: HashMap::new(),
                local_actions: HashMap::new(),
                next_request_id: 1,
                audit,
                refused_agent_warnings: WarnBudget::default(),
                shared_key_warnings: WarnBudget::default(),
                alerts: Alerts::default(),
                cluster: None,
            },
            sessions: Sessions::default(),
            closed: Vec::new(),
            to_peers: Vec::new(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.state.config
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn session(&self, conn: ConnId) -> Option<&Session> {
        self.sessions.get(conn)
    }

    /// Joins a cluster through `link` (the NATS thread, `crate::cluster`).
    pub fn set_cluster(&mut self, link: crate::cluster::ClusterLink, hub_id: String) {
        self.state.cluster = Some(cluster::Cluster::new(link, hub_id));
    }

    /// Hands alert changes to the notifier threads from now on.
    pub fn set_notifier(&mut self, notifier: crate::notify::Notifier) {
        self.state.alerts.notifier = Some(notifier);
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// When the hub next needs `Input::Timers` (held log batches).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.state.next_log_deadline()
    }

    /// Applies one input; everything it causes goes to `out`.
    pub fn handle(
        &mut self,
        out: &mut dyn Outbox,
        stats: &mut Stats,
        now: Instant,
        input: Input<'_>,
    ) {
        let soft_cap = self.state.config.max_queued_bytes;
        let mut io = Io::new(
            out,
            &mut self.sessions,
            stats,
            now,
            soft_cap,
            &mut self.closed,
            &mut self.to_peers,
        );
        let st = &mut self.state;
        match input {
            Input::Opened {
                conn,
                serial,
                endpoint,
                dialect,
                target,
                claims,
                peer,
            } => {
                st.on_open(&mut io, conn, serial, endpoint, dialect, target, claims);
                if let Some(s) = io.session_mut(conn) {
                    s.peer = peer;
                }
            }
            Input::Text { conn, text } => st.on_text(&mut io, conn, text),
            Input::Binary { conn, data } => st.on_binary(&mut io, conn, data),
            Input::Closed { conn } => st.detach(&mut io, conn),
            Input::Drained { conn } => topics::report_dropped(&mut io, conn),
            Input::Feed(FeedEvent::Docker(d)) => st.on_docker(&mut io, d),
            Input::Feed(FeedEvent::LocalMetrics(m)) => st.on_local_metrics(&mut io, &m),
            Input::Feed(FeedEvent::Cluster(ev)) => st.on_cluster(&mut io, ev),
            Input::Tick { unix_now } => st.tick(&mut io, unix_now),
            Input::Timers => st.flush_held_logs(&mut io),
            Input::Reload(r) => st.reload(&mut io, *r),
        }
        // Sessions the hub closed leave every topic before the input returns.
        while let Some(conn) = io.closed.pop() {
            st.detach(&mut io, conn);
        }
        // What other hubs' sessions got goes to NATS, one message per frame.
        st.send_to_peers(&mut io);
    }
}

impl State {
    /// `GET /api/v1/servers/{id}/metrics` as JSON at `now_unix`; `None`
    /// for an unknown server.
    pub fn metrics_history_json(
        &self,
        server_id: &str,
        range: HistoryRange,
        now_unix: u64,
    ) -> Option<Vec<u8>> {
        let server = self.servers.get(server_id)?;
        let step_s = match range {
            HistoryRange::Hour if server.is_local => self.config.metrics_interval.as_secs().max(1),
            HistoryRange::Hour => server.history.step_s().unwrap_or(5),
            HistoryRange::SixHours | HistoryRange::Day => 60,
        };
        // Serialized straight from the samples, without a `Value` tree.
        #[derive(serde::Serialize)]
        struct Body<'a> {
            server_id: &'a str,
            step_s: u64,
            samples: Vec<crate::protocol::model::Metrics>,
        }
        serde_json::to_vec(&Body {
            server_id,
            step_s,
            samples: server.history.samples(range, now_unix),
        })
        .ok()
    }

    /// Removes a session and takes it out of every topic (it closed or is closing).
    fn detach(&mut self, io: &mut Io<'_>, conn: ConnId) {
        // A recoverable Socket.IO session is kept for its client (recovery.rs).
        if self.park(io, conn) {
            return;
        }
        let Some(session) = io.sessions.get(conn) else {
            return;
        };
        let keys: Vec<TopicKey> = session
            .topics
            .iter()
            .filter_map(|id| self.topics.key_of(*id).cloned())
            .collect();
        let agent = session.agent_server.clone();
        for key in keys {
            self.leave_topic(io, &key, conn);
        }
        if let Some(sid) = agent {
            self.agent_gone(io, conn, &sid);
        }
        if let Some(mut s) = io.sessions.remove(conn) {
            self.audit.summarise_refusals(&mut s);
        }
    }

    /// Periodic work: auth deadlines, token expiry, Socket.IO heartbeats,
    /// command timeouts, alerts.
    fn tick(&mut self, io: &mut Io<'_>, now_unix: u64) {
        let now = io.now;
        let leeway = crate::auth::DEFAULT_LEEWAY.as_secs();
        let interval = self.config.sio_ping_interval;
        let timeout = self.config.sio_ping_timeout;
        let mut expired = Vec::new();
        let mut pings = Vec::new();
        let mut dead = Vec::new();
        for (conn, s) in io.sessions.iter_mut() {
            match &s.auth {
                AuthState::Pending { deadline } if *deadline <= now => {
                    expired.push((conn, "authentication timed out"));
                }
                // A peer's number: saturate, never overflow (exp near 2^64).
                AuthState::Ready { exp: Some(exp), .. }
                    if exp.saturating_add(leeway) < now_unix =>
                {
                    expired.push((conn, "token expired"));
                }
                _ => {}
            }
            match s.dialect.heartbeat(&mut s.wire, now, interval, timeout) {
                crate::protocol::Heartbeat::Idle => {}
                crate::protocol::Heartbeat::Send(f) => pings.push((conn, f)),
                crate::protocol::Heartbeat::TimedOut => dead.push(conn),
            }
        }
        for (conn, why) in expired {
            recovery::forfeit(io.sessions, conn);
            io.stats.auth_failure(if why == "token expired" {
                "expired"
            } else {
                "timeout"
            });
            io.error_and_close(conn, why, close_code::POLICY_VIOLATION);
        }
        for (conn, f) in pings {
            io.send(conn, &f, crate::writer::Priority::Essential);
        }
        for conn in dead {
            io.close(conn, close_code::POLICY_VIOLATION, "Engine.IO ping timeout");
        }
        self.expire_commands(io);
        self.logs_tick(io);
        self.expire_parked(io);
        self.alerts_tick(io);
        self.cluster_tick(io);
    }
}
