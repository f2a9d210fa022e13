//! An app of the test's own that receives webhooks on loopback (actix-web),
//! checks every signature with the shared secret, and keeps every event it
//! acknowledged, per webhook path. It answers as the test says: `2xx`, `500`,
//! or slowly; a bad signature gets `401` and is remembered, so the test fails.

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

/// How the app answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Answer {
    Accept = 0,
    Fail = 1,
    /// Accepts after a short pause.
    Slowly = 2,
}

/// One event the app acknowledged.
#[derive(Debug, Clone)]
pub struct Received {
    pub event: Value,
    pub at: Instant,
}

impl Received {
    pub fn event_id(&self) -> &str {
        self.event["id"].as_str().unwrap_or_default()
    }

    pub fn channel(&self) -> &str {
        self.event["channel"].as_str().unwrap_or_default()
    }

    pub fn log_id(&self) -> u64 {
        self.event["data"]["id"].as_u64().unwrap_or_default()
    }
}

#[derive(Default)]
struct Shared {
    secret: String,
    answer: AtomicU8,
    attempts: AtomicUsize,
    bad_signatures: AtomicBool,
    received: Mutex<Vec<(String, Received)>>,
}

impl Shared {
    fn received(&self) -> MutexGuard<'_, Vec<(String, Received)>> {
        self.received.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct WebhookApp {
    pub base: String,
    shared: Arc<Shared>,
    server: actix_web::dev::ServerHandle,
}

/// The pause of [`Answer::Slowly`].
const SLOW: Duration = Duration::from_millis(40);

impl WebhookApp {
    /// Starts the app on a free port of loopback.
    pub async fn start(secret: &str) -> WebhookApp {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        WebhookApp::on(listener, secret)
    }

    /// Starts the app on `listener` (to come back on a port the service
    /// was already told).
    pub fn on(listener: TcpListener, secret: &str) -> WebhookApp {
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let shared = Arc::new(Shared {
            secret: secret.to_string(),
            ..Shared::default()
        });
        let state = web::Data::from(shared.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .route("/hooks/{name}", web::post().to(receive))
        })
        .workers(1)
        .listen(listener)
        .expect("listen")
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        WebhookApp {
            base,
            shared,
            server: handle,
        }
    }

    /// The URL of the webhook named `name`, with `fragment` (`#events=…` or "").
    pub fn url(&self, name: &str, fragment: &str) -> String {
        format!("{}/hooks/{name}{fragment}", self.base)
    }

    pub fn answer(&self, answer: Answer) {
        self.shared.answer.store(answer as u8, Ordering::SeqCst);
    }

    /// Requests received, acknowledged or not.
    pub fn attempts(&self) -> usize {
        self.shared.attempts.load(Ordering::SeqCst)
    }

    /// The events the webhook `name` acknowledged, in the order it did.
    pub fn received(&self, name: &str) -> Vec<Received> {
        self.shared
            .received()
            .iter()
            .filter(|(hook, _)| hook == name)
            .map(|(_, received)| received.clone())
            .collect()
    }

    /// Every signature checked out so far.
    pub fn assert_every_signature_was_valid(&self) {
        assert!(
            !self.shared.bad_signatures.load(Ordering::SeqCst),
            "an event came with a bad signature"
        );
    }

    pub async fn stop(self) {
        self.server.stop(false).await;
    }
}

async fn receive(
    request: HttpRequest,
    body: web::Bytes,
    name: web::Path<String>,
    shared: web::Data<Shared>,
) -> HttpResponse {
    shared.attempts.fetch_add(1, Ordering::SeqCst);
    let header = request
        .headers()
        .get("crier-signature")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    if !signature_is_valid(&shared.secret, header, &body) {
        shared.bad_signatures.store(true, Ordering::SeqCst);
        return HttpResponse::Unauthorized().finish();
    }
    let answer = shared.answer.load(Ordering::SeqCst);
    if answer == Answer::Fail as u8 {
        return HttpResponse::InternalServerError().finish();
    }
    if answer == Answer::Slowly as u8 {
        tokio::time::sleep(SLOW).await;
    }
    // A POST carries a JSON array of events.
    let Ok(Value::Array(events)) = serde_json::from_slice::<Value>(&body) else {
        return HttpResponse::BadRequest().finish();
    };
    let name = name.into_inner();
    let at = Instant::now();
    let mut received = shared.received();
    for event in events {
        received.push((name.clone(), Received { event, at }));
    }
    HttpResponse::NoContent().finish()
}

/// What a receiver of Crier's webhooks does: `t=…,v1=…`, the HMAC-SHA256 of
/// `t.body`, and a time close to now.
fn signature_is_valid(secret: &str, header: &str, body: &[u8]) -> bool {
    let mut time = None;
    let mut signature = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => time = value.parse::<u64>().ok(),
            Some(("v1", value)) => signature = Some(value),
            _ => {}
        }
    }
    let (Some(time), Some(signature)) = (time, signature) else {
        return false;
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if now.abs_diff(time) > 300 {
        return false;
    }
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(format!("{time}.").as_bytes());
    mac.update(body);
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    expected == signature
}
