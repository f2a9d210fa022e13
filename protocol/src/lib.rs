//! The contract Crier's services share: what a channel id, a message, a topic and an
//! error look like on the wire, and how an `mqtt://` URL becomes broker options.
//!
//! Small, so both services (and anything else that speaks to Crier) agree on one
//! definition. The little I/O here is what both services run alike: the
//! presence watcher, the separate metrics listener and the plain-HTTP server.
//!
//! # Layout
//! - [`auth`]: JSON Web Tokens: keys, claims, where a request carries its token.
//! - [`config_file`]: `--config FILE`, a TOML file under flags and environment.
//! - [`channel`]: [`ChannelId`], the UUID that names a channel.
//! - [`message`]: [`Message`], the stored and broadcast message, and its SSE frame.
//! - [`presence`]: who is in a channel across nodes, through the broker.
//! - [`openapi`]: the OpenAPI document served at `/openapi.json`.
//! - [`server`]: HTTP server settings shared by every binary.
//! - [`plain_server`]: the server without TLS: HTTP/1.1 and h2c on one port.
//! - [`http1_response`]: HTTP/1.1 responses written straight to a socket.
//! - [`tasks`]: a service's background tasks, tracked and stopped together.
//! - [`tls`]: rustls configurations from PEM files.
//! - [`topic`]: MQTT topic names for channels.
//! - [`cors`]: the `--cors-origin` middleware.
//! - [`defaults`]: settings' defaults, read from their flags.
//! - [`error`]: the JSON error body and actix glue that maps every error to it.
//! - [`health`]: the `/healthz` and `/readyz` answers.
//! - [`routes`]: `routes!`, a service's routes and their list, declared once.
//! - [`mqtt`]: broker settings shared by every binary and `mqtt://` URL parsing.
//! - [`metrics`]: the Prometheus recorder and `GET /metrics`.

pub mod auth;
pub mod channel;
pub mod config_file;
pub mod cors;
pub mod defaults;
pub mod error;
pub mod health;
pub mod http1_response;
pub mod message;
pub mod metrics;
pub mod mqtt;
pub mod openapi;
pub mod plain_server;
pub mod presence;
pub mod routes;
pub mod server;
pub mod tasks;
pub mod tls;
pub mod topic;

pub use channel::ChannelId;
pub use error::ApiError;
pub use message::Message;
