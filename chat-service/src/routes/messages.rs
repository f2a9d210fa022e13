//! `/channels/{channel}/messages`: post a message, read history.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use protocol::ChannelId;
use protocol::Message;
use serde::{Deserialize, Serialize};
use server::openapi::{
    AccessToken, BadRequest, ChannelPath, Forbidden, InternalError, Name, NotFound,
    PayloadTooLarge, PostForbidden, PostUnavailable, Text, TooManyRequests, Unauthorized,
    Unavailable, UnsupportedMediaType,
};
use utoipa::{IntoParams, ToSchema};

use std::time::Instant;

use crate::AppState;
use crate::body::read_fields;
use crate::domain::NewMessage;
use crate::error::ChatError;
use crate::history::PageRequest;
use crate::metrics::{self, Source};
use crate::rate_limit::Sender;
use crate::store::Entry;

/// Default and largest page of a history read.
pub const DEFAULT_PAGE: usize = 50;
pub const MAX_PAGE: usize = 1000;
/// The header that marks an idempotency key as new ([`Entry::key_is_new`]).
pub const KEY_IS_NEW: &str = "Idempotency-Key-New";
/// Longest accepted `Idempotency-Key`, in bytes.
const MAX_IDEMPOTENCY_KEY: usize = 255;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PostQuery {
    /// The author, for `text/plain` bodies, where it is required unless a
    /// token names the author.
    #[param(value_type = Name, required = false)]
    author: Option<String>,
}

/// `{"messages": [...]}`, ascending by id.
#[derive(Serialize, ToSchema)]
pub(crate) struct HistoryPage {
    pub(crate) messages: Vec<Message>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// A page after this id; without it, the latest `limit` messages.
    #[param(minimum = 0, maximum = 18446744073709551615_u64)]
    after: Option<u64>,
    /// Messages in the page.
    #[param(minimum = 1, maximum = 1000, default = 50)]
    limit: Option<usize>,
    /// `1`: the log as written, edits and deletions included as entries of
    /// their own (what streams replay); else messages as they now are.
    #[param(value_type = Option<u8>, minimum = 0, maximum = 1)]
    raw: Option<RawFlag>,
}

/// `?raw=1`: the log as written.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RawQuery {
    /// `1`: the entry as written; else a message as it now is.
    #[param(value_type = Option<u8>, minimum = 0, maximum = 1)]
    raw: Option<RawFlag>,
}

/// `0` or `1`, as `?raw=` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawFlag(bool);

impl<'de> Deserialize<'de> for RawFlag {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match String::deserialize(deserializer)?.as_str() {
            "1" => Ok(RawFlag(true)),
            "0" => Ok(RawFlag(false)),
            other => Err(serde::de::Error::custom(format!(
                "raw must be 0 or 1, got {:?}",
                other.chars().take(20).collect::<String>()
            ))),
        }
    }
}

fn is_raw(flag: Option<RawFlag>) -> bool {
    flag.is_some_and(|RawFlag(raw)| raw)
}

/// A message to post, as JSON or form fields.
#[derive(ToSchema)]
#[schema(as = NewMessage, example = json!({"author": "ann", "text": "hello"}))]
pub struct NewMessageBody {
    /// Ignored when a token is present (its `name` is the author).
    #[schema(value_type = Name)]
    pub author: String,
    #[schema(value_type = Text)]
    pub text: String,
}

/// The headers of a POST that make a retry safe.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
pub struct PostHeaders {
    /// A retry with the same key returns the original message.
    #[param(
        rename = "Idempotency-Key",
        required = false,
        min_length = 1,
        max_length = 255,
        pattern = r"^[\x21-\x7e]+$"
    )]
    pub idempotency_key: String,
    /// `true`: the Idempotency-Key names a message seen for the first time, so
    /// it is recorded for this message (replacing an earlier one) and not
    /// looked up. A relay of MQTT posts sends it for a key derived from a first
    /// delivery. Needs an Idempotency-Key.
    #[param(rename = "Idempotency-Key-New", required = false, inline)]
    pub key_is_new: Flag,
}

/// `true` or `false`, as a header says it.
#[derive(ToSchema)]
pub enum Flag {
    #[serde(rename = "true")]
    True,
    #[serde(rename = "false")]
    False,
}

