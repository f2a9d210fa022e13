//! A nats-server cluster for the tests of the NATS JetStream mode: every node is
//! both an MQTT broker (its MQTT listener) and a JetStream server, with
//! `sync_interval: always`, so the cluster holds a replicated (R3) history. A
//! test can kill, restart, pause and resume a node, and ask which node leads a
//! stream.
//!
//! nats-server is found through `CRIER_NATS_SERVER`, else on `PATH`; without
//! it the tests skip, unless `CRIER_REQUIRE_EXTERNAL=1`.
//!
//! Every method blocks the calling thread while it waits (up to 30 s): call
//! them from `#[tokio::test(flavor = "multi_thread")]` tests, like the broker
//! processes of `broker.rs`.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, Incoming, QoS, SubscribeReasonCode};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::sync::mpsc;

use crate::broker::{REQUIRE_EXTERNAL, find_sbin, free_port};

/// The nats-server binary, when it is not `nats-server` on `PATH`.
pub const NATS_SERVER: &str = "CRIER_NATS_SERVER";

/// How long a node may take to become healthy, after a start or a restart.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a monitoring request may take (a paused node never answers).
const HTTP_TIMEOUT: Duration = Duration::from_secs(2);
/// Lines of a node's log shown when it fails.
const LOG_TAIL_LINES: usize = 40;
/// Starts tried when a node finds one of its ports taken.
const START_ATTEMPTS: usize = 3;

/// nats-server nodes on free loopback ports, in one cluster named `crier`.
/// Node `i` (0-based) is the server named `nats-i`, with its JetStream store in
/// `<temp dir>/nats-i` and its log in `<temp dir>/nats-i.log`. Dropping it
/// kills every node and removes the temp dir.
pub struct NatsCluster {
    binary: PathBuf,
    nodes: Vec<Node>,
    /// Configs, stores and logs; removed after the nodes are killed.
    _dir: TempDir,
}

struct Node {
    name: String,
    client_port: u16,
    mqtt_port: u16,
    http_port: u16,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    paused: AtomicBool,
}

impl NatsCluster {
    /// Starts `nodes` nodes and waits until each is healthy and they have a
    /// JetStream meta leader, so that a test can create an R3 stream at once.
    /// `None` when nats-server is not installed and not required.
    pub fn start(nodes: usize) -> Option<NatsCluster> {
        assert!(nodes >= 1, "a cluster has at least one node");
        let binary = nats_server()?;
        // A port found free can be taken before the node binds it: then
        // start again on other ports.
        for _ in 1..START_ATTEMPTS {
            match NatsCluster::launch(&binary, nodes) {
                Ok(cluster) => return Some(cluster),
                Err(clash) => eprintln!("starting nats-server again on other ports: {clash}"),
            }
        }
        Some(NatsCluster::launch(&binary, nodes).unwrap_or_else(|clash| panic!("{clash}")))
    }

    /// Starts the nodes on new ports and waits until they are healthy; `Err`
    /// when a node found one of its ports taken (the cluster is dropped).
    fn launch(binary: &Path, nodes: usize) -> Result<NatsCluster, String> {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut taken = HashSet::new();
        let ports: Vec<[u16; 4]> = (0..nodes)
            .map(|_| [(); 4].map(|()| node_port(&mut taken)))
            .collect();
        let routes: Vec<String> = ports
            .iter()
            .map(|[_, cluster, _, _]| format!("nats-route://127.0.0.1:{cluster}"))
            .collect();
        let nodes = ports
            .iter()
            .enumerate()
            .map(|(index, &[client, cluster, mqtt, http])| {
                let name = format!("nats-{index}");
                let store = dir.path().join(&name);
                let mut config = format!(
                    "server_name: {name}\n\
                     listen: 127.0.0.1:{client}\n\
                     http: 127.0.0.1:{http}\n\
                     jetstream {{\n    store_dir: {store:?}\n    sync_interval: always\n}}\n\
                     mqtt {{\n    listen: 127.0.0.1:{mqtt}\n}}\n",
                );
                // One node alone is a plain JetStream server: a cluster of one
                // would wait for peers that never come.
                if nodes > 1 {
                    config.push_str(&format!(
                        "cluster {{\n    name: crier\n    listen: 127.0.0.1:{cluster}\n    \
                         routes: [\n        {}\n    ]\n}}\n",
                        routes.join("\n        ")
                    ));
                }
                let config_path = dir.path().join(format!("{name}.conf"));
                std::fs::write(&config_path, config).expect("write the node's config");
                Node {
                    log: dir.path().join(format!("{name}.log")),
                    name,
                    client_port: client,
                    mqtt_port: mqtt,
                    http_port: http,
                    config: config_path,
                    child: None,
                    paused: AtomicBool::new(false),
                }
            })
            .collect();
        // Built before anything starts, so that when a node fails to come up
        // (a panic or an `Err`) the drop kills every node started.
        let mut cluster = NatsCluster {
            binary: binary.to_path_buf(),
            nodes,
            _dir: dir,
        };
        for node in 0..cluster.nodes.len() {
            cluster.spawn(node);
        }
        for node in 0..cluster.nodes.len() {
            match cluster.wait_until_healthy(node, true) {
                Ok(()) => {}
                Err(failure) if failure.port_taken => return Err(failure.message),
                Err(failure) => panic!("{}", failure.message),
            }
        }
        Ok(cluster)
    }

