//! Who is in a channel, across every broadcast-sse node, through the broker.
//!
//! Each node publishes, per channel it serves, how many streams it holds and
//! the names they joined under, on `{prefix}/presence/{channel}/{node}`
//! ([`NodePresence`]); an empty payload means none are left. These are not
//! retained (a broker would keep one message per channel and node, which costs
//! rumqttd about 2 KB each): a watcher that connects asks every node for its
//! presence on `{prefix}/presence/refresh`, and each node then publishes all
//! its channels. Each node also holds `{prefix}/nodes/{node}`, retained, with a
//! last will that empties it, so a node that dies drops out as soon as the
//! broker sees its connection go.
//!
//! A [`Watcher`] follows both and sums over the nodes that are alive: the
//! chat-service answers `/stats` and `/presence` from it, and broadcast-sse
//! tells streams that asked (`?presence=1`) who joined and left. One follower
//! may also take [`Changes`]: the channels whose sum may have changed since
//! it last looked (the chat-service's presence webhooks). It also keeps each
//! node's fan-out delay ([`fanout`]), for the chat-service's admission.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use rumqttc::{QoS, SubscribeFilter};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::mqtt::BrokerUrl;
use crate::mqtt::connection::{self, Capacity, ConnectionId, Driven, Driver, Requests, Session};
use crate::tasks::Background;
use protocol::ChannelId;

mod changes;
pub mod fanout;
pub use changes::Changes;
use fanout::{FanoutDelays, FanoutReport};

/// Longest presence name, in characters (an author's default limit).
pub const MAX_NAME_CHARS: usize = 64;
/// A watcher makes two requests per connection and takes many messages.
const CAPACITY: Capacity = Capacity {
    requests: 16,
    events: 64,
};

/// `{prefix}/presence/{channel}/{node}`: one node's streams on one channel.
pub fn presence_topic(prefix: &str, channel: ChannelId, node: &str) -> String {
    format!("{prefix}/presence/{channel}/{node}")
}

/// `{prefix}/presence/refresh`: a watcher asks every node for its presence.
pub fn refresh_topic(prefix: &str) -> String {
    format!("{prefix}/presence/refresh")
}

/// `{prefix}/nodes/{node}`: present while the node is connected.
pub fn node_topic(prefix: &str, node: &str) -> String {
    format!("{prefix}/nodes/{node}")
}

/// What a node publishes for one channel.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodePresence {
    /// Open streams, named or not.
    pub subscribers: u64,
    /// The names streams joined under, each once.
    pub names: BTreeSet<String>,
}

/// A channel's presence summed over the live nodes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ChannelPresence {
    pub subscribers: u64,
    /// Each name once, however many streams or nodes carry it.
    pub names: BTreeSet<String>,
}

/// A presence name: the rules of an author (not empty or only spaces, no
/// control characters, at most [`MAX_NAME_CHARS`]).
pub fn check_name(raw: &str) -> Result<String, String> {
    let name = raw.trim();
    if name.is_empty() {
        return Err("name must not be empty".into());
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(format!("name must be at most {MAX_NAME_CHARS} characters"));
    }
    if name.chars().any(char::is_control) {
        return Err("name must not contain control characters".into());
    }
    Ok(name.to_string())
}

/// Every node's presence on every channel, and which nodes are alive.
#[derive(Default)]
struct Table {
    channels: HashMap<ChannelId, HashMap<String, NodePresence>>,
    live_nodes: HashSet<String>,
}

impl Table {
    fn channel(&self, channel: ChannelId) -> ChannelPresence {
        let mut sum = ChannelPresence::default();
        let Some(nodes) = self.channels.get(&channel) else {
            return sum;
        };
        for (node, presence) in nodes {
            if self.live_nodes.contains(node) {
                sum.subscribers += presence.subscribers;
                sum.names.extend(presence.names.iter().cloned());
            }
        }
        sum
    }

    /// Channels a node has entries on.
    fn channels_of(&self, node: &str) -> Vec<ChannelId> {
        let on = |(channel, nodes): (&ChannelId, &HashMap<String, NodePresence>)| {
            nodes.contains_key(node).then_some(*channel)
        };
        self.channels.iter().filter_map(on).collect()
    }
}

