//! Catching a channel up: from the hub's recent frames when they reach back
//! far enough, else from history page by page (announcing ids retention
//! removed with `event: gap`, and a cursor past the newest id with
//! `event: reset`), until the stream can go live again.

use std::time::Duration;

use super::events::{gap_event, reset_event};
use super::{ClientStream, Frame};
use crate::error::BroadcastError;
use crate::history::{HistoryError, PAGE};
use crate::hub::Recent;
use crate::metrics::STREAMS;

/// History answers that end before an id this node already delivered, tolerated
/// (with a growing pause) before the stream asks the client to reconnect.
pub(super) const MAX_STALLS: u32 = 3;
const STALL_PAUSE: Duration = Duration::from_millis(100);

impl ClientStream {
    /// Reads the first step of a replay before the response starts, so an
    /// unreachable history is a `503` the client can see, not a silent empty stream.
    pub async fn prefetch(&mut self) -> Result<(), BroadcastError> {
        let unavailable = |e: HistoryError| BroadcastError::HistoryUnavailable(e.0);
        for index in 0..self.follows.all().len() {
            if self.follows.all()[index].catching_up {
                self.reset_if_ahead(index).await.map_err(unavailable)?;
            }
        }
        if let Some(index) = self.catching_up_index() {
            self.catch_up_step(index).await.map_err(unavailable)?;
        }
        Ok(())
    }

    /// The first channel still catching up, if any.
    pub(super) fn catching_up_index(&self) -> Option<usize> {
        self.follows
            .all()
            .iter()
            .position(|follow| follow.catching_up)
    }

    /// A resume point above the channel's newest stored id cannot be served: the
    /// server's data was reset or restored, or the channel moved. The client is
    /// told with `event: reset` and gets the channel again from its oldest kept
    /// message, instead of silently missing ids up to its cursor.
    pub(super) async fn reset_if_ahead(&mut self, index: usize) -> Result<(), HistoryError> {
        let follow = self.follow(index);
        let channel = follow.channel;
        let Some(cursor) = follow.last_sent.filter(|cursor| *cursor > 0) else {
            return Ok(());
        };
        let delivered = self.hub.last_id(channel);
        if delivered.is_some_and(|delivered| delivered >= cursor) {
            return Ok(());
        }
        let newest = self.history.latest_id(channel).await?.unwrap_or(0);
        if newest < cursor {
            log::info!(
                "a stream of {channel} resumed from {cursor}, past the newest id {newest}: reset"
            );
            self.follow(index).last_sent = Some(0);
            let event = reset_event(channel, newest, &self.follows.event_id());
            self.push(event);
        }
        Ok(())
    }

    /// The ring ran past this channel: it catches up from the recent buffer or
    /// history.
    pub(super) fn fell_behind(&mut self, index: usize) {
        STREAMS.slow_clients.increment(1);
        self.start_catching_up(index);
    }

    pub(super) fn start_catching_up(&mut self, index: usize) {
        let channel = self.follow(index).channel;
        if self.follow(index).last_sent.is_none() {
            // Joined before this node delivered anything: everything from the first
            // delivery on is owed.
            let first = self.hub.first_id(channel).unwrap_or(1);
            self.follow(index).last_sent = Some(first.saturating_sub(1));
        }
        self.follow(index).catching_up = true;
    }

    /// One step of a catch-up: a page from the recent buffer, else from history.
    pub(super) async fn catch_up_step(&mut self, index: usize) -> Result<(), HistoryError> {
        let follow = self.follow(index);
        let (channel, after) = (follow.channel, follow.last_sent.unwrap_or(0));
        match self.hub.recent_after(channel, after, PAGE) {
            Recent::Frames { frames, complete } => {
                frames
                    .into_iter()
                    .for_each(|frame| self.replay(index, frame));
                if complete {
                    self.finish_catching_up(index);
                }
                Ok(())
            }
            Recent::Current => {
                self.finish_catching_up(index);
                Ok(())
            }
            Recent::Missing => self.catch_up_from_history(index, after).await,
        }
    }

    pub(super) async fn catch_up_from_history(
        &mut self,
        index: usize,
        after: u64,
    ) -> Result<(), HistoryError> {
        let channel = self.follow(index).channel;
        // Read after joining the channel: everything delivered before the
        // stream listened is at most this.
        let delivered = self.hub.last_id(channel);
        let page = self
            .history
            .after_delivered(channel, after, PAGE, delivered)
            .await?;
        if let Some(first) = page
            .first()
            .filter(|first| first.id > after.saturating_add(1))
        {
            // Ids only disappear by retention trimming the oldest: these are gone.
            let to = first.id - 1;
            self.follow(index).last_sent = Some(to);
            let event = gap_event(
                channel,
                after.saturating_add(1),
                to,
                &self.follows.event_id(),
            );
            self.push(event);
        }
        let short = page.len() < PAGE;
        for message in &page {
            if self
                .follow(index)
                .last_sent
                .is_none_or(|last| message.id > last)
            {
                self.replay(index, Frame::from_message(message));
            }
        }
        if !short {
            return Ok(());
        }
        let follow = self.follow(index);
        match follow.catch_up_to {
            Some(target) if follow.last_sent.unwrap_or(0) < target => {
                self.stall(index, target).await
            }
            _ => {
                self.finish_catching_up(index);
                Ok(())
            }
        }
    }

    /// History ended before an id this node delivered: it may not show it yet. Ask
    /// again after a pause, a few times, then let the client reconnect.
    pub(super) async fn stall(&mut self, index: usize, target: u64) -> Result<(), HistoryError> {
        let follow = self.follow(index);
        follow.stalls += 1;
        if follow.stalls > MAX_STALLS {
            return Err(HistoryError(format!(
                "history does not reach id {target} of a live message"
            )));
        }
        tokio::time::sleep(STALL_PAUSE * follow.stalls).await;
        Ok(())
    }

    pub(super) fn finish_catching_up(&mut self, index: usize) {
        let follow = self.follow(index);
        follow.catching_up = false;
        follow.catch_up_to = None;
        follow.stalls = 0;
    }
}
