//! `crier-migrate`: copies a chat-service's sled data directory into the
//! JetStream stream of `--nats-url`, keeping every channel's ids, texts,
//! authors, timestamps and idempotency keys (each entry's JSON as written).
//!
//! It can be interrupted and run again: an entry the stream already has is
//! left as it is, so a second run copies only what the first did not. A
//! channel's entries are copied one at a time in id order, so the stream
//! holds each channel's entries in id order with no gap, as an append
//! would; channels are copied side by side.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use clap::Parser;
use futures_util::StreamExt;
use protocol::ChannelId;

use crate::config::NatsSettings;
use crate::jetstream::{ConnectError, JetStreamLog};
use crate::store::{Store, StoreError, StoreSettings};

/// Entries read from sled at once per channel.
const PAGE: usize = 1000;

/// `crier-migrate`: copy a sled data directory into a JetStream stream.
#[derive(Debug, Clone, Parser)]
#[command(name = "crier-migrate", version, about)]
pub struct MigrateConfig {
    /// The chat-service's data directory (stop the chat-service first).
    #[arg(long, env = "CRIER_DATA_DIR", default_value = "./crier-data")]
    pub data_dir: PathBuf,

    /// The MQTT topic prefix the stream republishes under (as the
    /// chat-services that will use the stream are started with).
    #[arg(long, env = "CRIER_TOPIC_PREFIX", default_value = "crier", value_parser = protocol::topic::parse_prefix)]
    pub topic_prefix: String,

    /// Channels copied side by side.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub channels_at_once: u16,

    #[command(flatten)]
    pub nats: NatsSettings,
}

/// What a run copied.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    pub channels: u64,
    /// Entries copied by this run.
    pub copied: u64,
    /// Entries the stream had already (from an earlier run).
    pub present: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("--nats-url is required: the cluster to copy into")]
    NoNatsUrl,
    #[error("cannot open the data directory {0}: {1}")]
    Open(String, sled::Error),
    #[error("cannot read the data directory: {0}")]
    Read(#[from] sled::Error),
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("channel {0}: {1} (run again to go on where this stopped)")]
    Copy(ChannelId, StoreError),
}

/// Copies every channel of the data directory into the stream.
pub async fn run(config: &MigrateConfig) -> Result<Copied, MigrateError> {
    if config.nats.nats_url.is_none() {
        return Err(MigrateError::NoNatsUrl);
    }
    let (store, _announcements) = Store::open(&config.data_dir, StoreSettings::default())
        .map_err(|e| MigrateError::Open(config.data_dir.display().to_string(), e))?;
    let log = JetStreamLog::connect(&config.nats, &config.topic_prefix).await?;
    let channels: Vec<ChannelId> = store.last_ids()?.into_keys().collect();
    let progress = Arc::new(Progress::default());
    let copies = futures_util::stream::iter(channels.iter().copied())
        .map(|channel| copy_channel(&store, &log, channel, &progress))
        .buffer_unordered(usize::from(config.channels_at_once));
    let outcomes: Vec<Result<(), MigrateError>> = copies.collect().await;
    outcomes.into_iter().collect::<Result<(), _>>()?;
    Ok(progress.copied(channels.len()))
}

#[derive(Default)]
struct Progress {
    copied: AtomicU64,
    present: AtomicU64,
}

impl Progress {
    fn note(&self, copied: bool) {
        let counter = if copied { &self.copied } else { &self.present };
        let done = counter.fetch_add(1, Ordering::Relaxed) + 1;
        if copied && done.is_multiple_of(100_000) {
            log::info!("{done} entries copied");
        }
    }

    fn copied(&self, channels: usize) -> Copied {
        Copied {
            channels: channels as u64,
            copied: self.copied.load(Ordering::Relaxed),
            present: self.present.load(Ordering::Relaxed),
        }
    }
}

/// Copies one channel's entries in id order.
async fn copy_channel(
    store: &Store,
    log: &JetStreamLog,
    channel: ChannelId,
    progress: &Progress,
) -> Result<(), MigrateError> {
    let keys = store.idempotency_keys(channel)?;
    let mut after = 0;
    loop {
        let page = store.synced().after_raw(channel, after, PAGE)?;
        let Some(&(last, _)) = page.last() else {
            return Ok(());
        };
        for (id, json) in page {
            let key = keys.get(&id).map(String::as_str);
            let copied = log
                .copy_entry(channel, id, json, key)
                .await
                .map_err(|e| MigrateError::Copy(channel, e))?;
            progress.note(copied);
        }
        after = last;
    }
}
