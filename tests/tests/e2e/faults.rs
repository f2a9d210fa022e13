//! Fault injection with real processes: `kill -9` of the chat-service, a broker
//! killed and started again on the same port, clients that reconnect or stall, and
//! `SIGTERM`. Each test proves one invariant of the design.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use protocol::ChannelId;
use reqwest::StatusCode;

use crate::helpers::{EventStream, TestApp, WAIT, eventually, new_channel};

/// Rounds of the `kill -9` test; raise with `CRIER_KILL_ROUNDS` for a soak.
const DEFAULT_KILL_ROUNDS: usize = 3;

/// 300 concurrent POSTs, `kill -9` the moment the last answer arrives, restart on
/// the same data dir: every acknowledged message is there, ids are exactly 1..=300,
/// and the next POST gets 301. Repeated for several rounds.
pub async fn acknowledged_posts_survive_kill_9_with_ids_1_to_n(mut app: TestApp) {
    let rounds = std::env::var("CRIER_KILL_ROUNDS")
        .ok()
        .and_then(|raw| raw.parse().ok())
        .unwrap_or(DEFAULT_KILL_ROUNDS);
    for round in 1..=rounds {
        let channel = new_channel();
        let mut acknowledged = post_concurrently(&app, channel, 300).await;
        app.kill_chat_service();
        app.start_chat_service_again();
        app.wait_until_ready().await;

        acknowledged.sort_unstable();
        let expected: Vec<u64> = (1..=300).collect();
        assert_eq!(acknowledged, expected, "round {round}: acknowledged ids");
        let stored: Vec<u64> = app
            .whole_history(channel)
            .await
            .iter()
            .map(|m| m.id)
            .collect();
        assert_eq!(stored, expected, "round {round}: history after kill -9");
        let next = app.post_message(channel, "ann", "after").await;
        assert_eq!(next.id, 301, "round {round}: numbering continues");
    }
}

/// POSTs `count` messages at once; every one must be acknowledged (`201`).
async fn post_concurrently(app: &TestApp, channel: ChannelId, count: usize) -> Vec<u64> {
    let texts: Vec<String> = (0..count).map(|n| format!("message {n}")).collect();
    let posts = texts
        .iter()
        .map(|text| app.post_message(channel, "ann", text));
    futures_util::future::join_all(posts)
        .await
        .iter()
        .map(|message| message.id)
        .collect()
}

/// A stream is open; 3 messages; the broker dies; 7 more are accepted; the broker
/// comes back on the same port: the stream shows 1..=10 once each, in order.
pub async fn a_stream_is_complete_across_a_broker_restart(mut app: TestApp) {
    let channel = new_channel();
    let mut stream = app.open_stream(channel, None).await;
    post_numbered(&app, channel, 1..=3).await;
    assert_eq!(stream.next_ids(3).await, [1, 2, 3]);

    app.broker.kill();
    post_numbered(&app, channel, 4..=10).await;
    app.broker.restart();

    expect_4_to_10_once_and_an_empty_outbox(&app, &mut stream).await;
}

/// As above, and the chat-service is also killed and restarted while the broker is
/// down: the 7 unacknowledged messages wait in its outbox on disk, and reach the
/// broker once it is back.
pub async fn the_outbox_survives_a_chat_service_restart_while_the_broker_is_down(mut app: TestApp) {
    let channel = new_channel();
    let mut stream = app.open_stream(channel, None).await;
    post_numbered(&app, channel, 1..=3).await;
    assert_eq!(stream.next_ids(3).await, [1, 2, 3]);
    eventually("the broker acknowledged 1..=3", || outbox_is_empty(&app)).await;

    app.broker.kill();
    post_numbered(&app, channel, 4..=10).await;
    app.kill_chat_service();
    app.start_chat_service_again();
    let (status, report) = app.chat_readiness().await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{report}");
    assert_eq!(report["broker"], "disconnected");
    assert_eq!(report["outbox"], 7, "the outbox was read back from disk");

    app.broker.restart();
    expect_4_to_10_once_and_an_empty_outbox(&app, &mut stream).await;
}

/// `/readyz` of both services turns `503` while the broker is down and `200`
/// once it is back; `/healthz` answers `200` all along (the process is fine).
pub async fn readiness_follows_the_broker_and_liveness_does_not(mut app: TestApp) {
    let services = [app.chat_url().to_string(), app.sse.url.clone()];
    let status_of = |url: String| {
        let http = app.http.clone();
        async move {
            let response = http.get(url).send().await;
            response.map(|r| r.status()).ok()
        }
    };
    for base in &services {
        assert_eq!(
            status_of(format!("{base}/readyz")).await,
            Some(StatusCode::OK)
        );
    }
    app.broker.kill();
    for base in &services {
        eventually("not ready without the broker", || async {
            status_of(format!("{base}/readyz")).await == Some(StatusCode::SERVICE_UNAVAILABLE)
        })
        .await;
        let live = status_of(format!("{base}/healthz")).await;
        assert_eq!(live, Some(StatusCode::OK), "{base} is alive");
    }
    app.broker.restart();
    for base in &services {
        eventually("ready again with the broker", || async {
            status_of(format!("{base}/readyz")).await == Some(StatusCode::OK)
        })
        .await;
        let live = status_of(format!("{base}/healthz")).await;
        assert_eq!(live, Some(StatusCode::OK), "{base} is alive");
    }
}

