//! End-to-end tests: a real broker (rumqttd in this process, or Mosquitto on a free
//! port) and the real chat-service, broadcast-sse and crier binaries.

mod all_in_one;
mod bad_input;
mod broker;
mod cases;
mod helpers;
mod process;
mod restart;

use broker::Broker;
use helpers::TestApp;

/// Runs each case once on the embedded broker and once on Mosquitto.
macro_rules! on_both_brokers {
    ($($case:ident),* $(,)?) => {
        mod embedded_broker {
            use super::*;
            $(
                #[tokio::test]
                async fn $case() {
                    cases::$case(TestApp::on(Broker::embedded()).await).await;
                }
            )*
        }
        mod mosquitto {
            use super::*;
            $(
                #[tokio::test]
                async fn $case() {
                    if let Some(broker) = Broker::mosquitto() {
                        cases::$case(TestApp::on(broker).await).await;
                    }
                }
            )*
        }
    };
}

on_both_brokers!(
    a_posted_message_reaches_an_open_stream,
    the_broker_sees_every_message_as_json,
    history_pages_in_id_order,
    resume_with_last_event_id_replays_then_goes_live_while_messages_flow,
    resume_with_the_query_parameter_works_like_the_header,
    two_channels_do_not_leak_into_each_other,
    twenty_concurrent_posts_get_ids_1_to_20_once_and_stream_in_order,
    a_closed_stream_leaves_its_channel,
    a_retry_with_the_same_idempotency_key_returns_the_original,
);
