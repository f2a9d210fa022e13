//! Edits and deletions: stored as the channel's next ids, streamed as
//! `update` and `delete` events, replayed on resume, carried over MQTT, and
//! shown in history as messages now are (or as the raw log with `?raw=1`);
//! allowed to the author and to admins only.

use protocol::{ChannelId, Kind, Message, topic};
use reqwest::{Method, StatusCode};
use rumqttc::{AsyncClient, Event, Incoming, QoS};
use serde_json::{Value, json};

use crate::auth::{admin, admin_request, app_with_keys, expect_error, hs256, member};
use crate::broker::Broker;
use crate::helpers::{TestApp, WAIT, new_channel};

/// PATCH or DELETE message `id` of `channel`, with a token or as `?author=`.
async fn revise(
    app: &TestApp,
    method: Method,
    channel: ChannelId,
    id: u64,
    as_author: &str,
    body: Option<Value>,
    token: Option<&str>,
) -> reqwest::Response {
    let url = format!("{}/channels/{channel}/messages/{id}", app.chat_url());
    let mut request = app.http.request(method, url);
    request = match token {
        Some(token) => request.bearer_auth(token),
        None => request.query(&[("author", as_author)]),
    };
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.expect("request reaches chat-service")
}

async fn edit(app: &TestApp, channel: ChannelId, id: u64, author: &str, text: &str) -> Message {
    let body = json!({"text": text});
    let response = revise(app, Method::PATCH, channel, id, author, Some(body), None).await;
    assert_eq!(response.status(), StatusCode::OK, "edit of {id} stored");
    response.json().await.expect("the edit entry")
}

async fn delete(app: &TestApp, channel: ChannelId, id: u64, author: &str) -> Message {
    let response = revise(app, Method::DELETE, channel, id, author, None, None).await;
    assert_eq!(response.status(), StatusCode::OK, "deletion of {id} stored");
    response.json().await.expect("the deletion entry")
}

fn ids(messages: &[Message]) -> Vec<u64> {
    messages.iter().map(|message| message.id).collect()
}

#[tokio::test]
async fn edits_and_deletions_are_numbered_streamed_and_shown_as_messages_now_are() {
    let app = TestApp::on(Broker::embedded()).await;
    let channel = new_channel();
    app.post_message(channel, "ann", "helo").await;
    app.post_message(channel, "ann", "oops").await;
    // From after both: a 201 does not wait for the publish, so a stream
    // opened "from now on" may still be handed message 2 live.
    let mut stream = app.open_stream(channel, Some(2)).await;

    let edited = edit(&app, channel, 1, "ann", "hello").await;
    assert_eq!(
        (edited.id, edited.kind, edited.target),
        (3, Kind::Update, Some(1))
    );
    let deleted = delete(&app, channel, 2, "ann").await;
    assert_eq!(
        (deleted.id, deleted.kind, deleted.target),
        (4, Kind::Delete, Some(2))
    );
    assert!(deleted.text.is_empty(), "a deletion carries no text");
    let next = app.post_message(channel, "bob", "after").await;
    assert_eq!(next.id, 5, "ids stay gap-free");

    for (kind, entry) in [("update", &edited), ("delete", &deleted)] {
        let event = stream.next_event().await;
        assert_eq!(
            (event.event.as_str(), event.id.clone()),
            (kind, entry.id.to_string())
        );
        let data: Message = serde_json::from_str(&event.data).expect("entry JSON");
        assert_eq!(&data, entry, "the stream carries the stored entry");
    }
    assert_eq!(stream.next_message().await, next);

    let current = app.history(channel, "").await;
    assert_eq!(ids(&current), [1, 2, 5], "messages only, as they now are");
    assert_eq!(current[0].text, "hello");
    assert_eq!(current[0].edited_at.as_deref(), Some(edited.ts.as_str()));
    assert!(current[1].deleted && current[1].text.is_empty());
    let raw = app.history(channel, "?raw=1").await;
    assert_eq!(ids(&raw), [1, 2, 3, 4, 5], "the log as written");
    assert_eq!(raw[0].text, "helo", "the log keeps the first text");
    assert_eq!(raw[2], edited);
    let page = app.history(channel, "?after=1&limit=1").await;
    assert_eq!(ids(&page), [2], "pages skip the entries");
}

#[tokio::test]
async fn a_stream_resuming_from_before_an_edit_gets_the_message_then_the_update() {
    let app = TestApp::on(Broker::embedded()).await;
    let channel = new_channel();
    let first = app.post_message(channel, "ann", "first").await;
    let message = app.post_message(channel, "ann", "typo").await;
    let edited = edit(&app, channel, message.id, "ann", "fixed").await;
    let mut stream = app.open_stream(channel, Some(first.id)).await;
    assert_eq!(stream.next_message().await, message, "the message first");
    let event = stream.next_event().await;
    assert_eq!(event.event, "update");
    assert_eq!(event.id, edited.id.to_string());
    let data: Message = serde_json::from_str(&event.data).expect("entry JSON");
    assert_eq!(
        (data.target, data.text.as_str()),
        (Some(message.id), "fixed")
    );
}

