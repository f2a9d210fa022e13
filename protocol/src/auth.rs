//! JSON Web Tokens, shared by both services: who may publish to or read which
//! channel, under which name, and who may use the admin API.
//!
//! Keys: a secret shared with the application server (HS256/384/512, as Tuleap
//! Realtime does) and/or a public key in PEM (RS256/384/512 or ES256/384, as
//! ChatUp does). The token's `alg` picks the key, and each key accepts only its
//! own family: `alg: none` and HS/RS confusion are refused. `exp` is required;
//! `exp` and `nbf` are checked with a leeway of [`LEEWAY_SECS`].
//!
//! Claims: `name` (the author of what the holder posts), `user` or `_public` (an
//! object broadcast with every message the holder posts), `channels` (where it may
//! publish) and `subscribe` (what it may read), each a list of channel UUIDs or
//! `"*"`, and `admin: true` for the admin API.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use actix_web::HttpRequest;
use actix_web::http::{StatusCode, header};
use clap::Args;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;

use crate::{ApiError, ChannelId};

pub const LEEWAY_SECS: u64 = 5;
/// The cookie a browser may carry its token in.
pub const TOKEN_COOKIE: &str = "crier_token";

/// Flags shared by every binary.
#[derive(Debug, Clone, Default, Args)]
pub struct AuthSettings {
    /// Secret shared with the application server, for HS256/384/512 tokens. Without
    /// any key, authentication is off (anyone may post and read).
    #[arg(long, env = "CRIER_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// File holding that secret (a trailing newline is ignored).
    #[arg(long, env = "CRIER_JWT_SECRET_FILE", conflicts_with = "jwt_secret")]
    pub jwt_secret_file: Option<PathBuf>,

    /// PEM file of the public key for RS256/384/512 or ES256/384 tokens.
    #[arg(long, env = "CRIER_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the JWT secret is empty")]
    EmptySecret,
    #[error("{path} is neither an RSA nor an EC public key in PEM")]
    NotAPublicKey { path: String },
}

impl AuthSettings {
    /// The verifier, or `None` when no key is configured (authentication off).
    pub fn verifier(&self) -> Result<Option<Verifier>, KeyError> {
        let secret = self.secret()?;
        let public = match &self.jwt_public_key {
            Some(path) => Some(public_key(path)?),
            None => None,
        };
        if secret.is_none() && public.is_none() {
            return Ok(None);
        }
        let secret = secret.map(|secret| {
            let validation = validation(&[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512]);
            (DecodingKey::from_secret(&secret), validation)
        });
        Ok(Some(Verifier { secret, public }))
    }

    /// A source of tokens for one service to read another's history: the
    /// configured `--history-token`, else tokens minted with the shared secret,
    /// else none (with authentication on, history reads will then be refused).
    pub fn history_credentials(
        &self,
        history_token: Option<String>,
    ) -> Result<HistoryCredentials, KeyError> {
        if let Some(token) = history_token {
            return Ok(HistoryCredentials::Fixed(token));
        }
        Ok(match self.secret()? {
            Some(secret) => HistoryCredentials::Minted(EncodingKey::from_secret(&secret)),
            None => HistoryCredentials::None,
        })
    }

    fn secret(&self) -> Result<Option<Vec<u8>>, KeyError> {
        let secret = match (&self.jwt_secret, &self.jwt_secret_file) {
            (Some(secret), _) => secret.clone(),
            (None, Some(path)) => read(path)?.trim_end_matches(['\r', '\n']).to_string(),
            (None, None) => return Ok(None),
        };
        if secret.is_empty() {
            return Err(KeyError::EmptySecret);
        }
        Ok(Some(secret.into_bytes()))
    }
}

/// The verifier a binary starts with, shared by its services; logs a warning when
/// authentication is off.
pub fn start_verifier(settings: &AuthSettings) -> Result<Option<Arc<Verifier>>, KeyError> {
    let verifier = settings.verifier()?;
    if verifier.is_none() {
        log::warn!(
            "authentication is off: anyone can post to and read any channel \
             (set --jwt-secret, --jwt-secret-file or --jwt-public-key)"
        );
    }
    Ok(verifier.map(Arc::new))
}

fn read(path: &PathBuf) -> Result<String, KeyError> {
    std::fs::read_to_string(path).map_err(|source| KeyError::Read {
        path: path.display().to_string(),
        source,
    })
}

