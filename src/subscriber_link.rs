//! The subscriber's link into the embedded broker's router (rumqttd's local
//! link), the twin of the publisher's (`broker_link`): a message reaches the
//! streams without the broker's network thread, a loopback TCP trip, and
//! MQTT's encoding and decoding. What the router sends is handed to the
//! subscriber as the same events a network connection reports, so the
//! subscriber, the hub and the streams run the same code as on any node.

use broadcast_sse::bus::link::{InProcessLink, LinkRequests, link_connection};
use futures_util::FutureExt;
use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::protocol::{
    Filter, Packet, Publish, QoS, RetainForwardRule, SubAck, Subscribe, SubscribeReasonCode,
    Unsubscribe,
};
use server::mqtt::connection::Driven;
use tokio::sync::mpsc;

use crate::broker_link::{gone, next_packet};

/// The link's two halves, as `rumqttd::Broker::link` returns them, ready for
/// the subscriber.
pub fn subscriber_link(tx: LinkTx, rx: LinkRx) -> InProcessLink {
    InProcessLink {
        requests: Box::new(Sender {
            tx,
            last_packet_id: 0,
        }),
        forward: Box::new(move |events| Box::pin(forward(rx, events))),
    }
}

struct Sender {
    tx: LinkTx,
    last_packet_id: u16,
}

impl Sender {
    /// Packet ids run 1..=65535 (0 is not one).
    fn next_packet_id(&mut self) -> u16 {
        self.last_packet_id = self.last_packet_id.checked_add(1).unwrap_or(1);
        self.last_packet_id
    }

    /// Queues `packet` for the router and tells it. rumqttd's `send` never
    /// awaits anything: like the publisher's link, it waits only while the
    /// router is a thousand events behind.
    fn send(&mut self, packet: Packet) -> Result<(), String> {
        match self.tx.send(packet).now_or_never() {
            Some(sent) => sent.map(drop).map_err(gone),
            None => Err("the broker in this process did not take the request".into()),
        }
    }
}

impl LinkRequests for Sender {
    fn subscribe(&mut self, filters: Vec<String>) -> Result<u16, String> {
        let filters = filters.into_iter().map(at_most_once).collect();
        let pkid = self.next_packet_id();
        self.send(Packet::Subscribe(Subscribe { pkid, filters }, None))?;
        Ok(pkid)
    }

    fn unsubscribe(&mut self, filter: String) -> Result<(), String> {
        let pkid = self.next_packet_id();
        let filters = vec![filter];
        self.send(Packet::Unsubscribe(Unsubscribe { pkid, filters }, None))
    }
}

fn at_most_once(path: String) -> Filter {
    Filter {
        path,
        qos: QoS::AtMostOnce,
        nolocal: false,
        preserve_retain: false,
        retain_forward_rule: RetainForwardRule::Never,
    }
}

/// Says the link is up, then hands what the router sends to the subscriber.
async fn forward(mut rx: LinkRx, events: mpsc::Sender<Driven>) -> Result<(), String> {
    let connected = Driven::Connected {
        id: link_connection(),
        session_present: false,
    };
    if events.send(connected).await.is_err() {
        return Ok(());
    }
    loop {
        let driven = match next_packet(&mut rx).await? {
            Packet::Publish(publish, _) => match driven_publish(publish) {
                Some(driven) => driven,
                None => continue,
            },
            Packet::SubAck(ack, _) => driven_suback(ack),
            Packet::Disconnect(..) => return Err("the broker disconnected the link".into()),
            _ => continue,
        };
        if events.send(driven).await.is_err() {
            return Ok(());
        }
    }
}

/// A publish as a network connection reports it; `None` for a topic that is
/// not UTF-8 (no topic of ours).
fn driven_publish(publish: Publish) -> Option<Driven> {
    let topic = String::from_utf8(publish.topic.to_vec()).ok()?;
    let publish = rumqttc::Publish::from_bytes(topic, rumqttc::QoS::AtMostOnce, publish.payload);
    Some(Driven::Publish(publish))
}

