//! broadcast-sse's subscriber after a broker restart while channels join and
//! leave: the reconnect completes and every channel with a listener is
//! subscribed again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use protocol::ChannelId;

use crate::broker::Broker;
use crate::helpers::{TestApp, new_channel};

/// Channels followed across the restart, and channels joined and left around it.
const FOLLOWED: usize = 250;
const CHURNING: usize = 250;
/// What the reconnect and every re-subscription may take.
const RESUBSCRIBED_WITHIN: Duration = Duration::from_secs(10);

pub async fn every_channel_is_subscribed_again_after_a_broker_restart_amid_joins_and_leaves(
    mut app: TestApp,
) {
    let followed: Vec<ChannelId> = (0..FOLLOWED).map(|_| new_channel()).collect();
    let mut streams = Vec::with_capacity(FOLLOWED);
    for channel in &followed {
        streams.push(app.open_stream(*channel, None).await);
    }
    let churning = Arc::new(AtomicBool::new(true));
    let churn = tokio::spawn(join_and_leave(
        app.http.clone(),
        app.sse.url.clone(),
        churning.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.broker.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    app.broker.restart();
    let restarted = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    for channel in &followed {
        app.post_message(*channel, "ann", "after the restart").await;
    }
    for (channel, stream) in followed.iter().zip(&mut streams) {
        let deadline = (restarted + RESUBSCRIBED_WITHIN).into();
        let message = tokio::time::timeout_at(deadline, stream.next_message())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{channel} was not subscribed again within {RESUBSCRIBED_WITHIN:?} of the restart"
                )
            });
        assert_eq!(message.text, "after the restart");
    }
    churning.store(false, Ordering::Relaxed);
    churn.await.expect("the churn ended");
}

/// Opens and drops streams on [`CHURNING`] channels, one after another, while
/// `churning` holds (bounded by count and time).
async fn join_and_leave(http: reqwest::Client, base: String, churning: Arc<AtomicBool>) {
    let channels: Vec<ChannelId> = (0..CHURNING).map(|_| new_channel()).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    for channel in channels.iter().cycle().take(100_000) {
        if !churning.load(Ordering::Relaxed) || Instant::now() > deadline {
            return;
        }
        let open = http.get(format!("{base}/channels/{channel}/events")).send();
        // Joined once the headers come; left when the response is dropped.
        let _ = tokio::time::timeout(Duration::from_millis(200), open).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_an_embedded_broker_process() {
    let app = TestApp::on(Broker::embedded_process()).await;
    every_channel_is_subscribed_again_after_a_broker_restart_amid_joins_and_leaves(app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_mosquitto() {
    if let Some(broker) = Broker::mosquitto() {
        let app = TestApp::on(broker).await;
        every_channel_is_subscribed_again_after_a_broker_restart_amid_joins_and_leaves(app).await;
    }
}
