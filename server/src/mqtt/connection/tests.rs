use super::*;

#[test]
fn pauses_double_up_to_the_last_and_start_again_once_connected() {
    let mut backoff = Backoff::default();
    let pauses: Vec<Duration> = (0..6).map(|_| backoff.next()).collect();
    assert_eq!(
        pauses,
        [250, 500, 1000, 2000, 4000, 4000].map(Duration::from_millis)
    );
    backoff.reset();
    assert_eq!(backoff.next(), FIRST_RETRY);
}

#[test]
fn the_session_sets_the_clean_session_flag() {
    for (session, clean) in [(Session::Fresh, true), (Session::Persistent, false)] {
        let mut options = MqttOptions::new("session-test", "127.0.0.1", 1883);
        session.apply(&mut options);
        assert_eq!(options.clean_session(), clean, "{session:?}");
    }
}

#[test]
fn the_events_a_client_acts_on_are_handed_out_and_the_rest_kept() {
    let sent = translate(Event::Outgoing(Outgoing::Subscribe(7)));
    assert!(matches!(sent, Some(Driven::Sent(Sent::Subscribe(7)))));
    let acked = translate(Event::Incoming(Incoming::PubAck(rumqttc::PubAck::new(3))));
    assert!(matches!(acked, Some(Driven::PubAck(3))));
    assert!(translate(Event::Outgoing(Outgoing::PingReq)).is_none());
    assert!(translate(Event::Incoming(Incoming::PingResp)).is_none());
}

/// Options for a loopback port nobody listens on (the listener that picked
/// it is gone).
fn refused_options() -> MqttOptions {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address").port()
    };
    MqttOptions::new("driver-test", "127.0.0.1", port)
}

const CAPACITY: Capacity = Capacity {
    requests: 8,
    events: 4,
};

#[tokio::test]
async fn a_refused_connection_is_reported_and_retried_until_the_receiver_goes() {
    let Driver {
        mut events, task, ..
    } = open(refused_options(), Session::Fresh, CAPACITY);
    for attempt in 0..2 {
        let event = tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .expect("reported in time");
        assert!(
            matches!(event, Some(Driven::Lost(_))),
            "attempt {attempt}: {event:?}"
        );
    }
    drop(events);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the driver stops once nobody listens")
        .expect("no panic");
}

#[tokio::test]
async fn a_request_for_a_connection_that_is_not_up_is_refused() {
    let driver = open(refused_options(), Session::Fresh, CAPACITY);
    let refused = driver.requests.subscribe(
        ConnectionId(1),
        [rumqttc::SubscribeFilter::new(
            "t".into(),
            rumqttc::QoS::AtLeastOnce,
        )],
    );
    assert!(matches!(
        refused,
        Err(crate::mqtt::requests::Refused::NotConnected)
    ));
}
