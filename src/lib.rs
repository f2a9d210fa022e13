//! The all-in-one `crier`: an embedded MQTT broker, the chat-service and
//! broadcast-sse mounted on one port, and the demo page — what
//! `cargo run --release` starts, with no setup.
//!
//! # Layout
//! - [`config`]: flags (the union of both services' flags, plus the broker's).
//! - [`embedded_broker`]: rumqttd in-process on a loopback port.
//! - [`broker_link`]: the publisher's link into that broker's router.
//! - [`subscriber_link`]: the streams' subscriber's link into it.
//! - [`openapi`]: the API document the all-in-one serves.
//! - [`startup`]: mounts both services and the demo page on one server.
//! - [`store_history`]: lets broadcast-sse read history straight from the store.

pub mod broker_link;
pub mod config;
pub mod embedded_broker;
pub mod openapi;
pub mod startup;
pub mod store_history;
pub mod subscriber_link;

pub use startup::Application;
