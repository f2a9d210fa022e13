//! Group commit: one thread owns flushing. It takes every waiting request, flushes
//! once, and answers them all, so concurrent POSTs share one disk flush. Only one
//! flush is ever in flight — sled 0.34's `flush_async` deadlocks its own thread pool
//! when many run at once.
//!
//! Queued work runs between a flush's write and its sync: once the writes before
//! it are in the operating system's hands, they survive this process being
//! killed, which is all that delivering them needs (ids are never reused after a
//! restart), while the answers that promise durability still wait for the sync.

use std::sync::mpsc;

use tokio::sync::oneshot;

/// A flush that failed; the cause is sled's, as text (sled's error is not `Clone`,
/// and one flush answers many waiters).
#[derive(Debug, Clone, thiserror::Error)]
#[error("flush to disk failed: {0}")]
pub struct FlushError(pub String);

/// Told the outcome of the flush that covered its writes.
type FlushWaiter = oneshot::Sender<Result<(), String>>;

/// Work run on the flush thread once the writes made before it was queued are
/// written to the file (they survive the process being killed), usually before
/// they are synced to disk; given `Ok` then, or the flush's error. It must be
/// quick and must not use the database: the sync waits for it.
pub type AfterWrite = Box<dyn FnOnce(Result<(), FlushError>) + Send>;

enum Request {
    Flush(FlushWaiter),
    AfterWrite(AfterWrite),
}

/// The committer's thread has stopped, so nothing queued would run.
#[derive(Debug)]
pub struct Stopped;

pub struct GroupCommitter {
    requests: Option<mpsc::Sender<Request>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl GroupCommitter {
    pub fn start(db: sled::Db) -> Result<Self, sled::Error> {
        let (requests, waiting) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("sled-group-commit".into())
            .spawn(move || commit_until_closed(&db, &waiting))?;
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
    /// before the call is on disk once it resolves.
    fn request(&self) -> FlushTicket {
        let (waiter, outcome) = oneshot::channel();
        let sent = self.send(Request::Flush(waiter)).is_ok();
        FlushTicket(sent.then_some(outcome))
    }

    /// Runs `work` on the flush thread once everything written before the call
    /// is written to the file (or the flush failed), in the order of the calls.
    pub fn after_write(&self, work: AfterWrite) -> Result<(), Stopped> {
        self.send(Request::AfterWrite(work))
    }

    fn send(&self, request: Request) -> Result<(), Stopped> {
        let requests = self.requests.as_ref().ok_or(Stopped)?;
        requests.send(request).map_err(|_| Stopped)
    }
}

/// The flush thread: waits for requests, takes all that are queued, flushes once,
/// runs the queued work, in order, as soon as the flush has written, and answers
/// the waiters once it has synced.
fn commit_until_closed(db: &sled::Db, requests: &mpsc::Receiver<Request>) {
    while let Ok(first) = requests.recv() {
        let mut waiters = Vec::new();
        let mut work = Vec::new();
        for request in std::iter::once(first).chain(requests.try_iter()) {
            match request {
                Request::Flush(waiter) => waiters.push(waiter),
                Request::AfterWrite(job) => work.push(job),
            }
        }
        let run_work = move |written: sled::Result<()>| {
            let outcome = written.map_err(|e| FlushError(e.to_string()));
            for job in work {
                run_guarded(job, outcome.clone());
            }
        };
        let outcome = db
            .flush_announcing_written(run_work)
            .map(|_| ())
            .map_err(|e| e.to_string());
        for waiter in waiters {
            let _ = waiter.send(outcome.clone());
        }
    }
}

/// Runs queued work so that a panic in it is logged instead of ending the
/// thread every later flush needs.
fn run_guarded(job: AfterWrite, outcome: Result<(), FlushError>) {
    let run = std::panic::AssertUnwindSafe(move || job(outcome));
    if std::panic::catch_unwind(run).is_err() {
        log::error!("work queued behind a flush panicked; flushing goes on");
    }
}

/// A requested flush (see [`GroupCommitter::request`]).
struct FlushTicket(Option<oneshot::Receiver<Result<(), String>>>);

impl FlushTicket {
    async fn wait(self) -> Result<(), FlushError> {
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;

    #[test]
    fn queued_work_runs_in_order_after_a_successful_flush_even_past_a_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::Config::new().path(dir.path()).open().expect("open");
        let committer = GroupCommitter::start(db.clone()).expect("start");
        let ran = Arc::new(Mutex::new(Vec::new()));
        let (done, finished) = std::sync::mpsc::channel();
        for n in 0..50u32 {
            db.insert(n.to_be_bytes(), &[1]).expect("insert");
            if n == 25 {
                let panics: AfterWrite = Box::new(|_| panic!("a faulty consumer"));
                committer.after_write(panics).expect("queued");
            }
            let ran = Arc::clone(&ran);
            let job: AfterWrite = Box::new(move |outcome| {
                let mut ran = ran.lock().expect("lock");
                ran.push((n, outcome.is_ok()));
            });
            committer.after_write(job).expect("queued");
        }
        let last: AfterWrite = Box::new(move |_| {
            let _ = done.send(());
        });
        committer.after_write(last).expect("queued");
        finished
            .recv_timeout(Duration::from_secs(10))
            .expect("the queued work ran");
        let ran = ran.lock().expect("lock").clone();
        let expected: Vec<(u32, bool)> = (0..50).map(|n| (n, true)).collect();
        assert_eq!(ran, expected);
    }

    #[test]
    fn queued_work_runs_once_the_writes_before_it_are_in_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::Config::new().path(dir.path()).open().expect("open");
        let committer = GroupCommitter::start(db.clone()).expect("start");
        let marker = b"written-before-the-work-ran-7f3a";
        db.insert(b"key", &marker[..]).expect("insert");
        let file = dir.path().join("db");
        let (seen, outcome) = std::sync::mpsc::channel();
        let job: AfterWrite = Box::new(move |written| {
            let bytes = std::fs::read(&file).unwrap_or_default();
            let found = bytes.windows(marker.len()).any(|w| w == marker);
            let _ = seen.send((written.is_ok(), found));
        });
        committer.after_write(job).expect("queued");
        let (ok, found) = outcome
            .recv_timeout(Duration::from_secs(10))
            .expect("the queued work ran");
        assert!(ok, "the write succeeded");
        assert!(found, "the value was in the file when the work ran");
    }
}
