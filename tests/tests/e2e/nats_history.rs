//! History and bus on a real 3-node NATS JetStream cluster: two
//! chat-services posting to the same channels, broadcast-sse nodes on the
//! cluster's MQTT listeners, and nats-server nodes and chat-services killed
//! (`SIGKILL`) and paused (`SIGSTOP`) for real.

use std::collections::BTreeMap;
use std::time::Duration;

use protocol::{ChannelId, Message};
use reqwest::StatusCode;
use serde_json::json;
use tempfile::TempDir;

use crate::helpers::{
    BROADCAST_SSE, CHAT_SERVICE, EventStream, MIGRATE, http_client, new_channel, open_stream,
    wait_for_ready,
};
use crate::nats::NatsCluster;
use crate::process::Service;

const PREFIX: &str = "crier";
/// How often a post is tried before a test gives up on it (each `503` or
/// refused connection waits a little: a node is dying or electing).
const POST_ATTEMPTS: usize = 100;
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// A cluster, the chat-services on it, and broadcast-sse nodes on its MQTT
/// listeners (node `i` on nats node `i`, history from chat-service `i % 2`).
struct Deployment {
    nats: NatsCluster,
    chats: Vec<Option<Service>>,
    nodes: Vec<Service>,
    dir: TempDir,
    http: reqwest::Client,
}

impl Deployment {
    /// `None` when nats-server is missing and not required.
    async fn start(chats: usize, nodes: usize) -> Option<Deployment> {
        let nats = NatsCluster::start(3)?;
        Some(Deployment::on(nats, chats, nodes).await)
    }

    /// Chat-services and nodes on a running cluster.
    async fn on(nats: NatsCluster, chats: usize, nodes: usize) -> Deployment {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut deployment = Deployment {
            nats,
            chats: Vec::new(),
            nodes: Vec::new(),
            dir,
            http: http_client(),
        };
        for index in 0..chats {
            let chat = deployment.start_chat(index);
            deployment.chats.push(Some(chat));
        }
        for index in 0..nodes {
            let history = deployment.chat_url(index % chats);
            let node = deployment.start_node(index, &history);
            deployment.nodes.push(node);
        }
        for url in deployment.urls() {
            wait_for_ready(&deployment.http, &url).await;
        }
        deployment
    }

    fn start_chat(&self, index: usize) -> Service {
        let args: Vec<String> = vec![
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--nats-url".into(),
            self.nats.client_urls(),
            "--mqtt-url".into(),
            self.nats.mqtt_url(index % 3),
            "--topic-prefix".into(),
            PREFIX.into(),
            "--data-dir".into(),
            self.dir
                .path()
                .join(format!("chat-{index}"))
                .display()
                .to_string(),
            "--post-rate-per-sec".into(),
            "0".into(),
        ];
        let log = self.dir.path().join(format!("chat-{index}.log"));
        Service::start(CHAT_SERVICE, &args, &log)
    }

    fn start_node(&self, index: usize, history: &str) -> Service {
        let args: Vec<String> = vec![
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--mqtt-url".into(),
            self.nats.mqtt_url(index % 3),
            "--topic-prefix".into(),
            PREFIX.into(),
            "--history-url".into(),
            history.into(),
        ];
        let log = self.dir.path().join(format!("node-{index}.log"));
        Service::start(BROADCAST_SSE, &args, &log)
    }

    fn chat_url(&self, index: usize) -> String {
        self.chats[index]
            .as_ref()
            .expect("chat-service running")
            .url
            .clone()
    }

    fn urls(&self) -> Vec<String> {
        let chats = self.chats.iter().flatten().map(|chat| chat.url.clone());
        chats
            .chain(self.nodes.iter().map(|node| node.url.clone()))
            .collect()
    }

