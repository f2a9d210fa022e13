//! Signals on their way to the publisher task: a small bounded queue that a
//! handler never waits on (a full one refuses the signal), and what a refusal
//! tells the client.

use bytes::Bytes;
use protocol::ChannelId;
use tokio::sync::mpsc;

use super::Publisher;

/// Signals waiting for the publisher task at most: past it a signal is
/// refused at once (`503`), never queued without bound.
pub(super) const SIGNAL_QUEUE: usize = 1024;

/// A signal on its way to the broker: its channel and its JSON.
pub(super) struct OutgoingSignal {
    pub(super) channel: ChannelId,
    pub(super) json: Bytes,
}

/// Why a signal was not taken; it is not kept for later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignalRefused {
    #[error("the publisher is not connected to the MQTT broker; retry shortly")]
    NotConnected,
    #[error("too many signals are waiting for the broker; retry shortly")]
    QueueFull,
}

impl SignalRefused {
    /// The error code a client is told.
    pub fn code(self) -> &'static str {
        match self {
            SignalRefused::NotConnected => "broker_unavailable",
            SignalRefused::QueueFull => "overloaded",
        }
    }
}

impl Publisher {
    /// Hands a signal's JSON to the publisher task without waiting; refused
    /// while the broker is not connected (it would only be dropped) or when
    /// [`SIGNAL_QUEUE`] signals wait already.
    pub fn send_signal(&self, channel: ChannelId, json: Bytes) -> Result<(), SignalRefused> {
        if !self.status.is_connected() {
            return Err(SignalRefused::NotConnected);
        }
        let signal = OutgoingSignal { channel, json };
        self.signals.try_send(signal).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SignalRefused::QueueFull,
            mpsc::error::TrySendError::Closed(_) => SignalRefused::NotConnected,
        })
    }
}
