//! The outbox's bookkeeping: per channel, the last id stored, sent on the current
//! broker connection, and acknowledged by the broker (QoS 1 PUBACK).
//!
//! The outbox itself is the store: every message above a channel's acknowledged
//! watermark is owed to the broker. This keeps the write path to one insert per
//! message; the watermark is persisted shortly after acknowledgements arrive
//! (within the publisher's `WATERMARK_INTERVAL`) and, after a restart or a
//! reconnect, everything above it is published again in id order.
//! Only channels that owe something are kept here: a channel is dropped once the
//! broker acknowledged all of it, and resumes from its persisted watermark.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use protocol::ChannelId;

#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    stored: u64,
    sent: u64,
    acked: u64,
}

#[derive(Default)]
pub struct Outbox {
    channels: HashMap<ChannelId, Progress>,
    /// Publishes handed to the client, in order, until it reports their
    /// packet id; with when they were handed over.
    awaiting_packet_id: VecDeque<(ChannelId, u64, Instant)>,
    in_flight: HashMap<u16, (ChannelId, u64, Instant)>,
    /// Channels whose acknowledged watermark moved since it was last persisted.
    moved: HashSet<ChannelId>,
    depth: Arc<AtomicU64>,
}

impl Outbox {
    /// From the store: the last id of every channel and the acknowledged watermarks.
    pub fn new(last_ids: HashMap<ChannelId, u64>, acked: &HashMap<ChannelId, u64>) -> Self {
        let channels = last_ids
            .into_iter()
            .map(|(channel, stored)| {
                let acked = acked.get(&channel).copied().unwrap_or(0).min(stored);
                let progress = Progress {
                    stored,
                    sent: acked,
                    acked,
                };
                (channel, progress)
            })
            .filter(|(_, progress)| progress.stored > progress.acked)
            .collect();
        let outbox = Outbox {
            channels,
            ..Outbox::default()
        };
        let depth = outbox
            .channels
            .values()
            .map(|progress| progress.stored - progress.acked)
            .sum();
        outbox.depth.store(depth, Ordering::Relaxed);
        outbox
    }

    /// Messages stored but not yet acknowledged, shared with `/readyz`.
    pub fn depth_gauge(&self) -> Arc<AtomicU64> {
        self.depth.clone()
    }

    /// Kept up to date message by message (`stored - acked` summed over channels),
    /// never recounted: this runs for every message.
    pub fn stored(&mut self, channel: ChannelId, id: u64) {
        let progress = self.channels.entry(channel).or_default();
        let added = id.saturating_sub(progress.stored);
        progress.stored += added;
        self.depth.fetch_add(added, Ordering::Relaxed);
    }

    /// A new connection: whatever was sent but not acknowledged is owed again.
    pub fn start_connection(&mut self) {
        for progress in self.channels.values_mut() {
            progress.sent = progress.acked;
        }
        self.awaiting_packet_id.clear();
        self.in_flight.clear();
    }

    /// The last id sent on this connection (or acknowledged before it).
    pub fn sent_through(&self, channel: ChannelId) -> u64 {
        self.channels
            .get(&channel)
            .map_or(0, |progress| progress.sent)
    }

    /// Whether the channel is followed here (else see [`Outbox::resume`]).
    pub fn knows(&self, channel: ChannelId) -> bool {
        self.channels.contains_key(&channel)
    }

    /// Follows a channel again whose messages up to `acked` the broker
    /// acknowledged (its persisted watermark).
    pub fn resume(&mut self, channel: ChannelId, acked: u64) {
        let progress = Progress {
            stored: acked,
            sent: acked,
            acked,
        };
        self.channels.entry(channel).or_insert(progress);
    }

    /// Channels with stored messages not yet sent, and their last stored id:
    /// what a new connection publishes first (nothing past it, since the store
    /// may hold newer messages that are not synced yet).
    pub fn backlog(&self) -> Vec<(ChannelId, u64)> {
        let mut backlog: Vec<_> = self
            .channels
            .iter()
            .filter(|(_, progress)| progress.stored > progress.sent)
            .map(|(channel, progress)| (*channel, progress.stored))
            .collect();
        backlog.sort_unstable_by_key(|(channel, _)| *channel.as_bytes());
        backlog
    }

    pub fn sent(&mut self, channel: ChannelId, id: u64) {
        self.stored(channel, id);
        let progress = self.channels.entry(channel).or_default();
        progress.sent = progress.sent.max(id);
        self.awaiting_packet_id
            .push_back((channel, id, Instant::now()));
    }

    /// The client wrote the next publish with this packet id.
    pub fn packet_id_assigned(&mut self, packet_id: u16) {
        if let Some(publication) = self.awaiting_packet_id.pop_front() {
            self.in_flight.insert(packet_id, publication);
        }
    }

    /// Publishes handed over that await their acknowledgement, with their
    /// packet id or still without.
    pub fn in_flight(&self) -> usize {
        self.awaiting_packet_id.len() + self.in_flight.len()
    }

    /// The broker acknowledged a packet. Per connection the broker acknowledges in
    /// the order it received (MQTT 3.1.1, 4.6), so the watermark only moves up.
    /// Returns how long ago the publish was handed to the client.
    pub fn acknowledged(&mut self, packet_id: u16) -> Option<Duration> {
        let (channel, id, sent) = self.in_flight.remove(&packet_id)?;
        let took = sent.elapsed();
        let progress = self.channels.entry(channel).or_default();
        if id > progress.acked {
            // Only sent ids are acknowledged, and sending records them as stored.
            let acked = id.min(progress.stored) - progress.acked;
            progress.acked += acked;
            self.depth.fetch_sub(acked, Ordering::Relaxed);
            self.moved.insert(channel);
        }
        Some(took)
    }

