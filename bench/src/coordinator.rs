//! The coordinator: starts the worker processes (this binary again, as
//! `crier-bench worker`), samples server memory, publishes, starts the storm,
//! tells the workers when to count, and merges what they report.

use crate::config::RunArgs;
use crate::cpu::cpu_secs;
use crate::memory;
use crate::publisher::{self, PublishPlan, Published};
use crate::report::{Cpu, Memory, Percentiles, PidCpu, Report, StormSummary};
use crate::target::UrlTemplate;
use crate::wire::{self, Command, Connected, Event, StormReport, WorkerResult, WorkerSpec};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin};
use tokio::sync::{Notify, mpsc};

struct Workers {
    children: Vec<Child>,
    stdins: Vec<ChildStdin>,
    events: mpsc::UnboundedReceiver<(usize, Event)>,
}

impl Workers {
    fn spawn(args: &RunArgs, run_start_nanos: u64) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| format!("own executable: {e}"))?;
        let count = args.worker_count();
        let per_worker = |rate: Option<f64>| rate.map(|r| r / count as f64);
        let (tx, events) = mpsc::unbounded_channel();
        let (mut children, mut stdins) = (Vec::new(), Vec::new());
        for index in 0..count {
            let spec = WorkerSpec {
                index,
                workers: count,
                subscribers: args.subscribers,
                channels: args.channels,
                channel_salt: args.channel_salt,
                sub_url: args.sub_url.clone(),
                source_addrs: args.source_addrs,
                connect_rate: per_worker(args.connect_rate.0),
                storm_connect_rate: per_worker(args.storm_connect_rate.0),
                max_reconnects: args.max_reconnects,
                run_start_nanos,
                lifetime_secs: args.timeout_secs + 30,
            };
            let spec = serde_json::to_string(&spec).map_err(|e| format!("worker spec: {e}"))?;
            let mut child = tokio::process::Command::new(&exe)
                .args(["worker", "--spec", &spec])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| format!("start worker {index}: {e}"))?;
            let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
                return Err(format!("worker {index}: no pipes"));
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut lines = tokio::io::BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    match serde_json::from_str::<Event>(&line) {
                        Ok(event) => {
                            if tx.send((index as usize, event)).is_err() {
                                return;
                            }
                        }
                        Err(e) => eprintln!("worker {index}: unreadable event {line:?}: {e}"),
                    }
                }
            });
            children.push(child);
            stdins.push(stdin);
        }
        Ok(Self {
            children,
            stdins,
            events,
        })
    }

    async fn tell_all(&mut self, command: &Command) -> Result<(), String> {
        let mut line = serde_json::to_string(command).map_err(|e| format!("command: {e}"))?;
        line.push('\n');
        for (i, stdin) in self.stdins.iter_mut().enumerate() {
            stdin
                .write_all(line.as_bytes())
                .await
                .map_err(|e| format!("worker {i} is gone: {e}"))?;
        }
        Ok(())
    }

    async fn next(&mut self) -> Result<(usize, Event), String> {
        self.events
            .recv()
            .await
            .ok_or_else(|| "every worker exited early (see its error above)".to_owned())
    }

    /// Asks every worker to exit and waits a little; stragglers are killed.
    async fn stop(mut self) {
        // Quit is best effort: a worker that is gone needs no telling.
        let _ = self.tell_all(&Command::Quit).await;
        self.stdins.clear();
        for child in &mut self.children {
            if tokio::time::timeout(Duration::from_secs(10), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
    }
}

/// Runs the whole benchmark within `--timeout-secs`.
pub async fn run(args: &RunArgs) -> Result<Report, String> {
    let deadline = Duration::from_secs(args.timeout_secs);
    tokio::time::timeout(deadline, run_inner(args))
        .await
        .map_err(|_| {
            format!(
                "the run took longer than --timeout-secs {}",
                args.timeout_secs
            )
        })?
}

async fn run_inner(args: &RunArgs) -> Result<Report, String> {
    let pub_url = UrlTemplate::parse(&args.pub_url).map_err(|e| e.to_string())?;
    UrlTemplate::parse(&args.sub_url).map_err(|e| e.to_string())?;
    if args.channels == 0 {
        return Err("--channels must be at least 1".to_owned());
    }
    let mut report = Report {
        sub_url: args.sub_url.clone(),
        pub_url: args.pub_url.clone(),
        subscribers: args.subscribers,
        channels: args.channels,
        workers: args.worker_count(),
        messages: args.messages,
        rate: args.rate.0,
        pub_connections: args.pub_connections,
        ..Report::default()
    };
    let mem_before = memory::sample(args.memory_pids());
    let run_start_nanos = wire::now_nanos();
    let started = Instant::now();
    let mut workers = Workers::spawn(args, run_start_nanos)?;

    let mut connect_hist = wire::new_histogram();
    let mut connected = Connected::default();
    for _ in 0..report.workers {
        match workers.next().await? {
            (_, Event::Connected(c)) => {
                c.connect_us.merge_into(&mut connect_hist);
                connected.connected += c.connected;
                connected.failed += c.failed;
                connected.connect_errors += c.connect_errors;
                connected.first_error = connected.first_error.or(c.first_error);
            }
            (i, other) => return Err(format!("worker {i}: unexpected {other:?}")),
        }
    }
    report.connect_secs = started.elapsed().as_secs_f64();
    report.connected = connected.connected;
    report.connect_failed = connected.failed;
    report.connect_errors = connected.connect_errors;
    report.connect_us = Percentiles::of(&connect_hist);
    report
        .errors
        .extend(connected.first_error.map(|e| format!("subscriber: {e}")));

    tokio::time::sleep(Duration::from_millis(args.settle_ms)).await;
    let mem_connected = memory::sample(args.memory_pids());
    let me = [std::process::id()];
    let cpu_start = CpuMark::now(&args.server_pid, &me);
    if args.idle_secs > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(args.idle_secs)).await;
    }

    let storm_at = args.reconnect_storm.then(|| {
        let at = (args.messages as f64 * args.storm_at.clamp(0.0, 1.0)) as u64;
        at.min(args.messages.saturating_sub(1))
    });
    let plan = PublishPlan {
        url: pub_url,
        body: args.pub_body.clone(),
        content_type: args.pub_content_type.clone(),
        channels: args.channels,
        channel_salt: args.channel_salt,
        total: args.messages,
        rate: args.rate.0,
        connections: args.pub_connections,
        storm_at: storm_at.filter(|_| args.messages > 0),
    };
    let storm_notify = Arc::new(Notify::new());
    let (published, storms) =
        publish_with_storm(&mut workers, plan, storm_notify, args.reconnect_storm).await?;

    let drain_ms = if args.messages > 0 {
        (args.drain_secs * 1000.0) as u64
    } else {
        0
    };
    workers
        .tell_all(&Command::Drain {
            expected: published.per_channel.clone(),
            drain_ms,
        })
        .await?;
    let mut storms = storms;
    let mut results = Vec::new();
    let want_storms = if args.reconnect_storm {
        report.workers as usize
    } else {
        0
    };
    while results.len() < report.workers as usize || storms.len() < want_storms {
        match workers.next().await? {
            (_, Event::Result(r)) => results.push(r),
            (_, Event::Storm(s)) => storms.push(s),
            (i, other) => return Err(format!("worker {i}: unexpected {other:?}")),
        }
    }
    let mem_end = memory::sample(args.memory_pids());
    report.cpu = cpu_start.since(&args.server_pid, &me);
    workers.stop().await;

    fill_publish(&mut report, &published);
    fill_results(&mut report, &results, published.started_nanos);
    if args.reconnect_storm {
        report.storm = Some(storm_summary(&storms));
    }
    if !args.memory_pids().is_empty() {
        report.memory = Some(Memory::new(
            args.memory_pids().to_vec(),
            mem_before,
            mem_connected,
            mem_end,
            report.connected,
        ));
    }
    report.lossless = report.connect_failed == 0
        && report.publish_failed == 0
        && report.lost == 0
        && report.duplicated == 0
        && report.out_of_order == 0
        && report.storm.as_ref().is_none_or(|s| s.failed == 0);
    Ok(report)
}

