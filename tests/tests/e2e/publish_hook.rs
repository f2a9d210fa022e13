//! `--publish-hook-url`: the app behind Crier accepts, rewrites or rejects each
//! post before it is stored, over REST and MQTT; a hook that does not answer
//! refuses posts (`closed`) or lets them through (`open`).

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use protocol::{ChannelId, topic};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::broker::Broker;
use crate::helpers::{CRIER, TestApp, WAIT, error_of, eventually, new_channel, wait_for_ready};
use crate::hook_app::HookApp;
use crate::mqtt_posts::MqttClient;
use crate::process::Service;

async fn app_with_hook(hook: &HookApp, flags: &[&str]) -> TestApp {
    let mut chat_flags = vec!["--publish-hook-url", hook.url.as_str()];
    chat_flags.extend_from_slice(flags);
    TestApp::with_options(Broker::embedded(), &chat_flags, &[]).await
}

fn messages_url(app: &TestApp, channel: ChannelId) -> String {
    format!("{}/channels/{channel}/messages", app.chat_url())
}

async fn post(app: &TestApp, channel: ChannelId, author: &str, text: &str) -> reqwest::Response {
    app.http
        .post(messages_url(app, channel))
        .json(&json!({"author": author, "text": text}))
        .send()
        .await
        .expect("POST reaches chat-service")
}

fn texts(messages: &[protocol::Message]) -> Vec<&str> {
    messages.iter().map(|m| m.text.as_str()).collect()
}

fn accept(_: &Value) -> Option<Value> {
    Some(json!({"action": "accept"}))
}

fn rewrite(post: &Value) -> Option<Value> {
    let text = post["text"]
        .as_str()
        .unwrap_or_default()
        .replace("darn", "d**n");
    Some(json!({"action": "accept", "text": text}))
}

fn reject_links(post: &Value) -> Option<Value> {
    if post["text"].as_str().is_some_and(|t| t.contains("http://")) {
        Some(json!({"action": "reject", "code": "spam", "message": "No links please"}))
    } else {
        Some(json!({"action": "accept"}))
    }
}

fn never(_: &Value) -> Option<Value> {
    None
}

#[tokio::test]
async fn an_accepted_post_is_stored_as_posted_in_every_body_form() {
    let mut hook = HookApp::start(accept).await;
    let app = app_with_hook(&hook, &[]).await;
    let channel = new_channel();

    let json = post(&app, channel, "ann", "hello").await;
    assert_eq!(json.status(), StatusCode::CREATED, "JSON body");
    let form = app
        .http
        .post(messages_url(&app, channel))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("author=bob&text=from+a+form")
        .send()
        .await
        .expect("form POST");
    assert_eq!(form.status(), StatusCode::CREATED, "form body");
    let plain = app
        .http
        .post(format!("{}?author=cy", messages_url(&app, channel)))
        .header("Content-Type", "text/plain")
        .body("plain words")
        .send()
        .await
        .expect("text/plain POST");
    assert_eq!(plain.status(), StatusCode::CREATED, "text/plain body");

    let mut asked = Vec::new();
    for _ in 0..3 {
        let post = hook.next_post().await;
        asked.push((post["author"].clone(), post["text"].clone()));
        assert_eq!(post["channel"], channel.to_string(), "the channel");
        assert_eq!(post["claims"], Value::Null, "no claims without auth");
    }
    assert_eq!(
        asked,
        [
            (json!("ann"), json!("hello")),
            (json!("bob"), json!("from a form")),
            (json!("cy"), json!("plain words")),
        ],
        "the hook saw every post, in each body form"
    );
    let history = app.history(channel, "").await;
    assert_eq!(
        texts(&history),
        ["hello", "from a form", "plain words"],
        "stored as posted"
    );
}

#[tokio::test]
async fn a_rewritten_post_is_stored_with_the_apps_text() {
    let hook = HookApp::start(rewrite).await;
    let app = app_with_hook(&hook, &[]).await;
    let channel = new_channel();

    let response = post(&app, channel, "ann", "oh darn it").await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let stored: protocol::Message = response.json().await.expect("the stored message");
    assert_eq!(stored.text, "oh d**n it", "the 201 body");
    let history = app.history(channel, "").await;
    assert_eq!(
        texts(&history),
        ["oh d**n it"],
        "history holds the new text"
    );
}

