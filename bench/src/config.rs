//! Command line. The defaults drive a Crier listening on 127.0.0.1:8080.

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "crier-bench",
    version,
    about = "Load generator: SSE subscribers, paced publishers, latency, loss and server memory",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// One subscriber process; started by the coordinator, talks JSON lines.
    #[command(hide = true)]
    Worker {
        #[arg(long)]
        spec: String,
    },
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// SSE URL; `{channel}` becomes the channel UUID.
    #[arg(
        long,
        default_value = "http://127.0.0.1:8080/channels/{channel}/events"
    )]
    pub sub_url: String,
    /// Publish URL (POST); `{channel}` becomes the channel UUID.
    #[arg(
        long,
        default_value = "http://127.0.0.1:8080/channels/{channel}/messages"
    )]
    pub pub_url: String,
    /// Publish body; `{text}` becomes `bench <seq> <send-nanos> <acked>`, also `{channel}`, `{seq}`.
    #[arg(long, default_value = r#"{"author":"bench","text":"{text}"}"#)]
    pub pub_body: String,
    #[arg(long, default_value = "application/json")]
    pub pub_content_type: String,
    /// SSE subscribers in total; subscriber i listens on channel i % channels.
    #[arg(long, default_value_t = 100)]
    pub subscribers: u64,
    #[arg(long, default_value_t = 1)]
    pub channels: u64,
    /// Messages to publish in total, round-robin over the channels.
    #[arg(long, default_value_t = 0)]
    pub messages: u64,
    /// Messages per second over all publish connections, or `max`.
    #[arg(long, default_value = "max", value_parser = parse_rate)]
    pub rate: Rate,
    /// Keep-alive publish connections (= requests in flight).
    #[arg(long, default_value_t = 16)]
    pub pub_connections: usize,
    /// Subscriber processes; default: enough for `--max-per-worker` each.
    #[arg(long)]
    pub workers: Option<u64>,
    #[arg(long, default_value_t = 15_000)]
    pub max_per_worker: u64,
    /// Source addresses 127.0.0.2 … for subscribers of a loopback target (0: let the kernel pick).
    #[arg(long, default_value_t = 8)]
    pub source_addrs: u32,
    /// New subscriber connections per second over all workers (`5000/s`, `max`).
    #[arg(long, default_value = "5000/s", value_parser = parse_rate)]
    pub connect_rate: Rate,
    /// Hold the subscribers this long after they are connected, before publishing.
    #[arg(long, default_value_t = 0.0)]
    pub idle_secs: f64,
    /// After all are connected, wait this long before sampling server memory.
    #[arg(long, default_value_t = 1000)]
    pub settle_ms: u64,
    /// After the last publish, wait at most this long for deliveries before counting losses.
    #[arg(long, default_value_t = 10.0)]
    pub drain_secs: f64,
    /// While messages flow, every subscriber drops its stream and reconnects with `Last-Event-ID`.
    #[arg(long)]
    pub reconnect_storm: bool,
    /// The storm starts once this fraction of the messages is published.
    #[arg(long, default_value_t = 0.5)]
    pub storm_at: f64,
    /// Reconnects per second during the storm over all workers (`max`: all at once).
    #[arg(long, default_value = "max", value_parser = parse_rate)]
    pub storm_connect_rate: Rate,
    /// Times one subscriber reconnects after its stream ended unasked.
    #[arg(long, default_value_t = 10)]
    pub max_reconnects: u32,
    /// Limit for the whole run.
    #[arg(long, default_value_t = 120)]
    pub timeout_secs: u64,
    /// Server process whose CPU time (with its child processes) is measured, and
    /// memory (RSS, PSS) sampled unless `--memory-pid` says otherwise. Repeatable or
    /// comma-separated, for a server made of several processes: CPU times add up.
    #[arg(long, value_delimiter = ',')]
    pub server_pid: Vec<u32>,
    /// Sample memory of these processes (with their children) instead of every
    /// `--server-pid`: the ones that hold the streams. Repeatable or comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub memory_pid: Vec<u32>,
    /// Changes every channel UUID, so runs against a server with history do not meet old messages.
    #[arg(long, default_value_t = 0)]
    pub channel_salt: u32,
    /// Exit non-zero on any lost, duplicated or out-of-order delivery or failed publish.
    #[arg(long)]
    pub assert_lossless: bool,
}

impl RunArgs {
    /// The processes whose memory is sampled.
    pub fn memory_pids(&self) -> &[u32] {
        if self.memory_pid.is_empty() {
            &self.server_pid
        } else {
            &self.memory_pid
        }
    }

    pub fn worker_count(&self) -> u64 {
        let needed = self.subscribers.div_ceil(self.max_per_worker.max(1));
        self.workers
            .unwrap_or(needed)
            .clamp(1, self.subscribers.max(1))
    }
}

/// Events per second, or `None` for as fast as possible.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate(pub Option<f64>);

/// `max` (or `0`) → unpaced, `5000` or `5000/s` → 5000 per second.
pub fn parse_rate(s: &str) -> Result<Rate, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("max") {
        return Ok(Rate(None));
    }
    let number = s.strip_suffix("/s").unwrap_or(s);
    match number.parse::<f64>() {
        Ok(0.0) => Ok(Rate(None)),
        Ok(r) if r.is_finite() && r > 0.0 => Ok(Rate(Some(r))),
        _ => Err(format!(
            "`{s}` is not a rate: use a number per second or `max`"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse() {
        assert_eq!(parse_rate("max"), Ok(Rate(None)));
        assert_eq!(parse_rate("5000/s"), Ok(Rate(Some(5000.0))));
        assert_eq!(parse_rate("2.5"), Ok(Rate(Some(2.5))));
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("-1").is_err());
    }

    #[test]
    fn workers_hold_at_most_max_per_worker() {
        let cli = Cli::parse_from(["crier-bench", "--subscribers", "40000"]);
        assert_eq!(cli.run.worker_count(), 3);
        let cli = Cli::parse_from(["crier-bench", "--subscribers", "10", "--workers", "4"]);
        assert_eq!(cli.run.worker_count(), 4);
    }

    #[test]
    fn server_pids_repeat_or_split_on_commas() {
        let cli = Cli::parse_from(["crier-bench", "--server-pid", "7,8", "--server-pid", "9"]);
        assert_eq!(cli.run.server_pid, [7, 8, 9]);
        assert_eq!(cli.run.memory_pids(), [7, 8, 9]);
        let cli = Cli::parse_from(["crier-bench", "--server-pid", "7,8", "--memory-pid", "8"]);
        assert_eq!(cli.run.memory_pids(), [8]);
    }
}