/// Publishes while listening for storm reports; sends the storm command when
/// the publisher reaches the storm point.
async fn publish_with_storm(
    workers: &mut Workers,
    plan: PublishPlan,
    storm: Arc<Notify>,
    storm_wanted: bool,
) -> Result<(Published, Vec<StormReport>), String> {
    let publishing = publisher::publish(plan, storm.clone());
    tokio::pin!(publishing);
    let mut storm_sent = !storm_wanted;
    let mut storms = Vec::new();
    loop {
        tokio::select! {
            published = &mut publishing => {
                if !storm_sent {
                    // Nothing to publish, or the storm point was never reached.
                    workers.tell_all(&Command::Storm).await?;
                }
                return Ok((published, storms));
            }
            _ = storm.notified(), if !storm_sent => {
                storm_sent = true;
                workers.tell_all(&Command::Storm).await?;
            }
            event = workers.next() => match event? {
                (_, Event::Storm(s)) => storms.push(s),
                (i, other) => return Err(format!("worker {i}: unexpected {other:?}")),
            },
        }
    }
}

/// CPU times at the start of the measured span.
struct CpuMark {
    at: Instant,
    per_server: Vec<f64>,
    server: f64,
    generator: f64,
}

impl CpuMark {
    fn now(servers: &[u32], generator: &[u32]) -> Self {
        Self {
            at: Instant::now(),
            per_server: servers.iter().map(|&pid| cpu_secs(&[pid])).collect(),
            server: cpu_secs(servers),
            generator: cpu_secs(generator),
        }
    }

