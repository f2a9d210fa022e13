//! The background tasks of a service, started in one place and stopped in one
//! place.
//!
//! Every long-lived task (the publisher, the subscriber, the MQTT intake,
//! presence, retention, heartbeats, the hub's backfills) is spawned through a
//! [`Background`] made at start-up, on the runtime that made it: a tracker
//! knows each one, and at a stop the service cancels them all and waits for
//! them under a deadline. A task that must do something before it ends (the
//! publisher persists its watermarks) watches [`Background::stopping`] itself;
//! the others are simply dropped at their next `.await`. Blocking work runs
//! on the same runtime's blocking pool ([`Background::blocking`]), the one
//! pool of the process.

use std::future::Future;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::task::JoinHandle;
pub use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Cheap-to-clone handle to a service's background tasks.
#[derive(Clone, Debug)]
pub struct Background {
    runtime: Handle,
    tracker: TaskTracker,
    stop: CancellationToken,
}

/// How long a service's stop waits for its background tasks (the publisher
/// persisting its watermarks among them) once its server has stopped.
pub const GRACE: Duration = Duration::from_secs(5);

impl Background {
    /// Background tasks on the current runtime. `None` outside one.
    pub fn on_current_runtime() -> Option<Self> {
        let runtime = Handle::try_current().ok()?;
        Some(Background {
            runtime,
            tracker: TaskTracker::new(),
            stop: CancellationToken::new(),
        })
    }

    /// Runs `task` until it ends or the service stops, whichever comes first;
    /// from any thread.
    pub fn spawn<F>(&self, task: F) -> JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let stop = self.stop.clone();
        let task = async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = task => {}
            }
        };
        self.tracker.spawn_on(task, &self.runtime)
    }

    /// Runs `task`, which ends by itself once [`Background::stopping`] fires
    /// (for a task with something to finish at a stop).
    pub fn spawn_until_stopped<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn_on(task, &self.runtime)
    }

    /// Runs the blocking `work` (a store read, a plan) on the blocking pool of
    /// the service's runtime: one pool for the whole process, whichever thread
    /// asks (an HTTP worker, a stream thread or a background task).
    pub fn blocking<T, F>(&self, work: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.runtime.spawn_blocking(work)
    }

    /// Fires when the service stops.
    pub fn stopping(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Stops every task and waits up to `grace` for them to end; `false` if
    /// some did not.
    pub async fn stop(&self, grace: Duration) -> bool {
        self.stop.cancel();
        self.tracker.close();
        tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok()
    }

    /// The stop at the end of a service: [`stop`](Self::stop) with
    /// [`GRACE`], and a warning naming how many tasks outlived it.
    pub async fn finish(&self) {
        if !self.stop(GRACE).await {
            log::warn!(
                "{} background tasks still running {GRACE:?} after the stop",
                self.running()
            );
        }
    }

    /// Tasks still running.
    pub fn running(&self) -> usize {
        self.tracker.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stop_ends_every_task_and_waits_for_those_that_finish_their_work() {
        let background = Background::on_current_runtime().expect("runtime");
        background.spawn(std::future::pending());
        let (finished, mut told) = tokio::sync::mpsc::channel(1);
        let stopping = background.stopping();
        background.spawn_until_stopped(async move {
            stopping.cancelled().await;
            let _ = finished.send("persisted").await;
        });
        assert_eq!(background.running(), 2);
        assert!(background.stop(Duration::from_secs(5)).await, "all ended");
        assert_eq!(background.running(), 0);
        assert_eq!(told.recv().await, Some("persisted"));
    }

    #[tokio::test]
    async fn a_task_that_ignores_the_stop_is_reported_after_the_grace() {
        let background = Background::on_current_runtime().expect("runtime");
        background.spawn_until_stopped(std::future::pending::<()>());
        assert!(!background.stop(Duration::from_millis(50)).await);
    }
}
