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

use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use actix_http::body::BoxBody;
use actix_http::{Request, Response};
use actix_service::boxed::BoxService;
use actix_service::{Service, ServiceFactory};
use actix_web::dev::AppConfig;
use futures_util::future::LocalBoxFuture;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::http1::{self, Pump, StreamHead};
use crate::plain_server::{AppFactory, MakeApp};

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

/// The application as a stream thread runs it: one instance per thread, made
/// by the same factory as the HTTP workers' (so the same routes and middleware).
type App = BoxService<Request, Response<BoxBody>, actix_web::Error>;

/// Round-robin handle to the stream threads; the threads stop once every
/// handle is dropped and their streams have ended.
#[derive(Clone)]
pub struct StreamThreads {
    queues: Arc<[mpsc::Sender<Box<Handover>>]>,
    next: Arc<AtomicUsize>,
}

impl StreamThreads {
    /// Starts one thread per available core, each running its own instance of
    /// `app` (configured with `config`) for the streams it is handed.
    pub fn start(app: MakeApp, config: AppConfig) -> std::io::Result<Self> {
        let count = std::thread::available_parallelism().map_or(1, |n| n.get());
        let queues = (0..count)
            .map(|index| {
                let (app, config) = (app.clone(), config.clone());
                start_thread(index, move || Box::pin(make_app(app(), config)))
            })
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
            .send(Box::new(Handover { io, head }))
            .await
            .is_err()
        {
            log::debug!("a stream arrived while the stream threads stop");
        }
    }
}

/// Starts a stream thread; `make_app` makes the thread's instance of the
/// application, on the thread.
fn start_thread(
    index: usize,
    make_app: impl FnOnce() -> LocalBoxFuture<'static, Option<App>> + Send + 'static,
) -> std::io::Result<mpsc::Sender<Box<Handover>>> {
    let (sender, receiver) = mpsc::channel(QUEUE_PER_THREAD);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name(format!("crier-streams-{index}"))
        .spawn(move || {
            let streams = tokio::task::LocalSet::new();
            let app = streams.block_on(&runtime, make_app());
            match app {
                Some(app) => run_thread(&runtime, streams, receiver, Rc::new(app)),
                None => log::error!("a stream thread could not start the application"),
            }
        })?;
    Ok(sender)
}

/// This thread's instance of the application, answering every request with a
/// response (errors become their JSON answers).
async fn make_app(factory: AppFactory, config: AppConfig) -> Option<App> {
    let instance = factory.new_service(config).await;
    instance
        .map_err(|()| log::error!("cannot start the application"))
        .ok()
}

/// Opens and pumps every stream handed over until the handles are gone, then
/// lets the open ones finish (bounded).
fn run_thread(
    runtime: &tokio::runtime::Runtime,
    streams: tokio::task::LocalSet,
    mut receiver: mpsc::Receiver<Box<Handover>>,
    app: Rc<App>,
) {
    streams.block_on(runtime, async {
        while let Some(handover) = receiver.recv().await {
            tokio::task::spawn_local(serve(handover, app.clone()));
        }
    });
    drop(app);
    // The timeout's timer is made inside `block_on`: made outside, it finds no
    // runtime entered, panics, and the grace never applies.
    let finished = runtime.block_on(async { tokio::time::timeout(STOP_GRACE, streams).await });
    if finished.is_err() {
        log::warn!("streams still open {STOP_GRACE:?} after the stop are cut");
    }
}

/// Serves one stream request. Arguments and the state of every await are
/// kept for a future's whole life, so the request is boxed and opened by a
/// boxed future: while the stream is open its task holds only the pump.
async fn serve(handover: Box<Handover>, app: Rc<App>) {
    if let Some(pump) = Box::pin(open(handover, app)).await {
        pump.await;
    }
}

/// Runs the request through the application: the pump of a stream, or `None`
/// once any other answer was written.
async fn open(handover: Box<Handover>, app: Rc<App>) -> Option<Pump> {
    let Handover { io, head } = *handover;
    let io = TcpStream::from_std(io)
        .map_err(|e| log::debug!("cannot take a stream over: {e}"))
        .ok()?;
    let request = head.into_request(io.peer_addr().ok());
    let response = match app.call(request).await {
        Ok(response) => response,
        Err(e) => e.error_response().map_into_boxed_body().into(),
    };
    drop(app);
    http1::answer(io, response).await
}