fn public_key(path: &PathBuf) -> Result<(DecodingKey, Validation), KeyError> {
    let pem = read(path)?;
    if let Ok(key) = DecodingKey::from_rsa_pem(pem.as_bytes()) {
        let algorithms = [Algorithm::RS256, Algorithm::RS384, Algorithm::RS512];
        return Ok((key, validation(&algorithms)));
    }
    if let Ok(key) = DecodingKey::from_ec_pem(pem.as_bytes()) {
        let algorithms = [Algorithm::ES256, Algorithm::ES384];
        return Ok((key, validation(&algorithms)));
    }
    Err(KeyError::NotAPublicKey {
        path: path.display().to_string(),
    })
}

fn validation(algorithms: &[Algorithm]) -> Validation {
    let mut validation = Validation::new(algorithms[0]);
    validation.algorithms = algorithms.to_vec();
    validation.leeway = LEEWAY_SECS;
    validation.validate_nbf = true;
    validation.set_required_spec_claims(&["exp"]);
    validation
}

/// How a service authenticates its history reads.
pub enum HistoryCredentials {
    None,
    Fixed(String),
    /// Short-lived tokens that may read every channel, signed with the secret.
    Minted(EncodingKey),
}

/// Lifetime of a minted history token.
const MINTED_TOKEN_SECS: u64 = 300;

impl HistoryCredentials {
    /// The bearer token for the next request, if any.
    pub fn token(&self) -> Option<String> {
        match self {
            HistoryCredentials::None => None,
            HistoryCredentials::Fixed(token) => Some(token.clone()),
            HistoryCredentials::Minted(key) => {
                let claims = serde_json::json!({
                    "name": "broadcast-sse",
                    "subscribe": "*",
                    "exp": jsonwebtoken::get_current_timestamp() + MINTED_TOKEN_SECS,
                });
                let header = jsonwebtoken::Header::new(Algorithm::HS256);
                jsonwebtoken::encode(&header, &claims, key)
                    .map_err(|e| log::error!("cannot sign a history token: {e}"))
                    .ok()
            }
        }
    }
}

/// Checks tokens against the configured keys.
pub struct Verifier {
    secret: Option<(DecodingKey, Validation)>,
    public: Option<(DecodingKey, Validation)>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("secret", &self.secret.is_some())
            .field("public_key", &self.public.is_some())
            .finish()
    }
}

impl Verifier {
    /// The claims of a valid token, or `401 invalid_token` saying why not.
    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| invalid_token(format!("the token is malformed: {e}")))?;
        let family_key = match header.alg {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => &self.secret,
            _ => &self.public,
        };
        let Some((key, validation)) = family_key else {
            return Err(invalid_token(format!(
                "tokens signed with {:?} are not accepted here",
                header.alg
            )));
        };
        let data = jsonwebtoken::decode::<RawClaims>(token, key, validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::ExpiredSignature => invalid_token("the token has expired".into()),
                ErrorKind::ImmatureSignature => invalid_token("the token is not valid yet".into()),
                ErrorKind::InvalidSignature => {
                    invalid_token("the token signature is invalid".into())
                }
                ErrorKind::InvalidAlgorithm => {
                    invalid_token("the token's algorithm does not match the key".into())
                }
                _ => invalid_token(format!("the token is not valid: {e}")),
            }
        })?;
        Ok(data.claims.into())
    }
}

/// What a valid token grants.
#[derive(Debug, Clone, PartialEq)]
pub struct Claims {
    pub name: Option<String>,
    /// Public information about the holder, broadcast with what it posts.
    pub user: Option<Value>,
    pub publish: Grant,
    pub subscribe: Grant,
    pub admin: bool,
    /// Seconds since the Unix epoch.
    pub expires_at: u64,
}

#[derive(Deserialize)]
struct RawClaims {
    name: Option<String>,
    user: Option<Value>,
    #[serde(rename = "_public")]
    public: Option<Value>,
    #[serde(default)]
    channels: Grant,
    #[serde(default)]
    subscribe: Grant,
    #[serde(default)]
    admin: bool,
    exp: u64,
}

