//! Every error a service answers with, as [`protocol::error::ErrorBody`]: the
//! status and code of [`ApiError`], and the actix glue that makes actix's own
//! errors (bad JSON, bad query, unknown route, wrong method) use it too.

use std::borrow::Cow;

use actix_web::body::EitherBody;
use actix_web::dev::ServiceResponse;
use actix_web::http::{StatusCode, header};
use actix_web::middleware::{ErrorHandlerResponse, ErrorHandlers};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use protocol::error::{ErrorBody, ErrorDetail};

/// An error as the client sees it: a status, a stable machine-readable code and a
/// sentence for humans. Services map their own error enums onto this.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: Cow<'static, str>,
    pub message: Cow<'static, str>,
    /// Seconds a client should wait before trying again (`Retry-After`).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        code: impl Into<Cow<'static, str>>,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        ApiError {
            status,
            code: code.into(),
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub fn bad_request(
        code: impl Into<Cow<'static, str>>,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// The generic error for a status when nothing more specific is known (used for
    /// errors actix produces before a handler runs).
    pub fn from_status(status: StatusCode) -> Self {
        let (code, message) = match status {
            StatusCode::NOT_FOUND => ("not_found", "no such route"),
            StatusCode::METHOD_NOT_ALLOWED => {
                ("method_not_allowed", "this method is not allowed here")
            }
            StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "request body is too large"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => (
                "unsupported_media_type",
                "content type is not supported here",
            ),
            StatusCode::REQUEST_TIMEOUT => ("request_timeout", "the request took too long"),
            StatusCode::SERVICE_UNAVAILABLE => {
                ("service_unavailable", "a dependency is unavailable")
            }
            s if s.is_server_error() => ("internal_error", "internal server error"),
            _ => ("bad_request", "the request is not valid"),
        };
        ApiError::new(status, code, message)
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message.to_string(),
            },
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        response.insert_header(header::CacheControl(vec![header::CacheDirective::NoStore]));
        if self.status == StatusCode::UNAUTHORIZED {
            response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        if let Some(seconds) = self.retry_after {
            response.insert_header((header::RETRY_AFTER, seconds.to_string()));
        }
        response.json(self.body())
    }
}

/// Default service: an unknown path is a JSON `404`.
pub async fn not_found() -> HttpResponse {
    ApiError::from_status(StatusCode::NOT_FOUND).error_response()
}

/// Per-resource default service: a known path with the wrong method is a JSON `405`
/// whose `Allow` header lists the methods it does take (RFC 9110).
pub fn method_not_allowed(allowed: &'static str) -> actix_web::Route {
    web::to(move || async move {
        let mut response = ApiError::from_status(StatusCode::METHOD_NOT_ALLOWED).error_response();
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static(allowed));
        response
    })
}

/// Query-string errors (`?after=abc`) become `400 invalid_query` with serde's reason.
pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|err, _req: &HttpRequest| {
        ApiError::bad_request("invalid_query", format!("invalid query string: {err}")).into()
    })
}

/// Path errors become `400 invalid_path` (channel ids are checked by
/// [`protocol::ChannelId::parse`], which gives the more precise `invalid_channel`).
pub fn path_config() -> web::PathConfig {
    web::PathConfig::default().error_handler(|err, _req: &HttpRequest| {
        ApiError::bad_request("invalid_path", format!("invalid path: {err}")).into()
    })
}

/// One log line per refused request, with the path (which names the channel)
/// and the client's address; a client's mistakes at `info`, ours at `warn`
/// (the cause is logged where it happened).
pub fn log_client_error(
    method: &str,
    path: &str,
    peer: Option<std::net::IpAddr>,
    status: StatusCode,
) {
    let peer = peer.map_or_else(|| "an unknown address".to_string(), |ip| ip.to_string());
    if status.is_server_error() {
        log::warn!("{method} {path} from {peer}: {status}");
    } else {
        log::info!("{method} {path} from {peer}: {status}");
    }
}

/// A safety net over the whole app: any error response that is not already our JSON
/// (actix's plain-text errors, a panic turned 500) gets the JSON body for its status.
pub fn json_error_bodies<B: 'static>() -> ErrorHandlers<B> {
    ErrorHandlers::new().default_handler(ensure_json_body)
}

fn ensure_json_body<B>(res: ServiceResponse<B>) -> actix_web::Result<ErrorHandlerResponse<B>> {
    log_client_error(
        res.request().method().as_str(),
        res.request().path(),
        res.request().peer_addr().map(|address| address.ip()),
        res.status(),
    );
    let is_json = res
        .response()
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/json"));
    if is_json {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let status = res.status();
    let (req, _) = res.into_parts();
    let response = ApiError::from_status(status).error_response();
    Ok(ErrorHandlerResponse::Response(
        ServiceResponse::new(req, response).map_body(|_, body| EitherBody::right(body)),
    ))
}
