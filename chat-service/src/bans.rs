//! Bans (ChatUp's): a name that may not post to a channel until a time. Stored
//! by the store next to history, so they survive a restart, and kept in memory
//! too, so the check every POST makes reads no storage on the HTTP worker. Bans
//! are few (an admin sets each) and expired ones are dropped as they are found.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::http::StatusCode;
use protocol::ChannelId;
use serde::Serialize;
use server::error::ApiError;

use crate::store::{Store, StoreError};

/// Longest ban, in seconds (ten years).
pub const MAX_BAN_SECS: u64 = 10 * 365 * 86_400;

/// Ban expiries (seconds since the Unix epoch) by channel and name.
type InForce = HashMap<(ChannelId, String), u64>;

#[derive(Clone)]
pub struct Bans {
    /// Where bans are kept; the store's writer makes every change.
    store: Store,
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
    /// Loads the bans the store holds (a read of the store: call it where
    /// blocking is allowed, as at start-up).
    pub fn open(store: Store) -> Result<Self, sled::Error> {
        let in_force = store
            .bans()?
            .into_iter()
            .map(|(channel, name, expires_at)| ((channel, name), expires_at))
            .collect();
        Ok(Bans {
            store,
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

    /// Bans `name` on `channel` for `seconds` from now (replacing an earlier
    /// ban); answers once the ban is on disk.
    pub async fn ban(
        &self,
        channel: ChannelId,
        name: &str,
        seconds: u64,
    ) -> Result<Ban, StoreError> {
        let expires_at = now().saturating_add(seconds);
        self.store.set_ban(channel, name, Some(expires_at)).await?;
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

    /// Every ban still in force, by channel and name; expired ones are
    /// removed on the way, from memory and from the store.
    pub async fn list(&self) -> Result<Vec<Ban>, StoreError> {
        let now = now();
        let expired: Vec<(ChannelId, String)> = {
            let mut in_force = self.in_force_mut();
            let expired = in_force
                .iter()
                .filter(|(_, expires_at)| **expires_at <= now)
                .map(|(key, _)| key.clone())
                .collect();
            in_force.retain(|_, expires_at| *expires_at > now);
            expired
        };
        for (channel, name) in expired {
            self.store.set_ban(channel, &name, None).await?;
        }
        let mut bans: Vec<Ban> = self
            .in_force()
            .iter()
            .map(|((channel, name), expires_at)| Ban {
                name: name.clone(),
                channel: *channel,
                expires_at: *expires_at,
            })
            .collect();
        bans.sort_by(|a, b| (a.channel, &a.name).cmp(&(b.channel, &b.name)));
        Ok(bans)
    }

    /// Lifts a ban; `false` when there was none in force. Answers once the
    /// lift is on disk.
    pub async fn lift(&self, channel: ChannelId, name: &str) -> Result<bool, StoreError> {
        let expired_at = self.store.set_ban(channel, name, None).await?;
        self.in_force_mut().remove(&(channel, name.to_string()));
        Ok(expired_at > now())
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::open;

    #[tokio::test]
    async fn a_ban_blocks_its_name_on_its_channel_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _announcements) = open(dir.path());
        let bans = Bans::open(store).expect("bans");
        let channel = ChannelId::from_bytes([1; 16]);
        bans.ban(channel, "mallory", 60).await.expect("ban");
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
        assert_eq!(bans.list().await.expect("list").len(), 1);
        assert!(bans.lift(channel, "mallory").await.expect("lift"));
        assert!(bans.check(channel, "mallory").is_ok());
        assert!(!bans.lift(channel, "mallory").await.expect("lift again"));
    }

    #[tokio::test]
    async fn bans_in_force_are_loaded_again_on_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let channel = ChannelId::from_bytes([1; 16]);
        {
            let (store, _announcements) = open(dir.path());
            let bans = Bans::open(store).expect("bans");
            bans.ban(channel, "mallory", 60).await.expect("ban");
        }
        let (store, _announcements) = open(dir.path());
        let bans = Bans::open(store).expect("bans");
        assert!(bans.check(channel, "mallory").is_err());
    }

    #[tokio::test]
    async fn an_expired_ban_no_longer_blocks_and_is_not_listed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _announcements) = open(dir.path());
        let bans = Bans::open(store.clone()).expect("bans");
        let channel = ChannelId::from_bytes([1; 16]);
        bans.ban(channel, "mallory", 0).await.expect("ban");
        assert!(bans.check(channel, "mallory").is_ok());
        assert!(bans.list().await.expect("list").is_empty());
        assert!(
            store.bans().expect("stored bans").is_empty(),
            "an expired ban is removed from the store too"
        );
    }
}
