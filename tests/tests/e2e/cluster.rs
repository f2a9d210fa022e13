//! The cluster of `deploy/local-cluster.sh` (two bridged Mosquittos, two
//! chat-service shards, three broadcast-sse nodes, nginx in front), through
//! its front: routing, streams across brokers, a killed node, a killed shard,
//! and presence summed over the nodes.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::process::Command;

use protocol::{ChannelId, Message};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::broker::{REQUIRE_EXTERNAL, find_sbin};
use crate::helpers::{
    BROADCAST_SSE, CHAT_SERVICE, EventStream, eventually, http_client, new_channel,
};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/local-cluster.sh");

/// A running cluster, brought down when dropped.
struct Cluster {
    dir: TempDir,
    front: String,
    http: reqwest::Client,
}

impl Cluster {
    /// `None` when Mosquitto or nginx is missing and not required.
    fn up() -> Option<Cluster> {
        let missing: Vec<&str> = ["mosquitto", "nginx"]
            .into_iter()
            .filter(|tool| find_sbin(tool).is_none())
            .collect();
        if !missing.is_empty() {
            assert!(
                std::env::var(REQUIRE_EXTERNAL).as_deref() != Ok("1"),
                "{missing:?} required ({REQUIRE_EXTERNAL}=1) but not installed"
            );
            eprintln!("skipping: {missing:?} not installed");
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let output = script(dir.path(), &["up"]);
        let front = output
            .lines()
            .find_map(|line| line.strip_prefix("front: "))
            .unwrap_or_else(|| panic!("no front line in: {output}"))
            .to_string();
        Some(Cluster {
            dir,
            front,
            http: http_client(),
        })
    }

    /// name → (pid, port) of every process `up` started.
    fn processes(&self) -> HashMap<String, (u32, u16)> {
        let text = std::fs::read_to_string(self.dir.path().join("processes")).expect("processes");
        text.lines()
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let name = fields.next()?.to_string();
                let pid = fields.next()?.parse().ok()?;
                let port = fields.next()?.parse().ok()?;
                Some((name, (pid, port)))
            })
            .collect()
    }

    fn url_of(&self, name: &str) -> String {
        let (_, port) = self.processes()[name];
        format!("http://127.0.0.1:{port}")
    }

    fn kill_9(&self, name: &str) {
        let (pid, _) = self.processes()[name];
        let killed = Command::new("kill").args(["-9", &pid.to_string()]).status();
        assert!(
            killed.is_ok_and(|status| status.success()),
            "kill -9 {name}"
        );
    }

    fn restart(&self, name: &str) {
        script(self.dir.path(), &["restart", name]);
    }

    async fn post(&self, channel: ChannelId, text: &str) -> reqwest::Response {
        self.http
            .post(format!("{}/channels/{channel}/messages", self.front))
            .json(&json!({"author": "ann", "text": text}))
            .send()
            .await
            .expect("POST through the front")
    }

    async fn posted(&self, channel: ChannelId, text: &str) -> Message {
        let response = self.post(channel, text).await;
        assert_eq!(response.status(), StatusCode::CREATED, "POST {text}");
        response.json().await.expect("the stored message")
    }

    async fn stream(&self, base: &str, channel: ChannelId, query: &str) -> EventStream {
        let url = format!("{base}/channels/{channel}/events?{query}");
        EventStream::from_request(self.http.get(url)).await
    }

    async fn get_json(&self, url: impl reqwest::IntoUrl) -> Value {
        let response = self.http.get(url).send().await.expect("GET");
        response.json().await.expect("JSON")
    }

    /// The messages a shard holds of a channel, asked of the shard directly.
    async fn held_by(&self, shard: &str, channel: ChannelId) -> usize {
        let url = format!("{}/channels/{channel}/messages", self.url_of(shard));
        let page: Value = self.get_json(url).await;
        page["messages"].as_array().map_or(0, Vec::len)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(SCRIPT)
            .arg("down")
            .env("CRIER_CLUSTER_DIR", self.dir.path())
            .output();
    }
}

fn script(dir: &Path, args: &[&str]) -> String {
    let output = Command::new(SCRIPT)
        .args(args)
        .env("CRIER_CLUSTER_DIR", dir)
        .env("CRIER_CHAT_SERVICE", CHAT_SERVICE)
        .env("CRIER_BROADCAST_SSE", BROADCAST_SSE)
        .output()
        .expect("run deploy/local-cluster.sh");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "local-cluster.sh {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// One cluster for the whole scenario (starting one takes a few seconds):
/// each step is one of the properties a scaled-out Crier must keep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_behind_its_front_routes_streams_survives_kills_and_sums_presence() {
    let Some(cluster) = Cluster::up() else {
        return;
    };
    routes_channels_to_both_shards_and_streams_each_message_once(&cluster).await;
    nodes_on_either_broker_receive_everything(&cluster).await;
    a_killed_node_clients_resume_through_the_front(&cluster).await;
    presence_and_stats_sum_over_the_nodes(&cluster).await;
    a_killed_shard_refuses_its_channels_only_and_numbering_continues(&cluster).await;
}

