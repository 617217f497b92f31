//! Counters and gauges for `/metrics`, owned by the event loop thread.
//!
//! Everything here is touched only by the loop, so plain integers suffice:
//! no atomics on the hot path. Rendering produces Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

/// The endpoint a connection speaks on; a label on connection gauges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Endpoint {
    /// Still reading the HTTP head.
    Http,
    Browser,
    ServerMetrics,
    ServerLogs,
    Agent,
    SocketIo,
    Echo,
}

impl Endpoint {
    pub const ALL: [Endpoint; 7] = [
        Endpoint::Http,
        Endpoint::Browser,
        Endpoint::ServerMetrics,
        Endpoint::ServerLogs,
        Endpoint::Agent,
        Endpoint::SocketIo,
        Endpoint::Echo,
    ];
    pub fn label(self) -> &'static str {
        match self {
            Endpoint::Http => "http",
            Endpoint::Browser => "ws",
            Endpoint::ServerMetrics => "ws_metrics",
            Endpoint::ServerLogs => "ws_logs",
            Endpoint::Agent => "agent",
            Endpoint::SocketIo => "socketio",
            Endpoint::Echo => "echo",
        }
    }
    fn index(self) -> usize {
        self as usize
    }
}

/// Upper bounds (seconds) of the loop-iteration histogram buckets; the
/// last ones let a soak bound the worst stall (scripts/soak.sh).
const LOOP_BUCKETS: [f64; 12] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.05, 0.25, 1.0, 5.0,
];

/// All counters exported on `/metrics`.
#[derive(Debug, Default)]
pub struct Stats {
    pub connections: [u64; 7],
    pub connections_accepted: u64,
    pub connections_refused_limit: u64,
    pub messages_sent: u64,
    pub bytes_sent: u64,
    pub frames_dropped_slow: u64,
    /// Log batches serialized (once per dialect with subscribers, shared by all of them).
    pub log_frames_encoded: u64,
    pub log_lines_dropped: u64,
    pub slow_consumers_closed: u64,
    pub docker_up: bool,
    pub log_followers: u64,
    pub agents_connected: u64,
    pub messages_in: BTreeMap<String, u64>,
    pub messages_out: BTreeMap<&'static str, u64>,
    pub bad_input: BTreeMap<&'static str, u64>,
    pub commands: BTreeMap<&'static str, u64>,
    pub auth_failures: BTreeMap<&'static str, u64>,
    pub unknown_command_responses: u64,
    pub http_requests: BTreeMap<u16, u64>,
    loop_buckets: [u64; LOOP_BUCKETS.len()],
    loop_count: u64,
    loop_sum_secs: f64,
}

impl Stats {
    pub fn conn_opened(&mut self, e: Endpoint) {
        self.connections[e.index()] += 1;
    }
    pub fn conn_closed(&mut self, e: Endpoint) {
        let c = &mut self.connections[e.index()];
        *c = c.saturating_sub(1);
    }
    pub fn conn_moved(&mut self, from: Endpoint, to: Endpoint) {
        self.conn_closed(from);
        self.conn_opened(to);
    }
    pub fn total_connections(&self) -> u64 {
        self.connections.iter().sum()
    }
    /// Counts one incoming message by type; unknown types are bucketed so
    /// a hostile client cannot grow the map.
    pub fn message_in(&mut self, kind: &str) {
        const KNOWN: [&str; 14] = [
            "auth",
            "ping",
            "pong",
            "start_log_stream",
            "stop_log_stream",
            "docker_command",
            "command",
            "metrics",
            "log",
            "command_response",
            "docker_response",
            "subscribe_metrics",
            "unsubscribe_metrics",
            "socketio",
        ];
        let key = if KNOWN.contains(&kind) { kind } else { "other" };
        if let Some(n) = self.messages_in.get_mut(key) {
            *n += 1;
        } else {
            self.messages_in.insert(key.to_string(), 1);
        }
    }
    pub fn message_out(&mut self, kind: &'static str, n: u64) {
        *self.messages_out.entry(kind).or_default() += n;
    }
    /// [`Stats::message_out`] for a name known only at run time: names not in
    /// the protocol are bucketed as "other".
    pub fn message_out_named(&mut self, kind: &str, n: u64) {
        const KNOWN: [&str; 13] = [
            "initial_state",
            "alerts",
            "container_state_change",
            "log_update",
            "log_stream_stopped",
            "log_dropped",
            "metrics",
            "log",
            "alert",
            "error",
            "pong",
            "command_response",
            "docker_response",
        ];
        let key = KNOWN
            .iter()
            .find(|k| **k == kind)
            .copied()
            .unwrap_or("other");
        self.message_out(key, n);
    }
    pub fn bad_input(&mut self, kind: &'static str) {
        *self.bad_input.entry(kind).or_default() += 1;
    }
    pub fn command(&mut self, outcome: &'static str) {
        *self.commands.entry(outcome).or_default() += 1;
    }
    pub fn auth_failure(&mut self, kind: &'static str) {
        *self.auth_failures.entry(kind).or_default() += 1;
    }
    pub fn http_request(&mut self, status: u16) {
        *self.http_requests.entry(status).or_default() += 1;
    }
    pub fn loop_iteration(&mut self, d: Duration) {
        let s = d.as_secs_f64();
        self.loop_count += 1;
        self.loop_sum_secs += s;
        for (i, b) in LOOP_BUCKETS.iter().enumerate() {
            if s <= *b {
                self.loop_buckets[i] += 1;
            }
        }
    }

