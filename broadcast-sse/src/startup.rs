//! Builds broadcast-sse: the route table, its shared state and background tasks,
//! and a server bound to a listener whose real port is known (tests bind port 0).

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use actix_web::dev::{Server, ServerHandle};
use actix_web::{App, web};
use server::auth::Verifier;
use server::error::{json_error_bodies, not_found, path_config, query_config};
use server::mqtt::BrokerUrl;
use server::settings::ServerSettings;
use tokio::task::JoinHandle;

use crate::bus;
use crate::config::{BroadcastSettings, Config};
use crate::history::{HistorySource, HttpHistory};
use crate::hub::Hub;
use crate::presence::{self, LocalPresence};
use crate::routes::{events, health};
use crate::stream_slots::StreamSlots;
use server::mqtt::BrokerStatus;
use server::presence::Watcher;
use server::tasks::Background;

/// Everything a handler needs, cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub hub: Hub,
    pub history: Arc<dyn HistorySource>,
    pub broker: BrokerStatus,
    pub settings: BroadcastSettings,
    /// Checks subscribers' tokens; `None` when authentication is off.
    pub verifier: Option<Arc<Verifier>>,
    pub stream_slots: StreamSlots,
    /// The streams this node holds, published for presence.
    pub presence: LocalPresence,
    /// Presence across every node, for streams that follow it (`None` in
    /// tests without a broker).
    pub watcher: Option<Watcher>,
}

/// Where a node's messages come from: the broker, under a topic prefix, with
/// one wildcard subscription (`subscribe_all`) or one per channel.
pub struct Bus<'a> {
    pub broker: &'a BrokerUrl,
    pub topic_prefix: &'a str,
    pub subscribe_all: bool,
}

impl AppState {
    /// Creates the hub (which backfills gaps from `history`) and starts the subscriber
    /// and heartbeat tasks in `background`; streams that follow presence are fed by
    /// `watcher`. The handle ends when the subscriber task ends (it fails, or the
    /// service stops).
    pub fn start(
        settings: BroadcastSettings,
        bus: Bus<'_>,
        history: Arc<dyn HistorySource>,
        verifier: Option<Arc<Verifier>>,
        watcher: Watcher,
        background: &Background,
    ) -> (AppState, JoinHandle<()>) {
        let Bus {
            broker,
            topic_prefix,
            subscribe_all,
        } = bus;
        // Before anything records: metric handles made earlier would record nowhere.
        server::metrics::Metrics::install();
        crate::metrics::register();
        let (hub, changes) = Hub::new(
            settings.ring_size,
            history.clone(),
            Some(background.clone()),
        );
        let presence = LocalPresence::new();
        let (status, client, subscriber) = bus::start(
            broker,
            topic_prefix,
            subscribe_all,
            hub.clone(),
            changes,
            &presence,
            background,
        );
        let prefix = topic_prefix.to_string();
        background.spawn(presence::publish(
            presence.clone(),
            client,
            status.clone(),
            prefix,
        ));
        background.spawn(beat_hearts(hub.clone(), settings));
        let mut state = AppState::new(hub, status, settings, history, verifier);
        state.presence = presence;
        state.watcher = Some(watcher);
        (state, subscriber)
    }

    /// The state around `hub`.
    fn new(
        hub: Hub,
        broker: BrokerStatus,
        settings: BroadcastSettings,
        history: Arc<dyn HistorySource>,
        verifier: Option<Arc<Verifier>>,
    ) -> AppState {
        AppState {
            hub,
            history,
            broker,
            settings,
            verifier,
            stream_slots: StreamSlots::new(settings.max_streams_per_address),
            presence: LocalPresence::new(),
            watcher: None,
        }
    }
}

