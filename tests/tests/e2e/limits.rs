//! Limits and cross-origin access, each answered with our JSON error.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::broker::Broker;
use crate::helpers::{EventStream, TestApp, WAIT, error_of, eventually, http_client, new_channel};

#[tokio::test]
async fn posting_faster_than_the_rate_is_429_with_retry_after() {
    let flags = ["--post-rate-per-sec", "1", "--post-burst", "2"];
    let app = TestApp::with_options(Broker::embedded(), &flags, &[]).await;
    let channel = new_channel();
    let post = || {
        app.http
            .post(format!("{}/channels/{channel}/messages", app.chat_url()))
            .json(&json!({"author": "ann", "text": "hi"}))
            .send()
    };
    for _ in 0..2 {
        assert_eq!(post().await.expect("POST").status(), StatusCode::CREATED);
    }
    let refused = post().await.expect("POST");
    let retry_after = refused.headers().get("retry-after").cloned();
    let (status, body) = error_of(refused).await;
    assert_eq!(
        (status, body.error.code.as_str()),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
    );
    assert_eq!(
        retry_after.as_ref().and_then(|v| v.to_str().ok()),
        Some("1")
    );
    assert_eq!(
        app.history(channel, "").await.len(),
        2,
        "the refused POST stored nothing"
    );
}

#[tokio::test]
async fn one_address_may_hold_only_so_many_streams() {
    let flags = ["--max-streams-per-address", "2"];
    let app = TestApp::with_options(Broker::embedded(), &[], &flags).await;
    let channel = new_channel();
    let first = app.open_stream(channel, None).await;
    let _second = app.open_stream(channel, None).await;
    let url = format!("{}/channels/{channel}/events", app.sse.url);
    let refused = app.http.get(&url).send().await.expect("GET");
    assert!(refused.headers().contains_key("retry-after"));
    let (status, body) = error_of(refused).await;
    assert_eq!(
        (status, body.error.code.as_str()),
        (StatusCode::TOO_MANY_REQUESTS, "too_many_streams")
    );

    drop(first);
    eventually("a closed stream frees its slot", || async {
        app.http
            .get(&url)
            .send()
            .await
            .is_ok_and(|r| r.status() == StatusCode::OK)
    })
    .await;
}

#[tokio::test]
async fn a_node_follows_at_most_max_channels() {
    let app = TestApp::with_options(Broker::embedded(), &[], &["--max-channels", "1"]).await;
    let _watching = app.open_stream(new_channel(), None).await;
    let url = format!("{}/channels/{}/events", app.sse.url, new_channel());
    let (status, body) = error_of(app.http.get(url).send().await.expect("GET")).await;
    assert_eq!(
        (status, body.error.code.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "too_many_channels")
    );
}

#[tokio::test]
async fn a_client_slow_to_send_its_headers_is_cut_off() {
    let flags = ["--request-header-timeout-ms", "300"];
    let app = TestApp::with_options(Broker::embedded(), &flags, &[]).await;
    let partial = b"GET /healthz HTTP/1.1\r\nHost: x\r\n";
    let answer = answer_to_raw(app.chat_url(), partial).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
}

#[tokio::test]
async fn a_client_that_sends_nothing_is_answered_408_in_json() {
    let flags = ["--request-header-timeout-ms", "300"];
    let app = TestApp::with_options(Broker::embedded(), &[], &flags).await;
    let answer = answer_to_raw(&app.sse.url, b"").await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    let body = answer.split_once("\r\n\r\n").map(|(_, body)| body);
    let body: serde_json::Value = serde_json::from_str(body.unwrap_or("")).expect("JSON body");
    assert_eq!(body["error"]["code"], "request_timeout");
}

/// chat-service waits for a connection's first bytes (HTTP/1.1 or the HTTP/2
/// preface) no longer than for a request's headers.
#[tokio::test]
async fn chat_service_cuts_off_a_client_that_sends_nothing() {
    let flags = ["--request-header-timeout-ms", "300"];
    let app = TestApp::with_options(Broker::embedded(), &flags, &[]).await;
    let answer = answer_to_raw(app.chat_url(), b"").await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    let body = answer.split_once("\r\n\r\n").map(|(_, body)| body);
    let body: serde_json::Value = serde_json::from_str(body.unwrap_or("")).expect("JSON body");
    assert_eq!(body["error"]["code"], "request_timeout");
}

/// Sends `bytes` (a request cut short, or nothing) on a new connection to `url`
/// and reads until the server closes it, which it must do within 5 s.
async fn answer_to_raw(url: &str, bytes: &'static [u8]) -> String {
    let address = url.trim_start_matches("http://").to_string();
    let started = Instant::now();
    let answer = tokio::task::spawn_blocking(move || {
        let mut socket = TcpStream::connect(address).expect("connect");
        socket.set_read_timeout(Some(WAIT)).expect("timeout");
        socket.write_all(bytes).expect("partial request");
        let mut answer = Vec::new();
        let _ = socket.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).to_string()
    })
    .await
    .expect("reader");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "cut off after {:?}",
        started.elapsed()
    );
    answer
}

