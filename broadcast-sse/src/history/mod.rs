//! Where replays and gap backfills read history from: the chat-service's HTTP API,
//! or (in the all-in-one binary) the store itself; concurrent reads of the same
//! page are one read ([`SharedReads`]).

mod shared;

pub use shared::SharedReads;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use protocol::{ChannelId, Message};
use serde::Deserialize;
use server::auth::HistoryCredentials;

/// Messages per history request; also bounds what one stream holds in memory.
pub const PAGE: usize = 200;

pub type HistoryFuture = Pin<Box<dyn Future<Output = Result<Vec<Message>, HistoryError>> + Send>>;
pub type LatestFuture = Pin<Box<dyn Future<Output = Result<Option<u64>, HistoryError>> + Send>>;

#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct HistoryError(pub String);

/// A source of a channel's messages with ids greater than `after`, ascending.
pub trait HistorySource: Send + Sync + 'static {
    fn after(&self, channel: ChannelId, after: u64, limit: usize) -> HistoryFuture;

    /// The same page, for a stream that joined the channel when this node had
    /// delivered up to `delivered` on it: the answer holds at least every
    /// message up to that id. A read of its own always does; [`SharedReads`]
    /// joins a read in flight only when it does too.
    fn after_delivered(
        &self,
        channel: ChannelId,
        after: u64,
        limit: usize,
        delivered: Option<u64>,
    ) -> HistoryFuture {
        let _ = delivered;
        self.after(channel, after, limit)
    }

    /// The newest stored id of a channel (`None`: nothing stored). The hub asks when
    /// the broker connection drops on a channel it has not delivered anything on
    /// yet, so the reconnect can backfill what its listeners missed. A source that
    /// cannot tell leaves such channels to start again with the next live message.
    fn latest_id(&self, channel: ChannelId) -> LatestFuture {
        let _ = channel;
        Box::pin(std::future::ready(Err(HistoryError(
            "this history cannot tell its newest id".into(),
        ))))
    }
}

/// Reads history from a chat-service: `GET {base}/channels/{c}/messages?raw=1&after=&limit=`
/// (the log as written: streams replay edits and deletions as entries).
pub struct HttpHistory {
    client: reqwest::Client,
    base: String,
    credentials: HistoryCredentials,
}

#[derive(Deserialize)]
struct HistoryPage {
    messages: Vec<Message>,
}

impl HttpHistory {
    pub fn new(base: &str, credentials: HistoryCredentials) -> Result<Self, HistoryError> {
        server::tls::install_crypto_provider();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(64)
            .build()
            .map_err(|e| HistoryError(format!("cannot build the history client: {e}")))?;
        Ok(HttpHistory {
            client,
            base: base.trim_end_matches('/').to_string(),
            credentials,
        })
    }
}

impl HttpHistory {
    fn messages(&self, channel: ChannelId) -> reqwest::RequestBuilder {
        let request = self
            .client
            .get(format!("{}/channels/{channel}/messages", self.base))
            .query(&[("raw", "1")]);
        match self.credentials.token() {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }
}

impl HistorySource for HttpHistory {
    fn after(&self, channel: ChannelId, after: u64, limit: usize) -> HistoryFuture {
        let request = self
            .messages(channel)
            .query(&[("after", after), ("limit", limit as u64)]);
        Box::pin(fetch_page(request))
    }

    /// Without `after`, the history API answers the latest messages.
    fn latest_id(&self, channel: ChannelId) -> LatestFuture {
        let request = self.messages(channel).query(&[("limit", 1u64)]);
        Box::pin(async move {
            let page = fetch_page(request).await?;
            Ok(page.iter().map(|message| message.id).max())
        })
    }
}

async fn fetch_page(request: reqwest::RequestBuilder) -> Result<Vec<Message>, HistoryError> {
    let response = request
        .send()
        .await
        .map_err(|e| HistoryError(format!("history request failed: {e}")))?;
    let status = response.status();
    if !status.is_success() {
        return Err(HistoryError(format!("history answered {status}")));
    }
    let page: HistoryPage = response
        .json()
        .await
        .map_err(|e| HistoryError(format!("history answer unreadable: {e}")))?;
    Ok(page.messages)
}
