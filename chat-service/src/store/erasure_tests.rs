//! Erasure and compaction on a real sled: the author's texts leave the API
//! at once and the data directory's files once the store is reopened.

use std::path::Path;

use super::erasure::Erasure;
use super::tests::{entry, open};
use super::*;

fn channel(n: u8) -> ChannelId {
    ChannelId::from_bytes([n; 16])
}

async fn post(store: &Store, channel: ChannelId, author: &str, text: &str, key: Option<&str>) {
    let mut entry = entry(channel, text, key);
    entry.message.author =
        crate::domain::Author::parse(Some(author), &Default::default()).expect("author");
    store.append_one(entry, Ack::Synced).await.expect("append");
}

fn ann_everywhere() -> Erasure {
    Erasure {
        author: "ann".into(),
        channel: None,
        since: None,
        until: None,
    }
}

/// Whether any file under `dir` holds `needle`.
fn files_hold(dir: &Path, needle: &[u8]) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|entry| {
        let path = entry.path();
        if path.is_dir() {
            return files_hold(&path, needle);
        }
        let bytes = std::fs::read(&path).unwrap_or_default();
        bytes.windows(needle.len()).any(|window| window == needle)
    })
}

#[tokio::test]
async fn an_erased_authors_texts_leave_history_at_once_and_the_files_on_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = "ann-secret-text-4f1c";
    {
        let (store, _announcements) = open(dir.path());
        post(&store, channel(1), "ann", secret, Some("key-1")).await;
        post(&store, channel(1), "bob", "bob stays", None).await;
        post(&store, channel(2), "ann", &format!("{secret} again"), None).await;
        let edit = Entry::revision(
            channel(1),
            entry(channel(1), &format!("{secret} edited"), None).message,
            Revision {
                kind: Kind::Update,
                target: 1,
            },
        );
        store.append_one(edit, Ack::Synced).await.expect("edit");
        store.flush().await.expect("flush");
        assert!(
            files_hold(dir.path(), secret.as_bytes()),
            "the text is on disk"
        );

        let erasable = store.erasable(&ann_everywhere()).expect("scan");
        assert_eq!(store.erase(erasable).await.expect("erase"), 3);
        let again = store.erasable(&ann_everywhere()).expect("scan again");
        assert!(again.is_empty(), "nothing is erased twice");

        let current = store
            .synced()
            .current_after(channel(1), 0, 10)
            .expect("read");
        assert!(
            current[0].deleted && current[0].text.is_empty(),
            "shown deleted"
        );
        assert_eq!(current[1].text, "bob stays", "other authors are untouched");
        let raw = store.synced().after(channel(1), 0, 10).expect("log");
        assert!(raw.iter().all(|entry| !entry.text.contains(secret)));
        post(&store, channel(1), "ann", "new", Some("key-1")).await;
        let ids: Vec<u64> = store
            .synced()
            .after(channel(1), 0, 10)
            .expect("log")
            .iter()
            .map(|m| m.id)
            .collect();
        assert_eq!(ids, [1, 2, 3, 4], "the erased message's key was dropped");
    }
    let (store, _announcements) = open(dir.path());
    assert!(
        !files_hold(dir.path(), secret.as_bytes()),
        "gone from the files"
    );
    let log = store.synced().after(channel(2), 0, 10).expect("log");
    assert!(log[0].deleted, "the compacted store keeps the erasure");
    post(&store, channel(2), "bob", "next", None).await;
    let last = store.synced().latest(channel(2), 1).expect("latest");
    assert_eq!(last[0].id, 2, "numbering continues");
}

#[test]
fn an_interrupted_compaction_is_finished_or_undone() {
    let parent = tempfile::tempdir().expect("tempdir");
    let dir = parent.path().join("data");
    let (copy, old) = (
        parent.path().join("data.compacting"),
        parent.path().join("data.old"),
    );
    std::fs::create_dir_all(copy.join("x")).expect("copy");
    std::fs::write(copy.join("COMPACTION-COMPLETE"), b"").expect("mark");
    std::fs::create_dir_all(&old).expect("old");
    compaction::recover(&dir).expect("recover");
    assert!(
        dir.join("x").exists(),
        "a complete copy takes the store's place"
    );
    assert!(!copy.exists() && !old.exists());

    std::fs::create_dir_all(&copy).expect("incomplete copy");
    compaction::recover(&dir).expect("recover");
    assert!(
        dir.join("x").exists() && !copy.exists(),
        "an incomplete copy is dropped"
    );
}