    /// Renders Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut o = String::with_capacity(4096);
        let _ = writeln!(
            o,
            "# HELP dockwire_connections Open connections by endpoint."
        );
        let _ = writeln!(o, "# TYPE dockwire_connections gauge");
        for e in Endpoint::ALL {
            let _ = writeln!(
                o,
                "dockwire_connections{{endpoint=\"{}\"}} {}",
                e.label(),
                self.connections[e.index()]
            );
        }
        counter(
            &mut o,
            "dockwire_connections_accepted_total",
            "Connections accepted.",
            self.connections_accepted,
        );
        counter(
            &mut o,
            "dockwire_connections_refused_total",
            "Connections refused at max_connections.",
            self.connections_refused_limit,
        );
        counter(
            &mut o,
            "dockwire_messages_sent_total",
            "WebSocket messages queued to clients.",
            self.messages_sent,
        );
        counter(
            &mut o,
            "dockwire_bytes_sent_total",
            "Bytes written to sockets.",
            self.bytes_sent,
        );
        counter(
            &mut o,
            "dockwire_log_frames_encoded_total",
            "log_update frames serialized (each shared by every subscriber of its dialect).",
            self.log_frames_encoded,
        );
        counter(
            &mut o,
            "dockwire_frames_dropped_total",
            "Frames dropped for slow consumers.",
            self.frames_dropped_slow,
        );
        counter(
            &mut o,
            "dockwire_log_lines_dropped_total",
            "Log lines dropped for slow consumers.",
            self.log_lines_dropped,
        );
        counter(
            &mut o,
            "dockwire_slow_consumers_closed_total",
            "Sockets closed (1013) past the hard queue cap.",
            self.slow_consumers_closed,
        );
        counter(
            &mut o,
            "dockwire_unknown_command_responses_total",
            "Agent responses with an unknown command_id.",
            self.unknown_command_responses,
        );
        gauge(
            &mut o,
            "dockwire_docker_up",
            "1 when the Docker engine is reachable.",
            u64::from(self.docker_up),
        );
        gauge(
            &mut o,
            "dockwire_log_followers",
            "Docker log followers running (one per followed container).",
            self.log_followers,
        );
        gauge(
            &mut o,
            "dockwire_agents_connected",
            "Authenticated agents connected.",
            self.agents_connected,
        );
        labelled(
            &mut o,
            "dockwire_messages_received_total",
            "Messages received by type.",
            "type",
            self.messages_in.iter().map(|(k, v)| (k.as_str(), *v)),
        );
        labelled(
            &mut o,
            "dockwire_messages_sent_by_type_total",
            "Messages sent by type.",
            "type",
            self.messages_out.iter().map(|(k, v)| (*k, *v)),
        );
        labelled(
            &mut o,
            "dockwire_bad_input_total",
            "Bad input answered with an error, by kind.",
            "kind",
            self.bad_input.iter().map(|(k, v)| (*k, *v)),
        );
        labelled(
            &mut o,
            "dockwire_commands_total",
            "Commands by outcome.",
            "outcome",
            self.commands.iter().map(|(k, v)| (*k, *v)),
        );
        labelled(
            &mut o,
            "dockwire_auth_failures_total",
            "Authentication failures by kind.",
            "kind",
            self.auth_failures.iter().map(|(k, v)| (*k, *v)),
        );
        let _ = writeln!(
            o,
            "# HELP dockwire_http_requests_total Plain HTTP requests by status."
        );
        let _ = writeln!(o, "# TYPE dockwire_http_requests_total counter");
        for (s, n) in &self.http_requests {
            let _ = writeln!(o, "dockwire_http_requests_total{{status=\"{s}\"}} {n}");
        }
        let _ = writeln!(
            o,
            "# HELP dockwire_loop_iteration_seconds Event-loop iteration time (work between polls)."
        );
        let _ = writeln!(o, "# TYPE dockwire_loop_iteration_seconds histogram");
        for (i, b) in LOOP_BUCKETS.iter().enumerate() {
            let _ = writeln!(
                o,
                "dockwire_loop_iteration_seconds_bucket{{le=\"{b}\"}} {}",
                self.loop_buckets[i]
            );
        }
        let _ = writeln!(
            o,
            "dockwire_loop_iteration_seconds_bucket{{le=\"+Inf\"}} {}",
            self.loop_count
        );
        let _ = writeln!(
            o,
            "dockwire_loop_iteration_seconds_sum {}",
            self.loop_sum_secs
        );
        let _ = writeln!(
            o,
            "dockwire_loop_iteration_seconds_count {}",
            self.loop_count
        );
        o
    }
}