    /// Every node's client URL, comma-separated: `nats://127.0.0.1:P,...`.
    pub fn client_urls(&self) -> String {
        (0..self.nodes.len())
            .map(|node| self.client_url(node))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A node's client URL, `nats://127.0.0.1:P`.
    pub fn client_url(&self, node: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[node].client_port)
    }

    /// A node's MQTT listener, `mqtt://127.0.0.1:P`.
    pub fn mqtt_url(&self, node: usize) -> String {
        format!("mqtt://127.0.0.1:{}", self.nodes[node].mqtt_port)
    }

    /// `kill -9` a node and wait for it to exit.
    pub fn kill(&mut self, node: usize) {
        let node = &mut self.nodes[node];
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        node.paused.store(false, Ordering::Relaxed);
    }

    /// Starts a node again (killing it first if it still runs) with the same
    /// ports, config and JetStream store, and waits until it is healthy: it
    /// has JetStream, knows the meta leader and its streams have caught up.
    /// While fewer than a majority of nodes run there is no meta leader to
    /// wait for, so then it waits only for JetStream to be up.
    pub fn restart(&mut self, node: usize) {
        self.kill(node);
        self.spawn(node);
        let running = self
            .nodes
            .iter()
            .filter(|node| node.child.is_some() && !node.paused.load(Ordering::Relaxed))
            .count();
        let quorum = running * 2 > self.nodes.len();
        if let Err(failure) = self.wait_until_healthy(node, quorum) {
            panic!("{}", failure.message);
        }
    }

    /// Freezes a node (`SIGSTOP`): its connections stay open, nothing moves.
    pub fn pause(&self, node: usize) {
        self.signal(node, "-STOP");
        self.nodes[node].paused.store(true, Ordering::Relaxed);
    }

    /// Lets a paused node run again (`SIGCONT`).
    pub fn resume(&self, node: usize) {
        self.signal(node, "-CONT");
        self.nodes[node].paused.store(false, Ordering::Relaxed);
    }

