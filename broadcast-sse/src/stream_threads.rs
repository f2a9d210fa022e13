//! Threads that run the open streams served on the socket, apart from the HTTP
//! workers.
//!
//! A message to a big channel wakes every one of its streams at once. Were the
//! streams tasks of the HTTP workers, each worker would run thousands of them
//! before it got back to a request that arrived meanwhile: in the all-in-one a
//! `POST` would wait for the fan-out of the message before it. On threads of
//! their own, the streams and the requests are scheduled by the kernel side by
//! side, as the chat-service and broadcast-sse processes of the split deployment
//! are.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use actix_web::web;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::AppState;
use crate::http1::{self, Opened, StreamHead};

/// Stream requests waiting for their thread; a worker handing over one more
/// waits for room.
const QUEUE_PER_THREAD: usize = 1024;
/// How long a stopping thread lets its streams finish writing.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A stream request read off a connection, to be opened on a stream thread.
struct Handover {
    io: std::net::TcpStream,
    head: StreamHead,
}

/// Round-robin handle to the stream threads; the threads stop once every
/// handle is dropped and their streams have ended.
#[derive(Clone)]
pub struct StreamThreads {
    queues: Arc<[mpsc::Sender<Handover>]>,
    next: Arc<AtomicUsize>,
}

impl StreamThreads {
    /// Starts one thread per available core, each opening and pumping the
    /// streams it is handed with `state`.
    pub fn start(state: web::Data<AppState>) -> std::io::Result<Self> {
        let count = std::thread::available_parallelism().map_or(1, |n| n.get());
        let queues = (0..count)
            .map(|index| start_thread(index, state.clone()))
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(StreamThreads {
            queues: queues.into(),
            next: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// Hands the stream `head` asks for on `io` to the next thread.
    pub async fn open(&self, io: TcpStream, head: StreamHead) {
        let io = match io.into_std() {
            Ok(io) => io,
            Err(e) => return log::debug!("cannot hand a stream over: {e}"),
        };
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.queues.len();
        if self.queues[index]
            .send(Handover { io, head })
            .await
            .is_err()
        {
            log::debug!("a stream arrived while the stream threads stop");
        }
    }
}

fn start_thread(
    index: usize,
    state: web::Data<AppState>,
) -> std::io::Result<mpsc::Sender<Handover>> {
    let (sender, receiver) = mpsc::channel(QUEUE_PER_THREAD);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name(format!("crier-streams-{index}"))
        .spawn(move || run_thread(&runtime, receiver, state))?;
    Ok(sender)
}

/// Opens and pumps every stream handed over until the handles are gone, then
/// lets the open ones finish (bounded).
fn run_thread(
    runtime: &tokio::runtime::Runtime,
    mut receiver: mpsc::Receiver<Handover>,
    state: web::Data<AppState>,
) {
    let streams = tokio::task::LocalSet::new();
    streams.block_on(runtime, async {
        while let Some(handover) = receiver.recv().await {
            tokio::task::spawn_local(serve(handover, state.clone()));
        }
    });
    drop(state);
    let _ = runtime.block_on(tokio::time::timeout(STOP_GRACE, streams));
}

async fn serve(handover: Handover, state: web::Data<AppState>) {
    let io = match TcpStream::from_std(handover.io) {
        Ok(io) => io,
        Err(e) => return log::debug!("cannot take a stream over: {e}"),
    };
    let opened = Box::pin(http1::open_stream(io, handover.head, &state)).await;
    drop(state);
    if let Opened::Stream(pump) = opened {
        pump.await;
    }
}
