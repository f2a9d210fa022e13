//! broadcast-sse's subscriber after a broker restart, or a cut of a slow link
//! to it, while channels join and leave: the reconnect completes and every
//! channel with a listener is subscribed again.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use protocol::ChannelId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use crate::broker::Broker;
use crate::helpers::{TestApp, new_channel};

/// Channels followed across the restart, and channels joined and left around it.
const FOLLOWED: usize = 250;
const CHURNING: usize = 250;
/// What the reconnect and every re-subscription may take.
const RESUBSCRIBED_WITHIN: Duration = Duration::from_secs(10);

pub async fn every_channel_is_subscribed_again_after_a_broker_restart_amid_joins_and_leaves(
    app: TestApp,
) {
    every_channel_is_subscribed_again_after_an_outage_amid_joins_and_leaves(app, async |app| {
        app.broker.kill();
        tokio::time::sleep(Duration::from_millis(500)).await;
        app.broker.restart();
    })
    .await;
}

async fn every_channel_is_subscribed_again_after_an_outage_amid_joins_and_leaves(
    mut app: TestApp,
    outage: impl AsyncFnOnce(&mut TestApp),
) {
    let followed: Vec<ChannelId> = (0..FOLLOWED).map(|_| new_channel()).collect();
    let opening = followed
        .iter()
        .map(|channel| app.open_stream(*channel, None));
    let mut streams = futures_util::future::join_all(opening).await;
    let churning = Arc::new(AtomicBool::new(true));
    let churn = tokio::spawn(join_and_leave(
        app.http.clone(),
        app.sse.url.clone(),
        churning.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    outage(&mut app).await;
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
                    "{channel} was not subscribed again within {RESUBSCRIBED_WITHIN:?} of the outage"
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

/// Each way of the slow link to the broker.
const LATENCY: Duration = Duration::from_millis(40);

/// The broker stays up; the link to it is slow and is cut once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_a_slow_link_that_is_cut() {
    let broker = Broker::embedded_process();
    let address = broker.url.trim_start_matches("mqtt://").parse();
    let link = SlowLink::to(address.expect("broker address"), LATENCY).await;
    let app = TestApp::on(Broker::alias(link.url())).await;
    every_channel_is_subscribed_again_after_an_outage_amid_joins_and_leaves(app, async |_| {
        link.cut();
    })
    .await;
    drop(broker);
}

/// A TCP relay to a broker that delays what it passes, each way, and can cut
/// every connection through it at once.
struct SlowLink {
    address: SocketAddr,
    cuts: Arc<watch::Sender<u64>>,
}

impl SlowLink {
    async fn to(broker: SocketAddr, latency: Duration) -> SlowLink {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let cuts = Arc::new(watch::Sender::new(0));
        let cut = cuts.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if let Ok(upstream) = TcpStream::connect(broker).await {
                    tokio::spawn(relay_slowly(client, upstream, latency, cut.subscribe()));
                }
            }
        });
        SlowLink { address, cuts }
    }

    fn url(&self) -> String {
        format!("mqtt://{}", self.address)
    }

    fn cut(&self) {
        self.cuts.send_modify(|cuts| *cuts += 1);
    }
}

/// Passes bytes both ways, each `latency` late, until a side closes or the
/// link is cut; then both close.
async fn relay_slowly(
    client: TcpStream,
    upstream: TcpStream,
    latency: Duration,
    mut cut: watch::Receiver<u64>,
) {
    let (client_read, client_write) = client.into_split();
    let (upstream_read, upstream_write) = upstream.into_split();
    tokio::select! {
        () = pass_late(client_read, upstream_write, latency) => {}
        () = pass_late(upstream_read, client_write, latency) => {}
        _ = cut.changed() => {}
    }
}

/// Passes what `from` reads to `to`, in order, each chunk `latency` after it came.
async fn pass_late(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, latency: Duration) {
    let (chunks, mut due) = mpsc::channel::<(tokio::time::Instant, Vec<u8>)>(1024);
    let read = async move {
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            let read = from.read(&mut buffer).await.unwrap_or(0);
            let chunk = (
                tokio::time::Instant::now() + latency,
                buffer[..read].to_vec(),
            );
            if read == 0 || chunks.send(chunk).await.is_err() {
                return;
            }
        }
    };
    let write = async move {
        while let Some((at, chunk)) = due.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
    };
    tokio::join!(read, write);
}
