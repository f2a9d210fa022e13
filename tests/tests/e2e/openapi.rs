//! The OpenAPI documents are true: each binary's describes exactly the routes
//! it serves, every reference in it resolves, it is what the binary serves at
//! `/openapi.json`, and every route it describes answers.

use reqwest::{Method, StatusCode};
use utoipa::openapi::OpenApi;

use crate::broker::Broker;
use crate::helpers::{CRIER, TestApp, new_channel, wait_for_ready};
use crate::process::Service;
use server::openapi::{dangling_refs, operations, sorted};

fn routes_of(tables: &[&[(&str, &str)]]) -> Vec<(String, String)> {
    let routes: Vec<(&str, &str)> = tables
        .iter()
        .flat_map(|table| table.iter().copied())
        .collect();
    sorted(&routes)
}

/// A binary's document, and the routes it serves.
struct Binary {
    name: &'static str,
    document: OpenApi,
    routes: Vec<(String, String)>,
}

fn binaries() -> [Binary; 3] {
    let chat = chat_service::startup::ROUTES;
    let sse = broadcast_sse::startup::ROUTES;
    let health = server::health::ROUTES;
    [
        Binary {
            name: "chat-service",
            document: chat_service::openapi::document(),
            routes: routes_of(&[chat, health]),
        },
        Binary {
            name: "broadcast-sse",
            document: broadcast_sse::openapi::document(),
            routes: routes_of(&[sse, health]),
        },
        Binary {
            name: "crier",
            document: crier::openapi::document(),
            routes: routes_of(&[chat, sse, health]),
        },
    ]
}

#[test]
fn each_document_describes_exactly_what_its_binary_serves() {
    for Binary {
        name: binary,
        document,
        routes,
    } in binaries()
    {
        assert_eq!(operations(&document), routes, "{binary}");
        assert_eq!(dangling_refs(&document), Vec::<String>::new(), "{binary}");
        assert_eq!(document.info.title, "Crier", "{binary}");
    }
}

#[test]
fn every_error_answer_has_the_json_error_body() {
    let document = serde_json::to_value(crier::openapi::document()).expect("JSON");
    let mut checked = 0;
    for (path, item) in document["paths"].as_object().into_iter().flatten() {
        for (method, operation) in item.as_object().into_iter().flatten() {
            for (status, response) in operation["responses"].as_object().into_iter().flatten() {
                if !status.starts_with('4') && status != "500" {
                    continue;
                }
                let reference = response["$ref"].as_str().unwrap_or_default();
                let pointer = reference.trim_start_matches('#');
                let body = &document.pointer(pointer).unwrap_or(response)["content"]["application/json"]
                    ["schema"]["$ref"];
                assert_eq!(
                    body, "#/components/schemas/Error",
                    "{method} {path} {status}"
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 30, "only {checked} error answers");
}

async fn served_document(http: &reqwest::Client, base: &str) -> serde_json::Value {
    http.get(format!("{base}/openapi.json"))
        .send()
        .await
        .expect("GET /openapi.json")
        .json()
        .await
        .expect("JSON")
}

#[tokio::test]
async fn the_standalone_services_serve_their_own_documents() {
    let app = TestApp::on(Broker::embedded()).await;
    let chat = served_document(&app.http, app.chat_url()).await;
    let expected = serde_json::to_value(chat_service::openapi::document()).expect("JSON");
    assert_eq!(chat, expected, "chat-service");
    let sse = served_document(&app.http, &app.sse.url).await;
    let expected = serde_json::to_value(broadcast_sse::openapi::document()).expect("JSON");
    assert_eq!(sse, expected, "broadcast-sse");
}

#[tokio::test]
async fn every_described_route_answers_and_other_methods_are_405() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data").display().to_string();
    let args = ["--listen", "127.0.0.1:0", "--data-dir", data.as_str()].map(String::from);
    let crier = Service::start(CRIER, &args, &dir.path().join("crier.log"));
    let http = crate::helpers::http_client();
    wait_for_ready(&http, &crier.url).await;

    let served = served_document(&http, &crier.url).await;
    let document = crier::openapi::document();
    assert_eq!(served, serde_json::to_value(&document).expect("JSON"));

    let channel = new_channel().to_string();
    for (method, path) in operations(&document) {
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
