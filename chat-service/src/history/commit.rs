//! Group commit: one thread owns flushing. It takes every waiting request, flushes
//! once, and answers them all, so concurrent POSTs share one disk flush. Only one
//! flush is ever in flight — sled 0.34's `flush_async` deadlocks its own thread pool
//! when many run at once.

use tokio::sync::oneshot;

/// A flush that failed; the cause is sled's, as text (sled's error is not `Clone`,
/// and one flush answers many waiters).
#[derive(Debug, Clone, thiserror::Error)]
#[error("flush to disk failed: {0}")]
pub struct FlushError(pub String);

/// Told the outcome of the flush that covered its writes.
type FlushWaiter = oneshot::Sender<Result<(), String>>;

pub struct GroupCommitter {
    requests: Option<std::sync::mpsc::Sender<FlushWaiter>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl GroupCommitter {
    pub fn start(db: sled::Db) -> Result<Self, sled::Error> {
        let (requests, waiting) = std::sync::mpsc::channel::<FlushWaiter>();
        let thread = std::thread::Builder::new()
            .name("sled-group-commit".into())
            .spawn(move || {
                while let Ok(first) = waiting.recv() {
                    let mut waiters = vec![first];
                    waiters.extend(waiting.try_iter());
                    let outcome = db.flush().map(|_| ()).map_err(|e| e.to_string());
                    for waiter in waiters {
                        let _ = waiter.send(outcome.clone());
                    }
                }
            })?;
        Ok(GroupCommitter {
            requests: Some(requests),
            thread: Some(thread),
        })
    }

    /// Waits until everything written before the call is on disk.
    pub async fn flush(&self) -> Result<(), FlushError> {
        self.request().wait().await
    }

    /// Asks for a flush now and returns what to wait on: everything written
    /// before the call is on disk once it resolves. Asking at once, before any
    /// waiting, lets the request join the flush of writes made just before.
    pub fn request(&self) -> FlushTicket {
        let (waiter, outcome) = oneshot::channel();
        let sent = self
            .requests
            .as_ref()
            .is_some_and(|requests| requests.send(waiter).is_ok());
        FlushTicket(sent.then_some(outcome))
    }
}

/// A requested flush (see [`GroupCommitter::request`]).
pub struct FlushTicket(Option<oneshot::Receiver<Result<(), String>>>);

impl FlushTicket {
    pub async fn wait(self) -> Result<(), FlushError> {
        let stopped = || FlushError("the flush thread has stopped".into());
        let outcome = self.0.ok_or_else(stopped)?;
        outcome.await.map_err(|_| stopped())?.map_err(FlushError)
    }
}

impl Drop for GroupCommitter {
    /// Ends the thread and waits for it, so the database (and its file lock) is
    /// released when the store is gone and can be reopened at once.
    fn drop(&mut self) {
        drop(self.requests.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
