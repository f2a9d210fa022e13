//! broadcast-sse: the Server-Sent-Events fan-out of Crier.
//!
//! One MQTT connection per process subscribes to the topics of channels that have
//! local listeners; each message is parsed and SSE-framed once into shared bytes and
//! handed to every listener of its channel through a per-channel ring
//! ([`tokio::sync::broadcast`]), so the broadcast path never awaits a subscriber.
//! The hub delivers each channel's ids in order with no hole: a gap in live ids, or
//! a broker reconnect, is backfilled from the chat-service's history for every
//! listener at once. A listener that resumes (`Last-Event-ID`) or falls behind is
//! caught up from the hub's recent frames, or from history when it is further back.
//!
//! # Layout
//! - [`config`]: flags (`--listen`, `--mqtt-url`, `--history-url`, …).
//! - [`startup`]: binds the listener, starts the broker and heartbeat tasks.
//!   Its streams are pumped on the socket by the server crate's transport
//!   ([`startup::is_stream_path`] names them).
//! - [`routes`]: `events` (the SSE endpoint) and `health`.
//! - [`hub`]: per-channel rings, recent frames, held frames, listener counts and
//!   subscribe/unsubscribe decisions.
//! - [`stream_slots`]: open streams per client address.
//! - [`presence`]: this node's streams per channel and name, published for
//!   presence across nodes.
//! - [`metrics`]: what the service records for `GET /metrics`.
//! - [`stream`]: one client's stream: replay, live frames, catch-up, `gap` events,
//!   heartbeats.
//! - [`history`]: where history comes from (the chat-service over HTTP, or in
//!   process).
//! - [`bus`]: the subscriber task that owns the broker connection.
//! - [`error`]: the service's error enum and its JSON mapping.
//! - [`openapi`]: the API document this service serves.

pub mod bus;
pub mod config;
pub mod error;
pub mod fanout_report;
pub mod history;
pub mod hub;
pub mod metrics;
pub mod openapi;
pub mod presence;
pub mod routes;
pub mod startup;
pub mod stream;
pub mod stream_slots;
#[cfg(test)]
mod testing;

pub use startup::{AppState, Application, configure};
