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
//!
//! # Layout
//! - [`keys`]: the settings and the keys they name, checked at start.
//! - [`request`]: where a request carries its token; `401` and `403` answers.
//! - [`history_credentials`]: broadcast-sse's credentials for history.

mod history_credentials;
mod keys;
mod request;

pub use history_credentials::HistoryCredentials;
pub use keys::{AuthSettings, KeyError, LEEWAY_SECS, TOKEN_COOKIE, start_verifier};
use protocol::claims::RawClaims;
pub use protocol::claims::{Claims, Grant};
pub use request::{TokenSources, claims_of, forbidden, invalid_token, require_subscribe, token_of};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;

use crate::error::ApiError;

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
        let data = jsonwebtoken::decode::<Value>(token, key, validation).map_err(|e| {
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
        let raw = RawClaims::deserialize(&data.claims)
            .map_err(|e| invalid_token(format!("the token is not valid: {e}")))?;
        Ok(Claims::new(raw, data.claims))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::StatusCode;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use protocol::ChannelId;
    use serde_json::Value;
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
