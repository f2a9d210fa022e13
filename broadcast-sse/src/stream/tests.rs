use std::sync::Arc;
use std::time::Duration;

use super::catch_up::MAX_STALLS;
use super::events::{gap_event, reset_event};
use super::*;
use crate::history::PAGE;
use crate::testing::{FakeHistory, Shared, channel, frame, hub_with_empty_history};

/// A stream whose `retry:` line was already taken.
async fn open(
    hub: &Hub,
    history: &Arc<FakeHistory>,
    channel: ChannelId,
    resume: Option<u64>,
) -> ClientStream {
    let membership = hub.join(channel);
    let history = Arc::new(Shared(history.clone()));
    let mut stream = ClientStream::new(channel, membership, hub, history, resume, 1000);
    assert_eq!(
        next_text(&mut stream).await.as_deref(),
        Some("retry: 1000\n\n")
    );
    stream
}

/// The next chunk as text; `None` when the stream ended or has nothing to send
/// (the paused clock jumps to the timeout once every task waits).
async fn next_text(stream: &mut ClientStream) -> Option<String> {
    let chunk = tokio::time::timeout(Duration::from_secs(600), stream.next_chunk()).await;
    chunk
        .ok()
        .flatten()
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
}

/// Everything the stream sends until it ends or goes quiet (bounded).
async fn read_all(stream: &mut ClientStream) -> String {
    let mut text = String::new();
    for _ in 0..1000 {
        match next_text(stream).await {
            Some(chunk) => text.push_str(&chunk),
            None => break,
        }
    }
    text
}

/// Each event as `message <id>`, `gap <id>` or `reconnect`, in order.
fn events(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter(|event| !event.is_empty() && !event.starts_with("retry:"))
        .map(|event| {
            let field = |name: &str| {
                event
                    .lines()
                    .find_map(|line| line.strip_prefix(name))
                    .unwrap_or("")
                    .to_string()
            };
            format!("{} {}", field("event: "), field("id: "))
                .trim()
                .to_string()
        })
        .collect()
}

fn messages(ids: impl IntoIterator<Item = u64>) -> Vec<String> {
    ids.into_iter().map(|id| format!("message {id}")).collect()
}

#[test]
fn gap_event_has_the_exact_wire_form() {
    assert_eq!(
        gap_event(channel(1), 3, 5, "5"),
        Bytes::from(format!(
            "event: gap\nid: 5\ndata: {{\"channel\":\"{}\",\"from\":3,\"to\":5}}\n\n",
            channel(1)
        ))
    );
}

#[tokio::test(start_paused = true)]
async fn resume_within_the_recent_buffer_reads_no_history() {
    let history = FakeHistory::new();
    let channel = channel(1);
    history.store(channel, 1..=5);
    let (hub, _changes) = hub_with_empty_history(8);
    let _keep = hub.join(channel);
    (1..=5).for_each(|id| hub.deliver(channel, frame(channel, id)));
    let mut stream = open(&hub, &history, channel, Some(2)).await;
    assert!(stream.prefetch().await.is_ok());
    assert_eq!(events(&read_all(&mut stream).await), messages(3..=5));
    assert!(history.calls().is_empty());
}

#[tokio::test(start_paused = true)]
async fn resume_beyond_the_recent_buffer_reads_history() {
    let history = FakeHistory::new();
    let channel = channel(1);
    history.store(channel, 1..=10);
    let (hub, _changes) = hub_with_empty_history(4);
    let _keep = hub.join(channel);
    (1..=10).for_each(|id| hub.deliver(channel, frame(channel, id)));
    let mut stream = open(&hub, &history, channel, Some(2)).await;
    assert!(stream.prefetch().await.is_ok());
    assert_eq!(events(&read_all(&mut stream).await), messages(3..=10));
    assert_eq!(history.calls(), [(channel, 2)]);
}

#[tokio::test(start_paused = true)]
async fn resume_after_trimmed_ids_sends_one_gap_event_then_the_oldest_kept() {
    let history = FakeHistory::new();
    let channel = channel(1);
    history.store(channel, 6..=7);
    let (hub, _changes) = hub_with_empty_history(8);
    let mut stream = open(&hub, &history, channel, Some(2)).await;
    assert!(stream.prefetch().await.is_ok());
    let text = read_all(&mut stream).await;
    let gap =
        format!("event: gap\nid: 5\ndata: {{\"channel\":\"{channel}\",\"from\":3,\"to\":5}}\n\n");
    assert_eq!(text.matches(&gap).count(), 1, "{text}");
    assert_eq!(events(&text), ["gap 5", "message 6", "message 7"]);
}

