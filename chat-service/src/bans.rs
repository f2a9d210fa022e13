//! Bans (ChatUp's): a name that may not post to a channel until a time. Stored in
//! sled next to history, so they survive a restart, and kept in memory too, so
//! the check every POST makes reads no storage on the HTTP worker. Bans are few
//! (an admin sets each) and expired ones are dropped as they are found.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::http::StatusCode;
use protocol::{ApiError, ChannelId};
use serde::Serialize;

/// Longest ban, in seconds (ten years).
pub const MAX_BAN_SECS: u64 = 10 * 365 * 86_400;

/// Ban expiries (seconds since the Unix epoch) by channel and name.
type InForce = HashMap<(ChannelId, String), u64>;

#[derive(Clone)]
pub struct Bans {
    tree: sled::Tree,
    /// A std lock: held for a map lookup or update, never across an `.await`.
    in_force: Arc<RwLock<InForce>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ban {
    pub name: String,
    pub channel: ChannelId,
    /// Seconds since the Unix epoch.
    pub expires_at: u64,
}

impl Bans {
    /// Loads the bans stored in `tree`.
    pub fn open(tree: sled::Tree) -> Result<Self, sled::Error> {
        let mut in_force = InForce::new();
        for entry in tree.iter() {
            let (key, value) = entry?;
            if let Some(channel_and_name) = split_key(&key) {
                in_force.insert(channel_and_name, decode(&value));
            }
        }
        Ok(Bans {
            tree,
            in_force: Arc::new(RwLock::new(in_force)),
        })
    }

    fn in_force(&self) -> std::sync::RwLockReadGuard<'_, InForce> {
        // The map is updated entry by entry: a panic cannot leave it half done.
        self.in_force
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn in_force_mut(&self) -> std::sync::RwLockWriteGuard<'_, InForce> {
        self.in_force
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Bans `name` on `channel` for `seconds` from now (replacing an earlier ban).
    pub fn ban(&self, channel: ChannelId, name: &str, seconds: u64) -> Result<Ban, sled::Error> {
        let expires_at = now().saturating_add(seconds);
        self.tree
            .insert(key(channel, name), &expires_at.to_be_bytes())?;
        self.in_force_mut()
            .insert((channel, name.to_string()), expires_at);
        Ok(Ban {
            name: name.to_string(),
            channel,
            expires_at,
        })
    }

    /// `403 banned` while `name` is banned on `channel`.
    pub fn check(&self, channel: ChannelId, name: &str) -> Result<(), ApiError> {
        let in_force = self.in_force();
        if in_force.is_empty() {
            return Ok(());
        }
        let Some(&expires_at) = in_force.get(&(channel, name.to_string())) else {
            return Ok(());
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
                    self.tree.remove(&key)?;
                    if let Some(channel_and_name) = split_key(&key) {
                        self.in_force_mut().remove(&channel_and_name);
                    }
                }
            }
        }
        Ok(bans)
    }

    /// Lifts a ban; `false` when there was none in force.
    pub fn lift(&self, channel: ChannelId, name: &str) -> Result<bool, sled::Error> {
        let removed = self.tree.remove(key(channel, name))?;
        self.in_force_mut().remove(&(channel, name.to_string()));
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
        (
            dir,
            Bans::open(db.open_tree("bans").expect("tree")).expect("bans"),
        )
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
    fn bans_in_force_are_loaded_again_on_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let channel = ChannelId::from_bytes([1; 16]);
        {
            let db = sled::Config::new().path(dir.path()).open().expect("open");
            let bans = Bans::open(db.open_tree("bans").expect("tree")).expect("bans");
            bans.ban(channel, "mallory", 60).expect("ban");
            db.flush().expect("flush");
        }
        let db = sled::Config::new().path(dir.path()).open().expect("reopen");
        let bans = Bans::open(db.open_tree("bans").expect("tree")).expect("bans");
        assert!(bans.check(channel, "mallory").is_err());
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
