//! How a plain-HTTP connection is served: by actix-http alone, or with its
//! stream requests pumped on the socket.
//!
//! With [`Transport::Streams`], each new connection's first request is peeked
//! at ([`http1`]). A plain HTTP/1 stream request (a path the binary names) is
//! handed to the stream threads ([`stream_threads`]) and served on the socket
//! directly; a connection that opens with the HTTP/2 preface (h2c) goes to
//! actix-http's HTTP/2 service, and every other one to its HTTP/1 service, both
//! with the application's routes. With TLS, actix-web's `HttpServer` serves
//! everything, HTTP/2 or HTTP/1.1 as the client chooses by ALPN
//! ([`crate::service`]).

pub mod http1;
pub mod stream_threads;

use std::net::TcpListener;
use std::time::Duration;

use actix_http::Protocol;
use actix_server::Server;
use tokio::net::TcpStream;

use crate::http1_response::refuse_silent;
use crate::plain_server::{self, Dispatch, MakeApp, Options};
use http1::FirstRequest;
use stream_threads::StreamThreads;

/// Which requests a binary serves as streams, by path (`/channels/…/events`).
pub type IsStreamPath = fn(&str) -> bool;

/// How a binary serves plain-HTTP connections.
#[derive(Debug, Clone, Copy)]
pub enum Transport {
    /// Every connection through actix-http: a service of short requests.
    Requests,
    /// Stream requests on the stream threads, pumped on the socket; every
    /// other request through actix-http: a service that holds streams.
    Streams(IsStreamPath),
}

impl Transport {
    /// How the server around this transport runs: a service that holds
    /// streams takes more connections, and a client closing its side ends
    /// its stream at once.
    pub fn options(self, header_timeout: Duration) -> Options {
        match self {
            Transport::Requests => Options {
                max_connections: 25_000,
                backlog: 1024,
                shutdown_timeout_secs: SHUTDOWN_TIMEOUT_SECS,
                header_timeout,
                h1_allow_half_closed: true,
            },
            Transport::Streams(_) => Options {
                // Past actix's per-worker default of 25k, up to what the
                // open-files limit allows.
                max_connections: 100_000,
                backlog: 4096,
                shutdown_timeout_secs: SHUTDOWN_TIMEOUT_SECS,
                header_timeout,
                h1_allow_half_closed: false,
            },
        }
    }

    /// How many connections may wait to be accepted.
    pub fn backlog(self) -> u32 {
        self.options(Duration::ZERO).backlog
    }

    /// Serves the application `app` makes on `listener` without TLS.
    pub fn start(
        self,
        app: MakeApp,
        listener: TcpListener,
        options: Options,
    ) -> std::io::Result<Server> {
        let header_timeout = options.header_timeout;
        match self {
            Transport::Requests => {
                plain_server::start(app, listener, options, move |io, dispatch| {
                    plain_server::serve(io, dispatch, header_timeout)
                })
            }
            Transport::Streams(is_stream) => {
                let address = listener.local_addr()?;
                let threads = StreamThreads::start(app.clone(), plain_server::app_config(address))?;
                plain_server::start(app, listener, options, move |io, dispatch| {
                    serve_connection(io, threads.clone(), header_timeout, is_stream, dispatch)
                })
            }
        }
    }
}

/// Seconds a graceful stop waits for open connections (after streams ended).
pub const SHUTDOWN_TIMEOUT_SECS: u64 = 5;

/// Serves one connection: hands its stream to the stream threads, or serves
/// it through actix-http in the version it speaks.
async fn serve_connection(
    mut io: TcpStream,
    threads: StreamThreads,
    header_timeout: Duration,
    is_stream: IsStreamPath,
    dispatch: Dispatch,
) {
    match Box::pin(http1::first_request(&mut io, header_timeout, is_stream)).await {
        FirstRequest::Stream(head) => threads.open(io, head).await,
        FirstRequest::Silent => Box::pin(refuse_silent(io)).await,
        FirstRequest::Gone => {}
        FirstRequest::Http2 => dispatch(io, Protocol::Http2).await,
        FirstRequest::Other => dispatch(io, Protocol::Http1).await,
    }
}
