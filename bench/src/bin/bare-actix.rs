//! The floor of a POST: an actix-web server with Crier's build of actix-web and
//! its allocator, whose `POST /channels/{channel}/messages` parses the same JSON
//! body, numbers the message from a counter and answers `201` with a body of
//! the same shape as Crier's, storing and publishing nothing. `bench/ingest.sh`
//! measures it beside Crier, so the difference is what the store, the broker
//! and validation cost per POST.
//!
//!   bare-actix --listen 127.0.0.1:PORT

use std::sync::atomic::{AtomicU64, Ordering};

use actix_web::{App, HttpResponse, HttpServer, web};
use serde::{Deserialize, Serialize};

#[path = "../small_server.rs"]
mod small_server;
use small_server::healthz;

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Deserialize)]
struct NewMessage {
    author: String,
    text: String,
}

#[derive(Serialize)]
struct Message {
    id: u64,
    channel: String,
    author: String,
    text: String,
    created_at: u64,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

async fn post_message(channel: web::Path<String>, body: web::Json<NewMessage>) -> HttpResponse {
    let NewMessage { author, text } = body.into_inner();
    let message = Message {
        id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        channel: channel.into_inner(),
        author,
        text,
        created_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    };
    HttpResponse::Created().json(message)
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let listen = small_server::listen_address("bare-actix");
    HttpServer::new(|| {
        App::new()
            .route("/channels/{channel}/messages", web::post().to(post_message))
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(healthz))
    })
    .bind(listen)?
    .run()
    .await
}
