//! Cross-origin access (`--cors-origin`), so a page or app on another origin can
//! post and open streams. Without the flag no CORS header is sent at all.

use actix_cors::Cors;
use actix_web::http::{Method, header};
use actix_web::middleware::Condition;
use clap::Args;

/// Seconds a browser may cache a preflight answer.
const PREFLIGHT_MAX_AGE: usize = 3600;

#[derive(Debug, Clone, Default, Args)]
pub struct CorsSettings {
    /// An origin allowed to call this service from a browser, like
    /// `https://chat.example.com` (repeat the flag for more, or `*` for any).
    /// Explicit origins may also send cookies; `*` may not.
    #[arg(
        long = "cors-origin",
        env = "CRIER_CORS_ORIGINS",
        value_delimiter = ','
    )]
    pub cors_origins: Vec<String>,
}

impl CorsSettings {
    /// The middleware: allows the configured origins, or is switched off.
    pub fn middleware(&self) -> Condition<Cors> {
        if self.cors_origins.is_empty() {
            return Condition::new(false, Cors::default());
        }
        let mut cors = Cors::default()
            .allowed_methods([Method::GET, Method::POST, Method::DELETE])
            .allowed_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::HeaderName::from_static("idempotency-key"),
                header::HeaderName::from_static("last-event-id"),
            ])
            .expose_headers([
                header::LOCATION,
                header::RETRY_AFTER,
                header::HeaderName::from_static("idempotent-replayed"),
            ])
            .max_age(PREFLIGHT_MAX_AGE);
        if self.cors_origins.iter().any(|origin| origin == "*") {
            cors = cors.allow_any_origin().send_wildcard();
        } else {
            for origin in &self.cors_origins {
                cors = cors.allowed_origin(origin);
            }
            cors = cors.supports_credentials();
        }
        Condition::new(true, cors)
    }
}
