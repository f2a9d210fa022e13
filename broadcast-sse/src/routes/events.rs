//! `GET /channels/{channel}/events` and `GET /events?channel=…`: the SSE streams.
//!
//! Opening a stream takes two steps: [`admit`] checks the request (no waiting),
//! [`open`] joins the channels and reads what a resume needs. Every transport
//! (actix-http, or the socket path of [`crate::http1`]) runs the request
//! through these handlers, so every stream answers alike.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use protocol::ChannelId;
use server::auth::{TokenSources, claims_of, require_subscribe};
use server::error::ApiError;
use server::openapi::{
    AccessToken, BadRequest, ChannelPath, Forbidden, NotFound, TooManyRequests, Unauthorized,
    Unavailable,
};
use server::settings::header_text;
use tokio::sync::watch;

use crate::AppState;
use crate::error::BroadcastError;
use crate::openapi::{ChannelsQuery, CursorHeader, PresenceQuery, ResumeHeader, ResumeQuery};
use crate::stream::{ClientStream, Opening, cursor};
use crate::stream_slots::StreamSlot;

/// Longest wait for the broker to confirm a new stream's channel subscriptions
/// (all of them together) before the stream starts anyway (it then relies on gap detection and history).
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(5);

/// The headers of a stream's response (proxies must not buffer it).
const STREAM_HEADERS: [(&str, &str); 3] = [
    ("content-type", "text/event-stream"),
    ("cache-control", "no-cache"),
    ("x-accel-buffering", "no"),
];

/// Which channels a request streams.
#[derive(Clone, Copy)]
enum StreamTarget<'a> {
    /// `/channels/{channel}/events`: the path segment, percent-decoded.
    Channel(&'a str),
    /// `/events?channel=…&channel=…`: the channels are in the query.
    Query,
}

/// A request that may open its stream.
struct Admission {
    channels: Vec<ChannelId>,
    /// The last id the client has of each channel, where it said.
    resume_after: Vec<Option<u64>>,
    /// `/events`: a stream whose `id:` is a cursor of all its channels.
    several: bool,
    expires_at: Option<u64>,
    slot: Option<StreamSlot>,
    /// The name the stream is present under: its token's, else `?name=`.
    name: Option<String>,
    /// `?presence=1`: the stream is told who joins and leaves.
    follows_presence: bool,
}

/// A channel's messages as Server-Sent Events (broadcast-sse).
///
/// `retry:`, then `id:`/`event: message`/`data:` for each message; `event: gap`
/// (`{"channel","from","to"}`) when resumed ids were removed; `event: reset`
/// (`{"channel","last_id"}`) when the resume point is above the newest stored
/// id; `event: reconnect` when the client should reconnect with its
/// Last-Event-ID; `: keep-alive` comments.
#[utoipa::path(
    get,
    path = "/channels/{channel}/events",
    operation_id = "streamEvents",
    tag = "streams",
    params(ChannelPath, ResumeHeader, ResumeQuery, AccessToken, PresenceQuery),
    responses(
        (status = 200, description = "The stream; it stays open.", body = String,
            content_type = "text/event-stream"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 429, response = TooManyRequests),
        (status = 503, response = Unavailable),
    ),
    security((), ("bearer" = []), ("cookie" = [])),
)]
pub async fn events(
    req: HttpRequest,
    channel: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, BroadcastError> {
    respond(&req, StreamTarget::Channel(&channel), &state).await
}

/// Several channels' messages on one Server-Sent Events stream (broadcast-sse).
///
/// `GET /events?channel=…&channel=…`. Events are those of
/// /channels/{channel}/events, each naming its channel in its data; every
/// `id:` is a cursor of the last id of each channel (`{first 8 hex digits of
/// the channel}:{id}`, comma-separated), so the browser's Last-Event-ID
/// resumes them all.
#[utoipa::path(
    get,
    path = "/events",
    operation_id = "streamChannelsEvents",
    tag = "streams",
    params(ChannelsQuery, CursorHeader, AccessToken, PresenceQuery),
    responses(
        (status = 200, description = "The stream; it stays open.", body = String,
            content_type = "text/event-stream"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 429, response = TooManyRequests),
        (status = 503, response = Unavailable),
    ),
    security((), ("bearer" = []), ("cookie" = [])),
)]
pub async fn channels_events(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, BroadcastError> {
    respond(&req, StreamTarget::Query, &state).await
}

async fn respond(
    req: &HttpRequest,
    target: StreamTarget<'_>,
    state: &AppState,
) -> Result<HttpResponse, BroadcastError> {
    let admission = admit(state, req, target)?;
    let stream = open(state, admission).await?;
    let mut response = HttpResponse::Ok();
    for header in STREAM_HEADERS {
        response.insert_header(header);
    }
    Ok(response.streaming(stream.into_body()))
}

/// The one `Last-Event-ID` header; two are refused, since either could be stale.
fn last_event_id_of(req: &HttpRequest) -> Result<Option<&[u8]>, BroadcastError> {
    let mut values = req.headers().get_all("Last-Event-ID");
    let first = values.next();
    if values.next().is_some() {
        return Err(BroadcastError::InvalidLastEventId(
            "the header appears more than once".into(),
        ));
    }
    Ok(first.map(|value| value.as_bytes()))
}

/// Checks the channels, the token, the resume point and the limits; takes the
/// client address's stream slot.
fn admit(
    state: &AppState,
    req: &HttpRequest,
    target: StreamTarget,
) -> Result<Admission, BroadcastError> {
    let last_event_id = last_event_id_of(req)?;
    let query = req.query_string();
    let (channels, several) = match target {
        StreamTarget::Channel(channel) => (vec![ChannelId::parse(channel)?], false),
        StreamTarget::Query => (
            channels_in(query, state.settings.max_channels_per_stream)?,
            true,
        ),
    };
    let sources = TokenSources::HeaderQueryOrCookie;
    let claims = claims_of(state.verifier.as_deref(), req, sources)?;
    if let Some(claims) = &claims {
        for channel in &channels {
            require_subscribe(claims, *channel)?;
        }
    }
    let raw_resume = resume_text(last_event_id, query)?;
    let resume_after = match (several, raw_resume) {
        (_, None) => vec![None; channels.len()],
        (false, Some(raw)) => vec![Some(resume_point(raw)?)],
        (true, Some(raw)) => {
            cursor::parse(&raw, &channels).map_err(BroadcastError::InvalidLastEventId)?
        }
    };
    let wishes = PresenceWishes::of(query)?;
    let name = match &claims {
        Some(claims) => claims.name.clone(),
        None => wishes.name,
    };
    let slot = state
        .stream_slots
        .acquire(req.peer_addr().map(|address| address.ip()))?;
    let max = state.settings.max_channels;
    if channels
        .iter()
        .any(|channel| state.hub.would_exceed(*channel, max))
    {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_channels",
            "this node follows as many channels as it may; try another node",
        )
        .into());
    }
    Ok(Admission {
        channels,
        resume_after,
        several,
        expires_at: claims.map(|claims| claims.expires_at),
        slot,
        name,
        follows_presence: wishes.follow,
    })
}