/// 20 channels through the front: each lives on exactly one shard and both
/// shards hold some; three streams per channel each get ids 1 to 3 once, in
/// order.
async fn routes_channels_to_both_shards_and_streams_each_message_once(cluster: &Cluster) {
    let channels: Vec<ChannelId> = (0..20).map(|_| new_channel()).collect();
    let mut streams = Vec::new();
    for channel in &channels {
        for _ in 0..3 {
            streams.push((*channel, cluster.stream(&cluster.front, *channel, "").await));
        }
    }
    for channel in &channels {
        for n in 1..=3 {
            let message = cluster.posted(*channel, &format!("#{n}")).await;
            assert_eq!(message.id, n, "numbered by one owner");
        }
    }
    for (channel, stream) in &mut streams {
        assert_eq!(stream.next_ids(3).await, [1, 2, 3], "{channel}");
        stream
            .expect_no_message_within(std::time::Duration::from_millis(200))
            .await;
    }
    let mut per_shard = HashMap::new();
    for channel in &channels {
        let held = [
            cluster.held_by("shard-1", *channel).await,
            cluster.held_by("shard-2", *channel).await,
        ];
        assert!(
            held == [3, 0] || held == [0, 3],
            "{channel} on one shard: {held:?}"
        );
        *per_shard.entry(held[0] == 3).or_insert(0) += 1;
    }
    assert_eq!(
        per_shard.len(),
        2,
        "both shards own channels: {per_shard:?}"
    );
}

/// node-1 follows broker A, node-3 broker B (bridged): both get everything.
async fn nodes_on_either_broker_receive_everything(cluster: &Cluster) {
    let channel = new_channel();
    let mut on_a = cluster.stream(&cluster.url_of("node-1"), channel, "").await;
    let mut on_b = cluster.stream(&cluster.url_of("node-3"), channel, "").await;
    for n in 1..=5 {
        cluster.posted(channel, &format!("#{n}")).await;
    }
    assert_eq!(on_a.next_ids(5).await, [1, 2, 3, 4, 5]);
    assert_eq!(on_b.next_ids(5).await, [1, 2, 3, 4, 5]);
}

/// A client of node-2 reads 1..3; node-2 is killed; 4..6 are posted; the
/// client reconnects through the front with its Last-Event-ID and gets 4..6.
async fn a_killed_node_clients_resume_through_the_front(cluster: &Cluster) {
    let channel = new_channel();
    let mut stream = cluster.stream(&cluster.url_of("node-2"), channel, "").await;
    for n in 1..=3 {
        cluster.posted(channel, &format!("#{n}")).await;
    }
    assert_eq!(stream.next_ids(3).await, [1, 2, 3]);
    cluster.kill_9("node-2");
    stream.expect_end().await;
    for n in 4..=6 {
        cluster.posted(channel, &format!("#{n}")).await;
    }
    let url = format!("{}/channels/{channel}/events", cluster.front);
    let request = cluster.http.get(url).header("Last-Event-ID", "3");
    let mut resumed = EventStream::from_request(request).await;
    assert_eq!(resumed.next_ids(3).await, [4, 5, 6]);
    resumed
        .expect_no_message_within(std::time::Duration::from_millis(300))
        .await;
    cluster.restart("node-2");
}

/// Names on node-1 and node-3 are listed once through the front; stats count
/// every stream.
async fn presence_and_stats_sum_over_the_nodes(cluster: &Cluster) {
    let channel = new_channel();
    let _ann = cluster
        .stream(&cluster.url_of("node-1"), channel, "name=ann")
        .await;
    let _bob = cluster
        .stream(&cluster.url_of("node-3"), channel, "name=bob")
        .await;
    let _ann_again = cluster
        .stream(&cluster.url_of("node-3"), channel, "name=ann")
        .await;
    let presence_url = format!("{}/channels/{channel}/presence", cluster.front);
    eventually("presence sums the nodes", || async {
        let presence: Value = match cluster.http.get(&presence_url).send().await {
            Ok(response) => response.json().await.unwrap_or_default(),
            Err(_) => Value::Null,
        };
        presence["subscribers"] == 3
    })
    .await;
    let presence: Value = cluster.get_json(&presence_url).await;
    let names: BTreeSet<&str> = presence["names"]
        .as_array()
        .map(|names| names.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert_eq!(names, BTreeSet::from(["ann", "bob"]));
    let stats_url = format!("{}/channels/{channel}/stats", cluster.front);
    let stats: Value = cluster.get_json(stats_url).await;
    assert_eq!(stats["subscribers"], 3);
}

/// The owner of a channel is killed: its posts get a JSON 503 at the front
/// and never land on the other shard, whose channels keep working; once it
/// is back, numbering continues with no gap.
async fn a_killed_shard_refuses_its_channels_only_and_numbering_continues(cluster: &Cluster) {
    let (mut on_first, mut on_second) = (None, None);
    for _ in 0..64 {
        let channel = new_channel();
        cluster.posted(channel, "#1").await;
        if cluster.held_by("shard-1", channel).await == 1 {
            on_first.get_or_insert(channel);
        } else {
            on_second.get_or_insert(channel);
        }
        if on_first.is_some() && on_second.is_some() {
            break;
        }
    }
    let (owned, other) = (
        on_first.expect("a channel of shard-1"),
        on_second.expect("a channel of shard-2"),
    );
    cluster.kill_9("shard-1");
    let refused = cluster.post(owned, "while down").await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = refused.json().await.expect("a JSON error");
    assert_eq!(body["error"]["code"], "unavailable");
    assert_eq!(
        cluster.held_by("shard-2", owned).await,
        0,
        "never on the other shard"
    );
    assert_eq!(
        cluster.posted(other, "#2").await.id,
        2,
        "the other shard works"
    );
    cluster.restart("shard-1");
    assert_eq!(cluster.posted(owned, "#2").await.id, 2, "numbering goes on");
}
