//! One client's event stream.
//!
//! The listener joins the channel's ring *before* anything is replayed (Mercure's
//! order), so nothing delivered during a replay is missed; every frame carries its
//! id and ids at or below the last one sent are skipped, so nothing is sent twice.
//! A resume (`Last-Event-ID`), a ring that ran past the listener (`Lagged`), or a
//! live id that jumps ahead switches the stream to catching up: from the hub's
//! recent frames when they reach back far enough, else from history, page by page,
//! before it goes live again. Ids that history no longer holds (retention trimmed
//! them) are announced once with an `event: gap` whose `id:` is the last missing
//! one, so a reconnecting browser does not ask for them again.
//!
//! # Memory per client
//! A stream holds at most one chunk of pending frames: a catch-up step reads one
//! page ([`PAGE`] frames, plus a gap event) and only once the previous chunk was
//! taken by the connection; live frames are gathered up to 64 KiB.
//! Frames are refcounted `Bytes` shared with the hub, so a frame costs a pointer
//! until several are joined into one write. A client that falls further behind
//! costs nothing more: it is caught up from the recent buffer or history at its own
//! pace. When it cannot be caught up (history unavailable, or history lacking ids
//! the node delivered), the stream ends with `event: reconnect` and the browser
//! resumes with its `Last-Event-ID`, losing nothing.

