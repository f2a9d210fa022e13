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
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use protocol::ChannelId;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::watch;

use crate::error::BroadcastError;
use crate::history::{HistoryError, HistorySource, PAGE};
use crate::hub::{Frame, Hub, ListenerGuard, Membership, Recent, Signals};
use crate::metrics::{self, STREAMS};
use crate::presence::Joined;
use crate::stream_slots::StreamSlot;
use protocol::message::stored_millis_of_frame;

pub mod cursor;

/// Frames coalesced into one write when a stream has several ready.
const MAX_CHUNK_BYTES: usize = 64 * 1024;
const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";
/// History answers that end before an id this node already delivered, tolerated
/// (with a growing pause) before the stream asks the client to reconnect.
const MAX_STALLS: u32 = 3;
const STALL_PAUSE: Duration = Duration::from_millis(100);

pub struct ClientStream {
    follows: Follows,
    hub: Hub,
    history: Arc<dyn HistorySource>,
    pending: VecDeque<Bytes>,
    pending_bytes: usize,
    /// Message events among `pending`, and where the first live one is (for
    /// the metrics, counted when the chunk is taken).
    pending_events: u32,
    first_live: Option<u32>,
    signals: watch::Receiver<Signals>,
    ended: bool,
    /// When the client's token expires (authentication on); boxed, so that a
    /// stream without one does not carry a timer.
    expiry: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The client address's stream slot, given back when the stream ends.
    _slot: Option<StreamSlot>,
    /// `?presence=1`: each channel's names across nodes, and those told so far
    /// (boxed: most streams do not follow presence).
    presence: Option<Box<[PresenceFeed]>>,
    _open: metrics::OpenStream,
}

/// The channels of a stream. A stream of one channel is what most clients open
/// and what an idle node holds by the thousand, so it costs no extra allocation.
enum Follows {
    /// `/channels/{c}/events`: each event's `id:` is the message's id.
    One(FollowedChannel),
    /// `/events?channel=…`: each event's `id:` is a cursor of every channel's
    /// last id ([`cursor`]).
    Many(Box<[FollowedChannel]>),
}

/// One channel of a stream: its place in the hub and how far the client got.
struct FollowedChannel {
    channel: ChannelId,
    ring: broadcast::Receiver<Frame>,
    /// The stream's place among the channel's listeners, until it ends.
    _listening: ListenerGuard,
    /// Id of the last message (or gap) of this channel written to the client.
    last_sent: Option<u64>,
    /// Catching up after `last_sent` until the recent buffer or history says we
    /// are current.
    catching_up: bool,
    /// Highest live id seen ahead of `last_sent`: the catch-up must get there.
    catch_up_to: Option<u64>,
    stalls: u32,
    /// This stream's place in the channel's presence, until it ends.
    _joined: Option<Joined>,
}

/// A channel a stream opens with: its membership and, for a resume, the last id
/// the client has.
pub struct Opening {
    pub channel: ChannelId,
    pub membership: Membership,
    pub resume_after: Option<u64>,
}

struct PresenceFeed {
    channel: ChannelId,
    names: watch::Receiver<Arc<BTreeSet<String>>>,
    told: Arc<BTreeSet<String>>,
}

impl FollowedChannel {
    fn new(opening: Opening) -> Self {
        let membership = opening.membership;
        FollowedChannel {
            channel: opening.channel,
            last_sent: opening.resume_after.or(membership.last_id_at_join),
            catching_up: opening.resume_after.is_some(),
            ring: membership.ring,
            _listening: membership.guard,
            catch_up_to: None,
            stalls: 0,
            _joined: None,
        }
    }
}

impl Follows {
    fn all(&self) -> &[FollowedChannel] {
        match self {
            Follows::One(follow) => std::slice::from_ref(follow),
            Follows::Many(follows) => follows,
        }
    }

