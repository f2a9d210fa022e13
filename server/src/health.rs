//! The health endpoints every Crier service answers: `/healthz` (the process
//! answers) and `/readyz` (what it depends on is up), in one shape.

use actix_web::{HttpResponse, web};

use crate::error::method_not_allowed;
use serde_json::{Map, Value, json};

/// The routes every binary answers besides its API: health and the API document.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/openapi.json"),
];

/// Registers [`ROUTES`]: `/healthz`, the binary's own `readyz` and `/openapi.json`.
pub fn configure(cfg: &mut web::ServiceConfig, readyz: actix_web::Route) {
    let get_only = |path: &str, route: actix_web::Route| {
        web::resource(path)
            .route(route)
            .default_service(method_not_allowed("GET"))
    };
    cfg.service(get_only("/healthz", web::get().to(healthz)))
        .service(get_only("/readyz", readyz))
        .service(get_only("/openapi.json", web::get().to(openapi)));
}

/// How a readiness report names a broker connection.
pub fn connection(connected: bool) -> &'static str {
    if connected {
        "connected"
    } else {
        "disconnected"
    }
}

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
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

/// `GET /openapi.json`: the document of the API.
async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(protocol::openapi::DOCUMENT)
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
