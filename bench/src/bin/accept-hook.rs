//! The cheapest publish hook an app could run: an actix-web server on one
//! worker that reads each post Crier sends it and answers `{"action":"accept"}`.
//! `bench/ingest.sh` measures crier with it (`crier-hook`) beside crier
//! without one, so the difference is what asking the app costs per POST.
//! It is also the cheapest webhook receiver (`POST /webhook`: reads the array
//! of events, answers `204`), for `crier-webhook` and `bench/webhooks.sh`.
//!
//!   accept-hook --listen 127.0.0.1:PORT

use actix_web::{App, HttpResponse, HttpServer, web};
use serde::Deserialize;

#[path = "../small_server.rs"]
mod small_server;
use small_server::healthz;

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// What the hook is shown; read as an app would, so parsing is part of its cost.
#[derive(Deserialize)]
#[allow(dead_code)]
struct Post {
    channel: String,
    author: String,
    text: String,
}

/// A webhook event, read as an app would.
#[derive(Deserialize)]
#[allow(dead_code)]
struct Event {
    id: String,
    r#type: String,
    channel: String,
    data: serde_json::Value,
}

async fn receive(_events: web::Json<Vec<Event>>) -> HttpResponse {
    HttpResponse::NoContent().finish()
}

async fn accept(_post: web::Json<Post>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(r#"{"action":"accept"}"#)
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let listen = small_server::listen_address("accept-hook");
    HttpServer::new(|| {
        App::new()
            .route("/", web::post().to(accept))
            .route("/webhook", web::post().to(receive))
            .route("/readyz", web::get().to(healthz))
    })
    .workers(1)
    .bind(listen)?
    .run()
    .await
}
