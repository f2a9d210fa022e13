//! Appending to a channel's log: the next id, taken by an optimistic append
//! on its own subject, and acknowledged once a quorum of replicas has it.

use async_nats::jetstream::context::{PublishAckFuture, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use bytes::Bytes;
use protocol::{ChannelId, Message};

use super::tails::Tail;
use super::{JetStreamLog, unavailable};
use crate::store::{Appended, Entry, StoreError, new_entry};

/// Appends of one entry that lost the race for an id to another
/// chat-service, at most; then the POST is refused with `503` and
/// `Retry-After` (nothing stored).
const MAX_ATTEMPTS: usize = 8;

impl JetStreamLog {
    /// Appends `entry` as its channel's next entry and answers once the
    /// stream has it on a quorum of replicas. An `Idempotency-Key` seen in the
    /// dedupe window answers the entry it first stored (`created: false`).
    pub async fn append_one(&self, entry: Entry) -> Result<Appended, StoreError> {
        let _pending = self
            .inner
            .pending
            .try_acquire()
            .map_err(|_| StoreError::Busy)?;
        let mut tail = self.inner.tails.lock(entry.channel).await;
        for _ in 0..MAX_ATTEMPTS {
            let next_id = match tail.next_id {
                Some(next_id) => next_id,
                None => self.last_id(entry.channel).await? + 1,
            };
            if let Some(appended) = self.try_append(&entry, next_id, &mut tail).await? {
                return Ok(appended);
            }
        }
        log::warn!(
            "channel {}: {MAX_ATTEMPTS} appends in a row lost the race for an id",
            entry.channel
        );
        Err(StoreError::Busy)
    }

    /// Appends `entry` as entry `id`; `None` when another chat-service took
    /// the id first. Leaves the tail in doubt (`None`) unless the append is
    /// known to have stored it.
    async fn try_append(
        &self,
        entry: &Entry,
        id: u64,
        tail: &mut Tail,
    ) -> Result<Option<Appended>, StoreError> {
        tail.next_id = None;
        let message = new_entry(id, entry);
        let json = Bytes::from(serde_json::to_vec(&message).map_err(storage)?);
        let mut publish = PublishMessage::build()
            .payload(json.clone())
            .expected_last_subject_sequence(0);
        if let Some(key) = &entry.idempotency_key {
            publish = publish.message_id(message_id(entry.channel, key));
        }
        let subject = self.inner.subjects.entry(entry.channel, id);
        let ack = match self.inner.context.send_publish(subject, publish).await {
            Ok(ack) => ack,
            Err(e) => return Err(unavailable(e)),
        };
        match acknowledged(ack).await? {
            None => Ok(None),
            Some(ack) if ack.duplicate => self.original(ack.sequence).await.map(Some),
            Some(_) => {
                tail.next_id = Some(id + 1);
                Ok(Some(Appended {
                    message,
                    json,
                    created: true,
                }))
            }
        }
    }

    /// Copies an entry stored elsewhere (its JSON as written, with its id and
    /// idempotency key) as entry `id` of its channel; `false` when the
    /// channel already has an entry `id` (copied before). Entries must be
    /// copied in id order, one at a time per channel.
    pub async fn copy_entry(
        &self,
        channel: ChannelId,
        id: u64,
        json: Bytes,
        key: Option<&str>,
    ) -> Result<bool, StoreError> {
        let mut publish = PublishMessage::build()
            .payload(json)
            .expected_last_subject_sequence(0);
        if let Some(key) = key {
            publish = publish.message_id(message_id(channel, key));
        }
        let subject = self.inner.subjects.entry(channel, id);
        let ack = self
            .inner
            .context
            .send_publish(subject, publish)
            .await
            .map_err(unavailable)?;
        Ok(acknowledged(ack).await?.is_some_and(|ack| !ack.duplicate))
    }

    /// The entry a repeated idempotency key first stored, at stream sequence
    /// `sequence`.
    async fn original(&self, sequence: u64) -> Result<Appended, StoreError> {
        let stored = self
            .inner
            .stream
            .get_raw_message(sequence)
            .await
            .map_err(unavailable)?;
        let message: Message = serde_json::from_slice(&stored.payload).map_err(storage)?;
        Ok(Appended {
            message,
            json: stored.payload,
            created: false,
        })
    }

    /// The id of the channel's last entry (0 for none), read from the
    /// stream's leader, which has every acknowledged entry.
    pub(super) async fn last_id(&self, channel: ChannelId) -> Result<u64, StoreError> {
        let last = self
            .inner
            .stream
            .raw_message_builder()
            .last_by_subject(self.inner.subjects.channel(channel))
            .send()
            .await;
        match last {
            Ok(stored) => id_of_subject(&stored.subject).ok_or_else(|| {
                StoreError::Storage(format!("an entry of the log has no id: {}", stored.subject))
            }),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(0),
            Err(e) => Err(unavailable(e)),
        }
    }
}

/// The stream's acknowledgement; `None` when the id was taken.
async fn acknowledged(
    ack: PublishAckFuture,
) -> Result<Option<async_nats::jetstream::publish::PublishAck>, StoreError> {
    match ack.await {
        Ok(ack) => Ok(Some(ack)),
        Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => Ok(None),
        Err(e) => Err(unavailable(e)),
    }
}

/// The dedupe id of an idempotency key: the key is per channel.
fn message_id(channel: ChannelId, key: &str) -> String {
    format!("{channel}/{key}")
}

/// The id an entry's subject ends with.
pub(super) fn id_of_subject(subject: &str) -> Option<u64> {
    subject.rsplit('.').next()?.parse().ok()
}

fn storage(e: impl std::fmt::Display) -> StoreError {
    StoreError::Storage(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_subject_ends_with_its_id() {
        assert_eq!(id_of_subject("CRIER.log.c.42"), Some(42));
        assert_eq!(id_of_subject("CRIER.log.c.*"), None);
    }
}
