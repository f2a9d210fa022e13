//! Command-line flags, each with a `CRIER_*` environment fallback.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser};
use server::auth::AuthSettings;
use server::mqtt::MqttSettings;
use server::settings::ServerSettings;

use crate::store::{DEFAULT_CACHE_BYTES, StoreSettings};
use crate::webhooks::endpoint::Endpoint;

/// `--store-cache`'s default, in MiB: the store's own default.
const STORE_CACHE_MIB: u64 = DEFAULT_CACHE_BYTES / (1024 * 1024);
use crate::store::retention::RetentionPolicy;

/// `chat-service`: REST ingest and history for Crier.
#[derive(Debug, Clone, Parser)]
#[command(name = "chat-service", version, about)]
pub struct Config {
    /// TOML file of settings, keys named as the flags (`durable-ack = false`);
    /// flags and environment variables win over it.
    #[arg(long, env = "CRIER_CONFIG")]
    pub config: Option<std::path::PathBuf>,

    /// Address to listen on (`127.0.0.1:0` picks a free port).
    #[arg(long, env = "CRIER_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,

    #[command(flatten)]
    pub mqtt: MqttSettings,

    #[command(flatten)]
    pub chat: ChatSettings,

    #[command(flatten)]
    pub nats: NatsSettings,

    #[command(flatten)]
    pub auth: AuthSettings,

    #[command(flatten)]
    pub server: ServerSettings,
}

/// What the chat-service needs besides its address and broker; shared with the
/// all-in-one binary.
#[derive(Debug, Clone, Args)]
pub struct ChatSettings {
    /// Directory of the sled database holding history.
    #[arg(long, env = "CRIER_DATA_DIR", default_value = "./crier-data")]
    pub data_dir: PathBuf,

    /// Answer `201` only once the message is flushed to disk. `false` answers as
    /// soon as it is written to the store's memory: faster, but a crash can lose
    /// acknowledged messages. Subscribers still only see flushed messages.
    #[arg(long, env = "CRIER_DURABLE_ACK", default_value_t = true, action = clap::ArgAction::Set)]
    pub durable_ack: bool,

    /// Messages waiting to be stored at most. When the store is this far behind,
    /// a POST is answered `503` with `Retry-After` and nothing is stored.
    #[arg(long, env = "CRIER_INGEST_QUEUE", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    pub ingest_queue: u32,

    /// How long a message may wait for the store before it is refused at
    /// once with `503` and `Retry-After` (nothing stored), like `20ms`; `0`
    /// refuses only when the ingest queue is full. Keeps a burst from making
    /// every message wait behind it.
    #[arg(long, env = "CRIER_MAX_QUEUE_DELAY", default_value = "20ms", value_parser = parse_delay)]
    pub max_queue_delay: Duration,

    /// How late a broadcast-sse node may write messages to its streams
    /// (the median it reports through the broker) before new ones are
    /// refused at once with `503` and `Retry-After`, like `20ms`; `0`, the
    /// default, never refuses for it. Bounds how late a fan-out that cannot
    /// keep up delivers, at the cost of throughput (see BENCHMARKS.md).
    #[arg(long, env = "CRIER_MAX_FANOUT_DELAY", default_value = "0", value_parser = parse_delay)]
    pub max_fanout_delay: Duration,

    /// MiB of memory for the store's page cache (sled's cache). What the
    /// store keeps in memory beyond it is small and bounded (see the README's
    /// "Memory").
    #[arg(long, env = "CRIER_STORE_CACHE", default_value_t = STORE_CACHE_MIB, value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    pub store_cache: u64,

    #[command(flatten)]
    pub limits: Limits,

    #[command(flatten)]
    pub signals: SignalLimits,

    #[command(flatten)]
    pub retention: Retention,

    #[command(flatten)]
    pub mqtt_posts: MqttPosts,

    #[command(flatten)]
    pub publish_hook: PublishHookSettings,

    #[command(flatten)]
    pub webhooks: WebhookSettings,
}

