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
//! - [`server`]: the HTTP server; [`direct`]: streams served on the socket itself.
//! - [`routes`]: `events` (the SSE endpoint) and `health`.
//! - [`hub`]: per-channel rings, recent frames, held frames, listener counts and
//!   subscribe/unsubscribe decisions.
//! - [`backfill`]: the tasks that read a channel's missing ids from history.
//! - [`limits`]: open streams per client address.
//! - [`stream`]: one client's stream: replay, live frames, catch-up, `gap` events,
//!   heartbeats.
//! - [`replay`]: where history comes from (the chat-service over HTTP, or in process).
//! - [`mqtt`]: the subscriber task that owns the broker connection.
//! - [`error`]: the service's error enum and its JSON mapping.

pub mod backfill;
pub mod config;
pub mod direct;
pub mod error;
pub mod hub;
pub mod limits;
pub mod mqtt;
pub mod replay;
pub mod routes;
pub mod server;
pub mod startup;
pub mod stream;
#[cfg(test)]
mod testing;

pub use startup::{AppState, Application, configure};