/// The `channel` parameters of `/events`: at least one, at most `max`, each
/// once, and no two that a cursor could not tell apart.
fn channels_in(query: &str, max: usize) -> Result<Vec<ChannelId>, BroadcastError> {
    let mut channels = Vec::new();
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        if key != "channel" {
            continue;
        }
        let channel = ChannelId::parse(&value)?;
        if channels.contains(&channel) {
            return Err(BroadcastError::InvalidChannels(format!(
                "channel {channel} is named twice"
            )));
        }
        if channels.len() == max.max(1) {
            return Err(BroadcastError::InvalidChannels(format!(
                "a stream follows at most {max} channels"
            )));
        }
        channels.push(channel);
    }
    if channels.is_empty() {
        return Err(BroadcastError::InvalidChannels(
            "name at least one channel: /events?channel=<uuid>".into(),
        ));
    }
    if let Some(key) = cursor::first_shared_key(&channels) {
        return Err(BroadcastError::InvalidChannels(format!(
            "two channels start with {key}, which the stream's cursor cannot tell apart"
        )));
    }
    Ok(channels)
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
                    let name = server::presence::check_name(&value);
                    wishes.name = Some(name.map_err(BroadcastError::InvalidName)?);
                }
                "presence" => wishes.follow = follows_presence(&value)?,
                _ => {}
            }
        }
        Ok(wishes)
    }
}

/// `?presence=`: `1` or `true` to follow presence, `0` or `false` not to.
fn follows_presence(value: &str) -> Result<bool, BroadcastError> {
    match value {
        "1" | "true" => Ok(true),
        "0" | "false" => Ok(false),
        _ => Err(BroadcastError::InvalidPresence(value.to_string())),
    }
}

/// Joins the channels, waits for the broker subscriptions and reads the first
/// step of a resume: when this returns, a message posted later is on the stream.
async fn open(state: &AppState, admission: Admission) -> Result<ClientStream, BroadcastError> {
    let retry_ms = state.settings.retry_ms;
    let mut stream = if admission.several {
        let openings = join_all(state, &admission.channels, &admission.resume_after).await?;
        ClientStream::of_channels(openings, &state.hub, state.history.clone(), retry_ms)
    } else {
        let channel = admission.channels[0];
        let mut membership = state.hub.join(channel);
        wait_until_subscribed([&mut membership.subscribed]).await;
        let history = state.history.clone();
        let resume_after = admission.resume_after[0];
        ClientStream::new(
            channel,
            membership,
            &state.hub,
            history,
            resume_after,
            retry_ms,
        )
    };
    if let Some(expires_at) = admission.expires_at {
        stream = stream.expiring_at(expires_at);
    }
    stream = stream.holding(admission.slot);
    let joined = admission
        .channels
        .iter()
        .map(|channel| state.presence.join(*channel, admission.name.clone()));
    let feeds = match (&state.watcher, admission.follows_presence) {
        (Some(watcher), true) => Some(
            admission
                .channels
                .iter()
                .map(|channel| watcher.names(*channel))
                .collect(),
        ),
        _ => None,
    };
    stream = stream.present(joined.collect(), feeds);
    stream.prefetch().await?;
    Ok(stream)
}

