//! The store's behaviour end to end on a real sled in a temporary directory:
//! numbering, idempotency, announcements, bounds and crash atomicity.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use super::*;
use crate::config::Limits;
use keys::message_key;

pub(crate) fn open(dir: &Path) -> (Store, Announcements) {
    Store::open(dir, StoreSettings::default()).expect("open")
}

pub(crate) fn entry(channel: ChannelId, text: &str, key: Option<&str>) -> Entry {
    let limits = Limits::default();
    let message = NewMessage::parse(Some("ann"), Some(text), &limits).expect("valid");
    Entry::new(channel, message).with_key(key.map(str::to_string))
}

/// Appends `count` messages one by one, each answered once synced.
pub(crate) async fn append(store: &Store, channel: ChannelId, count: usize, key: Option<&str>) {
    for n in 0..count {
        let entry = entry(channel, &n.to_string(), key);
        store.append_one(entry, Ack::Synced).await.expect("append");
    }
}

pub(crate) fn ids(store: &Store, channel: ChannelId) -> Vec<u64> {
    let messages = store.synced().after(channel, 0, 1000).expect("after");
    messages.iter().map(|m| m.id).collect()
}

fn channel(n: u8) -> ChannelId {
    ChannelId::from_bytes([n; 16])
}

#[tokio::test]
async fn ids_count_per_channel_and_continue_after_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (store, _announcements) = open(dir.path());
        for expected in 1..=3 {
            let appended = store
                .append_one(entry(channel(1), "x", None), Ack::Synced)
                .await
                .expect("append");
            assert_eq!(appended.message.id, expected);
        }
        let other = store
            .append_one(entry(channel(2), "y", None), Ack::Synced)
            .await
            .expect("append");
        assert_eq!(other.message.id, 1, "channels number independently");
    }
    let (store, _announcements) = open(dir.path());
    let next = store
        .append_one(entry(channel(1), "z", None), Ack::Synced)
        .await
        .expect("append");
    assert_eq!(next.message.id, 4);
}

#[tokio::test]
async fn concurrent_appends_are_announced_per_channel_in_id_order_without_gaps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, mut announcements) = open(dir.path());
    let mut tasks = Vec::new();
    for worker in 0..4u8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..200u8 {
                let channel = channel((worker + n) % 8);
                let durable = n % 2 == 0;
                store
                    .append_one(entry(channel, "x", None), Ack::durable(durable))
                    .await
                    .expect("append");
            }
        }));
    }
    let mut announced = HashMap::<ChannelId, Vec<u64>>::new();
    let mut total = 0;
    while total < 800 {
        let batch = tokio::time::timeout(Duration::from_secs(10), announcements.recv())
            .await
            .expect("announced in time")
            .expect("store open");
        total += batch.len();
        for stored in batch {
            announced.entry(stored.channel).or_default().push(stored.id);
        }
    }
    for task in tasks {
        task.await.expect("appends");
    }
    assert_eq!(announced.len(), 8);
    let last_ids = store.last_ids().expect("last ids");
    for (channel, ids) in announced {
        let expected: Vec<u64> = (1..=ids.len() as u64).collect();
        assert_eq!(ids, expected, "{channel}: ids in order, no gap");
        assert_eq!(last_ids[&channel], ids.len() as u64);
    }
}

#[tokio::test]
async fn an_idempotency_key_returns_the_original_message_within_a_write_and_after_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, mut announcements) = open(dir.path());
    let both = store
        .append(
            vec![
                entry(channel(1), "a", Some("k1")),
                entry(channel(1), "b", Some("k1")),
            ],
            Ack::Synced,
        )
        .await
        .expect("append");
    assert!(both[0].created && !both[1].created);
    assert_eq!(both[0].message, both[1].message);
    let retry = store
        .append_one(entry(channel(1), "c", Some("k1")), Ack::Synced)
        .await
        .expect("append");
    assert!(!retry.created);
    assert_eq!(retry.message, both[0].message);
    assert_eq!(ids(&store, channel(1)), [1]);
    let announced = announcements.recv().await.expect("announced");
    assert_eq!(announced.len(), 1, "a retry is not announced again");
    assert!(announcements.try_recv().is_err());
}

