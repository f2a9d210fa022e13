//! Keys: `--jwt-secret` and `--jwt-public-key`, read and checked once at start.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Validation};

use super::{HistoryCredentials, Verifier};

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
