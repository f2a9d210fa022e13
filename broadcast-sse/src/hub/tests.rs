use std::sync::Arc;
use std::time::Duration;

use super::backfill::RETRIES;
use super::*;
use crate::testing::{
    FakeHistory, Shared, bare_frame, channel, frame, hub_with_empty_history, settle,
};

/// Every frame waiting in a listener's ring, by id.
fn received(member: &mut Membership) -> Vec<u64> {
    std::iter::from_fn(|| member.ring.try_recv().ok())
        .map(|f| f.id)
        .collect()
}

fn hub_with(history: &Arc<FakeHistory>, ring_size: usize) -> Hub {
    Hub::with_history_and_large_ring(ring_size, Arc::new(Shared(history.clone()))).0
}

/// Waits (on the paused clock, so retries' pauses pass at once) for every backfill
/// to finish.
async fn backfills_done(hub: &Hub) {
    let mut count = hub.backfill_count();
    let done = tokio::time::timeout(Duration::from_secs(600), count.wait_for(|n| *n == 0));
    assert!(done.await.is_ok(), "backfills did not finish");
}

#[test]
fn first_join_subscribes_and_last_leave_unsubscribes() {
    let (hub, mut changes) = hub_with_empty_history(8);
    let channel = channel(1);
    let first = hub.join(channel);
    let second = hub.join(channel);
    assert_eq!(
        changes.try_recv().ok(),
        Some(SubscriptionChange::Subscribe(channel))
    );
    assert!(
        changes.try_recv().is_err(),
        "second listener does not subscribe again"
    );
    drop(first);
    assert!(changes.try_recv().is_err(), "a listener remains");
    drop(second);
    assert_eq!(
        changes.try_recv().ok(),
        Some(SubscriptionChange::Unsubscribe(channel))
    );
    assert!(hub.active_channels().is_empty());
}

#[test]
fn deliver_drops_repeated_ids_and_shares_bytes() {
    let (hub, _changes) = hub_with_empty_history(8);
    let channel = channel(1);
    let mut member = hub.join(channel);
    hub.deliver(channel, bare_frame(1));
    hub.deliver(channel, bare_frame(1));
    hub.deliver(channel, bare_frame(2));
    assert_eq!(received(&mut member), [1, 2]);
    assert_eq!(hub.first_id(channel), Some(1));
    assert_eq!(hub.join(channel).last_id_at_join, Some(2));
}

#[test]
fn outside_a_runtime_a_gap_is_delivered_as_it_comes() {
    let (hub, _changes) = hub_with_empty_history(8);
    let channel = channel(1);
    let mut member = hub.join(channel);
    hub.deliver(channel, bare_frame(1));
    hub.deliver(channel, bare_frame(4));
    assert_eq!(received(&mut member), [1, 4]);
}

#[tokio::test(start_paused = true)]
async fn live_frame_past_a_gap_waits_for_the_missing_ids_from_history() {
    let history = FakeHistory::gated();
    let channel = channel(1);
    history.store(channel, 1..=5);
    let hub = hub_with(&history, 64);
    let mut member = hub.join(channel);
    hub.deliver(channel, frame(channel, 1));
    hub.deliver(channel, frame(channel, 5));
    assert_eq!(
        received(&mut member),
        [1],
        "5 is held while 2..4 are missing"
    );
    history.open(1);
    backfills_done(&hub).await;
    assert_eq!(received(&mut member), [2, 3, 4, 5]);
    assert_eq!(history.calls(), [(channel, 1)]);
}

#[tokio::test(start_paused = true)]
async fn frames_arriving_during_a_backfill_are_held_then_released_once_in_order() {
    let history = FakeHistory::gated();
    let channel = channel(1);
    history.store(channel, 1..=3);
    let hub = hub_with(&history, 64);
    let mut member = hub.join(channel);
    hub.deliver(channel, frame(channel, 1));
    hub.deliver(channel, frame(channel, 4));
    hub.deliver(channel, frame(channel, 6));
    hub.deliver(channel, frame(channel, 5));
    hub.deliver(channel, frame(channel, 4));
    assert!(received(&mut member) == [1]);
    history.open(1);
    backfills_done(&hub).await;
    assert_eq!(received(&mut member), [2, 3, 4, 5, 6]);
    assert_eq!(history.calls().len(), 1, "one backfill for the channel");
}

