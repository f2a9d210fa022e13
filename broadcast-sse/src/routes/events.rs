//! `GET /channels/{channel}/events`: the SSE stream.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use protocol::auth::{TokenSources, claims_of, require_subscribe};
use protocol::{ApiError, ChannelId};
use serde::Deserialize;
use tokio::sync::watch;

use crate::AppState;
use crate::error::BroadcastError;
use crate::stream::ClientStream;

/// Longest wait for the broker to confirm a new channel subscription before the
/// stream starts anyway (it then relies on gap detection and history).
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(5);

#[derive(Deserialize)]
pub struct EventsQuery {
    last_event_id: Option<String>,
}

pub async fn events(
    req: HttpRequest,
    channel: web::Path<String>,
    query: web::Query<EventsQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, BroadcastError> {
    let channel = ChannelId::parse(&channel)?;
    let sources = TokenSources::HeaderQueryOrCookie;
    let claims = claims_of(state.verifier.as_deref(), &req, sources)?;
    if let Some(claims) = &claims {
        require_subscribe(claims, channel)?;
    }
    let resume_after = resume_point(&req, query.last_event_id.as_deref())?;
    let slot = state
        .stream_slots
        .acquire(req.peer_addr().map(|address| address.ip()))?;
    if state.hub.would_exceed(channel, state.settings.max_channels) {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_channels",
            "this node follows as many channels as it may; try another node",
        )
        .into());
    }
    let mut membership = state.hub.join(channel);
    wait_until_subscribed(&mut membership.subscribed).await;
    let mut stream = ClientStream::new(
        channel,
        membership,
        &state.hub,
        state.history.clone(),
        resume_after,
        state.settings.retry_ms,
    );
    if let Some(claims) = &claims {
        stream = stream.expiring_at(claims.expires_at);
    }
    stream = stream.holding(slot);
    stream.prefetch().await?;
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(header::CacheControl(vec![header::CacheDirective::NoCache]))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(stream.into_body()))
}

/// The `Last-Event-ID` header wins over `?last_event_id=`: a browser that
/// reconnects sends the header with its newest id while the URL keeps the old one.
fn resume_point(req: &HttpRequest, query: Option<&str>) -> Result<Option<u64>, BroadcastError> {
    let header = req.headers().get("Last-Event-ID");
    let raw = match header {
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| BroadcastError::InvalidLastEventId("<not ASCII>".into()))?,
        ),
        None => query,
    };
    match raw.map(str::trim) {
        None | Some("") => Ok(None),
        Some(raw) => raw
            .parse::<u64>()
            .map(Some)
            .map_err(|_| BroadcastError::InvalidLastEventId(raw.chars().take(40).collect())),
    }
}

/// When the stream's first bytes reach the client, the node is subscribed: a message
/// posted after that is on the stream.
async fn wait_until_subscribed(subscribed: &mut watch::Receiver<bool>) {
    let wait = subscribed.wait_for(|is_subscribed| *is_subscribed);
    if tokio::time::timeout(SUBSCRIBE_WAIT, wait).await.is_err() {
        log::warn!("broker did not confirm a subscription in time; starting the stream anyway");
    }
}
