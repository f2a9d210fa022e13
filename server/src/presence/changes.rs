//! What one follower of a [`Watcher`] learns: the channels whose presence
//! was touched since it last looked, with their sums at the look.

use protocol::ChannelId;
use tokio::sync::watch;

use super::{ChannelPresence, Watcher, lock};

/// The channels whose presence was touched, as a follower looks at them.
///
/// Looks coalesce: a follower that looks less often than presence changes
/// sees only the sums at each look, so a name that joins and leaves between
/// two looks is never seen. The MQTT task never waits for the follower: it
/// adds to a set and bumps a counter.
pub struct Changes {
    watcher: Watcher,
    touches: watch::Receiver<u64>,
}

impl Changes {
    pub(super) fn new(watcher: Watcher) -> Changes {
        let touches = watcher.shared.touches.subscribe();
        Changes { watcher, touches }
    }

    /// Waits until a channel was touched, then gives every channel touched
    /// since the last look with its presence now; `None` if the watcher's
    /// counter is gone (it lives as long as this holds the watcher).
    pub async fn next(&mut self) -> Option<Vec<(ChannelId, ChannelPresence)>> {
        loop {
            self.touches.changed().await.ok()?;
            let touched: Vec<ChannelId> = {
                let mut touched = lock(&self.watcher.shared.touched);
                touched.drain().collect()
            };
            if touched.is_empty() {
                continue;
            }
            let table = lock(&self.watcher.shared.table);
            let sums = touched
                .into_iter()
                .map(|channel| (channel, table.channel(channel)))
                .collect();
            return Some(sums);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::super::{NodePresence, WatcherTask};
    use super::*;

    fn presence(subscribers: u64, names: &[&str]) -> NodePresence {
        NodePresence {
            subscribers,
            names: names
                .iter()
                .map(|name| name.to_string())
                .collect::<BTreeSet<_>>(),
        }
    }

    #[tokio::test]
    async fn one_follower_sees_each_touched_channel_once_with_its_sum_at_the_look() {
        let watcher = Watcher::empty();
        let task = WatcherTask {
            watcher: watcher.clone(),
            prefix: "crier".into(),
        };
        let mut changes = watcher.changes().expect("the first follower");
        assert!(watcher.changes().is_none(), "one follower only");
        let (one, two) = (
            ChannelId::from_bytes([1; 16]),
            ChannelId::from_bytes([2; 16]),
        );
        let json = |p: NodePresence| serde_json::to_vec(&p).expect("JSON");
        task.on_node("n1", true);
        task.on_presence(one, "n1", &json(presence(1, &["ann"])));
        task.on_presence(one, "n1", &json(presence(2, &["ann", "bob"])));
        task.on_presence(two, "n1", &json(presence(1, &[])));
        let look = tokio::time::timeout(std::time::Duration::from_secs(5), changes.next());
        let mut seen = look.await.expect("a change").expect("the watcher is there");
        seen.sort_by_key(|(channel, _)| *channel);
        let sums: Vec<(ChannelId, u64, usize)> = seen
            .iter()
            .map(|(channel, sum)| (*channel, sum.subscribers, sum.names.len()))
            .collect();
        assert_eq!(sums, [(one, 2, 2), (two, 1, 0)], "coalesced: the sums now");

        task.on_node("n1", false);
        let look = tokio::time::timeout(std::time::Duration::from_secs(5), changes.next());
        let mut seen = look.await.expect("a change").expect("the watcher is there");
        seen.sort_by_key(|(channel, _)| *channel);
        let empty = ChannelPresence::default();
        assert_eq!(
            seen,
            [(one, empty.clone()), (two, empty)],
            "a dead node empties its channels"
        );
    }
}
