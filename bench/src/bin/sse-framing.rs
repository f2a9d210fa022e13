//! What serving message events through actix-web-lab's `Sse` body would cost
//! against the shared pre-framed bytes the streams write, measured in one run:
//! CPU per event written and memory per idle stream.
//!
//! `Sse` turns each `Event` into bytes as the stream is polled, so every
//! stream frames every message again (one allocation and one copy per event
//! per stream), and each stream with a keep-alive holds a timer of its own.
//! The streams instead frame a message once and hand every stream the same
//! `Bytes` (a reference count), and one signal wakes all idle streams for
//! their keep-alive.
//!
//!     cargo run --release -p crier-bench --bin sse-framing [streams] [messages]

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web_lab::sse::{Data, Event, Sse};
use bytes::Bytes;
use bytestring::ByteString;

/// Counts the bytes held on the heap, to measure what a stream keeps.
struct Counting;

static HELD: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        HELD.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HELD.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const KEEP_ALIVE: Duration = Duration::from_secs(15);
const ROUNDS: usize = 5;

fn main() {
    let mut args = std::env::args().skip(1);
    let streams: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(1000);
    let messages: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(1000);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    let _entered = runtime.enter();
    let frames = frames(messages);
    let mut shared = Vec::new();
    let mut sse = Vec::new();
    for _ in 0..ROUNDS {
        shared.push(per_event(streams, messages, || {
            write_shared(&frames, streams)
        }));
        sse.push(per_event(streams, messages, || {
            write_through_sse(&frames, streams)
        }));
    }
    let (shared, sse) = (median(shared), median(sse));
    println!("{streams} streams x {messages} messages, median of {ROUNDS} rounds:");
    println!("  shared pre-framed bytes:   {shared:>7.1} ns per event written");
    println!("  actix-web-lab Sse events:  {sse:>7.1} ns per event written");
    println!("  Sse costs {:+.1} ns per event", sse - shared);
    let held = idle_sse_bytes(streams);
    println!("  an idle Sse body with keep-alive holds {held:.0} bytes more per stream");
}

/// Each message's JSON and its frame, as the hub makes them.
fn frames(messages: usize) -> Vec<(u64, ByteString, Bytes)> {
    (1..=messages as u64)
        .map(|id| {
            let json = format!(
                r#"{{"id":{id},"channel":"0f8fad5b-d9cb-469f-a165-70867728950e","author":"ann","text":"message number {id} of the benchmark","ts":"2026-12-04T16:44:13.761Z"}}"#
            );
            let frame = format!("id: {id}\nevent: message\ndata: {json}\n\n");
            (id, ByteString::from(json), Bytes::from(frame))
        })
        .collect()
}

/// Nanoseconds per event of `run`, which writes `messages` to `streams`.
fn per_event(streams: usize, messages: usize, run: impl FnOnce() -> usize) -> f64 {
    let started = Instant::now();
    black_box(run());
    started.elapsed().as_nanos() as f64 / (streams * messages) as f64
}

/// Every stream takes every message's frame: a reference count each.
fn write_shared(frames: &[(u64, ByteString, Bytes)], streams: usize) -> usize {
    let mut written = 0;
    for _ in 0..streams {
        for (_, _, frame) in frames {
            let chunk = black_box(frame.clone());
            written += chunk.len();
        }
    }
    written
}

/// Every stream is an `Sse` body over the messages' events, polled to its end.
fn write_through_sse(frames: &[(u64, ByteString, Bytes)], streams: usize) -> usize {
    let mut context = Context::from_waker(Waker::noop());
    let mut written = 0;
    for _ in 0..streams {
        let events: Vec<Event> = frames
            .iter()
            .map(|(id, json, _)| {
                Event::Data(Data::new(json.clone()).id(id.to_string()).event("message"))
            })
            .collect();
        let mut body = Box::pin(Sse::from_infallible_stream(futures_util::stream::iter(
            events,
        )));
        while let Poll::Ready(Some(Ok(chunk))) = body.as_mut().poll_next(&mut context) {
            written += black_box(chunk).len();
        }
    }
    written
}

/// Heap bytes an `Sse` body with a keep-alive holds beyond what it wraps, per
/// stream, with `streams` of them open (the shared path holds none: one
/// signal serves every stream).
fn idle_sse_bytes(streams: usize) -> f64 {
    let before = HELD.load(Ordering::Relaxed);
    let bodies: Vec<_> = (0..streams)
        .map(|_| {
            let idle = futures_util::stream::pending::<Event>();
            Box::pin(Sse::from_infallible_stream(idle).with_keep_alive(KEEP_ALIVE))
        })
        .collect();
    let with_sse = HELD.load(Ordering::Relaxed) - before;
    drop(bodies);
    let before = HELD.load(Ordering::Relaxed);
    let plain: Vec<_> = (0..streams)
        .map(|_| Box::pin(futures_util::stream::pending::<Event>()))
        .collect();
    let without = HELD.load(Ordering::Relaxed) - before;
    drop(plain);
    (with_sse as f64 - without as f64) / streams as f64
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
