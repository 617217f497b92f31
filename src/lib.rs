//! dockwire: a WebSocket hub for busy Docker hosts.
//!
//! Where things live:
//! - [`server`]: the hand-rolled mio event loop that owns every socket.
//! - [`transport`]: a connection's bytes behind one trait (plain TCP).
//! - [`http`]: HTTP/1.1 heads (httparse), the upgrade handshake, the router.
//! - [`ws`]: WebSocket frame reading and encoding (RFC 6455).
//! - [`writer`]: per-socket queue of shared frames, flushed with gather writes.
//! - [`hub`]: sessions, topics and fan-out, agents, commands, alerts; logic
//!   only, driven by inputs and answering through an outbox.
//! - [`feed`]: the Docker (bollard) and host-metrics (sysinfo) threads.
//! - [`protocol`]: the dialect seam, the JSON and Socket.IO dialects.
//! - [`auth`]: JWT (HS256) for browsers, hashed API keys for agents.
//! - [`agent`]: `dockwire agent`, the other side of the agent protocol.
//! - [`config`]: file + flags -> one validated `Config`.
//! - [`web`]: the dashboard's static files, built into the binary.
//! - [`notify`]: alert changes POSTed to webhooks, on threads of their own.
//! - [`cluster`]: the NATS thread that links the hubs of a cluster (the
//!   hub's side of it is `hub/cluster.rs`).

pub mod agent;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod feed;
pub mod http;
pub mod hub;
pub mod init;
pub mod notify;
pub mod protocol;
pub mod server;
pub mod stats;
pub mod transport;
pub mod web;
pub mod writer;
pub mod ws;
