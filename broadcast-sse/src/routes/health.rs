//! `/healthz` (the process answers) and `/readyz` (the broker is connected).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use protocol::ApiError;
use serde_json::json;

use crate::AppState;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if !state.broker.is_connected() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "not ready: the MQTT broker is not connected",
        ));
    }
    Ok(HttpResponse::Ok().json(json!({
        "status": "ready",
        "broker": "connected",
        "listeners": state.hub.listener_count(),
        "backfills": state.hub.backfills_in_progress(),
    })))
}
