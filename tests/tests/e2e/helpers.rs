//! A running Crier for one test, with a helper per endpoint so tests read like
//! sentences.

use std::pin::Pin;
use std::time::Duration;

use eventsource_stream::{Event, Eventsource};
use futures_util::{Stream, StreamExt};
use protocol::error::ErrorBody;
use protocol::{ChannelId, Message};
use reqwest::StatusCode;
use serde::Deserialize;
use tempfile::TempDir;

use crate::broker::Broker;
use crate::process::Service;

pub const WAIT: Duration = Duration::from_secs(10);

pub const CHAT_SERVICE: &str = env!("CARGO_BIN_EXE_e2e-chat-service");
pub const BROADCAST_SSE: &str = env!("CARGO_BIN_EXE_e2e-broadcast-sse");
pub const MIGRATE: &str = env!("CARGO_BIN_EXE_e2e-crier-migrate");
pub const CRIER: &str = env!("CARGO_BIN_EXE_e2e-crier");

/// chat-service and broadcast-sse as separate processes on one broker, with a
/// fresh data dir and topic prefix.
pub struct TestApp {
    pub chat: Option<Service>,
    chat_flags: Vec<String>,
    chat_address: Option<String>,
    pub sse: Service,
    sse_args: Vec<String>,
    pub broker: Broker,
    pub data_dir: TempDir,
    pub prefix: String,
    pub http: reqwest::Client,
}

#[derive(Deserialize)]
struct HistoryPage {
    messages: Vec<Message>,
}

impl TestApp {
    pub async fn on(broker: Broker) -> TestApp {
        TestApp::with_options(broker, &[], &[]).await
    }

    /// Like [`TestApp::on`], with extra flags for chat-service and broadcast-sse.
    pub async fn with_options(broker: Broker, chat_flags: &[&str], sse_flags: &[&str]) -> TestApp {
        let prefix = format!("crier-test-{}", uuid::Uuid::new_v4().simple());
        TestApp::build(broker, prefix, chat_flags, sse_flags).await
    }

    /// Like [`TestApp::on`], with this topic prefix (for a broker of the test's
    /// own whose ACL names it).
    pub async fn with_prefix(broker: Broker, prefix: &str) -> TestApp {
        TestApp::build(broker, prefix.to_string(), &[], &[]).await
    }

    async fn build(
        broker: Broker,
        prefix: String,
        chat_flags: &[&str],
        sse_flags: &[&str],
    ) -> TestApp {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let mut chat_flags: Vec<String> = chat_flags.iter().map(|flag| flag.to_string()).collect();
        // The tests post from one address far faster than a person; the limit has
        // tests of its own.
        if !chat_flags.iter().any(|flag| flag == "--post-rate-per-sec") {
            chat_flags.extend(["--post-rate-per-sec".into(), "0".into()]);
        }
        let chat = start_chat_service(&broker, &data_dir, &prefix, "127.0.0.1:0", &chat_flags);
        let mut args: Vec<String> = vec![
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--mqtt-url".into(),
            broker.url.clone(),
            "--topic-prefix".into(),
            prefix.clone(),
            "--history-url".into(),
            chat.url.clone(),
        ];
        args.extend(sse_flags.iter().map(|flag| flag.to_string()));
        let sse_args = args.clone();
        let sse = Service::start(
            BROADCAST_SSE,
            &args,
            &data_dir.path().join("broadcast-sse.log"),
        );
        let app = TestApp {
            chat: Some(chat),
            chat_flags,
            chat_address: None,
            sse,
            sse_args,
            broker,
            data_dir,
            prefix,
            http: http_client(),
        };
        app.wait_until_ready().await;
        app
    }

    pub fn chat_url(&self) -> &str {
        &self.chat.as_ref().expect("chat-service is running").url
    }

    /// Both services answer `/readyz` with 200 (store open, broker connected).
    pub async fn wait_until_ready(&self) {
        for url in [self.chat_url().to_string(), self.sse.url.clone()] {
            wait_for_ready(&self.http, &url).await;
        }
    }

    /// `kill -9` the chat-service and start it again on the same data dir and port.
    pub async fn restart_chat_service(&mut self) {
        self.kill_chat_service();
        self.start_chat_service_again();
        self.wait_until_ready().await;
    }

    /// `kill -9` broadcast-sse, keeping its port for [`Self::start_broadcast_sse_again`].
    pub fn kill_broadcast_sse(&mut self) {
        self.sse.kill_in_place();
    }

    /// Starts broadcast-sse on the port it had and waits until it is ready.
    pub async fn start_broadcast_sse_again(&mut self) {
        let mut args = self.sse_args.clone();
        let listen = args
            .iter()
            .position(|arg| arg == "--listen")
            .expect("--listen")
            + 1;
        args[listen] = self.sse.address().to_string();
        self.sse = Service::start(
            BROADCAST_SSE,
            &args,
            &self.data_dir.path().join("broadcast-sse.log"),
        );
        self.wait_until_ready().await;
    }