    /// CPU seconds spent since the mark.
    fn since(&self, servers: &[u32], generator: &[u32]) -> Cpu {
        let server_by_pid = servers
            .iter()
            .zip(&self.per_server)
            .map(|(&pid, &before)| PidCpu {
                pid,
                secs: centis(cpu_secs(&[pid]) - before),
            })
            .collect();
        Cpu {
            wall_secs: self.at.elapsed().as_secs_f64(),
            server_secs: centis(cpu_secs(servers) - self.server),
            server_by_pid,
            generator_secs: centis(cpu_secs(generator) - self.generator),
        }
    }
}

fn fill_publish(report: &mut Report, published: &Published) {
    report.publish_ok = published.ok;
    report.publish_failed = published.failed;
    report.publish_refused = published.refused;
    report.post_latency_us = Percentiles::of(&published.latency_us);
    report.publish_secs = published.secs;
    report.messages_per_sec = rate(published.ok, published.secs);
    report.errors.extend(
        published
            .first_error
            .clone()
            .map(|e| format!("publisher: {e}")),
    );
}

fn fill_results(report: &mut Report, results: &[WorkerResult], publish_started_nanos: u64) {
    let mut latency = wire::new_histogram();
    let mut last_delivery = 0;
    for r in results {
        r.latency_us.merge_into(&mut latency);
        report.deliveries += r.deliveries;
        report.expected_deliveries += r.expected;
        report.lost += r.lost;
        report.duplicated += r.duplicated;
        report.out_of_order += r.out_of_order;
        report.reordered_concurrent += r.reordered_concurrent;
        report.stale += r.stale;
        report.reconnects += r.reconnects;
        report.complete_subscribers += r.complete_subscribers;
        report.incomplete_subscribers += r.incomplete_subscribers;
        last_delivery = last_delivery.max(r.last_delivery_nanos);
        if let Some(e) = &r.first_error {
            let e = format!("subscriber: {e}");
            if report.errors.len() < 4 && !report.errors.contains(&e) {
                report.errors.push(e);
            }
        }
    }
    report.latency_us = Percentiles::of(&latency);
    report.delivery_secs = last_delivery.saturating_sub(publish_started_nanos) as f64 / 1e9;
    report.deliveries_per_sec = rate(report.deliveries, report.delivery_secs);
}

fn storm_summary(storms: &[StormReport]) -> StormSummary {
    StormSummary {
        dropped: storms.iter().map(|s| s.dropped).sum(),
        reconnected: storms.iter().map(|s| s.reconnected).sum(),
        failed: storms.iter().map(|s| s.failed).sum(),
        live_secs: storms.iter().map(|s| s.live_ms).max().unwrap_or(0) as f64 / 1000.0,
    }
}

/// CPU times come in hundredths of a second; drop the float noise.
fn centis(secs: f64) -> f64 {
    (secs * 100.0).round() / 100.0
}

fn rate(count: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        (count as f64 / secs).round()
    } else {
        0.0
    }
}