    fn all_mut(&mut self) -> &mut [FollowedChannel] {
        match self {
            Follows::One(follow) => std::slice::from_mut(follow),
            Follows::Many(follows) => follows,
        }
    }

    /// The `id:` of an event sent now: the channel's last id on a one-channel
    /// stream, else the cursor of all channels.
    fn event_id(&self) -> String {
        match self {
            Follows::One(follow) => follow.last_sent.unwrap_or(0).to_string(),
            Follows::Many(follows) => cursor::render(
                follows
                    .iter()
                    .map(|follow| (follow.channel, follow.last_sent.unwrap_or(0))),
            ),
        }
    }

    /// The next frame (or ring error) of any channel, with the channel's index.
    async fn next_frame(&mut self) -> (usize, Result<Frame, RecvError>) {
        match self {
            Follows::One(follow) => (0, follow.ring.recv().await),
            Follows::Many(follows) if follows.is_empty() => std::future::pending().await,
            Follows::Many(follows) => {
                // Dropping the other receives loses nothing: a ring keeps its
                // frames until every receiver took them.
                let receives = follows
                    .iter_mut()
                    .map(|follow| Box::pin(follow.ring.recv()));
                let (received, index, _) = futures_util::future::select_all(receives).await;
                (index, received)
            }
        }
    }
}

impl ClientStream {
    /// A stream of one channel. `resume_after` is the client's `Last-Event-ID`;
    /// without one the stream starts with the next message this node delivers.
    pub fn new(
        channel: ChannelId,
        membership: Membership,
        hub: &Hub,
        history: Arc<dyn HistorySource>,
        resume_after: Option<u64>,
        retry_ms: u64,
    ) -> Self {
        let opening = Opening {
            channel,
            membership,
            resume_after,
        };
        Self::with_follows(
            Follows::One(FollowedChannel::new(opening)),
            hub,
            history,
            retry_ms,
        )
    }

    /// A stream of several channels, each resumed after its `resume_after` or,
    /// without one, from the last id the caller found (so every channel has a
    /// place in the cursor from the first event on).
    pub fn of_channels(
        openings: Vec<Opening>,
        hub: &Hub,
        history: Arc<dyn HistorySource>,
        retry_ms: u64,
    ) -> Self {
        let follows = openings.into_iter().map(FollowedChannel::new).collect();
        Self::with_follows(Follows::Many(follows), hub, history, retry_ms)
    }

