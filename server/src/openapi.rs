//! The API document every binary serves at `/openapi.json`, generated from the
//! handlers: each one's `#[utoipa::path]` gives its route, parameters, bodies
//! and answers, and the wire types derive their schemas. [`routes!`](crate::routes!)
//! lists every handler of a service in its `ApiDoc`, so a route cannot be served
//! undescribed.
//!
//! This module is the one place that adds what every binary's document shares
//! (title, security schemes, tags, the error answers and the parameters several
//! routes take) and [`document`] puts a binary's parts together.

use protocol::error::ErrorBody;
use utoipa::openapi::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, ToResponse, ToSchema};

/// What every binary's document holds, whatever it serves.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Crier",
        description = "Real-time chat fan-out. chat-service takes messages and serves history; \
            broadcast-sse streams them over Server-Sent Events. Every error is \
            `{\"error\":{\"code\",\"message\"}}`. Tokens (JWT) are checked only when a key is \
            configured. Each binary describes what it serves: the all-in-one `crier` both \
            services, chat-service and broadcast-sse their own routes; all of them the health \
            routes and this document."
    ),
    paths(crate::health::healthz, crate::health::openapi),
    components(
        schemas(ErrorBody, Name, Text, crate::health::Readiness),
        responses(
            BadRequest,
            Unauthorized,
            Forbidden,
            NotFound,
            Conflict,
            PayloadTooLarge,
            UnsupportedMediaType,
            TooManyRequests,
            Unavailable,
            InternalError,
            Overloaded,
            PostForbidden,
            PostUnavailable,
            SignalUnavailable,
            NotWithNats
        )
    ),
    modifiers(&SecuritySchemes),
    tags(
        (name = "messages", description = "chat-service: post messages, read history."),
        (name = "channels", description = "chat-service: what a channel holds and who follows it."),
        (name = "admin", description = "chat-service: bans and server messages. With \
            authentication on, they need a token with `admin: true`."),
        (name = "streams", description = "broadcast-sse: messages as Server-Sent Events."),
        (name = "health", description = "Every binary: whether it answers, whether it is ready, \
            and this document.")
    )
)]
struct Common;

/// The document of a binary: what every binary shares, and the `parts` it
/// serves (each service's `ApiDoc`, its `/readyz`).
pub fn document(parts: impl IntoIterator<Item = OpenApi>) -> OpenApi {
    let mut document = <Common as utoipa::OpenApi>::openapi();
    for part in parts {
        document.merge(part);
    }
    document
}

/// Every `(METHOD, path)` a document describes, sorted: what tests hold
/// against the routes a binary serves.
pub fn operations(document: &OpenApi) -> Vec<(String, String)> {
    const METHODS: [&str; 9] = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace", "query",
    ];
    let json = serde_json::to_value(document).unwrap_or_default();
    let mut operations: Vec<(String, String)> = json["paths"]
        .as_object()
        .into_iter()
        .flatten()
        .flat_map(|(path, item)| {
            METHODS
                .iter()
                .filter(|method| item.get(**method).is_some())
                .map(move |method| (method.to_ascii_uppercase(), path.clone()))
        })
        .collect();
    operations.sort();
    operations
}

/// Every `$ref` of a document that points at nothing in it (a schema or a
/// response a part uses but no part registers); none should.
pub fn dangling_refs(document: &OpenApi) -> Vec<String> {
    let json = serde_json::to_value(document).unwrap_or_default();
    let mut refs = Vec::new();
    collect_refs(&json, &mut refs);
    refs.retain(|target| {
        let pointer = target.strip_prefix('#').unwrap_or(target);
        json.pointer(pointer).is_none()
    });
    refs.sort();
    refs.dedup();
    refs
}

fn collect_refs(value: &serde_json::Value, refs: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            if let Some(serde_json::Value::String(target)) = map.get("$ref") {
                refs.push(target.clone());
            }
            map.values().for_each(|value| collect_refs(value, refs));
        }
        serde_json::Value::Array(items) => items.iter().for_each(|item| collect_refs(item, refs)),
        _ => {}
    }
}

/// A route list (a service's `ROUTES`) as [`operations`] gives it, sorted.
pub fn sorted(routes: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut routes: Vec<(String, String)> = routes
        .iter()
        .map(|(method, path)| (method.to_string(), path.to_string()))
        .collect();
    routes.sort();
    routes
}

/// `bearer`: `Authorization: Bearer <JWT>`, which every route with a token
/// takes; `cookie`: the same token in the `crier_token` cookie, which the
/// reading routes also take (a browser's `EventSource` cannot set headers).
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .bearer_format("JWT")
            .description(Some(
                "A JSON Web Token, checked when a key is configured (else none is needed).",
            ))
            .build();
        components.add_security_scheme("bearer", SecurityScheme::Http(bearer));
        let cookie = ApiKeyValue::with_description(
            crate::auth::TOKEN_COOKIE,
            "The same token in a cookie, for browsers; taken by the reading routes.",
        );
        components.add_security_scheme("cookie", SecurityScheme::ApiKey(ApiKey::Cookie(cookie)));
    }
}

/// The `{channel}` of a path.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ChannelPath {
    /// The channel: any UUID.
    #[param(value_type = String, format = Uuid)]
    pub channel: String,
}

