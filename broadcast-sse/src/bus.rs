//! The subscriber: owns broadcast-sse's one broker connection (over the
//! network, or a link into the broker when this process runs it: [`link`]).
//!
//! It subscribes to a channel's topics when the hub asks (first local listener) and
//! unsubscribes when the last one leaves: its messages (QoS 1) and its signals
//! (QoS 0, typing and read markers), always together. Each connection starts with a clean
//! session, so every new connection subscribes all active channels again; once
//! the broker acknowledges, the hub backfills each of them from its last
//! delivered id. What to ask for, and which acknowledgement answers which
//! request, is decided in [`subscriptions`]; this file carries it out.
//! Incoming messages are checked for a message's shape and framed as they
//! came (no second serialisation), then handed to the hub. Incoming signals
//! are parsed and checked whole (anything may publish on their topic), and
//! framed from what was checked.
//!
//! With `follow_all` it instead holds one wildcard subscription to every channel
//! while any channel has a local listener: for a node that sees all traffic
//! anyway (the all-in-one binary and its embedded broker, whose router matches
//! each message against every filter one by one, so a thousand per-channel
//! filters cost more than the messages themselves). A node nobody listens to
//! receives nothing, as with per-channel subscriptions.

pub mod link;
mod subscriptions;

use protocol::message::MessageCheck;
use protocol::{ChannelId, Signal, topic};
use rumqttc::{AsyncClient, MqttOptions, QoS};
use server::mqtt::connection::{self, Capacity, ConnectionId, Driven, Sent, Session};
use server::mqtt::{BrokerStatus, BrokerUrl};
use server::presence::refresh_topic;
use server::tasks::Background;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Duration, MissedTickBehavior};

use crate::hub::{Frame, Hub, SubscriptionChange};
use crate::presence::LocalPresence;
use link::{InProcessLink, Requester};
use subscriptions::{Command, Request, Subscriptions, Target};

/// rumqttc's request queue (subscriptions and this node's presence), and the
/// broker events waiting for the subscriber.
const CAPACITY: Capacity = Capacity {
    requests: 4096,
    events: 1024,
};
/// The queues of the connection that carries only the node's presence (with
/// a link): presence is published as its changes are gathered, so the
/// requests queue takes a burst of them.
const NODE_CAPACITY: Capacity = Capacity {
    requests: 4096,
    events: 16,
};
/// Listener changes taken from the hub at once (one SUBSCRIBE for all of them).
const CHANGES_PER_BATCH: usize = 1024;
/// How soon a SUBSCRIBE that could not be handed over is tried again.
const RETRY_EVERY: Duration = Duration::from_millis(250);

/// Where a node's messages come from: the broker, under a topic prefix, with
/// one wildcard subscription (`subscribe_all`) or one per channel.
pub struct Bus<'a> {
    pub broker: &'a BrokerUrl,
    /// A link into the broker's router when it runs in this process: the
    /// subscriber takes it instead of a network connection to `broker`.
    pub link: Option<InProcessLink>,
    pub topic_prefix: &'a str,
    pub subscribe_all: bool,
}

/// The node's MQTT connections, as [`start`] leaves them running.
pub struct Started {
    /// The subscriber's connection: up when live messages can flow.
    pub status: BrokerStatus,
    /// Publishes what the node says about itself (presence, fan-out
    /// reports), on a connection whose last will takes the node out of
    /// presence.
    pub node_client: AsyncClient,
    /// Whether `node_client`'s connection is up.
    pub node_status: BrokerStatus,
    /// The subscriber task.
    pub task: JoinHandle<()>,
}

/// Starts the subscriber task, on a network connection to the broker or on
/// the bus's link into it. Over the network the same connection carries this
/// node's presence; with a link, presence goes over a network connection of
/// its own, as on any node: the link has no flow control, so the burst of
/// presence that thousands of joining streams make waited in the router's
/// queues, and their grown buffers stayed (+0.3 KB per idle stream).
pub fn start(
    bus: Bus<'_>,
    hub: Hub,
    changes: mpsc::UnboundedReceiver<SubscriptionChange>,
    presence: &LocalPresence,
    background: &Background,
) -> Started {
    let prefix = bus.topic_prefix;
    let status = BrokerStatus::default();
    let (requests, driven, node) = match bus.link {
        Some(link) => {
            let (requests, driven) = open_link(link, background);
            let node = open_node_connection(bus.broker, prefix, presence, background);
            (requests, driven, node)
        }
        None => {
            let driver = connection::open(
                node_options(bus.broker, prefix, presence),
                Session::Fresh,
                CAPACITY,
            );
            let node = (driver.requests.ungated(), status.clone());
            (Requester::Network(driver.requests), driver.events, node)
        }
    };
    let subscriber = Subscriber {
        requests,
        connection: None,
        presence: presence.clone(),
        hub,
        prefix: prefix.to_string(),
        refresh_topic: refresh_topic(prefix),
        status: status.clone(),
        subscriptions: Subscriptions::new(bus.subscribe_all),
    };
    let task = background.spawn(subscriber.run(driven, changes));
    let (node_client, node_status) = node;
    Started {
        status,
        node_client,
        node_status,
        task,
    }
}

