//! The wire: data models shared by every dialect, the dialect seam (how
//! frames become requests and events become frames), the JSON dialect's
//! messages, and the Socket.IO v4 dialect's packets.

pub mod dialect;
pub mod filter;
pub mod json;
pub mod model;
pub mod msgpack;
pub mod socketio;

pub use dialect::{Dialect, DialectState, Heartbeat, Inbound};
