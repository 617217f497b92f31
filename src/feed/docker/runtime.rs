//! The Docker thread's main loop: owns the engine state, the followers and
//! the reconnect timer, and answers the loop's requests.
//!
//! Invariants:
//! - At most one engine session runs. While none is up, `Follow` is answered
//!   with `LogEnded` and `Action` with a failed `ActionDone`.
//! - `LogEnded` for a follower is sent only here, once: when its task ends on
//!   its own, or when the engine goes down (the task is aborted first). An
//!   `Unfollow` or a replaced follow id aborts silently. The runtime is
//!   single-threaded, so an aborted task can never send again.
//! - The loop ends when every [`super::DockerHandle`] is dropped or the
//!   receiving side of the feed channel is gone.

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, Id, JoinError, JoinHandle, JoinSet};
use tokio::time::Instant;

use super::engine::{self, SessionEnd};
use super::{BACKOFF_MAX, BACKOFF_MIN, Sink, follow, run_action, stats};
use crate::feed::{DockerEvent, DockerRequest};

struct FollowerEntry {
    container_id: String,
    task: AbortHandle,
}

struct State {
    host: String,
    sink: Sink,
    /// The connected client while the engine is up.
    docker: Option<Docker>,
    followers: HashMap<u64, FollowerEntry>,
    tasks: JoinSet<(u64, String, bool)>,
    /// `Down` was sent and no `Up` since.
    down_reported: bool,
    /// Container sampling period while someone wants `container_stats`.
    stats_interval: Option<Duration>,
    /// The sampler task, while sampling is on and the engine is up.
    sampler: Option<AbortHandle>,
    backoff: Duration,
    /// A send failed: nobody listens any more.
    gone: bool,
}

pub(super) async fn run(
    host: String,
    sink: Sink,
    mut requests: mpsc::UnboundedReceiver<DockerRequest>,
) {
    let (up_tx, mut up_rx) = mpsc::unbounded_channel::<Docker>();
    let mut st = State {
        host,
        sink,
        docker: None,
        followers: HashMap::new(),
        tasks: JoinSet::new(),
        down_reported: false,
        stats_interval: None,
        sampler: None,
        backoff: BACKOFF_MIN,
        gone: false,
    };
    let mut session = Some(st.start_session(&up_tx));
    let mut retry_at: Option<Instant> = None;
    while !st.gone {
        tokio::select! {
            biased;
            // First: a session's `Up` must be known before any request that
            // the loop sent after seeing it.
            Some(docker) = up_rx.recv() => {
                st.docker = Some(docker);
                st.down_reported = false;
                st.backoff = BACKOFF_MIN;
                st.restart_sampler();
            }
            end = wait_session(&mut session) => {
                session = None;
                let end = end.unwrap_or_else(|e| SessionEnd {
                    was_up: st.docker.is_some(),
                    reason: format!("docker session failed: {e}"),
                });
                st.lost(end);
                retry_at = Some(Instant::now() + st.backoff);
                st.backoff = (st.backoff * 2).min(BACKOFF_MAX);
            }
            () = sleep_until(retry_at) => {
                retry_at = None;
                session = Some(st.start_session(&up_tx));
            }
            req = requests.recv() => match req {
                Some(req) => st.handle(req),
                None => break,
            },
            Some(done) = st.tasks.join_next_with_id() => st.follower_done(done),
        }
    }
    if let Some(s) = session {
        s.abort();
    }
    if let Some(s) = st.sampler.take() {
        s.abort();
    }
    st.tasks.abort_all();
}

