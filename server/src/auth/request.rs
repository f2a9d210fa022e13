//! Where a request carries its token, and the answers when it is missing or
//! does not allow what is asked.

use actix_web::HttpRequest;
use actix_web::http::{StatusCode, header};

use crate::error::ApiError;
use protocol::ChannelId;

use super::{Claims, TOKEN_COOKIE, Verifier};

/// Where a request carries its token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSources {
    /// `Authorization: Bearer` only (publishing, the admin API).
    Header,
    /// The header, `?access_token=` (EventSource cannot set headers) or the
    /// `crier_token` cookie (reading).
    HeaderQueryOrCookie,
}

/// The request's token, or `401 missing_token`.
pub fn token_of(req: &HttpRequest, sources: TokenSources) -> Result<String, ApiError> {
    if let Some(value) = req.headers().get(header::AUTHORIZATION) {
        let value = crate::settings::header_text(value.as_bytes())
            .ok_or_else(|| invalid_token("the Authorization header is not ASCII".into()))?;
        return match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
                Ok(token.trim().to_string())
            }
            _ => Err(invalid_token(
                "the Authorization header must be `Bearer <token>`".into(),
            )),
        };
    }
    if sources == TokenSources::HeaderQueryOrCookie {
        if let Some(token) = query_token(req.query_string()) {
            return Ok(token);
        }
        if let Some(cookie) = req.cookie(TOKEN_COOKIE) {
            return Ok(cookie.value().to_string());
        }
    }
    Err(ApiError::new(
        StatusCode::UNAUTHORIZED,
        "missing_token",
        match sources {
            TokenSources::Header => "this needs a token: `Authorization: Bearer <token>`",
            TokenSources::HeaderQueryOrCookie => {
                "this needs a token: `Authorization: Bearer`, `?access_token=` or the `crier_token` cookie"
            }
        },
    ))
}

fn query_token(query: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == "access_token")
        .map(|(_, value)| value.into_owned())
}

pub fn invalid_token(message: String) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "invalid_token", message)
}

pub fn forbidden(code: &'static str, message: String) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, code, message)
}

/// The claims of the request's token when authentication is on (`Some` verifier);
/// `None` when it is off.
pub fn claims_of(
    verifier: Option<&Verifier>,
    req: &HttpRequest,
    sources: TokenSources,
) -> Result<Option<Claims>, ApiError> {
    let Some(verifier) = verifier else {
        return Ok(None);
    };
    let token = token_of(req, sources)?;
    verifier.verify(&token).map(Some)
}

/// `403 forbidden_channel` unless the token may read `channel`.
pub fn require_subscribe(claims: &Claims, channel: ChannelId) -> Result<(), ApiError> {
    if claims.subscribe.allows(channel) {
        return Ok(());
    }
    Err(forbidden(
        "forbidden_channel",
        format!("the token does not allow reading channel {channel}"),
    ))
}
