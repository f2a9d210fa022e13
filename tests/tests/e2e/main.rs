//! End-to-end tests: a real broker (rumqttd in this process, or Mosquitto on a free
//! port) and the real chat-service, broadcast-sse and crier binaries.

mod all_in_one;
mod auth;
mod backpressure;
mod bad_input;
mod broker;
mod cases;
mod channels;
mod cluster;
mod config_file;
mod crash_reads;
mod erase;
mod faults;
mod graceful_stop;
mod helpers;
mod hook_app;
mod http2;
mod limits;
mod metrics;
mod mqtt_posts;
mod nats;
mod openapi;
mod presence;
mod presence_webhooks;
mod process;
mod publish_hook;
mod restart;
mod resubscribe;
mod revisions;
mod signals;
mod tls;
mod webhook_app;
mod webhooks;

use broker::Broker;
use helpers::TestApp;

/// Runs each case of `cases` (or of the module named) once on the embedded
/// broker and once on Mosquitto.
macro_rules! on_both_brokers {
    ($($case:ident),* $(,)?) => {
        on_both_brokers!(cases in embedded_broker, mosquitto: $($case),*);
    };
    ($module:ident in $embedded:ident, $mosquitto:ident: $($case:ident),* $(,)?) => {
        mod $embedded {
            use super::*;
            $(
                #[tokio::test]
                async fn $case() {
                    $module::$case(TestApp::on(Broker::embedded()).await).await;
                }
            )*
        }
        mod $mosquitto {
            use super::*;
            $(
                #[tokio::test]
                async fn $case() {
                    if let Some(broker) = Broker::mosquitto() {
                        $module::$case(TestApp::on(broker).await).await;
                    }
                }
            )*
        }
    };
}

on_both_brokers!(
    a_posted_message_reaches_an_open_stream,
    a_stream_opened_after_every_stream_left_gets_the_missed_and_the_live,
    the_broker_sees_every_message_as_json,
    history_pages_in_id_order,
    resume_with_last_event_id_replays_then_goes_live_while_messages_flow,
    resume_with_the_query_parameter_works_like_the_header,
    two_channels_do_not_leak_into_each_other,
    twenty_concurrent_posts_get_ids_1_to_20_once_and_stream_in_order,
    a_closed_stream_leaves_its_channel,
    a_retry_with_the_same_idempotency_key_returns_the_original,
    a_cursor_past_the_newest_id_gets_a_reset_then_every_message,
);

on_both_brokers!(
    mqtt_posts in mqtt_posts_on_embedded_broker, mqtt_posts_on_mosquitto:
    mqtt_and_rest_posts_interleave_with_ids_in_order,
    bad_mqtt_posts_are_reported_and_store_nothing,
    two_chat_services_sharing_the_subscription_store_each_post_once,
);

/// Runs each fault case on a broker process of its own that the test can kill and
/// restart: rumqttd, and Mosquitto.
macro_rules! on_restartable_brokers {
    ($($case:ident),* $(,)?) => {
        mod embedded_broker_process {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    faults::$case(TestApp::on(Broker::embedded_process()).await).await;
                }
            )*
        }
        mod mosquitto_process {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    if let Some(broker) = Broker::mosquitto() {
                        faults::$case(TestApp::on(broker).await).await;
                    }
                }
            )*
        }
    };
}

on_restartable_brokers!(
    a_stream_is_complete_across_a_broker_restart,
    the_outbox_survives_a_chat_service_restart_while_the_broker_is_down,
    readiness_follows_the_broker_and_liveness_does_not,
);

mod fault {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn acknowledged_posts_survive_kill_9_with_ids_1_to_n() {
        faults::acknowledged_posts_survive_kill_9_with_ids_1_to_n(
            TestApp::on(Broker::embedded()).await,
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reconnecting_20_times_while_1000_messages_flow_loses_and_repeats_nothing() {
        let app = TestApp::on(Broker::embedded()).await;
        faults::reconnecting_20_times_while_1000_messages_flow_loses_and_repeats_nothing(app).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stalled_client_neither_slows_others_nor_misses_messages() {
        let app = TestApp::with_options(Broker::embedded(), &[], &["--ring-size", "32"]).await;
        faults::a_stalled_client_neither_slows_others_nor_misses_messages(app).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn retention_trims_to_the_limit_and_a_too_old_resume_gets_a_gap() {
        let retention = [
            "--history-max-per-channel",
            "10",
            "--retention-interval-secs",
            "1",
        ];
        let app = TestApp::with_options(Broker::embedded(), &retention, &[]).await;
        faults::retention_trims_to_the_limit_and_a_too_old_resume_gets_a_gap(app).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sigterm_with_100_open_streams_exits_cleanly_and_loses_nothing() {
        let app = TestApp::on(Broker::embedded()).await;
        faults::sigterm_with_100_open_streams_exits_cleanly_and_loses_nothing(app).await;
    }
}

/// broadcast-sse with one wildcard subscription instead of one per channel.
mod subscribe_all {
    use super::*;

    #[tokio::test]
    async fn a_posted_message_reaches_an_open_stream() {
        let app = TestApp::with_options(Broker::embedded(), &[], &["--subscribe-all"]).await;
        cases::a_posted_message_reaches_an_open_stream(app).await;
    }

    #[tokio::test]
    async fn a_stream_opened_after_every_stream_left_gets_the_missed_and_the_live() {
        let app = TestApp::with_options(Broker::embedded(), &[], &["--subscribe-all"]).await;
        cases::a_stream_opened_after_every_stream_left_gets_the_missed_and_the_live(app).await;
    }

    #[tokio::test]
    async fn two_channels_do_not_leak_into_each_other() {
        let app = TestApp::with_options(Broker::embedded(), &[], &["--subscribe-all"]).await;
        cases::two_channels_do_not_leak_into_each_other(app).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stream_is_complete_across_a_broker_restart() {
        let broker = Broker::embedded_process();
        let app = TestApp::with_options(broker, &[], &["--subscribe-all"]).await;
        faults::a_stream_is_complete_across_a_broker_restart(app).await;
    }
}