/// The permessage-deflate counters (kept by the loop's compressor and
/// inflater, appended to the `/metrics` text).
pub fn render_deflate(o: &mut String, d: &crate::ws::deflate::DeflateStats) {
    counter(
        o,
        "dockwire_ws_deflate_compressions_total",
        "Messages compressed with permessage-deflate (once per shared frame).",
        d.compressions,
    );
    counter(
        o,
        "dockwire_ws_deflate_frames_sent_total",
        "Compressed frames queued on sockets.",
        d.frames_sent,
    );
    counter(
        o,
        "dockwire_ws_deflate_bytes_saved_total",
        "Bytes compressed frames saved against their plain form.",
        d.bytes_saved,
    );
    counter(
        o,
        "dockwire_ws_deflate_messages_inflated_total",
        "Compressed client messages inflated.",
        d.messages_inflated,
    );
}

fn counter(o: &mut String, name: &str, help: &str, v: u64) {
    let _ = write!(
        o,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"
    );
}

fn gauge(o: &mut String, name: &str, help: &str, v: u64) {
    let _ = write!(o, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}\n");
}

fn labelled<'a>(
    o: &mut String,
    name: &str,
    help: &str,
    label: &str,
    rows: impl Iterator<Item = (&'a str, u64)>,
) {
    let _ = write!(o, "# HELP {name} {help}\n# TYPE {name} counter\n");
    for (k, v) in rows {
        let _ = writeln!(o, "{name}{{{label}=\"{k}\"}} {v}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let mut s = Stats::default();
        s.conn_opened(Endpoint::Browser);
        s.message_in("ping");
        s.message_in("definitely-not-a-type");
        s.loop_iteration(Duration::from_micros(70));
        let t = s.render();
        assert!(t.contains("dockwire_connections{endpoint=\"ws\"} 1"), "{t}");
        assert!(
            t.contains("dockwire_messages_received_total{type=\"other\"} 1"),
            "{t}"
        );
        assert!(
            t.contains("dockwire_loop_iteration_seconds_bucket{le=\"0.0001\"} 1"),
            "{t}"
        );
        assert!(
            t.contains("dockwire_loop_iteration_seconds_bucket{le=\"0.00005\"} 0"),
            "{t}"
        );
    }
}