#[tokio::test]
async fn a_rejected_post_gets_the_apps_error_and_stores_nothing() {
    let hook = HookApp::start(reject_links).await;
    let app = app_with_hook(&hook, &[]).await;
    let channel = new_channel();

    let response = post(&app, channel, "mallory", "buy at http://spam.example").await;
    let (status, body) = error_of(response).await;
    assert_eq!(
        (
            status,
            body.error.code.as_str(),
            body.error.message.as_str()
        ),
        (StatusCode::FORBIDDEN, "spam", "No links please")
    );
    assert!(app.history(channel, "").await.is_empty(), "nothing stored");

    let accepted = post(&app, channel, "ann", "no links here").await;
    assert_eq!(accepted.status(), StatusCode::CREATED);
    let history = app.history(channel, "").await;
    assert_eq!(history[0].id, 1, "the rejection used up no id");

    let metrics = app
        .http
        .get(format!("{}/metrics", app.chat_url()))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    for outcome in ["reject", "accept"] {
        let line = format!("crier_publish_hook_total{{outcome=\"{outcome}\"}} 1");
        assert!(metrics.contains(&line), "{line} in {metrics}");
    }
    assert!(
        metrics.contains("crier_publish_hook_seconds_bucket"),
        "the hook's time is a histogram"
    );
}

#[tokio::test]
async fn a_silent_hook_closed_refuses_with_503_and_stores_nothing() {
    let mut hook = HookApp::start(never).await;
    let app = app_with_hook(&hook, &["--publish-hook-timeout", "200ms"]).await;
    let channel = new_channel();

    let response = post(&app, channel, "ann", "hello").await;
    let retry_after = response.headers().get("retry-after").cloned();
    let (status, body) = error_of(response).await;
    assert_eq!(
        (status, body.error.code.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "publish_hook_unavailable")
    );
    assert_eq!(
        retry_after.as_ref().and_then(|v| v.to_str().ok()),
        Some("1"),
        "Retry-After"
    );
    hook.next_post().await;
    assert!(app.history(channel, "").await.is_empty(), "nothing stored");
}

#[tokio::test]
async fn a_silent_hook_open_lets_posts_through() {
    let mut hook = HookApp::start(never).await;
    let flags = [
        "--publish-hook-timeout",
        "200ms",
        "--publish-hook-failure",
        "open",
    ];
    let app = app_with_hook(&hook, &flags).await;
    let channel = new_channel();

    let started = std::time::Instant::now();
    let response = post(&app, channel, "ann", "hello").await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the POST waited for the timeout only, not for the app"
    );
    hook.next_post().await;
    let history = app.history(channel, "").await;
    assert_eq!(texts(&history), ["hello"], "stored as posted");
    let log = app.data_dir.path().join("chat-service.log");
    eventually("the failure is logged as a warning", || async {
        std::fs::read_to_string(&log)
            .is_ok_and(|log| log.contains("WARN") && log.contains("post stored as posted"))
    })
    .await;
}

#[tokio::test]
async fn the_hook_is_shown_channel_author_text_and_the_tokens_claims() {
    const SECRET: &str = "the secret shared with the application server";
    let mut hook = HookApp::start(accept).await;
    let flags = [
        "--publish-hook-url",
        hook.url.as_str(),
        "--jwt-secret",
        SECRET,
    ];
    let app = TestApp::with_options(Broker::embedded(), &flags, &["--jwt-secret", SECRET]).await;
    let channel = new_channel();
    let claims = json!({
        "name": "ann",
        "channels": [channel.to_string()],
        "subscribe": [channel.to_string()],
        "plan": "pro",
        "exp": jsonwebtoken::get_current_timestamp() + 60,
    });
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).expect("token");

    let response = app
        .http
        .post(messages_url(&app, channel))
        .bearer_auth(&token)
        .json(&json!({"author": "someone else", "text": "hi from ann"}))
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), StatusCode::CREATED);
    let asked = hook.next_post().await;
    assert_eq!(
        asked,
        json!({
            "channel": channel.to_string(),
            "author": "ann",
            "text": "hi from ann",
            "claims": claims,
        }),
        "the token's name is the author, and every claim is shown"
    );
}

#[tokio::test]
async fn an_mqtt_post_rejected_by_the_hook_is_reported_and_not_stored() {
    let mut hook = HookApp::start(reject_links).await;
    let app = app_with_hook(&hook, &[]).await;
    let channel = new_channel();
    let client_id = format!("crier-test-hook-{}", uuid::Uuid::new_v4().simple());
    let mut client = MqttClient::connect(&app.broker.url, &client_id).await;
    client.subscribe(&topic::errors_topic(&app.prefix)).await;
    let post_topic = topic::post_topic(&app.prefix, channel);

    let spam = json!({"author": "mallory", "text": "see http://spam.example", "key": "k-1"});
    client.post(&post_topic, spam.to_string()).await;
    let report = client.next_publish().await;
    let report: Value = serde_json::from_slice(&report.payload).expect("the report is JSON");
    assert_eq!(report["error"]["code"], "spam", "{report}");
    assert_eq!(report["error"]["message"], "No links please", "{report}");
    assert_eq!(report["key"], "k-1", "{report}");
    let asked = hook.next_post().await;
    assert_eq!(
        (&asked["author"], &asked["claims"]),
        (&json!("mallory"), &Value::Null),
        "an MQTT post has no claims"
    );

    let good = json!({"author": "ann", "text": "fine"});
    client.post(&post_topic, good.to_string()).await;
    eventually("the accepted MQTT post is stored", || async {
        !app.history(channel, "").await.is_empty()
    })
    .await;
    let history = app.history(channel, "").await;
    assert_eq!(
        texts(&history),
        ["fine"],
        "only the accepted post is stored"
    );
    assert_eq!(history[0].id, 1, "the rejection used up no id");
    hook.next_post().await;
    assert!(hook.asked_nothing_more(), "each post was asked about once");
}