/// Signed events POSTed to the app for every entry of the log (see
/// [`crate::webhooks`]).
#[derive(Debug, Clone, Args)]
pub struct WebhookSettings {
    /// POST a signed JSON event to this URL for every message stored, edited
    /// or deleted, at least once, in order per channel, and for every change
    /// of presence, best effort. Repeat for several;
    /// a fragment picks events: `http://app/hooks#events=message.created`
    /// (or `message.*`). The environment variable takes URLs separated by
    /// spaces. A new URL starts at the current end of the log.
    #[arg(
        long = "webhook-url",
        env = "CRIER_WEBHOOK_URLS",
        value_delimiter = ' ',
        value_parser = Endpoint::parse
    )]
    pub webhook_urls: Vec<Endpoint>,

    /// Key of the HMAC-SHA256 `Crier-Signature` header of every event;
    /// required with `--webhook-url`.
    #[arg(long, env = "CRIER_WEBHOOK_SECRET", hide_env_values = true, value_parser = parse_secret)]
    pub webhook_secret: Option<WebhookSecret>,

    /// How long the app may take to answer an event, like `5s`; longer is a
    /// failure, tried again.
    #[arg(long, env = "CRIER_WEBHOOK_TIMEOUT", default_value = "5s", value_parser = parse_webhook_duration)]
    pub webhook_timeout: Duration,

    /// Longest pause between two attempts at an event that keeps failing
    /// (pauses double from 250ms up to it), like `60s`.
    #[arg(long, env = "CRIER_WEBHOOK_MAX_BACKOFF", default_value = "60s", value_parser = parse_webhook_duration)]
    pub webhook_max_backoff: Duration,

    /// Channels delivered to one webhook at once (each channel in order).
    #[arg(long, env = "CRIER_WEBHOOK_CONCURRENCY", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub webhook_concurrency: u32,
    /// Most events in one POST: a POST carries a JSON array of one channel's
    /// next events, in order.
    #[arg(long, env = "CRIER_WEBHOOK_BATCH", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub webhook_batch: u32,
    /// Least time between two POSTs of one channel's events to one webhook:
    /// a busy channel's events wait this long to share a POST, a quiet
    /// channel's go at once (`0`: no wait).
    #[arg(long, env = "CRIER_WEBHOOK_LINGER", default_value = "50ms", value_parser = parse_linger)]
    pub webhook_linger: Duration,
    /// Send presence events (`channel.occupied`, `channel.vacated`,
    /// `presence.joined`, `presence.left`), best effort. Every chat-service
    /// sees every node's presence: with several, turn it on in exactly one,
    /// or the app gets each presence event once per chat-service.
    #[arg(long, env = "CRIER_WEBHOOK_PRESENCE_EVENTS", default_value_t = true, action = clap::ArgAction::Set)]
    pub webhook_presence_events: bool,
}

fn parse_linger(raw: &str) -> Result<Duration, String> {
    let linger = parse_delay(raw)?;
    if linger > Duration::from_secs(10) {
        return Err(format!("{raw:?} is too long for a linger: at most 10s"));
    }
    Ok(linger)
}

/// `--webhook-secret`, never shown by `Debug`.
#[derive(Clone)]
pub struct WebhookSecret(pub String);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(…)")
    }
}

fn parse_secret(raw: &str) -> Result<WebhookSecret, String> {
    if raw.is_empty() {
        return Err("the webhook secret cannot be empty".to_string());
    }
    Ok(WebhookSecret(raw.to_string()))
}

/// A duration as humantime writes it (`5s`, `500ms`); never zero.
fn parse_webhook_duration(raw: &str) -> Result<Duration, String> {
    match parse_delay(raw)? {
        Duration::ZERO => Err("must be more than 0".to_string()),
        duration => Ok(duration),
    }
}

/// The app's say over each post before it is stored (see [`crate::publish_hook`]).
#[derive(Debug, Clone, Args)]
pub struct PublishHookSettings {
    /// POST every post (REST and MQTT) as JSON to this URL before storing it;
    /// the app answers accept, accept with a new text, or reject. Unset: off.
    #[arg(long, env = "CRIER_PUBLISH_HOOK_URL", value_parser = parse_hook_url)]
    pub publish_hook_url: Option<reqwest::Url>,

    /// How long the publish hook may take to answer, like `2s` or `500ms`;
    /// longer is a failure (see `--publish-hook-failure`).
    #[arg(long, env = "CRIER_PUBLISH_HOOK_TIMEOUT", default_value = "2s", value_parser = parse_hook_timeout)]
    pub publish_hook_timeout: Duration,

    /// What a post becomes when the publish hook fails (no answer in time, an
    /// error, an answer it cannot read): `closed` refuses it with `503`, `open`
    /// stores it as posted.
    #[arg(
        long,
        env = "CRIER_PUBLISH_HOOK_FAILURE",
        default_value = "closed",
        value_enum
    )]
    pub publish_hook_failure: HookFailure,
}

