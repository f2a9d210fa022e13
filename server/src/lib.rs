//! How Crier's binaries serve the contract of the `protocol` crate: the HTTP
//! server (plain HTTP/1.1 and h2c, or TLS), its middleware, health and metrics,
//! tokens, MQTT connections, presence, background tasks and settings.
//!
//! Every binary (chat-service, broadcast-sse and the all-in-one `crier`) is
//! assembled from these parts, so they serve alike.
//!
//! # Layout
//! - [`service`]: the one builder of every binary's HTTP server.
//! - [`binary`]: every binary's `main`.
//! - [`transport`]: plain-HTTP connections, with streams pumped on the socket.
//! - [`auth`]: JSON Web Tokens: keys, where a request carries its token.
//! - [`config_file`]: `--config FILE`, a TOML file under flags and environment.
//! - [`cors`]: the `--cors-origin` middleware.
//! - [`defaults`]: settings' defaults, read from their flags.
//! - [`error`]: [`ApiError`](error::ApiError) and the actix glue that maps every
//!   error to the JSON error body.
//! - [`health`]: the `/healthz` and `/readyz` answers, and `/openapi.json`.
//! - [`http1_response`]: HTTP/1.1 responses written straight to a socket.
//! - [`listen`]: the listening socket, with the backlog a service asks for.
//! - [`metrics`]: the Prometheus recorder and `GET /metrics`.
//! - [`mqtt`]: broker settings, `mqtt://` URL parsing and the connection driver.
//! - [`openapi`]: the API document, assembled from the handlers' descriptions.
//! - [`plain_server`]: the server without TLS: HTTP/1.1 and h2c on one port.
//! - [`presence`]: who is in a channel across nodes, through the broker.
//! - [`routes`]: `routes!`, a service's routes and their list, declared once.
//! - [`settings`]: HTTP server settings shared by every binary.
//! - [`tasks`]: a service's background tasks, tracked and stopped together.
//! - [`tls`]: rustls configurations from PEM files.

pub mod auth;
pub mod binary;
pub mod config_file;
pub mod cors;
pub mod defaults;
pub mod error;
pub mod health;
pub mod http1_response;
pub mod listen;
pub mod metrics;
pub mod mqtt;
pub mod openapi;
pub mod plain_server;
pub mod presence;
pub mod routes;
pub mod service;
pub mod settings;
pub mod tasks;
pub mod tls;
pub mod transport;
