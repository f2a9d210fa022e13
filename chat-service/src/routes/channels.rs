//! `/channels/{channel}/stats` and `/channels/{channel}/presence`: what a
//! channel holds and who follows it, over every broadcast-sse node (summed
//! from what the nodes publish on the broker, [`server::presence`]).

use actix_web::{HttpRequest, HttpResponse, web};
use protocol::ChannelId;
use serde::Serialize;
use server::openapi::{
    AccessToken, BadRequest, ChannelPath, Forbidden, InternalError, Unauthorized, Unavailable,
};
use utoipa::ToSchema;

use crate::AppState;
use crate::error::ChatError;

/// `{"channel","messages","first_id","last_id","subscribers"}`.
#[derive(Serialize, ToSchema)]
#[schema(as = ChannelStats)]
pub struct Stats {
    channel: ChannelId,
    /// Messages the channel holds now (retention removes old ones).
    messages: u64,
    /// The oldest id held, or null when none.
    #[schema(minimum = 1, required = true)]
    first_id: Option<u64>,
    /// The newest id held, or null when none.
    #[schema(minimum = 1, required = true)]
    last_id: Option<u64>,
    /// Open streams over every broadcast-sse node.
    subscribers: u64,
}

/// `{"channel","subscribers","names":[…]}`.
#[derive(Serialize, ToSchema)]
#[schema(as = ChannelPresence)]
pub struct Presence {
    channel: ChannelId,
    /// Open streams over every node, named or not.
    subscribers: u64,
    /// The names streams joined under (a token's name, or ?name=), each once.
    names: Vec<String>,
}

/// What a channel holds, and how many streams follow it over every
/// broadcast-sse node.
#[utoipa::path(
    get,
    path = "/channels/{channel}/stats",
    operation_id = "getChannelStats",
    tag = "channels",
    params(ChannelPath, AccessToken),
    responses(
        (status = 200, description = "The channel's stats.", body = Stats),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 503, response = Unavailable),
        (status = 500, response = InternalError),
    ),
    security((), ("bearer" = []), ("cookie" = [])),
)]
pub async fn stats(
    req: HttpRequest,
    channel: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ChatError> {
    let channel = ChannelId::parse(&channel)?;
    state.access.reader(&req, channel)?;
    let held = state.history.channel_stats(channel).await?;
    let subscribers = state.presence.channel(channel).subscribers;
    Ok(HttpResponse::Ok().json(Stats {
        channel,
        messages: held.messages,
        first_id: held.first_id,
        last_id: held.last_id,
        subscribers,
    }))
}

/// Who follows a channel over every broadcast-sse node: streams, and the
/// names they joined under (each once).
#[utoipa::path(
    get,
    path = "/channels/{channel}/presence",
    operation_id = "getChannelPresence",
    tag = "channels",
    params(ChannelPath, AccessToken),
    responses(
        (status = 200, description = "The channel's presence.", body = Presence),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = InternalError),
    ),
    security((), ("bearer" = []), ("cookie" = [])),
)]
pub async fn presence(
    req: HttpRequest,
    channel: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ChatError> {
    let channel = ChannelId::parse(&channel)?;
    state.access.reader(&req, channel)?;
    let present = state.presence.channel(channel);
    Ok(HttpResponse::Ok().json(Presence {
        channel,
        subscribers: present.subscribers,
        names: present.names.into_iter().collect(),
    }))
}