use std::collections::{BTreeSet, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use protocol::ChannelId;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::watch;

use crate::error::BroadcastError;
use crate::history::{HistoryError, HistorySource, PAGE};
use crate::hub::{Frame, Hub, Membership, Recent, Signals};
use crate::limits::StreamSlot;
use crate::metrics::{self, STREAMS};
use crate::presence::Joined;
use protocol::message::stored_millis_of_frame;

/// Frames coalesced into one write when a stream has several ready.
const MAX_CHUNK_BYTES: usize = 64 * 1024;
const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";
/// History answers that end before an id this node already delivered, tolerated
/// (with a growing pause) before the stream asks the client to reconnect.
const MAX_STALLS: u32 = 3;
const STALL_PAUSE: Duration = Duration::from_millis(100);

pub struct ClientStream {
    channel: ChannelId,
    membership: Membership,
    hub: Hub,
    history: Arc<dyn HistorySource>,
    /// Id of the last message (or gap) written to this client.
    last_sent: Option<u64>,
    /// Catching up after `last_sent` until the recent buffer or history says we are
    /// current.
    catching_up: bool,
    /// Highest live id seen ahead of `last_sent`: the catch-up must get there.
    catch_up_to: Option<u64>,
    stalls: u32,
    pending: VecDeque<Bytes>,
    pending_bytes: usize,
    /// Message events among `pending`, and where the first live one is (for
    /// the metrics, counted when the chunk is taken).
    pending_events: u32,
    first_live: Option<u32>,
    signals: watch::Receiver<Signals>,
    ended: bool,
    /// When the client's token expires (authentication on).
    expires_at: Option<tokio::time::Instant>,
    /// The client address's stream slot, given back when the stream ends.
    _slot: Option<StreamSlot>,
    /// This stream's place in the channel's presence, until it ends.
    _joined: Option<Joined>,
    /// `?presence=1`: the channel's names across nodes, and those told so far
    /// (boxed: most streams do not follow presence).
    presence: Option<Box<PresenceFeed>>,
}

struct PresenceFeed {
    names: watch::Receiver<Arc<BTreeSet<String>>>,
    told: Arc<BTreeSet<String>>,
}

impl ClientStream {
    /// `resume_after` is the client's `Last-Event-ID`; without one the stream starts
    /// with the next message this node delivers.
    pub fn new(
        channel: ChannelId,
        membership: Membership,
        hub: &Hub,
        history: Arc<dyn HistorySource>,
        resume_after: Option<u64>,
        retry_ms: u64,
    ) -> Self {
        let last_sent = resume_after.or(membership.last_id_at_join);
        let mut stream = ClientStream {
            channel,
            membership,
            hub: hub.clone(),
            history,
            last_sent,
            catching_up: resume_after.is_some(),
            catch_up_to: None,
            stalls: 0,
            pending: VecDeque::new(),
            pending_bytes: 0,
            pending_events: 0,
            first_live: None,
            signals: hub.signals(),
            ended: false,
            expires_at: None,
            _slot: None,
            _joined: None,
            presence: None,
        };
        stream.push(Bytes::from(format!("retry: {retry_ms}\n\n")));
        stream
    }

    /// Ends the stream, with `event: reconnect`, when the client's token expires
    /// (`exp`, seconds since the Unix epoch): it reconnects with a fresh token.
    pub fn expiring_at(mut self, exp: u64) -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let left = Duration::from_secs(exp).saturating_sub(now);
        self.expires_at = Some(tokio::time::Instant::now() + left);
        self
    }

    pub fn holding(mut self, slot: Option<StreamSlot>) -> Self {
        self._slot = slot;
        self
    }

    /// Counts the stream in its channel's presence while it is open and, with
    /// `names`, tells it who is there now and then who joins and leaves
    /// (`event: presence`).
    pub fn present(
        mut self,
        joined: Joined,
        names: Option<watch::Receiver<Arc<BTreeSet<String>>>>,
    ) -> Self {
        self._joined = Some(joined);
        if let Some(names) = names {
            self.presence = Some(Box::new(PresenceFeed {
                names,
                told: Arc::new(BTreeSet::new()),
            }));
            self.tell_presence();
        }
        self
    }

    /// Sends the names that joined and left since the last presence event.
    fn tell_presence(&mut self) {
        let Some(feed) = &mut self.presence else {
            return;
        };
        let now = feed.names.borrow_and_update().clone();
        let joined: Vec<&String> = now.difference(&feed.told).collect();
        let left: Vec<&String> = feed.told.difference(&now).collect();
        if joined.is_empty() && left.is_empty() && !feed.told.is_empty() {
            return;
        }
        let data = serde_json::json!({ "joined": joined, "left": left });
        let event = Bytes::from(format!("event: presence\ndata: {data}\n\n"));
        feed.told = now;
        self.push(event);
    }

    fn end_if_expired(&mut self) {
        if self
            .expires_at
            .is_some_and(|expires_at| expires_at <= tokio::time::Instant::now())
        {
            self.expire();
        }
    }

    fn expire(&mut self) {
        self.ended = true;
        self.push(reconnect_event("the token has expired"));
    }

    /// Reads the first step of a replay before the response starts, so an
    /// unreachable history is a `503` the client can see, not a silent empty stream.
    pub async fn prefetch(&mut self) -> Result<(), BroadcastError> {
        if self.catching_up {
            let unavailable = |e: HistoryError| BroadcastError::HistoryUnavailable(e.0);
            self.reset_if_ahead().await.map_err(unavailable)?;
            self.catch_up_step().await.map_err(unavailable)?;
        }
        Ok(())
    }

    /// A resume point above the channel's newest stored id cannot be served: the
    /// server's data was reset or restored, or the channel moved. The client is
    /// told with `event: reset` and gets the channel again from its oldest kept
    /// message, instead of silently missing ids up to its cursor.
    async fn reset_if_ahead(&mut self) -> Result<(), HistoryError> {
        let Some(cursor) = self.last_sent.filter(|cursor| *cursor > 0) else {
            return Ok(());
        };
        let delivered = self.hub.last_id(self.channel);
        if delivered.is_some_and(|delivered| delivered >= cursor) {
            return Ok(());
        }
        let newest = self.history.latest_id(self.channel).await?.unwrap_or(0);
        if newest < cursor {
            log::info!(
                "a stream of {} resumed from {cursor}, past the newest id {newest}: reset",
                self.channel
            );
            self.push(reset_event(newest));
            self.last_sent = Some(0);
        }
        Ok(())
    }

    /// The response body: chunks of complete SSE events.
    pub fn into_body(self) -> impl Stream<Item = Result<Bytes, Infallible>> {
        futures_util::stream::unfold(self, |mut stream| async move {
            let chunk = stream.next_chunk().await?;
            Some((Ok(chunk), stream))
        })
    }

    async fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            if !self.pending.is_empty() {
                return Some(self.take_pending());
            }
            if self.ended || self.signals.borrow().shutting_down {
                return None;
            }
            self.end_if_expired();
            if self.ended {
                continue;
            }
            if self.catching_up {
                // Boxed: a step's state is not kept in every idle stream.
                if let Err(e) = Box::pin(self.catch_up_step()).await {
                    log::warn!("ending a stream of {}: {e}", self.channel);
                    self.ended = true;
                    self.push(reconnect_event(&e.0));
                }
                continue;
            }
            let expiry = self.expires_at;
            tokio::select! {
                biased;
                _ = self.signals.changed() => {
                    if !self.signals.borrow().shutting_down {
                        return Some(Bytes::from_static(KEEP_ALIVE));
                    }
                    self.ended = true;
                }
                _ = sleep_until_some(expiry) => self.expire(),
                _ = presence_changed(&mut self.presence) => self.tell_presence(),
                received = self.membership.ring.recv() => self.receive(received),
            }
        }
    }

    fn receive(&mut self, received: Result<Frame, RecvError>) {
        match received {
            Ok(frame) => {
                self.accept(frame);
                self.drain_ready_frames();
            }
            Err(RecvError::Lagged(_)) => self.fell_behind(),
            Err(RecvError::Closed) => self.ended = true,
        }
    }

    /// Takes frames already in the ring without waiting, so a burst becomes one write.
    fn drain_ready_frames(&mut self) {
        while !self.catching_up && self.pending_bytes < MAX_CHUNK_BYTES {
            match self.membership.ring.try_recv() {
                Ok(frame) => self.accept(frame),
                Err(TryRecvError::Lagged(_)) => self.fell_behind(),
                Err(_) => break,
            }
        }
    }

    fn accept(&mut self, frame: Frame) {
        match self.last_sent {
            Some(last) if frame.id <= last => {}
            // Ids were skipped: the recent buffer or history has them, and this
            // frame with them.
            Some(last) if frame.id > last.saturating_add(1) => {
                self.catch_up_to = self.catch_up_to.max(Some(frame.id));
                self.start_catching_up();
            }
            _ => {
                if self.first_live.is_none() {
                    self.first_live = u32::try_from(self.pending.len()).ok();
                }
                self.send(frame);
            }
        }
    }

    fn send(&mut self, frame: Frame) {
        self.last_sent = Some(frame.id);
        self.pending_events += 1;
        self.push(frame.bytes);
    }

    /// A frame sent while catching up.
    fn replay(&mut self, frame: Frame) {
        STREAMS.replayed.increment(1);
        self.send(frame);
    }

    /// The ring ran past this stream: it catches up from the recent buffer or
    /// history.
    fn fell_behind(&mut self) {
        STREAMS.slow_clients.increment(1);
        self.start_catching_up();
    }

    fn start_catching_up(&mut self) {
        if self.last_sent.is_none() {
            // Joined before this node delivered anything: everything from the first
            // delivery on is owed.
            let first = self.hub.first_id(self.channel).unwrap_or(1);
            self.last_sent = Some(first.saturating_sub(1));
        }
        self.catching_up = true;
    }

    /// One step of a catch-up: a page from the recent buffer, else from history.
    async fn catch_up_step(&mut self) -> Result<(), HistoryError> {
        let after = self.last_sent.unwrap_or(0);
        match self.hub.recent_after(self.channel, after, PAGE) {
            Recent::Frames { frames, complete } => {
                frames.into_iter().for_each(|frame| self.replay(frame));
                if complete {
                    self.finish_catching_up();
                }
                Ok(())
            }
            Recent::Current => {
                self.finish_catching_up();
                Ok(())
            }
            Recent::Missing => self.catch_up_from_history(after).await,
        }
    }

    async fn catch_up_from_history(&mut self, after: u64) -> Result<(), HistoryError> {
        let page = self.history.after(self.channel, after, PAGE).await?;
        if let Some(first) = page
            .first()
            .filter(|first| first.id > after.saturating_add(1))
        {
            // Ids only disappear by retention trimming the oldest: these are gone.
            let to = first.id - 1;
            self.push(gap_event(after.saturating_add(1), to));
            self.last_sent = Some(to);
        }
        let short = page.len() < PAGE;
        for message in &page {
            if self.last_sent.is_none_or(|last| message.id > last) {
                self.replay(Frame::from_message(message));
            }
        }
        if !short {
            return Ok(());
        }
        match self.catch_up_to {
            Some(target) if self.last_sent.unwrap_or(0) < target => self.stall(target).await,
            _ => {
                self.finish_catching_up();
                Ok(())
            }
        }
    }

    /// History ended before an id this node delivered: it may not show it yet. Ask
    /// again after a pause, a few times, then let the client reconnect.
    async fn stall(&mut self, target: u64) -> Result<(), HistoryError> {
        self.stalls += 1;
        if self.stalls > MAX_STALLS {
            return Err(HistoryError(format!(
                "history does not reach id {target} of a live message"
            )));
        }
        tokio::time::sleep(STALL_PAUSE * self.stalls).await;
        Ok(())
    }

    fn finish_catching_up(&mut self) {
        self.catching_up = false;
        self.catch_up_to = None;
        self.stalls = 0;
    }

    fn push(&mut self, bytes: Bytes) {
        self.pending_bytes += bytes.len();
        self.pending.push_back(bytes);
    }

    /// Counts the message events of the chunk being taken and, now and then,
    /// the delivery lag of its first live message.
    fn count_written(&mut self) {
        if self.pending_events > 0 {
            metrics::count_events_sent(self.pending_events);
            self.pending_events = 0;
        }
        let Some(first_live) = self.first_live.take() else {
            return;
        };
        if metrics::delivery_lag_sample_due() {
            let frame = self.pending.get(first_live as usize);
            let stored = frame.and_then(|frame| stored_millis_of_frame(frame));
            if let Some(stored_ms) = stored {
                metrics::record_delivery_lag(stored_ms);
            }
        }
    }

    /// One chunk of everything pending; a single frame is passed on without a copy.
    fn take_pending(&mut self) -> Bytes {
        self.count_written();
        self.pending_bytes = 0;
        if self.pending.len() == 1 {
            return self.pending.pop_front().unwrap_or_default();
        }
        let total = self.pending.iter().map(Bytes::len).sum();
        let mut chunk = BytesMut::with_capacity(total);
        for bytes in self.pending.drain(..) {
            chunk.extend_from_slice(&bytes);
        }
        chunk.freeze()
    }
}