/// Follows the presence of every channel on the broker.
#[derive(Clone)]
pub struct Watcher {
    shared: Arc<Shared>,
}

struct Shared {
    table: Mutex<Table>,
    /// Names per channel, for streams that follow who comes and goes.
    feeds: Mutex<HashMap<ChannelId, watch::Sender<Arc<BTreeSet<String>>>>>,
    /// Channels touched since [`Changes`] last looked; kept only while it
    /// exists. A set, not a queue: it holds each channel once, however often
    /// it changes, so it is bounded by the channels that changed in between.
    touched: Mutex<HashSet<ChannelId>>,
    /// Bumped when a channel is touched; [`Changes`] waits on it.
    touches: watch::Sender<u64>,
    /// Whether [`Changes`] was handed out (only one follower takes them).
    changes_taken: std::sync::atomic::AtomicBool,
    /// The nodes' fan-out delays.
    fanout: FanoutDelays,
}

impl Watcher {
    /// Connects to `broker` and follows presence under `prefix`, in `background`.
    pub fn start(broker: &BrokerUrl, prefix: &str, background: &Background) -> Watcher {
        let watcher = Watcher::empty();
        let options = broker.options(&crate::mqtt::client_id("presence"));
        let driver = connection::open(options, Session::Fresh, CAPACITY);
        let follow = WatcherTask {
            watcher: watcher.clone(),
            prefix: prefix.to_string(),
        };
        background.spawn(follow.run(driver));
        watcher
    }

    /// A watcher that knows of nothing yet.
    fn empty() -> Watcher {
        Watcher {
            shared: Arc::new(Shared {
                table: Mutex::new(Table::default()),
                feeds: Mutex::new(HashMap::new()),
                touched: Mutex::new(HashSet::new()),
                touches: watch::channel(0).0,
                changes_taken: std::sync::atomic::AtomicBool::new(false),
                fanout: FanoutDelays::default(),
            }),
        }
    }

    /// How late the nodes write their messages to the streams.
    pub fn fanout_delays(&self) -> FanoutDelays {
        self.shared.fanout.clone()
    }

    /// A channel's presence over the live nodes.
    pub fn channel(&self, channel: ChannelId) -> ChannelPresence {
        lock(&self.shared.table).channel(channel)
    }

    /// The names in `channel`, updated as they change.
    pub fn names(&self, channel: ChannelId) -> watch::Receiver<Arc<BTreeSet<String>>> {
        let mut feeds = lock(&self.shared.feeds);
        feeds.retain(|_, feed| feed.receiver_count() > 0);
        if let Some(feed) = feeds.get(&channel) {
            return feed.subscribe();
        }
        let names = Arc::new(self.channel(channel).names);
        let (feed, receiver) = watch::channel(names);
        feeds.insert(channel, feed);
        receiver
    }

    /// The channels whose presence may change from now on, for one follower
    /// only (`None` once taken): each look gives the channels touched since
    /// the one before, with their sums at the time of the look.
    pub fn changes(&self) -> Option<Changes> {
        let taken = std::sync::atomic::Ordering::AcqRel;
        if self.shared.changes_taken.swap(true, taken) {
            return None;
        }
        Some(Changes::new(self.clone()))
    }

    /// Tells the streams following `channels` the names now there, and
    /// [`Changes`] (if anyone follows them) that they were touched.
    fn publish_names(&self, channels: &[ChannelId]) {
        if self.shared.touches.receiver_count() > 0 && !channels.is_empty() {
            lock(&self.shared.touched).extend(channels.iter().copied());
            self.shared.touches.send_modify(|n| *n = n.wrapping_add(1));
        }
        let feeds = lock(&self.shared.feeds);
        for channel in channels {
            if let Some(feed) = feeds.get(channel) {
                let names = self.channel(*channel).names;
                feed.send_if_modified(|current| {
                    let changed = **current != names;
                    if changed {
                        *current = Arc::new(names.clone());
                    }
                    changed
                });
            }
        }
    }
}

/// The task that keeps a watcher's table.
struct WatcherTask {
    watcher: Watcher,
    prefix: String,
}

