//! One channel's state in the hub: its ring, the frames it delivered most recently,
//! the live frames held back while a backfill fills a gap in ids, and the
//! small ring of its signals, which have no id and take no part in any of that.
//!
//! Everything here is synchronous and runs under the lock of the channel's
//! shard; the history requests of a backfill happen outside it (see
//! [`super::backfill`]).

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use protocol::Message;
use tokio::sync::{broadcast, watch};

use super::Frame;

/// Live frames one channel holds back while its backfill runs. Past this, newer
/// frames are dropped: the backfill reads on until the newest id seen live, and
/// history has every id the broker delivered (a message is stored before it is
/// published), so a dropped frame is delivered from history instead.
pub const HELD_MAX: usize = 256;

/// Slots of a channel's signal ring (allocated up front). A stream that
/// falls further behind than this skips the oldest signals: they are best
/// effort, and the next typing signal or read marker says the same again.
pub const SIGNAL_RING: usize = 8;

pub struct ChannelEntry {
    pub ring: broadcast::Sender<Frame>,
    /// Signals as complete SSE events (`event: signal`, no `id:`): a ring of
    /// their own, so ids, gaps, the recent buffer and backfills never see them.
    pub signals: broadcast::Sender<Bytes>,
    pub listeners: usize,
    /// `true` once the broker acknowledged the subscription.
    pub subscribed: watch::Sender<bool>,
    /// Tells a backfill task whether the entry it started on is still this one.
    pub epoch: u64,
    /// Highest id delivered on this node; older or repeated ids are dropped.
    last_id: Option<u64>,
    /// First id delivered since the entry was created.
    first_id: Option<u64>,
    /// The last delivered frames in id order (clones of the ring's `Bytes`).
    recent: VecDeque<Frame>,
    recent_cap: usize,
    backfill: Option<Backfill>,
}

/// A gap fill or a heal in progress.
struct Backfill {
    /// Highest live id seen since it started: once delivered, the channel is current.
    /// `None` (a heal) reads history until it runs out.
    target: Option<u64>,
    held: BTreeMap<u64, Frame>,
}

/// What happened to a live frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Arrival {
    Delivered,
    Duplicate,
    Held,
    /// The frame skipped ids: it is held and a backfill must start.
    GapFound,
}

/// What a backfill task does next after a page of history.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Read the next page after this id.
    Continue(u64),
    /// The channel is current; held frames were released.
    Done,
}

/// The recent buffer's answer to "what comes after this id?".
#[derive(Debug)]
pub enum Recent {
    /// Frames from `after + 1` on, with no hole; `complete` when they reach the
    /// newest delivered id.
    Frames { frames: Vec<Frame>, complete: bool },
    /// Nothing newer than `after` was delivered.
    Current,
    /// The buffer does not reach back to `after + 1`: ask history.
    Missing,
}

impl ChannelEntry {
    /// `ring_capacity` is smaller than `recent_cap`, so a listener that overruns
    /// the ring usually finds what it missed in the recent buffer.
    pub fn new(ring_capacity: usize, recent_cap: usize, epoch: u64) -> Self {
        ChannelEntry {
            ring: broadcast::Sender::new(ring_capacity.max(1)),
            signals: broadcast::Sender::new(SIGNAL_RING),
            listeners: 0,
            subscribed: watch::Sender::new(false),
            epoch,
            last_id: None,
            first_id: None,
            // Grows with use: most followed channels are quiet.
            recent: VecDeque::new(),
            recent_cap: recent_cap.max(1),
            backfill: None,
        }
    }

    pub fn last_id(&self) -> Option<u64> {
        self.last_id
    }

    pub fn first_id(&self) -> Option<u64> {
        self.first_id
    }

    /// A frame from the broker. A frame that skips ids is held until the missing
    /// ones are delivered.
    pub fn receive_live(&mut self, frame: Frame) -> Arrival {
        if self.last_id.is_some_and(|last| frame.id <= last) {
            return Arrival::Duplicate;
        }
        if let Some(backfill) = &mut self.backfill {
            backfill.hold(frame);
            return Arrival::Held;
        }
        match self.last_id {
            Some(last) if frame.id > last.saturating_add(1) => {
                let mut backfill = Backfill {
                    target: None,
                    held: BTreeMap::new(),
                };
                backfill.hold(frame);
                self.backfill = Some(backfill);
                Arrival::GapFound
            }
            _ => {
                self.push(frame);
                Arrival::Delivered
            }
        }
    }