    /// The node that leads the Raft group of a stream (of the default account),
    /// by the monitoring endpoint of each running node: the one that reports
    /// itself as the leader. `None` while there is no leader, or no such stream.
    pub fn stream_leader(&self, stream: &str) -> Option<usize> {
        (0..self.nodes.len()).find(|&index| {
            let node = &self.nodes[index];
            if node.child.is_none() || node.paused.load(Ordering::Relaxed) {
                return false;
            }
            let Some(jsz) = self.monitoring_json(index, "/jsz?streams=true&config=true") else {
                return false;
            };
            let accounts = jsz["account_details"].as_array().into_iter().flatten();
            let mut streams = accounts.flat_map(|account| {
                account["stream_detail"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .cloned()
                    .collect::<Vec<_>>()
            });
            streams.any(|detail| {
                detail["name"] == stream
                    && match detail["cluster"]["leader"].as_str() {
                        Some(leader) => leader == node.name,
                        // A single server leads all its streams.
                        None => self.nodes.len() == 1,
                    }
            })
        })
    }

    /// Whether a node answers its monitoring `/healthz` with 200: JetStream is
    /// up, the node knows the meta leader and its streams are current.
    pub fn healthy(&self, node: usize) -> bool {
        matches!(self.monitoring(node, "/healthz"), Some((200, _)))
    }

    /// Waits (bounded) until every node is healthy and routed to every
    /// other one: a node back from a pause or a restart may take a moment to
    /// rejoin, and what is published meanwhile does not reach its
    /// subscribers.
    pub fn wait_until_whole(&self) {
        let deadline = Instant::now() + START_TIMEOUT;
        let others = self.nodes.len().saturating_sub(1);
        let whole = |node: usize| {
            self.healthy(node)
                && self
                    .monitoring_json(node, "/routez")
                    .and_then(|routez| routez["num_routes"].as_u64())
                    .is_some_and(|routes| routes >= others as u64)
        };
        while !(0..self.nodes.len()).all(whole) {
            assert!(
                Instant::now() < deadline,
                "the cluster did not become whole again"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn spawn(&mut self, index: usize) {
        let node = &mut self.nodes[index];
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .expect("open the node's log");
        let stdout = log.try_clone().expect("clone the log file");
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&node.config)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.binary.display()));
        node.child = Some(child);
        node.paused.store(false, Ordering::Relaxed);
    }

    /// Waits until the node's JetStream is up and, with `full`, until its
    /// `/healthz` is 200 and it names a meta leader (in a cluster). Fails,
    /// with the tail of its log, when that takes too long or the node exits.
    fn wait_until_healthy(&mut self, index: usize, full: bool) -> Result<(), StartFailure> {
        let deadline = Instant::now() + START_TIMEOUT;
        let clustered = self.nodes.len() > 1;
        loop {
            if let Some(status) = self.nodes[index]
                .child
                .as_mut()
                .and_then(|child| child.try_wait().ok().flatten())
            {
                let log = self.log_tail(index);
                return Err(StartFailure {
                    port_taken: log.contains("address already in use"),
                    message: format!(
                        "{} exited ({status}) while starting:\n{log}",
                        self.nodes[index].name
                    ),
                });
            }
            let js_enabled = matches!(
                self.monitoring(index, "/healthz?js-enabled-only=true"),
                Some((200, _))
            );
            let ready = js_enabled
                && (!full
                    || (self.healthy(index) && (!clustered || self.meta_leader(index).is_some())));
            if ready {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(StartFailure {
                    port_taken: false,
                    message: format!(
                        "{} was not healthy within {START_TIMEOUT:?} (healthz: {:?}):\n{}",
                        self.nodes[index].name,
                        self.monitoring(index, "/healthz"),
                        self.log_tail(index)
                    ),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The JetStream meta leader as the node knows it.
    fn meta_leader(&self, node: usize) -> Option<String> {
        let jsz = self.monitoring_json(node, "/jsz")?;
        let leader = jsz["meta_cluster"]["leader"].as_str()?;
        Some(leader.to_string()).filter(|leader| !leader.is_empty())
    }

    fn monitoring_json(&self, node: usize, path: &str) -> Option<Value> {
        match self.monitoring(node, path)? {
            (200, body) => serde_json::from_str(&body).ok(),
            _ => None,
        }
    }

    /// A GET on the node's monitoring port: status and body, or `None` when
    /// it does not answer in time. Plain HTTP/1.0 on a socket, so that it works
    /// from any thread, inside an async runtime or not.
    fn monitoring(&self, node: usize, path: &str) -> Option<(u16, String)> {
        let address: SocketAddr = ([127, 0, 0, 1], self.nodes[node].http_port).into();
        let mut stream = TcpStream::connect_timeout(&address, HTTP_TIMEOUT).ok()?;
        stream.set_read_timeout(Some(HTTP_TIMEOUT)).ok()?;
        stream.set_write_timeout(Some(HTTP_TIMEOUT)).ok()?;
        write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let (head, body) = response.split_once("\r\n\r\n")?;
        let status = head.split_whitespace().nth(1)?.parse().ok()?;
        Some((status, body.to_string()))
    }

    fn signal(&self, node: usize, signal: &str) {
        let child = self.nodes[node]
            .child
            .as_ref()
            .unwrap_or_else(|| panic!("nats-{node} is not running"));
        let sent = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill {signal} reached nats-{node}");
    }

    /// The last lines of a node's log.
    fn log_tail(&self, node: usize) -> String {
        let path = &self.nodes[node].log;
        let Ok(file) = File::open(path) else {
            return format!("(no log at {})", path.display());
        };
        let lines: Vec<String> = BufReader::new(file).lines().map_while(Result::ok).collect();
        let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
        format!(
            "--- {} (last lines) ---\n{}",
            path.display(),
            tail.join("\n")
        )
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        // A failed test shows what the nodes said before their logs go.
        if std::thread::panicking() {
            for node in 0..self.nodes.len() {
                eprintln!("{}", self.log_tail(node));
            }
        }
        for node in 0..self.nodes.len() {
            self.kill(node);
        }
    }
}

/// Why a node did not come up.
struct StartFailure {
    message: String,
    /// It could not bind one of its ports.
    port_taken: bool,
}

/// A free loopback port for a node, below the kernel's range of ephemeral
/// ports when it can: no outgoing connection takes such a port as its source.
/// In that range, a node dialing the route port of a node that is not
/// listening (yet, or again) can connect to itself on that very port (a TCP
/// simultaneous open) and so hold it when the other node binds.
fn node_port(taken: &mut HashSet<u16>) -> u16 {
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (first, end) = (10_000, ephemeral_start);
    if end > first + 1_000 {
        for _ in 0..1_000 {
            let offset = uuid::Uuid::new_v4().as_u128() % u128::from(end - first);
            let port = first + u16::try_from(offset).expect("below the range's end");
            if !taken.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
                taken.insert(port);
                return port;
            }
        }
    }
    loop {
        let port = free_port();
        if taken.insert(port) {
            return port;
        }
    }
}

/// nats-server from `CRIER_NATS_SERVER`, else from `PATH`; `None` when it is
/// not installed and not required.
fn nats_server() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(NATS_SERVER) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "{NATS_SERVER}={} is not a file",
            path.display()
        );
        return Some(path);
    }
    let found = find_sbin("nats-server");
    if found.is_none() {
        assert!(
            std::env::var(REQUIRE_EXTERNAL).as_deref() != Ok("1"),
            "nats-server is required ({REQUIRE_EXTERNAL}=1) but not installed \
             (set {NATS_SERVER} or put it on PATH)"
        );
        eprintln!("skipping: nats-server is not installed");
    }
    found
}

const WAIT: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_cluster_carries_mqtt_between_nodes() {
    let Some(cluster) = NatsCluster::start(3) else {
        return;
    };
    let topic = format!("crier-test/{}/messages", uuid::Uuid::new_v4().simple());

    let (subscriber, mut received) = mqtt_client(&cluster.mqtt_url(1), "subscriber").await;
    subscriber
        .subscribe(&topic, QoS::AtLeastOnce)
        .await
        .expect("subscribe queued");
    let suback = next_event(&mut received, "the SUBACK", |event| {
        matches!(event, Incoming::SubAck(_))
    })
    .await;
    let Incoming::SubAck(suback) = suback else {
        unreachable!()
    };
    assert_eq!(
        suback.return_codes,
        [SubscribeReasonCode::Success(QoS::AtLeastOnce)],
        "a QoS 1 subscription"
    );

    let (publisher, mut sent) = mqtt_client(&cluster.mqtt_url(0), "publisher").await;
    publisher
        .publish(&topic, QoS::AtLeastOnce, false, "across the cluster")
        .await
        .expect("publish queued");
    next_event(&mut sent, "the PUBACK", |event| {
        matches!(event, Incoming::PubAck(_))
    })
    .await;

    let publish = next_event(&mut received, "the message on node 1", |event| {
        matches!(event, Incoming::Publish(_))
    })
    .await;
    let Incoming::Publish(publish) = publish else {
        unreachable!()
    };
    assert_eq!(publish.topic, topic);
    assert_eq!(publish.qos, QoS::AtLeastOnce);
    assert_eq!(&publish.payload[..], b"across the cluster");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_cluster_node_is_healthy_again_after_kill_and_restart() {
    let Some(mut cluster) = NatsCluster::start(3) else {
        return;
    };
    assert!(cluster.healthy(0));
    cluster.kill(0);
    assert!(!cluster.healthy(0), "a killed node does not answer");
    cluster.restart(0);
    assert!(cluster.healthy(0), "healthy again after the restart");
    assert!(cluster.meta_leader(0).is_some(), "knows the meta leader");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_cluster_names_the_stream_leader_and_a_new_one_when_it_fails() {
    let Some(mut cluster) = NatsCluster::start(3) else {
        return;
    };
    assert_eq!(cluster.client_urls().split(',').count(), 3);
    let created = create_stream(&cluster.client_url(2), "CRIER_TEST", 3);
    assert!(created.get("error").is_none(), "stream created: {created}");
    let first = wait_for_leader(&cluster, "CRIER_TEST", None);
    assert_eq!(cluster.stream_leader("NO_SUCH_STREAM"), None);

    cluster.kill(first);
    let second = wait_for_leader(&cluster, "CRIER_TEST", Some(first));
    cluster.restart(first);

    cluster.pause(second);
    let third = wait_for_leader(&cluster, "CRIER_TEST", Some(second));
    cluster.resume(second);
    assert_ne!(third, second);
    // The resumed node steps down (or leads again); either way one node leads.
    wait_for_leader(&cluster, "CRIER_TEST", None);
}

/// The stream's leader once there is one other than `not`.
fn wait_for_leader(cluster: &NatsCluster, stream: &str, not: Option<usize>) -> usize {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        match cluster.stream_leader(stream) {
            Some(leader) if Some(leader) != not => return leader,
            _ if Instant::now() >= deadline => {
                panic!("no leader of {stream} other than {not:?} within {START_TIMEOUT:?}")
            }
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Creates a file-backed stream on `<name>.>` over the plain NATS protocol and
/// returns the JetStream API's answer.
fn create_stream(url: &str, name: &str, replicas: usize) -> Value {
    let address = url.trim_start_matches("nats://");
    let stream = TcpStream::connect(address).expect("connect to nats");
    stream.set_read_timeout(Some(WAIT)).expect("read timeout");
    let mut writer = stream.try_clone().expect("clone the socket");
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).expect("INFO");
    assert!(line.starts_with("INFO "), "nats greets with INFO: {line}");
    let request = json!({
        "name": name,
        "subjects": [format!("{name}.>")],
        "num_replicas": replicas,
        "storage": "file",
    })
    .to_string();
    write!(
        writer,
        "CONNECT {{\"verbose\":false,\"pedantic\":false}}\r\n\
         SUB _INBOX.create 1\r\n\
         PUB $JS.API.STREAM.CREATE.{name} _INBOX.create {}\r\n{request}\r\n",
        request.len()
    )
    .expect("send the request");
    loop {
        line.clear();
        reader.read_line(&mut line).expect("an answer from nats");
        if line.starts_with("PING") {
            writer.write_all(b"PONG\r\n").expect("PONG");
        } else if let Some(header) = line.strip_prefix("MSG ") {
            let size: usize = header
                .split_whitespace()
                .last()
                .and_then(|size| size.parse().ok())
                .expect("MSG size");
            let mut payload = vec![0; size + 2];
            reader.read_exact(&mut payload).expect("MSG payload");
            payload.truncate(size);
            return serde_json::from_slice(&payload).expect("JSON answer");
        } else if line.starts_with("-ERR") {
            panic!("nats refused the request: {line}");
        }
    }
}

/// An MQTT 3.1.1 client connected to `url`, with its events: the event loop
/// runs in a task of its own and reconnects after an error.
async fn mqtt_client(url: &str, role: &str) -> (AsyncClient, mpsc::UnboundedReceiver<Incoming>) {
    let broker = server::mqtt::BrokerUrl::parse(url, None).expect("MQTT URL");
    let id = format!("crier-test-{role}-{}", uuid::Uuid::new_v4().simple());
    let (client, mut eventloop) = AsyncClient::new(broker.options(&id), 64);
    let (events, mut received) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(packet)) => {
                    if events.send(packet).is_err() {
                        return;
                    }
                }
                Ok(Event::Outgoing(_)) => {}
                Err(_) if events.is_closed() => return,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    next_event(&mut received, "the CONNACK", |event| {
        matches!(event, Incoming::ConnAck(_))
    })
    .await;
    (client, received)
}

/// The next event that matches, within [`WAIT`].
async fn next_event(
    events: &mut mpsc::UnboundedReceiver<Incoming>,
    what: &str,
    matches: impl Fn(&Incoming) -> bool,
) -> Incoming {
    let next = async {
        loop {
            let event = events.recv().await.expect("the event loop runs");
            if matches(&event) {
                return event;
            }
        }
    };
    tokio::time::timeout(WAIT, next)
        .await
        .unwrap_or_else(|_| panic!("{what} within {WAIT:?}"))
}
