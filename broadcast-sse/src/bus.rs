//! The subscriber: owns broadcast-sse's one broker connection.
//!
//! It subscribes to a channel's topic when the hub asks (first local listener) and
//! unsubscribes when the last one leaves. rumqttc does not restore subscriptions
//! after a reconnect, so every ConnAck re-subscribes all active channels; once the
//! broker acknowledges, the hub backfills each of them from its last delivered id.
//! Incoming messages are checked for a message's shape and framed as they
//! came (no second serialisation), then handed to the hub.
//!
//! With `follow_all` it instead holds one wildcard subscription to every channel
//! while any channel has a local listener: for a node that sees all traffic
//! anyway (the all-in-one binary and its embedded broker, whose router matches
//! each message against every filter one by one, so a thousand per-channel
//! filters cost more than the messages themselves). A node nobody listens to
//! receives nothing, as with per-channel subscriptions.

use std::collections::{HashMap, VecDeque};

use protocol::message::MessageCheck;
use protocol::{ChannelId, topic};
use rumqttc::{AsyncClient, Event, Incoming, Outgoing, QoS, SubscribeFilter};
use server::mqtt::connection::{self, Driven, Reconnect};
use server::mqtt::{BrokerStatus, BrokerUrl};
use server::tasks::Background;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::hub::{Frame, Hub, SubscriptionChange};
use crate::presence::LocalPresence;
use server::presence::refresh_topic;

const REQUEST_CAPACITY: usize = 4096;
/// Broker events waiting for the subscriber.
const EVENT_CAPACITY: usize = 1024;
/// Topics per SUBSCRIBE packet when re-subscribing many channels at once.
const FILTERS_PER_PACKET: usize = 100;

/// Starts the subscriber task. Its connection also carries this node's
/// presence (`presence`'s last will is set on it); the client returned is for
/// publishing that.
pub fn start(
    broker: &BrokerUrl,
    prefix: &str,
    follow_all: bool,
    hub: Hub,
    changes: mpsc::UnboundedReceiver<SubscriptionChange>,
    presence: &LocalPresence,
    background: &Background,
) -> (BrokerStatus, AsyncClient, JoinHandle<()>) {
    let mut options = broker.options(&server::mqtt::client_id("sse"));
    presence.will_on(&mut options, prefix);
    let (client, eventloop) = AsyncClient::new(options, REQUEST_CAPACITY);
    let status = BrokerStatus::default();
    let subscriber = Subscriber {
        client,
        presence: presence.clone(),
        hub,
        prefix: prefix.to_string(),
        refresh_topic: refresh_topic(prefix),
        status: status.clone(),
        follow_all,
        wildcard: Wildcard::Released,
        wildcard_requests: 0,
        sent: VecDeque::new(),
        awaiting_ack: HashMap::new(),
    };
    let presence_client = subscriber.client.clone();
    let (driven, _driver) = connection::drive(eventloop, EVENT_CAPACITY, Reconnect::Backoff);
    let task = background.spawn(subscriber.run(driven, changes));
    (status, presence_client, task)
}

struct Subscriber {
    client: AsyncClient,
    /// Told when a watcher asks every node for its presence.
    presence: LocalPresence,
    hub: Hub,
    prefix: String,
    /// Where watchers ask for presence (made once: every message is compared).
    refresh_topic: String,
    status: BrokerStatus,
    /// Subscribe once to every channel instead of channel by channel.
    follow_all: bool,
    /// The wildcard subscription on this connection (with `follow_all`).
    wildcard: Wildcard,
    /// Wildcard SUBSCRIBE requests made so far: tells a SUBACK that answers the
    /// latest request from one that a release overtook.
    wildcard_requests: u64,
    /// SUBSCRIBE requests not yet written, in request order.
    sent: VecDeque<Subscription>,
    /// Written SUBSCRIBE packets, by packet id, until their SUBACK.
    awaiting_ack: HashMap<u16, Subscription>,
}

/// Where a `follow_all` node's wildcard subscription stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wildcard {
    /// Not subscribed (no local listener, or not connected).
    Released,
    /// SUBSCRIBE sent (this request number), no SUBACK yet.
    Requested(u64),
    /// Acknowledged: every channel's messages arrive.
    Held,
}

/// What one SUBSCRIBE packet asks for.
#[derive(Debug)]
enum Subscription {
    Channels(Vec<ChannelId>),
    /// The wildcard, by request number.
    All(u64),
    /// Requests for this node's presence (see [`crate::presence`]).
    PresenceRefresh,
}

impl Subscriber {
    /// Handles the connection's events and the hub's changes as they come. The
    /// event loop is polled by its own task ([`connection::drive`]), so a
    /// change arriving mid-reconnect cannot cancel the handshake.
    async fn run(
        mut self,
        mut driven: mpsc::Receiver<Driven>,
        mut changes: mpsc::UnboundedReceiver<SubscriptionChange>,
    ) {
        loop {
            tokio::select! {
                driven = driven.recv() => match driven {
                    Some(Driven::Event(event)) => self.on_event(event),
                    Some(Driven::Lost(reason)) => self.on_connection_lost(&reason),
                    None => return log::error!("the MQTT connection's driver stopped"),
                },
                Some(change) = changes.recv() => self.on_change(change),
            }
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Incoming(Incoming::ConnAck(_)) => {
                log::info!("connected to the MQTT broker");
                self.status.set(true);
                self.subscribe_presence_refresh();
                if self.follow_all {
                    if self.hub.channel_count() > 0 {
                        self.subscribe_all();
                    }
                } else {
                    self.subscribe(self.hub.active_channels());
                }
            }
            Event::Incoming(Incoming::Publish(publish)) => self.on_publish(&publish),
            Event::Incoming(Incoming::SubAck(ack)) => {
                if let Some(subscription) = self.awaiting_ack.remove(&ack.pkid) {
                    self.on_subscribed(subscription);
                }
            }
            Event::Outgoing(Outgoing::Subscribe(pkid)) => {
                if let Some(subscription) = self.sent.pop_front() {
                    self.awaiting_ack.insert(pkid, subscription);
                }
            }
            _ => {}
        }
    }

