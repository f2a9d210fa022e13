//! The OpenAPI document is true: it describes exactly the routes the binaries
//! serve, and the all-in-one serves it.

use reqwest::{Method, StatusCode};

use crate::helpers::{CRIER, new_channel, wait_for_ready};
use crate::process::Service;

fn served_routes() -> Vec<(String, String)> {
    let mut routes: Vec<(String, String)> = chat_service::startup::ROUTES
        .iter()
        .chain(broadcast_sse::startup::ROUTES)
        .chain(server::health::ROUTES)
        .map(|(method, path)| (method.to_string(), path.to_string()))
        .collect();
    routes.sort();
    routes
}

#[test]
fn the_document_describes_exactly_the_served_routes() {
    assert_eq!(protocol::openapi::operations(), served_routes());
}

#[tokio::test]
async fn every_described_route_answers_and_other_methods_are_405() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data").display().to_string();
    let args = ["--listen", "127.0.0.1:0", "--data-dir", data.as_str()].map(String::from);
    let crier = Service::start(CRIER, &args, &dir.path().join("crier.log"));
    let http = crate::helpers::http_client();
    wait_for_ready(&http, &crier.url).await;

    let served: serde_json::Value = http
        .get(format!("{}/openapi.json", crier.url))
        .send()
        .await
        .expect("GET /openapi.json")
        .json()
        .await
        .expect("JSON");
    let document: serde_json::Value =
        serde_json::from_str(protocol::openapi::DOCUMENT).expect("document");
    assert_eq!(served, document);

    let channel = new_channel().to_string();
    for (method, path) in served_routes() {
        let url = format!("{}{}", crier.url, concrete(&path, &channel));
        let method = Method::from_bytes(method.as_bytes()).expect("method");
        let response = http
            .request(method.clone(), &url)
            .send()
            .await
            .expect("request");
        let status = response.status();
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        if status == StatusCode::NOT_FOUND {
            let body: serde_json::Value = response.json().await.expect("JSON error");
            assert_ne!(
                body["error"]["code"], "not_found",
                "{method} {path} is routed"
            );
        }
    }
    for path in ["/channels/{channel}/messages", "/bans", "/publish"] {
        let url = format!("{}{}", crier.url, concrete(path, &channel));
        let response = http.put(&url).send().await.expect("PUT");
        assert_eq!(
            response.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "PUT {path}"
        );
    }
}

fn concrete(path: &str, channel: &str) -> String {
    path.replace("{channel}", channel)
        .replace("{id}", "1")
        .replace("{name}", "ann")
}