#[tokio::test(start_paused = true)]
async fn only_one_backfill_runs_per_channel() {
    let history = FakeHistory::gated();
    let channel = channel(1);
    history.store(channel, 1..=9);
    let hub = hub_with(&history, 64);
    let _member = hub.join(channel);
    hub.deliver(channel, frame(channel, 1));
    hub.deliver(channel, frame(channel, 4));
    hub.deliver(channel, frame(channel, 9));
    hub.heal(&[channel]);
    assert!(settle(|| history.in_flight() == 1).await);
    assert_eq!(hub.backfills_in_progress(), 1);
    history.open(10);
    backfills_done(&hub).await;
    assert_eq!(hub.last_id(channel), Some(9));
}

#[tokio::test(start_paused = true)]
async fn held_frames_past_the_bound_are_delivered_from_history() {
    let history = FakeHistory::gated();
    let channel = channel(1);
    let newest = (HELD_MAX + 50) as u64;
    history.store(channel, 1..=newest);
    let hub = hub_with(&history, 4096);
    let mut member = hub.join(channel);
    hub.deliver(channel, frame(channel, 1));
    for id in 3..=newest {
        hub.deliver(channel, frame(channel, id));
    }
    history.open(10);
    backfills_done(&hub).await;
    let expected: Vec<u64> = (2..=newest).collect();
    assert_eq!(received(&mut member)[1..], expected[..]);
}

#[tokio::test(start_paused = true)]
async fn a_backfill_reads_page_by_page() {
    let history = FakeHistory::new();
    let channel = channel(1);
    history.store(channel, 1..=450);
    let hub = hub_with(&history, 4096);
    let mut member = hub.join(channel);
    hub.deliver(channel, frame(channel, 1));
    hub.deliver(channel, frame(channel, 450));
    backfills_done(&hub).await;
    let expected: Vec<u64> = (1..=450).collect();
    assert_eq!(received(&mut member), expected);
    let afters: Vec<u64> = history.calls().iter().map(|(_, after)| *after).collect();
    assert_eq!(afters, [1, 201, 401]);
}

