//! chat-service: the REST ingest of Crier.
//!
//! A POST is validated into domain types, given the channel's next id and stored in
//! sled, then queued for publication on the channel's MQTT topic. History is read
//! back from the same store.
//!
//! # Layout
//! - [`config`]: flags (`--listen`, `--mqtt-url`, `--data-dir`, limits).
//! - [`startup`]: binds the listener, builds the app, starts the broker task.
//! - [`routes`]: one file per resource (`messages`, `admin`, `health`).
//! - [`access`]: who may post, read and administer (JWT, off without a key).
//! - [`rate`]: POST rate limits per publisher.
//! - [`bans`]: names that may not post to a channel for a while.
//! - [`domain`]: `Author`, `Text` and `NewMessage`, with the limits inside.
//! - [`body`]: reads a POST body in any of the accepted content types.
//! - [`history`]: the sled store, id assignment, history queries and retention.
//! - [`mqtt`]: the publisher task that owns the broker connection.
//! - [`broker_link`]: that connection, over the network or to a broker in process.
//! - [`feed`]: stored messages handed to streams in the same process.
//! - [`outbox`]: what is stored, sent and acknowledged, per channel.
//! - [`error`]: the service's error enum and its mapping to the JSON error body.

pub mod access;
pub mod bans;
pub mod body;
pub mod broker_link;
pub mod config;
pub mod domain;
pub mod error;
pub mod feed;
pub mod history;
pub mod mqtt;
pub mod outbox;
pub mod rate;
pub mod routes;
pub mod startup;

pub use startup::{AppState, Application, configure};