#[tokio::test]
async fn a_channel_dropped_from_memory_continues_its_numbering() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = StoreSettings {
        idle_channel: Duration::ZERO,
        ..StoreSettings::default()
    };
    let (store, _announcements) = Store::open(dir.path(), settings).expect("open");
    append(&store, channel(1), 3, None).await;
    append(&store, channel(2), 1, None).await;
    append(&store, channel(1), 2, None).await;
    assert_eq!(ids(&store, channel(1)), [1, 2, 3, 4, 5]);
}

#[tokio::test]
async fn a_full_ingest_queue_refuses_appends_and_keeps_every_accepted_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = StoreSettings {
        ingest_queue: 4,
        announce_queue: 1,
        ..StoreSettings::default()
    };
    // Nobody takes the announcements: the writer stalls.
    let (store, announcements) = Store::open(dir.path(), settings).expect("open");
    let (mut pending, mut accepted) = (Vec::new(), Vec::new());
    let mut refused = false;
    for n in 0..10_000 {
        let store = store.clone();
        let append = tokio::spawn(async move {
            store
                .append_one(entry(channel(1), &n.to_string(), None), Ack::Written)
                .await
        });
        tokio::task::yield_now().await;
        if !append.is_finished() {
            pending.push(append);
            continue;
        }
        match append.await.expect("task") {
            Ok(appended) => accepted.push(appended.message.id),
            Err(StoreError::Busy) => {
                refused = true;
                break;
            }
            Err(e) => panic!("an append failed: {e}"),
        }
    }
    assert!(refused, "a stalled store refuses appends");
    drop(announcements);
    for append in pending {
        match append.await.expect("task") {
            Ok(appended) => accepted.push(appended.message.id),
            Err(e) => panic!("an append queued before the refusal failed: {e}"),
        }
    }
    let stored = ids(&store, channel(1));
    for id in &accepted {
        assert!(stored.contains(id), "accepted #{id} is in history");
    }
}

/// Set in the child process of the crash test: the store directory it appends to.
const CRASH_CHILD_DIR: &str = "CRIER_STORE_CRASH_CHILD_DIR";
/// What the child prints once its first write is done.
const CHILD_APPENDING: &str = "crash child: appending";
const CRASH_TEST: &str = "store::tests::a_message_and_its_idempotency_key_survive_kill_9_together";

#[tokio::test]
async fn a_message_and_its_idempotency_key_survive_kill_9_together() {
    if let Ok(dir) = std::env::var(CRASH_CHILD_DIR) {
        return append_keyed_until_killed(Path::new(&dir)).await;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    for round in 0..8u64 {
        let mut child = std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args(["--exact", CRASH_TEST, "--nocapture", "--test-threads=1"])
            .env(CRASH_CHILD_DIR, dir.path())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start the child");
        let stdout = child.stdout.take().expect("child stdout");
        let appending = tokio::task::spawn_blocking(move || {
            use std::io::BufRead;
            std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .any(|line| line.contains(CHILD_APPENDING))
        });
        let started = tokio::time::timeout(Duration::from_secs(20), appending).await;
        assert!(
            matches!(started, Ok(Ok(true))),
            "the child started appending"
        );
        tokio::time::sleep(Duration::from_millis(100 + 30 * round)).await;
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
    }
    let (store, _announcements) = open(dir.path());
    let trees = &store.inner.trees;
    let mut keys = 0;
    for entry in trees.idempotency.iter() {
        let (key, id) = entry.expect("key");
        let channel = keys::channel_of_key(&key).expect("channel");
        let message = trees
            .messages
            .get(message_key(channel, decode_u64(&id)))
            .expect("read");
        assert!(message.is_some(), "a key's message is stored");
        keys += 1;
    }
    assert!(keys > 0, "the child appended something");
    assert_eq!(trees.messages.len(), keys, "every message has its key");
}

/// The child: appends keyed messages in writes of eight from sixteen tasks at
/// once, each waiting for the disk, until it is killed (at most for 30 s): the
/// writer always has requests waiting, so syncs start while it inserts, and a
/// write that reached the disk only in part would be left after a kill. (A
/// writer that inserted each message and then its key on their own made this
/// test fail in about half of its runs; a crash has to land in the gap.)
async fn append_keyed_until_killed(dir: &Path) {
    let (store, mut announcements) = open(dir);
    tokio::spawn(async move { while announcements.recv().await.is_some() {} });
    let round = std::process::id();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let appenders: Vec<_> = (0..16u64)
        .map(|task| {
            let store = store.clone();
            tokio::spawn(async move {
                for n in 0u64.. {
                    let entries = (0..8)
                        .map(|k| entry(channel(1), "x", Some(&format!("{round}-{task}-{n}-{k}"))))
                        .collect();
                    store.append(entries, Ack::Synced).await.expect("append");
                    if n == 0 && task == 0 {
                        println!("{CHILD_APPENDING}");
                    }
                    if tokio::time::Instant::now() > deadline {
                        break;
                    }
                }
            })
        })
        .collect();
    for appender in appenders {
        appender.await.expect("appender");
    }
}

#[tokio::test]
async fn no_read_returns_a_message_written_but_not_yet_synced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _announcements) = open(dir.path());
    append(&store, channel(1), 2, None).await;
    let gate = store.inner.unsynced.gate_syncs();
    let pending = store
        .submit(vec![entry(channel(1), "not yet", None)], Ack::Synced)
        .expect("queued");
    wait_until_written(&store, channel(1), 3).await;
    let history = store.synced();
    assert_eq!(ids(&store, channel(1)), [1, 2], "after: only synced ids");
    let latest: Vec<u64> = history
        .latest(channel(1), 10)
        .expect("latest")
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(latest, [1, 2], "latest: only synced ids");
    assert!(
        history.get(channel(1), 3).expect("get").is_none(),
        "get: #3 is not synced"
    );
    let raw = history.after_raw(channel(1), 0, 10).expect("raw");
    assert_eq!(raw.len(), 2, "the outbox reads only synced ids");
    let stats = history.channel_stats(channel(1)).expect("stats");
    assert_eq!(
        (stats.messages, stats.last_id),
        (2, Some(2)),
        "stats count synced ids"
    );
    gate.allow_one();
    let appended = pending.outcome().await.expect("synced");
    assert_eq!(appended[0].message.id, 3);
    assert_eq!(ids(&store, channel(1)), [1, 2, 3], "readable once synced");
    drop(gate);
}

