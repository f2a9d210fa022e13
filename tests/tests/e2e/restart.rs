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
