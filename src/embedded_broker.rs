//! An MQTT broker inside the process (rumqttd), so one command runs everything.
//!
//! rumqttd neither reports the port it bound nor can be stopped, so a free port is
//! reserved first and the broker lives as long as the process. This process's
//! publisher and the streams' subscriber reach it through links into its
//! router rather than over TCP; other MQTT clients connect to the address, or
//! to the optional WebSocket listener (browser MQTT clients).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use broadcast_sse::bus::link::InProcessLink;

use crate::broker_link::InProcessBroker;
use crate::subscriber_link::subscriber_link;
use server::mqtt::MAX_PACKET_BYTES;

const READY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("invalid embedded broker address {0:?}")]
    Address(String),
    #[error("the embedded broker cannot listen on {address}: {source}")]
    Reserve {
        address: String,
        source: std::io::Error,
    },
    #[error("embedded broker configuration rejected: {0}")]
    Config(String),
    #[error("cannot link to the embedded broker's router: {0}")]
    Link(String),
    #[error("cannot start the embedded broker thread: {0}")]
    Thread(std::io::Error),
    #[error("embedded broker did not accept connections on {0} in time")]
    NotReady(SocketAddr),
}

/// Where the embedded broker listens.
#[derive(Debug, Clone, Copy)]
pub struct Listeners {
    /// MQTT over TCP.
    pub tcp: SocketAddr,
    /// MQTT over WebSocket, when asked for.
    pub websocket: Option<SocketAddr>,
}

/// Starts rumqttd on `listen` (port 0: a free port) and returns the address it
/// accepts MQTT connections on, once it does.
pub fn start(listen: &str) -> Result<SocketAddr, BrokerError> {
    let (listeners, broker) = prepare(listen, None)?;
    run(listeners, broker).map(|listeners| listeners.tcp)
}

/// Links into the broker's router for this process's publisher and for the
/// streams' subscriber.
pub struct Links {
    pub publisher: InProcessBroker,
    pub subscriber: InProcessLink,
}

/// Like [`start`], with an optional WebSocket listener and the links into
/// the broker's router for this process (made before it starts: rumqttd
/// gives none while it runs).
pub fn start_linked(
    listen: &str,
    websocket: Option<&str>,
) -> Result<(Listeners, Links), BrokerError> {
    let (listeners, broker) = prepare(listen, websocket)?;
    let (tx, rx) = link_to(&broker, "chat-link")?;
    let publisher = InProcessBroker::new(tx, rx);
    let (tx, rx) = link_to(&broker, "sse-link")?;
    let links = Links {
        publisher,
        subscriber: subscriber_link(tx, rx),
    };
    Ok((run(listeners, broker)?, links))
}

/// Reserves the addresses and builds the broker; its router runs from here on.
fn prepare(
    listen: &str,
    websocket: Option<&str>,
) -> Result<(Listeners, rumqttd::Broker), BrokerError> {
    let listeners = Listeners {
        tcp: reserve(parse_address(listen)?)?,
        websocket: websocket
            .map(|listen| parse_address(listen).and_then(reserve))
            .transpose()?,
    };
    let config = broker_config(listeners)?;
    Ok((listeners, rumqttd::Broker::new(config)))
}

fn parse_address(listen: &str) -> Result<SocketAddr, BrokerError> {
    listen
        .parse()
        .map_err(|_| BrokerError::Address(listen.to_string()))
}

/// Starts the broker's listeners on their own thread and waits until each
/// accepts connections.
fn run(listeners: Listeners, mut broker: rumqttd::Broker) -> Result<Listeners, BrokerError> {
    std::thread::Builder::new()
        .name("embedded-mqtt".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                log::error!("embedded MQTT broker stopped: {e}");
            }
        })
        .map_err(BrokerError::Thread)?;
    wait_until_accepting(listeners.tcp)?;
    if let Some(websocket) = listeners.websocket {
        wait_until_accepting(websocket)?;
    }
    Ok(listeners)
}

fn link_to(
    broker: &rumqttd::Broker,
    role: &str,
) -> Result<(rumqttd::local::LinkTx, rumqttd::local::LinkRx), BrokerError> {
    broker
        .link(&server::mqtt::client_id(role))
        .map_err(|e| BrokerError::Link(e.to_string()))
}

/// Binds and releases the address: learns a free port when port 0 was asked for,
/// and refuses an address something else already holds (rumqttd would fail on its
/// thread, and the readiness check would then reach the other program).
fn reserve(requested: SocketAddr) -> Result<SocketAddr, BrokerError> {
    let reserve_error = |source| BrokerError::Reserve {
        address: requested.to_string(),
        source,
    };
    let listener = TcpListener::bind(requested).map_err(reserve_error)?;
    listener.local_addr().map_err(reserve_error)
}

fn broker_config(listeners: Listeners) -> Result<rumqttd::Config, BrokerError> {
    let mut config = serde_json::json!({
        "id": 0,
        "router": {
            "max_connections": 10_010,
            "max_outgoing_packet_count": 200,
            "max_segment_size": 10 * 1024 * 1024,
            "max_segment_count": 10,
        },
        "v4": { "1": server_settings("v4-1", listeners.tcp) },
    });
    if let Some(websocket) = listeners.websocket {
        config["ws"] = serde_json::json!({ "1": server_settings("ws-1", websocket) });
    }
    serde_json::from_value(config).map_err(|e| BrokerError::Config(e.to_string()))
}

/// One listener's settings (TCP and WebSocket take the same).
fn server_settings(name: &str, address: SocketAddr) -> serde_json::Value {
    serde_json::json!({
        "name": name,
        "listen": address.to_string(),
        "next_connection_delay_ms": 1,
        "connections": {
            "connection_timeout_ms": 60_000,
            "max_payload_size": MAX_PACKET_BYTES,
            "max_inflight_count": 500,
            "dynamic_filters": true,
        },
    })
}

fn wait_until_accepting(address: SocketAddr) -> Result<(), BrokerError> {
    let deadline = Instant::now() + READY_TIMEOUT;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(BrokerError::NotReady(address))
}
