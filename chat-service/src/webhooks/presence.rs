//! Presence events: `channel.occupied`, `channel.vacated`, `presence.joined`
//! and `presence.left`, found by comparing what the presence watcher sums
//! over the live broadcast-sse nodes with what it summed at the last look.
//!
//! Best effort, unlike message events: there is no log of presence, so each
//! change becomes an event at once and waits in a bounded queue per webhook
//! ([`super::queue`]), delivered in order with the same signing, timeout and
//! backoff as message events, retried while the process lives. A full queue
//! drops its oldest event (counted as `outcome="dropped"`); a restart loses
//! what was queued. Looks coalesce ([`server::presence::Changes`]): a name
//! that joins and leaves between two looks makes no event.
//!
//! After a start every channel is new to this follower: the channels already
//! occupied are told again (`channel.occupied`, then a `presence.joined` per
//! name) as the nodes answer the watcher.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use protocol::ChannelId;
use server::presence::{Changes, ChannelPresence};

use super::delivery::{self, Sender};
use super::endpoint::Endpoint;
use super::event::{self, PresenceChange};
use super::queue::EventQueue;
use crate::metrics;

/// What changed from `before` to `after`, in the order an app expects it:
/// the channel occupied, the names that joined, the names that left, and the
/// channel vacated last.
pub fn diff(before: &ChannelPresence, after: &ChannelPresence) -> Vec<PresenceChange> {
    let mut changes = Vec::new();
    if before.subscribers == 0 && after.subscribers > 0 {
        changes.push(PresenceChange::Occupied {
            subscribers: after.subscribers,
        });
    }
    let joined = after.names.difference(&before.names);
    changes.extend(joined.map(|name| PresenceChange::Joined { name: name.clone() }));
    let left = before.names.difference(&after.names);
    changes.extend(left.map(|name| PresenceChange::Left { name: name.clone() }));
    if before.subscribers > 0 && after.subscribers == 0 {
        changes.push(PresenceChange::Vacated);
    }
    changes
}

/// Follows the watcher's changes and queues the events each webhook wants.
pub(super) struct Follower {
    pub changes: Changes,
    pub hooks: Vec<(Arc<Endpoint>, Arc<EventQueue>)>,
    /// The occupied channels as of the last look (a vacated one is removed,
    /// so this holds what the watcher holds, no more).
    pub known: HashMap<ChannelId, ChannelPresence>,
}

impl Follower {
    /// Runs until the watcher is gone or the service stops.
    pub async fn run(mut self) {
        while let Some(sums) = self.changes.next().await {
            let ts = event::now();
            for (channel, now) in sums {
                self.seen(channel, now, &ts);
            }
        }
    }

    fn seen(&mut self, channel: ChannelId, now: ChannelPresence, ts: &str) {
        let before = self.known.remove(&channel).unwrap_or_default();
        let changes = diff(&before, &now);
        if now.subscribers > 0 {
            self.known.insert(channel, now);
        }
        for change in changes {
            let wanted = |(endpoint, _): &&(Arc<Endpoint>, Arc<EventQueue>)| {
                endpoint.wants(change.event_type())
            };
            if !self.hooks.iter().any(|hook| wanted(&hook)) {
                continue;
            }
            let event = match event::of_presence(channel, &change, ts) {
                Ok(event) => event,
                Err(e) => {
                    log::error!("webhooks: cannot write a presence event: {e}");
                    continue;
                }
            };
            for (endpoint, queue) in self.hooks.iter().filter(wanted) {
                if queue.push(event.clone()).is_some() {
                    metrics::webhook_outcome("dropped", 1);
                    log::debug!(
                        "webhook {}: presence queue full; the oldest event dropped",
                        endpoint.shown()
                    );
                }
            }
        }
    }
}

/// Delivers one webhook's queued presence events, one after the other (so
/// in order per channel), each until acknowledged; runs until the service
/// stops.
pub(super) async fn deliver(
    queue: Arc<EventQueue>,
    endpoint: Arc<Endpoint>,
    sender: Sender,
    max_backoff: Duration,
) {
    loop {
        let event = queue.pop().await;
        let id = event.event_type.name();
        let events = std::slice::from_ref(&event);
        delivery::until_acknowledged(&sender, &endpoint, events, max_backoff, &id).await;
        queue.done();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn presence(subscribers: u64, names: &[&str]) -> ChannelPresence {
        ChannelPresence {
            subscribers,
            names: names.iter().map(|name| name.to_string()).collect(),
        }
    }

    fn joined(name: &str) -> PresenceChange {
        PresenceChange::Joined { name: name.into() }
    }

    fn left(name: &str) -> PresenceChange {
        PresenceChange::Left { name: name.into() }
    }

    #[test]
    fn the_first_stream_occupies_the_channel_then_its_name_joins() {
        let changes = diff(&presence(0, &[]), &presence(1, &["ann"]));
        assert_eq!(
            changes,
            [PresenceChange::Occupied { subscribers: 1 }, joined("ann")]
        );
        let anonymous = diff(&presence(0, &[]), &presence(2, &[]));
        assert_eq!(anonymous, [PresenceChange::Occupied { subscribers: 2 }]);
    }

    #[test]
    fn another_name_only_joins() {
        let changes = diff(&presence(1, &["ann"]), &presence(2, &["ann", "bob"]));
        assert_eq!(changes, [joined("bob")]);
    }

    #[test]
    fn the_last_stream_leaves_then_vacates_the_channel() {
        let changes = diff(&presence(2, &["ann", "bob"]), &presence(0, &[]));
        assert_eq!(changes, [left("ann"), left("bob"), PresenceChange::Vacated]);
    }

    #[test]
    fn names_that_swap_join_and_leave_in_one_look() {
        let changes = diff(&presence(2, &["ann"]), &presence(2, &["bob"]));
        assert_eq!(changes, [joined("bob"), left("ann")]);
    }

    #[test]
    fn counts_alone_or_nothing_at_all_change_nothing() {
        assert!(diff(&presence(1, &["ann"]), &presence(3, &["ann"])).is_empty());
        assert!(diff(&presence(3, &["ann"]), &presence(1, &["ann"])).is_empty());
        assert!(diff(&presence(0, &[]), &presence(0, &[])).is_empty());
    }

    #[test]
    fn a_name_that_came_and_went_between_looks_is_not_seen() {
        // What the watcher summed at two looks, with ann joining and leaving
        // in between: coalesced, by design.
        assert!(diff(&presence(1, &[]), &presence(1, &[])).is_empty());
    }
}