    fn with_follows(
        follows: Follows,
        hub: &Hub,
        history: Arc<dyn HistorySource>,
        retry_ms: u64,
    ) -> Self {
        let mut stream = ClientStream {
            follows,
            hub: hub.clone(),
            history,
            pending: VecDeque::new(),
            pending_bytes: 0,
            pending_events: 0,
            first_live: None,
            signals: hub.signals(),
            ended: false,
            expiry: None,
            _slot: None,
            presence: None,
            _open: metrics::stream_opened(),
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
        self.expiry = Some(Box::pin(tokio::time::sleep(left)));
        self
    }

    pub fn holding(mut self, slot: Option<StreamSlot>) -> Self {
        self._slot = slot;
        self
    }

    /// Counts the stream in its channels' presence while it is open (`joined`,
    /// one per channel in order) and, with `names` (one per channel), tells it
    /// who is there now and then who joins and leaves (`event: presence`).
    pub fn present(
        mut self,
        joined: Vec<Joined>,
        names: Option<Vec<watch::Receiver<Arc<BTreeSet<String>>>>>,
    ) -> Self {
        for (follow, joined) in self.follows.all_mut().iter_mut().zip(joined) {
            follow._joined = Some(joined);
        }
        if let Some(names) = names {
            let channels = self.follows.all().iter().map(|follow| follow.channel);
            let feeds = channels.zip(names).map(|(channel, names)| PresenceFeed {
                channel,
                names,
                told: Arc::new(BTreeSet::new()),
            });
            self.presence = Some(feeds.collect());
            self.tell_presence();
        }
        self
    }

    /// Sends, per channel, the names that joined and left since the last
    /// presence event.
    fn tell_presence(&mut self) {
        let Some(feeds) = &mut self.presence else {
            return;
        };
        let mut events = Vec::new();
        for feed in feeds.iter_mut() {
            let now = feed.names.borrow_and_update().clone();
            let joined: Vec<&String> = now.difference(&feed.told).collect();
            let left: Vec<&String> = feed.told.difference(&now).collect();
            if joined.is_empty() && left.is_empty() && !feed.told.is_empty() {
                continue;
            }
            let data = serde_json::json!({
                "channel": feed.channel, "joined": joined, "left": left,
            });
            events.push(Bytes::from(format!("event: presence\ndata: {data}\n\n")));
            feed.told = now;
        }
        events.into_iter().for_each(|event| self.push(event));
    }

    fn end_if_expired(&mut self) {
        if self
            .expiry
            .as_ref()
            .is_some_and(|expiry| expiry.deadline() <= tokio::time::Instant::now())
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

    fn follow(&mut self, index: usize) -> &mut FollowedChannel {
        &mut self.follows.all_mut()[index]
    }

    /// The first channel still catching up, if any.
    fn catching_up_index(&self) -> Option<usize> {
        self.follows
            .all()
            .iter()
            .position(|follow| follow.catching_up)
    }

    /// A resume point above the channel's newest stored id cannot be served: the
    /// server's data was reset or restored, or the channel moved. The client is
    /// told with `event: reset` and gets the channel again from its oldest kept
    /// message, instead of silently missing ids up to its cursor.
    async fn reset_if_ahead(&mut self, index: usize) -> Result<(), HistoryError> {
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
            if let Some(index) = self.catching_up_index() {
                // Boxed: a step's state is not kept in every idle stream.
                if let Err(e) = Box::pin(self.catch_up_step(index)).await {
                    let channel = self.follow(index).channel;
                    log::warn!("ending a stream of {channel}: {e}");
                    self.ended = true;
                    self.push(reconnect_event(&e.0));
                }
                continue;
            }
            tokio::select! {
                biased;
                _ = self.signals.changed() => {
                    if !self.signals.borrow().shutting_down {
                        return Some(Bytes::from_static(KEEP_ALIVE));
                    }
                    self.ended = true;
                }
                _ = token_expired(&mut self.expiry) => self.expire(),
                _ = presence_changed(&mut self.presence) => self.tell_presence(),
                (index, received) = self.follows.next_frame() => self.receive(index, received),
            }
        }
    }

    fn receive(&mut self, index: usize, received: Result<Frame, RecvError>) {
        match received {
            Ok(frame) => {
                self.accept(index, frame);
                self.drain_ready_frames();
            }
            Err(RecvError::Lagged(_)) => self.fell_behind(index),
            Err(RecvError::Closed) => self.ended = true,
        }
    }

    /// Takes frames already in the rings without waiting, so a burst becomes
    /// one write.
    fn drain_ready_frames(&mut self) {
        for index in 0..self.follows.all().len() {
            while !self.follow(index).catching_up && self.pending_bytes < MAX_CHUNK_BYTES {
                match self.follow(index).ring.try_recv() {
                    Ok(frame) => self.accept(index, frame),
                    Err(TryRecvError::Lagged(_)) => self.fell_behind(index),
                    Err(_) => break,
                }
            }
        }
    }

    fn accept(&mut self, index: usize, frame: Frame) {
        let follow = self.follow(index);
        match follow.last_sent {
            Some(last) if frame.id <= last => {}
            // Ids were skipped: the recent buffer or history has them, and this
            // frame with them.
            Some(last) if frame.id > last.saturating_add(1) => {
                follow.catch_up_to = follow.catch_up_to.max(Some(frame.id));
                self.start_catching_up(index);
            }
            _ => {
                if self.first_live.is_none() {
                    // On a stream of several channels the cursor line comes first.
                    let id_lines = usize::from(matches!(self.follows, Follows::Many(_)));
                    self.first_live = u32::try_from(self.pending.len() + id_lines).ok();
                }
                self.send(index, frame);
            }
        }
    }

    fn send(&mut self, index: usize, frame: Frame) {
        self.follow(index).last_sent = Some(frame.id);
        self.pending_events += 1;
        match self.follows {
            Follows::One(_) => self.push(frame.bytes),
            Follows::Many(_) => {
                let id_line = Bytes::from(format!("id: {}\n", self.follows.event_id()));
                let rest = frame.bytes.slice(frame_fields_after_id(&frame.bytes)..);
                self.push(id_line);
                self.push(rest);
            }
        }
    }

    /// A frame sent while catching up.
    fn replay(&mut self, index: usize, frame: Frame) {
        STREAMS.replayed.increment(1);
        self.send(index, frame);
    }

    /// The ring ran past this channel: it catches up from the recent buffer or
    /// history.
    fn fell_behind(&mut self, index: usize) {
        STREAMS.slow_clients.increment(1);
        self.start_catching_up(index);
    }

    fn start_catching_up(&mut self, index: usize) {
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
    async fn catch_up_step(&mut self, index: usize) -> Result<(), HistoryError> {
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

    async fn catch_up_from_history(
        &mut self,
        index: usize,
        after: u64,
    ) -> Result<(), HistoryError> {
        let channel = self.follow(index).channel;
        let page = self.history.after(channel, after, PAGE).await?;
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
    async fn stall(&mut self, index: usize, target: u64) -> Result<(), HistoryError> {
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

    fn finish_catching_up(&mut self, index: usize) {
        let follow = self.follow(index);
        follow.catching_up = false;
        follow.catch_up_to = None;
        follow.stalls = 0;
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

/// Where a message frame's fields after its `id:` line start: a stream of
/// several channels writes its cursor in place of that line and shares the rest.
fn frame_fields_after_id(frame: &[u8]) -> usize {
    if !frame.starts_with(b"id: ") {
        return 0;
    }
    frame
        .iter()
        .position(|byte| *byte == b'\n')
        .map_or(0, |newline| newline + 1)
}

/// Tells the client that ids `from..=to` of `channel` no longer exist. The
/// `id:` (`to`, or the cursor with `to`) moves the browser's `Last-Event-ID`
/// past them, so a reconnect does not report them again.
fn gap_event(channel: ChannelId, from: u64, to: u64, id: &str) -> Bytes {
    Bytes::from(format!(
        "event: gap\nid: {id}\ndata: {{\"channel\":\"{channel}\",\"from\":{from},\"to\":{to}}}\n\n"
    ))
}

/// Tells the client that its cursor of `channel` is past the newest stored id
/// (`last_id`) and that the channel follows from its start. The `id:` (`0`, or
/// the cursor with `0`) moves the browser's `Last-Event-ID` back, so a reconnect
/// does not report the stale cursor again.
fn reset_event(channel: ChannelId, last_id: u64, id: &str) -> Bytes {
    Bytes::from(format!(
        "event: reset\nid: {id}\ndata: {{\"channel\":\"{channel}\",\"last_id\":{last_id}}}\n\n"
    ))
}

/// Waits until a channel's names change, or forever for a stream that does
/// not follow presence (or once the watcher is gone).
async fn presence_changed(feeds: &mut Option<Box<[PresenceFeed]>>) {
    let Some(feeds) = feeds else {
        return std::future::pending().await;
    };
    let changes = feeds.iter_mut().map(|feed| Box::pin(feed.names.changed()));
    let (changed, _, _) = futures_util::future::select_all(changes).await;
    if changed.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Waits until the token expires, or forever without one.
async fn token_expired(expiry: &mut Option<Pin<Box<tokio::time::Sleep>>>) {
    match expiry {
        Some(sleep) => sleep.as_mut().await,
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
