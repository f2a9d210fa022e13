//! `/channels/{channel}/stats` and `/channels/{channel}/presence`: what a
//! channel holds and who follows it, over every broadcast-sse node (summed
//! from what the nodes publish on the broker, [`server::presence`]).

use actix_web::{HttpRequest, HttpResponse, web};
use protocol::ChannelId;
use serde::Serialize;

use crate::AppState;
use crate::error::ChatError;

/// `{"channel","messages","first_id","last_id","subscribers"}`.
#[derive(Serialize)]
struct Stats {
    channel: ChannelId,
    messages: u64,
    first_id: Option<u64>,
    last_id: Option<u64>,
    subscribers: u64,
}

/// `{"channel","subscribers","names":[…]}`.
#[derive(Serialize)]
struct Presence {
    channel: ChannelId,
    subscribers: u64,
    names: Vec<String>,
}

pub async fn stats(
    req: HttpRequest,
    channel: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ChatError> {
    let channel = ChannelId::parse(&channel)?;
    state.access.reader(&req, channel)?;
    let held = state
        .read_store(move |store| store.synced().channel_stats(channel))
        .await?;
    let subscribers = state.presence.channel(channel).subscribers;
    Ok(HttpResponse::Ok().json(Stats {
        channel,
        messages: held.messages,
        first_id: held.first_id,
        last_id: held.last_id,
        subscribers,
    }))
}

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
