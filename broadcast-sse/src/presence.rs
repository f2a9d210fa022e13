//! This node's part of presence: the streams it holds per channel and the
//! names they joined under, published on the broker for every node to sum
//! ([`server::presence`]).
//!
//! A stream holds a [`Joined`] for as long as it is open. Changes are gathered
//! and published at most every [`PUBLISH_EVERY`] per channel, so a room of
//! thousands joining at once is a few messages; a channel whose last stream
//! left is published empty. After every reconnect, and when a watcher asks
//! (`{prefix}/presence/refresh`), the node publishes all its channels again;
//! after a reconnect also its liveness topic (retained). Its last will empties
//! the liveness topic, so when the node dies everyone stops counting its
//! streams.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use protocol::ChannelId;
use rumqttc::{AsyncClient, LastWill, MqttOptions, QoS};
use server::mqtt::BrokerStatus;
use server::presence::{NodePresence, node_topic, presence_topic};

/// How often gathered changes go out.
pub const PUBLISH_EVERY: Duration = Duration::from_millis(250);

/// The streams this node holds, per channel.
#[derive(Clone)]
pub struct LocalPresence {
    node: Arc<str>,
    state: Arc<Mutex<Local>>,
    /// A watcher asked for every channel's presence.
    refresh: Arc<AtomicBool>,
}

#[derive(Default)]
struct Local {
    channels: HashMap<ChannelId, Streams>,
    /// Channels changed since the last publish.
    changed: HashSet<ChannelId>,
}

#[derive(Default)]
struct Streams {
    count: u64,
    /// Streams per name.
    names: HashMap<String, u64>,
}

/// A stream's place in its channel's presence, given up when dropped.
pub struct Joined {
    presence: LocalPresence,
    channel: ChannelId,
    name: Option<String>,
}

impl Drop for Joined {
    fn drop(&mut self) {
        self.presence.leave(self.channel, self.name.as_deref());
    }
}

impl LocalPresence {
    /// A node with a fresh id: a node that restarts is a new node.
    pub fn new() -> Self {
        let node = uuid::Uuid::new_v4().simple().to_string();
        LocalPresence {
            node: Arc::from(node),
            state: Arc::new(Mutex::new(Local::default())),
            refresh: Arc::new(AtomicBool::new(false)),
        }
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// Publishes every channel at the next round (a watcher connected).
    pub fn refresh(&self) {
        self.refresh.store(true, Ordering::Relaxed);
    }

    /// Sets the last will that takes this node out of presence when its
    /// broker connection ends without a goodbye.
    pub fn will_on(&self, options: &mut MqttOptions, prefix: &str) {
        let topic = node_topic(prefix, &self.node);
        options.set_last_will(LastWill::new(topic, Vec::new(), QoS::AtLeastOnce, true));
    }

    /// Counts a stream in `channel`, under `name` when it has one.
    pub fn join(&self, channel: ChannelId, name: Option<String>) -> Joined {
        let mut local = self.lock();
        let streams = local.channels.entry(channel).or_default();
        streams.count += 1;
        if let Some(name) = &name {
            *streams.names.entry(name.clone()).or_default() += 1;
        }
        local.changed.insert(channel);
        drop(local);
        Joined {
            presence: self.clone(),
            channel,
            name,
        }
    }

    fn leave(&self, channel: ChannelId, name: Option<&str>) {
        let mut local = self.lock();
        let Some(streams) = local.channels.get_mut(&channel) else {
            return;
        };
        streams.count = streams.count.saturating_sub(1);
        if let Some(name) = name
            && let Some(count) = streams.names.get_mut(name)
        {
            *count -= 1;
            if *count == 0 {
                streams.names.remove(name);
            }
        }
        local.changed.insert(channel);
    }

    /// What to publish: every changed channel (all of them with `everything`),
    /// with its payload, or `None` where the last stream left.
    fn take_changes(&self, everything: bool) -> Vec<(ChannelId, Option<NodePresence>)> {
        let mut local = self.lock();
        let changed: Vec<ChannelId> = if everything {
            local.changed.clear();
            local.channels.keys().copied().collect()
        } else {
            local.changed.drain().collect()
        };
        changed
            .into_iter()
            .map(|channel| {
                let presence = local.channels.get(&channel).map(|streams| NodePresence {
                    subscribers: streams.count,
                    names: streams.names.keys().cloned().collect::<BTreeSet<_>>(),
                });
                let presence = presence.filter(|presence| presence.subscribers > 0);
                if presence.is_none() {
                    local.channels.remove(&channel);
                }
                (channel, presence)
            })
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, Local> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Default for LocalPresence {
    fn default() -> Self {
        LocalPresence::new()
    }
}

/// Publishes this node's presence through the subscriber's connection, for as
/// long as the process runs.
pub async fn publish(
    presence: LocalPresence,
    client: AsyncClient,
    status: BrokerStatus,
    prefix: String,
) {
    let mut interval = tokio::time::interval(PUBLISH_EVERY);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut published_on = 0;
    loop {
        interval.tick().await;
        if !status.is_connected() {
            continue;
        }
        // A new connection, however fast it replaced the last (whose will
        // emptied the liveness topic), is announced again.
        let connection = status.connections();
        let reconnected = connection != published_on;
        published_on = connection;
        let everything = reconnected || presence.refresh.swap(false, Ordering::Relaxed);
        if reconnected {
            let alive = serde_json::json!({ "node": presence.node() }).to_string();
            let topic = node_topic(&prefix, presence.node());
            if client
                .publish(topic, QoS::AtLeastOnce, true, alive)
                .await
                .is_err()
            {
                return;
            }
        }
        for (channel, streams) in presence.take_changes(everything) {
            let topic = presence_topic(&prefix, channel, presence.node());
            let payload = streams
                .map(|streams| serde_json::to_vec(&streams).unwrap_or_default())
                .unwrap_or_default();
            if client
                .publish(topic, QoS::AtLeastOnce, false, payload)
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_counted_by_name_and_a_left_channel_is_removed() {
        let presence = LocalPresence::new();
        let channel = ChannelId::from_bytes([3; 16]);
        let ann = presence.join(channel, Some("ann".into()));
        let ann_again = presence.join(channel, Some("ann".into()));
        let anonymous = presence.join(channel, None);
        let changes = presence.take_changes(false);
        let expected = NodePresence {
            subscribers: 3,
            names: ["ann".to_string()].into(),
        };
        assert_eq!(changes, [(channel, Some(expected))]);
        assert!(presence.take_changes(false).is_empty(), "nothing new");

        drop((ann, anonymous));
        let changes = presence.take_changes(false);
        assert_eq!(changes[0].1.as_ref().map(|p| p.subscribers), Some(1));
        drop(ann_again);
        assert_eq!(presence.take_changes(false), [(channel, None)]);
        assert!(presence.take_changes(true).is_empty(), "forgotten");
    }
}
