//! The wire: data models shared by every dialect, the JSON dialect's
//! messages, and the Socket.IO v4 dialect's packets.

pub mod json;
pub mod model;
pub mod socketio;