    /// After a reconnect: read history from the last delivered id to its end.
    /// Returns `true` when a backfill task must be started.
    pub fn begin_heal(&mut self) -> bool {
        if self.last_id.is_none() {
            return false;
        }
        match &mut self.backfill {
            Some(backfill) => {
                // The running task now also reads what the outage left out.
                backfill.target = None;
                false
            }
            None => {
                self.backfill = Some(Backfill {
                    target: None,
                    held: BTreeMap::new(),
                });
                true
            }
        }
    }

    /// On a channel with no delivery yet, takes history's newest id at the time the
    /// broker connection dropped as the last delivered one: its listeners are owed
    /// everything after it. Returns `true` when the channel is subscribed again
    /// already, so the heal its SUBACK skipped must start now.
    pub fn anchor(&mut self, newest: u64) -> bool {
        if self.last_id.is_some() {
            return false;
        }
        self.last_id = Some(newest);
        self.first_id = Some(newest.saturating_add(1));
        *self.subscribed.borrow() && self.begin_heal()
    }

    pub fn is_backfilling(&self) -> bool {
        self.backfill.is_some()
    }

    /// Delivers a page of history in id order, then the held frames it made
    /// contiguous. `Done` releases every held frame and ends the backfill.
    pub fn apply_history(&mut self, page: &[Message], page_size: usize) -> Step {
        let before = self.last_id.unwrap_or(0);
        for message in page {
            if self.last_id.is_none_or(|last| message.id > last) {
                self.push(Frame::from_message(message));
            }
        }
        self.release_contiguous();
        let last = self.last_id.unwrap_or(0);
        let reached_target = self
            .backfill
            .as_ref()
            .and_then(|backfill| backfill.target)
            .is_some_and(|target| last >= target);
        // A full page that moved nothing would be read again forever.
        if page.len() < page_size || reached_target || last <= before {
            self.finish_backfill();
            return Step::Done;
        }
        Step::Continue(last)
    }

    /// Ends the backfill (done, or history gave up): held frames are delivered in id
    /// order, even across a gap that streams then fill on their own.
    pub fn finish_backfill(&mut self) {
        let Some(backfill) = self.backfill.take() else {
            return;
        };
        for (_, frame) in backfill.held {
            if self.last_id.is_none_or(|last| frame.id > last) {
                self.push(frame);
            }
        }
    }

    fn release_contiguous(&mut self) {
        loop {
            let last = self.last_id.unwrap_or(0);
            let Some(backfill) = &mut self.backfill else {
                return;
            };
            let Some(entry) = backfill.held.first_entry() else {
                return;
            };
            if *entry.key() > last.saturating_add(1) {
                return;
            }
            let frame = entry.remove();
            if frame.id > last {
                self.push(frame);
            }
        }
    }

    fn push(&mut self, frame: Frame) {
        self.last_id = Some(frame.id);
        self.first_id.get_or_insert(frame.id);
        if self.recent.len() == self.recent_cap {
            self.recent.pop_front();
        }
        self.recent.push_back(frame.clone());
        // An error only means no receiver is left right now.
        let _ = self.ring.send(frame);
    }

    /// Up to `limit` delivered frames after `after`, if the buffer reaches back.
    pub fn recent_after(&self, after: u64, limit: usize) -> Recent {
        let start = self.recent.partition_point(|frame| frame.id <= after);
        let Some(first) = self.recent.get(start) else {
            // Nothing delivered yet says nothing about history.
            return match self.last_id {
                Some(last) if last <= after => Recent::Current,
                _ => Recent::Missing,
            };
        };
        if first.id != after.saturating_add(1) {
            return Recent::Missing;
        }
        let frames: Vec<Frame> = self
            .recent
            .range(start..)
            .take(limit.max(1))
            .enumerate()
            .take_while(|(offset, frame)| frame.id - first.id == *offset as u64)
            .map(|(_, frame)| frame.clone())
            .collect();
        let complete = frames.last().map(|frame| frame.id) == self.last_id;
        Recent::Frames { frames, complete }
    }
}

impl Backfill {
    fn hold(&mut self, frame: Frame) {
        self.target = Some(self.target.unwrap_or(0).max(frame.id));
        if self.held.len() < HELD_MAX {
            self.held.insert(frame.id, frame);
        }
    }
}
