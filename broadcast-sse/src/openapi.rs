//! The document broadcast-sse serves at `/openapi.json`: its stream routes (the
//! `ApiDoc` of [`crate::startup`]'s route table) and the health routes; and the
//! parameters of the streams, which [`crate::routes::events`] reads from the
//! raw query and headers, described here.

use server::openapi::Name;
use utoipa::{IntoParams, OpenApi, ToSchema};

/// The `/readyz` this service answers.
#[derive(OpenApi)]
#[openapi(paths(crate::routes::health::readyz))]
pub struct Readyz;

/// The document of the standalone broadcast-sse.
pub fn document() -> utoipa::openapi::OpenApi {
    server::openapi::document([crate::startup::ApiDoc::openapi(), Readyz::openapi()])
}

/// Where a one-channel stream resumes: the `Last-Event-ID` header, which wins
/// (a browser that reconnects sends it with its newest id).
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
pub struct ResumeHeader {
    /// The last id the client has; the stream starts after it.
    #[param(rename = "Last-Event-ID", required = false, pattern = "^[0-9]+$")]
    pub last_event_id: String,
}

/// Where a one-channel stream resumes, for clients that cannot set headers.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ResumeQuery {
    /// The last id the client has; the stream starts after it. The
    /// `Last-Event-ID` header wins over it.
    #[param(pattern = "^[0-9]+$")]
    pub last_event_id: Option<String>,
}

/// The channels of a stream of several, and where it resumes.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ChannelsQuery {
    /// A channel (any UUID); repeat for each, at most
    /// --max-channels-per-stream (32), each once.
    #[param(style = Form, explode, min_items = 1, max_items = 32, value_type = Vec<String>, format = Uuid)]
    pub channel: Vec<String>,
    /// A cursor: the last id of each channel the client has; a channel left
    /// out starts with what is posted from now on. The `Last-Event-ID` header
    /// wins over it.
    #[param(
        max_length = 4096,
        pattern = "^([0-9a-fA-F]{8}:[0-9]+)?(,[0-9a-fA-F]{8}:[0-9]+)*$"
    )]
    pub last_event_id: Option<String>,
}

/// Where a stream of several resumes.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
pub struct CursorHeader {
    /// A cursor: the last id of each channel the client has; a channel left
    /// out starts with what is posted from now on.
    #[param(
        rename = "Last-Event-ID",
        required = false,
        max_length = 4096,
        pattern = "^([0-9a-fA-F]{8}:[0-9]+)?(,[0-9a-fA-F]{8}:[0-9]+)*$"
    )]
    pub last_event_id: String,
}

/// Presence: the name a stream is present under, and whether it follows who
/// comes and goes.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PresenceQuery {
    /// Without a token: the name this stream is present under (the rules of
    /// an author). With a token, its `name` claim is used.
    #[param(value_type = Name, required = false)]
    pub name: Option<String>,
    /// `1`: the stream also gets `event: presence` with
    /// `{"channel":"…","joined":[…],"left":[…]}` as names come and go on any
    /// node, first with everyone there.
    #[param(inline)]
    pub presence: Option<PresenceFlag>,
}

/// `?presence=`: `1` or `true` to follow presence, `0` or `false` not to.
#[derive(ToSchema)]
pub enum PresenceFlag {
    #[serde(rename = "0")]
    Zero,
    #[serde(rename = "1")]
    One,
    #[serde(rename = "true")]
    True,
    #[serde(rename = "false")]
    False,
}