/// Tells the client that ids `from..=to` no longer exist. The `id:` moves the
/// browser's `Last-Event-ID` past them, so a reconnect does not report them again.
fn gap_event(from: u64, to: u64) -> Bytes {
    Bytes::from(format!(
        "event: gap\nid: {to}\ndata: {{\"from\":{from},\"to\":{to}}}\n\n"
    ))
}

/// Tells the client that its cursor is past the newest stored id (`last_id`) and
/// that the channel follows from its start. `id: 0` moves the browser's
/// `Last-Event-ID` back, so a reconnect does not report the stale cursor again.
fn reset_event(last_id: u64) -> Bytes {
    Bytes::from(format!(
        "event: reset\nid: 0\ndata: {{\"last_id\":{last_id}}}\n\n"
    ))
}

/// Waits until the channel's names change, or forever for a stream that does
/// not follow presence (or once the watcher is gone).
async fn presence_changed(feed: &mut Option<Box<PresenceFeed>>) {
    match feed {
        Some(feed) => {
            if feed.names.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

/// Waits until `deadline`, or forever without one.
async fn sleep_until_some(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Tells the client to reconnect (its `Last-Event-ID` makes that lossless) when the
/// stream cannot be kept complete right now.
fn reconnect_event(reason: &str) -> Bytes {
    let data = serde_json::json!({ "reason": reason });
    Bytes::from(format!("event: reconnect\ndata: {data}\n\n"))
}

#[cfg(test)]
mod tests;
