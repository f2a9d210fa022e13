//! The admin API (ChatUp's): bans and bulk server posts. Needs a token with
//! `admin: true` when authentication is on. Every item of a request is checked
//! before any is applied, so a bad item changes nothing.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use protocol::{ChannelId, Message};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use server::error::ApiError;
use server::openapi::{
    BadRequest, ChannelPath, Forbidden, InternalError, Name, NotFound, NotWithNats, Overloaded,
    PayloadTooLarge, Text, Unauthorized,
};
use utoipa::ToSchema;

use crate::AppState;
use crate::bans::{Ban, MAX_BAN_SECS};
use crate::body::read_limited;
use crate::domain::{Author, NewMessage};
use crate::error::ChatError;
use crate::metrics::{self, Source};
use crate::routes::messages::HistoryPage;
use crate::store::Ack;
use crate::store::Entry;

/// Largest admin request body, and most items in one request.
const MAX_ADMIN_BODY: usize = 1024 * 1024;
const MAX_ITEMS: usize = 1000;
/// Author of a bulk message whose item names none.
const DEFAULT_SERVER_AUTHOR: &str = "server";

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = BanRequest)]
pub struct BanItem {
    #[schema(value_type = Name)]
    name: String,
    #[schema(format = Uuid)]
    channel: String,
    /// Seconds from now.
    #[schema(minimum = 1, maximum = 315_360_000)]
    expire: u64,
}

/// 1 to 1000 bans to add.
#[derive(ToSchema)]
#[schema(min_items = 1, max_items = 1000)]
pub struct BanItems(pub Vec<BanItem>);

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishItem {
    #[schema(format = Uuid)]
    channel: String,
    #[schema(value_type = Text)]
    text: String,
    /// The author; else the `name` of `user`, else the admin token's `name`,
    /// else `server`.
    #[schema(value_type = Option<Name>)]
    author: Option<String>,
    /// Public information about the sender, broadcast with the message.
    #[schema(value_type = Option<Object>)]
    user: Option<Value>,
}

/// 1 to 1000 messages to store and broadcast.
#[derive(ToSchema)]
#[schema(min_items = 1, max_items = 1000)]
pub struct PublishItems(pub Vec<PublishItem>);

/// `{"bans":[…]}`: the bans in force.
#[derive(Serialize, ToSchema)]
pub struct BanList {
    #[schema(value_type = Vec<BanInForce>)]
    bans: Vec<Ban>,
}

// The shape `crate::bans::Ban` serializes to.
/// A ban in force.
#[derive(ToSchema)]
#[schema(as = Ban)]
pub struct BanInForce {
    pub name: String,
    pub channel: ChannelId,
    /// Seconds since the Unix epoch.
    pub expires_at: u64,
}

/// Admin: ban names from channels for a while.
///
/// `[{"name":"x","channel":"<uuid>","expire":30}]` → `201 {"bans":[…]}`.
#[utoipa::path(
    post,
    path = "/bans",
    operation_id = "addBans",
    tag = "admin",
    request_body(content = inline(BanItems), content_type = "application/json"),
    responses(
        (status = 201, description = "The bans now in force.", body = BanList,
            links(("LiftTheFirstBan" = (
                operation_id = "liftBan",
                parameters(
                    ("channel" = "$response.body#/bans/0/channel"),
                    ("name" = "$response.body#/bans/0/name")
                )
            )))),
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
pub async fn add_bans(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ChatError> {
    state.access.admin(&req)?;
    state.history.require_local("banning")?;
    let items: Vec<BanItem> = read_items(&req, payload).await?;
    let checked = items
        .iter()
        .enumerate()
        .map(|(index, item)| check_ban(index, item, &state))
        .collect::<Result<Vec<_>, _>>()?;
    let mut bans = Vec::with_capacity(checked.len());
    for (channel, name, seconds) in checked {
        bans.push(state.bans.ban(channel, &name, seconds).await?);
    }
    Ok(HttpResponse::Created().json(BanList { bans }))
}

fn check_ban(
    index: usize,
    item: &BanItem,
    state: &AppState,
) -> Result<(ChannelId, String, u64), ChatError> {
    let channel = ChannelId::parse(&item.channel).map_err(|e| item_error(index, e))?;
    let name = Author::parse(Some(&item.name), &state.limits).map_err(|e| item_error(index, e))?;
    if !(1..=MAX_BAN_SECS).contains(&item.expire) {
        let why = format!("expire must be 1 to {MAX_BAN_SECS} seconds");
        return Err(item_error(index, why));
    }
    Ok((channel, name.as_str().to_string(), item.expire))
}

/// Admin: the bans in force.
///
/// `GET /bans` → `{"bans":[{"name","channel","expires_at"}]}`.
#[utoipa::path(
    get,
    path = "/bans",
    operation_id = "listBans",
    tag = "admin",
    responses(
        (status = 200, description = "The bans in force.", body = BanList),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 501, response = NotWithNats),
        (status = 500, response = InternalError),
    ),
    security((), ("bearer" = [])),
)]
pub async fn list_bans(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ChatError> {
    state.access.admin(&req)?;
    state.history.require_local("banning")?;
    let bans = state.bans.list().await?;
    Ok(HttpResponse::Ok().json(BanList { bans }))
}

/// Admin: lift a ban.
///
/// `DELETE /bans/{channel}/{name}` → `204`, or `404 ban_not_found`.
#[utoipa::path(
    delete,
    path = "/bans/{channel}/{name}",
    operation_id = "liftBan",
    tag = "admin",
    params(ChannelPath, ("name" = String, Path, description = "The banned name.")),
    responses(
        (status = 204, description = "Lifted."),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 501, response = NotWithNats),
        (status = 404, response = NotFound),
        (status = 503, response = Overloaded),
        (status = 500, response = InternalError),
    ),
    security((), ("bearer" = [])),
)]
pub async fn lift_ban(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ChatError> {
    state.access.admin(&req)?;
    state.history.require_local("banning")?;
    let (channel, name) = path.into_inner();
    let channel = ChannelId::parse(&channel)?;
    if !state.bans.lift(channel, &name).await? {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "ban_not_found",
            format!("{name} is not banned on {channel}"),
        )
        .into());
    }
    Ok(HttpResponse::NoContent().finish())
}