/// Options of a connection that carries this node's presence (its last will).
fn node_options(broker: &BrokerUrl, prefix: &str, presence: &LocalPresence) -> MqttOptions {
    let mut options = broker.options(&server::mqtt::client_id("sse"));
    presence.will_on(&mut options, prefix);
    options
}

/// Starts forwarding what the broker sends `link`; once it stops (the
/// broker is gone), so does the subscriber.
fn open_link(link: InProcessLink, background: &Background) -> (Requester, mpsc::Receiver<Driven>) {
    let (events, driven) = mpsc::channel(CAPACITY.events);
    let forward = (link.forward)(events);
    background.spawn(async move {
        if let Err(e) = forward.await {
            log::error!("the link into the broker ended: {e}");
        }
    });
    (Requester::InProcess(link.requests), driven)
}

/// A network connection for this node's presence alone, and its status.
fn open_node_connection(
    broker: &BrokerUrl,
    prefix: &str,
    presence: &LocalPresence,
    background: &Background,
) -> (AsyncClient, BrokerStatus) {
    let options = node_options(broker, prefix, presence);
    let driver = connection::open(options, Session::Fresh, NODE_CAPACITY);
    let status = BrokerStatus::default();
    background.spawn(follow_status(driver.events, status.clone()));
    (driver.requests.ungated(), status)
}

/// Keeps `status` as the connection's events say, for as long as it runs.
async fn follow_status(mut driven: mpsc::Receiver<Driven>, status: BrokerStatus) {
    while let Some(driven) = driven.recv().await {
        match driven {
            Driven::Connected { .. } => status.set(true),
            Driven::Lost(_) => status.set(false),
            _ => {}
        }
    }
}

struct Subscriber {
    requests: Requester,
    /// The connection up, as last heard from the driver.
    connection: Option<ConnectionId>,
    /// Told when a watcher asks every node for its presence.
    presence: LocalPresence,
    hub: Hub,
    prefix: String,
    /// Where watchers ask for presence (made once: every message is compared).
    refresh_topic: String,
    status: BrokerStatus,
    subscriptions: Subscriptions,
}