#[tokio::test]
async fn mqtt_subscribers_see_edits_and_deletions_as_entries() {
    let app = TestApp::on(Broker::embedded()).await;
    let channel = new_channel();
    let broker = server::mqtt::BrokerUrl::parse(&app.broker.url, None).expect("broker url");
    let (client, mut eventloop) = AsyncClient::new(broker.options("crier-test-revisions"), 64);
    client
        .subscribe(topic::channel_topic(&app.prefix, channel), QoS::AtLeastOnce)
        .await
        .expect("subscribe queued");
    let watch = async {
        let mut seen = Vec::new();
        while seen.len() < 3 {
            match eventloop.poll().await.expect("watcher stays connected") {
                Event::Incoming(Incoming::SubAck(_)) => {
                    app.post_message(channel, "ann", "one").await;
                    edit(&app, channel, 1, "ann", "uno").await;
                    delete(&app, channel, 1, "ann").await;
                }
                Event::Incoming(Incoming::Publish(publish)) => {
                    let entry: Message =
                        serde_json::from_slice(&publish.payload).expect("entry JSON");
                    seen.push((entry.id, entry.kind, entry.target));
                }
                _ => {}
            }
        }
        seen
    };
    let seen = tokio::time::timeout(WAIT, watch).await.expect("in time");
    assert_eq!(
        seen,
        [
            (1, Kind::Message, None),
            (2, Kind::Update, Some(1)),
            (3, Kind::Delete, Some(1))
        ]
    );
}

#[tokio::test]
async fn only_the_author_or_an_admin_may_change_a_message_and_never_when_banned() {
    let app = app_with_keys("rsa-public.pem").await;
    let channel = new_channel();
    let (ann, bob) = (
        hs256(&member("ann", channel)),
        hs256(&member("bob", channel)),
    );
    let post = app
        .http
        .post(format!("{}/channels/{channel}/messages", app.chat_url()))
        .bearer_auth(&ann)
        .json(&json!({"text": "mine"}))
        .send()
        .await
        .expect("post");
    assert_eq!(post.status(), StatusCode::CREATED);
    let text = |t: &str| Some(json!({"text": t}));

    let response = revise(
        &app,
        Method::PATCH,
        channel,
        1,
        "",
        text("bob's"),
        Some(&bob),
    )
    .await;
    expect_error(response, StatusCode::FORBIDDEN, "not_author").await;
    let response = revise(&app, Method::DELETE, channel, 1, "", None, Some(&bob)).await;
    expect_error(response, StatusCode::FORBIDDEN, "not_author").await;
    let response = revise(
        &app,
        Method::PATCH,
        channel,
        1,
        "",
        text("ann's"),
        Some(&ann),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK, "the author may");
    let response = revise(
        &app,
        Method::PATCH,
        channel,
        1,
        "",
        text("moderated"),
        Some(&admin()),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK, "an admin may");
    let entry: Message = response.json().await.expect("entry");
    assert_eq!(entry.author, "ops", "the entry names who made it");

    let bans = json!([{"name": "ann", "channel": channel.to_string(), "expire": 60}]);
    let response = admin_request(&app, Method::POST, "/bans", Some(bans)).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let response = revise(&app, Method::DELETE, channel, 1, "", None, Some(&ann)).await;
    expect_error(response, StatusCode::FORBIDDEN, "banned").await;

    let erase = app
        .http
        .post(format!("{}/erase", app.chat_url()))
        .bearer_auth(&ann)
        .json(&json!({"author": "bob"}))
        .send()
        .await
        .expect("erase");
    expect_error(erase, StatusCode::FORBIDDEN, "not_admin").await;

    let history = app.history_with(channel, &ann).await;
    assert_eq!(ids(&history), [1]);
    assert_eq!(
        history[0].text, "moderated",
        "refused changes changed nothing"
    );
}

#[tokio::test]
async fn bad_revisions_get_clear_errors_and_change_nothing() {
    let app = TestApp::on(Broker::embedded()).await;
    let channel = new_channel();
    app.post_message(channel, "ann", "one").await;
    edit(&app, channel, 1, "ann", "uno").await;
    let text = |t: &str| Some(json!({"text": t}));
    let (patch, delete_) = (Method::PATCH, Method::DELETE);
    let cases = [
        (&patch, 1, "bob", text("x"), 403, "not_author"),
        (&patch, 9, "ann", text("x"), 404, "message_not_found"),
        (&patch, 2, "ann", text("x"), 409, "not_a_message"),
        (&patch, 1, "ann", text(" "), 400, "invalid_text"),
        (&patch, 1, "ann", Some(json!({})), 400, "invalid_text"),
        (&patch, 1, "ann", None, 415, "unsupported_media_type"),
        (&delete_, 1, "", None, 400, "invalid_author"),
    ];
    for (method, id, author, body, status, code) in cases {
        let response = revise(&app, method.clone(), channel, id, author, body, None).await;
        let status = StatusCode::from_u16(status).expect("a status");
        expect_error(response, status, code).await;
    }
    let url = format!(
        "{}/channels/{channel}/messages/zero?author=ann",
        app.chat_url()
    );
    let response = app.http.delete(url).send().await.expect("delete");
    expect_error(response, StatusCode::BAD_REQUEST, "invalid_message_id").await;
    let url = format!("{}/channels/{channel}/messages?raw=2", app.chat_url());
    let response = app.http.get(url).send().await.expect("history");
    expect_error(response, StatusCode::BAD_REQUEST, "invalid_query").await;

    delete(&app, channel, 1, "ann").await;
    let response = revise(&app, Method::DELETE, channel, 1, "ann", None, None).await;
    expect_error(response, StatusCode::CONFLICT, "message_deleted").await;
    let response = revise(&app, Method::PATCH, channel, 1, "ann", text("back"), None).await;
    expect_error(response, StatusCode::CONFLICT, "message_deleted").await;
    let raw = app.history(channel, "?raw=1").await;
    assert_eq!(
        ids(&raw),
        [1, 2, 3],
        "only the accepted changes were stored"
    );
}