#[tokio::test(start_paused = true)]
async fn history_failing_briefly_is_retried_and_fills_the_gap() {
    let history = FakeHistory::new();
    let channel = channel(1);
    history.store(channel, 1..=4);
    history.fail_next(2);
    let hub = hub_with(&history, 64);
    let mut member = hub.join(channel);
    hub.deliver(channel, frame(channel, 1));
    hub.deliver(channel, frame(channel, 4));
    backfills_done(&hub).await;
    assert_eq!(received(&mut member), [1, 2, 3, 4]);
    assert_eq!(history.calls().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn history_failing_past_the_retries_releases_the_held_frames() {
    let history = FakeHistory::new();
    let channel = channel(1);
    history.store(channel, 1..=4);
    history.fail_next(usize::MAX);
    let hub = hub_with(&history, 64);
    let mut member = hub.join(channel);
    hub.deliver(channel, frame(channel, 1));
    hub.deliver(channel, frame(channel, 4));
    backfills_done(&hub).await;
    assert_eq!(
        received(&mut member),
        [1, 4],
        "streams fill this gap themselves"
    );
    assert_eq!(history.calls().len(), RETRIES as usize + 1);
    hub.deliver(channel, frame(channel, 5));
    assert_eq!(received(&mut member), [5], "the channel is live again");
}

#[tokio::test(start_paused = true)]
async fn ids_trimmed_from_history_are_skipped_by_the_backfill() {
    let history = FakeHistory::new();
    let channel = channel(1);
    history.store(channel, 6..=8);
    let hub = hub_with(&history, 64);
    let mut member = hub.join(channel);
    hub.deliver(channel, frame(channel, 1));
    hub.deliver(channel, frame(channel, 8));
    backfills_done(&hub).await;
    assert_eq!(received(&mut member), [1, 6, 7, 8]);
}

#[tokio::test(start_paused = true)]
async fn heal_backfills_from_the_last_delivered_id_after_a_reconnect() {
    let history = FakeHistory::new();
    let channel = channel(1);
    history.store(channel, 1..=7);
    let hub = hub_with(&history, 64);
    let mut member = hub.join(channel);
    hub.deliver(channel, frame(channel, 1));
    hub.deliver(channel, frame(channel, 2));
    hub.heal(&[channel]);
    backfills_done(&hub).await;
    assert_eq!(received(&mut member), [1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(history.calls(), [(channel, 2)]);
}

#[tokio::test(start_paused = true)]
async fn heal_leaves_channels_without_a_delivery_alone() {
    let history = FakeHistory::new();
    let channel = channel(1);
    history.store(channel, 1..=3);
    let hub = hub_with(&history, 64);
    let mut member = hub.join(channel);
    hub.heal(&[channel]);
    assert_eq!(hub.backfills_in_progress(), 0);
    assert!(history.calls().is_empty());
    hub.deliver(channel, frame(channel, 4));
    assert_eq!(
        received(&mut member),
        [4],
        "a waiting listener gets the next live id"
    );
}

#[tokio::test(start_paused = true)]
async fn heal_reads_history_for_a_few_channels_at_a_time() {
    let history = FakeHistory::gated();
    let hub = hub_with(&history, 64);
    let channels: Vec<ChannelId> = (1..=10).map(channel).collect();
    let members: Vec<Membership> = channels.iter().map(|c| hub.join(*c)).collect();
    for c in &channels {
        history.store(*c, 1..=3);
        hub.deliver(*c, frame(*c, 1));
    }
    hub.heal(&channels);
    assert!(settle(|| history.in_flight() == BACKFILL_CONCURRENCY).await);
    assert!(!settle(|| history.in_flight() > BACKFILL_CONCURRENCY).await);
    assert_eq!(hub.backfills_in_progress(), channels.len());
    history.open(channels.len());
    backfills_done(&hub).await;
    assert_eq!(history.max_in_flight(), BACKFILL_CONCURRENCY);
    assert!(channels.iter().all(|c| hub.last_id(*c) == Some(3)));
    drop(members);
}

#[tokio::test(start_paused = true)]
async fn a_backfill_stops_when_its_channel_is_left() {
    let history = FakeHistory::gated();
    let channel = channel(1);
    history.store(channel, 1..=4);
    let hub = hub_with(&history, 64);
    let member = hub.join(channel);
    hub.deliver(channel, frame(channel, 1));
    hub.deliver(channel, frame(channel, 4));
    drop(member);
    let mut rejoined = hub.join(channel);
    history.open(1);
    backfills_done(&hub).await;
    assert!(received(&mut rejoined).is_empty());
    assert_eq!(hub.last_id(channel), None, "the new entry is untouched");
}

#[test]
fn recent_buffer_answers_after_an_id_when_it_reaches_back() {
    let (hub, _changes) = hub_with_empty_history(4);
    let channel = channel(1);
    let _member = hub.join(channel);
    for id in 1..=10 {
        hub.deliver(channel, bare_frame(id));
    }
    let ids = |recent: Recent| match recent {
        Recent::Frames { frames, complete } => {
            Some((frames.iter().map(|f| f.id).collect::<Vec<_>>(), complete))
        }
        _ => None,
    };
    assert_eq!(
        ids(hub.recent_after(channel, 6, 200)),
        Some((vec![7, 8, 9, 10], true))
    );
    assert_eq!(ids(hub.recent_after(channel, 8, 1)), Some((vec![9], false)));
    assert!(matches!(hub.recent_after(channel, 5, 200), Recent::Missing));
    assert!(matches!(
        hub.recent_after(channel, 10, 200),
        Recent::Current
    ));
}

#[test]
fn recent_buffer_stops_at_a_hole_and_knows_nothing_before_a_delivery() {
    let (hub, _changes) = hub_with_empty_history(8);
    let channel = channel(1);
    let _member = hub.join(channel);
    assert!(matches!(hub.recent_after(channel, 3, 200), Recent::Missing));
    for id in [1, 2, 5] {
        hub.deliver(channel, bare_frame(id));
    }
    let Recent::Frames { frames, complete } = hub.recent_after(channel, 0, 200) else {
        panic!("the buffer starts at 1");
    };
    assert_eq!(frames.iter().map(|f| f.id).collect::<Vec<_>>(), [1, 2]);
    assert!(!complete, "5 is past a hole");
    assert!(matches!(hub.recent_after(channel, 2, 200), Recent::Missing));
}

#[tokio::test(start_paused = true)]
async fn channel_without_delivery_is_anchored_when_the_broker_drops_then_healed() {
    let history = FakeHistory::new();
    let channel = channel(1);
    history.store(channel, 1..=3);
    let hub = hub_with(&history, 64);
    let mut member = hub.join(channel);
    hub.anchor_undelivered();
    backfills_done(&hub).await;
    history.store(channel, 4..=5);
    hub.mark_subscribed(&[channel]);
    hub.heal(&[channel]);
    backfills_done(&hub).await;
    assert_eq!(received(&mut member), [4, 5], "posted during the outage");
    assert_eq!(history.calls(), [(channel, 3)]);
}

#[tokio::test(start_paused = true)]
async fn anchor_answered_after_the_resubscription_starts_the_heal_itself() {
    let history = FakeHistory::gated();
    let channel = channel(1);
    history.store(channel, 1..=3);
    let hub = hub_with(&history, 64);
    let _member = hub.join(channel);
    hub.anchor_undelivered();
    hub.mark_subscribed(&[channel]);
    hub.heal(&[channel]);
    history.open(2);
    backfills_done(&hub).await;
    assert_eq!(history.calls(), [(channel, 3)]);
    assert_eq!(hub.last_id(channel), Some(3));
}

#[tokio::test(start_paused = true)]
async fn a_history_that_cannot_tell_its_newest_id_leaves_the_channel_as_it_was() {
    struct AfterOnly;
    impl HistorySource for AfterOnly {
        fn after(&self, _: ChannelId, _: u64, _: usize) -> crate::history::HistoryFuture {
            Box::pin(std::future::ready(Ok(Vec::new())))
        }
    }
    let hub = Hub::new(64, Arc::new(AfterOnly), Background::on_current_runtime()).0;
    let channel = channel(1);
    let mut member = hub.join(channel);
    hub.anchor_undelivered();
    backfills_done(&hub).await;
    assert_eq!(hub.last_id(channel), None);
    hub.deliver(channel, frame(channel, 7));
    assert_eq!(received(&mut member), [7]);
}

#[test]
fn a_frame_from_json_is_the_frame_of_the_message_it_carries() {
    let message = Message::new(
        4,
        ChannelId::from_bytes([3; 16]),
        "ann",
        "two\nlines",
        "2026-11-21T22:40:00.123Z",
    );
    let json = serde_json::to_vec(&message).expect("json");
    assert_eq!(
        Frame::from_json(4, Kind::Message, &json).bytes,
        Frame::from_message(&message).bytes,
        "the store's JSON is framed as it is"
    );
    let pretty = serde_json::to_vec_pretty(&message).expect("json");
    assert_eq!(
        Frame::from_json(4, Kind::Message, &pretty).bytes,
        Frame::from_message(&message).bytes,
        "JSON over several lines is put on one"
    );
}

/// A signal's SSE event (its bytes do not matter to the hub).
fn signal_event() -> Bytes {
    Bytes::from_static(b"event: signal\ndata: {}\n\n")
}

#[test]
fn a_signal_reaches_every_listener_and_leaves_ids_and_the_recent_buffer_alone() {
    let (hub, _changes) = hub_with_empty_history(8);
    let channel = channel(1);
    let mut first = hub.join(channel);
    let mut second = hub.join(channel);
    hub.deliver(channel, bare_frame(1));
    hub.deliver_signal(channel, signal_event());
    hub.deliver(channel, bare_frame(2));
    for member in [&mut first, &mut second] {
        assert_eq!(member.signals.try_recv().ok(), Some(signal_event()));
        assert_eq!(received(member), [1, 2], "no gap, no hold");
    }
    assert_eq!(hub.last_id(channel), Some(2));
    match hub.recent_after(channel, 0, 10) {
        Recent::Frames { frames, complete } => {
            let ids: Vec<u64> = frames.iter().map(|frame| frame.id).collect();
            assert_eq!((ids, complete), (vec![1, 2], true));
        }
        other => panic!("the recent buffer holds the messages alone: {other:?}"),
    }
}

#[test]
fn a_signal_of_a_channel_nobody_here_follows_is_dropped() {
    let (hub, _changes) = hub_with_empty_history(8);
    hub.deliver_signal(channel(1), signal_event());
    assert_eq!(hub.channel_count(), 0);
}

#[test]
fn a_listener_behind_the_signal_ring_skips_the_oldest_signals() {
    let (hub, _changes) = hub_with_empty_history(8);
    let channel = channel(1);
    let mut member = hub.join(channel);
    for _ in 0..SIGNAL_RING + 3 {
        hub.deliver_signal(channel, signal_event());
    }
    assert!(matches!(
        member.signals.try_recv(),
        Err(tokio::sync::broadcast::error::TryRecvError::Lagged(3))
    ));
    let left = std::iter::from_fn(|| member.signals.try_recv().ok()).count();
    assert_eq!(left, SIGNAL_RING);
    assert_eq!(hub.last_id(channel), None, "signals are not ids");
}