#[tokio::test]
async fn a_write_that_does_not_wait_for_the_disk_is_readable_once_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _announcements) = open(dir.path());
    let gate = store.inner.unsynced.gate_syncs();
    let appended = store
        .append_one(entry(channel(1), "fast", None), Ack::Written)
        .await
        .expect("written");
    assert_eq!(appended.message.id, 1);
    assert_eq!(
        ids(&store, channel(1)),
        [1],
        "--durable-ack false reads what is written"
    );
    drop(gate);
}

#[tokio::test]
async fn an_append_that_would_wait_past_the_budget_is_refused_and_earlier_ones_are_stored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let budget = Duration::from_millis(20);
    let settings = StoreSettings {
        max_queue_delay: Some(budget),
        ..StoreSettings::default()
    };
    let (store, _announcements) = Store::open(dir.path(), settings).expect("open");
    let gate = store.inner.unsynced.gate_syncs();
    let first = store
        .submit(vec![entry(channel(1), "in the writer", None)], Ack::Synced)
        .expect("queued");
    wait_until_written(&store, channel(1), 1).await;
    let second = store
        .submit(vec![entry(channel(1), "waiting", None)], Ack::Synced)
        .expect("queued");
    tokio::time::sleep(budget + Duration::from_millis(30)).await;
    let third = store
        .submit(vec![entry(channel(1), "seen over", None)], Ack::Synced)
        .expect("the first look at a long wait only starts the interval");
    tokio::time::sleep(super::admission::INTERVAL + Duration::from_millis(30)).await;
    let refused = store.submit(vec![entry(channel(1), "too late", None)], Ack::Synced);
    assert!(
        matches!(refused, Err(StoreError::Busy)),
        "refused once the wait stayed over for the interval"
    );
    drop(gate);
    for (pending, id) in [(first, 1), (second, 2), (third, 3)] {
        let appended = pending.outcome().await.expect("stored");
        assert_eq!(appended[0].message.id, id);
    }
    assert_eq!(
        ids(&store, channel(1)),
        [1, 2, 3],
        "nothing of the refused one"
    );
    let after = store
        .append_one(entry(channel(1), "drained", None), Ack::Synced)
        .await
        .expect("admitted again once the queue drained");
    assert_eq!(after.message.id, 4);
}

/// Waits until the writer has inserted message `id` of `channel` (before
/// its sync).
pub(crate) async fn wait_until_written(store: &Store, channel: ChannelId, id: u64) {
    let key = message_key(channel, id);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !store.inner.trees.messages.contains_key(key).expect("read") {
        assert!(
            std::time::Instant::now() < deadline,
            "the writer inserts #{id}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
