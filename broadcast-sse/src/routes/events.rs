//! `GET /channels/{channel}/events`: the SSE stream.
//!
//! Opening a stream is split from the server that read the request: [`admit`]
//! checks a [`StreamRequest`] (no waiting), [`open`] joins the channel and reads
//! what a resume needs. The actix handler below and the plain HTTP/1 path
//! ([`crate::http1`]) both go through them, so both answer alike.

use std::net::IpAddr;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use protocol::auth::{TokenCarriers, TokenSources, claims_in, require_subscribe};
use protocol::server::header_text;
use protocol::{ApiError, ChannelId};
use tokio::sync::watch;

use crate::AppState;
use crate::error::BroadcastError;
use crate::limits::StreamSlot;
use crate::stream::ClientStream;

/// Longest wait for the broker to confirm a new channel subscription before the
/// stream starts anyway (it then relies on gap detection and history).
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(5);

/// The headers of a stream's response, whichever server writes it (proxies must
/// not buffer it).
pub const STREAM_HEADERS: [(&str, &str); 3] = [
    ("content-type", "text/event-stream"),
    ("cache-control", "no-cache"),
    ("x-accel-buffering", "no"),
];

/// What opening a stream needs from a request, whichever server read it.
pub struct StreamRequest<'a> {
    /// The `{channel}` path segment, percent-decoded.
    pub channel: &'a str,
    /// The raw `Last-Event-ID` header.
    pub last_event_id: Option<&'a [u8]>,
    /// The query string, without the `?`.
    pub query: &'a str,
    pub tokens: TokenCarriers<'a>,
    pub peer: Option<IpAddr>,
}

/// A request that may open its stream.
pub struct Admission {
    channel: ChannelId,
    resume_after: Option<u64>,
    expires_at: Option<u64>,
    slot: Option<StreamSlot>,
    /// The name the stream is present under: its token's, else `?name=`.
    name: Option<String>,
    /// `?presence=1`: the stream is told who joins and leaves.
    follows_presence: bool,
}

pub async fn events(
    req: HttpRequest,
    channel: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, BroadcastError> {
    let request = StreamRequest {
        channel: &channel,
        last_event_id: req
            .headers()
            .get("Last-Event-ID")
            .map(|value| value.as_bytes()),
        query: req.query_string(),
        tokens: TokenCarriers::of(&req),
        peer: req.peer_addr().map(|address| address.ip()),
    };
    let admission = admit(&state, request)?;
    let stream = open(&state, admission).await?;
    let mut response = HttpResponse::Ok();
    for header in STREAM_HEADERS {
        response.insert_header(header);
    }
    Ok(response.streaming(stream.into_body()))
}

/// Checks the channel, the token, the resume point and the limits; takes the
/// client address's stream slot.
pub fn admit(state: &AppState, request: StreamRequest) -> Result<Admission, BroadcastError> {
    let channel = ChannelId::parse(request.channel)?;
    let sources = TokenSources::HeaderQueryOrCookie;
    let claims = claims_in(state.verifier.as_deref(), request.tokens, sources)?;
    if let Some(claims) = &claims {
        require_subscribe(claims, channel)?;
    }
    let resume_after = resume_point(request.last_event_id, request.query)?;
    let wishes = PresenceWishes::of(request.query)?;
    let name = match &claims {
        Some(claims) => claims.name.clone(),
        None => wishes.name,
    };
    let slot = state.stream_slots.acquire(request.peer)?;
    if state.hub.would_exceed(channel, state.settings.max_channels) {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_channels",
            "this node follows as many channels as it may; try another node",
        )
        .into());
    }
    Ok(Admission {
        channel,
        resume_after,
        expires_at: claims.map(|claims| claims.expires_at),
        slot,
        name,
        follows_presence: wishes.follow,
    })
}

/// `?name=` (checked like an author) and `?presence=1`.
struct PresenceWishes {
    name: Option<String>,
    follow: bool,
}

impl PresenceWishes {
    fn of(query: &str) -> Result<Self, BroadcastError> {
        let mut wishes = PresenceWishes {
            name: None,
            follow: false,
        };
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            match key.as_ref() {
                "name" => {
                    let name = protocol::presence::check_name(&value);
                    wishes.name = Some(name.map_err(BroadcastError::InvalidName)?);
                }
                "presence" => wishes.follow = matches!(value.as_ref(), "1" | "true"),
                _ => {}
            }
        }
        Ok(wishes)
    }
}

/// Joins the channel, waits for the broker subscription and reads the first
/// step of a resume: when this returns, a message posted later is on the stream.
pub async fn open(state: &AppState, admission: Admission) -> Result<ClientStream, BroadcastError> {
    let mut membership = state.hub.join(admission.channel);
    wait_until_subscribed(&mut membership.subscribed).await;
    let mut stream = ClientStream::new(
        admission.channel,
        membership,
        &state.hub,
        state.history.clone(),
        admission.resume_after,
        state.settings.retry_ms,
    );
    if let Some(expires_at) = admission.expires_at {
        stream = stream.expiring_at(expires_at);
    }
    stream = stream.holding(admission.slot);
    let joined = state.presence.join(admission.channel, admission.name);
    let feed = admission.follows_presence.then(|| {
        let watcher = state.watcher.as_ref();
        watcher.map(|watcher| watcher.names(admission.channel))
    });
    stream = stream.present(joined, feed.flatten());
    stream.prefetch().await?;
    Ok(stream)
}

/// The `Last-Event-ID` header wins over `?last_event_id=`: a browser that
/// reconnects sends the header with its newest id while the URL keeps the old one.
fn resume_point(header: Option<&[u8]>, query: &str) -> Result<Option<u64>, BroadcastError> {
    let from_query;
    let raw = match header {
        Some(value) => Some(
            header_text(value)
                .ok_or_else(|| BroadcastError::InvalidLastEventId("<not ASCII>".into()))?,
        ),
        None => {
            from_query = url::form_urlencoded::parse(query.as_bytes())
                .find(|(key, _)| key == "last_event_id")
                .map(|(_, value)| value);
            from_query.as_deref()
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_wins_over_the_query() {
        let resumed = resume_point(Some(b"7"), "last_event_id=3").expect("valid");
        assert_eq!(resumed, Some(7));
    }

    #[test]
    fn the_query_is_read_without_a_header() {
        let resumed = resume_point(None, "x=1&last_event_id=%2042").expect("valid");
        assert_eq!(resumed, Some(42));
        assert_eq!(resume_point(None, "").expect("valid"), None);
    }

    #[test]
    fn a_bad_resume_point_is_refused() {
        assert!(resume_point(Some(b"abc"), "").is_err());
        assert!(resume_point(Some(b"\xff"), "").is_err());
        assert!(resume_point(None, "last_event_id=-1").is_err());
    }
}