/// `--publish-hook-failure`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HookFailure {
    /// Refuse the post (`503 publish_hook_unavailable`, nothing stored).
    Closed,
    /// Store the post as it was posted, and log a warning.
    Open,
}

/// An `http://` or `https://` URL with a host.
fn parse_hook_url(raw: &str) -> Result<reqwest::Url, String> {
    crate::app_url::parse(raw, "http://127.0.0.1:3000/hook")
}

/// A timeout as humantime writes it (`2s`, `500ms`); never zero.
fn parse_hook_timeout(raw: &str) -> Result<Duration, String> {
    match parse_delay(raw)? {
        Duration::ZERO => Err("the publish hook timeout must be more than 0".to_string()),
        timeout => Ok(timeout),
    }
}

/// Posts from MQTT clients on `{prefix}/channels/{uuid}/post`.
#[derive(Debug, Clone, Args)]
pub struct MqttPosts {
    /// Take posts from MQTT clients on `{prefix}/channels/{uuid}/post` (payload
    /// `{"author","text"}`, optional `"key"`), checked and stored like REST posts.
    #[arg(long, env = "CRIER_MQTT_POSTS", default_value_t = true, action = clap::ArgAction::Set)]
    pub mqtt_posts: bool,

    /// MQTT shared subscription group of the chat-services taking posts, so each
    /// post is taken once (`$share/{group}/…`); empty for a plain subscription.
    /// Default: the topic prefix with `/` as `_`, so deployments that share a
    /// broker under different prefixes never share a group.
    #[arg(long, env = "CRIER_MQTT_POST_GROUP", value_parser = parse_group)]
    pub mqtt_post_group: Option<String>,

    /// Relay MQTT posts to this base URL instead of storing them here: in a
    /// sharded deployment, the front that routes each channel to the shard that
    /// owns it (`http://front:8080`). Each post keeps its idempotency key.
    #[arg(long, env = "CRIER_MQTT_POST_FORWARD")]
    pub mqtt_post_forward: Option<String>,

    /// Bearer token for relayed posts when the shards check tokens: it needs
    /// `admin: true` and `channels: "*"` (an admin token posts as the author the
    /// post names).
    #[arg(long, env = "CRIER_MQTT_POST_FORWARD_TOKEN", hide_env_values = true)]
    pub mqtt_post_forward_token: Option<String>,
}

impl MqttPosts {
    /// The shared subscription group for `prefix` (see `--mqtt-post-group`).
    pub fn group(&self, prefix: &str) -> String {
        match &self.mqtt_post_group {
            Some(group) => group.clone(),
            None => prefix.replace('/', "_"),
        }
    }
}

/// A shared subscription group name is one topic level with no wildcard.
fn parse_group(raw: &str) -> Result<String, String> {
    if raw.contains(['/', '+', '#', '\0']) {
        return Err(format!(
            "{raw:?} cannot be a shared subscription group: no /, +, # or NUL"
        ));
    }
    Ok(raw.to_string())
}

impl ChatSettings {
    /// The store's queues and memory bounds.
    pub fn store(&self) -> StoreSettings {
        StoreSettings {
            ingest_queue: self.ingest_queue as usize,
            cache_bytes: self.store_cache * 1024 * 1024,
            max_queue_delay: (!self.max_queue_delay.is_zero()).then_some(self.max_queue_delay),
            ..StoreSettings::default()
        }
    }
}

/// How much history is kept. Old messages are removed in the background; a stream
/// resuming from a removed id is told which ids are gone (`event: gap`).
#[derive(Debug, Clone, Copy, Args)]
pub struct Retention {
    /// Messages kept per channel (0: no limit).
    #[arg(long, env = "CRIER_HISTORY_MAX_PER_CHANNEL", default_value_t = 10_000)]
    pub history_max_per_channel: u64,

    /// Age after which messages are removed, like `90s`, `30m`, `12h` or `7d`
    /// (unset: no age limit).
    #[arg(long, env = "CRIER_HISTORY_MAX_AGE", value_parser = parse_age)]
    pub history_max_age: Option<Duration>,

    /// Seconds between retention passes.
    #[arg(long, env = "CRIER_RETENTION_INTERVAL_SECS", default_value_t = 5)]
    pub retention_interval_secs: u64,
}

impl Retention {
    pub fn policy(&self) -> RetentionPolicy {
        RetentionPolicy {
            max_per_channel: (self.history_max_per_channel > 0)
                .then_some(self.history_max_per_channel),
            max_age: self.history_max_age,
        }
    }

