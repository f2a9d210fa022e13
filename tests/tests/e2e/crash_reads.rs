//! What readers see is what a crash keeps: the all-in-one `crier` under posts
//! and history reads, killed with `SIGKILL` and started again, and stopped with
//! `SIGTERM` while streams are open.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use protocol::{ChannelId, Message};
use reqwest::StatusCode;
use tokio::task::JoinHandle;

use crate::helpers::{CRIER, http_client, new_channel, open_stream, wait_for_ready};
use crate::process::Service;

/// Rounds of load and `kill -9`.
const ROUNDS: usize = 4;
/// Load before each kill.
const LOAD: Duration = Duration::from_millis(700);
const POSTERS: usize = 6;
const READERS: usize = 3;
/// What a graceful stop may take.
const STOP_BOUND: Duration = Duration::from_secs(10);

/// Every `(id, text)` a reader saw, by id: a second text for one id fails.
type Seen = Arc<Mutex<BTreeMap<u64, String>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_a_reader_saw_is_kept_with_its_text_across_kill_9() {
    let dir = tempfile::tempdir().expect("temp dir");
    let http = http_client();
    let channel = new_channel();
    let seen: Seen = Arc::default();
    for round in 0..ROUNDS {
        let mut crier = start_crier(&dir);
        wait_for_ready(&http, &crier.url).await;
        check_history_holds_what_was_seen(&http, &crier.url, channel, &seen, round).await;
        let mut load: Vec<JoinHandle<()>> = Vec::new();
        for poster in 0..POSTERS {
            let (http, base) = (http.clone(), crier.url.clone());
            load.push(tokio::spawn(post_for(http, base, channel, round, poster)));
        }
        for _ in 0..READERS {
            let (http, base, seen) = (http.clone(), crier.url.clone(), seen.clone());
            load.push(tokio::spawn(read_for(http, base, channel, seen)));
        }
        tokio::time::sleep(LOAD).await;
        crier.kill_in_place();
        for task in load {
            task.await.expect("a poster or reader panicked");
        }
    }
    let crier = start_crier(&dir);
    wait_for_ready(&http, &crier.url).await;
    check_history_holds_what_was_seen(&http, &crier.url, channel, &seen, ROUNDS).await;
    assert!(
        seen.lock().expect("seen").len() > 10,
        "the readers saw messages"
    );
}

/// `SIGTERM` with streams open: every stream ends, `crier` exits successfully
/// within the bound, and no thread panics on the way (a stream thread's grace
/// period used to panic for want of a runtime).
#[tokio::test]
async fn sigterm_ends_open_streams_and_no_thread_panics() {
    let dir = tempfile::tempdir().expect("temp dir");
    let http = http_client();
    let mut crier = start_crier(&dir);
    wait_for_ready(&http, &crier.url).await;
    let channel = new_channel();
    let mut streams = Vec::new();
    for _ in 0..10 {
        streams.push(open_stream(&http, &crier.url, channel, None).await);
    }
    crier.send_sigterm();
    for stream in &mut streams {
        stream.expect_end().await;
    }
    let (status, took) = crier.wait_for_exit(STOP_BOUND).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "crier exits cleanly: {status:?} after {took:?}; log:\n{}",
        crier.log_text()
    );
    crier.assert_no_thread_panicked();
}

/// Posts until the service goes away (bounded by count).
async fn post_for(
    http: reqwest::Client,
    base: String,
    channel: ChannelId,
    round: usize,
    poster: usize,
) {
    for n in 0..100_000 {
        let text = format!("round {round} poster {poster} #{n}");
        let sent = http
            .post(format!("{base}/channels/{channel}/messages"))
            .json(&serde_json::json!({"author": "ann", "text": text}))
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        match sent {
            Ok(response) if response.status() == StatusCode::CREATED => {}
            Ok(response) if response.status() == StatusCode::SERVICE_UNAVAILABLE => {}
            _ => return,
        }
    }
}

/// Reads the latest messages until the service goes away (bounded by count),
/// recording each `(id, text)` seen.
async fn read_for(http: reqwest::Client, base: String, channel: ChannelId, seen: Seen) {
    for _ in 0..100_000 {
        let Some(page) = latest(&http, &base, channel).await else {
            return;
        };
        let mut seen = seen.lock().expect("seen");
        for message in page {
            if let Some(earlier) = seen.insert(message.id, message.text.clone()) {
                assert_eq!(
                    earlier, message.text,
                    "#{} was read with two texts",
                    message.id
                );
            }
        }
    }
}

async fn latest(http: &reqwest::Client, base: &str, channel: ChannelId) -> Option<Vec<Message>> {
    let response = http
        .get(format!("{base}/channels/{channel}/messages?limit=50"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    if response.status() != StatusCode::OK {
        return None;
    }
    let body: serde_json::Value = response.json().await.ok()?;
    serde_json::from_value(body.get("messages")?.clone()).ok()
}

/// After a restart, history holds every message any reader saw, with the text
/// it was seen with.
async fn check_history_holds_what_was_seen(
    http: &reqwest::Client,
    base: &str,
    channel: ChannelId,
    seen: &Seen,
    round: usize,
) {
    let stored = whole_history(http, base, channel).await;
    let seen = seen.lock().expect("seen").clone();
    for (id, text) in &seen {
        assert_eq!(
            stored.get(id),
            Some(text),
            "after kill -9 number {round}: #{id} was read as {text:?}"
        );
    }
    let ids: Vec<u64> = stored.keys().copied().collect();
    assert_eq!(
        ids,
        (1..=ids.len() as u64).collect::<Vec<_>>(),
        "no gap in ids after kill -9 number {round}"
    );
}

async fn whole_history(
    http: &reqwest::Client,
    base: &str,
    channel: ChannelId,
) -> BTreeMap<u64, String> {
    let mut stored = BTreeMap::new();
    let mut after = 0;
    for _ in 0..10_000 {
        let response = http
            .get(format!(
                "{base}/channels/{channel}/messages?after={after}&limit=1000"
            ))
            .send()
            .await
            .expect("history");
        let body: serde_json::Value = response.json().await.expect("history body");
        let page: Vec<Message> =
            serde_json::from_value(body["messages"].clone()).expect("messages");
        let Some(last) = page.last() else {
            return stored;
        };
        after = last.id;
        stored.extend(page.into_iter().map(|m| (m.id, m.text)));
    }
    panic!("history did not end");
}

/// The crier binary on a free port, its data and log in `dir`.
fn start_crier(dir: &tempfile::TempDir) -> Service {
    let args = [
        "--listen".to_string(),
        "127.0.0.1:0".into(),
        "--data-dir".into(),
        dir.path().join("data").display().to_string(),
    ];
    Service::start(CRIER, &args, &dir.path().join("crier.log"))
}
