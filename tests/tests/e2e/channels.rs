//! `GET /events?channel=…`: several channels on one stream, resumed by the
//! cursor in its `id:`.

use std::collections::BTreeMap;
use std::time::Duration;

use eventsource_stream::Event;
use protocol::{ChannelId, Message};
use reqwest::StatusCode;

use crate::broker::Broker;
use crate::helpers::{EventStream, TestApp, error_of, new_channel};

fn events_url(base: &str, channels: &[ChannelId]) -> String {
    let query: Vec<String> = channels.iter().map(|c| format!("channel={c}")).collect();
    format!("{base}/events?{}", query.join("&"))
}

async fn open_channels(app: &TestApp, channels: &[ChannelId], cursor: Option<&str>) -> EventStream {
    let mut request = app.http.get(events_url(&app.sse.url, channels));
    if let Some(cursor) = cursor {
        request = request.header("Last-Event-ID", cursor);
    }
    EventStream::from_request(request).await
}

/// The next `message` event: its message and the cursor in its `id:`.
async fn next_tagged(stream: &mut EventStream) -> (Message, String) {
    for _ in 0..100 {
        let event: Event = stream.next_event().await;
        if event.event == "message" {
            let message = serde_json::from_str(&event.data).expect("a message");
            return (message, event.id);
        }
    }
    panic!("no message among 100 events");
}

/// The cursor names every channel with the last id the stream sent of it.
fn cursor_of(last: &BTreeMap<ChannelId, u64>) -> BTreeMap<String, u64> {
    last.iter()
        .map(|(channel, id)| (channel.to_string()[..8].to_string(), *id))
        .collect()
}

fn parse_cursor(cursor: &str) -> BTreeMap<String, u64> {
    cursor
        .split(',')
        .map(|entry| {
            let (key, id) = entry.split_once(':').expect("key:id");
            (key.to_string(), id.parse().expect("an id"))
        })
        .collect()
}

/// Reads `n` messages, checking that each channel's ids come in order and the
/// cursor of each event holds the last id of every channel.
async fn read_in_order(
    stream: &mut EventStream,
    n: usize,
    last: &mut BTreeMap<ChannelId, u64>,
) -> String {
    let mut cursor = String::new();
    for _ in 0..n {
        let (message, id) = next_tagged(stream).await;
        let previous = last.insert(message.channel, message.id).unwrap_or(0);
        assert_eq!(
            message.id,
            previous + 1,
            "{}: in order, nothing missing",
            message.channel
        );
        assert_eq!(
            parse_cursor(&id),
            cursor_of(last),
            "the cursor of every channel"
        );
        cursor = id;
    }
    cursor
}

#[tokio::test]
async fn a_stream_of_three_channels_resumes_after_its_node_is_killed_and_misses_nothing() {
    let mut app = TestApp::on(Broker::embedded()).await;
    let channels = [new_channel(), new_channel(), new_channel()];
    let mut last: BTreeMap<ChannelId, u64> = channels.iter().map(|c| (*c, 0)).collect();
    let mut stream = open_channels(&app, &channels, None).await;
    for round in 1..=2 {
        for channel in channels {
            app.post_message(channel, "ann", &format!("before {round}"))
                .await;
        }
    }
    let cursor = read_in_order(&mut stream, 6, &mut last).await;

    app.kill_broadcast_sse();
    for round in 1..=2 {
        for channel in channels {
            app.post_message(channel, "ann", &format!("while down {round}"))
                .await;
        }
    }
    app.start_broadcast_sse_again().await;
    let mut resumed = open_channels(&app, &channels, Some(&cursor)).await;
    read_in_order(&mut resumed, 6, &mut last).await;
    for channel in channels {
        app.post_message(channel, "ann", "after").await;
    }
    read_in_order(&mut resumed, 3, &mut last).await;
    resumed
        .expect_no_message_within(Duration::from_millis(300))
        .await;
    assert!(last.values().all(|id| *id == 5), "{last:?}");
}

#[tokio::test]
async fn a_channel_left_out_of_the_cursor_starts_with_what_is_posted_next() {
    let app = TestApp::on(Broker::embedded()).await;
    let (old, new) = (new_channel(), new_channel());
    for n in 1..=3 {
        app.post_message(old, "ann", &format!("old {n}")).await;
        app.post_message(new, "ann", &format!("new {n}")).await;
    }
    let cursor = format!("{}:1", &old.to_string()[..8]);
    let mut stream = open_channels(&app, &[old, new], Some(&cursor)).await;
    let mut seen = Vec::new();
    for _ in 0..2 {
        let (message, _) = next_tagged(&mut stream).await;
        seen.push((message.channel, message.id));
    }
    assert_eq!(
        seen,
        [(old, 2), (old, 3)],
        "the old channel resumes after 1"
    );
    app.post_message(new, "ann", "new 4").await;
    let (message, id) = next_tagged(&mut stream).await;
    assert_eq!(
        (message.channel, message.id),
        (new, 4),
        "the new one starts now"
    );
    let expected = format!("{}:3,{}:4", &old.to_string()[..8], &new.to_string()[..8]);
    assert_eq!(id, expected);
}

#[tokio::test]
async fn a_bad_channel_list_or_cursor_is_refused_with_our_error() {
    let app = TestApp::on(Broker::embedded()).await;
    let (a, b) = (new_channel(), new_channel());
    let base = &app.sse.url;
    let too_many: Vec<ChannelId> = (0..33).map(|_| new_channel()).collect();
    let cases: Vec<(String, Option<&str>, &str)> = vec![
        (format!("{base}/events"), None, "invalid_channel"),
        (format!("{base}/events?name=ann"), None, "invalid_channel"),
        (
            format!("{base}/events?channel=nope"),
            None,
            "invalid_channel",
        ),
        (
            format!("{base}/events?channel={a}&channel={a}"),
            None,
            "invalid_channel",
        ),
        (events_url(base, &too_many), None, "invalid_channel"),
        (
            events_url(base, &[a, b]),
            Some("12"),
            "invalid_last_event_id",
        ),
        (
            events_url(base, &[a, b]),
            Some("deadbeef:1"),
            "invalid_last_event_id",
        ),
        (
            events_url(base, &[a, b]),
            Some("x:1,y"),
            "invalid_last_event_id",
        ),
        (
            format!("{}&last_event_id=abc", events_url(base, &[a])),
            None,
            "invalid_last_event_id",
        ),
    ];
    for (url, cursor, code) in cases {
        let mut request = app.http.get(&url);
        if let Some(cursor) = cursor {
            request = request.header("Last-Event-ID", cursor);
        }
        let response = request.send().await.expect("an answer");
        let (status, body) = error_of(response).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{url} {cursor:?}");
        assert_eq!(body.error.code, code, "{url} {cursor:?}");
    }
    assert_eq!(app.sse_listeners().await, 0, "nothing was opened");
}

#[tokio::test]
async fn two_last_event_id_headers_are_refused() {
    let app = TestApp::on(Broker::embedded()).await;
    let channel = new_channel();
    for url in [
        format!("{}/channels/{channel}/events", app.sse.url),
        events_url(&app.sse.url, &[channel]),
    ] {
        let response = app
            .http
            .get(&url)
            .header("Last-Event-ID", "1")
            .header("Last-Event-ID", "2")
            .send()
            .await
            .expect("an answer");
        let (status, body) = error_of(response).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{url}");
        assert_eq!(body.error.code, "invalid_last_event_id", "{url}");
    }
}
