//! Webhooks: every entry of every channel's log, POSTed to the app as a signed
//! JSON event (`message.created`, `message.updated`, `message.deleted`), at
//! least once, in id order per channel, nothing lost; and, best effort, the
//! changes of presence (`channel.occupied`, `channel.vacated`,
//! `presence.joined`, `presence.left`, see [`presence`]).
//!
//! Events are read from the store, never from memory: a lane per webhook and
//! channel reads the synced log after its cursor ([`lane`]), and the cursor
//! (the last id the app acknowledged) is kept in the store, so after a crash
//! or an app down for an hour delivery resumes where it stopped. The store
//! tells the [`dispatcher`] which channels got new ids without ever waiting
//! for it; a slow or absent app never slows a post.
//!
//! At least once: a cursor is recorded after each acknowledgement but not
//! synced on its own, so after a crash the events acknowledged since the last
//! sync are sent again, with the same `id`; receivers deduplicate by it. A
//! webhook the store has not seen before starts at the end of the log (no
//! flood of history).
//!
//! # Layout
//! - [`endpoint`]: a `--webhook-url`, its event filter and its stable id.
//! - [`event`]: the JSON an entry becomes.
//! - [`signature`]: the `Crier-Signature` header.
//! - [`delivery`]: one signed POST, and the pause between attempts.
//! - [`lane`]: one webhook's deliveries of one channel, in order.
//! - [`dispatcher`]: which lanes run, how many at once.
//! - [`presence`]: presence events, from the watcher's changes.
//! - [`queue`]: the bounded queue presence events wait in.

pub mod delivery;
mod dispatcher;
pub mod endpoint;
pub mod event;
mod lane;
mod presence;
mod queue;
pub mod signature;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use server::presence::Watcher;
use server::tasks::Background;

use crate::config::WebhookSettings;
use crate::store::Store;
use delivery::Sender;
use dispatcher::Dispatcher;
use endpoint::Endpoint;
use event::EventType;
use lane::Context;
use queue::EventQueue;

/// Notices of new ids waiting for the dispatcher at most; past this the
/// store drops them and the dispatcher rescans (see [`crate::store::notices`]).
const NOTICE_QUEUE: usize = 1024;
/// Presence events waiting for one webhook at most; past this the oldest
/// are dropped.
pub const PRESENCE_QUEUE: usize = 10_000;

/// What the rest of the service sees of the webhooks.
#[derive(Clone)]
pub struct Webhooks {
    backlog: Arc<AtomicU64>,
    presence_queues: Arc<[Arc<EventQueue>]>,
}

impl Webhooks {
    /// Log entries known but not delivered yet (or not passed over by a
    /// filter), summed over webhooks and channels and updated every second,
    /// plus the presence events queued or being delivered.
    pub fn backlog(&self) -> u64 {
        let queued: u64 = self.presence_queues.iter().map(|q| q.pending()).sum();
        self.backlog.load(Ordering::Relaxed) + queued
    }
}

/// Why the webhooks cannot start.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error(
        "--webhook-url needs --webhook-secret (or CRIER_WEBHOOK_SECRET): every event is signed with it"
    )]
    NoSecret,
    #[error("the webhook {0} is given twice (its event filter aside)")]
    Twice(String),
    #[error("cannot build the webhooks' HTTP client: {0}")]
    Client(String),
    #[error("cannot read the webhooks' cursors: {0}")]
    Storage(#[from] sled::Error),
}