    /// Whether an acknowledged watermark moved since the last [`Outbox::take_moved`].
    pub fn has_moved(&self) -> bool {
        !self.moved.is_empty()
    }

    /// Acknowledged watermarks that moved since the last call, to persist. A
    /// channel whose every stored message is now acknowledged is dropped.
    pub fn take_moved(&mut self) -> Vec<(ChannelId, u64)> {
        let moved: Vec<(ChannelId, u64)> = self
            .moved
            .drain()
            .filter_map(|channel| self.channels.get(&channel).map(|p| (channel, p.acked)))
            .collect();
        for (channel, acked) in &moved {
            if self.channels[channel].stored == *acked {
                self.channels.remove(channel);
            }
        }
        moved
    }

    /// Channels followed here.
    pub fn channels(&self) -> usize {
        self.channels.len()
    }

    pub fn depth(&self) -> u64 {
        self.depth.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(n: u8) -> ChannelId {
        ChannelId::from_bytes([n; 16])
    }

    #[test]
    fn depth_counts_stored_messages_the_broker_has_not_acknowledged() {
        let mut outbox = Outbox::new(HashMap::from([(channel(1), 5)]), &HashMap::new());
        assert_eq!(outbox.depth(), 5);
        outbox.stored(channel(2), 1);
        assert_eq!(outbox.depth(), 6);
        outbox.sent(channel(2), 1);
        outbox.packet_id_assigned(7);
        assert_eq!(outbox.depth(), 6, "sent is not acknowledged");
        outbox.acknowledged(7);
        assert_eq!(outbox.depth(), 5);
        assert_eq!(outbox.take_moved(), [(channel(2), 1)]);
        assert!(outbox.take_moved().is_empty());
    }

    #[test]
    fn a_fully_acknowledged_channel_is_dropped_and_resumes_from_its_watermark() {
        let mut outbox = Outbox::new(HashMap::new(), &HashMap::new());
        outbox.stored(channel(1), 1);
        outbox.sent(channel(1), 1);
        outbox.packet_id_assigned(1);
        outbox.acknowledged(1);
        assert_eq!(outbox.take_moved(), [(channel(1), 1)]);
        assert!(!outbox.knows(channel(1)));
        assert_eq!(outbox.channels(), 0);
        outbox.resume(channel(1), 1);
        outbox.stored(channel(1), 2);
        assert_eq!(outbox.sent_through(channel(1)), 1);
        assert_eq!(outbox.backlog(), [(channel(1), 2)]);
        assert_eq!(outbox.depth(), 1);
    }

    #[test]
    fn a_new_connection_owes_everything_sent_but_not_acknowledged() {
        let mut outbox = Outbox::new(HashMap::from([(channel(1), 3)]), &HashMap::new());
        assert_eq!(outbox.backlog(), [(channel(1), 3)]);
        for id in 1..=3 {
            outbox.sent(channel(1), id);
            outbox.packet_id_assigned(id as u16);
        }
        outbox.acknowledged(1);
        assert!(outbox.backlog().is_empty(), "all sent on this connection");
        outbox.start_connection();
        assert_eq!(
            outbox.backlog(),
            [(channel(1), 3)],
            "2 and 3 are owed again"
        );
        assert_eq!(outbox.sent_through(channel(1)), 1);
        assert_eq!(outbox.depth(), 2, "1 was acknowledged");
        outbox.acknowledged(2);
        assert_eq!(
            outbox.depth(),
            2,
            "an ack from the old connection is ignored"
        );
    }

    #[test]
    fn watermarks_from_the_store_resume_the_backlog() {
        let last_ids = HashMap::from([(channel(1), 10), (channel(2), 4)]);
        let acked = HashMap::from([(channel(1), 7), (channel(2), 4)]);
        let outbox = Outbox::new(last_ids, &acked);
        assert_eq!(outbox.backlog(), [(channel(1), 10)]);
        assert_eq!(outbox.sent_through(channel(1)), 7);
        assert_eq!(outbox.depth(), 3);
    }

    #[test]
    fn publishes_count_in_flight_from_hand_over_to_acknowledgement() {
        let mut outbox = Outbox::default();
        outbox.sent(channel(1), 1);
        outbox.sent(channel(1), 2);
        assert_eq!(outbox.in_flight(), 2, "no packet id yet");
        outbox.packet_id_assigned(40);
        outbox.packet_id_assigned(41);
        outbox.acknowledged(40);
        assert_eq!(outbox.in_flight(), 1);
        outbox.acknowledged(41);
        assert_eq!(outbox.in_flight(), 0);
        assert_eq!(outbox.take_moved(), [(channel(1), 2)]);
    }

    #[test]
    fn a_moved_watermark_is_reported_until_taken() {
        let mut outbox = Outbox::default();
        assert!(!outbox.has_moved());
        outbox.sent(channel(1), 1);
        outbox.packet_id_assigned(3);
        assert!(!outbox.has_moved(), "sent is not acknowledged");
        outbox.acknowledged(3);
        assert!(outbox.has_moved());
        assert_eq!(outbox.take_moved(), [(channel(1), 1)]);
        assert!(!outbox.has_moved());
    }
}
