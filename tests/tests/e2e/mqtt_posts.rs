//! MQTT clients post to `{prefix}/channels/{uuid}/post`: the post is stored,
//! numbered and streamed exactly like a REST post, refused posts are reported on
//! `{prefix}/errors`, and a post is stored once however often the broker delivers
//! it and however many chat-services share the subscription.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use protocol::{ChannelId, topic};
use reqwest::StatusCode;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS};
use serde_json::json;
use server::mqtt::BrokerUrl;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::bad_input::bad_json_posts;
use crate::broker::{Broker, REQUIRE_EXTERNAL};
use crate::helpers::{TestApp, WAIT, eventually, new_channel, start_chat_service, wait_for_ready};

/// An MQTT client of the test's own: publishes at QoS 1 and waits for the
/// broker's acknowledgement, and keeps what its subscriptions receive.
pub struct MqttClient {
    client: AsyncClient,
    packets: mpsc::UnboundedReceiver<Packet>,
    received: VecDeque<Publish>,
}

impl MqttClient {
    /// Connects to `broker` (an `mqtt://` URL) and waits for the broker's answer.
    pub async fn connect(broker: &str, client_id: &str) -> MqttClient {
        let url = BrokerUrl::parse(broker, None).expect("broker URL");
        MqttClient::connect_with(url.options(client_id)).await
    }

    pub async fn connect_with(options: MqttOptions) -> MqttClient {
        let (client, mut eventloop) = AsyncClient::new(options, 256);
        let (forward, packets) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(event) = eventloop.poll().await {
                if let Event::Incoming(packet) = event
                    && forward.send(packet).is_err()
                {
                    return;
                }
            }
        });
        let mut client = MqttClient {
            client,
            packets,
            received: VecDeque::new(),
        };
        client
            .wait_for("the broker's CONNACK", |p| matches!(p, Packet::ConnAck(_)))
            .await;
        client
    }

    pub async fn subscribe(&mut self, filter: &str) {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .expect("subscribe queued");
        self.wait_for("SUBACK", |p| matches!(p, Packet::SubAck(_)))
            .await;
    }

    /// Publishes at QoS 1 and waits until the broker acknowledges it.
    pub async fn post(&mut self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.into())
            .await
            .expect("publish queued");
        self.wait_for("PUBACK", |p| matches!(p, Packet::PubAck(_)))
            .await;
    }

    /// The next message a subscription received.
    pub async fn next_publish(&mut self) -> Publish {
        if let Some(publish) = self.received.pop_front() {
            return publish;
        }
        let packet = self
            .wait_for("a message", |p| matches!(p, Packet::Publish(_)))
            .await;
        match packet {
            Packet::Publish(publish) => publish,
            _ => unreachable!("wait_for returns what it was asked for"),
        }
    }

    /// Waits for a packet `wanted` accepts, keeping the messages that come first.
    async fn wait_for(&mut self, what: &str, wanted: impl Fn(&Packet) -> bool) -> Packet {
        let wait = async {
            loop {
                let packet = self.packets.recv().await.expect("MQTT connection open");
                if wanted(&packet) {
                    return packet;
                }
                if let Packet::Publish(publish) = packet {
                    self.received.push_back(publish);
                }
            }
        };
        tokio::time::timeout(WAIT, wait)
            .await
            .unwrap_or_else(|_| panic!("no {what} within {WAIT:?}"))
    }
}

