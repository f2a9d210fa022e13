//! `/healthz` (the process answers) and `/readyz` (storage and broker are up).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use protocol::ApiError;
use serde_json::json;

use crate::AppState;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let storage = state.history.is_healthy();
    let broker = state.publisher.status().is_connected();
    if storage && broker {
        return Ok(HttpResponse::Ok().json(json!({
            "status": "ready", "storage": "ok", "broker": "connected"
        })));
    }
    let mut missing = Vec::new();
    if !storage {
        missing.push("storage is failing");
    }
    if !broker {
        missing.push("the MQTT broker is not connected");
    }
    Err(ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "not_ready",
        format!("not ready: {}", missing.join(" and ")),
    ))
}
