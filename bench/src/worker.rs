//! A worker process: holds its share of the subscribers on one thread and
//! answers the coordinator's commands (stdin) with events (stdout), one JSON
//! object per line. State lives in `RefCell`s in one `Rc`: every task runs on
//! this thread and no borrow is held across an `.await`.

use crate::http::BodyDecoder;
use crate::sse::{Item, SseParser};
use crate::target::{UrlTemplate, channel_id};
use crate::tracker::SeqTracker;
use crate::wire::{self, Command, Connected, Event, Hist, StormReport, WorkerResult, WorkerSpec};
use hdrhistogram::Histogram;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;
use tokio::sync::{Notify, watch};

/// Size of the one read buffer all subscribers of a worker share.
const SCRATCH: usize = 64 * 1024;
/// How often the storm and drain waits look at the subscribers.
const POLL: Duration = Duration::from_millis(10);

#[derive(Debug, Default)]
pub struct SubState {
    tracker: SeqTracker,
    last_id: Option<Box<[u8]>>,
    /// Storm generation of the open stream; `None` while not connected.
    live: Option<u32>,
    ever_connected: bool,
    gave_up: bool,
}

pub struct Ctx {
    pub spec: WorkerSpec,
    pub target: UrlTemplate,
    pub pacer: Pacer,
    pub storm_pacer: Pacer,
    pub storm: watch::Sender<u32>,
    pub scratch: RefCell<Vec<u8>>,
    pub reconnects: Cell<u64>,
    subs: RefCell<Vec<SubState>>,
    latency: RefCell<Histogram<u64>>,
    connect_us: RefCell<Histogram<u64>>,
    first_pending: Cell<u64>,
    first_done: Notify,
    connect_errors: Cell<u64>,
    deliveries: Cell<u64>,
    stale: Cell<u64>,
    last_delivery_nanos: Cell<u64>,
    last_live: Cell<Option<Instant>>,
    first_error: RefCell<Option<String>>,
}

impl Ctx {
    pub fn global_index(&self, local: usize) -> u64 {
        self.spec.index + local as u64 * self.spec.workers
    }

    fn channel(&self, local: usize) -> usize {
        (self.global_index(local) % self.spec.channels.max(1)) as usize
    }

    pub fn request_for(&self, local: usize) -> String {
        let channel = channel_id(self.spec.channel_salt, self.channel(local) as u64);
        let path = self.target.path_for(&channel);
        let mut request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n",
            self.target.host
        );
        if let Some(id) = &self.subs.borrow()[local].last_id {
            request.push_str("Last-Event-ID: ");
            request.push_str(&String::from_utf8_lossy(id));
            request.push_str("\r\n");
        }
        request.push_str("\r\n");
        request
    }

    pub fn note_error(&self, e: String) {
        let mut first = self.first_error.borrow_mut();
        if first.is_none() {
            *first = Some(e);
        }
    }

    pub fn note_connect_error(&self, e: String) {
        self.connect_errors.set(self.connect_errors.get() + 1);
        self.note_error(e);
    }

    pub fn now_live(&self, local: usize, generation: u32, took: Duration, first: bool) {
        let mut subs = self.subs.borrow_mut();
        subs[local].live = Some(generation);
        subs[local].ever_connected = true;
        self.connect_us
            .borrow_mut()
            .saturating_record(took.as_micros() as u64);
        self.last_live.set(Some(Instant::now()));
        if first {
            self.first_finished();
        }
    }

    pub fn give_up(&self, local: usize, first: bool) {
        let mut subs = self.subs.borrow_mut();
        subs[local].live = None;
        subs[local].gave_up = true;
        if first {
            self.first_finished();
        }
    }

    fn first_finished(&self) {
        self.first_pending
            .set(self.first_pending.get().saturating_sub(1));
        if self.first_pending.get() == 0 {
            self.first_done.notify_one();
        }
    }

    /// Body bytes of subscriber `local` arrived.
    pub fn deliver(
        &self,
        local: usize,
        body: &mut BodyDecoder,
        parser: &mut SseParser,
        input: &[u8],
    ) -> Result<(), String> {
        let now = wire::now_nanos();
        let mut subs = self.subs.borrow_mut();
        let sub = &mut subs[local];
        let mut latency = self.latency.borrow_mut();
        crate::subscriber::feed(body, parser, input, &mut |item| match item {
            Item::Id(id) => sub.last_id = Some(id.into()),
            Item::Event(stamp) if stamp.nanos < self.spec.run_start_nanos => {
                self.stale.set(self.stale.get() + 1);
            }
            Item::Event(stamp) => {
                latency.saturating_record(now.saturating_sub(stamp.nanos) / 1000);
                sub.tracker.record(stamp.seq, stamp.acked);
                self.deliveries.set(self.deliveries.get() + 1);
                self.last_delivery_nanos.set(now);
            }
        })
    }
}

/// Spaces out connection attempts: at most `rate` per second.
pub struct Pacer {
    interval: Option<Duration>,
    next: Cell<Instant>,
}

impl Pacer {
    fn new(rate: Option<f64>) -> Self {
        Self {
            interval: rate.map(|r| Duration::from_secs_f64(1.0 / r)),
            next: Cell::new(Instant::now()),
        }
    }

    pub async fn acquire(&self) {
        let Some(interval) = self.interval else {
            return;
        };
        let now = Instant::now();
        let slot = self.next.get().max(now);
        self.next.set(slot + interval);
        if slot > now {
            tokio::time::sleep_until(slot.into()).await;
        }
    }
}