    /// `kill -9` the chat-service; returns the address it listened on.
    pub fn kill_chat_service(&mut self) -> String {
        let chat = self.chat.take().expect("chat-service is running");
        let address = chat.address().to_string();
        chat.kill();
        self.chat_address = Some(address.clone());
        address
    }

    /// Starts the chat-service on the data dir and port it had (broadcast-sse reads
    /// history there). Does not wait for the broker.
    pub fn start_chat_service_again(&mut self) {
        let address = self.chat_address.take().expect("chat-service was killed");
        self.chat = Some(start_chat_service(
            &self.broker,
            &self.data_dir,
            &self.prefix,
            &address,
            &self.chat_flags,
        ));
    }

    pub async fn post_message(&self, channel: ChannelId, author: &str, text: &str) -> Message {
        let response = self
            .http
            .post(format!("{}/channels/{channel}/messages", self.chat_url()))
            .json(&serde_json::json!({ "author": author, "text": text }))
            .send()
            .await
            .expect("POST reaches chat-service");
        assert_eq!(response.status(), StatusCode::CREATED, "POST answers 201");
        response
            .json()
            .await
            .expect("POST answers the stored message")
    }

    /// The chat-service's `/readyz` status and report (it answers `503` with the
    /// same report while the broker is down).
    pub async fn chat_readiness(&self) -> (StatusCode, serde_json::Value) {
        let response = self
            .http
            .get(format!("{}/readyz", self.chat_url()))
            .send()
            .await
            .expect("GET /readyz");
        let status = response.status();
        (status, response.json().await.expect("readyz JSON"))
    }

    /// The latest messages of a channel, read with a token.
    pub async fn history_with(&self, channel: ChannelId, token: &str) -> Vec<Message> {
        let url = format!("{}/channels/{channel}/messages", self.chat_url());
        read_history(self.http.get(url).bearer_auth(token)).await
    }

    /// Every stored message of the channel, paging through history.
    pub async fn whole_history(&self, channel: ChannelId) -> Vec<Message> {
        let mut messages: Vec<Message> = Vec::new();
        loop {
            let after = messages.last().map_or(0, |m| m.id);
            let page = self
                .history(channel, &format!("?after={after}&limit=1000"))
                .await;
            if page.is_empty() {
                return messages;
            }
            messages.extend(page);
        }
    }

    /// Open streams on broadcast-sse, as its `/readyz` reports them.
    pub async fn sse_listeners(&self) -> u64 {
        listeners(&self.http, &self.sse.url).await
    }

    pub async fn history(&self, channel: ChannelId, query: &str) -> Vec<Message> {
        let url = format!("{}/channels/{channel}/messages{query}", self.chat_url());
        read_history(self.http.get(url)).await
    }

    pub async fn open_stream(&self, channel: ChannelId, last_event_id: Option<u64>) -> EventStream {
        open_stream(&self.http, &self.sse.url, channel, last_event_id).await
    }

    /// Resumes with `?last_event_id=` instead of the header (what a page can do on
    /// its first connection).
    pub async fn open_stream_with_query(
        &self,
        channel: ChannelId,
        last_event_id: u64,
    ) -> EventStream {
        let url = format!(
            "{}/channels/{channel}/events?last_event_id={last_event_id}",
            self.sse.url
        );
        EventStream::from_request(self.http.get(url)).await
    }
}

/// Open streams on the server at `base` (broadcast-sse or crier), as its
/// `/readyz` reports them.
pub async fn listeners(http: &reqwest::Client, base: &str) -> u64 {
    let ready: serde_json::Value = http
        .get(format!("{base}/readyz"))
        .send()
        .await
        .expect("GET /readyz")
        .json()
        .await
        .expect("readyz JSON");
    ready["listeners"].as_u64().expect("listeners count")
}

/// Sends a history request; it must answer `200` with a page.
async fn read_history(request: reqwest::RequestBuilder) -> Vec<Message> {
    let response = request.send().await.expect("GET reaches chat-service");
    assert_eq!(response.status(), StatusCode::OK, "history answers 200");
    let page: HistoryPage = response.json().await.expect("history JSON");
    page.messages
}

pub fn start_chat_service(
    broker: &Broker,
    data_dir: &TempDir,
    prefix: &str,
    listen: &str,
    flags: &[String],
) -> Service {
    let mut args: Vec<String> = vec![
        "--listen".into(),
        listen.into(),
        "--mqtt-url".into(),
        broker.url.clone(),
        "--topic-prefix".into(),
        prefix.to_string(),
        "--data-dir".into(),
        data_dir.path().join("history").display().to_string(),
    ];
    args.extend_from_slice(flags);
    Service::start(
        CHAT_SERVICE,
        &args,
        &data_dir.path().join("chat-service.log"),
    )
}

