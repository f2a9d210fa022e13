//! Where a channel's log lives: the local sled store, or a replicated
//! JetStream stream (`--nats-url`). Posts and history reads go through here,
//! so a route does the same thing on either.

use protocol::{ChannelId, Message};
use server::tasks::Background;

use crate::error::ChatError;
use crate::jetstream::JetStreamLog;
use crate::store::{Ack, Appended, ChannelStats, Entry, Store, StoreError};

/// A page of history: the latest entries, or those after an id.
#[derive(Debug, Clone, Copy)]
pub struct PageRequest {
    pub after: Option<u64>,
    pub limit: usize,
    /// The log as written, edits and deletions as entries of their own;
    /// else messages as they now are.
    pub raw: bool,
}

/// Cheap-to-clone handle on the log of every channel.
#[derive(Clone)]
pub enum History {
    /// sled on this machine; reads run on the blocking pool.
    Local {
        store: Store,
        background: Background,
    },
    /// A JetStream stream replicated over a NATS cluster.
    Replicated(JetStreamLog),
}

impl History {
    /// Appends one entry and answers as `ack` says (a replicated append is
    /// always answered once a quorum of replicas has it on disk).
    pub async fn append_one(&self, entry: Entry, ack: Ack) -> Result<Appended, StoreError> {
        match self {
            History::Local { store, .. } => store.append_one(entry, ack).await,
            History::Replicated(log) => log.append_one(entry).await,
        }
    }

    /// Appends entries in order, each answered as `ack` says.
    pub async fn append(&self, entries: Vec<Entry>, ack: Ack) -> Result<Vec<Appended>, StoreError> {
        match self {
            History::Local { store, .. } => store.append(entries, ack).await,
            History::Replicated(log) => {
                let mut appended = Vec::with_capacity(entries.len());
                for entry in entries {
                    appended.push(log.append_one(entry).await?);
                }
                Ok(appended)
            }
        }
    }

    /// A page of the channel's history, in id order.
    pub async fn page(
        &self,
        channel: ChannelId,
        page: PageRequest,
    ) -> Result<Vec<Message>, ChatError> {
        let PageRequest { after, limit, raw } = page;
        match self {
            History::Local { .. } => {
                self.read_local(move |store| {
                    let history = store.synced();
                    match (after, raw) {
                        (Some(after), true) => history.after(channel, after, limit),
                        (None, true) => history.latest(channel, limit),
                        (Some(after), false) => history.current_after(channel, after, limit),
                        (None, false) => history.current_latest(channel, limit),
                    }
                })
                .await
            }
            History::Replicated(log) => {
                let entries = match after {
                    Some(after) => log.after(channel, after, limit).await?,
                    None => log.latest(channel, limit).await?,
                };
                Ok(as_read(entries, raw))
            }
        }
    }

    /// Entry `id` of the channel: as it now is, or as written (`raw`).
    pub async fn message(
        &self,
        channel: ChannelId,
        id: u64,
        raw: bool,
    ) -> Result<Option<Message>, ChatError> {
        match self {
            History::Local { .. } => {
                self.read_local(move |store| match raw {
                    true => store.synced().get(channel, id),
                    false => store.synced().current_get(channel, id),
                })
                .await
            }
            History::Replicated(log) => Ok(log.get(channel, id).await?),
        }
    }

    /// What the channel holds.
    pub async fn channel_stats(&self, channel: ChannelId) -> Result<ChannelStats, ChatError> {
        match self {
            History::Local { .. } => {
                self.read_local(move |store| store.synced().channel_stats(channel))
                    .await
            }
            History::Replicated(log) => Ok(log.channel_stats(channel).await?),
        }
    }

    /// Whether the log can be written now.
    pub async fn is_healthy(&self) -> bool {
        match self {
            History::Local { .. } => self
                .read_local(|store| Ok(store.is_healthy()))
                .await
                .unwrap_or(false),
            History::Replicated(log) => log.is_connected(),
        }
    }

    /// The replicated log, when history is on NATS.
    pub fn replicated(&self) -> Option<&JetStreamLog> {
        match self {
            History::Local { .. } => None,
            History::Replicated(log) => Some(log),
        }
    }

    /// Refuses what only the local store can do yet: `feature` names it.
    pub fn require_local(&self, feature: &'static str) -> Result<(), ChatError> {
        match self {
            History::Local { .. } => Ok(()),
            History::Replicated(_) => Err(ChatError::NotWithNats(feature)),
        }
    }

    /// Runs a read of the local store on the blocking pool.
    async fn read_local<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Store) -> Result<T, sled::Error> + Send + 'static,
    ) -> Result<T, ChatError> {
        match self {
            History::Local { store, background } => read_on_pool(store, background, read).await,
            History::Replicated(_) => Err(ChatError::NotWithNats("this read")),
        }
    }
}

/// Runs a read of `store` on the process's blocking pool: sled calls never
/// run on the async HTTP workers.
pub async fn read_on_pool<T: Send + 'static>(
    store: &Store,
    background: &Background,
    read: impl FnOnce(&Store) -> Result<T, sled::Error> + Send + 'static,
) -> Result<T, ChatError> {
    let store = store.clone();
    let result = background.blocking(move || read(&store)).await;
    Ok(result.map_err(|_| ChatError::ReaderStopped)??)
}

/// A page read from the replicated log as the request asks: as written, or
/// its messages (edits and deletions are not taken on NATS yet, so messages
/// are as they now are).
fn as_read(entries: Vec<Message>, raw: bool) -> Vec<Message> {
    if raw {
        return entries;
    }
    entries
        .into_iter()
        .filter(|entry| entry.kind.is_message())
        .collect()
}
