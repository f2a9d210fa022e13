//! `/channels/{channel}/messages/{id}` PATCH and DELETE: an edit or a deletion,
//! stored as the channel's next entry (see [`crate::store::Revision`]).
//!
//! Who may: the message's author (the token's `name`; with tokens off, the
//! author the request names) and admins (a token with `admin: true`), unless
//! banned from the channel. A deleted message cannot be changed again; an edit
//! that races a deletion is stored but changes nothing (a deletion is final).

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use protocol::{ChannelId, Kind, Message};
use serde::Deserialize;
use server::openapi::{
    BadRequest, ChannelPath, Conflict, InternalError, Name, NotFound, NotWithNats, PayloadTooLarge,
    PostForbidden, PostUnavailable, Text as TextSchema, TooManyRequests, Unauthorized,
    UnsupportedMediaType,
};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::access::Publisher;
use crate::body::read_fields;
use crate::domain::{Author, NewMessage, Text};
use crate::error::ChatError;
use crate::routes::messages::{message_id, sender};
use crate::store::{Entry, Revision};

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EditQuery {
    /// Who edits, when tokens are off and the body does not say (a
    /// `text/plain` body): it must be the message's author. Ignored with a
    /// token.
    #[param(value_type = Name, required = false)]
    author: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeleteQuery {
    /// Who deletes, when tokens are off (it must be the message's author);
    /// ignored with a token.
    #[param(value_type = Name, required = true)]
    author: Option<String>,
}

/// A new text for a message, as JSON or form fields.
#[derive(ToSchema)]
#[schema(as = MessageEdit, example = json!({"author": "ann", "text": "hello, fixed"}))]
pub struct EditBody {
    /// With tokens off, who edits (the message's author). Ignored with a token.
    #[schema(value_type = Name)]
    pub author: Option<String>,
    #[schema(value_type = TextSchema)]
    pub text: String,
}

/// Edit a message: its new text becomes the channel's next entry.
///
/// Streams get `event: update` naming the message; history shows the new
/// text with `edited_at`. The publish hook, when set, is asked about the new
/// text as about a post.
#[utoipa::path(
    patch,
    path = "/channels/{channel}/messages/{id}",
    operation_id = "editMessage",
    tag = "messages",
    params(
        ChannelPath,
        ("id" = u64, Path, minimum = 1, description = "The message's id in its channel."),
        EditQuery,
    ),
    request_body(content(
        (EditBody = "application/json"),
        (EditBody = "application/x-www-form-urlencoded"),
        (inline(TextSchema) = "text/plain"),
    )),
    responses(
        (status = 200, description = "Stored: the edit entry (`kind: update`).", body = Message),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = PostForbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 501, response = NotWithNats),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 429, response = TooManyRequests),
        (status = 503, response = PostUnavailable),
        (status = 500, response = InternalError),
    ),
    security((), ("bearer" = [])),
)]
pub async fn edit_message(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    query: web::Query<EditQuery>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ChatError> {
    let (channel, id) = target_of(&path)?;
    state.history.require_local("editing a message")?;
    let mut publisher = state.access.reviser(&req, channel)?;
    state.rate.check(sender(&req, publisher.name.as_deref()))?;
    let limits = &state.limits;
    let query_author = query.into_inner().author;
    let fields = read_fields(&req, payload, query_author.clone(), limits).await?;
    let claims = publisher.claims.take();
    let (is_admin, user) = (publisher.names_author, publisher.user.clone());
    let author = actor(publisher, fields.author.or(query_author), limits)?;
    let mut edit = NewMessage {
        author,
        text: Text::parse(fields.text.as_deref(), limits)?,
        user,
    };
    allowed(&state, channel, id, edit.author.as_str(), is_admin).await?;
    if let Some(hook) = &state.publish_hook {
        edit = hook.check(channel, edit, claims.as_ref(), limits).await?;
    }
    store(&state, channel, edit, Kind::Update, id).await
}

/// Delete a message: the deletion becomes the channel's next entry.
///
/// Streams get `event: delete` naming the message; history shows it with
/// `deleted: true` and no text. The text stays in the log until erased
/// (`POST /erase`) or trimmed by retention.
#[utoipa::path(
    delete,
    path = "/channels/{channel}/messages/{id}",
    operation_id = "deleteMessage",
    tag = "messages",
    params(
        ChannelPath,
        ("id" = u64, Path, minimum = 1, description = "The message's id in its channel."),
        DeleteQuery,
    ),
    responses(
        (status = 200, description = "Stored: the deletion entry (`kind: delete`).", body = Message),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = PostForbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 501, response = NotWithNats),
        (status = 429, response = TooManyRequests),
        (status = 503, response = PostUnavailable),
        (status = 500, response = InternalError),
    ),
    security((), ("bearer" = [])),
)]
pub async fn delete_message(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    query: web::Query<DeleteQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ChatError> {
    let (channel, id) = target_of(&path)?;
    state.history.require_local("deleting a message")?;
    let publisher = state.access.reviser(&req, channel)?;
    state.rate.check(sender(&req, publisher.name.as_deref()))?;
    let (is_admin, user) = (publisher.names_author, publisher.user.clone());
    let author = actor(publisher, query.into_inner().author, &state.limits)?;
    allowed(&state, channel, id, author.as_str(), is_admin).await?;
    let deletion = NewMessage {
        author,
        text: Text::of_deletion(),
        user,
    };
    store(&state, channel, deletion, Kind::Delete, id).await
}

fn target_of(path: &web::Path<(String, String)>) -> Result<(ChannelId, u64), ChatError> {
    let (channel, id) = path.as_ref();
    Ok((ChannelId::parse(channel)?, message_id(id)?))
}

/// Who makes the change: the token's name, or the author the request names
/// (an admin's token may name anyone, and acts as `admin` when it names no
/// one and has no name).
fn actor(
    publisher: Publisher,
    named: Option<String>,
    limits: &crate::config::Limits,
) -> Result<Author, ChatError> {
    let is_admin = publisher.names_author;
    let name = publisher.author(named);
    let name = if is_admin {
        name.or_else(|| Some("admin".to_string()))
    } else {
        name
    };
    Author::parse(name.as_deref(), limits)
}

/// Whether `actor` may change message `id`: it must be a message of the
/// channel, not deleted, and the actor its author or an admin, not banned.
async fn allowed(
    state: &AppState,
    channel: ChannelId,
    id: u64,
    actor: &str,
    is_admin: bool,
) -> Result<(), ChatError> {
    state.bans.check(channel, actor)?;
    let target = state
        .read_store(move |store| store.synced().current_get(channel, id))
        .await?
        .ok_or(ChatError::MessageNotFound { id })?;
    if !target.kind.is_message() {
        return Err(ChatError::NotAMessage { id });
    }
    if target.deleted {
        return Err(ChatError::MessageDeleted { id });
    }
    if !is_admin && target.author != actor {
        return Err(ChatError::Api(server::auth::forbidden(
            "not_author",
            format!("only the author of message {id} or an admin may change it"),
        )));
    }
    Ok(())
}

/// Stores the change as the channel's next entry; answers it.
async fn store(
    state: &AppState,
    channel: ChannelId,
    change: NewMessage,
    kind: Kind,
    target: u64,
) -> Result<HttpResponse, ChatError> {
    let entry = Entry::revision(channel, change, Revision { kind, target });
    let appended = state.store.append_one(entry, state.ack).await?;
    let location = format!("/channels/{channel}/messages/{}", appended.message.id);
    Ok(HttpResponse::Ok()
        .insert_header((header::LOCATION, location))
        .content_type("application/json")
        .body(appended.json))
}
