//! Who may do what: the chat-service's use of the shared JWT rules
//! ([`server::auth`]). With no key configured everything is allowed.

use std::sync::Arc;

use actix_web::HttpRequest;
use protocol::ChannelId;
use server::auth::{Claims, TokenSources, Verifier, claims_of, forbidden, require_subscribe};
use server::error::ApiError;

#[derive(Clone, Default)]
pub struct Access {
    verifier: Option<Arc<Verifier>>,
}

/// What a publisher's token says about the message it posts.
#[derive(Debug, Default)]
pub struct Publisher {
    /// The author to store (the body's `author` is ignored when a token is
    /// present, unless it is an admin's).
    pub name: Option<String>,
    pub user: Option<serde_json::Value>,
    /// An admin token (`admin: true`) posts as the author the body names, and as
    /// its own `name` only when the body names none: how a service relays the
    /// posts of others (MQTT posts forwarded to the shard that owns a channel).
    pub names_author: bool,
    /// The token's payload, as the publish hook is shown it.
    pub claims: Option<serde_json::Value>,
}

impl Publisher {
    /// The author to store, given the one the body names.
    pub fn author(self, named: Option<String>) -> Option<String> {
        if self.names_author {
            named.or(self.name)
        } else {
            self.name.or(named)
        }
    }
}

impl Access {
    pub fn new(verifier: Option<Arc<Verifier>>) -> Self {
        Access { verifier }
    }

    pub fn is_on(&self) -> bool {
        self.verifier.is_some()
    }

    /// Publishing needs `Authorization: Bearer` with the channel in `channels` and
    /// a `name`.
    pub fn publisher(&self, req: &HttpRequest, channel: ChannelId) -> Result<Publisher, ApiError> {
        let Some(claims) = self.claims(req, TokenSources::Header)? else {
            return Ok(Publisher::default());
        };
        if !claims.publish.allows(channel) {
            return Err(forbidden(
                "forbidden_channel",
                format!("the token does not allow posting to channel {channel}"),
            ));
        }
        if claims.admin {
            return Ok(Publisher {
                name: claims.name,
                user: claims.user,
                names_author: true,
                claims: Some(claims.payload),
            });
        }
        let Some(name) = claims.name else {
            return Err(forbidden(
                "token_without_name",
                "the token has no `name` claim to post as".into(),
            ));
        };
        Ok(Publisher {
            name: Some(name),
            user: claims.user,
            names_author: false,
            claims: Some(claims.payload),
        })
    }

    /// Editing or deleting a message needs what posting to its channel needs,
    /// or an admin token (`admin: true`), which may moderate every channel.
    pub fn reviser(&self, req: &HttpRequest, channel: ChannelId) -> Result<Publisher, ApiError> {
        match self.claims(req, TokenSources::Header)? {
            Some(claims) if claims.admin => Ok(Publisher {
                name: claims.name,
                user: claims.user,
                names_author: true,
                claims: Some(claims.payload),
            }),
            _ => self.publisher(req, channel),
        }
    }

    /// Reading history needs the channel in `subscribe`, from the header, the
    /// `access_token` query parameter or the `crier_token` cookie.
    pub fn reader(&self, req: &HttpRequest, channel: ChannelId) -> Result<(), ApiError> {
        match self.claims(req, TokenSources::HeaderQueryOrCookie)? {
            Some(claims) => require_subscribe(&claims, channel),
            None => Ok(()),
        }
    }

    /// The admin API needs `admin: true`. Returns the admin's claims when
    /// authentication is on.
    pub fn admin(&self, req: &HttpRequest) -> Result<Option<Claims>, ApiError> {
        let claims = self.claims(req, TokenSources::Header)?;
        match claims {
            Some(claims) if !claims.admin => Err(forbidden(
                "not_admin",
                "this needs a token with `admin: true`".into(),
            )),
            claims => Ok(claims),
        }
    }

    fn claims(&self, req: &HttpRequest, sources: TokenSources) -> Result<Option<Claims>, ApiError> {
        claims_of(self.verifier.as_deref(), req, sources)
    }
}
