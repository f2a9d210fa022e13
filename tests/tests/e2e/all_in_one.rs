//! The all-in-one `crier` binary: embedded broker, both services, the demo page
//! and its client module on one port.

use protocol::{Message, topic};
use reqwest::StatusCode;
use rumqttc::{AsyncClient, Event, Incoming, QoS};

use crate::broker::Broker;
use crate::helpers::{
    CRIER, WAIT, eventually, listeners, new_channel, open_stream, wait_for_ready,
};
use crate::process::Service;

#[tokio::test]
async fn crier_serves_the_demo_page_posts_and_streams_on_one_port() {
    let dir = tempfile::tempdir().expect("temp dir");
    let crier = start_crier(&dir, &[]);
    let http = crate::helpers::http_client();
    wait_for_ready(&http, &crier.url).await;

    let page = http
        .get(format!("{}/", crier.url))
        .send()
        .await
        .expect("GET /");
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.expect("page text");
    for element in [
        r#"id="send""#,
        r#"name="author""#,
        r#"name="text""#,
        r#"id="messages""#,
        r#"id="status""#,
    ] {
        assert!(html.contains(element), "demo page has {element}");
    }
    assert!(
        html.contains(r#"import { Crier } from "./crier.js";"#),
        "the page imports the client module next to it"
    );
    let module = http
        .get(format!("{}/crier.js", crier.url))
        .send()
        .await
        .expect("GET /crier.js");
    assert_eq!(module.status(), StatusCode::OK);
    let content_type = module.headers().get("content-type").cloned();
    assert_eq!(
        content_type.as_ref().and_then(|v| v.to_str().ok()),
        Some("text/javascript; charset=utf-8"),
        "browsers run a module only with a JavaScript type"
    );
    let module = module.text().await.expect("module text");
    assert!(module.contains("export const Crier"), "the client module");

    let channel = new_channel();
    let mut stream = open_stream(&http, &crier.url, channel, None).await;
    let response = http
        .post(format!("{}/channels/{channel}/messages", crier.url))
        .header("content-type", "text/plain")
        .query(&[("author", "ann")])
        .body("hi from text/plain")
        .send()
        .await
        .expect("POST");
    assert_eq!(
        response.status(),
        StatusCode::CREATED,
        "log:\n{}",
        crier.log_text()
    );
    let location = response.headers().get("location").cloned();
    assert_eq!(
        location.as_ref().and_then(|v| v.to_str().ok()),
        Some(format!("/channels/{channel}/messages/1").as_str())
    );
    let message = stream.next_message().await;
    assert_eq!((message.id, message.author.as_str()), (1, "ann"));
    assert_eq!(message.text, "hi from text/plain");
}

/// The all-in-one answers a cursor past the newest id with `event: reset`, also
/// after a restart on an emptied data directory.
#[tokio::test]
async fn crier_resets_a_cursor_past_the_newest_id_also_after_its_data_was_emptied() {
    let dir = tempfile::tempdir().expect("temp dir");
    let http = crate::helpers::http_client();
    let channel = new_channel();
    let crier = start_crier(&dir, &[]);
    wait_for_ready(&http, &crier.url).await;
    for text in ["one", "two"] {
        post(&http, &crier.url, channel, text).await;
    }
    let mut stream = open_stream(&http, &crier.url, channel, Some(7)).await;
    assert_eq!(stream.next_reset().await, 2);
    assert_eq!(stream.next_ids(2).await, [1, 2]);
    crier.kill();

    std::fs::remove_dir_all(dir.path().join("data")).expect("empty the data");
    let crier = start_crier(&dir, &[]);
    wait_for_ready(&http, &crier.url).await;
    let fresh = post(&http, &crier.url, channel, "after the reset").await;
    assert_eq!(fresh.id, 1);
    let mut stream = open_stream(&http, &crier.url, channel, Some(2)).await;
    assert_eq!(stream.next_reset().await, 1);
    assert_eq!(stream.next_message().await, fresh);
}

/// The all-in-one holds its wildcard subscription only while a stream is open:
/// once the last one left, a new stream still gets what it missed and then the
/// live messages.
#[tokio::test]
async fn crier_streams_again_after_every_stream_left() {
    let dir = tempfile::tempdir().expect("temp dir");
    let http = crate::helpers::http_client();
    let channel = new_channel();
    let crier = start_crier(&dir, &[]);
    wait_for_ready(&http, &crier.url).await;
    let mut stream = open_stream(&http, &crier.url, channel, None).await;
    let first = post(&http, &crier.url, channel, "one").await;
    assert_eq!(stream.next_message().await, first);
    drop(stream);
    eventually("the last stream left", || async {
        listeners(&http, &crier.url).await == 0
    })
    .await;
    let missed = post(&http, &crier.url, channel, "while nobody listened").await;
    let mut stream = open_stream(&http, &crier.url, channel, Some(first.id)).await;
    assert_eq!(stream.next_message().await, missed, "from history");
    let live = post(&http, &crier.url, channel, "live again").await;
    assert_eq!(
        stream.next_message().await,
        live,
        "live after resubscribing"
    );
}

/// The all-in-one delivers through its broker exactly like the split deployment:
/// with the broker down it still stores (and answers `201`), and once the broker
/// is back the outbox is published and streams get everything, in order.
#[tokio::test]
async fn crier_stores_while_its_broker_is_down_and_streams_it_all_once_it_is_back() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut broker = Broker::embedded_process();
    broker.kill();
    let crier = start_crier(&dir, &["--mqtt-url".into(), broker.url.clone()]);
    let http = crate::helpers::http_client();
    eventually("crier answers /healthz", || async {
        let response = http.get(format!("{}/healthz", crier.url)).send().await;
        response.is_ok_and(|r| r.status() == StatusCode::OK)
    })
    .await;
    let readiness = http.get(format!("{}/readyz", crier.url)).send().await;
    let readiness = readiness.expect("GET /readyz");
    assert_eq!(readiness.status(), StatusCode::SERVICE_UNAVAILABLE);

    let channel = new_channel();
    for text in ["one", "two"] {
        post(&http, &crier.url, channel, text).await;
    }
    broker.restart();
    eventually("crier is ready with its broker back", || async {
        let response = http.get(format!("{}/readyz", crier.url)).send().await;
        response.is_ok_and(|r| r.status() == StatusCode::OK)
    })
    .await;
    let mut stream = open_stream(&http, &crier.url, channel, Some(0)).await;
    post(&http, &crier.url, channel, "three").await;
    for (id, text) in [(1, "one"), (2, "two"), (3, "three")] {
        let message = stream.next_message().await;
        assert_eq!((message.id, message.text.as_str()), (id, text));
    }
}

