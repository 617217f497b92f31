//! Container events by subscription (SPEC 12): `set_event_filter` limits
//! one socket's `container_state_change` and `container_stats` for one
//! server to the containers it names (by id or name) or labels.
//!
//! A filter is the socket's own ([`Session::event_filters`], at most one
//! per server and [`MAX_EVENT_FILTERS`] in all); a socket without one for a
//! server hears all of its containers, as before. A state change is still
//! encoded once per dialect and shared: the filter only decides, socket by
//! socket, who is offered the frame. `container_stats` differs per filter
//! (its list is cut to the matching containers), so a filtered socket gets
//! its own frame, or none when nothing it follows is running.
//! `initial_state` is unchanged.
//!
//! [`Session::event_filters`]: super::session::Session::event_filters

use serde_json::{Map, Value};

use crate::protocol::filter::EventFilter;
use crate::protocol::json::Event;
use crate::protocol::model::{Container, ContainerStats};

use super::browser::shown;
use super::session::ConnId;
use super::topics::{Publish, TopicKey};
use super::{Io, State};

/// Most servers one socket may hold an event filter for.
pub const MAX_EVENT_FILTERS: usize = 64;

impl State {
    /// `set_event_filter`: sets (or, empty, clears) the socket's filter for
    /// a server (default: the local host).
    pub(super) fn set_event_filter(
        &mut self,
        io: &mut Io<'_>,
        conn: ConnId,
        server_id: Option<String>,
        filter: EventFilter,
    ) -> Result<(), String> {
        let sid = server_id.unwrap_or_else(|| self.config.server_id.clone());
        if !self.servers.contains_key(&sid) {
            return Err(format!("Unknown server_id: {}", shown(&sid)));
        }
        let Some(s) = io.session_mut(conn) else {
            return Ok(());
        };
        let slot = s.event_filters.iter().position(|(id, _)| *id == sid);
        match (slot, filter.is_empty()) {
            (Some(i), true) => {
                s.event_filters.swap_remove(i);
            }
            (None, true) => {}
            (Some(i), false) => s.event_filters[i].1 = filter,
            (None, false) if s.event_filters.len() >= MAX_EVENT_FILTERS => {
                return Err(format!(
                    "at most {MAX_EVENT_FILTERS} servers may have an event filter on one socket"
                ));
            }
            (None, false) => s.event_filters.push((sid, filter)),
        }
        Ok(())
    }

    /// Publishes a change of `container` (its new record, or the last one
    /// of a removed container) of `server_id` to the subscribers whose
    /// filter lets it pass.
    pub(super) fn publish_container_event(
        &mut self,
        io: &mut Io<'_>,
        server_id: &str,
        container: &Container,
        ev: &Event<'_>,
    ) {
        let key = TopicKey::Containers(server_id.to_string());
        let keep = |io: &Io<'_>, conn: ConnId| {
            io.session(conn)
                .and_then(|s| s.event_filter(server_id))
                .is_none_or(|f| f.matches(container))
        };
        self.topics
            .publish_where(io, &key, ev, Publish::ESSENTIAL, &keep);
    }

    /// `container_stats` for a server's subscribers: one shared frame for
    /// the unfiltered, a frame of its own for each filtered socket.
    pub(super) fn publish_stats(
        &mut self,
        io: &mut Io<'_>,
        server_id: &str,
        stats: &[ContainerStats],
    ) {
        let key = TopicKey::Stats(server_id.to_string());
        let Some(topic) = self.topics.get(&key).filter(|t| !t.subs.is_empty()) else {
            return;
        };
        let filtered: Vec<(ConnId, EventFilter)> = topic
            .subs
            .all()
            .filter_map(|c| Some((c, io.session(c)?.event_filter(server_id)?.clone())))
            .collect();
        let event = |stats: &[&ContainerStats]| {
            let mut fields = Map::new();
            fields.insert("server_id".into(), Value::from(server_id));
            fields.insert(
                "stats".into(),
                serde_json::to_value(stats).unwrap_or(Value::Array(Vec::new())),
            );
            fields
        };
        let all: Vec<&ContainerStats> = stats.iter().collect();
        let fields = event(&all);
        let ev = Event::Object {
            name: "container_stats",
            fields: &fields,
        };
        let unfiltered = |io: &Io<'_>, conn: ConnId| {
            io.session(conn)
                .is_none_or(|s| s.event_filter(server_id).is_none())
        };
        self.topics
            .publish_where(io, &key, &ev, Publish::ESSENTIAL, &unfiltered);
        let table = self.table_of(server_id);
        for (conn, f) in filtered {
            let mine: Vec<&ContainerStats> = stats
                .iter()
                .filter(|s| match table.and_then(|t| t.get(&s.id)) {
                    Some(c) => f.matches(c),
                    None => f.matches_id(&s.id),
                })
                .collect();
            if mine.is_empty() {
                continue;
            }
            let fields = event(&mine);
            io.event(
                conn,
                &Event::Object {
                    name: "container_stats",
                    fields: &fields,
                },
            );
        }
    }
}
