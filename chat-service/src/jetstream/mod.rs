//! History on a NATS JetStream cluster: one replicated stream holds every
//! channel's log, and the stream itself publishes each stored entry to the
//! channel's MQTT topic (the append is the publish).
//!
//! Each entry is stored on its own subject, `{stream}.log.{channel}.{id}`:
//! - an append expects that subject to be empty
//!   (`Nats-Expected-Last-Subject-Sequence: 0`), so no id is ever taken twice;
//! - a chat-service appends id `n + 1` only once it has seen `n` stored (its
//!   own acknowledgement, or the channel's last entry read back from the
//!   stream's leader), and one channel's appends go one at a time per
//!   chat-service, so ids have no gap, whichever chat-services post;
//! - a read by id is a lookup of one subject, and a page is one batched
//!   direct get of the channel's subjects from there.
//!
//! The stream republishes each stored entry, once, to
//! `{prefix}.channels.{channel}.messages`, which nats-server's MQTT listener
//! delivers on the MQTT topic `{prefix}/channels/{channel}/messages`, the
//! topic of the embedded deployment. Nothing is published that was not
//! stored: a refused append reaches nobody.

mod append;
pub mod posts;
mod reads;
mod tails;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use protocol::ChannelId;
use tokio::sync::Semaphore;

use crate::config::NatsSettings;
use crate::store::StoreError;
use tails::Tails;

/// Appends waiting or in flight at most; past this, a POST is refused with
/// `503` (the same bound as the sled store's ingest queue).
const MAX_PENDING_APPENDS: usize = 4096;

/// How often the connection to the cluster is checked.
const PING_INTERVAL: Duration = Duration::from_secs(2);

/// How often, and how far apart, the stream is asked for at start.
const PREPARE_ATTEMPTS: u32 = 30;
const PREPARE_PAUSE: Duration = Duration::from_secs(1);

/// A replicated log of every channel, on a JetStream stream.
#[derive(Clone)]
pub struct JetStreamLog {
    inner: Arc<Inner>,
}

struct Inner {
    client: async_nats::Client,
    context: jetstream::Context,
    stream: stream::Stream,
    subjects: Subjects,
    /// Copies the cluster keeps of each stream.
    replicas: usize,
    /// Each channel's next id, as this chat-service last saw it.
    tails: Tails,
    /// Bounds the appends waiting or in flight.
    pending: Semaphore,
}

/// Why the log could not be reached or prepared at start.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{0:?} is not a list of nats:// or tls:// URLs: {1}")]
    Url(String, String),
    #[error("cannot connect to NATS at {0}: {1}")]
    Connect(String, String),
    #[error("cannot make the JetStream stream {0}: {1}")]
    Stream(String, String),
}

/// The subjects of one stream's entries.
#[derive(Debug, Clone)]
struct Subjects {
    stream: String,
}

impl Subjects {
    /// The subject of entry `id` of `channel`.
    fn entry(&self, channel: ChannelId, id: u64) -> String {
        format!("{}.log.{channel}.{id}", self.stream)
    }

    /// Every entry of `channel`.
    fn channel(&self, channel: ChannelId) -> String {
        format!("{}.log.{channel}.*", self.stream)
    }

    /// Every entry of every channel: what the stream holds.
    fn all(&self) -> String {
        format!("{}.log.*.*", self.stream)
    }
}

/// The NATS subject of the MQTT topic prefix (`a/b` is `a.b`).
fn subject_of_topic(prefix: &str) -> String {
    prefix.replace('/', ".")
}

impl JetStreamLog {
    /// Connects to the cluster and makes (or updates) the stream: replicated
    /// `--nats-replicas` ways, file storage, direct gets allowed, the
    /// dedupe window of `--nats-dedupe-window`, and republishing to the MQTT
    /// topics under `topic_prefix`.
    pub async fn connect(
        settings: &NatsSettings,
        topic_prefix: &str,
    ) -> Result<Self, ConnectError> {
        let urls = settings.nats_url.clone().unwrap_or_default();
        let client = connect_client(&urls, settings.nats_ca_file.clone()).await?;
        let context = jetstream::new(client.clone());
        let subjects = Subjects {
            stream: settings.nats_stream.clone(),
        };
        let config = stream_config(settings, &subjects, topic_prefix);
        let stream = prepare_stream(&context, config).await?;
        Ok(JetStreamLog {
            inner: Arc::new(Inner {
                client,
                context,
                stream,
                subjects,
                replicas: usize::from(settings.nats_replicas),
                tails: Tails::default(),
                pending: Semaphore::new(MAX_PENDING_APPENDS),
            }),
        })
    }

    /// Whether the connection to the cluster is up now.
    pub fn is_connected(&self) -> bool {
        self.inner.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Channels whose next id this chat-service keeps in memory.
    pub fn channels_in_memory(&self) -> usize {
        self.inner.tails.len()
    }
}

/// Makes or updates the stream, and asks again for a while when the cluster
/// is not ready (no quorum yet, nodes still starting).
pub(super) async fn prepare_stream(
    context: &jetstream::Context,
    config: stream::Config,
) -> Result<stream::Stream, ConnectError> {
    let name = config.name.clone();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let made = match context.create_or_update_stream(config.clone()).await {
            Ok(_) => context.get_stream(&name).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match made {
            Ok(stream) => return Ok(stream),
            Err(e) if attempts >= PREPARE_ATTEMPTS => return Err(ConnectError::Stream(name, e)),
            Err(e) => {
                log::warn!("JetStream stream {name} is not ready ({e}); asking again");
                tokio::time::sleep(PREPARE_PAUSE).await;
            }
        }
    }
}

async fn connect_client(
    urls: &str,
    ca_file: Option<std::path::PathBuf>,
) -> Result<async_nats::Client, ConnectError> {
    let addresses = urls
        .split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(|url| url.parse::<async_nats::ServerAddr>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConnectError::Url(redact(urls), e.to_string()))?;
    if addresses.is_empty() {
        return Err(ConnectError::Url(redact(urls), "no URL".to_string()));
    }
    let mut options = async_nats::ConnectOptions::new();
    if let Some(ca_file) = ca_file {
        options = options.add_root_certificates(ca_file);
    }
    options
        .name("crier-chat-service")
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(5))
        // A server that stops answering (paused, cut off) is left for
        // another after two unanswered pings: within seconds rather than the
        // client's default of minutes, during which every append would time
        // out.
        .ping_interval(PING_INTERVAL)
        .connect(addresses)
        .await
        .map_err(|e| ConnectError::Connect(redact(urls), e.to_string()))
}

/// The cluster could not be asked, or did not answer in time.
fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// `urls` without passwords, for logs and errors.
pub fn redact(urls: &str) -> String {
    urls.split(',')
        .map(|url| server::mqtt::redact(url.trim()))
        .collect::<Vec<_>>()
        .join(",")
}

fn stream_config(
    settings: &NatsSettings,
    subjects: &Subjects,
    topic_prefix: &str,
) -> stream::Config {
    stream::Config {
        name: settings.nats_stream.clone(),
        description: Some("Crier: every channel's history".to_string()),
        subjects: vec![subjects.all()],
        storage: stream::StorageType::File,
        num_replicas: usize::from(settings.nats_replicas),
        duplicate_window: settings.nats_dedupe_window,
        allow_direct: true,
        republish: Some(stream::Republish {
            source: subjects.all(),
            destination: format!(
                "{}.channels.{{{{wildcard(1)}}}}.messages",
                subject_of_topic(topic_prefix)
            ),
            headers_only: false,
        }),
        ..Default::default()
    }
}