/// A SUBACK as a network connection reports it: every code that grants a
/// QoS is a success, any other a failure.
fn driven_suback(ack: SubAck) -> Driven {
    let codes = ack
        .return_codes
        .iter()
        .map(|code| match code {
            SubscribeReasonCode::QoS0 | SubscribeReasonCode::Success(QoS::AtMostOnce) => {
                rumqttc::SubscribeReasonCode::Success(rumqttc::QoS::AtMostOnce)
            }
            SubscribeReasonCode::QoS1 | SubscribeReasonCode::Success(QoS::AtLeastOnce) => {
                rumqttc::SubscribeReasonCode::Success(rumqttc::QoS::AtLeastOnce)
            }
            SubscribeReasonCode::QoS2 | SubscribeReasonCode::Success(QoS::ExactlyOnce) => {
                rumqttc::SubscribeReasonCode::Success(rumqttc::QoS::ExactlyOnce)
            }
            _ => rumqttc::SubscribeReasonCode::Failure,
        })
        .collect();
    Driven::SubAck(rumqttc::SubAck::new(ack.pkid, codes))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rumqttc::{AsyncClient, MqttOptions};

    use super::*;
    use crate::embedded_broker;

    const WAIT: Duration = Duration::from_secs(10);
    /// Far more than the router hands a link before it waits for it (200).
    const MESSAGES: usize = 1_000;

    async fn next(events: &mut mpsc::Receiver<Driven>) -> Driven {
        tokio::time::timeout(WAIT, events.recv())
            .await
            .expect("an event in time")
            .expect("the link forwards")
    }

    /// A network client of the broker, its event loop polled a bounded number
    /// of times.
    fn network_client(broker: std::net::SocketAddr) -> AsyncClient {
        let options = MqttOptions::new("link-test", broker.ip().to_string(), broker.port());
        let (client, mut eventloop) = AsyncClient::new(options, MESSAGES);
        tokio::spawn(async move {
            for _ in 0..10 * MESSAGES {
                if eventloop.poll().await.is_err() {
                    return;
                }
            }
        });
        client
    }

    /// The link says it is up, answers its SUBSCRIBE with a SUBACK under the
    /// packet id it returned, then hands over every message published on the
    /// filter in order, even while its subscriber was not reading (the router
    /// pauses the link and is woken again), and nothing after UNSUBSCRIBE.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_subscribed_link_gets_every_message_in_order_and_none_after_unsubscribing() {
        let (listeners, links) =
            embedded_broker::start_linked("127.0.0.1:0", None).expect("an embedded broker");
        let InProcessLink {
            mut requests,
            forward,
        } = links.subscriber;
        let (sender, mut events) = mpsc::channel(8);
        tokio::spawn(forward(sender));
        assert!(matches!(next(&mut events).await, Driven::Connected { .. }));

        let pkid = requests
            .subscribe(vec!["test/+/messages".into()])
            .expect("subscribed");
        let Driven::SubAck(ack) = next(&mut events).await else {
            panic!("a SUBACK first");
        };
        assert_eq!(ack.pkid, pkid);
        assert_eq!(
            ack.return_codes,
            [rumqttc::SubscribeReasonCode::Success(
                rumqttc::QoS::AtMostOnce
            )]
        );

        let client = network_client(listeners.tcp);
        for n in 0..MESSAGES {
            let payload = n.to_string();
            client
                .publish("test/1/messages", rumqttc::QoS::AtLeastOnce, false, payload)
                .await
                .expect("queued");
        }
        // The link's subscriber reads only now: the router had to wait for it.
        tokio::time::sleep(Duration::from_millis(200)).await;
        for n in 0..MESSAGES {
            let Driven::Publish(publish) = next(&mut events).await else {
                panic!("message {n}");
            };
            assert_eq!(publish.topic, "test/1/messages");
            assert_eq!(publish.payload.as_ref(), n.to_string().as_bytes());
        }

        requests
            .unsubscribe("test/+/messages".into())
            .expect("unsubscribed");
        // A message after it would come before this one, on the link itself.
        tokio::time::sleep(Duration::from_millis(200)).await;
        client
            .publish("test/1/messages", rumqttc::QoS::AtLeastOnce, false, "late")
            .await
            .expect("queued");
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(events.try_recv().is_err(), "nothing after unsubscribing");
    }

    #[test]
    fn every_granted_qos_is_a_success_and_anything_else_a_failure() {
        let ack = SubAck {
            pkid: 7,
            return_codes: vec![
                SubscribeReasonCode::QoS0,
                SubscribeReasonCode::Success(QoS::AtLeastOnce),
                SubscribeReasonCode::NotAuthorized,
            ],
        };
        let Driven::SubAck(ack) = driven_suback(ack) else {
            panic!("a SUBACK");
        };
        use rumqttc::{QoS as Q, SubscribeReasonCode as Code};
        assert_eq!(ack.pkid, 7);
        assert_eq!(
            ack.return_codes,
            [
                Code::Success(Q::AtMostOnce),
                Code::Success(Q::AtLeastOnce),
                Code::Failure
            ]
        );
    }
}
