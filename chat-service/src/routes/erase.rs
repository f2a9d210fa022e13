//! `POST /erase` (admin): an author's texts removed from storage itself
//! (see [`crate::store::erasure`]).

use actix_web::{HttpRequest, HttpResponse, web};
use protocol::{ChannelId, Message};
use serde::{Deserialize, Serialize};
use server::openapi::{
    BadRequest, Forbidden, InternalError, Name, NotWithNats, Overloaded, PayloadTooLarge,
    Unauthorized,
};
use utoipa::ToSchema;

use crate::AppState;
use crate::body::read_limited;
use crate::domain::Author;
use crate::error::ChatError;
use crate::store::erasure::Erasure;

/// Largest erase request body.
const MAX_ERASE_BODY: usize = 4096;

/// Whose texts to erase, and where and when.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"author": "ann", "since": "2026-11-01T00:00:00Z"}))]
pub struct EraseRequest {
    /// The author whose entries are erased.
    #[schema(value_type = Name)]
    author: String,
    /// Only in this channel; every channel without it.
    #[schema(format = Uuid)]
    channel: Option<String>,
    /// Only entries written at or after this time (RFC 3339).
    #[schema(format = DateTime)]
    since: Option<String>,
    /// Only entries written at or before this time (RFC 3339).
    #[schema(format = DateTime)]
    until: Option<String>,
}

/// What an erasure did.
#[derive(Serialize, ToSchema)]
pub struct Erased {
    /// Entries whose text was removed (messages, and edits of them).
    erased: u64,
    /// When the old versions leave the data directory's files: the store
    /// rewrites itself into fresh files on its next start.
    compaction: &'static str,
}

/// Erase an author's texts (admin).
///
/// Every matching message loses its text and token profile and is shown as
/// deleted; edits of it lose theirs; idempotency keys that would return one
/// are dropped. Ids, authors and times stay. Old versions leave the data
/// directory when the store is compacted, on the chat-service's next start.
/// Not reached: copies already delivered to browsers, MQTT subscribers and
/// webhooks, and broadcast-sse's recent buffer until it rolls over.
#[utoipa::path(
    post,
    path = "/erase",
    operation_id = "erase",
    tag = "admin",
    request_body(content = EraseRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Erased.", body = Erased),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 501, response = NotWithNats),
        (status = 413, response = PayloadTooLarge),
        (status = 503, response = Overloaded),
        (status = 500, response = InternalError),
    ),
    security((), ("bearer" = [])),
)]
pub async fn erase(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ChatError> {
    state.access.admin(&req)?;
    state.history.require_local("erasure")?;
    let body = read_limited(&req, payload, MAX_ERASE_BODY).await?;
    let request: EraseRequest = serde_json::from_slice(&body).map_err(|e| {
        ChatError::InvalidJson(format!(
            "body must be a JSON object {{\"author\", \"channel\"?, \"since\"?, \"until\"?}}: {e}"
        ))
    })?;
    let erasure = checked(request, &state)?;
    let entries = state
        .read_store(move |store| store.erasable(&erasure))
        .await?;
    let erased = state.store.erase(entries).await?;
    log::info!("erased {erased} entries");
    Ok(HttpResponse::Ok().json(Erased {
        erased,
        compaction: "on the next start",
    }))
}

fn checked(request: EraseRequest, state: &AppState) -> Result<Erasure, ChatError> {
    let author = Author::parse(Some(&request.author), &state.limits)?;
    let channel = request
        .channel
        .as_deref()
        .map(ChannelId::parse)
        .transpose()?;
    let since = request.since.as_deref().map(time).transpose()?;
    let until = request.until.as_deref().map(time).transpose()?;
    if let (Some(since), Some(until)) = (&since, &until)
        && since > until
    {
        return Err(ChatError::InvalidQuery(format!(
            "since ({since}) is after until ({until})"
        )));
    }
    Ok(Erasure {
        author: author.as_str().to_string(),
        channel,
        since,
        until,
    })
}

fn time(raw: &str) -> Result<String, ChatError> {
    Message::parse_timestamp(raw).ok_or_else(|| {
        ChatError::InvalidQuery(format!(
            "{:?} is not an RFC 3339 time such as 2026-11-21T22:40:00Z",
            raw.chars().take(40).collect::<String>()
        ))
    })
}