/// The all-in-one's publisher reaches its embedded broker in process, not over
/// TCP; MQTT clients of that broker must still get every message, at QoS 1, and
/// the broker's acknowledgements must empty the outbox.
#[tokio::test]
async fn crier_publishes_what_it_stores_to_its_embedded_broker_at_qos_1() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (crier, broker_address) = start_crier_with_broker(&dir).await;
    let http = crate::helpers::http_client();

    let channel = new_channel();
    let broker = server::mqtt::BrokerUrl::parse(&format!("mqtt://{broker_address}"), None);
    let options = broker.expect("broker url").options("crier-test-watcher");
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    client
        .subscribe(topic::all_channels_filter("crier"), QoS::AtLeastOnce)
        .await
        .expect("subscribe queued");
    let texts = ["one", "two", "three"];
    let watch = async {
        let mut seen = Vec::new();
        while seen.len() < texts.len() {
            match eventloop.poll().await.expect("watcher stays connected") {
                Event::Incoming(Incoming::SubAck(_)) => {
                    for text in texts {
                        post(&http, &crier.url, channel, text).await;
                    }
                }
                Event::Incoming(Incoming::Publish(publish)) => {
                    assert_eq!(publish.qos, QoS::AtLeastOnce, "delivered at QoS 1");
                    assert_eq!(publish.topic, topic::channel_topic("crier", channel));
                    let message: Message =
                        serde_json::from_slice(&publish.payload).expect("payload is message JSON");
                    seen.push(message);
                }
                _ => {}
            }
        }
        seen
    };
    let seen = tokio::time::timeout(WAIT, watch)
        .await
        .expect("the embedded broker relays in time");
    let seen: Vec<(u64, String)> = seen.into_iter().map(|m| (m.id, m.text)).collect();
    assert_eq!(
        seen,
        [(1, "one".into()), (2, "two".into()), (3, "three".into())]
    );
    eventually("the broker acknowledged everything", || async {
        let response = http.get(format!("{}/readyz", crier.url)).send().await;
        let report = match response {
            Ok(response) => response.json::<serde_json::Value>().await.ok(),
            Err(_) => None,
        };
        report.is_some_and(|report| report["outbox"] == 0)
    })
    .await;
}