/// Entry point of `crier-bench worker --spec <json>`.
pub fn main(spec: &str) -> Result<(), String> {
    let spec: WorkerSpec = serde_json::from_str(spec).map_err(|e| format!("worker spec: {e}"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, run(spec))
}

async fn run(spec: WorkerSpec) -> Result<(), String> {
    let target = UrlTemplate::parse(&spec.sub_url).map_err(|e| e.to_string())?;
    let count = spec
        .subscribers
        .saturating_sub(spec.index)
        .div_ceil(spec.workers.max(1));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(spec.lifetime_secs);
    let ctx = Rc::new(Ctx {
        pacer: Pacer::new(spec.connect_rate),
        storm_pacer: Pacer::new(spec.storm_connect_rate),
        storm: watch::Sender::new(0),
        scratch: RefCell::new(vec![0; SCRATCH]),
        reconnects: Cell::new(0),
        subs: RefCell::new((0..count).map(|_| SubState::default()).collect()),
        latency: RefCell::new(wire::new_histogram()),
        connect_us: RefCell::new(wire::new_histogram()),
        first_pending: Cell::new(count),
        first_done: Notify::new(),
        connect_errors: Cell::new(0),
        deliveries: Cell::new(0),
        stale: Cell::new(0),
        last_delivery_nanos: Cell::new(0),
        last_live: Cell::new(None),
        first_error: RefCell::new(None),
        target,
        spec,
    });
    for local in 0..count as usize {
        tokio::task::spawn_local(crate::subscriber::run(ctx.clone(), local));
    }
    if count > 0 {
        // The deadline ends the wait; the report then shows who is missing.
        let _ = tokio::time::timeout_at(deadline, ctx.first_done.notified()).await;
    }
    emit(&Event::Connected(connected_report(&ctx)));

    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Ok(Some(line))) = tokio::time::timeout_at(deadline, lines.next_line()).await {
        match serde_json::from_str::<Command>(&line) {
            Ok(Command::Storm) => {
                tokio::task::spawn_local(storm(ctx.clone()));
            }
            Ok(Command::Drain { expected, drain_ms }) => {
                tokio::task::spawn_local(drain(ctx.clone(), expected, drain_ms));
            }
            Ok(Command::Quit) => break,
            Err(e) => eprintln!("worker {}: bad command {line:?}: {e}", ctx.spec.index),
        }
    }
    Ok(())
}

fn emit(event: &Event) {
    match serde_json::to_string(event) {
        Ok(line) => println!("{line}"),
        Err(e) => eprintln!("worker: cannot encode an event: {e}"),
    }
}

fn connected_report(ctx: &Ctx) -> Connected {
    let subs = ctx.subs.borrow();
    let connected = subs.iter().filter(|s| s.ever_connected).count() as u64;
    Connected {
        connected,
        failed: subs.len() as u64 - connected,
        connect_errors: ctx.connect_errors.get(),
        connect_us: Hist::from_histogram(&ctx.connect_us.borrow()),
        first_error: ctx.first_error.borrow().clone(),
    }
}

async fn storm(ctx: Rc<Ctx>) {
    let started = Instant::now();
    let dropped = ctx
        .subs
        .borrow()
        .iter()
        .filter(|s| s.live.is_some())
        .count() as u64;
    ctx.storm.send_modify(|g| *g += 1);
    let generation = *ctx.storm.borrow();
    let deadline = started + Duration::from_secs(ctx.spec.lifetime_secs);
    let (reconnected, failed) = loop {
        let (live, gave_up, total) = {
            let subs = ctx.subs.borrow();
            let live = subs.iter().filter(|s| s.live == Some(generation)).count();
            let gave_up = subs.iter().filter(|s| s.gave_up).count();
            (live, gave_up, subs.len())
        };
        if live + gave_up >= total || Instant::now() >= deadline {
            break (live as u64, (total - live) as u64);
        }
        tokio::time::sleep(POLL).await;
    };
    let live_ms = ctx.last_live.get().map_or(0, |t| {
        t.saturating_duration_since(started).as_millis() as u64
    });
    emit(&Event::Storm(StormReport {
        dropped,
        reconnected,
        failed,
        live_ms,
    }));
}

async fn drain(ctx: Rc<Ctx>, expected: Vec<u64>, drain_ms: u64) {
    let deadline = Instant::now() + Duration::from_millis(drain_ms);
    let expected_of = |local: usize| expected.get(ctx.channel(local)).copied().unwrap_or(0);
    loop {
        let all_done = ctx
            .subs
            .borrow()
            .iter()
            .enumerate()
            .filter(|(_, s)| s.ever_connected)
            .all(|(local, s)| s.tracker.complete(expected_of(local)));
        if all_done || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    let mut result = WorkerResult {
        deliveries: ctx.deliveries.get(),
        stale: ctx.stale.get(),
        reconnects: ctx.reconnects.get(),
        latency_us: Hist::from_histogram(&ctx.latency.borrow()),
        last_delivery_nanos: ctx.last_delivery_nanos.get(),
        first_error: ctx.first_error.borrow().clone(),
        ..WorkerResult::default()
    };
    for (local, sub) in ctx.subs.borrow().iter().enumerate() {
        if !sub.ever_connected {
            continue;
        }
        let want = expected_of(local);
        let lost = sub.tracker.lost(want);
        result.expected += want;
        result.lost += lost;
        result.duplicated += sub.tracker.duplicated;
        result.out_of_order += sub.tracker.out_of_order;
        result.reordered_concurrent += sub.tracker.reordered_concurrent;
        if lost == 0 {
            result.complete_subscribers += 1;
        } else {
            result.incomplete_subscribers += 1;
        }
    }
    emit(&Event::Result(result));
}