#[tokio::test(start_paused = true)]
async fn resume_with_nothing_newer_reads_history_and_goes_live() {
    let history = FakeHistory::new();
    let channel = channel(1);
    history.store(channel, 1..=2);
    let (hub, _changes) = hub_with_empty_history(8);
    let mut stream = open(&hub, &history, channel, Some(2)).await;
    assert!(stream.prefetch().await.is_ok());
    hub.deliver(channel, frame(channel, 3));
    assert_eq!(events(&read_all(&mut stream).await), messages([3]));
    assert_eq!(
        history.calls(),
        [(channel, 2)],
        "no gap without history's word"
    );
}

#[tokio::test(start_paused = true)]
async fn lagging_listener_is_caught_up_from_the_recent_buffer() {
    let history = FakeHistory::new();
    let channel = channel(1);
    let (hub, _changes) = hub_with_empty_history(16);
    let mut stream = open(&hub, &history, channel, None).await;
    (1..=16).for_each(|id| hub.deliver(channel, frame(channel, id)));
    assert_eq!(events(&read_all(&mut stream).await), messages(1..=16));
    assert!(
        history.calls().is_empty(),
        "the ring of 8 overflowed, the buffer did not"
    );
}

#[tokio::test(start_paused = true)]
async fn listener_far_behind_reads_history_one_page_per_chunk() {
    let history = FakeHistory::new();
    let channel = channel(1);
    history.store(channel, 1..=500);
    let (hub, _changes) = hub_with_empty_history(16);
    let mut stream = open(&hub, &history, channel, None).await;
    (1..=500).for_each(|id| hub.deliver(channel, frame(channel, id)));
    let mut all = Vec::new();
    for _ in 0..100 {
        let Some(chunk) = next_text(&mut stream).await else {
            break;
        };
        let chunk = events(&chunk);
        assert!(chunk.len() <= PAGE, "a chunk of {} events", chunk.len());
        all.extend(chunk);
    }
    assert_eq!(all, messages(1..=500));
    assert_eq!(history.calls().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_listener_that_never_reads_holds_back_no_one_and_misses_nothing() {
    let history = FakeHistory::new();
    let channel = channel(1);
    history.store(channel, 1..=100);
    let (hub, _changes) = hub_with_empty_history(8);
    let mut slow = open(&hub, &history, channel, None).await;
    let mut fast = open(&hub, &history, channel, None).await;
    let mut seen = Vec::new();
    for id in 1..=100 {
        hub.deliver(channel, frame(channel, id));
        seen.extend(events(&next_text(&mut fast).await.unwrap_or_default()));
    }
    assert_eq!(seen, messages(1..=100));
    assert_eq!(events(&read_all(&mut slow).await), messages(1..=100));
}

#[tokio::test(start_paused = true)]
async fn live_jump_past_trimmed_ids_sends_a_gap_event() {
    let history = FakeHistory::new();
    let channel = channel(1);
    history.store(channel, 5..=5);
    let (hub, _changes) = hub_with_empty_history(8);
    let mut stream = open(&hub, &history, channel, None).await;
    hub.deliver(channel, frame(channel, 1));
    hub.deliver(channel, frame(channel, 5));
    assert_eq!(
        events(&read_all(&mut stream).await),
        ["message 1", "gap 4", "message 5"]
    );
}

#[tokio::test(start_paused = true)]
async fn live_jump_that_history_never_reaches_ends_with_reconnect() {
    let history = FakeHistory::new();
    let channel = channel(1);
    let (hub, _changes) = hub_with_empty_history(8);
    let mut stream = open(&hub, &history, channel, None).await;
    hub.deliver(channel, frame(channel, 1));
    hub.deliver(channel, frame(channel, 5));
    let text = read_all(&mut stream).await;
    assert_eq!(events(&text), ["message 1", "reconnect"]);
    assert!(next_text(&mut stream).await.is_none(), "the stream ended");
    assert_eq!(history.calls().len(), MAX_STALLS as usize + 1);
}

#[tokio::test(start_paused = true)]
async fn history_down_during_a_catch_up_ends_with_reconnect() {
    let history = FakeHistory::new();
    let channel = channel(1);
    history.fail_next(usize::MAX);
    let (hub, _changes) = hub_with_empty_history(4);
    let mut stream = open(&hub, &history, channel, None).await;
    hub.deliver(channel, frame(channel, 1));
    assert_eq!(
        events(&next_text(&mut stream).await.unwrap_or_default()),
        messages([1])
    );
    (2..=20).for_each(|id| hub.deliver(channel, frame(channel, id)));
    assert_eq!(events(&read_all(&mut stream).await), ["reconnect"]);
}

#[tokio::test(start_paused = true)]
async fn hub_backfill_reaches_a_listener_without_its_own_history_read() {
    let history = FakeHistory::new();
    let channel = channel(1);
    history.store(channel, 1..=4);
    let hub = Hub::new(
        64,
        Arc::new(Shared(history.clone())),
        server::tasks::Background::on_current_runtime(),
    )
    .0;
    let mut stream = open(&hub, &history, channel, None).await;
    hub.deliver(channel, frame(channel, 1));
    hub.deliver(channel, frame(channel, 4));
    assert_eq!(events(&read_all(&mut stream).await), messages(1..=4));
    assert_eq!(
        history.calls(),
        [(channel, 1)],
        "one read for all listeners"
    );
}

#[test]
fn reset_event_has_the_exact_wire_form() {
    assert_eq!(
        reset_event(channel(1), 3, "0"),
        Bytes::from(format!(
            "event: reset\nid: 0\ndata: {{\"channel\":\"{}\",\"last_id\":3}}\n\n",
            channel(1)
        ))
    );
}

#[tokio::test(start_paused = true)]
async fn resume_past_the_newest_id_resets_then_serves_the_channel_from_its_start() {
    let history = FakeHistory::new();
    let channel = channel(1);
    history.store(channel, 1..=3);
    let (hub, _changes) = hub_with_empty_history(8);
    let mut stream = open(&hub, &history, channel, Some(5)).await;
    assert!(stream.prefetch().await.is_ok());
    history.store(channel, 4..=4);
    hub.deliver(channel, frame(channel, 4));
    let text = read_all(&mut stream).await;
    assert!(text.contains("\"last_id\":3}"), "{text}");
    let mut expected = vec!["reset 0".to_string()];
    expected.extend(messages(1..=4));
    assert_eq!(events(&text), expected);
}

#[tokio::test(start_paused = true)]
async fn resume_at_an_id_this_node_delivered_is_not_a_reset() {
    let history = FakeHistory::new();
    let channel = channel(1);
    let (hub, _changes) = hub_with_empty_history(8);
    let _keep = hub.join(channel);
    (1..=3).for_each(|id| hub.deliver(channel, frame(channel, id)));
    // History is not asked: the hub delivered the cursor, so it exists.
    let mut stream = open(&hub, &history, channel, Some(3)).await;
    assert!(stream.prefetch().await.is_ok());
    hub.deliver(channel, frame(channel, 4));
    assert_eq!(events(&read_all(&mut stream).await), messages([4]));
    assert!(history.calls().is_empty());
}

/// A stream of `channels`, each resumed after its entry of `resume`, whose
/// `retry:` line was already taken.
async fn open_several(
    hub: &Hub,
    history: &Arc<FakeHistory>,
    channels: &[ChannelId],
    resume: &[Option<u64>],
) -> ClientStream {
    let openings = channels
        .iter()
        .zip(resume)
        .map(|(channel, resume_after)| Opening {
            channel: *channel,
            membership: hub.join(*channel),
            resume_after: *resume_after,
        })
        .collect();
    let history = Arc::new(Shared(history.clone()));
    let mut stream = ClientStream::of_channels(openings, hub, history, 1000);
    assert_eq!(
        next_text(&mut stream).await.as_deref(),
        Some("retry: 1000\n\n")
    );
    stream
}

fn key(channel: ChannelId) -> String {
    cursor::key(channel)
}

#[tokio::test(start_paused = true)]
async fn a_stream_of_several_channels_tags_every_message_with_the_cursor_of_all() {
    let history = FakeHistory::new();
    let (a, b) = (channel(1), channel(2));
    history.store(b, 1..=4);
    let (hub, _changes) = hub_with_empty_history(8);
    let mut stream = open_several(&hub, &history, &[a, b], &[Some(0), Some(4)]).await;
    assert!(stream.prefetch().await.is_ok());
    hub.deliver(a, frame(a, 1));
    hub.deliver(b, frame(b, 5));
    hub.deliver(a, frame(a, 2));
    history.store(a, 1..=2);
    history.store(b, 5..=5);
    let text = read_all(&mut stream).await;
    let (ka, kb) = (key(a), key(b));
    assert_eq!(
        events(&text),
        [
            format!("message {ka}:0,{kb}:5"),
            format!("message {ka}:1,{kb}:5"),
            format!("message {ka}:2,{kb}:5"),
        ],
        "b was still catching up when its 5 arrived, so it is replayed first"
    );
    let id_lines = text.lines().filter(|line| line.starts_with("id: ")).count();
    assert_eq!(id_lines, 3, "one id per event: {text}");
    let data = format!("data: {{\"id\":5,\"channel\":\"{b}\"");
    assert!(
        text.contains(&data),
        "the message's data is untouched: {text}"
    );
}

#[tokio::test(start_paused = true)]
async fn each_channel_of_a_stream_resumes_from_its_own_place() {
    let history = FakeHistory::new();
    let (a, b) = (channel(1), channel(2));
    history.store(a, 1..=3);
    history.store(b, 1..=2);
    let (hub, _changes) = hub_with_empty_history(8);
    let mut stream = open_several(&hub, &history, &[a, b], &[Some(1), Some(2)]).await;
    assert!(stream.prefetch().await.is_ok());
    hub.deliver(b, frame(b, 3));
    let (ka, kb) = (key(a), key(b));
    assert_eq!(
        events(&read_all(&mut stream).await),
        [
            format!("message {ka}:2,{kb}:2"),
            format!("message {ka}:3,{kb}:2"),
            format!("message {ka}:3,{kb}:3"),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_cursor_past_one_channels_newest_id_resets_that_channel_alone() {
    let history = FakeHistory::new();
    let (a, b) = (channel(1), channel(2));
    history.store(a, 1..=2);
    history.store(b, 1..=3);
    let (hub, _changes) = hub_with_empty_history(8);
    let mut stream = open_several(&hub, &history, &[a, b], &[Some(9), Some(3)]).await;
    assert!(stream.prefetch().await.is_ok());
    let text = read_all(&mut stream).await;
    let (ka, kb) = (key(a), key(b));
    let reset =
        format!("event: reset\nid: {ka}:0,{kb}:3\ndata: {{\"channel\":\"{a}\",\"last_id\":2}}\n\n");
    assert!(text.starts_with(&reset), "{text}");
    assert_eq!(
        events(&text),
        [
            format!("reset {ka}:0,{kb}:3"),
            format!("message {ka}:1,{kb}:3"),
            format!("message {ka}:2,{kb}:3"),
        ]
    );
}

/// A typing signal's SSE event, as the bus frames it.
fn typing_event(channel: ChannelId) -> Bytes {
    let signal = protocol::Signal::new(
        protocol::signal::SignalType::Typing,
        channel,
        "ann".into(),
        None,
        None,
    );
    Bytes::from(signal.sse_frame())
}

#[tokio::test(start_paused = true)]
async fn a_signal_is_written_between_messages_without_an_id() {
    let history = FakeHistory::new();
    let channel = channel(1);
    history.store(channel, 1..=2);
    let (hub, _changes) = hub_with_empty_history(8);
    let mut stream = open(&hub, &history, channel, Some(2)).await;
    assert!(stream.prefetch().await.is_ok());
    hub.deliver(channel, frame(channel, 3));
    assert_eq!(events(&read_all(&mut stream).await), messages([3]));
    hub.deliver_signal(channel, typing_event(channel));
    let text = read_all(&mut stream).await;
    assert_eq!(events(&text), ["signal"]);
    assert!(!text.contains("id: "), "a signal has no id: {text}");
    hub.deliver(channel, frame(channel, 4));
    assert_eq!(
        events(&read_all(&mut stream).await),
        messages([4]),
        "the next message follows on, no gap and no catch-up"
    );
    assert_eq!(
        history.calls(),
        [(channel, 2)],
        "only the resume read history"
    );
}

#[tokio::test(start_paused = true)]
async fn a_stream_of_several_channels_gets_each_ones_signals_and_keeps_its_cursor() {
    let history = FakeHistory::new();
    let (a, b) = (channel(1), channel(2));
    let (hub, _changes) = hub_with_empty_history(8);
    let mut stream = open_several(&hub, &history, &[a, b], &[Some(0), Some(0)]).await;
    assert!(stream.prefetch().await.is_ok());
    hub.deliver_signal(a, typing_event(a));
    hub.deliver_signal(b, typing_event(b));
    let text = read_all(&mut stream).await;
    assert_eq!(events(&text), ["signal", "signal"]);
    assert!(text.contains(&format!("\"channel\":\"{a}\"")), "{text}");
    assert!(text.contains(&format!("\"channel\":\"{b}\"")), "{text}");
    hub.deliver(a, frame(a, 1));
    let (ka, kb) = (key(a), key(b));
    assert_eq!(
        events(&read_all(&mut stream).await),
        [format!("message {ka}:1,{kb}:0")]
    );
}
