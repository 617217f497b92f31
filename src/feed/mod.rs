//! Feeds: threads that produce data for the event loop.
//!
//! Each feed runs on its own OS thread, pushes [`FeedEvent`]s into one
//! crossbeam channel and then wakes the loop through the shared
//! [`mio::Waker`]. Nothing here touches sockets.

pub mod docker;
pub mod metrics;

use std::time::Duration;

use crate::protocol::model::{Container, ContainerStats, Metrics};

/// Everything a feed thread can tell the event loop.
#[derive(Debug)]
pub enum FeedEvent {
    Docker(DockerEvent),
    /// One sample of the local host's metrics.
    LocalMetrics(Metrics),
    /// From the cluster's NATS thread (`crate::cluster`).
    Cluster(crate::cluster::ClusterEvent),
}

/// Which output stream of a container a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    Stdout,
    Stderr,
    /// TTY containers have one merged stream.
    Console,
}

/// One log line, without its trailing newline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub stream: LogStream,
    /// Docker's RFC 3339 nanosecond timestamp of the line.
    pub timestamp: String,
    pub text: String,
}

/// What the Docker thread reports to the loop.
#[derive(Debug)]
pub enum DockerEvent {
    /// The engine is reachable: the full container table (sent on start and
    /// after every reconnect).
    Up { containers: Vec<Container> },
    /// The engine went away (or was never there). The thread keeps retrying.
    Down { reason: String },
    /// A container was created or changed state.
    Changed(Container),
    /// A container was destroyed.
    Removed { id: String },
    /// The history a follower started with (at most the `tail` it was asked
    /// for), sent exactly once per follower, before any of its `LogLines`.
    LogHistory {
        follow_id: u64,
        container_id: String,
        lines: Vec<LogLine>,
    },
    /// Live lines, in Docker's order, never overlapping the history.
    LogLines {
        follow_id: u64,
        container_id: String,
        lines: Vec<LogLine>,
    },
    /// The follower ended: container stopped, removed, or the stream failed.
    LogEnded {
        follow_id: u64,
        container_id: String,
        reason: String,
        /// It ended because the engine went away (or was down), not the
        /// container: the stream can be resumed when the engine is back.
        engine_lost: bool,
    },
    /// One round of per-container usage (running containers), while
    /// sampling is on ([`DockerRequest::Stats`]).
    Stats(Vec<ContainerStats>),
    /// The result of a [`DockerRequest::Action`].
    ActionDone {
        request_id: u64,
        success: bool,
        message: String,
    },
}

/// A container action a browser (or an agent) may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerAction {
    Start,
    Stop,
    Restart,
}

impl ContainerAction {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "start" => Some(Self::Start),
            "stop" => Some(Self::Stop),
            "restart" => Some(Self::Restart),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Stop => "stop",
            Self::Restart => "restart",
        }
    }
}

/// What the loop asks of the Docker thread.
#[derive(Debug)]
pub enum DockerRequest {
    /// Start following a container's logs (full id): first a `LogHistory` of
    /// the last `tail` lines, then `LogLines` until `Unfollow` or the end.
    Follow {
        follow_id: u64,
        container_id: String,
        tail: usize,
    },
    /// Stop the follower with this id (no `LogEnded` is sent for it).
    Unfollow { follow_id: u64 },
    /// Sample running containers' usage every `interval` (`None`: stop).
    Stats { interval: Option<Duration> },
    /// Run a container action; answered with `ActionDone`.
    Action {
        request_id: u64,
        action: ContainerAction,
        container_id: String,
    },
}
