//! Builds the chat-service: the route table, its shared state, and a server bound
//! to a listener whose real port is known (tests bind port 0).

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::{App, HttpServer, web};
use server::auth::Verifier;
use server::error::{json_error_bodies, not_found, path_config, query_config};
use server::mqtt::{BrokerStatus, BrokerUrl};
use server::plain_server::{self, Options};
use server::presence::Watcher;
use server::settings::ServerSettings;
use server::tasks::Background;
use tokio::task::JoinHandle;

use crate::access::Access;
use crate::bans::Bans;
use crate::config::{ChatSettings, Config, Limits};
use crate::error::ChatError;
use crate::intake::{self, Forwarder, IntakeSettings};
use crate::publish::link::BrokerTarget;
use crate::publish::{self, Publisher};
use crate::rate_limit::RateLimiter;
use crate::routes::{admin, channels, health, messages};
use crate::store::{self, Store};

/// Everything a handler needs, cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub publisher: Publisher,
    pub access: Access,
    pub bans: Bans,
    pub rate: Arc<RateLimiter>,
    pub limits: Limits,
    /// Flush before answering a POST (see `--durable-ack`).
    pub durable_ack: bool,
    /// Whether posts are taken from MQTT (`None` with `--mqtt-posts false`).
    pub mqtt_posts: Option<BrokerStatus>,
    /// Who follows each channel, over every broadcast-sse node.
    pub presence: Watcher,
}

impl AppState {
    /// Opens the store, connects the publisher to `broker` and takes MQTT posts
    /// from `posts_broker` (the same broker, over the network; both keep
    /// retrying in the background if it is not there yet). Every task it
    /// starts runs in `background`.
    pub fn start(
        settings: &ChatSettings,
        broker: BrokerTarget,
        posts_broker: BrokerUrl,
        topic_prefix: &str,
        verifier: Option<Arc<Verifier>>,
        background: &Background,
    ) -> Result<(AppState, JoinHandle<()>), StartError> {
        // Before anything records: metric handles made earlier would record nowhere.
        server::metrics::Metrics::install();
        crate::metrics::register();
        let storage_error = |source| StartError::Storage {
            path: settings.data_dir.display().to_string(),
            source,
        };
        let (store, announcements) =
            Store::open(&settings.data_dir, settings.store()).map_err(storage_error)?;
        let bans = Bans::open(store.clone()).map_err(storage_error)?;
        let (publisher, task) = publish::start(
            broker,
            topic_prefix,
            store.clone(),
            announcements,
            background,
        )
        .map_err(storage_error)?;
        let retention = settings.retention;
        background.spawn(store::retention::run(
            store.clone(),
            retention.policy(),
            retention.interval(),
        ));
        let state = AppState {
            store,
            publisher,
            access: Access::new(verifier),
            bans,
            rate: Arc::new(RateLimiter::new(
                settings.limits.post_rate_per_sec,
                settings.limits.post_burst,
            )),
            limits: settings.limits,
            durable_ack: settings.durable_ack,
            mqtt_posts: None,
            presence: Watcher::start(&posts_broker, topic_prefix, background),
        };
        Ok((
            state.take_mqtt_posts(settings, posts_broker, topic_prefix, background)?,
            task,
        ))
    }

    /// Starts taking MQTT posts, unless `--mqtt-posts false`.
    fn take_mqtt_posts(
        mut self,
        settings: &ChatSettings,
        broker: BrokerUrl,
        prefix: &str,
        background: &Background,
    ) -> Result<Self, StartError> {
        let posts = &settings.mqtt_posts;
        if !posts.mqtt_posts {
            return Ok(self);
        }
        let forward = match &posts.mqtt_post_forward {
            Some(base) => Some(
                Forwarder::new(base, posts.mqtt_post_forward_token.clone())
                    .map_err(|e| StartError::Relay(e.to_string()))?,
            ),
            None => None,
        };
        let status = BrokerStatus::default();
        self.mqtt_posts = Some(status.clone());
        let intake = IntakeSettings {
            broker,
            prefix: prefix.to_string(),
            group: posts.group(prefix),
            forward,
        };
        intake::start(self.clone(), intake, status, background);
        Ok(self)
    }
}