/// Joins every channel of a stream of several. A channel the client gave no
/// position for starts at the last id this node delivered or, when it
/// delivered none, the newest stored one (read before joining, so a message
/// stored meanwhile is caught up): every channel has a place in the cursor
/// from the first event on.
async fn join_all(
    state: &AppState,
    channels: &[ChannelId],
    resume_after: &[Option<u64>],
) -> Result<Vec<Opening>, BroadcastError> {
    let mut openings = Vec::with_capacity(channels.len());
    for (channel, resume_after) in channels.iter().zip(resume_after) {
        let stored = match resume_after.or(state.hub.last_id(*channel)) {
            Some(_) => None,
            None => state
                .history
                .latest_id(*channel)
                .await
                .map_err(|e| BroadcastError::HistoryUnavailable(e.0))?,
        };
        let membership = state.hub.join(*channel);
        let resume_after = resume_after
            .or(membership.last_id_at_join)
            .or(Some(stored.unwrap_or(0)));
        openings.push(Opening {
            channel: *channel,
            membership,
            resume_after,
        });
    }
    let subscriptions = openings
        .iter_mut()
        .map(|opening| &mut opening.membership.subscribed);
    wait_until_subscribed(subscriptions).await;
    Ok(openings)
}

/// The resume point's text: the `Last-Event-ID` header wins over
/// `?last_event_id=`, since a browser that reconnects sends the header with its
/// newest id while the URL keeps the old one.
fn resume_text<'a>(
    header: Option<&'a [u8]>,
    query: &'a str,
) -> Result<Option<std::borrow::Cow<'a, str>>, BroadcastError> {
    let raw = match header {
        Some(value) => Some(std::borrow::Cow::Borrowed(header_text(value).ok_or_else(
            || BroadcastError::InvalidLastEventId("it is not ASCII text".into()),
        )?)),
        None => url::form_urlencoded::parse(query.as_bytes())
            .find(|(key, _)| key == "last_event_id")
            .map(|(_, value)| value),
    };
    Ok(raw.filter(|raw| !raw.trim().is_empty()))
}

/// A one-channel stream's resume point: the last id the client has.
fn resume_point(raw: std::borrow::Cow<'_, str>) -> Result<u64, BroadcastError> {
    let raw = raw.trim();
    raw.parse::<u64>().map_err(|_| {
        let shown: String = raw.chars().take(40).collect();
        BroadcastError::InvalidLastEventId(format!("{shown:?} is not a non-negative integer"))
    })
}

/// When the stream's first bytes reach the client, the node is subscribed to
/// each of its channels: a message posted after that is on the stream. One
/// deadline covers them all.
async fn wait_until_subscribed<'a>(
    subscriptions: impl IntoIterator<Item = &'a mut watch::Receiver<bool>>,
) {
    let all = async {
        for subscribed in subscriptions {
            // An error means the channel's entry is gone: nothing to wait for.
            let _ = subscribed.wait_for(|is_subscribed| *is_subscribed).await;
        }
    };
    if tokio::time::timeout(SUBSCRIBE_WAIT, all).await.is_err() {
        log::warn!("broker did not confirm a subscription in time; starting the stream anyway");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resume(header: Option<&[u8]>, query: &str) -> Result<Option<u64>, BroadcastError> {
        resume_text(header, query)?.map(resume_point).transpose()
    }

    #[test]
    fn the_header_wins_over_the_query() {
        let resumed = resume(Some(b"7"), "last_event_id=3").expect("valid");
        assert_eq!(resumed, Some(7));
    }

    #[test]
    fn the_query_is_read_without_a_header() {
        let resumed = resume(None, "x=1&last_event_id=%2042").expect("valid");
        assert_eq!(resumed, Some(42));
        assert_eq!(resume(None, "").expect("valid"), None);
    }

    #[test]
    fn a_bad_resume_point_is_refused() {
        assert!(resume(Some(b"abc"), "").is_err());
        assert!(resume(Some(b"\xff"), "").is_err());
        assert!(resume(None, "last_event_id=-1").is_err());
    }

    const A: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";
    const B: &str = "1a2b3c4d-0000-4000-8000-000000000001";

    #[test]
    fn channels_are_read_from_the_query_in_order() {
        let query = format!("channel={B}&name=ann&channel={A}");
        let channels = channels_in(&query, 32).expect("valid");
        let texts: Vec<String> = channels.iter().map(ToString::to_string).collect();
        assert_eq!(texts, [B, A]);
    }

    #[test]
    fn a_bad_channel_list_is_refused() {
        let shared_key = "0f8fad5b-0000-4000-8000-000000000009";
        for query in [
            String::new(),
            "name=ann".into(),
            format!("channel={A}&channel={A}"),
            format!("channel={A}&channel=nope"),
            format!("channel={A}&channel={B}&channel={shared_key}"),
        ] {
            assert!(channels_in(&query, 32).is_err(), "{query:?}");
        }
        assert!(channels_in(&format!("channel={A}&channel={B}"), 1).is_err());
    }
}
