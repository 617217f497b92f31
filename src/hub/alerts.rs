//! Threshold alerts: CPU and memory above a threshold for a hold time, and
//! agents offline for a hold time. Each change (firing, resolved) is
//! published to the server's metrics and agent-log watchers.
//!
//! Invariant: one state per (server, rule); a rule fires once until it
//! resolves.

use std::time::Instant;

use serde_json::{Map, Value, json};

use crate::config::{AlertMetric, AlertRule};
use crate::feed::metrics::rfc3339_now;
use crate::protocol::json::Event;

use super::{Io, State};

/// One alert rule's state on one server.
#[derive(Debug, Default, Clone)]
pub struct AlertState {
    pub since: Option<Instant>,
    pub firing: bool,
}

/// The `alert` message's fields.
fn alert_fields(
    server_id: &str,
    rule: &AlertRule,
    state: &str,
    value: Option<f64>,
) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("server_id".into(), Value::from(server_id));
    m.insert(
        "data".into(),
        json!({
            "rule": rule.name, "metric": rule.metric.as_str(), "threshold": rule.threshold,
            "hold_seconds": rule.hold.as_secs_f64(), "value": value, "state": state,
            "timestamp": rfc3339_now(),
        }),
    );
    m
}

impl State {
    fn send_alert(&mut self, io: &mut Io<'_>, server_id: &str, fields: &Map<String, Value>) {
        let ev = Event::Object {
            name: "alert",
            fields,
        };
        self.publish_to_watchers(io, server_id, &ev);
    }

    pub(super) fn evaluate_alerts(
        &mut self,
        io: &mut Io<'_>,
        server_id: &str,
        cpu: Option<f64>,
        mem: Option<f64>,
    ) {
        let now = io.now;
        let mut out = Vec::new();
        let Some(state) = self.servers.get_mut(server_id) else {
            return;
        };
        for (i, rule) in self.config.alerts.iter().enumerate() {
            let value = match rule.metric {
                AlertMetric::CpuPercent => cpu,
                AlertMetric::MemoryPercent => mem,
                AlertMetric::AgentOffline => continue,
            };
            let Some(v) = value else { continue };
            let a = &mut state.alerts[i];
            if v > rule.threshold {
                let since = *a.since.get_or_insert(now);
                if !a.firing && now.duration_since(since) >= rule.hold {
                    a.firing = true;
                    out.push(alert_fields(server_id, rule, "firing", Some(v)));
                }
            } else {
                a.since = None;
                if a.firing {
                    a.firing = false;
                    out.push(alert_fields(server_id, rule, "resolved", Some(v)));
                }
            }
        }
        for f in out {
            self.send_alert(io, server_id, &f);
        }
    }

    /// `agent_offline` rules, checked on every tick.
    pub(super) fn check_offline_alerts(&mut self, io: &mut Io<'_>) {
        let now = io.now;
        let mut out = Vec::new();
        for (sid, state) in &mut self.servers {
            let Some(since) = state.offline_since else {
                continue;
            };
            for (i, rule) in self.config.alerts.iter().enumerate() {
                if rule.metric == AlertMetric::AgentOffline
                    && !state.alerts[i].firing
                    && now.duration_since(since) >= rule.hold
                {
                    state.alerts[i].firing = true;
                    out.push((sid.clone(), alert_fields(sid, rule, "firing", None)));
                }
            }
        }
        for (sid, f) in out {
            self.send_alert(io, &sid, &f);
        }
    }

    pub(super) fn resolve_offline_alert(&mut self, io: &mut Io<'_>, server_id: &str) {
        let mut out = Vec::new();
        if let Some(state) = self.servers.get_mut(server_id) {
            for (i, rule) in self.config.alerts.iter().enumerate() {
                if rule.metric == AlertMetric::AgentOffline && state.alerts[i].firing {
                    state.alerts[i].firing = false;
                    out.push(alert_fields(server_id, rule, "resolved", None));
                }
            }
        }
        for f in out {
            self.send_alert(io, server_id, &f);
        }
    }
}