/// Starts delivering to the webhooks the settings name (`None`: there are
/// none). Reads the store's last ids and the webhooks' cursors before the
/// service takes posts, so a new webhook starts exactly at the end of the log.
/// Presence events come from `presence`'s changes, unless
/// `--webhook-presence-events false`.
pub fn start(
    settings: &WebhookSettings,
    store: &Store,
    presence: &Watcher,
    background: &Background,
) -> Result<Option<Webhooks>, WebhookError> {
    if settings.webhook_urls.is_empty() {
        return Ok(None);
    }
    let secret = settings
        .webhook_secret
        .as_ref()
        .map(|secret| secret.0.as_str())
        .filter(|secret| !secret.is_empty())
        .ok_or(WebhookError::NoSecret)?;
    let endpoints = distinct(&settings.webhook_urls)?;
    let sender = Sender::new(secret, settings.webhook_timeout)
        .map_err(|e| WebhookError::Client(e.to_string()))?;
    let Some(notices) = store.listen_for_notices(NOTICE_QUEUE) else {
        log::error!("webhooks: the store's notices are taken; webhooks are off");
        return Ok(None);
    };
    let presence_queues = if settings.webhook_presence_events {
        follow_presence(settings, &endpoints, &sender, presence, background)
    } else {
        Vec::new()
    };
    let context = Arc::new(Context {
        store: store.clone(),
        background: background.clone(),
        sender,
        max_backoff: settings.webhook_max_backoff,
        batch: settings.webhook_batch as usize,
    });
    let backlog = Arc::new(AtomicU64::new(0));
    let concurrency = settings.webhook_concurrency as usize;
    let linger = settings.webhook_linger;
    let mut dispatcher = Dispatcher::new(
        context,
        endpoints.clone(),
        concurrency,
        linger,
        notices,
        backlog.clone(),
    );
    let hooks: Vec<u64> = endpoints.iter().map(|e| e.id()).collect();
    let (last_ids, cursors) = dispatcher::read_positions(store, &hooks)?;
    for (webhook, endpoint) in endpoints.iter().enumerate() {
        if store.webhook_cursors(endpoint.id())?.known {
            dispatcher.behind(webhook, &cursors[webhook], &last_ids);
            log::info!("webhook {}: resuming from its cursors", endpoint.shown());
        } else {
            register(store, endpoint, &last_ids);
        }
    }
    background.spawn(dispatcher.run());
    Ok(Some(Webhooks {
        backlog,
        presence_queues: presence_queues.into(),
    }))
}

/// Starts the presence events of the webhooks that want some: a follower of
/// the watcher's changes, and a delivery task per webhook. Returns their
/// queues.
fn follow_presence(
    settings: &WebhookSettings,
    endpoints: &[Arc<Endpoint>],
    sender: &Sender,
    presence: &Watcher,
    background: &Background,
) -> Vec<Arc<EventQueue>> {
    let wants_presence =
        |endpoint: &&Arc<Endpoint>| EventType::PRESENCE.iter().any(|e| endpoint.wants(*e));
    let hooks: Vec<(Arc<Endpoint>, Arc<EventQueue>)> = endpoints
        .iter()
        .filter(wants_presence)
        .map(|endpoint| (endpoint.clone(), Arc::new(EventQueue::new(PRESENCE_QUEUE))))
        .collect();
    if hooks.is_empty() {
        return Vec::new();
    }
    let Some(changes) = presence.changes() else {
        log::error!("webhooks: the presence changes are taken; no presence events");
        return Vec::new();
    };
    for (endpoint, queue) in &hooks {
        background.spawn(presence::deliver(
            queue.clone(),
            endpoint.clone(),
            sender.clone(),
            settings.webhook_max_backoff,
        ));
    }
    let queues = hooks.iter().map(|(_, queue)| queue.clone()).collect();
    background.spawn(
        presence::Follower {
            changes,
            hooks,
            known: HashMap::new(),
        }
        .run(),
    );
    queues
}

/// A webhook the store has not seen starts at the current end of every channel.
fn register(store: &Store, endpoint: &Endpoint, last_ids: &HashMap<protocol::ChannelId, u64>) {
    let cursors = last_ids.iter().map(|(c, id)| (*c, *id)).collect();
    match store.register_webhook(endpoint.id(), cursors) {
        Ok(()) => log::info!(
            "webhook {}: new; it gets what is stored from now on",
            endpoint.shown()
        ),
        Err(e) => log::error!("webhook {}: cannot record it: {e}", endpoint.shown()),
    }
}

/// The endpoints, each URL once.
fn distinct(urls: &[Endpoint]) -> Result<Vec<Arc<Endpoint>>, WebhookError> {
    let mut seen = HashSet::new();
    urls.iter()
        .map(|endpoint| {
            if seen.insert(endpoint.id()) {
                Ok(Arc::new(endpoint.clone()))
            } else {
                Err(WebhookError::Twice(endpoint.shown()))
            }
        })
        .collect()
}
