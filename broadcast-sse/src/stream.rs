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
//!
//! Signals (typing, read markers) come on a ring of their own and are written
//! as they come, between messages: no `id:`, so they never move the client's
//! `Last-Event-ID` or this stream's cursor, and a resume never replays them.
//! A stream that falls behind the signal ring skips the oldest signals.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use protocol::ChannelId;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::watch;

use crate::history::HistorySource;
use crate::hub::{Frame, Hub, Membership, Signals};
use crate::metrics::{self, STREAMS};
use crate::stream_slots::StreamSlot;
use protocol::message::stored_millis_of_frame;

mod catch_up;
pub mod cursor;
mod events;
mod expiry;
mod follows;
mod presence_feed;

use events::{frame_fields_after_id, reconnect_event};
use expiry::token_expired;
pub use follows::Opening;
use follows::{FollowedChannel, Follows, Next};
use presence_feed::{PresenceFeed, presence_changed};

/// Frames coalesced into one write when a stream has several ready.
const MAX_CHUNK_BYTES: usize = 64 * 1024;
const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

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
    /// When this node made the first live frame among `pending`.
    first_live_made: Option<std::time::Instant>,
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
            first_live_made: None,
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

    pub fn holding(mut self, slot: Option<StreamSlot>) -> Self {
        self._slot = slot;
        self
    }

    fn follow(&mut self, index: usize) -> &mut FollowedChannel {
        &mut self.follows.all_mut()[index]
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
                next = self.follows.next() => match next {
                    Next::Frame(index, received) => self.receive(index, received),
                    Next::Signal(received) => self.receive_signal(received),
                },
            }
        }
    }

    /// A signal goes out as it is; one missed while behind stays missed.
    fn receive_signal(&mut self, received: Result<Bytes, RecvError>) {
        match received {
            Ok(event) => self.push(event),
            Err(RecvError::Lagged(_)) => {}
            Err(RecvError::Closed) => self.ended = true,
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
                    self.first_live_made = Some(frame.made);
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
        let made = self.first_live_made.take();
        if metrics::delivery_lag_sample_due() {
            let frame = self.pending.get(first_live as usize);
            let stored = frame.and_then(|frame| stored_millis_of_frame(frame));
            if let Some(stored_ms) = stored {
                metrics::record_delivery_lag(stored_ms);
            }
            if let Some(made) = made {
                metrics::record_fanout(made.elapsed());
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

#[cfg(test)]
mod tests;
