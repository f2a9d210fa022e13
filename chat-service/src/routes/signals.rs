//! `/channels/{channel}/signals`: typing and read markers, passed on to the
//! channel's streams through the broker at once; never stored, never
//! numbered, so history and resumes never see them.

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use protocol::ChannelId;
use protocol::signal::{Signal, SignalType, check_id};
use serde::Deserialize;
use server::error::ApiError;
use server::openapi::{
    BadRequest, ChannelPath, InternalError, Name, NotFound, PayloadTooLarge, PostForbidden,
    SignalUnavailable, TooManyRequests, Unauthorized, UnsupportedMediaType,
};
use utoipa::ToSchema;

use crate::AppState;
use crate::body::{json_object, read_limited};
use crate::domain::Author;
use crate::error::ChatError;
use crate::metrics;
use crate::rate_limit::Sender;

/// Largest signal body, in bytes (or `--max-body-bytes`, if smaller): a
/// signal is a few short fields.
pub const MAX_SIGNAL_BODY_BYTES: usize = 4096;

/// A signal to send, as JSON.
#[derive(ToSchema)]
#[schema(as = NewSignal, example = json!({"type": "read", "id": 7}))]
pub struct NewSignalBody {
    #[schema(rename = "type")]
    pub kind: SignalType,
    /// Ignored when a token is present (its `name` is the author).
    #[schema(value_type = Name, required = false)]
    pub author: Option<String>,
    /// For `read`: the newest message id read. Not allowed for `typing`.
    #[schema(minimum = 1, required = false)]
    pub id: Option<u64>,
}

/// The body's fields, not yet checked: a wrong type or id is
/// `invalid_signal`, any other shape `invalid_json`.
#[derive(Deserialize)]
struct RawSignal {
    #[serde(rename = "type")]
    kind: Option<serde_json::Value>,
    author: Option<String>,
    id: Option<serde_json::Value>,
}

/// Send a typing signal or a read marker to the channel's streams.
///
/// Not stored and not numbered: streams get it as `event: signal` with no
/// `id:`, and a stream that resumes later never sees it. With a token, its
/// `name` is the author; without, the body's `author`. Rate limited per author.
#[utoipa::path(
    post,
    path = "/channels/{channel}/signals",
    operation_id = "postSignal",
    tag = "messages",
    params(ChannelPath),
    request_body(content((NewSignalBody = "application/json"))),
    responses(
        (status = 202, description = "Handed to the broker for the channel's streams.",
            body = Signal),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = PostForbidden),
        (status = 404, response = NotFound),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 429, response = TooManyRequests),
        (status = 503, response = SignalUnavailable),
        (status = 500, response = InternalError),
    ),
    security((), ("bearer" = [])),
)]
pub async fn post_signal(
    req: HttpRequest,
    channel: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ChatError> {
    let channel = ChannelId::parse(&channel)?;
    let publisher = state.access.publisher(&req, channel)?;
    let limit = state.limits.max_body_bytes.min(MAX_SIGNAL_BODY_BYTES);
    let body = read_limited(&req, payload, limit).await?;
    require_json(&req)?;
    let raw = parse_body(&body)?;
    let (kind, id) = (signal_type(raw.kind)?, signal_id(raw.id)?);
    check_id(kind, id).map_err(|e| ChatError::InvalidSignal(e.0))?;
    let user = publisher.user.clone();
    let author = Author::parse(publisher.author(raw.author).as_deref(), &state.limits)?;
    state.bans.check(channel, author.as_str())?;
    state
        .signal_rate
        .check(Sender::Name(author.as_str().to_string()))?;
    let signal = Signal::new(kind, channel, author.as_str().to_string(), id, user);
    let json = Bytes::from(serde_json::to_vec(&signal).unwrap_or_default());
    state
        .publisher
        .send_signal(channel, json.clone())
        .map_err(ChatError::SignalUnavailable)?;
    metrics::signal_accepted(type_label(kind));
    Ok(HttpResponse::Accepted()
        .content_type("application/json")
        .body(json))
}

/// Signals are JSON only.
fn require_json(req: &HttpRequest) -> Result<(), ChatError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("none");
    let mime = content_type.split(';').next().unwrap_or("").trim();
    if mime.eq_ignore_ascii_case("application/json") {
        return Ok(());
    }
    let shown: String = content_type.chars().take(100).collect();
    Err(ChatError::Api(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        format!("unsupported content type {shown:?}: a signal is application/json"),
    )))
}

fn parse_body(body: &[u8]) -> Result<RawSignal, ChatError> {
    let text = std::str::from_utf8(body).map_err(|_| ChatError::InvalidEncoding)?;
    json_object(
        text,
        r#"{"type": "typing" | "read", "id"?: number, "author"?: string}"#,
    )
}

fn signal_type(raw: Option<serde_json::Value>) -> Result<SignalType, ChatError> {
    match raw.as_ref().and_then(serde_json::Value::as_str) {
        Some("typing") => Ok(SignalType::Typing),
        Some("read") => Ok(SignalType::Read),
        Some(other) => Err(ChatError::InvalidSignal(format!(
            "type must be \"typing\" or \"read\", got {:?}",
            other.chars().take(40).collect::<String>()
        ))),
        None => Err(ChatError::InvalidSignal(
            "type is required: \"typing\" or \"read\"".into(),
        )),
    }
}

/// The read marker's id, when the body has one: a positive integer.
fn signal_id(raw: Option<serde_json::Value>) -> Result<Option<u64>, ChatError> {
    match raw {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(value) => value
            .as_u64()
            .filter(|id| *id >= 1)
            .map(Some)
            .ok_or_else(|| {
                ChatError::InvalidSignal("id must be a message id, a whole number from 1".into())
            }),
    }
}

fn type_label(kind: SignalType) -> &'static str {
    match kind {
        SignalType::Typing => "typing",
        SignalType::Read => "read",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_becomes_a_type_and_an_id_or_the_right_error() {
        let parse = |json: &str| -> Result<(SignalType, Option<u64>), String> {
            let raw = parse_body(json.as_bytes()).map_err(|e| e.to_api_error().code)?;
            let kind = signal_type(raw.kind).map_err(|e| e.to_api_error().code)?;
            let id = signal_id(raw.id).map_err(|e| e.to_api_error().code)?;
            check_id(kind, id).map_err(|_| "invalid_signal".to_string())?;
            Ok((kind, id))
        };
        assert_eq!(
            parse(r#"{"type":"typing"}"#),
            Ok((SignalType::Typing, None))
        );
        assert_eq!(
            parse(r#"{"type":"read","id":3}"#),
            Ok((SignalType::Read, Some(3)))
        );
        for (json, code) in [
            (r#"{"type":"wave"}"#, "invalid_signal"),
            (r#"{}"#, "invalid_signal"),
            (r#"{"type":"read"}"#, "invalid_signal"),
            (r#"{"type":"read","id":0}"#, "invalid_signal"),
            (r#"{"type":"read","id":-2}"#, "invalid_signal"),
            (r#"{"type":"read","id":"7"}"#, "invalid_signal"),
            (r#"{"type":"typing","id":7}"#, "invalid_signal"),
            (r#"["typing"]"#, "invalid_json"),
            (r#"{"type":"typing","author":3}"#, "invalid_json"),
            ("{\"type\":", "invalid_json"),
        ] {
            assert_eq!(parse(json), Err(code.to_string()), "{json}");
        }
    }
}
