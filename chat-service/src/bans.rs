//! Bans (ChatUp's): a name that may not post to a channel until a time. Stored in
//! sled next to history, so they survive a restart.

use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::http::StatusCode;
use protocol::{ApiError, ChannelId};
use serde::Serialize;

/// Longest ban, in seconds (ten years).
pub const MAX_BAN_SECS: u64 = 10 * 365 * 86_400;

#[derive(Clone)]
pub struct Bans {
    tree: sled::Tree,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ban {
    pub name: String,
    pub channel: ChannelId,
    /// Seconds since the Unix epoch.
    pub expires_at: u64,
}

impl Bans {
    pub fn new(tree: sled::Tree) -> Self {
        Bans { tree }
    }

    /// Bans `name` on `channel` for `seconds` from now (replacing an earlier ban).
    pub fn ban(&self, channel: ChannelId, name: &str, seconds: u64) -> Result<Ban, sled::Error> {
        let expires_at = now().saturating_add(seconds);
        self.tree
            .insert(key(channel, name), &expires_at.to_be_bytes())?;
        Ok(Ban {
            name: name.to_string(),
            channel,
            expires_at,
        })
    }

    /// `403 banned` while `name` is banned on `channel`.
    pub fn check(&self, channel: ChannelId, name: &str) -> Result<(), ApiError> {
        let expires_at = match self.tree.get(key(channel, name)) {
            Ok(Some(value)) => decode(&value),
            Ok(None) => return Ok(()),
            Err(e) => {
                log::error!("cannot read bans: {e}");
                return Err(ApiError::from_status(StatusCode::INTERNAL_SERVER_ERROR));
            }
        };
        let now = now();
        if expires_at <= now {
            return Ok(());
        }
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "banned",
            format!(
                "{name} may not post to this channel for {} more seconds",
                expires_at - now
            ),
        ))
    }

    /// Every ban still in force; expired ones are removed on the way.
    pub fn list(&self) -> Result<Vec<Ban>, sled::Error> {
        let now = now();
        let mut bans = Vec::new();
        for entry in self.tree.iter() {
            let (key, value) = entry?;
            let expires_at = decode(&value);
            match split_key(&key) {
                Some((channel, name)) if expires_at > now => bans.push(Ban {
                    name,
                    channel,
                    expires_at,
                }),
                _ => {
                    self.tree.remove(key)?;
                }
            }
        }
        Ok(bans)
    }

    /// Lifts a ban; `false` when there was none in force.
    pub fn lift(&self, channel: ChannelId, name: &str) -> Result<bool, sled::Error> {
        let removed = self.tree.remove(key(channel, name))?;
        Ok(removed.is_some_and(|value| decode(&value) > now()))
    }
}

fn key(channel: ChannelId, name: &str) -> Vec<u8> {
    let mut key = channel.as_bytes().to_vec();
    key.extend_from_slice(name.as_bytes());
    key
}

fn split_key(key: &[u8]) -> Option<(ChannelId, String)> {
    let channel: [u8; 16] = key.get(..16)?.try_into().ok()?;
    let name = String::from_utf8(key.get(16..)?.to_vec()).ok()?;
    Some((ChannelId::from_bytes(channel), name))
}

fn decode(value: &[u8]) -> u64 {
    value.try_into().map(u64::from_be_bytes).unwrap_or(0)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bans() -> (tempfile::TempDir, Bans) {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::Config::new().path(dir.path()).open().expect("open");
        (dir, Bans::new(db.open_tree("bans").expect("tree")))
    }

    #[test]
    fn a_ban_blocks_its_name_on_its_channel_only() {
        let (_dir, bans) = bans();
        let channel = ChannelId::from_bytes([1; 16]);
        bans.ban(channel, "mallory", 60).expect("ban");
        let error = bans.check(channel, "mallory").expect_err("banned");
        assert_eq!(
            (error.status, error.code.as_ref()),
            (StatusCode::FORBIDDEN, "banned")
        );
        assert!(bans.check(channel, "ann").is_ok());
        assert!(
            bans.check(ChannelId::from_bytes([2; 16]), "mallory")
                .is_ok()
        );
        assert_eq!(bans.list().expect("list").len(), 1);
        assert!(bans.lift(channel, "mallory").expect("lift"));
        assert!(bans.check(channel, "mallory").is_ok());
        assert!(!bans.lift(channel, "mallory").expect("lift again"));
    }

    #[test]
    fn an_expired_ban_no_longer_blocks_and_is_not_listed() {
        let (_dir, bans) = bans();
        let channel = ChannelId::from_bytes([1; 16]);
        bans.ban(channel, "mallory", 0).expect("ban");
        assert!(bans.check(channel, "mallory").is_ok());
        assert!(bans.list().expect("list").is_empty());
    }
}