/// Post a message (stored on disk before the answer).
///
/// The body is JSON or a form with `author` and `text`, or `text/plain` (the
/// text, with `?author=`). With a token, its `name` is the author.
#[utoipa::path(
    post,
    path = "/channels/{channel}/messages",
    operation_id = "postMessage",
    tag = "messages",
    params(ChannelPath, PostQuery, PostHeaders),
    request_body(content(
        (NewMessageBody = "application/json"),
        (NewMessageBody = "application/x-www-form-urlencoded"),
        (inline(Text) = "text/plain"),
    )),
    responses(
        (status = 201, description = "Stored (and queued for the broker).", body = Message,
            headers(
                ("Location" = String, description = "The message's URL."),
                ("Idempotent-Replayed" = inline(Flag), description = "`true` when an \
                    Idempotency-Key named a message stored before: this is that message.")
            )),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = PostForbidden),
        (status = 404, response = NotFound),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 429, response = TooManyRequests),
        (status = 503, response = PostUnavailable),
        (status = 500, response = InternalError),
    ),
    security((), ("bearer" = [])),
)]
pub async fn post_message(
    req: HttpRequest,
    channel: web::Path<String>,
    query: web::Query<PostQuery>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ChatError> {
    let started = Instant::now();
    let outcome = store_post(req, &channel, query, payload, &state).await;
    metrics::post_took(started.elapsed());
    match &outcome {
        Ok(posted) => metrics::accepted(Source::Http, usize::from(posted.created)),
        Err(e) => metrics::rejected(Source::Http, &e.to_api_error().code),
    }
    outcome.map(|posted| posted.response)
}

/// The answer to a POST, and whether it stored a new message.
struct Posted {
    response: HttpResponse,
    created: bool,
}

async fn store_post(
    req: HttpRequest,
    channel: &str,
    query: web::Query<PostQuery>,
    payload: web::Payload,
    state: &AppState,
) -> Result<Posted, ChatError> {
    let channel = ChannelId::parse(channel)?;
    let mut publisher = state.access.publisher(&req, channel)?;
    state.rate.check(sender(&req, publisher.name.as_deref()))?;
    let limits = &state.limits;
    let fields = read_fields(&req, payload, query.into_inner().author, limits).await?;
    let user = publisher.user.clone();
    let claims = publisher.claims.take();
    let author = publisher.author(fields.author);
    let new = NewMessage::parse(author.as_deref(), fields.text.as_deref(), limits)?.with_user(user);
    state.bans.check(channel, new.author.as_str())?;
    let key = idempotency_key(&req)?.map(str::to_string);
    let mut entry = Entry::new(channel, new).with_key(key);
    entry.key_is_new = key_is_new(&req, &entry)?;
    // Last, once the post is known to be valid: the app is asked only about
    // posts that would be stored. A retry with the same key asks again.
    if let Some(hook) = &state.publish_hook {
        entry.message = hook
            .check(channel, entry.message, claims.as_ref(), limits)
            .await?;
    }
    let appended = state.history.append_one(entry, state.ack).await?;
    let location = format!("/channels/{channel}/messages/{}", appended.message.id);
    let response = HttpResponse::Created()
        .insert_header((header::LOCATION, location))
        .insert_header(("Idempotent-Replayed", replayed_flag(appended.created)))
        .content_type("application/json")
        .body(appended.json);
    Ok(Posted {
        response,
        created: appended.created,
    })
}

/// History, ascending by id: the latest `limit`, or a page after an id.
///
/// By default, messages as they now are: edited ones with their new text and
/// `edited_at`, deleted ones with `deleted: true` and no text, and the edit
/// and deletion entries left out (so ids may skip). With `raw=1`, the log as
/// written: every entry, each edit (`kind: update`) and deletion
/// (`kind: delete`) naming its `target`.
#[utoipa::path(
    get,
    path = "/channels/{channel}/messages",
    operation_id = "listMessages",
    tag = "messages",
    params(ChannelPath, HistoryQuery, AccessToken),
    responses(
        (status = 200, description = "A page of history.", body = HistoryPage),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
        (status = 500, response = InternalError),
    ),
    security((), ("bearer" = []), ("cookie" = [])),
)]
pub async fn list_messages(
    req: HttpRequest,
    channel: web::Path<String>,
    query: web::Query<HistoryQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ChatError> {
    let channel = ChannelId::parse(&channel)?;
    state.access.reader(&req, channel)?;
    let limit = page_limit(query.limit)?;
    let page = PageRequest {
        after: query.after,
        limit,
        raw: is_raw(query.raw),
    };
    let messages = state.history.page(channel, page).await?;
    Ok(HttpResponse::Ok().json(HistoryPage { messages }))
}

/// One message by id, as it now is (`raw=1`: as written). The id of an edit
/// or deletion entry gives that entry.
#[utoipa::path(
    get,
    path = "/channels/{channel}/messages/{id}",
    operation_id = "getMessage",
    tag = "messages",
    params(
        ChannelPath,
        ("id" = u64, Path, minimum = 1, description = "The message's id in its channel."),
        RawQuery,
        AccessToken,
    ),
    responses(
        (status = 200, description = "The message.", body = Message),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
        (status = 500, response = InternalError),
    ),
    security((), ("bearer" = []), ("cookie" = [])),
)]
pub async fn get_message(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    query: web::Query<RawQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ChatError> {
    let (channel, id) = path.into_inner();
    let channel = ChannelId::parse(&channel)?;
    state.access.reader(&req, channel)?;
    let id = message_id(&id)?;
    let message = state
        .history
        .message(channel, id, is_raw(query.raw))
        .await?
        .ok_or(ChatError::MessageNotFound { id })?;
    Ok(HttpResponse::Ok().json(message))
}

/// A message id in a path: a positive integer.
pub(crate) fn message_id(id: &str) -> Result<u64, ChatError> {
    id.parse::<u64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ChatError::InvalidMessageId(id.chars().take(40).collect()))
}

