//! Mounts the chat-service, broadcast-sse and the demo page on one server.
//!
//! Both services run exactly as they do apart: the chat-service stores and
//! publishes to the broker, and broadcast-sse subscribes to the broker and fans
//! out, with the same ordering, duplicate dropping, gap holding and backfill.
//! What only the all-in-one has is glue: the embedded broker (reached in process
//! by the publisher), and history read straight from the store.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::{App, HttpResponse, web};
use broadcast_sse::hub::Hub;
use broadcast_sse::startup::run_with_hub;
use chat_service::publish::link::BrokerTarget;
use server::error::{json_error_bodies, not_found, path_config, query_config};
use server::health::readiness;
use server::mqtt::BrokerUrl;
use server::settings::ServerSettings;
use server::tasks::Background;
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
    #[error("TLS: {0}")]
    Tls(#[from] server::tls::TlsError),
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: String,
        source: std::io::Error,
    },
}

/// Where the running all-in-one can be reached.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub http: SocketAddr,
    /// The broker in use: `mqtt://…` (password hidden).
    pub broker: String,
    /// The embedded broker's MQTT-over-WebSocket address, when it has one.
    pub broker_websocket: Option<SocketAddr>,
    pub broker_is_embedded: bool,
}

pub struct Application {
    endpoints: Endpoints,
    server: Server,
    hub: Hub,
    tasks: JoinHandle<()>,
    background: Background,
    store: chat_service::store::Store,
}

impl Application {
    pub async fn build(config: Config) -> Result<Self, StartError> {
        let BrokerInUse {
            target: broker,
            url: subscriber_broker,
            shown: endpoint,
            websocket,
        } = broker_for(&config)?;
        let listen_error = |source| StartError::Listen {
            address: config.listen.clone(),
            source,
        };
        let listener = TcpListener::bind(&config.listen).map_err(listen_error)?;
        let http = listener.local_addr().map_err(listen_error)?;
        let verifier = server::auth::start_verifier(&config.auth)?;
        let background =
            Background::on_current_runtime().ok_or(chat_service::startup::StartError::NoRuntime)?;
        let (chat, publisher) = chat_service::AppState::start(
            &config.chat,
            broker,
            subscriber_broker.clone(),
            &config.topic_prefix,
            verifier.clone(),
            &background,
        )?;
        let store = chat.store.clone();
        let history = Arc::new(StoreHistory(store.clone()));
        let bus = broadcast_sse::startup::Bus {
            broker: &subscriber_broker,
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
        let tls = config.server.tls()?;
        if let Some(address) = &config.server.metrics_listen {
            let (chat, broadcast) = (
                web::Data::new(chat.clone()),
                web::Data::new(broadcast.clone()),
            );
            let metrics = move |cfg: &mut web::ServiceConfig| {
                cfg.app_data(chat.clone()).app_data(broadcast.clone());
                cfg.route("/metrics", web::get().to(metrics));
            };
            server::metrics::serve_alone(address, metrics).map_err(|source| {
                StartError::Listen {
                    address: address.clone(),
                    source,
                }
            })?;
        }
        let server =
            serve(listener, chat, broadcast, config.server.clone(), tls).map_err(listen_error)?;
        let tasks = background.spawn(async move {
            tokio::select! {
                _ = publisher => log::error!("the MQTT publisher stopped"),
                _ = subscriber => log::error!("the MQTT subscriber stopped"),
            }
        });
        Ok(Application {
            endpoints: Endpoints {
                http,
                broker: endpoint,
                broker_websocket: websocket,
                broker_is_embedded: config.mqtt_url.is_none(),
            },
            server,
            hub,
            tasks,
            background,
            store,
        })
    }

    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    /// Runs until SIGINT/SIGTERM or until a broker task fails. On a signal, open
    /// streams end at once, in-flight requests finish, and the store is flushed.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let result = run_with_hub(self.server, self.hub, self.tasks).await;
        chat_service::startup::stop_in_order(&self.background, &self.store).await;
        result
    }
}

/// The broker the all-in-one uses.
struct BrokerInUse {
    /// How the publisher reaches it (in process when embedded).
    target: BrokerTarget,
    /// Where the stream subscriber and the MQTT post intake connect.
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
            url: broker,
            shown: server::mqtt::redact(url),
            websocket: None,
        });
    }
    let (listeners, link) = embedded_broker::start_linked(
        &config.embedded_broker_listen,
        config.embedded_broker_ws_listen.as_deref(),
    )?;
    let shown = format!("mqtt://{}", listeners.tcp);
    Ok(BrokerInUse {
        target: BrokerTarget::Link(Box::new(link)),
        url: BrokerUrl::parse(&shown, None)?,
        shown,
        websocket: listeners.websocket,
    })
}

fn serve(
    listener: TcpListener,
    chat: chat_service::AppState,
    broadcast: broadcast_sse::AppState,
    settings: ServerSettings,
    tls: Option<rustls::ServerConfig>,
) -> std::io::Result<Server> {
    let chat = web::Data::new(chat);
    let broadcast = web::Data::new(broadcast);
    let header_timeout = settings.request_header_timeout();
    let metrics_here = settings.metrics_on_main_listener();
    let app = move || {
        App::new()
            .wrap(actix_web::middleware::from_fn(
                server::settings::limit_request_head,
            ))
            .wrap(settings.cors.middleware())
            .wrap(json_error_bodies())
            .app_data(chat.clone())
            .app_data(broadcast.clone())
            .app_data(query_config())
            .app_data(path_config())
            .configure(chat_service::configure)
            .configure(broadcast_sse::configure)
            .route("/", web::get().to(demo_page))
            .route("/crier.js", web::get().to(client_module))
            .configure(|cfg| {
                let document = crate::openapi::document();
                server::health::configure(cfg, web::get().to(readyz), document)
            })
            .configure(|cfg| {
                if metrics_here {
                    cfg.route("/metrics", web::get().to(metrics));
                }
            })
            .default_service(web::to(not_found))
    };
    broadcast_sse::transport::start(app, listener, tls, header_timeout)
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