    pub fn interval(&self) -> Duration {
        Duration::from_secs(self.retention_interval_secs.max(1))
    }
}

impl Default for Retention {
    fn default() -> Self {
        server::defaults::from_flags()
    }
}

/// An age as humantime writes it (`90s`, `30m`, `12h`, `7d`, `1h 30m`), or a
/// bare number of seconds.
fn parse_age(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    if !raw.is_empty() && raw.bytes().all(|byte| byte.is_ascii_digit()) {
        return raw
            .parse()
            .map(Duration::from_secs)
            .map_err(|_| format!("{raw:?} is too long an age"));
    }
    humantime::parse_duration(raw)
        .map_err(|e| format!("{raw:?} is not an age like 90s, 30m, 12h or 7d: {e}"))
}

/// A delay as humantime writes it (`20ms`, `1s`), or `0`.
/// History and bus on a NATS JetStream cluster instead of the local sled
/// store (see docs/scaling.md). Only the chat-service binary has it.
#[derive(Debug, Clone, Args)]
pub struct NatsSettings {
    /// Keep history in a replicated JetStream stream on these nats-server
    /// nodes, comma-separated (`nats://user:pass@host:4222,…`, `tls://…` for
    /// TLS). A `201` then means a quorum of the stream's replicas has the
    /// message on disk, and the stream republishes it to the channel's MQTT
    /// topic: point `--mqtt-url` and every broadcast-sse node at the
    /// cluster's MQTT listeners. Unset: the local sled store.
    #[arg(long, env = "CRIER_NATS_URL")]
    pub nats_url: Option<String>,

    /// PEM CA the nats-server nodes' certificates must chain to, for
    /// `tls://` URLs (default: the system's roots).
    #[arg(long, env = "CRIER_NATS_CA_FILE")]
    pub nats_ca_file: Option<PathBuf>,

    /// The JetStream stream holding history (made if missing).
    #[arg(long, env = "CRIER_NATS_STREAM", default_value = "CRIER", value_parser = parse_stream_name)]
    pub nats_stream: String,

    /// Copies of the stream the cluster keeps (3 on a 3-node cluster; each
    /// acknowledgement waits for a majority of them).
    #[arg(long, env = "CRIER_NATS_REPLICAS", default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=5))]
    pub nats_replicas: u8,

    /// How long an `Idempotency-Key` is remembered: a retry later than this
    /// is stored again. JetStream keeps the keys of the window in memory.
    #[arg(long, env = "CRIER_NATS_DEDUPE_WINDOW", default_value = "2m", value_parser = parse_webhook_duration)]
    pub nats_dedupe_window: Duration,
}

/// A JetStream stream name: letters, digits, `-` and `_` (it is also the
/// first token of the stream's subjects).
fn parse_stream_name(raw: &str) -> Result<String, String> {
    let valid = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    if raw.is_empty() || raw.len() > 64 || !raw.chars().all(valid) {
        return Err(format!(
            "{raw:?} cannot name a stream: use 1 to 64 letters, digits, - or _"
        ));
    }
    Ok(raw.to_string())
}

fn parse_delay(raw: &str) -> Result<Duration, String> {
    match raw.trim() {
        "0" => Ok(Duration::ZERO),
        raw => humantime::parse_duration(raw)
            .map_err(|e| format!("{raw:?} is not a delay like 20ms or 1s: {e}")),
    }
}

/// Input limits; every violation is a `400` (or `413` for the body) with a JSON error.
#[derive(Debug, Clone, Copy, Args)]
pub struct Limits {
    /// Longest author name, in characters.
    #[arg(long, env = "CRIER_MAX_AUTHOR_CHARS", default_value_t = 64)]
    pub max_author_chars: usize,

    /// Longest message text, in characters.
    #[arg(long, env = "CRIER_MAX_TEXT_CHARS", default_value_t = 4000)]
    pub max_text_chars: usize,

    /// Largest request body, in bytes.
    #[arg(long, env = "CRIER_MAX_BODY_BYTES", default_value_t = 64 * 1024)]
    pub max_body_bytes: usize,

    /// POSTs per second allowed to one publisher (its token's name, or its address
    /// without tokens), sustained; 0: no limit.
    #[arg(long, env = "CRIER_POST_RATE_PER_SEC", default_value_t = 20)]
    pub post_rate_per_sec: u32,

    /// POSTs one publisher may send at once before the rate applies.
    #[arg(long, env = "CRIER_POST_BURST", default_value_t = 100)]
    pub post_burst: u32,
}