/// `?access_token=`, which the reading routes take.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AccessToken {
    /// A token, for clients that cannot set headers (EventSource).
    pub access_token: Option<String>,
}

/// A name: an author, a banned name, the name a stream is present under.
/// Any characters but control characters, not only spaces.
#[derive(ToSchema)]
#[schema(
    value_type = String,
    min_length = 1,
    max_length = 64,
    pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$",
    example = "ann"
)]
pub struct Name(pub String);

/// A message's text. Not only whitespace; line breaks and tabs are the only
/// control characters allowed.
#[derive(ToSchema)]
#[schema(
    value_type = String,
    min_length = 1,
    max_length = 4000,
    pattern = r"^[^\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]*$",
    example = "hello"
)]
pub struct Text(pub String);

/// Bad input (`invalid_channel`, `invalid_json`, `invalid_author`, `invalid_text`,
/// `invalid_encoding`, `invalid_query`, `invalid_path`, `invalid_message_id`,
/// `invalid_idempotency_key`, `invalid_item`, `invalid_last_event_id`,
/// `invalid_signal`, `bad_request`); nothing changed.
#[derive(ToResponse)]
pub struct BadRequest(pub ErrorBody);

/// No token, or one that is expired, forged or of a refused algorithm
/// (`missing_token`, `invalid_token`).
#[derive(ToResponse)]
pub struct Unauthorized(pub ErrorBody);

/// A valid token without the right (`forbidden_channel`, `token_without_name`,
/// `not_admin`), or a banned name (`banned`).
#[derive(ToResponse)]
pub struct Forbidden(pub ErrorBody);

/// No such message, ban or route.
#[derive(ToResponse)]
pub struct NotFound(pub ErrorBody);

/// The message cannot be changed as asked (`message_deleted`, `not_a_message`).
#[derive(ToResponse)]
pub struct Conflict(pub ErrorBody);

/// The body is over the limit (`payload_too_large`).
#[derive(ToResponse)]
pub struct PayloadTooLarge(pub ErrorBody);

/// The body's content type is not accepted (`unsupported_media_type`).
#[derive(ToResponse)]
pub struct UnsupportedMediaType(pub ErrorBody);

/// Over a limit (`rate_limited`, `too_many_streams`).
#[derive(ToResponse)]
#[response(headers(("Retry-After" = u64, description = "Seconds to wait before trying again.")))]
pub struct TooManyRequests(pub ErrorBody);

/// The chat-service keeps history on NATS JetStream (`--nats-url`), which
/// does not have this yet (`not_available_with_nats`).
#[derive(ToResponse)]
pub struct NotWithNats(pub ErrorBody);

/// A dependency is down or the node is full (`history_unavailable`,
/// `too_many_channels`).
#[derive(ToResponse)]
pub struct Unavailable(pub ErrorBody);

/// The store failed (`internal_error`).
#[derive(ToResponse)]
pub struct InternalError(pub ErrorBody);

/// The store is behind and took nothing of this request (`overloaded`); retry
/// after the given seconds.
#[derive(ToResponse)]
#[response(headers(("Retry-After" = u64, description = "Seconds to wait before trying again.")))]
pub struct Overloaded(pub ErrorBody);

/// A post that may not be stored: a valid token without the right
/// (`forbidden_channel`, `token_without_name`), a banned name (`banned`), or a
/// rejection by the app's publish hook, with the app's own code (`[a-z0-9_]`,
/// `rejected` by default) and message. Nothing stored.
#[derive(ToResponse)]
pub struct PostForbidden(pub ErrorBody);

/// Nothing stored, retry after the given seconds: the store is behind
/// (`overloaded`), history on NATS cannot be reached (`history_unavailable`),
/// or the app's publish hook did not answer and posts are
/// refused meanwhile (`publish_hook_unavailable`).
#[derive(ToResponse)]
#[response(headers(("Retry-After" = u64, description = "Seconds to wait before trying again.")))]
pub struct PostUnavailable(pub ErrorBody);

/// The signal was not sent, retry after the given seconds: the publisher is
/// not connected to the broker (`broker_unavailable`), or too many signals
/// wait for it (`overloaded`). Signals are never kept for later.
#[derive(ToResponse)]
#[response(headers(("Retry-After" = u64, description = "Seconds to wait before trying again.")))]
pub struct SignalUnavailable(pub ErrorBody);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shared_part_describes_health_security_and_errors() {
        let document = document([]);
        assert_eq!(
            operations(&document),
            [
                ("GET".to_string(), "/healthz".to_string()),
                ("GET".to_string(), "/openapi.json".to_string()),
            ]
        );
        let json = serde_json::to_value(&document).unwrap_or_default();
        let components = &json["components"];
        assert_eq!(
            components["securitySchemes"]["bearer"]["bearerFormat"],
            "JWT"
        );
        assert_eq!(
            components["securitySchemes"]["cookie"]["name"],
            "crier_token"
        );
        assert_eq!(
            components["responses"]["BadRequest"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/Error"
        );
        assert!(components["schemas"]["Error"]["properties"]["error"].is_object());
        assert_eq!(dangling_refs(&document), Vec::<String>::new());
    }
}
