//! broadcast-sse: the Server-Sent-Events fan-out of Crier.
//!
//! One MQTT connection per process subscribes to the topics of channels that have
//! local listeners; each message is parsed and SSE-framed once into shared bytes and
//! handed to every listener of its channel through a per-channel ring
//! ([`tokio::sync::broadcast`]), so the broadcast path never awaits a subscriber.
//! A listener that resumes (`Last-Event-ID`), falls behind the ring, or sees a gap in
//! ids is caught up from the chat-service's history.
//!
//! # Layout
//! - [`config`]: flags (`--listen`, `--mqtt-url`, `--history-url`, …).
//! - [`startup`]: binds the listener, starts the broker and heartbeat tasks.
//! - [`routes`]: `events` (the SSE endpoint) and `health`.
//! - [`hub`]: per-channel rings, listener counts and subscribe/unsubscribe decisions.
//! - [`stream`]: one client's stream: replay, live frames, gap backfill, heartbeats.
//! - [`replay`]: where history comes from (the chat-service over HTTP, or in process).
//! - [`mqtt`]: the subscriber task that owns the broker connection.
//! - [`error`]: the service's error enum and its JSON mapping.

pub mod config;
pub mod error;
pub mod hub;
pub mod mqtt;
pub mod replay;
pub mod routes;
pub mod startup;
pub mod stream;

pub use startup::{AppState, Application, configure};