impl Default for Limits {
    fn default() -> Self {
        server::defaults::from_flags()
    }
}

/// How often one author may send signals (typing, read markers): they are
/// not stored, but each one reaches every stream of the channel.
#[derive(Debug, Clone, Copy, Args)]
pub struct SignalLimits {
    /// Signals per second allowed to one author (the token's name, or the
    /// body's `author` without tokens), sustained; 0: no limit. A client
    /// sends about one typing signal every 2 s and one read marker a second.
    #[arg(long, env = "CRIER_SIGNAL_RATE_PER_SEC", default_value_t = 5)]
    pub signal_rate_per_sec: u32,

    /// Signals one author may send at once before the rate applies.
    #[arg(long, env = "CRIER_SIGNAL_BURST", default_value_t = 10)]
    pub signal_burst: u32,
}

impl Default for SignalLimits {
    fn default() -> Self {
        server::defaults::from_flags()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_take_a_unit_or_are_seconds() {
        assert_eq!(parse_age("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_age("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_age("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_age("1h 30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_age("7 fortnights").is_err());
        assert!(parse_age("d").is_err());
        assert!(parse_age("").is_err());
        assert!(parse_age("99999999999999999999d").is_err());
        assert!(parse_age("99999999999999999999").is_err());
    }

    #[test]
    fn delays_take_a_unit_and_zero_turns_the_budget_off() {
        assert_eq!(parse_delay("20ms"), Ok(Duration::from_millis(20)));
        assert_eq!(parse_delay("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_delay("0"), Ok(Duration::ZERO));
        assert!(parse_delay("20").is_err(), "a bare number has no unit");
        assert!(parse_delay("soon").is_err());
    }

    #[test]
    fn the_publish_hook_takes_only_http_urls_and_a_real_timeout() {
        assert!(parse_hook_url("http://127.0.0.1:3000/hook").is_ok());
        assert!(parse_hook_url("https://app.example/hook").is_ok());
        for bad in [
            "",
            "app.example/hook",
            "ftp://app.example/",
            "unix:/run/app.sock",
        ] {
            assert!(parse_hook_url(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_hook_timeout("200ms"), Ok(Duration::from_millis(200)));
        assert!(parse_hook_timeout("0").is_err());
        assert!(
            parse_hook_timeout("2").is_err(),
            "a bare number has no unit"
        );
    }

    #[test]
    fn webhook_flags_take_urls_with_filters_and_refuse_empty_secrets() {
        let config = Config::try_parse_from([
            "chat-service",
            "--webhook-url",
            "http://a.local/h",
            "--webhook-url",
            "http://b.local/h#events=message.*",
            "--webhook-secret",
            "s",
        ])
        .expect("valid flags");
        let webhooks = &config.chat.webhooks;
        assert_eq!(webhooks.webhook_urls.len(), 2);
        assert_eq!(webhooks.webhook_timeout, Duration::from_secs(5));
        assert_eq!(webhooks.webhook_max_backoff, Duration::from_secs(60));
        assert_eq!(webhooks.webhook_concurrency, 8);
        assert_eq!(webhooks.webhook_batch, 100);
        assert_eq!(webhooks.webhook_linger, Duration::from_millis(50));
        for bad in [
            ["--webhook-url", "ftp://a.local/h"],
            ["--webhook-url", "http://a.local/h#events=nope"],
            ["--webhook-secret", ""],
            ["--webhook-timeout", "0"],
        ] {
            let args = std::iter::once("chat-service").chain(bad);
            assert!(Config::try_parse_from(args).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn limits_default_to_their_documented_flags() {
        let limits = Limits::default();
        assert_eq!(
            (
                limits.max_author_chars,
                limits.max_text_chars,
                limits.max_body_bytes,
                limits.post_rate_per_sec,
                limits.post_burst
            ),
            (64, 4000, 64 * 1024, 20, 100)
        );
        let signals = SignalLimits::default();
        assert_eq!((signals.signal_rate_per_sec, signals.signal_burst), (5, 10));
        let retention = Retention::default();
        assert_eq!(retention.history_max_age, None);
        assert_eq!(retention.interval(), Duration::from_secs(5));
    }

    #[test]
    fn a_zero_count_means_no_count_limit() {
        let retention = Retention {
            history_max_per_channel: 0,
            ..Retention::default()
        };
        assert!(retention.policy().keeps_everything());
        assert_eq!(Retention::default().policy().max_per_channel, Some(10_000));
    }
}