async fn wait_session(s: &mut Option<JoinHandle<SessionEnd>>) -> Result<SessionEnd, JoinError> {
    match s {
        Some(h) => h.await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

impl State {
    fn send(&mut self, ev: DockerEvent) {
        if !self.sink.send(ev) {
            self.gone = true;
        }
    }

    fn start_session(&self, up: &mpsc::UnboundedSender<Docker>) -> JoinHandle<SessionEnd> {
        tokio::spawn(engine::session(
            self.host.clone(),
            self.sink.clone(),
            up.clone(),
        ))
    }

    /// (Re)starts the sampler for the current engine and interval, or stops it.
    fn restart_sampler(&mut self) {
        if let Some(s) = self.sampler.take() {
            s.abort();
        }
        if let (Some(docker), Some(every)) = (self.docker.clone(), self.stats_interval) {
            let task = tokio::spawn(stats::sample_loop(docker, self.sink.clone(), every));
            self.sampler = Some(task.abort_handle());
        }
    }

    /// The session ended: report `Down` once and end every follower.
    fn lost(&mut self, end: SessionEnd) {
        self.docker = None;
        self.restart_sampler();
        if end.was_up || !self.down_reported {
            log::warn!("docker is down: {}", end.reason);
            self.down_reported = true;
            self.send(DockerEvent::Down {
                reason: end.reason.clone(),
            });
        } else {
            log::debug!("docker still down: {}", end.reason);
        }
        let reason = format!("docker went away: {}", end.reason);
        for (follow_id, f) in std::mem::take(&mut self.followers) {
            f.task.abort();
            self.send(DockerEvent::LogEnded {
                follow_id,
                container_id: f.container_id,
                reason: reason.clone(),
                engine_lost: true,
            });
        }
    }

    fn handle(&mut self, req: DockerRequest) {
        match req {
            DockerRequest::Follow {
                follow_id,
                container_id,
                tail,
            } => {
                self.unfollow(follow_id);
                let Some(docker) = self.docker.clone() else {
                    self.send(DockerEvent::LogEnded {
                        follow_id,
                        container_id,
                        reason: "docker is down".into(),
                        engine_lost: true,
                    });
                    return;
                };
                log::debug!("follower {follow_id}: {container_id} tail {tail}");
                let fut = follow::follow(
                    docker,
                    self.sink.clone(),
                    follow_id,
                    container_id.clone(),
                    tail,
                );
                let task = self.tasks.spawn(fut);
                self.followers
                    .insert(follow_id, FollowerEntry { container_id, task });
            }
            DockerRequest::Unfollow { follow_id } => self.unfollow(follow_id),
            DockerRequest::Stats { interval } => {
                self.stats_interval = interval;
                self.restart_sampler();
            }
            DockerRequest::Action {
                request_id,
                action,
                container_id,
            } => {
                let Some(docker) = self.docker.clone() else {
                    let message = "docker is down".to_string();
                    self.send(DockerEvent::ActionDone {
                        request_id,
                        success: false,
                        message,
                    });
                    return;
                };
                let sink = self.sink.clone();
                tokio::spawn(async move {
                    let res = run_action(&docker, action, &container_id).await;
                    log::info!("docker {} {container_id}: {res:?}", action.as_str());
                    let (success, message) = match res {
                        Ok(m) => (true, m),
                        Err(m) => (false, m),
                    };
                    sink.send(DockerEvent::ActionDone {
                        request_id,
                        success,
                        message,
                    });
                });
            }
        }
    }

    fn unfollow(&mut self, follow_id: u64) {
        if let Some(f) = self.followers.remove(&follow_id) {
            f.task.abort();
        }
    }

    fn follower_done(&mut self, done: Result<(Id, (u64, String, bool)), JoinError>) {
        let (task_id, follow_id, reason, engine_lost) = match done {
            Ok((task_id, (follow_id, reason, lost))) => (task_id, follow_id, reason, lost),
            Err(e) if e.is_cancelled() => return,
            Err(e) => {
                let task_id = e.id();
                let Some(follow_id) = self
                    .followers
                    .iter()
                    .find(|(_, f)| f.task.id() == task_id)
                    .map(|(id, _)| *id)
                else {
                    return;
                };
                (
                    task_id,
                    follow_id,
                    format!("log follower failed: {e}"),
                    false,
                )
            }
        };
        // A replaced or unfollowed follower may finish before its abort lands.
        if self
            .followers
            .get(&follow_id)
            .is_none_or(|f| f.task.id() != task_id)
        {
            return;
        }
        if let Some(f) = self.followers.remove(&follow_id) {
            log::debug!("follower {follow_id} ended: {reason}");
            self.send(DockerEvent::LogEnded {
                follow_id,
                container_id: f.container_id,
                reason,
                engine_lost,
            });
        }
    }
}
