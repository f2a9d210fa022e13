//! Fills a Crier JetStream stream (made by a chat-service started with
//! `--nats-url`) with `channels × per-channel` messages, as a chat-service
//! appends them: subject `{stream}.log.{channel}.{id}`, the message's JSON,
//! ids 1, 2, 3 … per channel in order. Many appends are in flight at once;
//! each round gives every channel its next id, so a channel's entries are in
//! id order in the stream. Channel `n` is the uuid
//! `00000000-0000-4000-8000-{n:012}` (as `bench/post.lua` names them).
//!
//!   nats-fill --nats-url nats://127.0.0.1:4222 --channels 1000 --per-channel 1000

use std::collections::VecDeque;
use std::time::Instant;

use async_nats::jetstream;
use clap::Parser;

/// Appends waiting for their acknowledgement at most.
const IN_FLIGHT: usize = 4096;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    nats_url: String,
    #[arg(long, default_value = "CRIER")]
    stream: String,
    #[arg(long, default_value_t = 1000)]
    channels: u64,
    #[arg(long, default_value_t = 1000)]
    per_channel: u64,
}

fn channel(n: u64) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

#[tokio::main]
async fn main() -> Result<(), async_nats::Error> {
    let args = Args::parse();
    let client = async_nats::connect(args.nats_url.as_str()).await?;
    let context = jetstream::new(client);
    let started = Instant::now();
    let mut acks = VecDeque::with_capacity(IN_FLIGHT);
    for id in 1..=args.per_channel {
        for n in 1..=args.channels {
            let channel = channel(n);
            let json = serde_json::json!({
                "id": id, "channel": channel, "author": "bench",
                "text": "a message of the history benchmark", "ts": "2026-12-07T00:00:00.000Z",
            });
            let subject = format!("{}.log.{channel}.{id}", args.stream);
            acks.push_back(context.publish(subject, json.to_string().into()).await?);
            if acks.len() >= IN_FLIGHT
                && let Some(ack) = acks.pop_front()
            {
                ack.await?;
            }
        }
    }
    for ack in acks {
        ack.await?;
    }
    let total = args.channels * args.per_channel;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "appended {total} messages in {seconds:.1} s ({:.0}/s)",
        total as f64 / seconds
    );
    Ok(())
}