pub(crate) fn sender(req: &HttpRequest, token_name: Option<&str>) -> Sender {
    match (token_name, req.peer_addr()) {
        (Some(name), _) => Sender::Name(name.to_string()),
        (None, Some(address)) => Sender::Address(address.ip()),
        (None, None) => Sender::Unknown,
    }
}

fn page_limit(requested: Option<usize>) -> Result<usize, ChatError> {
    match requested {
        None => Ok(DEFAULT_PAGE),
        Some(limit) if (1..=MAX_PAGE).contains(&limit) => Ok(limit),
        Some(limit) => Err(ChatError::InvalidQuery(format!(
            "limit must be between 1 and {MAX_PAGE}, got {limit}"
        ))),
    }
}

fn idempotency_key(req: &HttpRequest) -> Result<Option<&str>, ChatError> {
    let Some(value) = req.headers().get("Idempotency-Key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .map_err(|_| invalid_idempotency_key("Idempotency-Key"))?;
    check_idempotency_key(key, "Idempotency-Key").map(Some)
}

/// `Idempotency-Key-New: true` marks the key as new: it is recorded for this
/// message and not looked up (see [`Entry::key_is_new`]). A relay of MQTT posts
/// sends it with a key derived from a first delivery.
fn key_is_new(req: &HttpRequest, entry: &Entry) -> Result<bool, ChatError> {
    let Some(value) = req.headers().get(KEY_IS_NEW) else {
        return Ok(false);
    };
    let is_new = match value.to_str() {
        Ok("true") => true,
        Ok("false") => false,
        _ => {
            return Err(ChatError::InvalidIdempotencyKey(format!(
                "{KEY_IS_NEW} must be true or false"
            )));
        }
    };
    if is_new && entry.idempotency_key.is_none() {
        return Err(ChatError::InvalidIdempotencyKey(format!(
            "{KEY_IS_NEW} needs an Idempotency-Key"
        )));
    }
    Ok(is_new)
}

/// An idempotency key is 1 to 255 visible ASCII characters; `name` is what the
/// client called it (a header, a field).
pub fn check_idempotency_key<'a>(key: &'a str, name: &str) -> Result<&'a str, ChatError> {
    let visible = key.bytes().all(|byte| byte.is_ascii_graphic());
    if !visible || key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY {
        return Err(invalid_idempotency_key(name));
    }
    Ok(key)
}

fn invalid_idempotency_key(name: &str) -> ChatError {
    ChatError::InvalidIdempotencyKey(format!(
        "{name} must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"
    ))
}

fn replayed_flag(created: bool) -> &'static str {
    if created { "false" } else { "true" }
}