async fn expect_4_to_10_once_and_an_empty_outbox(app: &TestApp, stream: &mut EventStream) {
    assert_eq!(stream.next_ids(7).await, (4..=10).collect::<Vec<_>>());
    stream
        .expect_no_message_within(Duration::from_millis(500))
        .await;
    eventually("the outbox drains", || outbox_is_empty(app)).await;
}

async fn post_numbered(app: &TestApp, channel: ChannelId, ids: std::ops::RangeInclusive<u64>) {
    for expected in ids {
        let message = app
            .post_message(channel, "ann", &format!("#{expected}"))
            .await;
        assert_eq!(message.id, expected);
    }
}

async fn outbox_is_empty(app: &TestApp) -> bool {
    let (status, report) = app.chat_readiness().await;
    status == StatusCode::OK && report["outbox"] == 0
}

/// A client reconnects with `Last-Event-ID` 20 times, after a random number of
/// messages, while 1,000 flow: it sees each id exactly once, in order.
pub async fn reconnecting_20_times_while_1000_messages_flow_loses_and_repeats_nothing(
    app: TestApp,
) {
    const TOTAL: u64 = 1000;
    let app = Arc::new(app);
    let channel = new_channel();
    let cuts = random_cut_points(20, TOTAL);
    let mut stream = app.open_stream(channel, None).await;
    let poster = tokio::spawn(post_many(app.clone(), channel, TOTAL));

    let mut seen = Vec::with_capacity(TOTAL as usize);
    let mut reconnects = 0;
    while (seen.len() as u64) < TOTAL {
        let id = stream.next_message().await.id;
        seen.push(id);
        if cuts.contains(&id) {
            stream = app.open_stream(channel, Some(id)).await;
            reconnects += 1;
        }
    }
    poster.await.expect("poster finished");
    assert_eq!(reconnects, 20);
    assert_eq!(seen, (1..=TOTAL).collect::<Vec<_>>(), "cut points {cuts:?}");
    stream
        .expect_no_message_within(Duration::from_millis(300))
        .await;
}

/// Posts `total` messages, eight in flight at a time.
async fn post_many(app: Arc<TestApp>, channel: ChannelId, total: u64) {
    futures_util::stream::iter(0..total)
        .map(|n| {
            let app = app.clone();
            async move { app.post_message(channel, "ann", &format!("m{n}")).await }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
}

/// `count` distinct ids in `1..total`, from a seed printed for reproduction.
fn random_cut_points(count: usize, total: u64) -> Vec<u64> {
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |elapsed| elapsed.as_nanos() as u64)
        | 1;
    eprintln!("cut point seed: {seed}");
    let mut cuts = Vec::with_capacity(count);
    while cuts.len() < count {
        // xorshift64
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let cut = 1 + seed % (total - 1);
        if !cuts.contains(&cut) {
            cuts.push(cut);
        }
    }
    cuts
}

/// What a reader may lag behind a POST's answer while another client is stalled.
/// Generous: this machine is shared; a stalled client that held the others back
/// would hold them until it read again, which it does not during the test.
const DELIVERY_BOUND: Duration = Duration::from_secs(2);
/// Enough bytes (1,500 × ~4 KB) to fill the server's socket send buffer, which
/// Linux lets grow to 4 MiB, and its write buffer, so the stalled client really
/// falls behind the ring.
const STALL_MESSAGES: u64 = 1500;

/// One client stops reading while 50 read: the 50 get every message within
/// [`DELIVERY_BOUND`] of its `201`, and the stalled one, when it reads again (or
/// reconnects when told to), still gets every message once, in order.
pub async fn a_stalled_client_neither_slows_others_nor_misses_messages(app: TestApp) {
    let app = Arc::new(app);
    let channel = new_channel();
    let stalled = StalledClient::open(&app.sse.url, channel);
    let mut readers = Vec::new();
    for _ in 0..50 {
        readers.push(app.open_stream(channel, None).await);
    }
    let answered = Arc::new(Mutex::new(HashMap::new()));
    let reading: Vec<_> = readers
        .into_iter()
        .map(|stream| tokio::spawn(read_with_arrival_times(stream, STALL_MESSAGES)))
        .collect();
    post_large_messages(&app, channel, &answered).await;

    let answered = answered.lock().expect("answer times").clone();
    for reader in reading {
        let arrivals = reader.await.expect("reader finished");
        let ids: Vec<u64> = arrivals.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, (1..=STALL_MESSAGES).collect::<Vec<_>>());
        for (id, arrived) in arrivals {
            let delay = arrived.saturating_duration_since(answered[&id]);
            assert!(
                delay <= DELIVERY_BOUND,
                "message {id} arrived {delay:?} after its 201"
            );
        }
    }
    let ids = stalled.resume(&app).await;
    assert_eq!(ids, (1..=STALL_MESSAGES).collect::<Vec<_>>());
}