#[tokio::test]
async fn a_bad_hook_url_or_policy_stops_the_start() {
    for (flags, says) in [
        (["--publish-hook-url", "not a url"], "is not a URL like"),
        (
            ["--publish-hook-url", "ftp://app.example/"],
            "is not an http:// or https:// URL",
        ),
        (
            ["--publish-hook-failure", "sometimes"],
            "[possible values: closed, open]",
        ),
        (["--publish-hook-timeout", "0"], "must be more than 0"),
    ] {
        let output = tokio::process::Command::new(crate::helpers::CHAT_SERVICE)
            .args(flags)
            .output();
        let output = tokio::time::timeout(WAIT, output)
            .await
            .expect("exits in time")
            .expect("runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{flags:?} must stop the start");
        assert!(stderr.contains(says), "{flags:?}: {stderr}");
    }
}

#[test]
fn the_api_document_names_the_hooks_answers_to_a_post() {
    for (binary, document) in [
        ("chat-service", chat_service::openapi::document()),
        ("crier", crier::openapi::document()),
    ] {
        let document = serde_json::to_value(document).expect("JSON");
        let responses = &document["paths"]["/channels/{channel}/messages"]["post"]["responses"];
        for (status, code) in [("403", "rejected"), ("503", "publish_hook_unavailable")] {
            let reference = responses[status]["$ref"].as_str().unwrap_or_default();
            let answer = document
                .pointer(reference.trim_start_matches('#'))
                .unwrap_or_else(|| panic!("{binary}: {status} is described"));
            let description = answer["description"].as_str().unwrap_or_default();
            assert!(
                description.contains("publish hook") && description.contains(code),
                "{binary} {status}: {description}"
            );
        }
        let unavailable = &responses["503"]["$ref"];
        let pointer = unavailable
            .as_str()
            .unwrap_or_default()
            .trim_start_matches('#');
        assert!(
            document.pointer(pointer).expect("503")["headers"]["Retry-After"].is_object(),
            "{binary}: 503 says Retry-After"
        );
    }
}

#[tokio::test]
async fn the_all_in_one_asks_the_hook_too() {
    let hook = HookApp::start(reject_links).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data").display().to_string();
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data.as_str(),
        "--publish-hook-url",
        hook.url.as_str(),
    ]
    .map(String::from);
    let crier = Service::start(CRIER, &args, &dir.path().join("crier.log"));
    let http = crate::helpers::http_client();
    wait_for_ready(&http, &crier.url).await;
    let channel = new_channel();
    let url = format!("{}/channels/{channel}/messages", crier.url);

    let spam = json!({"author": "mallory", "text": "http://spam.example"});
    let response = http.post(&url).json(&spam).send().await.expect("POST");
    let (status, body) = error_of(response).await;
    assert_eq!(
        (status, body.error.code.as_str()),
        (StatusCode::FORBIDDEN, "spam")
    );
    let good = json!({"author": "ann", "text": "hello"});
    let response = http.post(&url).json(&good).send().await.expect("POST");
    assert_eq!(response.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn a_retry_with_the_same_idempotency_key_asks_again_and_stores_once() {
    let mut hook = HookApp::start(accept).await;
    let app = app_with_hook(&hook, &[]).await;
    let channel = new_channel();

    let mut ids = Vec::new();
    for attempt in 0..2 {
        let response = app
            .http
            .post(messages_url(&app, channel))
            .header("Idempotency-Key", "retry-1")
            .json(&json!({"author": "ann", "text": "once"}))
            .send()
            .await
            .expect("POST");
        assert_eq!(response.status(), StatusCode::CREATED, "attempt {attempt}");
        let stored: protocol::Message = response.json().await.expect("message");
        ids.push(stored.id);
        hook.next_post().await;
    }
    assert_eq!(ids, [1, 1], "the retry returns the original");
    assert_eq!(app.history(channel, "").await.len(), 1, "stored once");
}