/// Admin: store and broadcast server messages to many channels.
///
/// `POST /publish` `[{"channel":"<uuid>","text":"…","user":{"name":"Server"}}]` →
/// `201 {"messages":[…]}`: each stored and broadcast like a POST.
#[utoipa::path(
    post,
    path = "/publish",
    operation_id = "publish",
    tag = "admin",
    request_body(content = inline(PublishItems), content_type = "application/json"),
    responses(
        (status = 201, description = "The stored messages.", body = HistoryPage),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 413, response = PayloadTooLarge),
        (status = 503, response = Overloaded),
        (status = 500, response = InternalError),
    ),
    security((), ("bearer" = [])),
)]
pub async fn publish(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ChatError> {
    let admin = state.access.admin(&req)?;
    let admin_name = admin.and_then(|claims| claims.name);
    let items: Vec<PublishItem> = read_items(&req, payload).await?;
    let checked = items
        .iter()
        .enumerate()
        .map(|(index, item)| check_publish(index, item, admin_name.as_deref(), &state))
        .collect::<Result<Vec<_>, _>>()?;
    let entries = checked
        .into_iter()
        .map(|(channel, message)| Entry::new(channel, message))
        .collect();
    let appended = state.history.append(entries, Ack::Synced).await?;
    metrics::accepted(Source::Http, appended.len());
    let messages: Vec<Message> = appended.into_iter().map(|a| a.message).collect();
    Ok(HttpResponse::Created().json(HistoryPage { messages }))
}

fn check_publish(
    index: usize,
    item: &PublishItem,
    admin_name: Option<&str>,
    state: &AppState,
) -> Result<(ChannelId, NewMessage), ChatError> {
    let channel = ChannelId::parse(&item.channel).map_err(|e| item_error(index, e))?;
    if item.user.as_ref().is_some_and(|user| !user.is_object()) {
        return Err(item_error(index, "user must be an object"));
    }
    let user_name = item.user.as_ref().and_then(|user| user["name"].as_str());
    let author = item
        .author
        .as_deref()
        .or(user_name)
        .or(admin_name)
        .unwrap_or(DEFAULT_SERVER_AUTHOR);
    let new = NewMessage::parse(Some(author), Some(&item.text), &state.limits)
        .map_err(|e| item_error(index, e))?
        .with_user(item.user.clone());
    Ok((channel, new))
}

/// A JSON array of at most [`MAX_ITEMS`] items.
async fn read_items<T: serde::de::DeserializeOwned>(
    req: &HttpRequest,
    payload: web::Payload,
) -> Result<Vec<T>, ChatError> {
    let body = read_limited(req, payload, MAX_ADMIN_BODY).await?;
    let items: Vec<T> = serde_json::from_slice(&body)
        .map_err(|e| ChatError::InvalidJson(format!("body must be a JSON array of items: {e}")))?;
    if items.is_empty() || items.len() > MAX_ITEMS {
        return Err(ChatError::InvalidJson(format!(
            "body must hold 1 to {MAX_ITEMS} items, got {}",
            items.len()
        )));
    }
    Ok(items)
}

fn item_error(index: usize, why: impl std::fmt::Display) -> ChatError {
    ChatError::InvalidItem(format!("item {index}: {why}"))
}
