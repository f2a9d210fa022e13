//! The channels a stream follows: per channel, its ring, its place among the
//! channel's listeners and how far the client got; and the event id of a
//! stream of one channel or of several (the cursor).

use bytes::Bytes;
use protocol::ChannelId;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

use super::cursor;
use crate::hub::{Frame, ListenerGuard, Membership};
use crate::presence::Joined;

/// The channels of a stream. A stream of one channel is what most clients open
/// and what an idle node holds by the thousand, so it costs no extra allocation.
pub(super) enum Follows {
    /// `/channels/{c}/events`: each event's `id:` is the message's id.
    One(FollowedChannel),
    /// `/events?channel=…`: each event's `id:` is a cursor of every channel's
    /// last id ([`cursor`]).
    Many(Box<[FollowedChannel]>),
}

/// One channel of a stream: its place in the hub and how far the client got.
pub(super) struct FollowedChannel {
    pub(super) channel: ChannelId,
    pub(super) ring: broadcast::Receiver<Frame>,
    /// The channel's signals, complete SSE events without an id.
    pub(super) signals: broadcast::Receiver<Bytes>,
    /// The stream's place among the channel's listeners, until it ends.
    pub(super) _listening: ListenerGuard,
    /// Id of the last message (or gap) of this channel written to the client.
    pub(super) last_sent: Option<u64>,
    /// Catching up after `last_sent` until the recent buffer or history says we
    /// are current.
    pub(super) catching_up: bool,
    /// Highest live id seen ahead of `last_sent`: the catch-up must get there.
    pub(super) catch_up_to: Option<u64>,
    pub(super) stalls: u32,
    /// This stream's place in the channel's presence, until it ends.
    pub(super) _joined: Option<Joined>,
}

/// A channel a stream opens with: its membership and, for a resume, the last id
/// the client has.
pub struct Opening {
    pub channel: ChannelId,
    pub membership: Membership,
    pub resume_after: Option<u64>,
}

impl FollowedChannel {
    pub(super) fn new(opening: Opening) -> Self {
        let membership = opening.membership;
        FollowedChannel {
            channel: opening.channel,
            last_sent: opening.resume_after.or(membership.last_id_at_join),
            catching_up: opening.resume_after.is_some(),
            ring: membership.ring,
            signals: membership.signals,
            _listening: membership.guard,
            catch_up_to: None,
            stalls: 0,
            _joined: None,
        }
    }
}

impl Follows {
    pub(super) fn all(&self) -> &[FollowedChannel] {
        match self {
            Follows::One(follow) => std::slice::from_ref(follow),
            Follows::Many(follows) => follows,
        }
    }

    pub(super) fn all_mut(&mut self) -> &mut [FollowedChannel] {
        match self {
            Follows::One(follow) => std::slice::from_mut(follow),
            Follows::Many(follows) => follows,
        }
    }

    /// The `id:` of an event sent now: the channel's last id on a one-channel
    /// stream, else the cursor of all channels.
    pub(super) fn event_id(&self) -> String {
        match self {
            Follows::One(follow) => follow.last_sent.unwrap_or(0).to_string(),
            Follows::Many(follows) => cursor::render(
                follows
                    .iter()
                    .map(|follow| (follow.channel, follow.last_sent.unwrap_or(0))),
            ),
        }
    }

    /// The next frame (or ring error) of any channel, with the channel's
    /// index, or the next signal of any channel; frames first when both wait.
    pub(super) async fn next(&mut self) -> Next {
        match self {
            Follows::One(follow) => tokio::select! {
                biased;
                received = follow.ring.recv() => Next::Frame(0, received),
                received = follow.signals.recv() => Next::Signal(received),
            },
            Follows::Many(follows) if follows.is_empty() => std::future::pending().await,
            Follows::Many(follows) => {
                // Dropping the other receives loses nothing: a ring keeps its
                // frames until every receiver took them.
                let (rings, signals): (Vec<_>, Vec<_>) = follows
                    .iter_mut()
                    .map(|follow| {
                        let FollowedChannel { ring, signals, .. } = follow;
                        (Box::pin(ring.recv()), Box::pin(signals.recv()))
                    })
                    .unzip();
                tokio::select! {
                    biased;
                    (received, index, _) = futures_util::future::select_all(rings) => {
                        Next::Frame(index, received)
                    }
                    (received, _, _) = futures_util::future::select_all(signals) => {
                        Next::Signal(received)
                    }
                }
            }
        }
    }
}

/// What came next on a stream's channels.
pub(super) enum Next {
    /// A message frame of the channel at this index.
    Frame(usize, Result<Frame, RecvError>),
    /// A signal (a complete SSE event) of any of them.
    Signal(Result<Bytes, RecvError>),
}
