//! A graceful stop ends the background tasks in order: the chat-service's
//! publisher persists what the broker acknowledged last, so a restart has
//! nothing to publish again, and no task is left running past the stop.

use std::time::{Duration, Instant};

use crate::broker::Broker;
use crate::helpers::{TestApp, new_channel};

const STOP_BOUND: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_right_after_the_last_acknowledgement_leaves_an_empty_outbox() {
    let mut app = TestApp::on(Broker::embedded()).await;
    let channel = new_channel();
    for n in 0..50 {
        app.post_message(channel, "ann", &format!("#{n}")).await;
    }
    // The broker acknowledged everything; the chat-service writes its
    // watermarks every 200 ms, so a stop now falls inside that window.
    let deadline = Instant::now() + STOP_BOUND;
    loop {
        let (_, report) = app.chat_readiness().await;
        if report["outbox"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the outbox empties: {report}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let chat = app.chat.as_mut().expect("chat-service");
    chat.send_sigterm();
    let (status, took) = chat.wait_for_exit(STOP_BOUND).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "chat-service exits cleanly: {status:?} after {took:?}"
    );
    let log = chat.log_text();
    assert!(
        !log.contains("background tasks still running"),
        "every background task ended within the stop:\n{log}"
    );
    chat.assert_no_thread_panicked();

    app.kill_chat_service();
    app.start_chat_service_again();
    app.wait_until_ready().await;
    let log = app.chat.as_ref().expect("chat-service").log_text();
    let last_connect = log
        .lines()
        .rev()
        .find(|line| line.contains("connected to the MQTT broker;"))
        .expect("the restarted chat-service connected");
    assert!(
        last_connect.ends_with("; 0 messages in the outbox"),
        "after a graceful stop nothing is owed to the broker: {last_connect}"
    );
}
