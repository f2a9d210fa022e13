//! Builds the chat-service: the route table, its shared state, and a server bound
//! to a listener whose real port is known (tests bind port 0).

use std::sync::Arc;

use server::auth::Verifier;
use server::binary::Binary;
use server::mqtt::{BrokerStatus, BrokerUrl};
use server::presence::Watcher;
use server::service::{Running, Service};
use server::tasks::Background;
use tokio::task::JoinHandle;

use crate::access::Access;
use crate::bans::Bans;
use crate::config::{ChatSettings, Config, Limits};
use crate::error::ChatError;
use crate::history::{History, read_on_pool};
use crate::intake::{self, Forwarder, IntakeSettings};
use crate::jetstream::JetStreamLog;
use crate::publish::link::BrokerTarget;
use crate::publish::{self, Publisher};
use crate::publish_hook::PublishHook;
use crate::rate_limit::RateLimiter;
use crate::routes::{admin, channels, erase, health, messages, revisions, signals};
use crate::store::{self, Ack, Store};
use crate::webhooks::{self, Webhooks};

/// Everything a handler needs, cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// Every channel's log: what posts append to and history reads.
    pub history: History,
    /// The local sled store: history without `--nats-url`, and bans and
    /// webhook positions in every case.
    pub store: Store,
    pub publisher: Publisher,
    pub access: Access,
    pub bans: Bans,
    pub rate: Arc<RateLimiter>,
    /// Signals (typing, read markers) per author.
    pub signal_rate: Arc<RateLimiter>,
    pub limits: Limits,
    /// When a POST is answered (see `--durable-ack`).
    pub ack: Ack,
    /// Whether posts are taken from MQTT (`None` with `--mqtt-posts false`).
    pub mqtt_posts: Option<BrokerStatus>,
    /// Who follows each channel, over every broadcast-sse node.
    pub presence: Watcher,
    /// Where store reads run: the process's one blocking pool.
    pub background: Background,
    /// Asked about each post before it is stored (`None`: no hook configured).
    pub publish_hook: Option<PublishHook>,
    /// Events POSTed to the app (`None`: no `--webhook-url`).
    pub webhooks: Option<Webhooks>,
}

