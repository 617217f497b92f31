//! Alerts: the rules of `[[alerts]]` evaluated on what the hub sees, and the
//! state of every alert (rule, server, and container for per-container rules).
//!
//! Inputs: metrics samples (cpu, memory, disk), agents going and coming
//! (`agent_offline`), container changes ([`State::alerts_on_container`]:
//! exits, health, restarts), live log lines
//! ([`State::alerts_on_log_lines`]: `log_match`) and the tick (holds that
//! ran out, windows that passed). Each change (`firing`, `resolved`) is
//! published as an `alert` to the server's metrics and agent-log watchers,
//! kept in `recent`, and handed to the notifier threads (never sent from
//! here: [`crate::notify`]).
//!
//! Invariants:
//! - One state per alert key; an alert fires once until it resolves.
//! - Only pending (condition true, hold running) and firing alerts hold a
//!   state; every map here is bounded ([`MAX_ALERT_STATES`], [`MAX_RECENT`],
//!   [`MAX_REQUESTED`]), and per-container entries leave with their container.
//! - `log_match` fires at most once a minute per rule and container: it
//!   resolves only after [`LOG_MATCH_QUIET`] without a matching line.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use crate::config::{AlertMetric, AlertRule, MAX_RESTARTS_THRESHOLD};
use crate::feed::metrics::rfc3339_now;
use crate::protocol::json::Event;
use crate::protocol::model::Container;
use crate::writer::Priority;

use super::session::ConnId;
use super::{Io, State};

/// Alert changes kept for `GET /api/v1/alerts` `recent`.
pub const MAX_RECENT: usize = 1000;
/// Alert states (pending or firing) kept at most; past it new ones are not
/// tracked (counted, logged once).
pub const MAX_ALERT_STATES: usize = 10_000;
/// Containers with a stop or restart asked through dockwire, kept at most.
pub const MAX_REQUESTED: usize = 1000;
/// How long a stop/restart asked through `docker_command` explains an exit.
pub const REQUESTED_FOR: Duration = Duration::from_secs(60);
/// A firing `log_match` alert resolves after this long without a match.
pub const LOG_MATCH_QUIET: Duration = Duration::from_secs(60);
/// Longest piece of a log line quoted in an alert message.
const QUOTED_LINE_CHARS: usize = 200;

/// Which alert: a rule (its index in the config) on a server, and a
/// container for per-container rules.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AlertKey {
    pub rule: usize,
    pub server: String,
    pub container: Option<String>,
}

/// One alert's state: pending (condition true since), firing, or both.
#[derive(Debug, Default)]
pub struct AlertState {
    /// Since when the condition holds (for rules with a hold).
    pub since: Option<Instant>,
    /// The alert object as it fired; `None` while not firing.
    pub firing: Option<Value>,
    /// `log_match`: the last matching line's time.
    pub last_match: Option<Instant>,
    /// The container's name when the state was made (per-container rules).
    pub container_name: Option<String>,
}

/// Every alert's state, the recent changes, and what container rules need.
#[derive(Debug, Default)]
pub struct Alerts {
    states: HashMap<AlertKey, AlertState>,
    /// Newest last.
    recent: VecDeque<Value>,
    /// (server, container) -> restart times, oldest first.
    restarts: HashMap<(String, String), VecDeque<Instant>>,
    /// (server, container) -> when a stop/restart was asked through dockwire.
    requested: HashMap<(String, String), Instant>,
    /// Where changes go besides the sockets (notifier threads).
    pub notifier: Option<crate::notify::Notifier>,
    /// States not tracked because [`MAX_ALERT_STATES`] was reached.
    pub untracked: u64,
}

impl Alerts {
    /// The firing alerts, oldest first.
    pub fn firing(&self) -> Vec<&Value> {
        let mut v: Vec<&Value> = self
            .states
            .values()
            .filter_map(|s| s.firing.as_ref())
            .collect();
        fn order(x: &Value) -> (&str, &str) {
            (
                x["started_at"].as_str().unwrap_or(""),
                x["id"].as_str().unwrap_or(""),
            )
        }
        v.sort_by(|a, b| order(a).cmp(&order(b)));
        v
    }

    pub fn firing_count(&self) -> usize {
        self.states.values().filter(|s| s.firing.is_some()).count()
    }

