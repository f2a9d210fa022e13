//! The subscriber: owns broadcast-sse's one broker connection.
//!
//! It subscribes to a channel's topic when the hub asks (first local listener) and
//! unsubscribes when the last one leaves. rumqttc does not restore subscriptions
//! after a reconnect, so every ConnAck re-subscribes all active channels; once the
//! broker acknowledges, the hub backfills each of them from its last delivered id.
//! Incoming messages are parsed and framed once, then handed to the hub.

use std::collections::{HashMap, VecDeque};

use std::time::Duration;

use protocol::mqtt::{BrokerStatus, BrokerUrl};
use protocol::{ChannelId, Message, topic};
use rumqttc::{AsyncClient, Event, EventLoop, Incoming, Outgoing, QoS, SubscribeFilter};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::hub::{Frame, Hub, SubscriptionChange};

const RECONNECT_DELAY: Duration = Duration::from_millis(500);
const REQUEST_CAPACITY: usize = 4096;
/// Topics per SUBSCRIBE packet when re-subscribing many channels at once.
const FILTERS_PER_PACKET: usize = 100;

/// Starts the subscriber task.
pub fn start(
    broker: &BrokerUrl,
    prefix: &str,
    hub: Hub,
    changes: mpsc::UnboundedReceiver<SubscriptionChange>,
) -> (BrokerStatus, JoinHandle<()>) {
    let options = broker.options(&protocol::mqtt::client_id("sse"));
    let (client, eventloop) = AsyncClient::new(options, REQUEST_CAPACITY);
    let status = BrokerStatus::default();
    let subscriber = Subscriber {
        client,
        hub,
        prefix: prefix.to_string(),
        status: status.clone(),
        sent: VecDeque::new(),
        awaiting_ack: HashMap::new(),
    };
    (status, tokio::spawn(subscriber.run(eventloop, changes)))
}

struct Subscriber {
    client: AsyncClient,
    hub: Hub,
    prefix: String,
    status: BrokerStatus,
    /// Channels of SUBSCRIBE requests not yet written, in request order.
    sent: VecDeque<Vec<ChannelId>>,
    /// Channels of written SUBSCRIBE packets, by packet id, until their SUBACK.
    awaiting_ack: HashMap<u16, Vec<ChannelId>>,
}

impl Subscriber {
    async fn run(
        mut self,
        mut eventloop: EventLoop,
        mut changes: mpsc::UnboundedReceiver<SubscriptionChange>,
    ) {
        loop {
            tokio::select! {
                event = eventloop.poll() => match event {
                    Ok(event) => self.on_event(event),
                    Err(e) => {
                        self.on_connection_lost(&e.to_string());
                        tokio::time::sleep(RECONNECT_DELAY).await;
                    }
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
                self.subscribe(self.hub.active_channels());
            }
            Event::Incoming(Incoming::Publish(publish)) => self.on_publish(&publish),
            Event::Incoming(Incoming::SubAck(ack)) => {
                if let Some(channels) = self.awaiting_ack.remove(&ack.pkid) {
                    self.hub.mark_subscribed(&channels);
                    // Live messages flow again; fetch what the outage left out.
                    self.hub.heal(&channels);
                }
            }
            Event::Outgoing(Outgoing::Subscribe(pkid)) => {
                if let Some(channels) = self.sent.pop_front() {
                    self.awaiting_ack.insert(pkid, channels);
                }
            }
            _ => {}
        }
    }

    fn on_connection_lost(&mut self, reason: &str) {
        if self.status.is_connected() {
            log::warn!("MQTT connection lost: {reason}");
            self.hub.anchor_undelivered();
        }
        self.status.set(false);
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

    fn subscribe(&mut self, channels: Vec<ChannelId>) {
        for batch in channels.chunks(FILTERS_PER_PACKET) {
            let filters = batch.iter().map(|channel| {
                SubscribeFilter::new(
                    topic::channel_topic(&self.prefix, *channel),
                    QoS::AtLeastOnce,
                )
            });
            match self.client.try_subscribe_many(filters) {
                Ok(()) => self.sent.push_back(batch.to_vec()),
                Err(e) => log::warn!("could not subscribe to {} channels: {e}", batch.len()),
            }
        }
    }

    fn on_publish(&self, publish: &rumqttc::Publish) {
        let topic = publish.topic.as_str();
        let Some(channel) = topic::channel_of(&self.prefix, topic) else {
            log::debug!("ignoring a message on foreign topic {topic:?}");
            return;
        };
        match serde_json::from_slice::<Message>(&publish.payload) {
            Ok(message) if message.channel == channel && message.id > 0 => {
                self.hub.deliver(channel, Frame::from_message(&message));
            }
            Ok(_) => log::warn!("dropping a message whose channel or id does not match {topic}"),
            Err(e) => log::warn!("dropping an unreadable message on {topic}: {e}"),
        }
    }
}
