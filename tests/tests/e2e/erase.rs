//! `POST /erase`: an author's texts gone from every API at once, and from the
//! data directory's files once the chat-service has started again (even
//! after `kill -9`), while other authors' messages stay.

use std::path::Path;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::auth::expect_error;
use crate::broker::Broker;
use crate::helpers::{TestApp, new_channel};

async fn erase(app: &TestApp, body: Value) -> reqwest::Response {
    app.http
        .post(format!("{}/erase", app.chat_url()))
        .json(&body)
        .send()
        .await
        .expect("erase reaches chat-service")
}

/// Whether any file under `dir` holds `needle`.
fn files_hold(dir: &Path, needle: &str) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|entry| {
        let path = entry.path();
        if path.is_dir() {
            return files_hold(&path, needle);
        }
        let bytes = std::fs::read(&path).unwrap_or_default();
        bytes
            .windows(needle.len())
            .any(|window| window == needle.as_bytes())
    })
}

#[tokio::test]
async fn an_erased_authors_texts_are_gone_from_the_api_and_then_from_the_files() {
    let mut app = TestApp::on(Broker::embedded()).await;
    let (first, second) = (new_channel(), new_channel());
    let secret = format!("ann-private-{}", uuid::Uuid::new_v4().simple());
    app.post_message(first, "ann", &secret).await;
    app.post_message(first, "bob", "bob's words stay").await;
    app.post_message(second, "ann", &format!("{secret} twice"))
        .await;
    let history_dir = app.data_dir.path().join("history");
    assert!(files_hold(&history_dir, &secret), "on disk before");

    let response = erase(&app, json!({"author": "ann"})).await;
    assert_eq!(response.status(), StatusCode::OK);
    let answer: Value = response.json().await.expect("answer");
    assert_eq!(answer["erased"], 2);

    for query in ["", "?raw=1"] {
        let history = app.history(first, query).await;
        assert!(history[0].deleted && history[0].text.is_empty(), "{query}");
        assert_eq!(history[1].text, "bob's words stay", "{query}");
    }
    let url = format!("{}/channels/{second}/messages/1", app.chat_url());
    let one: Value = app
        .http
        .get(url)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(
        (one["text"].as_str(), one["deleted"].as_bool()),
        (Some(""), Some(true))
    );

    app.restart_chat_service().await;
    assert!(!files_hold(&history_dir, &secret), "gone from the files");
    assert_eq!(app.history(first, "").await[1].text, "bob's words stay");
    let next = app.post_message(first, "ann", "later").await;
    assert_eq!(next.id, 3, "numbering continues after the compaction");
}

#[tokio::test]
async fn bad_erase_requests_get_clear_errors_and_erase_nothing() {
    let app = TestApp::on(Broker::embedded()).await;
    let channel = new_channel();
    app.post_message(channel, "ann", "keep me").await;
    let cases = [
        (json!({}), "invalid_json"),
        (json!({"author": "ann", "extra": 1}), "invalid_json"),
        (json!({"author": ""}), "invalid_author"),
        (
            json!({"author": "ann", "channel": "nope"}),
            "invalid_channel",
        ),
        (
            json!({"author": "ann", "since": "yesterday"}),
            "invalid_query",
        ),
        (
            json!({"author": "ann", "since": "2026-02-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"}),
            "invalid_query",
        ),
    ];
    for (body, code) in cases {
        expect_error(erase(&app, body).await, StatusCode::BAD_REQUEST, code).await;
    }
    let body = json!({"author": "ann", "until": "2000-01-01T00:00:00Z"});
    let answer: Value = erase(&app, body).await.json().await.expect("answer");
    assert_eq!(answer["erased"], 0, "nothing that old");
    assert_eq!(app.history(channel, "").await[0].text, "keep me");
}