async fn beat_hearts(hub: Hub, settings: BroadcastSettings) {
    let mut interval = tokio::time::interval(settings.heartbeat());
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval.tick().await;
    loop {
        interval.tick().await;
        hub.beat();
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    BrokerUrl(#[from] server::mqtt::MqttUrlError),
    #[error("{0}")]
    History(#[from] crate::history::HistoryError),
    #[error("JWT key: {0}")]
    Auth(#[from] server::auth::KeyError),
    #[error("TLS: {0}")]
    Tls(#[from] server::tls::TlsError),
    #[error("the service must start inside a tokio runtime")]
    NoRuntime,
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: String,
        source: std::io::Error,
    },
}

// The API routes; the all-in-one binary mounts them next to the
// chat-service's.
server::routes! {
    "/channels/{channel}/events" => { GET => events::events },
    "/events" => { GET => events::channels_events },
}

/// `/healthz` and `/readyz` of the standalone service.
pub fn configure_health(cfg: &mut web::ServiceConfig) {
    server::health::configure(
        cfg,
        web::get().to(health::readyz),
        crate::openapi::document(),
    );
}

/// A running broadcast-sse: its address and the tasks to watch.
pub struct Application {
    address: SocketAddr,
    server: Server,
    hub: Hub,
    subscriber_task: JoinHandle<()>,
    background: Background,
}

/// How long a stop waits for the background tasks once the server stopped.
const BACKGROUND_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

impl Application {
    pub async fn build(config: Config) -> Result<Self, StartError> {
        let broker = config.mqtt.broker()?;
        let verifier = server::auth::start_verifier(&config.auth)?;
        let credentials = config
            .auth
            .history_credentials(config.history_token.clone())?;
        let history = HttpHistory::new(&config.history_url, credentials)?;
        let history: Arc<dyn HistorySource> = Arc::new(history);
        let listen_error = |source| StartError::Listen {
            address: config.listen.clone(),
            source,
        };
        let listener = TcpListener::bind(&config.listen).map_err(listen_error)?;
        let address = listener.local_addr().map_err(listen_error)?;
        let background = Background::on_current_runtime().ok_or(StartError::NoRuntime)?;
        let bus = Bus {
            broker: &broker,
            topic_prefix: &config.mqtt.topic_prefix,
            subscribe_all: config.subscribe_all,
        };
        let (state, subscriber_task) = AppState::start(
            config.broadcast,
            bus,
            history,
            verifier,
            Watcher::start(&broker, &config.mqtt.topic_prefix, &background),
            &background,
        );
        let hub = state.hub.clone();
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
        let server = serve(listener, state, config.server.clone(), tls).map_err(listen_error)?;
        Ok(Application {
            address,
            server,
            hub,
            subscriber_task,
            background,
        })
    }

    /// The bound address, with the real port when the config asked for port 0.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Runs until SIGINT/SIGTERM (streams end at once, the server stops gracefully)
    /// or until the subscriber fails; then stops the background tasks.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let result = run_with_hub(self.server, self.hub, self.subscriber_task).await;
        if !self.background.stop(BACKGROUND_GRACE).await {
            log::warn!(
                "{} background tasks still running {BACKGROUND_GRACE:?} after the stop",
                self.background.running()
            );
        }
        result
    }
}

/// Runs `server` until a stop signal or until `task` ends. On a signal every stream
/// is ended first, so a graceful stop does not wait on open streams.
pub async fn run_with_hub(server: Server, hub: Hub, task: JoinHandle<()>) -> std::io::Result<()> {
    let handle: ServerHandle = server.handle();
    let server = tokio::spawn(server);
    tokio::select! {
        () = stop_signal() => {
            log::info!(
                "stopping: ending {} open streams",
                crate::metrics::open_streams()
            );
            hub.shut_down();
            handle.stop(true).await;
            Ok(())
        }
        result = server => result.unwrap_or_else(|e| Err(std::io::Error::other(e))),
        _ = task => Err(std::io::Error::other("the MQTT subscriber stopped")),
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

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
    crate::transport::start(app, listener, tls, header_timeout)
}
