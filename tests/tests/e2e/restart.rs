//! Restarting the chat-service on its data dir keeps numbering and the broker path.

use crate::broker::Broker;
use crate::helpers::{TestApp, new_channel};

#[tokio::test]
async fn the_next_id_continues_after_a_chat_service_restart() {
    let mut app = TestApp::on(Broker::embedded()).await;
    let channel = new_channel();
    for n in 1..=3 {
        app.post_message(channel, "ann", &format!("before {n}"))
            .await;
    }
    let mut stream = app.open_stream(channel, Some(3)).await;
    app.restart_chat_service().await;

    let after = app.post_message(channel, "ann", "after the restart").await;
    assert_eq!(after.id, 4, "numbering continues after the last stored id");
    let ids: Vec<u64> = app
        .history(channel, "")
        .await
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(ids, [1, 2, 3, 4], "history survived the restart");
    assert_eq!(
        stream.next_message().await,
        after,
        "the restarted service publishes to open streams"
    );
}

/// A chat-service restarted on an emptied data directory numbers from 1 again; a
/// browser still holding a cursor from before is told with `event: reset`.
#[tokio::test]
async fn a_stream_resuming_after_the_data_was_emptied_gets_a_reset() {
    let mut app = TestApp::on(Broker::embedded()).await;
    let channel = new_channel();
    for n in 1..=3 {
        app.post_message(channel, "ann", &format!("before {n}"))
            .await;
    }
    app.kill_chat_service();
    std::fs::remove_dir_all(app.data_dir.path().join("history")).expect("empty the data");
    app.start_chat_service_again();
    app.wait_until_ready().await;
    let fresh = app.post_message(channel, "ann", "after the reset").await;
    assert_eq!(fresh.id, 1, "an emptied store numbers from 1");
    let mut stream = app.open_stream(channel, Some(3)).await;
    assert_eq!(stream.next_reset().await, 1);
    assert_eq!(stream.next_message().await, fresh);
}
