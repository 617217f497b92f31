//! Docker feed events applied to the hub: the container table, state-change
//! broadcasts, engine up/down, and container-name resolution.
//!
//! Invariant: every ready browser sees `initial_state` before any
//! `container_state_change`, and changes in the order Docker emitted them
//! (the feed delivers them in order and the loop handles them in order).

use std::collections::HashMap;

use crate::feed::DockerEvent;
use crate::protocol::json::Event;
use crate::protocol::model::Container;
use crate::writer::Priority;

use super::logs::LogEvent;
use super::session::ConnId;
use super::topics::{Publish, TopicKey};
use super::{Io, State};

impl State {
    fn containers_key(&self) -> TopicKey {
        TopicKey::Containers(self.config.server_id.clone())
    }

    /// Applies one Docker feed event.
    pub(super) fn on_docker(&mut self, io: &mut Io<'_>, ev: DockerEvent) {
        match ev {
            DockerEvent::Up { containers } => {
                self.docker_up = true;
                self.docker_error = None;
                io.stats.docker_up = true;
                let before = std::mem::replace(
                    &mut self.containers,
                    containers.into_iter().map(|c| (c.id.clone(), c)).collect(),
                );
                self.broadcast_initial_state(io);
                let sid = self.config.server_id.clone();
                self.publish_server_state(io, &sid);
                self.alerts_after_resync(io, &sid, before);
                // Log streams the outage suspended go on where they were.
                self.resume_server_logs(io, &sid);
            }
            DockerEvent::Down { reason } => {
                log::warn!("docker engine unavailable: {reason}");
                self.docker_up = false;
                self.docker_error = Some(reason.clone());
                io.stats.docker_up = false;
                let sid = self.config.server_id.clone();
                // Log streams wait for the engine (SPEC 7), subscribers stay.
                self.suspend_server_logs(io, &sid);
                self.publish_server_state(io, &sid);
            }
            DockerEvent::Changed(c) => {
                let sid = self.config.server_id.clone();
                let ev = Event::ContainerChanged {
                    server_id: &sid,
                    container: &c,
                };
                self.publish_container_event(io, &sid, &c, &ev);
                let previous = self.containers.remove(&c.id);
                self.alerts_on_container(io, &sid, previous.as_ref(), &c);
                self.containers.insert(c.id.clone(), c);
            }
            DockerEvent::Removed { id } => {
                if let Some(gone) = self.containers.remove(&id) {
                    let sid = self.config.server_id.clone();
                    let ev = Event::ContainerRemoved {
                        server_id: &sid,
                        id: &id,
                    };
                    self.publish_container_event(io, &sid, &gone, &ev);
                    self.alerts_on_container_removed(io, &sid, &id);
                }
            }
            DockerEvent::Stats(stats) => {
                let sid = self.config.server_id.clone();
                self.publish_stats(io, &sid, &stats);
            }
            DockerEvent::LogHistory {
                follow_id, lines, ..
            } => self.on_log_event(io, LogEvent::History(follow_id, lines)),
            DockerEvent::LogLines {
                follow_id, lines, ..
            } => self.on_log_event(io, LogEvent::Lines(follow_id, lines)),
            DockerEvent::LogEnded {
                follow_id,
                reason,
                engine_lost,
                ..
            } => self.on_log_event(io, LogEvent::Ended(follow_id, reason, engine_lost)),
            DockerEvent::ActionDone {
                request_id,
                success,
                message,
            } => {
                self.on_local_action_done(io, request_id, success, &message);
            }
        }
    }

    /// Containers sorted by name, for `initial_state` and the REST endpoint.
    pub fn sorted_containers(&self) -> Vec<&Container> {
        let mut v: Vec<&Container> = self.containers.values().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Sends `initial_state` to every ready browser (after a reconnect to the engine).
    fn broadcast_initial_state(&mut self, io: &mut Io<'_>) {
        let key = self.containers_key();
        let mut list: Vec<&Container> = self.containers.values().collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        let ev = Event::InitialState {
            server_id: &self.config.server_id,
            containers: &list,
            request_id: None,
        };
        self.topics.publish(io, &key, &ev, Publish::ESSENTIAL);
    }

    /// `initial_state` for one socket in its dialect.
    pub(super) fn send_initial_state(&self, io: &mut Io<'_>, conn: ConnId) {
        let list = self.sorted_containers();
        let f = io.dialect(conn).encode(&Event::InitialState {
            server_id: &self.config.server_id,
            containers: &list,
            request_id: None,
        });
        io.send(conn, &f, Priority::Essential);
    }

    /// Resolves a container reference like the Docker CLI: full id, then
    /// name (with or without the leading `/`), then a unique id prefix.
    ///
    /// # Errors
    /// A message for the client: unknown or ambiguous.
    pub fn resolve_container(&self, reference: &str) -> Result<String, String> {
        match resolve_in(&self.containers, reference)? {
            Some(id) => Ok(id),
            None if !self.docker_up => Err("Docker engine unavailable".into()),
            None => Err(format!("No such container: {}", shown(reference))),
        }
    }
}

fn shown(s: &str) -> String {
    s.chars().take(80).collect()
}

/// Resolves a container reference in one server's table like the Docker
/// CLI: full id, then name (with or without the leading `/`), then a unique
/// id prefix. `Ok(None)`: no such container.
///
/// # Errors
/// The reference is an ambiguous id prefix.
pub(super) fn resolve_in(
    table: &HashMap<String, Container>,
    reference: &str,
) -> Result<Option<String>, String> {
    if table.contains_key(reference) {
        return Ok(Some(reference.to_string()));
    }
    let name = reference.strip_prefix('/').unwrap_or(reference);
    if let Some(c) = table.values().find(|c| c.name == name) {
        return Ok(Some(c.id.clone()));
    }
    if reference.is_empty() || !reference.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(None);
    }
    let mut hits = table.keys().filter(|id| id.starts_with(reference));
    match (hits.next(), hits.next()) {
        (Some(_), Some(_)) => Err(format!(
            "container reference {:?} is ambiguous",
            shown(reference)
        )),
        (first, _) => Ok(first.cloned()),
    }
}

impl State {
    /// The local containers as the REST body (the JSON dialect's `Container`s).
    pub fn containers_json(&self) -> Vec<u8> {
        serde_json::to_vec(&self.sorted_containers()).unwrap_or_else(|_| b"[]".to_vec())
    }
}
