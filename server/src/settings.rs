//! HTTP server settings every binary shares: cross-origin access, time limits
//! and TLS.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::cors::CorsSettings;
use crate::tls::TlsError;

#[derive(Debug, Clone, Args)]
pub struct ServerSettings {
    #[command(flatten)]
    pub cors: CorsSettings,

    /// Milliseconds a client may take to send a request's headers (slow clients
    /// holding connections open are cut off with `408`).
    #[arg(long, env = "CRIER_REQUEST_HEADER_TIMEOUT_MS", default_value_t = 5000)]
    pub request_header_timeout_ms: u64,

    /// PEM certificate chain: serve HTTPS instead of HTTP (with `--tls-key`).
    #[arg(long, env = "CRIER_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of `--tls-cert`.
    #[arg(long, env = "CRIER_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Serve `GET /metrics` on this address of its own (e.g. `127.0.0.1:9090`)
    /// instead of the main one.
    #[arg(long, env = "CRIER_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
}

impl ServerSettings {
    pub fn request_header_timeout(&self) -> Duration {
        Duration::from_millis(self.request_header_timeout_ms.max(1))
    }

    /// The TLS configuration when a certificate is set.
    pub fn tls(&self) -> Result<Option<rustls::ServerConfig>, TlsError> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => crate::tls::server_config(cert, key).map(Some),
            _ => Ok(None),
        }
    }

    /// Whether `/metrics` is on the main listener.
    pub fn metrics_on_main_listener(&self) -> bool {
        self.metrics_listen.is_none()
    }

    /// `https` with a certificate, else `http`: for the address a binary prints.
    pub fn scheme(&self) -> &'static str {
        if self.tls_cert.is_some() {
            "https"
        } else {
            "http"
        }
    }
}

/// A header value as text when it is visible ASCII or tabs: what actix's
/// `HeaderValue::to_str` accepts, for headers read as raw bytes.
pub fn header_text(value: &[u8]) -> Option<&str> {
    let visible = value
        .iter()
        .all(|&byte| byte == b'\t' || (b' '..=b'~').contains(&byte));
    visible.then(|| std::str::from_utf8(value).ok()).flatten()
}

impl Default for ServerSettings {
    fn default() -> Self {
        crate::defaults::from_flags()
    }
}

/// The longest request head (request line and headers) any route reads, as
/// nginx allows by default; a longer one is answered `431`.
pub const MAX_REQUEST_HEAD_BYTES: usize = 32 * 1024;

/// Middleware (`.wrap(from_fn(limit_request_head))`): refuses a request whose
/// head is longer than [`MAX_REQUEST_HEAD_BYTES`] with `431` and our JSON
/// error, whichever transport carried it. actix-http alone would take up to
/// 128 KiB of headers.
pub async fn limit_request_head(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<
    actix_web::dev::ServiceResponse<actix_web::body::EitherBody<impl actix_web::body::MessageBody>>,
    actix_web::Error,
> {
    let size = request_head_bytes(req.request());
    if size > MAX_REQUEST_HEAD_BYTES {
        let error = crate::error::ApiError::new(
            actix_web::http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request_head_too_large",
            format!(
                "the request's line and headers take {size} bytes; at most \
                 {MAX_REQUEST_HEAD_BYTES} are read"
            ),
        );
        let response = actix_web::ResponseError::error_response(&error);
        return Ok(req.into_response(response).map_into_right_body());
    }
    next.call(req)
        .await
        .map(actix_web::dev::ServiceResponse::map_into_left_body)
}

/// The length of `uri` as it is written, without writing it (this runs for
/// every request).
fn uri_length(uri: &actix_web::http::Uri) -> usize {
    let scheme = uri
        .scheme_str()
        .map_or(0, |scheme| scheme.len() + "://".len());
    let authority = uri
        .authority()
        .map_or(0, |authority| authority.as_str().len());
    let path_and_query = uri
        .path_and_query()
        .map_or(0, |target| target.as_str().len());
    scheme + authority + path_and_query
}

/// About what the request line and headers took on the wire.
fn request_head_bytes(req: &actix_web::HttpRequest) -> usize {
    let line = req.method().as_str().len() + uri_length(req.uri()) + 12;
    let headers: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    line + headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_settings_default_to_their_documented_flags() {
        let settings = ServerSettings::default();
        assert_eq!(settings.request_header_timeout_ms, 5000);
        assert!(settings.cors.cors_origins.is_empty());
        assert!(settings.tls_cert.is_none() && settings.metrics_listen.is_none());
    }

    #[test]
    fn uri_length_is_the_length_of_the_written_uri() {
        for text in [
            "/channels/c/messages?author=ann",
            "/",
            "*",
            "http://example.com:8080/events?channel=a",
        ] {
            let uri: actix_web::http::Uri = text.parse().expect("URI");
            assert_eq!(uri_length(&uri), uri.to_string().len(), "{text}");
        }
    }

    #[test]
    fn header_text_accepts_what_actix_calls_text() {
        assert_eq!(header_text(b"Bearer a.b\tc"), Some("Bearer a.b\tc"));
        assert_eq!(header_text(b"bell\x07"), None);
        assert_eq!(header_text(b"caf\xc3\xa9"), None);
    }
}