async fn post_large_messages(
    app: &TestApp,
    channel: ChannelId,
    answered: &Mutex<HashMap<u64, Instant>>,
) {
    let text = "x".repeat(3900);
    for _ in 0..STALL_MESSAGES {
        let id = app.post_message(channel, "ann", &text).await.id;
        answered
            .lock()
            .expect("answer times")
            .insert(id, Instant::now());
    }
}

async fn read_with_arrival_times(mut stream: EventStream, count: u64) -> Vec<(u64, Instant)> {
    let mut arrivals = Vec::with_capacity(count as usize);
    while (arrivals.len() as u64) < count {
        let id = stream.next_message().await.id;
        arrivals.push((id, Instant::now()));
    }
    arrivals
}

/// An SSE client on a raw socket with a tiny receive buffer that reads the response
/// headers and then nothing, until told to resume.
struct StalledClient {
    socket: TcpStream,
    channel: ChannelId,
    received: Vec<u8>,
}

impl StalledClient {
    fn open(base: &str, channel: ChannelId) -> StalledClient {
        let address: std::net::SocketAddr = base
            .trim_start_matches("http://")
            .parse()
            .expect("service address");
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        socket
            .set_recv_buffer_size(4096)
            .expect("small receive buffer");
        socket.connect(&address.into()).expect("connect");
        let mut socket: TcpStream = socket.into();
        let request = format!(
            "GET /channels/{channel}/events HTTP/1.1\r\nHost: {address}\r\n\
             Accept: text/event-stream\r\n\r\n"
        );
        socket.write_all(request.as_bytes()).expect("send request");
        socket.set_read_timeout(Some(WAIT)).expect("read timeout");
        let mut client = StalledClient {
            socket,
            channel,
            received: Vec::new(),
        };
        client.read_until(|received| contains(received, b"\r\n\r\n"));
        assert!(
            client.received.starts_with(b"HTTP/1.1 200"),
            "stream opened"
        );
        client
    }

    /// Reads until `done` holds for what arrived, the server closes, or nothing
    /// arrives for [`WAIT`].
    fn read_until(&mut self, done: impl Fn(&[u8]) -> bool) {
        let mut buffer = [0u8; 64 * 1024];
        while !done(&self.received) {
            match self.socket.read(&mut buffer) {
                Ok(0) | Err(_) => return,
                Ok(n) => self.received.extend_from_slice(&buffer[..n]),
            }
        }
    }

