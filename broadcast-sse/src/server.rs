//! The HTTP server of every binary that holds streams.
//!
//! Plain HTTP: actix-server accepts and spreads connections over its workers;
//! each new connection's first request is peeked at ([`crate::http1`]). A stream
//! request is handed to the stream threads ([`crate::stream_threads`]) and
//! served on the socket directly; every other connection goes to
//! actix-http's HTTP/1 service with the application's routes, as `HttpServer`
//! would set it up. With TLS, actix-web's `HttpServer` serves everything.

use std::net::{SocketAddr, TcpListener};
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use actix_http::{HttpService, KeepAlive, Request};
use actix_server::{Server, ServerBuilder};
use actix_service::{
    IntoServiceFactory, Service, ServiceFactory, ServiceFactoryExt, fn_factory, fn_service,
    map_config,
};
use actix_web::HttpServer;
use actix_web::body::MessageBody;
use actix_web::dev::AppConfig;
use tokio::net::TcpStream;

use crate::http1::{self, FirstRequest};
use crate::stream_threads::StreamThreads;

/// Open streams one process may hold: past actix's per-worker default of 25k, up to
/// what the open-files limit allows.
const MAX_CONNECTIONS_PER_WORKER: usize = 100_000;
const BACKLOG: u32 = 4096;
/// Seconds a graceful stop waits for open connections after streams were ended.
const SHUTDOWN_TIMEOUT_SECS: u64 = 5;
/// What `HttpServer` uses: how long an idle keep-alive connection stays, and how
/// long a closing connection may take to shut down.
const KEEP_ALIVE: Duration = Duration::from_secs(5);
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Serves `app` (a factory of the application, called once per worker) on
/// `listener`, with plain HTTP/1.1 streams pumped by the stream threads unless TLS is on.
/// Signals are not handled here: see [`crate::startup::run_with_hub`].
pub fn start<F, I, S, B>(
    app: F,
    listener: TcpListener,
    tls: Option<rustls::ServerConfig>,
    header_timeout: Duration,
) -> std::io::Result<Server>
where
    F: Fn() -> I + Send + Clone + 'static,
    I: IntoServiceFactory<S, Request>,
    S: ServiceFactory<Request, Config = AppConfig> + 'static,
    S::Error: Into<actix_web::Error> + 'static,
    S::InitError: std::fmt::Debug,
    S::Response: Into<actix_http::Response<B>> + 'static,
    B: MessageBody + 'static,
{
    if let Some(tls) = tls {
        let server = HttpServer::new(app)
            .h1_allow_half_closed(false)
            .max_connections(MAX_CONNECTIONS_PER_WORKER)
            .backlog(BACKLOG)
            .shutdown_timeout(SHUTDOWN_TIMEOUT_SECS)
            .disable_signals()
            .client_request_timeout(header_timeout);
        return Ok(protocol::server::listen(server, listener, Some(tls))?.run());
    }
    let address = listener.local_addr()?;
    let threads = StreamThreads::start(app.clone(), app_config(address))?;
    let builder = ServerBuilder::new()
        .max_concurrent_connections(MAX_CONNECTIONS_PER_WORKER)
        .backlog(BACKLOG)
        .shutdown_timeout(SHUTDOWN_TIMEOUT_SECS)
        .disable_signals();
    let graceful = builder.graceful_shutdown_signal();
    let builder = builder.listen("crier", listener, move || {
        let graceful = graceful.clone();
        let http = HttpService::<TcpStream, _, _>::build()
            .graceful_shutdown_signal(move || {
                let graceful = graceful.clone();
                async move { graceful.notified().await }
            })
            .keep_alive(KeepAlive::Timeout(KEEP_ALIVE))
            .client_request_timeout(header_timeout)
            .client_disconnect_timeout(DISCONNECT_TIMEOUT)
            .h1_allow_half_closed(false)
            .local_addr(address)
            .h1(map_config(
                app()
                    .into_factory()
                    .map_err(|err| err.into().error_response()),
                move |_| app_config(address),
            ));
        connections(http, threads.clone(), header_timeout)
    })?;
    Ok(builder.run())
}

/// What a worker runs for each accepted connection: [`serve_connection`], with
/// `http` (actix-http's HTTP/1 service) for whatever is not a stream.
fn connections<H>(
    http: H,
    threads: StreamThreads,
    header_timeout: Duration,
) -> impl ServiceFactory<TcpStream, Config = (), Response = (), Error = (), InitError = ()>
where
    H: ServiceFactory<(TcpStream, Option<SocketAddr>), Config = (), Response = ()> + 'static,
    H::Error: std::fmt::Debug,
    H::InitError: std::fmt::Debug,
{
    fn_factory(move || {
        let http = http.new_service(());
        let threads = threads.clone();
        async move {
            let http = Rc::new(http.await.map_err(|e| {
                log::error!("cannot start an HTTP worker: {e:?}");
            })?);
            Ok::<_, ()>(fn_service(move |io: TcpStream| {
                let http = http.clone();
                let threads = threads.clone();
                // Boxed: actix-server keeps the future it is given twice over.
                let connection = serve_connection(io, threads, header_timeout, move |io, peer| {
                    Box::pin(http.call((io, peer)))
                });
                let connection: Pin<Box<dyn Future<Output = ()>>> = Box::pin(connection);
                async move {
                    connection.await;
                    Ok::<_, ()>(())
                }
            }))
        }
    })
}

/// Serves one connection: hands its stream to the stream threads, or serves
/// it through `http`.
async fn serve_connection<H, Fut, E>(
    mut io: TcpStream,
    threads: StreamThreads,
    header_timeout: Duration,
    http: H,
) where
    H: FnOnce(TcpStream, Option<SocketAddr>) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Debug,
{
    match Box::pin(http1::first_request(&mut io, header_timeout)).await {
        FirstRequest::Stream(head) => threads.open(io, head).await,
        FirstRequest::Silent => Box::pin(http1::refuse_silent(io)).await,
        FirstRequest::Gone => {}
        FirstRequest::Other => {
            let peer = io.peer_addr().ok();
            if let Err(e) = http(io, peer).await {
                log::debug!("connection ended with an error: {e:?}");
            }
        }
    }
}

/// What actix-web tells handlers about the listener.
fn app_config(address: SocketAddr) -> AppConfig {
    // The constructor actix-web's own server uses; `AppConfig::default()` would
    // claim port 8080.
    AppConfig::__priv_test_new(false, address.to_string(), address)
}