/// The publisher queues a batch of publishes for the embedded broker's router and
/// wakes it once: none reaches a subscriber before the batch is sent, then every
/// one does, in order, and each is acknowledged.
#[tokio::test]
async fn a_batch_of_in_process_publishes_reaches_subscribers_in_order_once_sent() {
    use chat_service::publish::link::{BrokerTarget, LinkEvent, open};

    let (listeners, links) =
        crier::embedded_broker::start_linked("127.0.0.1:0", None).expect("embedded broker starts");
    let address = listeners.tcp;
    let mut connection = open(BrokerTarget::Link(Box::new(links.publisher)), 512)
        .expect("the in-process link opens");
    let broker = server::mqtt::BrokerUrl::parse(&format!("mqtt://{address}"), None);
    let options = broker
        .expect("broker url")
        .options("crier-test-batch-watcher");
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    let channel = new_channel();
    let topic = topic::channel_topic("crier", channel);
    client
        .subscribe(topic.clone(), QoS::AtLeastOnce)
        .await
        .expect("subscribe queued");
    let subscribed = async {
        while !matches!(
            eventloop.poll().await.expect("watcher connects"),
            Event::Incoming(Incoming::SubAck(_))
        ) {}
    };
    tokio::time::timeout(WAIT, subscribed)
        .await
        .expect("subscribed in time");

    let mut packet_ids = Vec::new();
    for n in 1..=5 {
        let payload = bytes::Bytes::from(format!("{n}"));
        let packet_id = connection.publish(topic.clone(), payload).await;
        packet_ids.push(packet_id.expect("handed over").expect("packet id"));
    }
    assert!(
        next_publish(&mut eventloop).await.is_none(),
        "nothing reaches a subscriber before the batch is sent"
    );
    connection.send_held().await.expect("the batch is sent");
    let mut received = Vec::new();
    for _ in 1..=5 {
        let payload = next_publish(&mut eventloop)
            .await
            .expect("delivered in time");
        received.push(String::from_utf8_lossy(&payload).into_owned());
    }
    assert_eq!(received, ["1", "2", "3", "4", "5"]);

    let mut acknowledged = Vec::new();
    while acknowledged.len() < packet_ids.len() {
        let event = tokio::time::timeout(WAIT, connection.recv()).await;
        match event.expect("acknowledged in time") {
            Some(LinkEvent::Acknowledged(packet_id)) => acknowledged.push(packet_id),
            Some(_) => {}
            None => panic!("the link closed"),
        }
    }
    assert_eq!(acknowledged, packet_ids);
}

/// The payload of the next publish the watcher receives, if one comes within
/// half a second.
async fn next_publish(eventloop: &mut rumqttc::EventLoop) -> Option<bytes::Bytes> {
    let poll = async {
        loop {
            let event = eventloop.poll().await.expect("watcher stays connected");
            if let Event::Incoming(Incoming::Publish(publish)) = event {
                return publish.payload;
            }
        }
    };
    let half_a_second = std::time::Duration::from_millis(500);
    tokio::time::timeout(half_a_second, poll).await.ok()
}

/// Posts as `ann`; the answer must be `201` with the stored message.
async fn post(
    http: &reqwest::Client,
    base: &str,
    channel: protocol::ChannelId,
    text: &str,
) -> Message {
    let response = http
        .post(format!("{base}/channels/{channel}/messages"))
        .json(&serde_json::json!({"author": "ann", "text": text}))
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json().await.expect("the stored message")
}

/// The crier binary with its embedded broker also listening on a free
/// loopback port, once it is ready; and that port's address.
pub async fn start_crier_with_broker(dir: &tempfile::TempDir) -> (Service, std::net::SocketAddr) {
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
    let broker_address = free.local_addr().expect("address");
    drop(free);
    let flags = [
        "--embedded-broker-listen".into(),
        broker_address.to_string(),
    ];
    let crier = start_crier(dir, &flags);
    wait_for_ready(&crate::helpers::http_client(), &crier.url).await;
    (crier, broker_address)
}

/// The crier binary on a free port, its data and log in `dir`.
pub fn start_crier(dir: &tempfile::TempDir, flags: &[String]) -> Service {
    let mut args = vec![
        "--listen".to_string(),
        "127.0.0.1:0".into(),
        "--data-dir".into(),
        dir.path().join("data").display().to_string(),
    ];
    args.extend_from_slice(flags);
    Service::start(CRIER, &args, &dir.path().join("crier.log"))
}
