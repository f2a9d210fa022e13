//! One client's event stream.
//!
//! The listener joins the channel's ring *before* history is read (Mercure's order),
//! so nothing published during a replay is missed; every frame carries its id and
//! ids at or below the last one sent are skipped, so nothing is sent twice. A live
//! id that jumps ahead, or a ring that ran past the listener (`Lagged`), switches the
//! stream to catching up from history, page by page, before it goes live again.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use protocol::ChannelId;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::watch;

use crate::error::BroadcastError;
use crate::hub::{Frame, Hub, Membership};
use crate::replay::{HistorySource, PAGE};

/// Frames coalesced into one write when a stream has several ready.
const MAX_CHUNK_BYTES: usize = 64 * 1024;
const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

pub struct ClientStream {
    channel: ChannelId,
    membership: Membership,
    hub: Hub,
    history: Arc<dyn HistorySource>,
    /// Id of the last message written to this client.
    last_sent: Option<u64>,
    /// Reading history after `last_sent` until a short page says we are current.
    catching_up: bool,
    pending: VecDeque<Bytes>,
    pending_bytes: usize,
    heartbeat: watch::Receiver<u64>,
    shutdown: watch::Receiver<bool>,
    ended: bool,
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
            pending: VecDeque::new(),
            pending_bytes: 0,
            heartbeat: hub.heartbeats(),
            shutdown: hub.shutdown_signal(),
            ended: false,
        };
        stream.push(Bytes::from(format!("retry: {retry_ms}\n\n")));
        stream
    }

    /// Reads the first page of a replay before the response starts, so an
    /// unreachable history is a `503` the client can see, not a silent empty stream.
    pub async fn prefetch(&mut self) -> Result<(), BroadcastError> {
        if self.catching_up {
            self.catch_up_page()
                .await
                .map_err(|e| BroadcastError::HistoryUnavailable(e.0))?;
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
            if self.ended || *self.shutdown.borrow() {
                return None;
            }
            if self.catching_up {
                if let Err(e) = self.catch_up_page().await {
                    log::warn!("ending a stream of {}: {e}", self.channel);
                    self.ended = true;
                    self.push(reconnect_event(&e.0));
                }
                continue;
            }
            tokio::select! {
                biased;
                _ = self.shutdown.changed() => self.ended = true,
                received = self.membership.ring.recv() => self.receive(received),
                _ = self.heartbeat.changed() => return Some(Bytes::from_static(KEEP_ALIVE)),
            }
        }
    }

    fn receive(&mut self, received: Result<Frame, RecvError>) {
        match received {
            Ok(frame) => {
                self.accept(frame);
                self.drain_ready_frames();
            }
            Err(RecvError::Lagged(_)) => self.start_catching_up(),
            Err(RecvError::Closed) => self.ended = true,
        }
    }

    /// Takes frames already in the ring without waiting, so a burst becomes one write.
    fn drain_ready_frames(&mut self) {
        while !self.catching_up && self.pending_bytes < MAX_CHUNK_BYTES {
            match self.membership.ring.try_recv() {
                Ok(frame) => self.accept(frame),
                Err(TryRecvError::Lagged(_)) => self.start_catching_up(),
                Err(_) => break,
            }
        }
    }

    fn accept(&mut self, frame: Frame) {
        match self.last_sent {
            Some(last) if frame.id <= last => {}
            // The broker skipped ids: history has them (a message is stored before
            // it is published), and this frame with them.
            Some(last) if frame.id > last + 1 => self.start_catching_up(),
            _ => {
                self.last_sent = Some(frame.id);
                self.push(frame.bytes);
            }
        }
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

    async fn catch_up_page(&mut self) -> Result<(), crate::replay::HistoryError> {
        let after = self.last_sent.unwrap_or(0);
        let page = self.history.after(self.channel, after, PAGE).await?;
        if page.len() < PAGE {
            self.catching_up = false;
        }
        for message in page {
            if message.id <= self.last_sent.unwrap_or(0) {
                continue;
            }
            self.last_sent = Some(message.id);
            self.push(Frame::from_message(&message).bytes);
        }
        Ok(())
    }

    fn push(&mut self, bytes: Bytes) {
        self.pending_bytes += bytes.len();
        self.pending.push_back(bytes);
    }

    /// One chunk of everything pending; a single frame is passed on without a copy.
    fn take_pending(&mut self) -> Bytes {
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

/// Tells the client to reconnect (its `Last-Event-ID` makes that lossless) when the
/// stream cannot be kept complete right now.
fn reconnect_event(reason: &str) -> Bytes {
    let data = serde_json::json!({ "reason": reason });
    Bytes::from(format!("event: reconnect\ndata: {data}\n\n"))
}
