//! The contract Crier's services share: what a channel id, a message, a topic,
//! a token's claims and an error look like on the wire. The wire types derive
//! `utoipa::ToSchema`, so the API document the `server` crate assembles describes
//! them as they are.
//!
//! Pure data: no server, no broker client, no runtime, so anything that speaks
//! to Crier (the services, the tests, the load generator) agrees on one
//! definition. How the services serve it lives in the `server` crate.
//!
//! # Layout
//! - [`channel`]: [`ChannelId`], the UUID that names a channel.
//! - [`message`]: [`Message`], the stored and broadcast message, and its SSE frame.
//! - [`signal`]: [`Signal`], a typing or read marker: broadcast, never stored.
//! - [`topic`]: MQTT topic names for channels.
//! - [`claims`]: what a JSON Web Token grants.
//! - [`error`]: the JSON error body.

pub mod channel;
pub mod claims;
pub mod error;
pub mod message;
pub mod signal;
pub mod topic;

pub use channel::ChannelId;
pub use message::{Kind, Message};
pub use signal::Signal;