pub async fn wait_for_ready(http: &reqwest::Client, base: &str) {
    let ready = async {
        loop {
            let response = http.get(format!("{base}/readyz")).send().await;
            if response.is_ok_and(|r| r.status() == StatusCode::OK) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(WAIT, ready)
        .await
        .unwrap_or_else(|_| panic!("{base} did not become ready within {WAIT:?}"));
}

/// Polls `condition` every 50 ms until it holds; panics after [`WAIT`].
pub async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let polled = async {
        while !condition().await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(WAIT, polled)
        .await
        .unwrap_or_else(|_| panic!("{what}: not within {WAIT:?}"));
}

/// An HTTP client (TLS-capable, so the process needs its crypto provider first).
pub fn http_client() -> reqwest::Client {
    server::tls::install_crypto_provider();
    reqwest::Client::new()
}

pub fn new_channel() -> ChannelId {
    ChannelId::from_uuid(uuid::Uuid::new_v4())
}

type Events = Pin<Box<dyn Stream<Item = Result<Event, String>> + Send>>;

/// An open SSE stream. When it is returned, broadcast-sse has confirmed its broker
/// subscription, so anything posted afterwards is on the stream.
pub struct EventStream {
    events: Events,
}

pub async fn open_stream(
    http: &reqwest::Client,
    base: &str,
    channel: ChannelId,
    last_event_id: Option<u64>,
) -> EventStream {
    let mut request = http.get(format!("{base}/channels/{channel}/events"));
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id.to_string());
    }
    EventStream::from_request(request).await
}

impl EventStream {
    pub async fn from_request(request: reqwest::RequestBuilder) -> EventStream {
        let response = tokio::time::timeout(WAIT, request.send())
            .await
            .expect("stream opens in time")
            .expect("stream request succeeds");
        assert_eq!(response.status(), StatusCode::OK, "stream answers 200");
        let content_type = response.headers().get("content-type").cloned();
        assert_eq!(
            content_type.as_ref().and_then(|v| v.to_str().ok()),
            Some("text/event-stream"),
            "stream content type"
        );
        let events = response
            .bytes_stream()
            .eventsource()
            .map(|event| event.map_err(|e| e.to_string()));
        EventStream {
            events: Box::pin(events),
        }
    }

    /// The next `message` event (heartbeat comments are not events).
    pub async fn next_message(&mut self) -> Message {
        loop {
            let event = self.next_event().await;
            if event.event == "message" {
                let message: Message =
                    serde_json::from_str(&event.data).expect("event data is a message");
                assert_eq!(event.id, message.id.to_string(), "SSE id equals message id");
                return message;
            }
        }
    }

    pub async fn next_event(&mut self) -> Event {
        tokio::time::timeout(WAIT, self.events.next())
            .await
            .expect("an event arrives in time")
            .expect("the stream is still open")
            .expect("the stream is well formed")
    }

    /// The next event must be `event: reset`; returns the newest id it names.
    pub async fn next_reset(&mut self) -> u64 {
        let event = self.next_event().await;
        assert_eq!(event.event, "reset", "a reset comes first: {event:?}");
        assert_eq!(event.id, "0", "a reset moves the cursor back to the start");
        let data: serde_json::Value = serde_json::from_str(&event.data).expect("reset data");
        data["last_id"].as_u64().expect("reset names the newest id")
    }

    /// The stream ends (the server closed it) within [`WAIT`]; messages before the
    /// end are allowed, any other event is not.
    pub async fn expect_end(&mut self) {
        let end = async {
            loop {
                match self.events.next().await {
                    None => return,
                    Some(Ok(event)) if event.event == "message" => continue,
                    // The connection closing under the parser is an end too.
                    Some(Err(_)) => return,
                    Some(Ok(event)) => panic!("unexpected event before the end: {event:?}"),
                }
            }
        };
        tokio::time::timeout(WAIT, end)
            .await
            .expect("the server ends the stream in time");
    }

    /// The ids of the next `n` messages, in arrival order.
    pub async fn next_ids(&mut self, n: usize) -> Vec<u64> {
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            ids.push(self.next_message().await.id);
        }
        ids
    }

    /// No message arrives within `quiet` (used to show a channel does not leak).
    pub async fn expect_no_message_within(&mut self, quiet: Duration) {
        let next = async {
            loop {
                match self.events.next().await {
                    Some(Ok(event)) if event.event == "message" => return event,
                    Some(Ok(_)) => continue,
                    other => panic!("stream ended or failed: {other:?}"),
                }
            }
        };
        if let Ok(event) = tokio::time::timeout(quiet, next).await {
            panic!("unexpected message on the stream: {}", event.data);
        }
    }
}

/// Reads an error answer: its status and our JSON error body.
pub async fn error_of(response: reqwest::Response) -> (StatusCode, ErrorBody) {
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let text = response.text().await.expect("error body");
    assert!(
        content_type.starts_with("application/json"),
        "error is JSON (status {status}, content type {content_type:?}, body {text:?})"
    );
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("error body {text:?} has our shape: {e}"));
    (status, body)
}
