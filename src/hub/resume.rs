//! Log streams across outages (SPEC 7): suspended when the local engine
//! or an agent goes away, resumed by the hub itself when it is back.
//!
//! A suspended log topic keeps its subscribers and its ring and has no
//! follower. Resuming starts a new follower whose history is joined to the
//! ring (`logs.rs`, [`LogRing::seam`]), so subscribers get each line once
//! and a `log_gap` only when lines were lost.
//!
//! When: the local engine's `Down` (and a follower that ended because the
//! engine did) suspends every local stream, its next `Up` resumes them; a
//! suspended local stream is also retried once a tick while the engine is
//! up (a follower can see the engine fail before the feed reports `Down`).
//! An agent that disconnects, is replaced, or reports its engine down
//! suspends its server's streams; its `hello` (with `docker`) and its
//! engine coming back resume them.
//!
//! [`LogRing::seam`]: super::logring::LogRing::seam

use crate::feed::DockerRequest;

use super::servers::DockerStatus;
use super::topics::TopicKey;
use super::{Io, State};

impl State {
    /// Suspends one log topic: lines held for coalescing go out, the
    /// follower is forgotten, subscribers and ring stay.
    pub(super) fn suspend_log(&mut self, io: &mut Io<'_>, key: &TopicKey) {
        self.flush_held_of(io, key);
        let Some(f) = self.topics.get_mut(key).and_then(|t| t.log.as_mut()) else {
            return;
        };
        if f.suspended {
            return;
        }
        if f.follow_id != 0 {
            self.follows.remove(&f.follow_id);
            if let Some(d) = &self.docker {
                // Usually gone already; harmless when it is.
                d.request(DockerRequest::Unfollow {
                    follow_id: f.follow_id,
                });
            }
        }
        f.follow_id = 0;
        f.suspended = true;
        // A history cut off halfway is asked for again on resume.
        f.incoming = None;
    }

    /// The log topics of `server_id`.
    fn log_keys_of(&self, server_id: &str) -> Vec<TopicKey> {
        self.topics
            .keys()
            .filter(|k| matches!(k, TopicKey::Logs { server, .. } if server == server_id))
            .cloned()
            .collect()
    }

    /// Suspends every log topic of a server (its engine or agent went away).
    pub(super) fn suspend_server_logs(&mut self, io: &mut Io<'_>, server_id: &str) {
        for key in self.log_keys_of(server_id) {
            self.suspend_log(io, &key);
        }
    }

    /// Ends every log topic of a server, and forgets its idle streams (the
    /// server left the directory).
    pub(super) fn end_server_logs(&mut self, io: &mut Io<'_>, server_id: &str, reason: &str) {
        for key in self.log_keys_of(server_id) {
            self.on_log_ended(io, &key, reason);
        }
        self.idle_logs.forget_server(server_id);
    }

    /// Starts a new follower for every suspended log topic of a server.
    pub(super) fn resume_server_logs(&mut self, io: &mut Io<'_>, server_id: &str) {
        for key in self.log_keys_of(server_id) {
            let suspended = self
                .topics
                .get(&key)
                .and_then(|t| t.log.as_ref())
                .is_some_and(|f| f.suspended);
            if suspended {
                log::debug!("resuming the log stream of {key:?}");
                self.start_follower(io, &key);
            }
        }
    }

    /// Once a tick: forget idle streams kept too long, and retry streams
    /// suspended while their engine is up (a follower can see its engine
    /// fail before the engine's state says so).
    pub(super) fn logs_tick(&mut self, io: &mut Io<'_>) {
        self.idle_logs.expire(io.now);
        self.stored_logs_tick(io);
        let mut ready: Vec<String> = self
            .servers
            .iter()
            .filter(|(_, s)| !s.is_local && s.agent.is_some() && s.docker == DockerStatus::Up)
            .map(|(id, _)| id.clone())
            .collect();
        if self.docker_up {
            ready.push(self.config.server_id.clone());
        }
        for sid in ready {
            self.resume_server_logs(io, &sid);
        }
    }
}