    /// Reads again: every message id, in order. If the server ended the stream
    /// (`event: reconnect`), reconnects with `Last-Event-ID` like a browser.
    async fn resume(mut self, app: &TestApp) -> Vec<u64> {
        let last = format!("id: {STALL_MESSAGES}\n").into_bytes();
        // Read at full speed now: a 4 KiB window would make the rest crawl.
        socket2::SockRef::from(&self.socket)
            .set_recv_buffer_size(1 << 20)
            .expect("larger receive buffer");
        let socket = self.socket.try_clone().expect("socket");
        let received = tokio::task::spawn_blocking(move || {
            self.socket = socket;
            self.read_until(|received| {
                contains(received, &last) || contains(received, b"event: reconnect")
            });
            self
        })
        .await
        .expect("reader thread");
        let mut ids = message_ids(&received.received);
        let last_id = ids.last().copied().unwrap_or(0);
        if last_id < STALL_MESSAGES {
            let mut stream = app.open_stream(received.channel, Some(last_id)).await;
            let missing = (STALL_MESSAGES - last_id) as usize;
            ids.extend(stream.next_ids(missing).await);
        }
        ids
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// Ids of the `event: message` events in a raw (possibly chunked) HTTP body.
fn message_ids(raw: &[u8]) -> Vec<u64> {
    let text = String::from_utf8_lossy(raw);
    let lines: Vec<&str> = text.lines().collect();
    lines
        .windows(2)
        .filter(|pair| pair[1] == "event: message")
        .filter_map(|pair| pair[0].strip_prefix("id: ")?.parse().ok())
        .collect()
}

/// Retention keeps the newest 10 messages of a channel, and a stream resuming from
/// a removed id starts with `event: gap` naming the ids that are gone.
pub async fn retention_trims_to_the_limit_and_a_too_old_resume_gets_a_gap(app: TestApp) {
    let channel = new_channel();
    post_numbered(&app, channel, 1..=25).await;
    eventually("history is trimmed to the newest 10", || async {
        let ids: Vec<u64> = app
            .history(channel, "?after=0&limit=100")
            .await
            .iter()
            .map(|m| m.id)
            .collect();
        ids == (16..=25).collect::<Vec<_>>()
    })
    .await;

    let mut stream = app.open_stream(channel, Some(3)).await;
    let gap = stream.next_event().await;
    assert_eq!(gap.event, "gap");
    assert_eq!(
        gap.id, "15",
        "the gap moves Last-Event-ID past the removed ids"
    );
    let gone: serde_json::Value = serde_json::from_str(&gap.data).expect("gap data is JSON");
    assert_eq!(
        gone,
        serde_json::json!({"channel": channel.to_string(), "from": 4, "to": 15})
    );
    assert_eq!(stream.next_ids(10).await, (16..=25).collect::<Vec<_>>());
    let next = app.post_message(channel, "ann", "after the trim").await;
    assert_eq!(next.id, 26);
    assert_eq!(stream.next_message().await.id, 26);
}

/// What a graceful stop may take; the services end streams at once and give
/// in-flight requests at most 5 s.
const STOP_BOUND: Duration = Duration::from_secs(10);

/// `SIGTERM` to both services with 100 open streams and POSTs in flight: both exit
/// successfully within [`STOP_BOUND`], every stream ends, and every acknowledged
/// message is in history after a restart.
pub async fn sigterm_with_100_open_streams_exits_cleanly_and_loses_nothing(mut app: TestApp) {
    let app_channel = new_channel();
    let mut streams = Vec::new();
    for _ in 0..100 {
        streams.push(app.open_stream(app_channel, None).await);
    }
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let poster = tokio::spawn(post_until_refused(
        app.http.clone(),
        app.chat_url().to_string(),
        app_channel,
        acknowledged.clone(),
    ));
    eventually("some POSTs were acknowledged", || async {
        acknowledged.lock().expect("acks").len() >= 20
    })
    .await;

    let signalled = Instant::now();
    app.chat.as_ref().expect("chat-service").send_sigterm();
    app.sse.send_sigterm();
    for stream in &mut streams {
        stream.expect_end().await;
    }
    let chat = app.chat.as_mut().expect("chat-service");
    let (chat_status, _) = chat.wait_for_exit(STOP_BOUND).await;
    let chat_took = signalled.elapsed();
    let (sse_status, _) = app.sse.wait_for_exit(STOP_BOUND).await;
    let sse_took = signalled.elapsed();
    eprintln!(
        "after SIGTERM: chat-service exited within {chat_took:?}, broadcast-sse within {sse_took:?}"
    );
    assert!(chat_took < STOP_BOUND && sse_took < STOP_BOUND);
    assert!(
        chat_status.is_some_and(|s| s.success()),
        "chat-service exit {chat_status:?} after {chat_took:?}"
    );
    assert!(
        sse_status.is_some_and(|s| s.success()),
        "broadcast-sse exit {sse_status:?} after {sse_took:?}"
    );
    app.chat
        .as_ref()
        .expect("chat-service")
        .assert_no_thread_panicked();
    app.sse.assert_no_thread_panicked();
    poster.await.expect("poster ended");

    app.kill_chat_service();
    app.start_chat_service_again();
    crate::helpers::wait_for_ready(&app.http, app.chat_url()).await;
    let stored: Vec<u64> = app
        .whole_history(app_channel)
        .await
        .iter()
        .map(|m| m.id)
        .collect();
    let mut acknowledged = acknowledged.lock().expect("acks").clone();
    acknowledged.sort_unstable();
    assert!(!acknowledged.is_empty());
    for id in &acknowledged {
        assert!(
            stored.contains(id),
            "acknowledged message {id} is in history"
        );
    }
    assert_eq!(
        stored,
        (1..=stored.len() as u64).collect::<Vec<_>>(),
        "no gap in ids"
    );
}

/// POSTs one message after another until the service refuses (it is stopping),
/// recording every acknowledged id. Bounded by count.
async fn post_until_refused(
    http: reqwest::Client,
    base: String,
    channel: ChannelId,
    acknowledged: Arc<Mutex<Vec<u64>>>,
) {
    for n in 0..20_000 {
        let response = http
            .post(format!("{base}/channels/{channel}/messages"))
            .json(&serde_json::json!({"author": "ann", "text": format!("m{n}")}))
            .send()
            .await;
        match response {
            Ok(response) if response.status() == StatusCode::CREATED => {
                let message: protocol::Message = response.json().await.expect("message");
                acknowledged.lock().expect("acks").push(message.id);
            }
            _ => return,
        }
    }
}
