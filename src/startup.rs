//! Mounts the chat-service, broadcast-sse and the demo page on one server.
//!
//! Both services run exactly as they do apart: the chat-service stores and
//! publishes to the broker, and broadcast-sse subscribes to the broker and fans
//! out, with the same ordering, duplicate dropping, gap holding and backfill.
//! What only the all-in-one has is glue: the embedded broker (reached in process
//! by the publisher and the subscriber), and history read straight from the store.

use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::{HttpResponse, web};
use broadcast_sse::bus::link::InProcessLink;
use broadcast_sse::hub::Hub;
use broadcast_sse::startup::serve_streams;
use chat_service::publish::link::BrokerTarget;
use server::binary::Binary;
use server::health::readiness;
use server::mqtt::BrokerUrl;
use server::service::{Running, Service};
use server::tasks::Background;
use server::transport::Transport;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::embedded_broker;
use crate::store_history::StoreHistory;

const DEMO_PAGE: &str = include_str!("../client-demo/index.html");
/// The browser client the demo page imports (`./crier.js`), for integrators too.
const CLIENT_MODULE: &str = include_str!("../client-demo/crier.js");

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Broker(#[from] embedded_broker::BrokerError),
    #[error(transparent)]
    BrokerUrl(#[from] server::mqtt::MqttUrlError),
    #[error(transparent)]
    Chat(#[from] chat_service::startup::StartError),
    #[error("JWT key: {0}")]
    Auth(#[from] server::auth::KeyError),
    #[error(transparent)]
    Serve(#[from] server::service::ServeError),
}

/// Where the running all-in-one can be reached.
struct Endpoints {
    http: SocketAddr,
    /// The broker in use: `mqtt://…` (password hidden).
    broker: String,
    /// The embedded broker's MQTT-over-WebSocket address, when it has one.
    broker_websocket: Option<SocketAddr>,
    broker_is_embedded: bool,
}

pub struct Application {
    server: Running,
    hub: Hub,
    tasks: JoinHandle<()>,
    background: Background,
    store: chat_service::store::Store,
    banner: String,
}

impl Binary for Application {
    const NAME: &'static str = "crier";
    type Config = Config;
    type Error = StartError;

    async fn build(config: Config) -> Result<Self, StartError> {
        let BrokerInUse {
            target: broker,
            subscriber_link,
            url: subscriber_broker,
            shown: endpoint,
            websocket,
        } = broker_for(&config)?;
        let verifier = server::auth::start_verifier(&config.auth)?;
        let background =
            Background::on_current_runtime().ok_or(chat_service::startup::StartError::NoRuntime)?;
        let (chat, publisher) = chat_service::AppState::start(
            &config.chat,
            None,
            broker,
            subscriber_broker.clone(),
            &config.topic_prefix,
            verifier.clone(),
            &background,
        )?;
        let store = chat.store.clone();
        let history = Arc::new(StoreHistory {
            store: store.clone(),
            background: background.clone(),
        });
        let bus = broadcast_sse::startup::Bus {
            broker: &subscriber_broker,
            link: subscriber_link,
            topic_prefix: &config.topic_prefix,
            // One process sees all traffic anyway: one wildcard subscription.
            subscribe_all: true,
        };
        let (broadcast, subscriber) = broadcast_sse::AppState::start(
            config.broadcast,
            bus,
            history,
            verifier,
            // One process, one view of presence: the chat-service's serves both.
            chat.presence.clone(),
            &background,
        );
        let hub = broadcast.hub.clone();
        let server = Service::new(config.server.clone(), readyz, crate::openapi::document())
            .data(chat)
            .data(broadcast)
            .routes(chat_service::configure)
            .routes(broadcast_sse::configure)
            .routes(demo_routes)
            .metrics(metrics)
            .transport(Transport::Streams(broadcast_sse::startup::is_stream_path))
            .start(&config.listen)?;
        let endpoints = Endpoints {
            http: server.address(),
            broker: endpoint,
            broker_websocket: websocket,
            broker_is_embedded: config.mqtt_url.is_none(),
        };
        let banner = banner(&endpoints, &config);
        let tasks = background.spawn(async move {
            tokio::select! {
                _ = publisher => log::error!("the MQTT publisher stopped"),
                _ = subscriber => log::error!("the MQTT subscriber stopped"),
            }
        });
        Ok(Application {
            server,
            hub,
            tasks,
            background,
            store,
            banner,
        })
    }

    /// Runs until SIGINT/SIGTERM or until a broker task fails. On a signal, open
    /// streams end at once, in-flight requests finish, and the store is flushed.
    async fn run_until_stopped(self) -> std::io::Result<()> {
        let result = serve_streams(self.server, &self.hub, self.tasks).await;
        chat_service::startup::stop_in_order(&self.background, &self.store).await;
        result
    }

    fn banner(&self) -> &str {
        &self.banner
    }
}

/// Where everything is, for a person who just started it.
fn banner(endpoints: &Endpoints, config: &Config) -> String {
    let scheme = config.server.scheme();
    let http = endpoints.http;
    let kind = if endpoints.broker_is_embedded {
        "embedded"
    } else {
        "external"
    };
    let mut banner = format!("crier listening on {scheme}://{http}\n");
    let _ = writeln!(banner, "  demo page:   {scheme}://{http}/");
    let _ = writeln!(
        banner,
        "  post:        POST {scheme}://{http}/channels/{{uuid}}/messages"
    );
    let _ = writeln!(
        banner,
        "  stream:      GET  {scheme}://{http}/channels/{{uuid}}/events"
    );
    let _ = writeln!(banner, "  MQTT broker: {} ({kind})", endpoints.broker);
    if let Some(websocket) = endpoints.broker_websocket {
        let _ = writeln!(banner, "  MQTT over WebSocket: ws://{websocket}/mqtt");
    }
    let _ = writeln!(
        banner,
        "  MQTT post:   {{\"author\",\"text\"}} to {}/channels/{{uuid}}/post",
        config.topic_prefix
    );
    let _ = write!(banner, "  history in:  {}", config.chat.data_dir.display());
    banner
}

/// The broker the all-in-one uses.
struct BrokerInUse {
    /// How the publisher reaches it (in process when embedded).
    target: BrokerTarget,
    /// The stream subscriber's link into it, when embedded.
    subscriber_link: Option<InProcessLink>,
    /// Where the MQTT post intake and presence watcher connect, and the
    /// stream subscriber when it has no link.
    url: BrokerUrl,
    /// Its address to show (password hidden).
    shown: String,
    /// The embedded broker's WebSocket listener.
    websocket: Option<SocketAddr>,
}

/// The external broker when `--mqtt-url` is set, else a new embedded one.
fn broker_for(config: &Config) -> Result<BrokerInUse, StartError> {
    if let Some(url) = &config.mqtt_url {
        let broker = BrokerUrl::parse(url, config.mqtt_ca_file.as_deref())?;
        return Ok(BrokerInUse {
            target: BrokerTarget::Network(broker.clone()),
            subscriber_link: None,
            url: broker,
            shown: server::mqtt::redact(url),
            websocket: None,
        });
    }
    let (listeners, links) = embedded_broker::start_linked(
        &config.embedded_broker_listen,
        config.embedded_broker_ws_listen.as_deref(),
    )?;
    let shown = format!("mqtt://{}", listeners.tcp);
    Ok(BrokerInUse {
        target: BrokerTarget::Link(Box::new(links.publisher)),
        subscriber_link: Some(links.subscriber),
        url: BrokerUrl::parse(&shown, None)?,
        shown,
        websocket: listeners.websocket,
    })
}

/// The demo page and the browser client it imports.
fn demo_routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(demo_page))
        .route("/crier.js", web::get().to(client_module));
}

async fn demo_page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(DEMO_PAGE)
}

async fn client_module() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .body(CLIENT_MODULE)
}

/// `GET /metrics`: both services record into the process's one recorder, so
/// this is their union.
async fn metrics(
    chat: web::Data<chat_service::AppState>,
    broadcast: web::Data<broadcast_sse::AppState>,
) -> HttpResponse {
    chat_service::metrics::set_gauges(&chat);
    broadcast_sse::metrics::set_gauges(&broadcast);
    server::metrics::response(server::metrics::Metrics::install().render())
}

/// Storage and broker are up: the store answers, and both the publisher and
/// the subscriber are connected to the broker (the report names what is not).
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "health",
    responses(server::health::ReadyzResponses)
)]
pub(crate) async fn readyz(
    chat: web::Data<chat_service::AppState>,
    broadcast: web::Data<broadcast_sse::AppState>,
) -> HttpResponse {
    let (mut report, mut problems) = chat_service::routes::health::report(&chat).await;
    let subscribed = broadcast.broker.is_connected();
    report.insert(
        "subscriber".into(),
        server::health::connection(subscribed).into(),
    );
    report.insert("listeners".into(), broadcast.hub.listener_count().into());
    if !subscribed {
        problems.push("the stream subscriber is not connected to the MQTT broker");
    }
    readiness(report, &problems)
}