impl AppState {
    /// Runs a read of the store on actix's blocking pool: sled calls never run
    /// on the async HTTP workers.
    pub async fn read_store<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Store) -> Result<T, sled::Error> + Send + 'static,
    ) -> Result<T, ChatError> {
        let store = self.store.clone();
        let result = web::block(move || read(&store)).await;
        Ok(result.map_err(|_| ChatError::ReaderStopped)??)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open the history store at {path}: {source}")]
    Storage { path: String, source: sled::Error },
    #[error(transparent)]
    BrokerUrl(#[from] server::mqtt::MqttUrlError),
    #[error("JWT key: {0}")]
    Auth(#[from] server::auth::KeyError),
    #[error("TLS: {0}")]
    Tls(#[from] server::tls::TlsError),
    #[error("the service must start inside a tokio runtime")]
    NoRuntime,
    #[error("cannot set up the relay of MQTT posts: {0}")]
    Relay(String),
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: String,
        source: std::io::Error,
    },
}

// The API routes, the table of contents of the service; the all-in-one
// binary mounts them next to broadcast-sse's. Each resource answers any other
// method `405` with an `Allow` header naming these.
server::routes! {
    "/bans" => { GET => admin::list_bans, POST => admin::add_bans },
    "/bans/{channel}/{name}" => { DELETE => admin::lift_ban },
    "/publish" => { POST => admin::publish },
    "/channels/{channel}/messages" => {
        GET => messages::list_messages,
        POST => messages::post_message,
    },
    "/channels/{channel}/messages/{id}" => { GET => messages::get_message },
    "/channels/{channel}/stats" => { GET => channels::stats },
    "/channels/{channel}/presence" => { GET => channels::presence },
}

/// `/healthz` and `/readyz`, separate from [`configure`] because the all-in-one
/// binary answers them for both services at once.
pub fn configure_health(cfg: &mut web::ServiceConfig) {
    server::health::configure(
        cfg,
        web::get().to(health::readyz),
        crate::openapi::document(),
    );
}

/// A running chat-service: its port and the tasks to watch.
pub struct Application {
    address: SocketAddr,
    server: Server,
    publisher_task: JoinHandle<()>,
    background: Background,
    store: Store,
}

/// How long a stop waits for the background tasks (the publisher persisting
/// its watermarks among them) once the server has stopped.
pub const BACKGROUND_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

impl Application {
    pub async fn build(config: Config) -> Result<Self, StartError> {
        let broker = config.mqtt.broker()?;
        let listener = TcpListener::bind(&config.listen).map_err(|source| StartError::Listen {
            address: config.listen.clone(),
            source,
        })?;
        let address = listener.local_addr().map_err(|source| StartError::Listen {
            address: config.listen.clone(),
            source,
        })?;
        let verifier = server::auth::start_verifier(&config.auth)?;
        let background = Background::on_current_runtime().ok_or(StartError::NoRuntime)?;
        let (state, publisher_task) = AppState::start(
            &config.chat,
            BrokerTarget::Network(broker.clone()),
            broker,
            &config.mqtt.topic_prefix,
            verifier,
            &background,
        )?;
        let store = state.store.clone();
        let tls = config.server.tls()?;
        if let Some(address) = &config.server.metrics_listen {
            let metrics = crate::metrics::configure;
            server::metrics::serve_alone_with(address, state.clone(), metrics).map_err(
                |source| StartError::Listen {
                    address: address.clone(),
                    source,
                },
            )?;
        }
        let server = serve(listener, state, config.server.clone(), tls).map_err(|source| {
            StartError::Listen {
                address: config.listen.clone(),
                source,
            }
        })?;
        Ok(Application {
            address,
            server,
            publisher_task,
            background,
            store,
        })
    }

    /// The bound address, with the real port when the config asked for port 0.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Runs until the server stops or the publisher fails. On SIGINT/SIGTERM actix
    /// stops accepting and lets in-flight requests finish (each POST flushes before
    /// it answers); then the background tasks stop (the publisher persists its
    /// watermarks last) and the store is flushed once more before returning.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let result = tokio::select! {
            result = self.server => result,
            _ = self.publisher_task => {
                Err(std::io::Error::other("the MQTT publisher stopped"))
            }
        };
        stop_in_order(&self.background, &self.store).await;
        result
    }
}

/// The end of a stop, once the server no longer takes requests: the background
/// tasks end (within [`BACKGROUND_GRACE`]), then the store is flushed, with
/// whatever they wrote last.
pub async fn stop_in_order(background: &Background, store: &Store) {
    if !background.stop(BACKGROUND_GRACE).await {
        log::warn!(
            "{} background tasks still running {BACKGROUND_GRACE:?} after the stop",
            background.running()
        );
    }
    if let Err(e) = store.flush().await {
        log::error!("final flush failed: {e}");
    }
}

/// What actix-web's `HttpServer` uses by default: connections per worker,
/// the listen backlog; and seconds a graceful stop waits for requests in flight.
const MAX_CONNECTIONS_PER_WORKER: usize = 25_000;
const BACKLOG: u32 = 1024;
const SHUTDOWN_TIMEOUT_SECS: u64 = 5;

/// Serves the API over HTTPS (HTTP/2 or HTTP/1.1 by ALPN) with `tls`, else
/// over HTTP/1.1 and h2c.
fn serve(
    listener: TcpListener,
    state: AppState,
    settings: ServerSettings,
    tls: Option<rustls::ServerConfig>,
) -> std::io::Result<Server> {
    let state = web::Data::new(state);
    let header_timeout = settings.request_header_timeout();
    let metrics_here = settings.metrics_on_main_listener();
    let app = move || {
        App::new()
            .wrap(actix_web::middleware::from_fn(
                server::settings::limit_request_head,
            ))
            .wrap(settings.cors.middleware())
            .wrap(json_error_bodies())
            .app_data(state.clone())
            .app_data(query_config())
            .app_data(path_config())
            .configure(configure)
            .configure(configure_health)
            .configure(|cfg| {
                if metrics_here {
                    crate::metrics::configure(cfg);
                }
            })
            .default_service(web::to(not_found))
    };
    if let Some(tls) = tls {
        let server = HttpServer::new(app)
            .max_connections(MAX_CONNECTIONS_PER_WORKER)
            .backlog(BACKLOG)
            .shutdown_timeout(SHUTDOWN_TIMEOUT_SECS)
            .client_request_timeout(header_timeout);
        return Ok(server.listen_rustls_0_23(listener, tls)?.run());
    }
    let options = Options {
        max_connections: MAX_CONNECTIONS_PER_WORKER,
        backlog: BACKLOG,
        shutdown_timeout_secs: SHUTDOWN_TIMEOUT_SECS,
        header_timeout,
        h1_allow_half_closed: true,
        handle_signals: true,
    };
    plain_server::start(app, listener, options, move |io, dispatch| {
        plain_server::serve(io, dispatch, header_timeout)
    })
}
