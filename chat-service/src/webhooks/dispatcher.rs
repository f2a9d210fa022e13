//! The dispatcher: learns which channels have new entries and runs their lanes.
//!
//! It keeps, per webhook and channel with something to deliver, a [`Lane`]:
//! the cursor (when known), the last id it heard of, and whether a run is in
//! progress. The store's notices ([`crate::store::notices`]) raise the last
//! ids; when one was dropped (the notice queue was full) the next tick rescans
//! the store's last ids against the persisted cursors. Ready lanes start runs
//! ([`super::lane`]) in a `JoinSet` it owns, at most `--webhook-concurrency`
//! at once per webhook, and a lane runs again at the earliest `--webhook-linger`
//! after its last run began, so a busy channel's events gather into batches
//! while a quiet one's go at once; a lane that caught up and stayed idle is forgotten (its
//! cursor is in the store). Stopping the dispatcher drops the set, which ends
//! every run; what they delivered is recorded already.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use protocol::ChannelId;
use tokio::task::{Id, JoinSet};
use tokio::time::Instant;

use super::endpoint::Endpoint;
use super::lane::{Context, Run};
use crate::store::Store;
use crate::store::notices::{Notice, NoticeReceiver};

/// How often lanes left behind are looked at, and a dropped notice noticed.
const TICK: Duration = Duration::from_secs(1);
/// A caught-up lane idle this long is forgotten: by then its last cursor is
/// long in the store.
const IDLE_LANE: Duration = Duration::from_secs(60);

type LaneKey = (usize, ChannelId);

/// One webhook's deliveries of one channel.
struct Lane {
    /// The last id delivered, as of the last run's end (`None`: in the store).
    cursor: Option<u64>,
    /// The last id of the channel the dispatcher heard of.
    last_known: u64,
    /// The cursor as the current run moves it.
    progress: Arc<AtomicU64>,
    running: bool,
    queued: bool,
    /// `last_known` when the current run started.
    run_for: u64,
    /// When it was last run or told of a new id.
    touched: Instant,
    /// It may not run again before this (see [`Dispatcher::linger`]).
    not_before: Instant,
}

impl Lane {
    fn new(cursor: Option<u64>, last_known: u64) -> Self {
        let shown = cursor.unwrap_or(last_known.saturating_sub(1));
        Lane {
            cursor,
            last_known,
            progress: Arc::new(AtomicU64::new(shown)),
            running: false,
            queued: false,
            run_for: 0,
            touched: Instant::now(),
            not_before: Instant::now(),
        }
    }

    fn behind(&self) -> bool {
        self.cursor.is_none_or(|cursor| cursor < self.last_known)
    }

    fn backlog(&self) -> u64 {
        self.last_known
            .saturating_sub(self.progress.load(Ordering::Relaxed))
    }
}

pub(super) struct Dispatcher {
    context: Arc<Context>,
    endpoints: Vec<Arc<Endpoint>>,
    lanes: HashMap<LaneKey, Lane>,
    /// Per webhook, the channels whose lane waits for a run.
    ready: Vec<VecDeque<ChannelId>>,
    runs: JoinSet<Option<u64>>,
    run_keys: HashMap<Id, LaneKey>,
    running_per_webhook: Vec<usize>,
    concurrency: usize,
    notices: NoticeReceiver,
    backlog: Arc<AtomicU64>,
    /// The least time between the starts of two runs of a lane.
    linger: Duration,
    /// Lanes with entries to deliver that wait out their linger, by when.
    lingering: Vec<(Instant, LaneKey)>,
}

impl Dispatcher {
    pub fn new(
        context: Arc<Context>,
        endpoints: Vec<Arc<Endpoint>>,
        concurrency: usize,
        linger: Duration,
        notices: NoticeReceiver,
        backlog: Arc<AtomicU64>,
    ) -> Self {
        let running_per_webhook = vec![0; endpoints.len()];
        let ready = vec![VecDeque::new(); endpoints.len()];
        Dispatcher {
            context,
            endpoints,
            lanes: HashMap::new(),
            ready,
            runs: JoinSet::new(),
            run_keys: HashMap::new(),
            running_per_webhook,
            concurrency: concurrency.max(1),
            notices,
            backlog,
            linger,
            lingering: Vec::new(),
        }
    }

    /// Lanes the store's state asks for at start: per webhook, its cursors
    /// and the last ids of every channel.
    pub fn behind(
        &mut self,
        webhook: usize,
        cursors: &HashMap<ChannelId, u64>,
        last_ids: &HashMap<ChannelId, u64>,
    ) {
        for (channel, last) in last_ids {
            let cursor = cursors.get(channel).copied().unwrap_or(0);
            if *last > cursor {
                self.heard_of((webhook, *channel), Some(cursor), *last);
            }
        }
    }