impl Subscriber {
    /// Handles the connection's events and the hub's changes as they come. The
    /// event loop is polled by its own task ([`connection::open`]), so a
    /// change arriving mid-reconnect cannot cancel the handshake.
    async fn run(
        mut self,
        mut driven: mpsc::Receiver<Driven>,
        mut changes: mpsc::UnboundedReceiver<SubscriptionChange>,
    ) {
        let mut batch = Vec::with_capacity(CHANGES_PER_BATCH);
        let mut hub_open = true;
        let mut retry = tokio::time::interval(RETRY_EVERY);
        retry.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                driven = driven.recv() => match driven {
                    Some(driven) => self.on_driven(driven),
                    None => return log::error!("the MQTT connection's driver stopped"),
                },
                received = changes.recv_many(&mut batch, CHANGES_PER_BATCH), if hub_open => {
                    hub_open = received > 0;
                    let commands = self.subscriptions.changed(&batch);
                    batch.clear();
                    self.carry_out(commands);
                }
                _ = retry.tick(), if self.subscriptions.needs_retry() => {
                    let commands = self.subscriptions.retry();
                    self.carry_out(commands);
                }
            }
        }
    }

    fn on_driven(&mut self, driven: Driven) {
        match driven {
            Driven::Connected { id, .. } => {
                log::info!("connected to the MQTT broker");
                self.connection = Some(id);
                self.status.set(true);
                let commands = self.subscriptions.connected();
                self.carry_out(commands);
            }
            Driven::Publish(publish) => self.on_publish(&publish),
            Driven::Sent(Sent::Subscribe(pkid)) => self.subscriptions.written(pkid),
            Driven::SubAck(ack) => {
                let commands = self.subscriptions.acknowledged(&ack);
                self.carry_out(commands);
            }
            Driven::Lost(reason) => self.on_connection_lost(&reason),
            Driven::Sent(_) | Driven::PubAck(_) => {}
        }
    }

    fn on_connection_lost(&mut self, reason: &str) {
        if self.subscriptions.lost() {
            log::warn!("MQTT connection lost: {reason}");
            self.hub.anchor_undelivered();
        }
        self.connection = None;
        self.status.set(false);
        self.hub.mark_all_unsubscribed();
    }

    fn carry_out(&mut self, commands: Vec<Command>) {
        for command in commands {
            match command {
                Command::Subscribe(request) => self.subscribe(request),
                Command::Unsubscribe(target) => self.unsubscribe(target),
                Command::Subscribed(channels) => {
                    self.hub.mark_subscribed(&channels);
                    // Live messages flow again; fetch what the outage left out.
                    self.hub.heal(&channels);
                }
                Command::Refused(targets) => {
                    log::error!("the broker refused the subscription to {targets:?}");
                }
            }
        }
    }

    fn subscribe(&mut self, request: Request) {
        let filters: Vec<(String, QoS)> = request
            .targets
            .iter()
            .flat_map(|target| self.filters(*target))
            .collect();
        let Some(connection) = self.connection else {
            return self.subscriptions.not_sent(request.number);
        };
        match self.requests.subscribe(connection, filters) {
            Ok(Some(pkid)) => self.subscriptions.written(pkid),
            // A network connection reports the packet id once it is written.
            Ok(None) => {}
            Err(e) => {
                log::warn!(
                    "could not subscribe to {} filters: {e}",
                    request.targets.len()
                );
                self.subscriptions.not_sent(request.number);
            }
        }
    }

    fn unsubscribe(&mut self, target: Target) {
        let Some(connection) = self.connection else {
            return;
        };
        for (filter, _) in self.filters(target) {
            if let Err(e) = self.requests.unsubscribe(connection, filter) {
                log::warn!("could not unsubscribe from {target:?}: {e}");
            }
        }
    }

    /// The topic filters of a target, with their QoS, in the order
    /// [`Target::filters`] counts them: a channel's messages, then its signals.
    fn filters(&self, target: Target) -> Vec<(String, QoS)> {
        let prefix = &self.prefix;
        match target {
            Target::Channel(channel) => vec![
                (topic::channel_topic(prefix, channel), QoS::AtLeastOnce),
                (topic::signals_topic(prefix, channel), QoS::AtMostOnce),
            ],
            Target::AllChannels => vec![
                (topic::all_channels_filter(prefix), QoS::AtLeastOnce),
                (topic::all_signals_filter(prefix), QoS::AtMostOnce),
            ],
            Target::PresenceRefresh => vec![(self.refresh_topic.clone(), QoS::AtLeastOnce)],
        }
    }

    fn on_publish(&self, publish: &rumqttc::Publish) {
        let topic = publish.topic.as_str();
        if topic == self.refresh_topic {
            self.presence.refresh();
            return;
        }
        if let Some(channel) = topic::channel_of(&self.prefix, topic) {
            deliver(&self.hub, channel, topic, &publish.payload);
        } else if let Some(channel) = topic::signals_channel_of(&self.prefix, topic) {
            deliver_signal(&self.hub, channel, topic, &publish.payload);
        } else {
            log::debug!("ignoring a message on foreign topic {topic:?}");
        }
    }
}

/// Hands a signal to the hub once it is a valid signal of the topic's
/// channel; anything else is dropped and counted (devices may publish there).
fn deliver_signal(hub: &Hub, channel: ChannelId, topic: &str, payload: &[u8]) {
    match Signal::parse(payload) {
        Ok(signal) if signal.channel == channel => {
            hub.deliver_signal(channel, bytes::Bytes::from(signal.sse_frame()));
        }
        Ok(_) => {
            crate::metrics::signal_dropped();
            log::debug!("dropping a signal whose channel does not match {topic}");
        }
        Err(e) => {
            crate::metrics::signal_dropped();
            log::debug!("dropping a payload on {topic} that is not a signal: {e}");
        }
    }
}

/// Hands a message to the hub, framed as it came, once it has a message's shape.
fn deliver(hub: &Hub, channel: ChannelId, topic: &str, payload: &bytes::Bytes) {
    match MessageCheck::of(payload) {
        Ok(message) if message.channel == channel && message.id > 0 => {
            crate::metrics::sample_bus_lag(payload);
            hub.deliver(channel, Frame::from_json(message.id, message.kind, payload));
        }
        Ok(_) => log::warn!("dropping a message whose channel or id does not match {topic}"),
        Err(e) => log::warn!("dropping an unreadable message on {topic}: {e}"),
    }
}
