//! chat-service: the REST ingest of Crier.
//!
//! A POST is validated into domain types and handed to the store, which numbers,
//! stores and syncs it; once synced, the publisher sends it on the channel's MQTT
//! topic. History is read back from the same store.
//!
//! # Layout
//! - [`config`]: flags (`--listen`, `--mqtt-url`, `--data-dir`, limits).
//! - [`startup`]: binds the listener, builds the app, starts the broker task.
//! - [`routes`]: one file per resource (`messages`, `signals`, `admin`,
//!   `channels`, `health`).
//! - [`access`]: who may post, read and administer (JWT, off without a key).
//! - [`rate_limit`]: POST rate limits per publisher (and per author for signals).
//! - [`metrics`]: what the service records for `GET /metrics`.
//! - [`bans`]: names that may not post to a channel for a while.
//! - [`publish_hook`]: asks the app to accept, rewrite or reject each post
//!   before it is stored.
//! - [`domain`]: `Author`, `Text` and `NewMessage`, with the limits inside.
//! - [`body`]: reads a POST body in any of the accepted content types.
//! - [`store`]: the sled store: numbering, group commit, history queries and
//!   retention.
//! - [`publish`]: the publisher task that owns the broker connection, its link
//!   and the outbox's bookkeeping; signals go out through it too.
//! - [`intake`]: posts from MQTT clients (`…/channels/{uuid}/post`), stored like
//!   REST posts.
//! - [`webhooks`]: signed events POSTed to the app for every entry of the
//!   log, at least once, from a cursor per webhook kept in the store.
//! - [`app_url`]: the app's URLs (publish hook, webhooks), checked and shown alike.
//! - [`error`]: the service's error enum and its mapping to the JSON error body.
//! - [`openapi`]: the API document this service serves.

pub mod access;
pub mod app_url;
pub mod bans;
pub mod body;
pub mod config;
pub mod domain;
pub mod error;
pub mod history;
pub mod intake;
pub mod jetstream;
pub mod metrics;
pub mod migrate;
pub mod openapi;
pub mod publish;
pub mod publish_hook;
pub mod rate_limit;
pub mod routes;
pub mod startup;
pub mod store;
pub mod webhooks;

pub use startup::{AppState, Application, configure};