    fn on_subscribed(&mut self, subscription: Subscription) {
        let channels = match subscription {
            Subscription::Channels(channels) => channels,
            Subscription::All(request) => {
                if self.wildcard != Wildcard::Requested(request) {
                    // Released since: an UNSUBSCRIBE followed this request.
                    return;
                }
                self.wildcard = Wildcard::Held;
                self.hub.active_channels()
            }
            Subscription::PresenceRefresh => return,
        };
        self.hub.mark_subscribed(&channels);
        // Live messages flow again; fetch what the outage left out.
        self.hub.heal(&channels);
    }

    fn on_connection_lost(&mut self, reason: &str) {
        if self.status.is_connected() {
            log::warn!("MQTT connection lost: {reason}");
            self.hub.anchor_undelivered();
        }
        self.status.set(false);
        self.wildcard = Wildcard::Released;
        self.sent.clear();
        self.awaiting_ack.clear();
        self.hub.mark_all_unsubscribed();
    }

    /// While disconnected nothing is sent: the next ConnAck subscribes every active
    /// channel anyway.
    fn on_change(&mut self, change: SubscriptionChange) {
        if !self.status.is_connected() {
            return;
        }
        if self.follow_all {
            return self.on_change_following_all(change);
        }
        match change {
            SubscriptionChange::Subscribe(channel) => self.subscribe(vec![channel]),
            SubscriptionChange::Unsubscribe(channel) => {
                let topic = topic::channel_topic(&self.prefix, channel);
                if let Err(e) = self.client.try_unsubscribe(topic) {
                    log::warn!("could not unsubscribe from {channel}: {e}");
                }
            }
        }
    }

    /// Subscribed to every channel once the wildcard is acknowledged (until
    /// then its SUBACK marks every active channel); released when the last
    /// channel with a listener here is left.
    fn on_change_following_all(&mut self, change: SubscriptionChange) {
        match (change, self.wildcard) {
            (SubscriptionChange::Subscribe(channel), Wildcard::Held) => {
                self.hub.mark_subscribed(&[channel]);
            }
            (SubscriptionChange::Subscribe(_), Wildcard::Released) => self.subscribe_all(),
            (SubscriptionChange::Subscribe(_), Wildcard::Requested(_)) => {}
            (SubscriptionChange::Unsubscribe(_), Wildcard::Released) => {}
            (SubscriptionChange::Unsubscribe(_), _) => {
                if self.hub.channel_count() == 0 {
                    self.release_all();
                }
            }
        }
    }

    fn subscribe(&mut self, channels: Vec<ChannelId>) {
        for batch in channels.chunks(FILTERS_PER_PACKET) {
            let filters = batch.iter().map(|channel| {
                SubscribeFilter::new(
                    topic::channel_topic(&self.prefix, *channel),
                    QoS::AtLeastOnce,
                )
            });
            match self.client.try_subscribe_many(filters) {
                Ok(()) => self.sent.push_back(Subscription::Channels(batch.to_vec())),
                Err(e) => log::warn!("could not subscribe to {} channels: {e}", batch.len()),
            }
        }
    }

    fn subscribe_all(&mut self) {
        let filter = topic::all_channels_filter(&self.prefix);
        self.wildcard_requests += 1;
        let request = self.wildcard_requests;
        match self.client.try_subscribe(filter, QoS::AtLeastOnce) {
            Ok(()) => {
                self.sent.push_back(Subscription::All(request));
                self.wildcard = Wildcard::Requested(request);
            }
            Err(e) => log::warn!("could not subscribe to every channel: {e}"),
        }
    }

    fn release_all(&mut self) {
        let filter = topic::all_channels_filter(&self.prefix);
        match self.client.try_unsubscribe(filter) {
            Ok(()) => self.wildcard = Wildcard::Released,
            Err(e) => log::warn!("could not unsubscribe from every channel: {e}"),
        }
    }

    fn subscribe_presence_refresh(&mut self) {
        match self
            .client
            .try_subscribe(self.refresh_topic.clone(), QoS::AtLeastOnce)
        {
            Ok(()) => self.sent.push_back(Subscription::PresenceRefresh),
            Err(e) => log::warn!("could not subscribe to presence requests: {e}"),
        }
    }

    fn on_publish(&self, publish: &rumqttc::Publish) {
        let topic = publish.topic.as_str();
        if topic == self.refresh_topic {
            self.presence.refresh();
            return;
        }
        let Some(channel) = topic::channel_of(&self.prefix, topic) else {
            log::debug!("ignoring a message on foreign topic {topic:?}");
            return;
        };
        match MessageCheck::of(&publish.payload) {
            Ok(message) if message.channel == channel && message.id > 0 => {
                self.hub
                    .deliver(channel, Frame::from_json(message.id, &publish.payload));
            }
            Ok(_) => log::warn!("dropping a message whose channel or id does not match {topic}"),
            Err(e) => log::warn!("dropping an unreadable message on {topic}: {e}"),
        }
    }
}