    /// Posts through chat-service `chat` until it is acknowledged, retrying
    /// with the same idempotency key through `503`s and refused connections.
    async fn post(&self, chat: usize, channel: ChannelId, text: &str) -> Message {
        let url = format!("{}/channels/{channel}/messages", self.chat_url(chat));
        post_until_stored(&self.http, &url, text).await
    }

    /// The channel's whole log, page by page.
    async fn history(&self, chat: usize, channel: ChannelId) -> Vec<Message> {
        let mut log: Vec<Message> = Vec::new();
        loop {
            let after = log.last().map_or(0, |message| message.id);
            let url = format!(
                "{}/channels/{channel}/messages?after={after}&limit=1000&raw=1",
                self.chat_url(chat)
            );
            let response = self.http.get(url).send().await.expect("history answers");
            assert_eq!(response.status(), StatusCode::OK, "history answers 200");
            let page: serde_json::Value = response.json().await.expect("history JSON");
            let page: Vec<Message> =
                serde_json::from_value(page["messages"].clone()).expect("a page of messages");
            if page.is_empty() {
                return log;
            }
            log.extend(page);
        }
    }

    async fn stream(&self, node: usize, channel: ChannelId) -> EventStream {
        open_stream(&self.http, &self.nodes[node].url, channel, Some(0)).await
    }
}

