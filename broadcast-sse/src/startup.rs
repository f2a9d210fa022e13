//! Builds broadcast-sse: the route table, its shared state and background tasks,
//! and a server bound to a listener whose real port is known (tests bind port 0).

use std::sync::Arc;

use server::auth::Verifier;
use server::binary::Binary;
use server::service::{Running, Service};
use server::transport::Transport;
use tokio::task::JoinHandle;

use crate::bus;
pub use crate::bus::Bus;
use crate::config::{BroadcastSettings, Config};
use crate::history::{HistorySource, HttpHistory, SharedReads};
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
        let topic_prefix = bus.topic_prefix;
        // Before anything records: metric handles made earlier would record nowhere.
        server::metrics::Metrics::install();
        crate::metrics::register();
        let history: Arc<dyn HistorySource> = Arc::new(SharedReads::new(history));
        let (hub, changes) = Hub::new(
            settings.ring_size,
            history.clone(),
            Some(background.clone()),
        );
        let presence = LocalPresence::new();
        let started = bus::start(bus, hub.clone(), changes, &presence, background);
        let prefix = topic_prefix.to_string();
        background.spawn(crate::fanout_report::report(
            presence.node().to_string(),
            started.node_client.clone(),
            started.node_status.clone(),
            prefix.clone(),
        ));
        background.spawn(presence::publish(
            presence.clone(),
            started.node_client,
            started.node_status,
            prefix,
        ));
        background.spawn(beat_hearts(hub.clone(), settings));
        let mut state = AppState::new(hub, started.status, settings, history, verifier);
        state.presence = presence;
        state.watcher = Some(watcher);
        (state, started.task)
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
    #[error(transparent)]
    Serve(#[from] server::service::ServeError),
    #[error("the service must start inside a tokio runtime")]
    NoRuntime,
}

// The API routes; the all-in-one binary mounts them next to the
// chat-service's.
server::routes! {
    "/channels/{channel}/events" => { GET => events::events },
    "/events" => { GET => events::channels_events },
}

/// The paths served as streams: pumped on the socket by the stream threads
/// over plain HTTP/1.1 (the routes of [`events`]).
pub fn is_stream_path(path: &str) -> bool {
    path == "/events"
        || path
            .strip_prefix("/channels/")
            .and_then(|rest| rest.strip_suffix("/events"))
            .is_some_and(|channel| !channel.is_empty() && !channel.contains('/'))
}

/// A running broadcast-sse: its server and the tasks to watch.
pub struct Application {
    server: Running,
    hub: Hub,
    subscriber_task: JoinHandle<()>,
    background: Background,
    banner: String,
}

impl Binary for Application {
    const NAME: &'static str = "broadcast-sse";
    type Config = Config;
    type Error = StartError;

    async fn build(config: Config) -> Result<Self, StartError> {
        let broker = config.mqtt.broker()?;
        let verifier = server::auth::start_verifier(&config.auth)?;
        let credentials = config
            .auth
            .history_credentials(config.history_token.clone())?;
        let history = HttpHistory::new(&config.history_url, credentials)?;
        let history: Arc<dyn HistorySource> = Arc::new(history);
        let background = Background::on_current_runtime().ok_or(StartError::NoRuntime)?;
        let bus = Bus {
            broker: &broker,
            link: None,
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
        let server = Service::new(
            config.server.clone(),
            health::readyz,
            crate::openapi::document(),
        )
        .data(state)
        .routes(configure)
        .metrics(crate::metrics::scrape)
        .transport(Transport::Streams(is_stream_path))
        .start(&config.listen)?;
        let banner = format!(
            "broadcast-sse listening on {}://{} (broker {}, history {})",
            config.server.scheme(),
            server.address(),
            server::mqtt::redact(&config.mqtt.mqtt_url),
            config.history_url,
        );
        Ok(Application {
            server,
            hub,
            subscriber_task,
            background,
            banner,
        })
    }

    /// Runs until SIGINT/SIGTERM (streams end at once, the server stops gracefully)
    /// or until the subscriber fails; then stops the background tasks.
    async fn run_until_stopped(self) -> std::io::Result<()> {
        let result = serve_streams(self.server, &self.hub, self.subscriber_task).await;
        self.background.finish().await;
        result
    }

    fn banner(&self) -> &str {
        &self.banner
    }
}

/// Runs `server` until a stop signal or until the subscriber `task` ends. On
/// a signal every stream of `hub` is ended first, so a graceful stop does not
/// wait on open streams.
pub async fn serve_streams(
    server: Running,
    hub: &Hub,
    task: JoinHandle<()>,
) -> std::io::Result<()> {
    server
        .until_stopped(task, "MQTT subscriber", || {
            log::info!(
                "stopping: ending {} open streams",
                crate::metrics::open_streams()
            );
            hub.shut_down();
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::is_stream_path;

    #[test]
    fn only_the_stream_routes_are_stream_paths() {
        let channel = "0f8fad5b-d9cb-469f-a165-70867728950e";
        assert!(is_stream_path("/events"));
        assert!(is_stream_path(&format!("/channels/{channel}/events")));
        for other in [
            "/channels//events".to_string(),
            format!("/channels/{channel}/events/more"),
            format!("/channels/{channel}/messages"),
            "/events/more".to_string(),
            "/healthz".to_string(),
        ] {
            assert!(!is_stream_path(&other), "{other}");
        }
    }
}