    /// The state of `key`, made if room is left (`None` when full).
    fn entry(&mut self, key: &AlertKey) -> Option<&mut AlertState> {
        if !self.states.contains_key(key) {
            if self.states.len() >= MAX_ALERT_STATES {
                if self.untracked == 0 {
                    log::warn!(
                        "{MAX_ALERT_STATES} alert states are tracked; further ones are ignored"
                    );
                }
                self.untracked += 1;
                return None;
            }
            self.states.insert(key.clone(), AlertState::default());
        }
        self.states.get_mut(key)
    }

    /// Forgets a state that is neither pending nor firing.
    fn tidy(&mut self, key: &AlertKey) {
        if self
            .states
            .get(key)
            .is_some_and(|s| s.firing.is_none() && s.since.is_none() && s.last_match.is_none())
        {
            self.states.remove(key);
        }
    }

    /// After a reload: `rule_map[i]` is the new index of old rule `i`
    /// (`None`: the rule is gone or changed). States of rules that are gone,
    /// and everything about servers `server_kept` refuses, are forgotten.
    /// Returns the names (alert ids) of firing alerts that were dropped.
    pub(super) fn remap(
        &mut self,
        rule_map: &[Option<usize>],
        server_kept: impl Fn(&str) -> bool,
    ) -> Vec<String> {
        let mut dropped = Vec::new();
        let states = std::mem::take(&mut self.states);
        for (mut key, state) in states {
            let new_rule = rule_map.get(key.rule).copied().flatten();
            match new_rule {
                Some(r) if server_kept(&key.server) => {
                    key.rule = r;
                    self.states.insert(key, state);
                }
                _ => {
                    if let Some(f) = &state.firing {
                        dropped.push(f["id"].as_str().unwrap_or("?").to_string());
                    }
                }
            }
        }
        self.restarts.retain(|(server, _), _| server_kept(server));
        self.requested.retain(|(server, _), _| server_kept(server));
        dropped
    }

    fn is_firing(&self, key: &AlertKey) -> bool {
        self.states.get(key).is_some_and(|s| s.firing.is_some())
    }

    fn requested_recently(&self, server: &str, container: &str, now: Instant) -> bool {
        self.requested
            .get(&(server.to_string(), container.to_string()))
            .is_some_and(|t| now.duration_since(*t) < REQUESTED_FOR)
    }
}

/// A change to publish.
struct Change {
    key: AlertKey,
    firing: bool,
    value: Option<f64>,
    message: String,
    container_name: Option<String>,
}

/// A stable id for an alert instance (the same rule, server and container
/// always get the same id, across restarts of the daemon too).
pub fn alert_id(rule: &str, server: &str, container: Option<&str>) -> String {
    let seed = format!(
        "dockwire-alert\0{rule}\0{server}\0{}",
        container.unwrap_or("")
    );
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, seed.as_bytes()).to_string()
}

/// The fullest mount of a metrics sample: (percent used, mount).
fn fullest_disk(data: &Value) -> Option<(f64, String)> {
    data.get("disk_usage")?
        .as_array()?
        .iter()
        .filter_map(|d| {
            let used = d.get("used")?.as_f64()?;
            let total = d.get("total")?.as_f64()?;
            (total > 0.0).then(|| {
                let mount = d.get("mount").and_then(Value::as_str).unwrap_or("?");
                ((used / total * 100.0).min(100.0), mount.to_string())
            })
        })
        .max_by(|a, b| a.0.total_cmp(&b.0))
}