/// Publishes one post with `mosquitto_pub` at QoS 1. Without it, the same post
/// goes through a client of the test's own, unless Mosquitto's tools are
/// required ([`REQUIRE_EXTERNAL`]).
pub async fn mosquitto_pub(broker: &str, topic: &str, payload: &str) {
    let Some(binary) = find_tool("mosquitto_pub") else {
        assert!(
            std::env::var(REQUIRE_EXTERNAL).as_deref() != Ok("1"),
            "mosquitto_pub is required ({REQUIRE_EXTERNAL}=1) but not installed"
        );
        let mut client = MqttClient::connect(broker, &client_id("pub")).await;
        client.post(topic, payload).await;
        return;
    };
    let url = BrokerUrl::parse(broker, None).expect("broker URL");
    let args = [
        "-h".to_string(),
        url.host,
        "-p".into(),
        url.port.to_string(),
        "-q".into(),
        "1".into(),
        "-t".into(),
        topic.into(),
        "-m".into(),
        payload.into(),
    ];
    let run = tokio::process::Command::new(binary).args(args).output();
    let output = tokio::time::timeout(WAIT, run)
        .await
        .expect("mosquitto_pub ends in time")
        .expect("mosquitto_pub runs");
    assert!(
        output.status.success(),
        "mosquitto_pub failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

fn client_id(role: &str) -> String {
    format!("crier-test-{role}-{}", uuid::Uuid::new_v4().simple())
}

fn post_topic(app: &TestApp, channel: ChannelId) -> String {
    topic::post_topic(&app.prefix, channel)
}

fn post_json(author: &str, text: &str) -> String {
    json!({"author": author, "text": text}).to_string()
}

/// REST and MQTT posts interleave in one channel: each, once taken, gets the
/// next id, and the stream and the history show them in that order.
pub async fn mqtt_and_rest_posts_interleave_with_ids_in_order(app: TestApp) {
    let channel = new_channel();
    let mut stream = app.open_stream(channel, None).await;
    let topic = post_topic(&app, channel);
    let mut client = MqttClient::connect(&app.broker.url, &client_id("poster")).await;
    let posts = [
        (Via::Rest, "ann", "one"),
        (Via::MosquittoPub, "dev", "two"),
        (Via::Rest, "ann", "three"),
        (Via::MqttClient, "dev", "four"),
        (Via::MqttClient, "dev", "five"),
        (Via::Rest, "ann", "six"),
    ];
    for (id, (via, author, text)) in (1..).zip(posts) {
        match via {
            Via::Rest => drop(app.post_message(channel, author, text).await),
            Via::MosquittoPub => {
                mosquitto_pub(&app.broker.url, &topic, &post_json(author, text)).await;
            }
            Via::MqttClient => client.post(&topic, post_json(author, text)).await,
        }
        let message = stream.next_message().await;
        assert_eq!(
            (message.id, message.author.as_str(), message.text.as_str()),
            (id, author, text),
            "the stream, in order"
        );
    }
    let history = app.history(channel, "").await;
    let stored: Vec<(u64, &str)> = history.iter().map(|m| (m.id, m.text.as_str())).collect();
    let expected: Vec<(u64, &str)> = (1..).zip(posts.map(|(_, _, text)| text)).collect();
    assert_eq!(stored, expected);
}

#[derive(Clone, Copy)]
enum Via {
    Rest,
    MosquittoPub,
    MqttClient,
}

/// The REST bad-input table, and what only MQTT can get wrong, posted over
/// MQTT: each is refused with our error on `{prefix}/errors`, naming its topic,
/// and nothing is stored (the next good post gets id 1).
pub async fn bad_mqtt_posts_are_reported_and_store_nothing(app: TestApp) {
    let channel = new_channel();
    let ban = json!([{"name": "mallory", "channel": channel.to_string(), "expire": 600}]);
    let banned = app
        .http
        .post(format!("{}/bans", app.chat_url()))
        .json(&ban)
        .send()
        .await
        .expect("POST /bans");
    assert_eq!(banned.status(), StatusCode::CREATED);

    let mut options = BrokerUrl::parse(&app.broker.url, None)
        .expect("broker URL")
        .options(&client_id("bad-poster"));
    options.set_max_packet_size(1024 * 1024, 1024 * 1024);
    let mut client = MqttClient::connect_with(options).await;
    client.subscribe(&topic::errors_topic(&app.prefix)).await;
    let topic = post_topic(&app, channel);
    let mut cases: Vec<(String, String, Vec<u8>, &str)> = bad_json_posts()
        .into_iter()
        .map(|case| (case.what.to_string(), topic.clone(), case.body, case.code))
        .collect();
    let good = post_json("ann", "hi").into_bytes();
    let mqtt_only = [
        (
            "a channel that is no UUID",
            "not-a-uuid",
            good.clone(),
            "invalid_channel",
        ),
        (
            "a key that is a number",
            "",
            br#"{"author":"ann","text":"hi","key":7}"#.to_vec(),
            "invalid_idempotency_key",
        ),
        (
            "a key with a space",
            "",
            br#"{"author":"ann","text":"hi","key":"a b"}"#.to_vec(),
            "invalid_idempotency_key",
        ),
        (
            "a banned author",
            "",
            post_json("mallory", "hi").into_bytes(),
            "banned",
        ),
    ];
    for (what, segment, payload, code) in mqtt_only {
        let topic = if segment.is_empty() {
            topic.clone()
        } else {
            format!("{}/channels/{segment}/post", app.prefix)
        };
        cases.push((what.to_string(), topic, payload, code));
    }
    for (what, topic, payload, code) in cases {
        client.post(&topic, payload).await;
        let report = client.next_publish().await;
        let report: serde_json::Value =
            serde_json::from_slice(&report.payload).expect("the report is JSON");
        assert_eq!(report["error"]["code"], code, "{what}: code in {report}");
        assert!(
            report["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{what}: a message"
        );
        assert_eq!(report["topic"], topic, "{what}: the post's topic");
    }
    assert!(
        app.history(channel, "").await.is_empty(),
        "nothing was stored"
    );
    client.post(&topic, good).await;
    eventually("the good post is stored", || async {
        app.history(channel, "").await.len() == 1
    })
    .await;
    assert_eq!(
        app.history(channel, "").await[0].id,
        1,
        "no id was used up by a refused post"
    );
}

/// Two chat-services share the post subscription; the second relays what it
/// takes to the first, as a shard that does not own the channel would through
/// the front. 200 posts: each is stored exactly once, ids 1 to 200.
pub async fn two_chat_services_sharing_the_subscription_store_each_post_once(app: TestApp) {
    let relay_dir = tempfile::tempdir().expect("temp dir");
    let flags = [
        "--mqtt-post-forward".to_string(),
        app.chat_url().to_string(),
    ];
    let relay = start_chat_service(&app.broker, &relay_dir, &app.prefix, "127.0.0.1:0", &flags);
    wait_for_ready(&app.http, &relay.url).await;

    let channel = new_channel();
    let topic = post_topic(&app, channel);
    let mut client = MqttClient::connect(&app.broker.url, &client_id("poster")).await;
    let sent: Vec<String> = (1..=200).map(|n| format!("post {n}")).collect();
    for text in &sent {
        client.post(&topic, post_json("dev", text)).await;
    }
    eventually("all 200 posts are stored", || async {
        app.history(channel, "?limit=1000").await.len() >= sent.len()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let history = app.history(channel, "?limit=1000").await;
    let ids: Vec<u64> = history.iter().map(|m| m.id).collect();
    assert_eq!(
        ids,
        (1..=200).collect::<Vec<u64>>(),
        "ids 1 to 200, once each"
    );
    let mut stored: Vec<String> = history.into_iter().map(|m| m.text).collect();
    stored.sort();
    let mut expected = sent.clone();
    expected.sort();
    assert_eq!(stored, expected, "every post once");
    let relayed_here = app
        .http
        .get(format!("{}/channels/{channel}/messages", relay.url))
        .send()
        .await
        .expect("history of the relay")
        .json::<serde_json::Value>()
        .await
        .expect("JSON");
    assert_eq!(
        relayed_here["messages"],
        json!([]),
        "the relaying chat-service stores nothing itself"
    );
}

/// A TCP relay between a chat-service and its broker that can stop passing
/// what the chat-service sends (its acknowledgements) while still passing
/// what the broker sends.
struct Cut {
    address: SocketAddr,
    hold_upstream: Arc<AtomicBool>,
}

impl Cut {
    async fn to(broker: SocketAddr) -> Cut {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let hold_upstream = Arc::new(AtomicBool::new(false));
        let hold = hold_upstream.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if let Ok(upstream) = TcpStream::connect(broker).await {
                    tokio::spawn(relay(client, upstream, hold.clone()));
                }
            }
        });
        Cut {
            address,
            hold_upstream,
        }
    }

    fn url(&self) -> String {
        format!("mqtt://{}", self.address)
    }

    fn hold_upstream(&self, hold: bool) {
        self.hold_upstream.store(hold, Ordering::SeqCst);
    }
}

/// Passes bytes both ways until either side closes; while held, bytes from
/// the client are dropped. Either side closing closes both.
async fn relay(client: TcpStream, upstream: TcpStream, hold: Arc<AtomicBool>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut upstream_read, mut upstream_write) = upstream.into_split();
    let up = async {
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            let read = client_read.read(&mut buffer).await.unwrap_or(0);
            if read == 0 {
                return;
            }
            if hold.load(Ordering::SeqCst) {
                continue;
            }
            if upstream_write.write_all(&buffer[..read]).await.is_err() {
                return;
            }
        }
    };
    let down = tokio::io::copy(&mut upstream_read, &mut client_write);
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

/// A chat-service stores a QoS 1 post, then is killed before its PUBACK reaches
/// the broker. The broker delivers the post again when it comes back: it is
/// recognised and not stored twice, and numbering goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qos_1_post_redelivered_after_a_kill_is_stored_once() {
    let Some(broker) = Broker::mosquitto() else {
        return;
    };
    let broker_address = broker.url.trim_start_matches("mqtt://").parse();
    let cut = Cut::to(broker_address.expect("broker address")).await;
    let through_cut = Broker::alias(cut.url());
    let dir = tempfile::tempdir().expect("temp dir");
    let prefix = format!("crier-test-{}", uuid::Uuid::new_v4().simple());
    let http = crate::helpers::http_client();
    let chat = start_chat_service(&through_cut, &dir, &prefix, "127.0.0.1:0", &[]);
    wait_for_ready(&http, &chat.url).await;

    let channel = new_channel();
    let topic = topic::post_topic(&prefix, channel);
    let history = |base: String| {
        let http = http.clone();
        async move {
            let url = format!("{base}/channels/{channel}/messages");
            let page: serde_json::Value = match http.get(url).send().await {
                Ok(response) => response.json().await.unwrap_or_default(),
                Err(_) => serde_json::Value::Null,
            };
            page["messages"].as_array().cloned().unwrap_or_default()
        }
    };
    cut.hold_upstream(true);
    let mut poster = MqttClient::connect(&broker.url, &client_id("poster")).await;
    poster.post(&topic, post_json("dev", "once")).await;
    eventually("the post is stored", || async {
        history(chat.url.clone()).await.len() == 1
    })
    .await;
    let address = chat.address().to_string();
    chat.kill();

    cut.hold_upstream(false);
    let chat = start_chat_service(&through_cut, &dir, &prefix, &address, &[]);
    wait_for_ready(&http, &chat.url).await;
    // The broker sends its unacknowledged post before anything newer.
    poster.post(&topic, post_json("dev", "next")).await;
    eventually("the next post is stored", || async {
        let stored = history(chat.url.clone()).await;
        stored.iter().any(|m| m["text"] == "next")
    })
    .await;
    let stored = history(chat.url.clone()).await;
    let stored: Vec<(u64, &str)> = stored
        .iter()
        .map(|m| {
            (
                m["id"].as_u64().unwrap_or(0),
                m["text"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        stored,
        [(1, "once"), (2, "next")],
        "stored once, then the next id"
    );
    assert!(
        chat.log_text().contains("already stored as id 1"),
        "the broker did deliver the post again; log:\n{}",
        chat.log_text()
    );
}

/// The all-in-one takes posts on its embedded broker, over TCP and over the
/// optional WebSocket listener, into the same numbering as REST posts.
#[tokio::test]
async fn crier_takes_mqtt_posts_over_tcp_and_websocket() {
    let dir = tempfile::tempdir().expect("temp dir");
    let tcp = free_address();
    let websocket = free_address();
    let flags = [
        "--listen".to_string(),
        "127.0.0.1:0".into(),
        "--data-dir".into(),
        dir.path().join("data").display().to_string(),
        "--embedded-broker-listen".into(),
        tcp.to_string(),
        "--embedded-broker-ws-listen".into(),
        websocket.to_string(),
    ];
    let crier = crate::process::Service::start(
        crate::helpers::CRIER,
        &flags,
        &dir.path().join("crier.log"),
    );
    let http = crate::helpers::http_client();
    wait_for_ready(&http, &crier.url).await;

    let channel = new_channel();
    let topic = topic::post_topic("crier", channel);
    mosquitto_pub(
        &format!("mqtt://{tcp}"),
        &topic,
        &post_json("dev", "over tcp"),
    )
    .await;
    let mut options = MqttOptions::new(
        client_id("ws"),
        format!("ws://{websocket}/mqtt"),
        websocket.port(),
    );
    options.set_transport(rumqttc::Transport::Ws);
    let mut client = MqttClient::connect_with(options).await;
    client
        .post(&topic, post_json("web", "over websocket"))
        .await;

    let url = format!("{}/channels/{channel}/messages", crier.url);
    let stored = || async {
        let page: serde_json::Value = match http.get(&url).send().await {
            Ok(response) => response.json().await.unwrap_or_default(),
            Err(_) => serde_json::Value::Null,
        };
        page["messages"].as_array().cloned().unwrap_or_default()
    };
    eventually("both posts are stored", || async {
        stored().await.len() == 2
    })
    .await;
    let texts: Vec<String> = stored()
        .await
        .iter()
        .map(|m| format!("{} {}", m["id"], m["text"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(texts, ["1 over tcp", "2 over websocket"]);
}

fn free_address() -> SocketAddr {
    ([127, 0, 0, 1], crate::broker::free_port()).into()
}

/// With the ACL Crier ships, `crier_mqtt_poster` posts and reads refusals, but
/// a message it publishes as if stored never reaches a stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_poster_acl_lets_a_client_post_but_not_forge_a_stored_message() {
    let users = [
        ("crier", "crier-secret"),
        ("crier_mqtt_poster", "poster-secret"),
    ];
    let Some(broker) = Broker::mosquitto_with_users(&users) else {
        return;
    };
    let poster_url = broker
        .url
        .replace("crier:crier-secret@", "crier_mqtt_poster:poster-secret@");
    let app = TestApp::with_prefix(broker, "crier").await;
    let channel = new_channel();
    let mut stream = app.open_stream(channel, None).await;
    let mut poster = MqttClient::connect(&poster_url, &client_id("poster")).await;
    poster.subscribe("crier/errors").await;
    let topic = post_topic(&app, channel);

    poster.post(&topic, post_json("dev", "first")).await;
    let forged = json!({"id": 2, "channel": channel.to_string(), "author": "dev",
        "text": "forged", "ts": "2026-01-01T00:00:00.000Z"});
    let messages = topic::channel_topic("crier", channel);
    poster.post(&messages, forged.to_string()).await;
    poster.post(&topic, post_json("dev", "second")).await;
    for (id, text) in [(1, "first"), (2, "second")] {
        let message = stream.next_message().await;
        assert_eq!((message.id, message.text.as_str()), (id, text));
    }

    poster.post(&topic, r#"{"author":"dev"}"#).await;
    let report = poster.next_publish().await;
    let report: serde_json::Value = serde_json::from_slice(&report.payload).expect("JSON");
    assert_eq!(report["error"]["code"], "invalid_text");
}
