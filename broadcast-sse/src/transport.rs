//! The HTTP server of every binary that holds streams.
//!
//! Plain HTTP ([`server::plain_server`]): each new connection's first request
//! is peeked at ([`crate::http1`]). A plain HTTP/1 stream request is handed to
//! the stream threads ([`crate::stream_threads`]) and served on the socket
//! directly; a connection that opens with the HTTP/2 preface (h2c) goes to
//! actix-http's HTTP/2 service, and every other one to its HTTP/1 service, both
//! with the application's routes. With TLS, actix-web's `HttpServer` serves
//! everything, HTTP/2 or HTTP/1.1 as the client chooses by ALPN.

use std::net::TcpListener;
use std::time::Duration;

use actix_http::{Protocol, Request};
use actix_server::Server;
use actix_service::{IntoServiceFactory, ServiceFactory};
use actix_web::HttpServer;
use actix_web::body::MessageBody;
use actix_web::dev::AppConfig;
use server::http1_response::refuse_silent;
use server::plain_server::{self, Dispatch, Options};
use tokio::net::TcpStream;

use crate::http1::{self, FirstRequest};
use crate::stream_threads::StreamThreads;

/// Open streams one process may hold: past actix's per-worker default of 25k, up to
/// what the open-files limit allows.
const MAX_CONNECTIONS_PER_WORKER: usize = 100_000;
const BACKLOG: u32 = 4096;
/// Seconds a graceful stop waits for open connections after streams were ended.
const SHUTDOWN_TIMEOUT_SECS: u64 = 5;

/// Serves `app` (a factory of the application, called once per worker) on
/// `listener`, with plain HTTP/1.1 streams pumped by the stream threads unless
/// TLS is on. Signals are not handled here: see [`crate::startup::run_with_hub`].
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
        return Ok(server.listen_rustls_0_23(listener, tls)?.run());
    }
    let address = listener.local_addr()?;
    let threads = StreamThreads::start(app.clone(), plain_server::app_config(address))?;
    let options = Options {
        max_connections: MAX_CONNECTIONS_PER_WORKER,
        backlog: BACKLOG,
        shutdown_timeout_secs: SHUTDOWN_TIMEOUT_SECS,
        header_timeout,
        h1_allow_half_closed: false,
        handle_signals: false,
    };
    plain_server::start(app, listener, options, move |io, dispatch| {
        serve_connection(io, threads.clone(), header_timeout, dispatch)
    })
}

/// Serves one connection: hands its stream to the stream threads, or serves
/// it through actix-http in the version it speaks.
async fn serve_connection(
    mut io: TcpStream,
    threads: StreamThreads,
    header_timeout: Duration,
    dispatch: Dispatch,
) {
    match Box::pin(http1::first_request(&mut io, header_timeout)).await {
        FirstRequest::Stream(head) => threads.open(io, head).await,
        FirstRequest::Silent => Box::pin(refuse_silent(io)).await,
        FirstRequest::Gone => {}
        FirstRequest::Http2 => dispatch(io, Protocol::Http2).await,
        FirstRequest::Other => dispatch(io, Protocol::Http1).await,
    }
}
