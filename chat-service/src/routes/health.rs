//! `/readyz`: storage and broker are up; the report includes the outbox depth
//! (stored messages the broker has not acknowledged yet) and, with webhooks,
//! their backlog (information only: it never makes the service unready).

use actix_web::{HttpResponse, web};
use serde_json::{Map, Value};
use server::health::{connection, readiness};
use server::mqtt::BrokerStatus;

use crate::AppState;

/// Storage and the broker are up (the report names what is not).
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "health",
    responses(server::health::ReadyzResponses)
)]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let (report, problems) = report(&state).await;
    readiness(report, &problems)
}

/// The chat-service's part of a readiness report, and what is wrong.
pub async fn report(state: &AppState) -> (Map<String, Value>, Vec<&'static str>) {
    let storage = state.history.is_healthy().await;
    let broker = state.publisher.status().is_connected();
    let mut report = Map::new();
    report.insert(
        "storage".into(),
        if storage { "ok" } else { "failing" }.into(),
    );
    report.insert("broker".into(), connection(broker).into());
    report.insert("outbox".into(), state.publisher.outbox_depth().into());
    let mqtt_posts = state.mqtt_posts.as_ref().map(BrokerStatus::is_connected);
    let posts = mqtt_posts.map_or("off", connection);
    report.insert("mqtt_posts".into(), posts.into());
    if let Some(webhooks) = &state.webhooks {
        // Information only: an app that is down does not make Crier unready.
        report.insert("webhook_backlog".into(), webhooks.backlog().into());
    }
    let mut problems = Vec::new();
    if mqtt_posts == Some(false) {
        problems.push("the MQTT post subscription is not in place");
    }
    if !storage {
        problems.push("storage is failing");
    }
    if !broker {
        problems.push("the MQTT broker is not connected");
    }
    (report, problems)
}