#[tokio::test]
async fn cors_preflight_and_requests_from_an_allowed_origin_are_answered() {
    let origin = "https://chat.example.com";
    let flags = ["--cors-origin", origin];
    let app = TestApp::with_options(Broker::embedded(), &flags, &flags).await;
    let channel = new_channel();
    let url = format!("{}/channels/{channel}/messages", app.chat_url());

    let preflight = app
        .http
        .request(reqwest::Method::OPTIONS, &url)
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type, idempotency-key",
        )
        .send()
        .await
        .expect("preflight");
    assert_eq!(preflight.status(), StatusCode::OK);
    let allowed_origin = header(&preflight, "access-control-allow-origin");
    assert_eq!(allowed_origin.as_deref(), Some(origin));
    let methods = header(&preflight, "access-control-allow-methods").unwrap_or_default();
    assert!(methods.contains("POST"), "{methods}");

    let posted = app
        .http
        .post(&url)
        .header("origin", origin)
        .json(&json!({"author": "ann", "text": "hi"}))
        .send()
        .await
        .expect("POST");
    assert_eq!(posted.status(), StatusCode::CREATED);
    assert_eq!(
        header(&posted, "access-control-allow-origin").as_deref(),
        Some(origin)
    );
    let exposed = header(&posted, "access-control-expose-headers").unwrap_or_default();
    assert!(
        exposed.to_ascii_lowercase().contains("location"),
        "{exposed}"
    );

    let stream_url = format!("{}/channels/{channel}/events", app.sse.url);
    let stream = app.http.get(&stream_url).header("origin", origin);
    let _stream = EventStream::from_request(stream).await;
}

#[tokio::test]
async fn without_cors_origins_no_cors_header_is_sent() {
    let app = TestApp::on(Broker::embedded()).await;
    let url = format!("{}/channels/{}/messages", app.chat_url(), new_channel());
    let response = app
        .http
        .post(&url)
        .header("origin", "https://elsewhere.example")
        .json(&json!({"author": "ann", "text": "hi"}))
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(header(&response, "access-control-allow-origin"), None);
}

/// A stream request is served straight on the socket when it is the first
/// request of a connection and its head is short, else by actix-http; the
/// application answers both, so both get the same headers. Which path served
/// shows in the framing: the socket path ends the body with the connection,
/// actix-http sends it chunked.
#[tokio::test]
async fn a_stream_gets_the_same_cors_answer_whichever_path_serves_it() {
    let origin = "https://chat.example.com";
    let flags = ["--cors-origin", origin];
    let app = TestApp::with_options(Broker::embedded(), &[], &flags).await;
    let channel = new_channel();
    let urls = [
        format!("{}/channels/{channel}/events", app.sse.url),
        format!("{}/events?channel={channel}", app.sse.url),
    ];
    let long_head = "p".repeat(10 * 1024);
    for (padding, framing) in [(None, None), (Some(&long_head), Some("chunked"))] {
        for url in &urls {
            let mut request = http_client().get(url).header("origin", origin);
            if let Some(padding) = padding {
                request = request.header("x-padding", padding);
            }
            let response = request.send().await.expect("a stream");
            let path = format!("{url}, framing {framing:?}");
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            let allowed = header(&response, "access-control-allow-origin");
            assert_eq!(allowed.as_deref(), Some(origin), "{path}");
            let content_type = header(&response, "content-type");
            assert_eq!(content_type.as_deref(), Some("text/event-stream"), "{path}");
            assert_eq!(
                header(&response, "transfer-encoding").as_deref(),
                framing,
                "{path}"
            );
        }
    }
}

/// A 70 KB header block is refused with `431` and our JSON error by every
/// route of both services, streams included.
#[tokio::test]
async fn a_70_kb_header_block_is_431_in_json_everywhere() {
    let app = TestApp::on(Broker::embedded()).await;
    let channel = new_channel();
    let big = "b".repeat(70 * 1024);
    let gets = [
        format!("{}/channels/{channel}/events", app.sse.url),
        format!("{}/events?channel={channel}", app.sse.url),
        format!("{}/healthz", app.sse.url),
        format!("{}/channels/{channel}/messages", app.chat_url()),
    ];
    for url in &gets {
        let response = http_client().get(url).header("x-big", &big).send().await;
        let (status, body) = error_of(response.expect("an answer")).await;
        assert_eq!(status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "{url}");
        assert_eq!(body.error.code, "request_head_too_large", "{url}");
    }
    let post = http_client()
        .post(format!("{}/channels/{channel}/messages", app.chat_url()))
        .header("x-big", &big)
        .json(&json!({"author": "ann", "text": "hi"}))
        .send()
        .await
        .expect("an answer");
    let (status, _) = error_of(post).await;
    assert_eq!(status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert!(
        app.whole_history(channel).await.is_empty(),
        "nothing stored"
    );
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_string)
}