/// Posts `text` to `url` until stored: `503` and a refused or broken
/// connection are tried again, with the same `Idempotency-Key`, so a post
/// stored before its answer was lost is not stored twice.
async fn post_until_stored(http: &reqwest::Client, url: &str, text: &str) -> Message {
    let key = uuid::Uuid::new_v4().to_string();
    for _ in 0..POST_ATTEMPTS {
        let sent = http
            .post(url)
            .header("Idempotency-Key", &key)
            .json(&json!({"author": "ann", "text": text}))
            .timeout(Duration::from_secs(15))
            .send()
            .await;
        match sent {
            Ok(response) if response.status() == StatusCode::CREATED => {
                return response.json().await.expect("a stored message");
            }
            Ok(response) if response.status() == StatusCode::SERVICE_UNAVAILABLE => {}
            Ok(response) => panic!(
                "{text:?}: unexpected {} {}",
                response.status(),
                response.text().await.unwrap_or_default()
            ),
            Err(_) => {}
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
    panic!("{text:?} was not stored in {POST_ATTEMPTS} attempts");
}

/// Every channel's history is ids 1..=n with no gap, holding each posted text
/// exactly once.
fn assert_gap_free(channel: ChannelId, history: &[Message], posted: &[String]) {
    let ids: Vec<u64> = history.iter().map(|message| message.id).collect();
    let expected: Vec<u64> = (1..=posted.len() as u64).collect();
    assert_eq!(ids, expected, "channel {channel}: ids 1..=n, no gap");
    let mut stored: Vec<&str> = history.iter().map(|m| m.text.as_str()).collect();
    let mut wanted: Vec<&str> = posted.iter().map(String::as_str).collect();
    stored.sort_unstable();
    wanted.sort_unstable();
    assert_eq!(stored, wanted, "channel {channel}: each post stored once");
}

/// A stream gets `history`, each entry once, in id order.
async fn assert_stream_gets(stream: &mut EventStream, history: &[Message]) {
    for expected in history {
        let message = stream.next_message().await;
        assert_eq!(
            (message.id, &message.text),
            (expected.id, &expected.text),
            "the stream has every message once, in order"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_chat_services_post_to_the_same_channels_without_gaps_or_duplicates() {
    let Some(deployment) = Deployment::start(2, 3).await else {
        return;
    };
    let channels: Vec<ChannelId> = (0..20).map(|_| new_channel()).collect();
    let mut streams = Vec::new();
    for &channel in &channels {
        for node in 0..3 {
            streams.push((channel, deployment.stream(node, channel).await));
        }
    }
    let mut posters = tokio::task::JoinSet::new();
    let mut posted: BTreeMap<ChannelId, Vec<String>> = BTreeMap::new();
    for &channel in &channels {
        for chat in 0..2 {
            let texts: Vec<String> = (0..5)
                .map(|n| format!("{channel} chat-{chat} #{n}"))
                .collect();
            posted.entry(channel).or_default().extend(texts.clone());
            let url = format!("{}/channels/{channel}/messages", deployment.chat_url(chat));
            let http = deployment.http.clone();
            posters.spawn(async move {
                for text in texts {
                    post_until_stored(&http, &url, &text).await;
                }
            });
        }
    }
    while let Some(done) = posters.join_next().await {
        done.expect("a poster finishes");
    }
    for &channel in &channels {
        let history = deployment.history(0, channel).await;
        assert_gap_free(channel, &history, &posted[&channel]);
        assert_eq!(
            deployment.history(1, channel).await,
            history,
            "both chat-services read the same history"
        );
    }
    for (channel, stream) in &mut streams {
        let history = deployment.history(0, *channel).await;
        assert_stream_gets(stream, &history).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_or_paused_nats_node_loses_no_acknowledged_post() {
    let Some(mut deployment) = Deployment::start(2, 3).await else {
        return;
    };
    let channel = new_channel();
    let mut posted = Vec::new();
    let mut streams = Vec::new();
    for node in 0..3 {
        streams.push(deployment.stream(node, channel).await);
    }
    let leader = deployment
        .nats
        .stream_leader("CRIER")
        .expect("the stream has a leader");
    let order = [leader, (leader + 1) % 3, (leader + 2) % 3];
    for (round, &victim) in order.iter().enumerate() {
        post_some(
            &deployment,
            channel,
            &mut posted,
            &format!("before kill {round}"),
            5,
        )
        .await;
        deployment.nats.kill(victim);
        post_some(
            &deployment,
            channel,
            &mut posted,
            &format!("during kill {round}"),
            10,
        )
        .await;
        deployment.nats.restart(victim);
        post_some(
            &deployment,
            channel,
            &mut posted,
            &format!("after kill {round}"),
            5,
        )
        .await;
    }
    let paused = deployment.nats.stream_leader("CRIER").expect("a leader");
    deployment.nats.pause(paused);
    let paused_at = std::time::Instant::now();
    let mut n = 0;
    while paused_at.elapsed() < Duration::from_secs(10) {
        post_some(&deployment, channel, &mut posted, &format!("paused {n}"), 1).await;
        n += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    deployment.nats.resume(paused);
    post_some(&deployment, channel, &mut posted, "after pause", 5).await;

    let history = deployment.history(0, channel).await;
    assert_gap_free(channel, &history, &posted);
    // A node whose nats-server was paused, or cut off from the others, may
    // have missed messages without its MQTT connection dropping: the next
    // message shows the gap and it backfills from history. So once the
    // cluster is whole, one more message must bring every stream up to date.
    deployment.nats.wait_until_whole();
    post_some(&deployment, channel, &mut posted, "last", 1).await;
    let history = deployment.history(0, channel).await;
    assert_gap_free(channel, &history, &posted);
    for stream in &mut streams {
        assert_stream_gets(stream, &history).await;
    }
}

/// Posts `count` texts through the chat-services in turn, each until stored.
async fn post_some(
    deployment: &Deployment,
    channel: ChannelId,
    posted: &mut Vec<String>,
    label: &str,
    count: usize,
) {
    for n in 0..count {
        let text = format!("{label} #{n}");
        deployment.post(n % 2, channel, &text).await;
        posted.push(text);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_chat_service_leaves_every_channel_served_by_the_other() {
    let Some(mut deployment) = Deployment::start(2, 2).await else {
        return;
    };
    let channels: Vec<ChannelId> = (0..10).map(|_| new_channel()).collect();
    let mut posted: BTreeMap<ChannelId, Vec<String>> = BTreeMap::new();
    for &channel in &channels {
        let text = format!("{channel} first");
        deployment.post(0, channel, &text).await;
        posted.entry(channel).or_default().push(text);
    }
    deployment.chats[0].take().expect("chat-0").kill();
    for &channel in &channels {
        let text = format!("{channel} while chat-0 is dead");
        let url = format!("{}/channels/{channel}/messages", deployment.chat_url(1));
        let response = deployment
            .http
            .post(url)
            .json(&json!({"author": "ann", "text": text}))
            .send()
            .await
            .expect("chat-1 answers");
        assert_eq!(
            response.status(),
            StatusCode::CREATED,
            "chat-1 serves {channel}"
        );
        posted.get_mut(&channel).expect("posted").push(text);
    }
    let restarted = deployment.start_chat(0);
    wait_for_ready(&deployment.http, &restarted.url).await;
    deployment.chats[0] = Some(restarted);
    for &channel in &channels {
        let text = format!("{channel} after the restart");
        deployment.post(0, channel, &text).await;
        posted.get_mut(&channel).expect("posted").push(text);
        let history = deployment.history(0, channel).await;
        assert_gap_free(channel, &history, &posted[&channel]);
    }
    // Node 1 reads history from chat-1, which lived through it all.
    let channel = channels[0];
    let mut stream = deployment.stream(1, channel).await;
    let history = deployment.history(1, channel).await;
    assert_stream_gets(&mut stream, &history).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_nats_cannot_do_yet_is_refused_with_a_clear_error() {
    let Some(deployment) = Deployment::start(1, 0).await else {
        return;
    };
    let channel = new_channel();
    let stored = deployment.post(0, channel, "hello").await;
    let url = format!(
        "{}/channels/{channel}/messages/{}?author=ann",
        deployment.chat_url(0),
        stored.id
    );
    let response = deployment.http.delete(url).send().await.expect("answers");
    assert_eq!(response.status(), StatusCode::NOT_IMPLEMENTED);
    let (_, error) = crate::helpers::error_of(response).await;
    assert_eq!(error.error.code, "not_available_with_nats");
    let history = deployment.history(0, channel).await;
    assert_eq!(
        history,
        vec![stored],
        "the refused deletion changed nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_posts_wait_in_the_cluster_while_every_chat_service_is_down() {
    let Some(mosquitto_pub) = crate::broker::required_sbin("mosquitto_pub") else {
        return;
    };
    let Some(mut deployment) = Deployment::start(2, 0).await else {
        return;
    };
    let channel = new_channel();
    for chat in &mut deployment.chats {
        chat.take().expect("a chat-service").kill();
    }
    let topic = format!("{PREFIX}/channels/{channel}/post");
    let port = deployment
        .nats
        .mqtt_url(2)
        .rsplit(':')
        .next()
        .expect("a port")
        .to_string();
    let texts: Vec<String> = (0..5).map(|n| format!("offline #{n}")).collect();
    for text in &texts {
        let payload = json!({"author": "device", "text": text}).to_string();
        let status = std::process::Command::new(&mosquitto_pub)
            .args(["-h", "127.0.0.1", "-p", &port, "-V", "mqttv311", "-q", "1"])
            .args(["-i", "crier-test-device", "-t", &topic, "-m", &payload])
            .status()
            .expect("mosquitto_pub runs");
        assert!(
            status.success(),
            "mosquitto_pub publishes through nats-server"
        );
    }
    let chat = deployment.start_chat(0);
    wait_for_ready(&deployment.http, &chat.url).await;
    deployment.chats[0] = Some(chat);
    let history_of = || deployment.history(0, channel);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut history = history_of().await;
    while history.len() < texts.len() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        history = history_of().await;
    }
    assert_gap_free(channel, &history, &texts);
    let ordered: Vec<&str> = history.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(
        ordered,
        texts.iter().map(String::as_str).collect::<Vec<_>>(),
        "in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crier_migrate_copies_a_sled_directory_keeping_ids_and_keys() {
    let Some(nats) = NatsCluster::start(3) else {
        return;
    };
    let http = http_client();
    let sled_dir = tempfile::tempdir().expect("temp dir");
    let data_dir = sled_dir.path().join("history").display().to_string();
    let args: Vec<String> = [
        "--listen",
        "127.0.0.1:0",
        "--mqtt-url",
        &nats.mqtt_url(0),
        "--mqtt-posts",
        "false",
        "--data-dir",
        &data_dir,
        "--post-rate-per-sec",
        "0",
    ]
    .map(String::from)
    .to_vec();
    let sled = Service::start(CHAT_SERVICE, &args, &sled_dir.path().join("sled.log"));
    wait_for_ready(&http, &sled.url).await;
    let channels: Vec<ChannelId> = (0..200).map(|_| new_channel()).collect();
    let mut posters = tokio::task::JoinSet::new();
    for &channel in &channels {
        let url = format!("{}/channels/{channel}/messages", sled.url);
        let http = http.clone();
        posters.spawn(async move {
            for n in 1..=3 {
                let response = http
                    .post(&url)
                    .header("Idempotency-Key", format!("key-{n}"))
                    .json(&json!({"author": "ann", "text": format!("{channel} #{n}")}))
                    .send()
                    .await
                    .expect("the sled chat-service answers");
                assert_eq!(response.status(), StatusCode::CREATED);
            }
        });
    }
    while let Some(done) = posters.join_next().await {
        done.expect("a poster finishes");
    }
    let mut before = BTreeMap::new();
    for &channel in &channels {
        before.insert(channel, raw_page(&http, &sled.url, channel).await);
    }
    sled.kill();

    let migrate = |expected: &'static str| {
        let output = std::process::Command::new(MIGRATE)
            .args(["--data-dir", &data_dir, "--nats-url", &nats.client_urls()])
            .output()
            .expect("crier-migrate runs");
        let printed = String::from_utf8_lossy(&output.stdout).to_string();
        assert!(
            output.status.success(),
            "crier-migrate succeeds: {printed} {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(printed.contains(expected), "{printed:?} says {expected:?}");
    };
    migrate("copied 600 entries of 200 channels");
    migrate("copied 0 entries of 200 channels into CRIER (600 were there already)");

    let deployment = Deployment::on(nats, 1, 1).await;
    for &channel in &channels {
        let page = raw_page(&deployment.http, &deployment.chat_url(0), channel).await;
        assert_eq!(page, before[&channel], "channel {channel} is as it was");
    }
    let channel = channels[0];
    let retried = deployment
        .http
        .post(format!(
            "{}/channels/{channel}/messages",
            deployment.chat_url(0)
        ))
        .header("Idempotency-Key", "key-2")
        .json(&json!({"author": "ann", "text": "retried"}))
        .send()
        .await
        .expect("answers");
    assert_eq!(
        retried.headers()["Idempotent-Replayed"],
        "true",
        "the copied key is known"
    );
    let retried: Message = retried.json().await.expect("a message");
    assert_eq!(retried.id, 2, "a retry answers the copied message");

    let mut stream =
        open_stream(&deployment.http, &deployment.nodes[0].url, channel, Some(1)).await;
    let next = deployment.post(0, channel, "after the move").await;
    assert_eq!(next.id, 4, "ids go on where the sled store stopped");
    assert_eq!(
        stream.next_ids(3).await,
        vec![2, 3, 4],
        "a resumed stream gets exactly what follows"
    );
}

/// The latest page of the channel's log as written, as JSON.
async fn raw_page(http: &reqwest::Client, base: &str, channel: ChannelId) -> serde_json::Value {
    let url = format!("{base}/channels/{channel}/messages?raw=1");
    let page: serde_json::Value = http
        .get(url)
        .send()
        .await
        .expect("history answers")
        .json()
        .await
        .expect("history JSON");
    page["messages"].clone()
}
