//! `/readyz`: the broker is connected; the report includes the open streams and
//! the channels being backfilled from history.

use actix_web::{HttpResponse, web};
use serde_json::Map;
use server::health::{connection, readiness};

use crate::AppState;

/// The broker is connected (the report names what is not).
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "health",
    responses(server::health::ReadyzResponses)
)]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let connected = state.broker.is_connected();
    let mut report = Map::new();
    report.insert("broker".into(), connection(connected).into());
    report.insert("listeners".into(), state.hub.listener_count().into());
    report.insert("backfills".into(), state.hub.backfills_in_progress().into());
    let problems: &[&str] = if connected {
        &[]
    } else {
        &["the MQTT broker is not connected"]
    };
    readiness(report, problems)
}