/// What the watcher asks of a new connection: every node's presence and
/// liveness, then (on the same connection, so the answers find the
/// subscriptions in place) every node to publish its channels again.
#[derive(Debug, PartialEq, Eq)]
struct OnConnect {
    filters: [(String, QoS); 3],
    refresh: String,
}

impl OnConnect {
    fn for_prefix(prefix: &str) -> Self {
        OnConnect {
            filters: [
                (format!("{prefix}/presence/+/+"), QoS::AtLeastOnce),
                (format!("{prefix}/nodes/+"), QoS::AtLeastOnce),
                // Reports are sent at QoS 0: the next one says the same again.
                (format!("{prefix}/nodes/+/fanout"), QoS::AtMostOnce),
            ],
            refresh: refresh_topic(prefix),
        }
    }
}

/// What a message on the watcher's topics says.
#[derive(Debug, PartialEq, Eq)]
enum Update<'a> {
    /// A node's liveness topic: alive, or emptied (its will, or it left).
    Node { node: &'a str, alive: bool },
    /// A node's presence on one channel.
    Presence { channel: ChannelId, node: &'a str },
    /// A node's fan-out delay.
    Fanout { node: &'a str },
}

impl<'a> Update<'a> {
    fn of(prefix: &str, topic: &'a str, payload: &[u8]) -> Option<Update<'a>> {
        let rest = topic.strip_prefix(prefix)?;
        if let Some(node) = rest.strip_prefix("/nodes/") {
            return match node.split_once('/') {
                Some((node, "fanout")) => Some(Update::Fanout { node }),
                Some(_) => None,
                None => Some(Update::Node {
                    node,
                    alive: !payload.is_empty(),
                }),
            };
        }
        let (channel, node) = rest.strip_prefix("/presence/")?.split_once('/')?;
        let channel = ChannelId::parse(channel).ok()?;
        Some(Update::Presence { channel, node })
    }
}

impl WatcherTask {
    async fn run(self, mut driver: Driver) {
        let on_connect = OnConnect::for_prefix(&self.prefix);
        while let Some(driven) = driver.events.recv().await {
            match driven {
                Driven::Connected { id, .. } => ask(&driver.requests, id, &on_connect),
                Driven::Publish(publish) => self.on_publish(&publish.topic, &publish.payload),
                Driven::Lost(e) => log::debug!("presence: broker connection lost: {e}"),
                Driven::Sent(_) | Driven::PubAck(_) | Driven::SubAck(_) => {}
            }
        }
    }

    fn on_publish(&self, topic: &str, payload: &[u8]) {
        match Update::of(&self.prefix, topic, payload) {
            Some(Update::Node { node, alive }) => self.on_node(node, alive),
            Some(Update::Presence { channel, node }) => self.on_presence(channel, node, payload),
            Some(Update::Fanout { node }) => self.on_fanout(node, payload),
            None => {}
        }
    }

    fn on_presence(&self, channel: ChannelId, node: &str, payload: &[u8]) {
        {
            let mut table = lock(&self.watcher.shared.table);
            let nodes = table.channels.entry(channel).or_default();
            match serde_json::from_slice::<NodePresence>(payload) {
                Ok(presence) if !payload.is_empty() => {
                    nodes.insert(node.to_string(), presence);
                }
                _ => {
                    nodes.remove(node);
                    if nodes.is_empty() {
                        table.channels.remove(&channel);
                    }
                }
            }
        }
        self.watcher.publish_names(&[channel]);
    }

    fn on_fanout(&self, node: &str, payload: &[u8]) {
        match serde_json::from_slice::<FanoutReport>(payload) {
            Ok(report) => self.watcher.shared.fanout.report(node, report),
            Err(e) => log::debug!("presence: ignoring a fan-out report of {node}: {e}"),
        }
    }

    fn on_node(&self, node: &str, alive: bool) {
        if !alive {
            self.watcher.shared.fanout.forget(node);
        }
        let channels = {
            let mut table = lock(&self.watcher.shared.table);
            let channels = table.channels_of(node);
            if alive {
                table.live_nodes.insert(node.to_string());
            } else {
                table.live_nodes.remove(node);
                for channel in &channels {
                    if let Some(nodes) = table.channels.get_mut(channel) {
                        nodes.remove(node);
                    }
                }
                table.channels.retain(|_, nodes| !nodes.is_empty());
            }
            channels
        };
        self.watcher.publish_names(&channels);
    }
}

/// Subscribes and asks the nodes (see [`OnConnect`]); a refusal waits for
/// the next connection.
fn ask(requests: &Requests, id: ConnectionId, on_connect: &OnConnect) {
    let filters = on_connect
        .filters
        .iter()
        .map(|(filter, qos)| SubscribeFilter::new(filter.clone(), *qos));
    if let Err(e) = requests.subscribe(id, filters) {
        return log::warn!("presence: cannot subscribe: {e}");
    }
    let refresh = on_connect.refresh.clone();
    if let Err(e) = requests.publish(id, refresh, QoS::AtLeastOnce, false, Vec::new()) {
        log::warn!("presence: cannot ask the nodes: {e}");
    }
}

/// The table and feeds hold no invariant a panic could break half-way.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn presence(subscribers: u64, names: &[&str]) -> NodePresence {
        NodePresence {
            subscribers,
            names: names.iter().map(|name| name.to_string()).collect(),
        }
    }

    #[test]
    fn a_channel_sums_live_nodes_and_lists_each_name_once() {
        let channel = ChannelId::from_bytes([1; 16]);
        let mut table = Table::default();
        let nodes = table.channels.entry(channel).or_default();
        nodes.insert("a".into(), presence(3, &["ann", "bob"]));
        nodes.insert("b".into(), presence(2, &["bob"]));
        nodes.insert("dead".into(), presence(9, &["zed"]));
        table.live_nodes.extend(["a".to_string(), "b".to_string()]);
        let sum = table.channel(channel);
        assert_eq!(sum.subscribers, 5);
        assert_eq!(sum.names.into_iter().collect::<Vec<_>>(), ["ann", "bob"]);
    }

    #[test]
    fn a_new_connection_subscribes_to_presence_liveness_and_fanout_then_asks_every_node() {
        let on_connect = OnConnect::for_prefix("crier");
        let filters = on_connect.filters.map(|(filter, qos)| (filter, qos as u8));
        assert_eq!(
            filters
                .each_ref()
                .map(|(filter, qos)| (filter.as_str(), *qos)),
            [
                ("crier/presence/+/+", 1),
                ("crier/nodes/+", 1),
                ("crier/nodes/+/fanout", 0)
            ]
        );
        assert_eq!(on_connect.refresh, "crier/presence/refresh");
    }

    #[test]
    fn messages_are_read_as_liveness_presence_or_fanout_and_anything_else_ignored() {
        let channel = ChannelId::from_bytes([2; 16]);
        let on = |topic: &'static str, payload: &[u8]| Update::of("crier", topic, payload);
        let alive = Update::Node {
            node: "n1",
            alive: true,
        };
        assert_eq!(on("crier/nodes/n1", b"{}"), Some(alive));
        let gone = Update::Node {
            node: "n1",
            alive: false,
        };
        assert_eq!(on("crier/nodes/n1", b""), Some(gone));
        let topic = presence_topic("crier", channel, "n2");
        let presence = Update::Presence {
            channel,
            node: "n2",
        };
        assert_eq!(Update::of("crier", &topic, b"{}"), Some(presence));
        let fanout = fanout::fanout_topic("crier", "n3");
        let late = Update::Fanout { node: "n3" };
        assert_eq!(Update::of("crier", &fanout, b"{}"), Some(late));
        for foreign in [
            "other/nodes/n1",
            "crier/nodes/n1/other",
            "crier/presence/not-a-uuid/n1",
            "crier/presence/refresh",
        ] {
            assert_eq!(Update::of("crier", foreign, b"{}"), None, "{foreign}");
        }
    }

    #[test]
    fn names_follow_the_rules_of_an_author() {
        assert_eq!(check_name(" ann ").as_deref(), Ok("ann"));
        for bad in ["", "   ", "a\u{7}b"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_name(&"x".repeat(MAX_NAME_CHARS)).is_ok());
        assert!(check_name(&"x".repeat(MAX_NAME_CHARS + 1)).is_err());
    }
}
