//! The admin API (ChatUp's): bans and bulk server posts. Needs a token with
//! `admin: true` when authentication is on. Every item of a request is checked
//! before any is applied, so a bad item changes nothing.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use protocol::{ChannelId, Message};
use serde::Deserialize;
use serde_json::{Value, json};
use server::error::ApiError;

use crate::AppState;
use crate::bans::MAX_BAN_SECS;
use crate::body::read_limited;
use crate::domain::{Author, NewMessage};
use crate::error::ChatError;
use crate::metrics::{self, Source};
use crate::store::Entry;

/// Largest admin request body, and most items in one request.
const MAX_ADMIN_BODY: usize = 1024 * 1024;
const MAX_ITEMS: usize = 1000;
/// Author of a bulk message whose item names none.
const DEFAULT_SERVER_AUTHOR: &str = "server";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BanItem {
    name: String,
    channel: String,
    /// Seconds from now.
    expire: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishItem {
    channel: String,
    text: String,
    author: Option<String>,
    user: Option<Value>,
}

/// `POST /bans` `[{"name":"x","channel":"<uuid>","expire":30}]` → `201 {"bans":[…]}`.
pub async fn add_bans(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ChatError> {
    state.access.admin(&req)?;
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
    Ok(HttpResponse::Created().json(json!({ "bans": bans })))
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

/// `GET /bans` → `{"bans":[{"name","channel","expires_at"}]}` (bans in force).
pub async fn list_bans(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ChatError> {
    state.access.admin(&req)?;
    Ok(HttpResponse::Ok().json(json!({ "bans": state.bans.list().await? })))
}

/// `DELETE /bans/{channel}/{name}` → `204`, or `404 ban_not_found`.
pub async fn lift_ban(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ChatError> {
    state.access.admin(&req)?;
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

/// `POST /publish` `[{"channel":"<uuid>","text":"…","user":{"name":"Server"}}]` →
/// `201 {"messages":[…]}`: each stored and broadcast like a POST.
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
    let appended = state.store.append(entries, true).await?;
    metrics::accepted(Source::Http, appended.len());
    let messages: Vec<Message> = appended.into_iter().map(|a| a.message).collect();
    Ok(HttpResponse::Created().json(json!({ "messages": messages })))
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