fn human(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

fn is_stopped(state: &str) -> bool {
    matches!(state, "exited" | "dead")
}

/// The start of `line`, at most [`QUOTED_LINE_CHARS`] characters.
fn quoted(line: &str) -> String {
    let mut s: String = line.chars().take(QUOTED_LINE_CHARS).collect();
    if s.len() < line.len() {
        s.push('…');
    }
    s
}

impl State {
    fn server_name(&self, server_id: &str) -> String {
        self.servers
            .get(server_id)
            .map_or_else(|| server_id.to_string(), |s| s.name.clone())
    }

    fn rules_of(&self, metric: AlertMetric) -> impl Iterator<Item = (usize, &AlertRule)> {
        self.config
            .alerts
            .iter()
            .enumerate()
            .filter(move |(_, r)| r.metric == metric)
    }

    /// Publishes one change: the alert object is built, kept (firing,
    /// recent), sent to watchers and handed to the notifiers.
    fn emit(&mut self, io: &mut Io<'_>, c: Change) {
        let Some(rule) = self.config.alerts.get(c.key.rule) else {
            return;
        };
        // A server another hub owns: that hub raises its alerts.
        if c.firing && self.relay_hub(&c.key.server).is_some() {
            return;
        }
        let now_text = rfc3339_now();
        let started_at = if c.firing {
            now_text.clone()
        } else {
            self.alerts
                .states
                .get(&c.key)
                .and_then(|s| s.firing.as_ref())
                .and_then(|f| f["started_at"].as_str())
                .map_or_else(|| now_text.clone(), str::to_string)
        };
        let mut obj = json!({
            "id": alert_id(&rule.name, &c.key.server, c.key.container.as_deref()),
            "rule": rule.name,
            "metric": rule.metric.as_str(),
            "threshold": rule.threshold,
            "hold_seconds": rule.hold.as_secs_f64(),
            "value": c.value,
            "state": if c.firing { "firing" } else { "resolved" },
            "timestamp": now_text,
            "server_id": c.key.server,
            "message": c.message,
            "started_at": started_at,
        });
        if let (Some(id), Value::Object(m)) = (&c.key.container, &mut obj) {
            m.insert("container_id".into(), Value::from(id.clone()));
            m.insert(
                "container_name".into(),
                c.container_name.clone().map_or(Value::Null, Value::from),
            );
        }
        if c.firing {
            let Some(st) = self.alerts.entry(&c.key) else {
                return;
            };
            st.firing = Some(obj.clone());
            st.container_name.clone_from(&c.container_name);
        } else if let Some(st) = self.alerts.states.get_mut(&c.key) {
            st.firing = None;
            st.since = None;
            st.last_match = None;
            self.alerts.tidy(&c.key);
        }
        if self.alerts.recent.len() == MAX_RECENT {
            self.alerts.recent.pop_front();
        }
        self.alerts.recent.push_back(obj.clone());
        if let Some(n) = &self.alerts.notifier {
            n.notify(&rule.name, c.firing, &obj);
        }
        let mut fields = Map::new();
        fields.insert("server_id".into(), Value::from(c.key.server.clone()));
        fields.insert("data".into(), obj);
        let ev = Event::Object {
            name: "alert",
            fields: &fields,
        };
        self.publish_to_watchers(io, &c.key.server, &ev);
    }

    fn emit_all(&mut self, io: &mut Io<'_>, changes: Vec<Change>) {
        for c in changes {
            self.emit(io, c);
        }
    }

    /// Threshold rules (cpu, memory, disk) on one metrics sample.
    pub(super) fn evaluate_alerts(&mut self, io: &mut Io<'_>, server_id: &str, data: &Value) {
        let thresholds = self.config.alerts.iter().any(|r| {
            matches!(
                r.metric,
                AlertMetric::CpuPercent | AlertMetric::MemoryPercent | AlertMetric::DiskPercent
            )
        });
        if !thresholds {
            return;
        }
        let now = io.now;
        let cpu = data.get("cpu_percent").and_then(Value::as_f64);
        let mem = data.get("memory_percent").and_then(Value::as_f64);
        let disk = fullest_disk(data);
        let name = self.server_name(server_id);
        let mut out = Vec::new();
        for (i, rule) in self.config.alerts.iter().enumerate() {
            let (what, value) = match rule.metric {
                AlertMetric::CpuPercent => ("CPU".to_string(), cpu),
                AlertMetric::MemoryPercent => ("Memory".to_string(), mem),
                AlertMetric::DiskPercent => match &disk {
                    Some((v, mount)) => (format!("Disk {mount}"), Some(*v)),
                    None => continue,
                },
                _ => continue,
            };
            let Some(v) = value else { continue };
            let key = AlertKey {
                rule: i,
                server: server_id.to_string(),
                container: None,
            };
            if v > rule.threshold {
                let Some(st) = self.alerts.entry(&key) else {
                    continue;
                };
                let since = *st.since.get_or_insert(now);
                if st.firing.is_none() && now.duration_since(since) >= rule.hold {
                    out.push(Change {
                        key,
                        firing: true,
                        value: Some(v),
                        message: format!(
                            "{what} at {v:.1}% on {name}, above {}% for {}",
                            rule.threshold,
                            human(rule.hold)
                        ),
                        container_name: None,
                    });
                }
            } else if self.alerts.is_firing(&key) {
                out.push(Change {
                    key,
                    firing: false,
                    value: Some(v),
                    message: format!(
                        "{what} back to {v:.1}% on {name} (threshold {}%)",
                        rule.threshold
                    ),
                    container_name: None,
                });
            } else if let Some(st) = self.alerts.states.get_mut(&key) {
                st.since = None;
                self.alerts.tidy(&key);
            }
        }
        self.emit_all(io, out);
    }

    /// `agent_offline` rules, checked on every tick.
    pub(super) fn check_offline_alerts(&mut self, io: &mut Io<'_>) {
        if !self.raises_offline_alerts() {
            return;
        }
        let now = io.now;
        let mut out = Vec::new();
        for (i, rule) in self.rules_of(AlertMetric::AgentOffline) {
            for (sid, state) in &self.servers {
                let Some(since) = state.offline_since else {
                    continue;
                };
                let key = AlertKey {
                    rule: i,
                    server: sid.clone(),
                    container: None,
                };
                if now.duration_since(since) >= rule.hold && !self.alerts.is_firing(&key) {
                    out.push(Change {
                        key,
                        firing: true,
                        value: None,
                        message: format!("Agent {} offline for {}", state.name, human(rule.hold)),
                        container_name: None,
                    });
                }
            }
        }
        self.emit_all(io, out);
    }

    /// The agent of `server_id` is back: its `agent_offline` alerts resolve.
    pub(super) fn resolve_offline_alert(&mut self, io: &mut Io<'_>, server_id: &str) {
        let name = self.server_name(server_id);
        let out: Vec<Change> = self
            .rules_of(AlertMetric::AgentOffline)
            .map(|(i, _)| AlertKey {
                rule: i,
                server: server_id.to_string(),
                container: None,
            })
            .filter(|k| self.alerts.is_firing(k))
            .map(|key| Change {
                key,
                firing: false,
                value: None,
                message: format!("Agent {name} is back online"),
                container_name: None,
            })
            .collect();
        self.emit_all(io, out);
    }

    /// A stop or restart of a container was asked through dockwire: the
    /// exit (and start) it causes within [`REQUESTED_FOR`] is not alerted.
    pub(super) fn note_requested_action(
        &mut self,
        server_id: &str,
        container_id: &str,
        now: Instant,
    ) {
        let a = &mut self.alerts;
        if a.requested.len() >= MAX_REQUESTED {
            a.requested
                .retain(|_, t| now.duration_since(*t) < REQUESTED_FOR);
        }
        if a.requested.len() < MAX_REQUESTED {
            a.requested
                .insert((server_id.to_string(), container_id.to_string()), now);
        }
    }

    /// Container rules on one container change (`previous`: as it was
    /// known before, `None` for a container new to the hub).
    pub fn alerts_on_container(
        &mut self,
        io: &mut Io<'_>,
        server_id: &str,
        previous: Option<&Container>,
        current: &Container,
    ) {
        if !self.config.alerts.iter().any(|r| {
            matches!(
                r.metric,
                AlertMetric::ContainerExited
                    | AlertMetric::ContainerUnhealthy
                    | AlertMetric::ContainerRestarts
            )
        }) {
            return;
        }
        let now = io.now;
        let server = self.server_name(server_id);
        let cname = current.name.clone();
        let pair = (server_id.to_string(), current.id.clone());
        let requested = self.alerts.requested_recently(server_id, &current.id, now);
        let restarted_at =
            |p: &Container| p.started_at.is_some() && p.started_at != current.started_at;
        let new_exit = is_stopped(&current.state)
            && previous.is_none_or(|p| !is_stopped(&p.state) || restarted_at(p));
        let running = current.state == "running";
        let restart = running
            && previous
                .is_some_and(|p| p.state != "created" && (p.state != "running" || restarted_at(p)));
        if restart && requested {
            // The start that ends a requested restart: the request is spent.
            self.alerts.requested.remove(&pair);
        }
        if restart && !requested {
            let keep = MAX_RESTARTS_THRESHOLD as usize + 1;
            let tracked = self.alerts.restarts.len();
            if self.alerts.restarts.contains_key(&pair) || tracked < MAX_ALERT_STATES {
                let times = self.alerts.restarts.entry(pair.clone()).or_default();
                if times.len() == keep {
                    times.pop_front();
                }
                times.push_back(now);
            }
        }
        let mut out = Vec::new();
        for (i, rule) in self.config.alerts.iter().enumerate() {
            let key = AlertKey {
                rule: i,
                server: server_id.to_string(),
                container: Some(current.id.clone()),
            };
            let firing = self.alerts.is_firing(&key);
            let change = |firing: bool, value: Option<f64>, message: String| Change {
                key: key.clone(),
                firing,
                value,
                message,
                container_name: Some(cname.clone()),
            };
            match rule.metric {
                AlertMetric::ContainerExited => {
                    let code = current.exit_code.unwrap_or(0);
                    if new_exit && code != 0 && !requested && !firing {
                        out.push(change(
                            true,
                            Some(code as f64),
                            format!("Container {cname} on {server} exited with code {code}"),
                        ));
                    } else if firing && (running || (new_exit && code == 0)) {
                        out.push(change(
                            false,
                            current.exit_code.map(|c| c as f64),
                            format!("Container {cname} on {server} is {} again", current.state),
                        ));
                    }
                }
                AlertMetric::ContainerUnhealthy => {
                    let unhealthy = running && current.health.as_deref() == Some("unhealthy");
                    if unhealthy {
                        let Some(st) = self.alerts.entry(&key) else {
                            continue;
                        };
                        st.container_name = Some(cname.clone());
                        let since = *st.since.get_or_insert(now);
                        if st.firing.is_none() && now.duration_since(since) >= rule.hold {
                            out.push(change(
                                true,
                                None,
                                format!(
                                    "Container {cname} on {server} unhealthy for {}",
                                    human(rule.hold)
                                ),
                            ));
                        }
                    } else if firing {
                        let now_is = current.health.as_deref().unwrap_or(current.state.as_str());
                        out.push(change(
                            false,
                            None,
                            format!(
                                "Container {cname} on {server} is no longer unhealthy ({now_is})"
                            ),
                        ));
                    } else if let Some(st) = self.alerts.states.get_mut(&key) {
                        st.since = None;
                        self.alerts.tidy(&key);
                    }
                }
                AlertMetric::ContainerRestarts if restart && !requested && !firing => {
                    let n = self.alerts.restarts.get(&pair).map_or(0, |t| {
                        t.iter()
                            .filter(|t| now.duration_since(**t) <= rule.window)
                            .count()
                    });
                    if n as f64 > rule.threshold {
                        out.push(change(
                            true,
                            Some(n as f64),
                            format!(
                                "Container {cname} on {server} restarted {n} times in {}",
                                human(rule.window)
                            ),
                        ));
                    }
                }
                _ => {}
            }
        }
        self.emit_all(io, out);
    }

    /// Container alerts after a server's whole table was replaced (the
    /// local engine came back, an agent reconnected): what changed while it
    /// was away, only for containers known before (a first table alerts on
    /// nothing), and containers that are gone.
    pub(super) fn alerts_after_resync(
        &mut self,
        io: &mut Io<'_>,
        server_id: &str,
        before: HashMap<String, Container>,
    ) {
        for (id, old) in before {
            // Cloned only when it changed (most did not).
            let now = match self.table_of(server_id).and_then(|t| t.get(&id)) {
                Some(c) if *c == old => continue,
                Some(c) => c.clone(),
                None => {
                    self.alerts_on_container_removed(io, server_id, &id);
                    continue;
                }
            };
            self.alerts_on_container(io, server_id, Some(&old), &now);
        }
    }

    /// A container is gone: its alerts resolve and its entries leave.
    pub fn alerts_on_container_removed(
        &mut self,
        io: &mut Io<'_>,
        server_id: &str,
        container_id: &str,
    ) {
        let pair = (server_id.to_string(), container_id.to_string());
        self.alerts.restarts.remove(&pair);
        self.alerts.requested.remove(&pair);
        let server = self.server_name(server_id);
        let mut out = Vec::new();
        let mut gone = Vec::new();
        for (key, st) in &self.alerts.states {
            if key.server != server_id || key.container.as_deref() != Some(container_id) {
                continue;
            }
            if st.firing.is_some() {
                let name = st
                    .container_name
                    .clone()
                    .unwrap_or_else(|| container_id.to_string());
                out.push(Change {
                    key: key.clone(),
                    firing: false,
                    value: None,
                    message: format!("Container {name} on {server} was removed"),
                    container_name: Some(name),
                });
            } else {
                gone.push(key.clone());
            }
        }
        for k in gone {
            self.alerts.states.remove(&k);
        }
        self.emit_all(io, out);
    }

    /// `log_match` rules on live log lines of a container (the lines the hub
    /// sees: those of followed containers).
    pub fn alerts_on_log_lines<'a>(
        &mut self,
        io: &mut Io<'_>,
        server_id: &str,
        container_id: &str,
        lines: impl IntoIterator<Item = &'a str> + Clone,
    ) {
        if !self
            .config
            .alerts
            .iter()
            .any(|r| r.metric == AlertMetric::LogMatch)
        {
            return;
        }
        // Only now, with rules to check: the container's name.
        let known = self.table_of(server_id).and_then(|t| t.get(container_id));
        let name = known.map_or_else(|| container_id.to_string(), |c| c.name.clone());
        let container_name = name.as_str();
        let now = io.now;
        let server = self.server_name(server_id);
        let mut out = Vec::new();
        for (i, rule) in self.config.alerts.iter().enumerate() {
            let Some(pattern) = rule
                .pattern
                .as_ref()
                .filter(|_| rule.metric == AlertMetric::LogMatch)
            else {
                continue;
            };
            if rule
                .container
                .as_deref()
                .is_some_and(|c| c != container_name)
            {
                continue;
            }
            let mut matched = lines.clone().into_iter().filter(|l| pattern.0.is_match(l));
            let Some(first) = matched.next() else {
                continue;
            };
            let key = AlertKey {
                rule: i,
                server: server_id.to_string(),
                container: Some(container_id.to_string()),
            };
            let Some(st) = self.alerts.entry(&key) else {
                continue;
            };
            st.last_match = Some(now);
            st.container_name = Some(container_name.to_string());
            if st.firing.is_none() {
                // Counted only when it fires: while firing, the first match
                // is all a batch needs to keep it so.
                let count = 1 + matched.count();
                out.push(Change {
                    key,
                    firing: true,
                    value: Some(count as f64),
                    message: format!(
                        "Container {container_name} on {server} logged a line matching /{}/: {}",
                        pattern.0.as_str(),
                        quoted(first)
                    ),
                    container_name: Some(container_name.to_string()),
                });
            }
        }
        self.emit_all(io, out);
    }

    /// Periodic alert work: offline agents, holds that ran out (unhealthy),
    /// windows that passed (restarts, quiet log_match), old request marks.
    pub(super) fn alerts_tick(&mut self, io: &mut Io<'_>) {
        self.check_offline_alerts(io);
        let now = io.now;
        self.alerts
            .requested
            .retain(|_, t| now.duration_since(*t) < REQUESTED_FOR);
        let longest = self
            .rules_of(AlertMetric::ContainerRestarts)
            .map(|(_, r)| r.window)
            .max()
            .unwrap_or_default();
        self.alerts.restarts.retain(|_, times| {
            while times
                .front()
                .is_some_and(|t| now.duration_since(*t) > longest)
            {
                times.pop_front();
            }
            !times.is_empty()
        });
        if self.alerts.states.is_empty() {
            return;
        }
        let mut out = Vec::new();
        for (key, st) in &self.alerts.states {
            let Some(rule) = self.config.alerts.get(key.rule) else {
                continue;
            };
            // Most states need nothing on a tick: decide before building names.
            let due = match rule.metric {
                AlertMetric::ContainerUnhealthy => {
                    st.firing.is_none()
                        && st.since.is_some_and(|s| now.duration_since(s) >= rule.hold)
                }
                AlertMetric::LogMatch => {
                    st.firing.is_some()
                        && st
                            .last_match
                            .is_none_or(|t| now.duration_since(t) >= LOG_MATCH_QUIET)
                }
                AlertMetric::ContainerRestarts => st.firing.is_some(),
                _ => false,
            };
            if !due {
                continue;
            }
            let name = st
                .container_name
                .clone()
                .unwrap_or_else(|| key.container.clone().unwrap_or_default());
            let server = self.server_name(&key.server);
            let change = |firing: bool, value: Option<f64>, message: String| Change {
                key: key.clone(),
                firing,
                value,
                message,
                container_name: Some(name.clone()),
            };
            match rule.metric {
                AlertMetric::ContainerUnhealthy => {
                    if let Some(since) = st.since
                        && st.firing.is_none()
                        && now.duration_since(since) >= rule.hold
                    {
                        out.push(change(
                            true,
                            None,
                            format!(
                                "Container {name} on {server} unhealthy for {}",
                                human(rule.hold)
                            ),
                        ));
                    }
                }
                AlertMetric::LogMatch
                    if st.firing.is_some()
                        && st
                            .last_match
                            .is_none_or(|t| now.duration_since(t) >= LOG_MATCH_QUIET) =>
                {
                    let pattern = rule.pattern.as_ref().map_or("", |p| p.0.as_str());
                    out.push(change(
                        false,
                        None,
                        format!(
                            "No line of container {name} on {server} matched /{pattern}/ for {}",
                            human(LOG_MATCH_QUIET)
                        ),
                    ));
                }
                AlertMetric::ContainerRestarts if st.firing.is_some() => {
                    let pair = (
                        key.server.clone(),
                        key.container.clone().unwrap_or_default(),
                    );
                    let n = self.alerts.restarts.get(&pair).map_or(0, |t| {
                        t.iter()
                            .filter(|t| now.duration_since(**t) <= rule.window)
                            .count()
                    });
                    if n as f64 <= rule.threshold {
                        out.push(change(
                            false,
                            Some(n as f64),
                            format!(
                                "Container {name} on {server} restarted {n} times in the last {}",
                                human(rule.window)
                            ),
                        ));
                    }
                }
                _ => {}
            }
        }
        self.emit_all(io, out);
    }

    /// Appends the alert series to a `/metrics` text: firing alerts and the
    /// notifiers' outcomes.
    pub fn render_alert_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        let _ = write!(
            out,
            "# HELP dockwire_alerts_firing Alerts firing now.\n# TYPE dockwire_alerts_firing gauge\n\
             dockwire_alerts_firing {}\n",
            self.alerts.firing_count()
        );
        if let Some(n) = &self.alerts.notifier {
            n.render_metrics(out);
        }
    }

    /// Every alert firing in the fleet: this hub's, then (in a cluster)
    /// those the other hubs' beats said, each once, oldest first.
    fn fleet_firing(&self) -> Vec<&Value> {
        let mut all = self.alerts.firing();
        let mut seen: std::collections::HashSet<&str> =
            all.iter().filter_map(|a| a["id"].as_str()).collect();
        for a in self.remote_alerts() {
            if a["id"].as_str().is_some_and(|id| seen.insert(id)) {
                all.push(a);
            }
        }
        all.sort_by(|a, b| {
            let key = |x: &Value| {
                (
                    x["started_at"].as_str().map(str::to_string),
                    x["id"].as_str().map(str::to_string),
                )
            };
            key(a).cmp(&key(b))
        });
        all
    }

    /// The `alerts` message's fields: `{"firing":[...]}` (the whole fleet's).
    pub fn alerts_snapshot_fields(&self) -> Map<String, Value> {
        let mut fields = Map::new();
        fields.insert(
            "firing".into(),
            Value::Array(self.fleet_firing().into_iter().cloned().collect()),
        );
        fields
    }

    /// Sends `{"type":"alerts","firing":[...]}` (Socket.IO: the `alerts`
    /// event) to one socket; browsers get it right after `initial_state`.
    pub(super) fn send_alerts_snapshot(&self, io: &mut Io<'_>, conn: ConnId) {
        let fields = self.alerts_snapshot_fields();
        let f = io.dialect(conn).encode(&Event::Object {
            name: "alerts",
            fields: &fields,
        });
        io.send(conn, &f, Priority::Essential);
    }

    /// `GET /api/v1/alerts`: `{"firing":[...],"recent":[...]}`, recent
    /// newest first.
    pub fn alerts_json(&self) -> Vec<u8> {
        let body = json!({
            "firing": self.fleet_firing(),
            "recent": self.alerts.recent.iter().rev().collect::<Vec<_>>(),
        });
        serde_json::to_vec(&body).unwrap_or_else(|_| b"{\"firing\":[],\"recent\":[]}".to_vec())
    }
}
