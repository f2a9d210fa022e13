//! Edits and deletions in the store: numbered like messages, kept in the log
//! as written, applied in the view of messages as they now are, and never
//! applied before they are synced.

use super::tests::{append, entry, open};
use super::*;

fn channel() -> ChannelId {
    ChannelId::from_bytes([9; 16])
}

fn revision(kind: Kind, target: u64, text: &str) -> Entry {
    let Entry { message, .. } = entry(channel(), text, None);
    Entry::revision(channel(), message, Revision { kind, target })
}

fn ids(messages: &[Message]) -> Vec<u64> {
    messages.iter().map(|message| message.id).collect()
}

#[tokio::test]
async fn edits_and_deletions_take_the_next_ids_and_apply_to_their_targets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _announcements) = open(dir.path());
    append(&store, channel(), 3, None).await;
    let edit = store
        .append_one(revision(Kind::Update, 2, "fixed"), Ack::Synced)
        .await
        .expect("edit");
    let delete = store
        .append_one(revision(Kind::Delete, 3, "ignored"), Ack::Synced)
        .await
        .expect("delete");
    assert_eq!((edit.message.id, delete.message.id), (4, 5), "next ids");
    assert_eq!(
        (edit.message.kind, edit.message.target),
        (Kind::Update, Some(2))
    );
    assert!(delete.message.text.is_empty(), "a deletion keeps no text");
    append(&store, channel(), 1, None).await;

    let history = store.synced();
    let log = history.after(channel(), 0, 100).expect("log");
    assert_eq!(ids(&log), [1, 2, 3, 4, 5, 6], "the log keeps every entry");
    assert_eq!(log[1].text, "1", "the log keeps the original text");

    let current = history.current_after(channel(), 0, 100).expect("current");
    assert_eq!(ids(&current), [1, 2, 3, 6], "only messages");
    assert_eq!(current[1].text, "fixed");
    assert!(current[1].edited_at.is_some() && !current[1].deleted);
    assert!(current[2].deleted && current[2].text.is_empty());
    assert_eq!(current[3].text, "0", "the message after them is untouched");

    let latest = history.current_latest(channel(), 2).expect("latest");
    assert_eq!(
        ids(&latest),
        [3, 6],
        "the latest messages, skipping entries"
    );
    assert!(latest[0].deleted);
    let one = history.current_get(channel(), 2).expect("get");
    assert_eq!(one.map(|m| m.text), Some("fixed".to_string()));
    let entry = history.current_get(channel(), 4).expect("get entry");
    assert_eq!(
        entry.map(|m| m.kind),
        Some(Kind::Update),
        "an entry as written"
    );
}

#[tokio::test]
async fn an_edit_not_yet_synced_is_not_applied_and_survives_a_reopen_once_synced() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (store, _announcements) = open(dir.path());
        append(&store, channel(), 1, None).await;
        let gate = store.inner.unsynced.gate_syncs();
        let pending = store
            .submit(vec![revision(Kind::Update, 1, "later")], Ack::Synced)
            .expect("queued");
        super::tests::wait_until_written(&store, channel(), 2).await;
        let current = store
            .synced()
            .current_after(channel(), 0, 10)
            .expect("read");
        assert_eq!(current[0].text, "0", "the unsynced edit is not applied");
        assert!(current[0].edited_at.is_none());
        gate.allow_one();
        pending.outcome().await.expect("synced");
        drop(gate);
    }
    let (store, _announcements) = open(dir.path());
    let current = store
        .synced()
        .current_after(channel(), 0, 10)
        .expect("read");
    assert_eq!(ids(&current), [1]);
    assert_eq!(current[0].text, "later", "the edit outlives a restart");
}

#[tokio::test]
async fn trimming_a_message_drops_its_revisions_from_the_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _announcements) = open(dir.path());
    append(&store, channel(), 2, None).await;
    store
        .append_one(revision(Kind::Update, 1, "gone soon"), Ack::Synced)
        .await
        .expect("edit");
    store
        .change(Change::Trim {
            channel: channel(),
            through: 1,
        })
        .await
        .expect("trim");
    let left = store.inner.trees.revisions.len();
    assert_eq!(left, 0, "the trimmed target's revisions are forgotten");
    let current = store
        .synced()
        .current_after(channel(), 0, 10)
        .expect("read");
    assert_eq!(ids(&current), [2]);
}
