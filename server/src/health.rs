//! The health endpoints every Crier service answers: `/healthz` (the process
//! answers) and `/readyz` (what it depends on is up), in one shape, and
//! `/openapi.json`, the document of what the binary serves.

use actix_web::{HttpResponse, web};
use serde::Serialize;
use utoipa::openapi::OpenApi;
use utoipa::{IntoResponses, ToSchema};

use crate::error::method_not_allowed;
use serde_json::{Map, Value, json};

/// The routes every binary answers besides its API: health and the API document.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/openapi.json"),
];

/// Registers [`ROUTES`]: `/healthz`, the binary's own `readyz` and `/openapi.json`
/// serving `document` (see [`crate::openapi::document`]).
pub fn configure(cfg: &mut web::ServiceConfig, readyz: actix_web::Route, document: OpenApi) {
    let get_only = |path: &str, route: actix_web::Route| {
        web::resource(path)
            .route(route)
            .default_service(method_not_allowed("GET"))
    };
    cfg.service(get_only("/healthz", web::get().to(healthz)))
        .service(get_only("/readyz", readyz))
        .service(
            get_only("/openapi.json", web::get().to(openapi)).app_data(web::Data::new(document)),
        );
}

/// How a readiness report names a broker connection.
pub fn connection(connected: bool) -> &'static str {
    if connected {
        "connected"
    } else {
        "disconnected"
    }
}

/// `{"status":"ok"}`.
#[derive(Serialize, ToSchema)]
pub struct Up {
    status: UpStatus,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
enum UpStatus {
    Ok,
}

/// The process answers.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tag = "health",
    responses((status = 200, description = "Up.", body = Up))
)]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Up {
        status: UpStatus::Ok,
    })
}

/// What [`readiness`] answers, for the API document: the status, what each
/// binary reports (a field only where the binary has that part) and, when not
/// ready, the usual error object naming every problem.
#[derive(ToSchema)]
pub struct Readiness {
    pub status: ReadinessStatus,
    /// The store: `ok` or `failing` (chat-service).
    #[schema(required = false)]
    pub storage: String,
    /// The publisher's (chat-service) or the subscriber's (broadcast-sse)
    /// broker connection: `connected` or `disconnected`.
    #[schema(required = false)]
    pub broker: String,
    /// The stream subscriber's broker connection (all-in-one).
    #[schema(required = false)]
    pub subscriber: String,
    /// The subscription that takes MQTT posts: `connected`, `disconnected` or
    /// `off` (chat-service).
    #[schema(required = false)]
    pub mqtt_posts: String,
    /// Stored messages the broker has not acknowledged yet (chat-service).
    #[schema(required = false)]
    pub outbox: u64,
    /// Open streams (broadcast-sse).
    #[schema(required = false)]
    pub listeners: u64,
    /// Channels being backfilled from history (broadcast-sse).
    #[schema(required = false)]
    pub backfills: u64,
    /// When not ready: `not_ready`, and a message naming every problem.
    #[schema(inline, required = false)]
    pub error: protocol::error::ErrorDetail,
}

#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReadinessStatus {
    Ready,
    NotReady,
}

/// The answers of every `/readyz`, for its `#[utoipa::path]`.
#[derive(IntoResponses)]
pub enum ReadyzResponses {
    /// Ready.
    #[response(status = 200)]
    Ready(Readiness),
    /// Not ready: the report says what is wrong.
    #[response(status = 503)]
    NotReady(Readiness),
}

/// A readiness answer: `200` with `"status": "ready"` and the `report`, or, when
/// something is wrong, `503` with the same report, `"status": "not_ready"` and the
/// usual `error` object naming every problem.
pub fn readiness(mut report: Map<String, Value>, problems: &[&str]) -> HttpResponse {
    if problems.is_empty() {
        report.insert("status".into(), "ready".into());
        return HttpResponse::Ok().json(report);
    }
    report.insert("status".into(), "not_ready".into());
    let message = format!("not ready: {}", problems.join(" and "));
    report.insert(
        "error".into(),
        json!({"code": "not_ready", "message": message}),
    );
    HttpResponse::ServiceUnavailable().json(report)
}

/// This document.
///
/// What this binary serves: the all-in-one `crier` both services, chat-service
/// and broadcast-sse their own routes; every binary the health routes.
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi",
    tag = "health",
    responses((status = 200, description = "OpenAPI 3.1.", body = Object))
)]
pub async fn openapi(document: web::Data<OpenApi>) -> HttpResponse {
    HttpResponse::Ok().json(document.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::MessageBody;
    use actix_web::http::StatusCode;

    fn body_of(response: HttpResponse) -> Value {
        let bytes = response.into_body().try_into_bytes().unwrap_or_default();
        serde_json::from_slice(&bytes).unwrap_or(Value::Null)
    }

    #[test]
    fn problems_make_a_503_with_the_report_and_an_error() {
        let mut report = Map::new();
        report.insert("outbox".into(), 7.into());
        let response = readiness(report, &["the MQTT broker is not connected"]);
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = body_of(response);
        assert_eq!(body["status"], "not_ready");
        assert_eq!(body["outbox"], 7);
        assert_eq!(body["error"]["code"], "not_ready");
        assert_eq!(
            body["error"]["message"],
            "not ready: the MQTT broker is not connected"
        );
    }

    #[test]
    fn no_problem_is_a_200() {
        let response = readiness(Map::new(), &[]);
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(body_of(response)["status"], "ready");
    }
}