    /// Delivers until the service stops (the task is dropped) or the store is gone.
    pub async fn run(mut self) {
        let mut ticks = tokio::time::interval(TICK);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.start_ready();
            let lingered = self.lingering.iter().map(|(at, _)| *at).min();
            tokio::select! {
                () = tokio::time::sleep_until(lingered.unwrap_or_else(Instant::now)), if lingered.is_some() => {
                    self.lingered();
                }
                notice = self.notices.notices.recv() => match notice {
                    Some(notice) => self.noticed(notice),
                    None => return,
                },
                Some(ended) = self.runs.join_next_with_id(), if !self.runs.is_empty() => {
                    match ended {
                        Ok((id, cursor)) => self.ended(id, cursor),
                        Err(e) => {
                            log::error!("a webhook delivery run failed: {e}");
                            self.ended(e.id(), None);
                        }
                    }
                }
                _ = ticks.tick() => self.tick().await,
            }
        }
    }

    fn noticed(&mut self, notice: Notice) {
        for webhook in 0..self.endpoints.len() {
            for (channel, last) in &notice {
                self.heard_of((webhook, *channel), None, *last);
            }
        }
    }

    /// The lane's channel has entries up to `last`; `cursor`, when given, is
    /// what the store holds for a lane not in memory.
    fn heard_of(&mut self, key: LaneKey, cursor: Option<u64>, last: u64) {
        let lane = self
            .lanes
            .entry(key)
            .or_insert_with(|| Lane::new(cursor, last));
        lane.last_known = lane.last_known.max(last);
        lane.touched = Instant::now();
        if !lane.running && !lane.queued && lane.behind() {
            self.queue(key);
        }
    }

    /// Queues the lane to run: now, or once its linger is over.
    fn queue(&mut self, key: LaneKey) {
        let Some(lane) = self.lanes.get_mut(&key) else {
            return;
        };
        lane.queued = true;
        if lane.not_before <= Instant::now() {
            self.ready[key.0].push_back(key.1);
        } else {
            self.lingering.push((lane.not_before, key));
        }
    }

    /// Lanes whose linger is over become ready.
    fn lingered(&mut self) {
        let now = Instant::now();
        let (over, waiting) = self.lingering.drain(..).partition(|(at, _)| *at <= now);
        self.lingering = waiting;
        let over: Vec<(Instant, LaneKey)> = over;
        for (_, key) in over {
            self.ready[key.0].push_back(key.1);
        }
    }

    /// Starts runs of ready lanes while their webhook has room.
    fn start_ready(&mut self) {
        for webhook in 0..self.endpoints.len() {
            while self.running_per_webhook[webhook] < self.concurrency {
                let Some(channel) = self.ready[webhook].pop_front() else {
                    break;
                };
                self.start((webhook, channel));
            }
        }
    }

    fn start(&mut self, key: LaneKey) {
        let Some(lane) = self.lanes.get_mut(&key) else {
            return;
        };
        lane.queued = false;
        lane.running = true;
        lane.run_for = lane.last_known;
        lane.not_before = Instant::now() + self.linger;
        let run = Run {
            context: self.context.clone(),
            endpoint: self.endpoints[key.0].clone(),
            channel: key.1,
            cursor: lane.cursor,
            progress: lane.progress.clone(),
        };
        let handle = self.runs.spawn(run.deliver_all());
        self.run_keys.insert(handle.id(), key);
        self.running_per_webhook[key.0] += 1;
    }

    fn ended(&mut self, id: Id, cursor: Option<u64>) {
        let Some(key) = self.run_keys.remove(&id) else {
            return;
        };
        self.running_per_webhook[key.0] -= 1;
        let Some(lane) = self.lanes.get_mut(&key) else {
            return;
        };
        lane.running = false;
        lane.touched = Instant::now();
        if cursor.is_some() {
            lane.cursor = cursor;
        }
        if lane.last_known > lane.run_for && lane.behind() && !lane.queued {
            // New entries were noticed during the run. A run that stopped
            // short of what it was started for (a failed read) waits for the
            // next tick instead, so a failing store is not read in a loop.
            self.queue(key);
        }
    }

    /// Rescans after a dropped notice, runs again lanes left behind (a read
    /// failed, or the entries were not synced yet), forgets idle ones.
    async fn tick(&mut self) {
        if self.notices.take_missed() {
            self.rescan().await;
        }
        let now = Instant::now();
        self.lanes.retain(|_, lane| {
            lane.running || lane.behind() || now.duration_since(lane.touched) < IDLE_LANE
        });
        let behind: Vec<LaneKey> = self
            .lanes
            .iter()
            .filter(|(_, lane)| !lane.running && !lane.queued && lane.behind())
            .map(|(key, _)| *key)
            .collect();
        for key in behind {
            self.queue(key);
        }
        self.show_backlog();
    }

    /// Compares the store's last ids with every webhook's cursors.
    async fn rescan(&mut self) {
        let hooks: Vec<u64> = self.endpoints.iter().map(|e| e.id()).collect();
        let store = self.context.store.clone();
        let read = self
            .context
            .background
            .blocking(move || read_positions(&store, &hooks))
            .await;
        let (last_ids, cursors) = match read {
            Ok(Ok(positions)) => positions,
            Ok(Err(e)) => return log::error!("webhooks: cannot rescan the store: {e}"),
            Err(e) => return log::error!("webhooks: the rescan did not finish: {e}"),
        };
        log::info!(
            "webhooks: notices were dropped; rescanned {} channels",
            last_ids.len()
        );
        for (webhook, cursors) in cursors.iter().enumerate() {
            self.behind(webhook, cursors, &last_ids);
        }
    }

    fn show_backlog(&self) {
        let backlog = self.lanes.values().map(Lane::backlog).sum();
        self.backlog.store(backlog, Ordering::Relaxed);
    }
}

/// The last id of every channel, and each webhook's cursors.
pub(super) type Positions = (HashMap<ChannelId, u64>, Vec<HashMap<ChannelId, u64>>);

pub(super) fn read_positions(store: &Store, hooks: &[u64]) -> Result<Positions, sled::Error> {
    let last_ids = store.last_ids()?;
    let cursors = hooks
        .iter()
        .map(|hook| store.webhook_cursors(*hook).map(|found| found.cursors))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((last_ids, cursors))
}
