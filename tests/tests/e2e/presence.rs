//! Stats and presence over several broadcast-sse nodes: names are listed once
//! whichever nodes carry them, a killed node drops out within seconds, and a
//! stream that follows presence is told on any node.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::broker::Broker;
use crate::helpers::{BROADCAST_SSE, EventStream, TestApp, WAIT, eventually, new_channel};
use crate::process::Service;
use protocol::ChannelId;

/// Another broadcast-sse node of the app, on its broker and history.
fn another_node(app: &TestApp, name: &str) -> Service {
    let args = [
        "--listen".to_string(),
        "127.0.0.1:0".into(),
        "--mqtt-url".into(),
        app.broker.url.clone(),
        "--topic-prefix".into(),
        app.prefix.clone(),
        "--history-url".into(),
        app.chat_url().to_string(),
    ];
    let log = app.data_dir.path().join(format!("{name}.log"));
    Service::start(BROADCAST_SSE, &args, &log)
}

async fn stream(app: &TestApp, node: &str, channel: ChannelId, query: &str) -> EventStream {
    let url = format!("{node}/channels/{channel}/events?{query}");
    EventStream::from_request(app.http.get(url)).await
}

async fn get(app: &TestApp, channel: ChannelId, what: &str) -> Value {
    let url = format!("{}/channels/{channel}/{what}", app.chat_url());
    let response = app.http.get(url).send().await.expect("GET");
    assert!(
        response.status().is_success(),
        "{what}: {}",
        response.status()
    );
    response.json().await.expect("JSON")
}

fn names_of(presence: &Value) -> Vec<&str> {
    presence["names"]
        .as_array()
        .map(|names| names.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Reads `event: presence` events until the names told add up to `wanted`.
async fn told_until(stream: &mut EventStream, told: &mut BTreeSet<String>, wanted: &[&str]) {
    let wanted: BTreeSet<String> = wanted.iter().map(|name| name.to_string()).collect();
    let follow = async {
        while *told != wanted {
            let event = stream.next_event().await;
            if event.event != "presence" {
                continue;
            }
            let change: Value = serde_json::from_str(&event.data).expect("presence JSON");
            for name in change["joined"].as_array().into_iter().flatten() {
                told.insert(name.as_str().unwrap_or_default().to_string());
            }
            for name in change["left"].as_array().into_iter().flatten() {
                told.remove(name.as_str().unwrap_or_default());
            }
        }
    };
    tokio::time::timeout(WAIT, follow)
        .await
        .unwrap_or_else(|_| panic!("told {told:?}, not {wanted:?}, within {WAIT:?}"));
}

/// Two nodes on one Mosquitto: presence lists each name once and stats sum
/// the streams; `SIGKILL` one node and its streams drop out within 10 s,
/// which a stream on the other node is told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_sums_over_nodes_and_drops_a_killed_node() {
    let Some(broker) = Broker::mosquitto() else {
        return;
    };
    let app = TestApp::on(broker).await;
    let other = another_node(&app, "second-node");
    crate::helpers::wait_for_ready(&app.http, &other.url).await;
    let channel = new_channel();
    let node = app.sse.url.clone();

    let mut watching = stream(&app, &node, channel, "presence=1&name=carol").await;
    let _ann_here = stream(&app, &node, channel, "name=ann").await;
    let _anonymous = stream(&app, &node, channel, "").await;
    let _ann_there = stream(&app, &other.url, channel, "name=ann").await;
    let _bob_there = stream(&app, &other.url, channel, "name=bob").await;

    eventually("presence counts every stream on both nodes", || async {
        get(&app, channel, "presence").await["subscribers"] == 5
    })
    .await;
    let presence = get(&app, channel, "presence").await;
    assert_eq!(
        names_of(&presence),
        ["ann", "bob", "carol"],
        "each name once"
    );
    let mut told = BTreeSet::new();
    told_until(&mut watching, &mut told, &["ann", "bob", "carol"]).await;

    for text in ["one", "two"] {
        app.post_message(channel, "ann", text).await;
    }
    let stats = get(&app, channel, "stats").await;
    assert_eq!(stats["channel"], channel.to_string());
    assert_eq!(
        (
            &stats["messages"],
            &stats["first_id"],
            &stats["last_id"],
            &stats["subscribers"]
        ),
        (
            &Value::from(2),
            &Value::from(1),
            &Value::from(2),
            &Value::from(5)
        )
    );

    other.kill();
    eventually("the killed node's streams drop out", || async {
        get(&app, channel, "presence").await["subscribers"] == 3
    })
    .await;
    let presence = get(&app, channel, "presence").await;
    assert_eq!(
        names_of(&presence),
        ["ann", "carol"],
        "bob was only on the killed node"
    );
    told_until(&mut watching, &mut told, &["ann", "carol"]).await;
}

/// Presence works on the embedded broker too (retained messages and the
/// last will of rumqttd), and an empty channel has stats of nothing.
#[tokio::test]
async fn presence_and_stats_work_on_the_embedded_broker() {
    let app = TestApp::on(Broker::embedded()).await;
    let channel = new_channel();
    let stats = get(&app, channel, "stats").await;
    assert_eq!(
        (&stats["messages"], &stats["first_id"], &stats["last_id"]),
        (&Value::from(0), &Value::Null, &Value::Null)
    );
    let node = app.sse.url.clone();
    let mut ann = stream(&app, &node, channel, "name=ann&presence=1").await;
    let mut told = BTreeSet::new();
    told_until(&mut ann, &mut told, &["ann"]).await;
    // The chat-service hears of the node's presence over the broker, on its
    // own connection: shortly after the stream was told, not necessarily before.
    eventually("the chat-service counts ann", || async {
        let presence = get(&app, channel, "presence").await;
        (presence["subscribers"].as_u64(), names_of(&presence)) == (Some(1), vec!["ann"])
    })
    .await;
    drop(ann);
    eventually("a closed stream leaves", || async {
        get(&app, channel, "presence").await["subscribers"] == 0
    })
    .await;
}

/// A bad `?name=` is refused like a bad author.
#[tokio::test]
async fn a_bad_name_is_refused() {
    let app = TestApp::on(Broker::embedded()).await;
    let channel = new_channel();
    let url = format!("{}/channels/{channel}/events?name=%20%20", app.sse.url);
    let response = app.http.get(url).send().await.expect("GET");
    let (status, body) = crate::helpers::error_of(response).await;
    assert_eq!(
        (status.as_u16(), body.error.code.as_str()),
        (400, "invalid_name")
    );
}