impl AppState {
    /// Opens the store, connects the publisher to `broker` and takes MQTT posts
    /// from `posts_broker` (the same broker, over the network; both keep
    /// retrying in the background if it is not there yet). Every task it
    /// starts runs in `background`. With `replicated`, history is that
    /// JetStream log rather than the local store.
    pub fn start(
        settings: &ChatSettings,
        replicated: Option<JetStreamLog>,
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
        let publish_hook = PublishHook::new(&settings.publish_hook)
            .map_err(|e| StartError::PublishHook(e.to_string()))?;
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
        let presence = Watcher::start(&posts_broker, topic_prefix, background);
        if !settings.max_fanout_delay.is_zero() {
            store.follow_fanout(presence.fanout_delays(), settings.max_fanout_delay);
        }
        if replicated.is_some() && !settings.webhooks.webhook_urls.is_empty() {
            return Err(StartError::NotWithNats("webhooks (--webhook-url)"));
        }
        let webhooks = webhooks::start(&settings.webhooks, &store, &presence, background)
            .map_err(|e| StartError::Webhooks(e.to_string()))?;
        let history = match replicated {
            Some(log) => History::Replicated(log),
            None => History::Local {
                store: store.clone(),
                background: background.clone(),
            },
        };
        let retention = settings.retention;
        background.spawn(store::retention::run(
            store.clone(),
            retention.policy(),
            retention.interval(),
        ));
        let state = AppState {
            history,
            store,
            publisher,
            access: Access::new(verifier),
            bans,
            rate: Arc::new(RateLimiter::new(
                settings.limits.post_rate_per_sec,
                settings.limits.post_burst,
            )),
            signal_rate: Arc::new(
                RateLimiter::new(
                    settings.signals.signal_rate_per_sec,
                    settings.signals.signal_burst,
                )
                .limiting("signals"),
            ),
            limits: settings.limits,
            ack: Ack::durable(settings.durable_ack),
            mqtt_posts: None,
            presence,
            background: background.clone(),
            publish_hook,
            webhooks,
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
        if self.history.replicated().is_some() {
            // Taken from the JetStream work queue instead (see
            // `jetstream::posts`), once the service is built.
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
    /// Runs a read of the store on the process's blocking pool: sled calls
    /// never run on the async HTTP workers.
    pub async fn read_store<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Store) -> Result<T, sled::Error> + Send + 'static,
    ) -> Result<T, ChatError> {
        read_on_pool(&self.store, &self.background, read).await
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
    #[error(transparent)]
    Serve(#[from] server::service::ServeError),
    #[error("the service must start inside a tokio runtime")]
    NoRuntime,
    #[error("cannot set up the relay of MQTT posts: {0}")]
    Relay(String),
    #[error("cannot set up the publish hook: {0}")]
    PublishHook(String),
    #[error("cannot set up the webhooks: {0}")]
    Webhooks(String),
    #[error("{0} is not available with --nats-url yet")]
    NotWithNats(&'static str),
    #[error(transparent)]
    Nats(#[from] crate::jetstream::ConnectError),
}

// The API routes, the table of contents of the service; the all-in-one
// binary mounts them next to broadcast-sse's. Each resource answers any other
// method `405` with an `Allow` header naming these.
server::routes! {
    "/bans" => { GET => admin::list_bans, POST => admin::add_bans },
    "/bans/{channel}/{name}" => { DELETE => admin::lift_ban },
    "/publish" => { POST => admin::publish },
    "/erase" => { POST => erase::erase },
    "/channels/{channel}/messages" => {
        GET => messages::list_messages,
        POST => messages::post_message,
    },
    "/channels/{channel}/messages/{id}" => {
        GET => messages::get_message,
        PATCH => revisions::edit_message,
        DELETE => revisions::delete_message,
    },
    "/channels/{channel}/signals" => { POST => signals::post_signal },
    "/channels/{channel}/stats" => { GET => channels::stats },
    "/channels/{channel}/presence" => { GET => channels::presence },
}

/// A running chat-service: its server and the tasks to watch.
pub struct Application {
    server: Running,
    publisher_task: JoinHandle<()>,
    background: Background,
    store: Store,
    banner: String,
}

impl Binary for Application {
    const NAME: &'static str = "chat-service";
    type Config = Config;
    type Error = StartError;

    async fn build(config: Config) -> Result<Self, StartError> {
        let broker = config.mqtt.broker()?;
        let verifier = server::auth::start_verifier(&config.auth)?;
        let background = Background::on_current_runtime().ok_or(StartError::NoRuntime)?;
        let replicated = match &config.nats.nats_url {
            Some(_) => Some(JetStreamLog::connect(&config.nats, &config.mqtt.topic_prefix).await?),
            None => None,
        };
        let (mut state, publisher_task) = AppState::start(
            &config.chat,
            replicated,
            BrokerTarget::Network(broker.clone()),
            broker,
            &config.mqtt.topic_prefix,
            verifier,
            &background,
        )?;
        if let Some(log) = state.history.replicated()
            && config.chat.mqtt_posts.mqtt_posts
        {
            let consumer = log.posts(&config.mqtt.topic_prefix).await?;
            let status = BrokerStatus::default();
            state.mqtt_posts = Some(status.clone());
            let taking = crate::jetstream::posts::Taking {
                consumer,
                prefix: config.mqtt.topic_prefix.clone(),
                status,
            };
            crate::jetstream::posts::take(state.clone(), taking, &background);
        }
        let store = state.store.clone();
        let server = Service::new(
            config.server.clone(),
            health::readyz,
            crate::openapi::document(),
        )
        .data(state)
        .routes(configure)
        .metrics(crate::metrics::scrape)
        .start(&config.listen)?;
        let banner = format!(
            "chat-service listening on {}://{} (broker {})",
            config.server.scheme(),
            server.address(),
            server::mqtt::redact(&config.mqtt.mqtt_url),
        );
        Ok(Application {
            server,
            publisher_task,
            background,
            store,
            banner,
        })
    }

    /// Runs until SIGINT/SIGTERM or until the publisher fails. On a signal the
    /// server stops accepting and lets in-flight requests finish (each POST
    /// flushes before it answers); then the background tasks stop (the
    /// publisher persists its watermarks last) and the store is flushed once
    /// more before returning.
    async fn run_until_stopped(self) -> std::io::Result<()> {
        let result = self
            .server
            .until_stopped(self.publisher_task, "MQTT publisher", || {})
            .await;
        stop_in_order(&self.background, &self.store).await;
        result
    }

    fn banner(&self) -> &str {
        &self.banner
    }
}

/// The end of a stop, once the server no longer takes requests: the background
/// tasks end (within their grace), then the store is flushed, with whatever
/// they wrote last.
pub async fn stop_in_order(background: &Background, store: &Store) {
    background.finish().await;
    if let Err(e) = store.flush().await {
        log::error!("final flush failed: {e}");
    }
}