impl From<RawClaims> for Claims {
    fn from(raw: RawClaims) -> Self {
        let user = raw.user.or(raw.public).filter(Value::is_object);
        Claims {
            name: raw.name,
            user,
            publish: raw.channels,
            subscribe: raw.subscribe,
            admin: raw.admin,
            expires_at: raw.exp,
        }
    }
}

/// The channels a claim covers: all (`"*"`), or a list (entries that are not
/// channel ids grant nothing).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Grant {
    All,
    Channels(HashSet<ChannelId>),
    #[default]
    Nothing,
}

impl Grant {
    pub fn allows(&self, channel: ChannelId) -> bool {
        match self {
            Grant::All => true,
            Grant::Channels(channels) => channels.contains(&channel),
            Grant::Nothing => false,
        }
    }
}

impl<'de> Deserialize<'de> for Grant {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(String),
            Many(Vec<String>),
        }
        let entries = match Raw::deserialize(deserializer)? {
            Raw::One(entry) => vec![entry],
            Raw::Many(entries) => entries,
        };
        if entries.iter().any(|entry| entry == "*") {
            return Ok(Grant::All);
        }
        let channels = entries
            .iter()
            .filter_map(|entry| ChannelId::parse(entry).ok())
            .collect();
        Ok(Grant::Channels(channels))
    }
}

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
        let value = crate::server::header_text(value.as_bytes())
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

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    const SECRET: &str = "test secret";

    fn verifier() -> Verifier {
        let settings = AuthSettings {
            jwt_secret: Some(SECRET.into()),
            ..AuthSettings::default()
        };
        settings
            .verifier()
            .expect("valid settings")
            .expect("auth on")
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn token(claims: Value) -> String {
        let key = EncodingKey::from_secret(SECRET.as_bytes());
        encode(&Header::new(Algorithm::HS256), &claims, &key).expect("encode")
    }

    #[test]
    fn a_minted_history_token_reads_every_channel() {
        let settings = AuthSettings {
            jwt_secret: Some(SECRET.into()),
            ..AuthSettings::default()
        };
        let credentials = settings.history_credentials(None).expect("credentials");
        let token = credentials.token().expect("a token");
        let claims = verifier().verify(&token).expect("valid");
        assert!(claims.subscribe.allows(ChannelId::from_bytes([3; 16])));
        assert!(!claims.publish.allows(ChannelId::from_bytes([3; 16])));
    }

    #[test]
    fn no_key_means_authentication_is_off() {
        assert!(AuthSettings::default().verifier().expect("ok").is_none());
    }

    #[test]
    fn a_valid_token_grants_its_claims() {
        let channel = ChannelId::from_bytes([7; 16]);
        let claims = verifier()
            .verify(&token(json!({
                "name": "ann", "_public": {"avatar": "a.png"},
                "channels": [channel.to_string(), "not a uuid"], "subscribe": "*",
                "exp": now() + 60,
            })))
            .expect("valid");
        assert_eq!(claims.name.as_deref(), Some("ann"));
        assert_eq!(claims.user, Some(json!({"avatar": "a.png"})));
        assert!(claims.publish.allows(channel));
        assert!(!claims.publish.allows(ChannelId::from_bytes([8; 16])));
        assert!(claims.subscribe.allows(ChannelId::from_bytes([8; 16])));
        assert!(!claims.admin);
    }

    #[test]
    fn expired_unsigned_and_exp_less_tokens_are_refused() {
        let verifier = verifier();
        let expired = token(json!({"name": "ann", "exp": now() - 60}));
        let error = verifier.verify(&expired).expect_err("expired");
        assert_eq!(error.message, "the token has expired");
        let no_exp = token(json!({"name": "ann"}));
        assert_eq!(
            verifier.verify(&no_exp).expect_err("no exp").code,
            "invalid_token"
        );
        // `alg: none`: a header and claims with an empty signature.
        let unsigned = format!(
            "{}.{}.",
            base64url(r#"{"alg":"none","typ":"JWT"}"#),
            base64url(&json!({"name": "ann", "exp": now() + 60}).to_string())
        );
        assert_eq!(
            verifier.verify(&unsigned).expect_err("none").status,
            StatusCode::UNAUTHORIZED
        );
    }

    fn base64url(text: &str) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let bytes = text.as_bytes();
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n =
                chunk.iter().fold(0u32, |n, b| (n << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
            for i in 0..=chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }
}
