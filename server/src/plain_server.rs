//! The server of a listener without TLS: HTTP/1.1, and HTTP/2 for a client that
//! opens with the HTTP/2 preface (h2c with prior knowledge, as a proxy that
//! speaks it does). Both go through actix-http's service with the application's
//! routes, set up as actix-web's `HttpServer` would set it up.
//!
//! actix-web's `listen_auto_h2c` waits for a connection's first bytes with no
//! time limit, so a client that connects and says nothing would hold its
//! connection for good. Here that wait is bounded by the request-header timeout,
//! and a transport may look at a connection before actix does
//! ([`crate::transport`] serves plain HTTP/1 streams itself).
//!
//! With TLS, actix-web's `HttpServer` serves everything, `h2` chosen by ALPN
//! ([`crate::service`]).

use std::net::{SocketAddr, TcpListener};
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use std::sync::Arc;

use actix_http::body::BoxBody;
use actix_http::{HttpService, KeepAlive, Protocol, Request, Response};
use actix_server::{Server, ServerBuilder};
use actix_service::boxed::BoxServiceFactory;
use actix_service::{
    Service, ServiceFactory, ServiceFactoryExt, fn_factory, fn_service, map_config,
};
use actix_web::dev::AppConfig;
use tokio::net::TcpStream;

use crate::http1_response::refuse_silent;

/// The client connection preface of HTTP/2 (RFC 9113 §3.4).
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A preface that arrived in part is peeked at again this often, this many
/// times, before the connection is taken for HTTP/1.
const PARTIAL_PREFACE_PAUSE: Duration = Duration::from_millis(5);
const PARTIAL_PREFACE_PEEKS: u32 = 20;

/// What `HttpServer` uses: how long an idle keep-alive connection stays, and
/// how long a closing connection may take to shut down.
const KEEP_ALIVE: Duration = Duration::from_secs(5);
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How the server runs; each binary sets its own.
#[derive(Debug, Clone)]
pub struct Options {
    /// Connections one worker holds at most.
    pub max_connections: usize,
    pub backlog: u32,
    /// Seconds a graceful stop waits for open connections.
    pub shutdown_timeout_secs: u64,
    /// How long a client may take to send a request's headers (and, here, its
    /// first bytes).
    pub header_timeout: Duration,
    /// `false` drops an HTTP/1 connection as soon as its client closes its
    /// side, which ends an open stream at once.
    pub h1_allow_half_closed: bool,
}

/// actix-http serving one connection with the application, in the given HTTP
/// version; the future ends with the connection.
pub type Dispatch = Rc<dyn Fn(TcpStream, Protocol) -> Pin<Box<dyn Future<Output = ()>>>>;

/// The application as each HTTP worker and each stream thread makes it: its
/// routes and middleware, boxed so that every server of this crate takes the
/// same type.
pub type AppFactory =
    BoxServiceFactory<AppConfig, Request, Response<BoxBody>, actix_web::Error, ()>;

/// Makes the application, once per worker.
pub type MakeApp = Arc<dyn Fn() -> AppFactory + Send + Sync>;

/// Serves the application `app` makes on `listener`: each accepted connection
/// goes to `connection` with the worker's [`Dispatch`]. [`serve`] is the
/// `connection` that only chooses the version.
pub fn start<C, Fut>(
    app: MakeApp,
    listener: TcpListener,
    options: Options,
    connection: C,
) -> std::io::Result<Server>
where
    C: Fn(TcpStream, Dispatch) -> Fut + Send + Clone + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let address = listener.local_addr()?;
    // Signals are the binary's: see `crate::service::Running::until_stopped`.
    let builder = ServerBuilder::new()
        .max_concurrent_connections(options.max_connections)
        .backlog(options.backlog)
        .shutdown_timeout(options.shutdown_timeout_secs)
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
            .client_request_timeout(options.header_timeout)
            .client_disconnect_timeout(DISCONNECT_TIMEOUT)
            .h1_allow_half_closed(options.h1_allow_half_closed)
            .local_addr(address)
            .finish(map_config(
                app().map_err(|err| err.error_response()),
                move |_| app_config(address),
            ));
        connections(http, connection.clone())
    })?;
    Ok(builder.run())
}

/// What a worker runs for each accepted connection: `connection`, with the
/// worker's instance of `http` as its [`Dispatch`].
fn connections<H, C, Fut>(
    http: H,
    connection: C,
) -> impl ServiceFactory<TcpStream, Config = (), Response = (), Error = (), InitError = ()>
where
    H: ServiceFactory<(TcpStream, Protocol, Option<SocketAddr>), Config = (), Response = ()>
        + 'static,
    H::Service: 'static,
    H::Error: std::fmt::Debug,
    H::InitError: std::fmt::Debug,
    C: Fn(TcpStream, Dispatch) -> Fut + Clone + 'static,
    Fut: Future<Output = ()> + 'static,
{
    fn_factory(move || {
        let http = http.new_service(());
        let connection = connection.clone();
        async move {
            let http = Rc::new(http.await.map_err(|e| {
                log::error!("cannot start an HTTP worker: {e:?}");
            })?);
            let dispatch: Dispatch = Rc::new(move |io: TcpStream, protocol: Protocol| {
                let peer = io.peer_addr().ok();
                let served = http.call((io, protocol, peer));
                Box::pin(async move {
                    if let Err(e) = served.await {
                        log::debug!("connection ended with an error: {e:?}");
                    }
                })
            });
            Ok::<_, ()>(fn_service(move |io: TcpStream| {
                // Boxed: actix-server keeps the future it is given twice over.
                let served: Pin<Box<dyn Future<Output = ()>>> =
                    Box::pin(connection(io, dispatch.clone()));
                async move {
                    served.await;
                    Ok::<_, ()>(())
                }
            }))
        }
    })
}

/// Serves one connection in the HTTP version its first bytes ask for.
pub async fn serve(io: TcpStream, dispatch: Dispatch, header_timeout: Duration) {
    match opening(&io, header_timeout).await {
        Opening::Http2 => dispatch(io, Protocol::Http2).await,
        Opening::Http1 => dispatch(io, Protocol::Http1).await,
        // Answered here: actix's HTTP/1 dispatcher would give the client the
        // whole timeout again, from a clock read up to 500 ms before; with a
        // short timeout that deadline is past when set, and then never fires.
        Opening::Silent => Box::pin(refuse_silent(io)).await,
        Opening::Gone => {}
    }
}

/// What a new connection opens with.
#[derive(Debug, PartialEq, Eq)]
pub enum Opening {
    /// The HTTP/2 preface.
    Http2,
    /// Anything else: HTTP/1, or bytes actix will refuse.
    Http1,
    /// Nothing arrived within the request-header timeout.
    Silent,
    /// The client closed the connection or it failed.
    Gone,
}

/// Peeks at a new connection's first bytes, waiting at most `header_timeout`
/// for them; nothing is read off the socket.
pub async fn opening(io: &TcpStream, header_timeout: Duration) -> Opening {
    let mut buffer = [0; H2_PREFACE.len()];
    let first = tokio::time::timeout(header_timeout, io.peek(&mut buffer)).await;
    let mut peeked = match first {
        Err(_) => return Opening::Silent,
        Ok(Ok(0) | Err(_)) => return Opening::Gone,
        Ok(Ok(n)) => n,
    };
    for _ in 0..PARTIAL_PREFACE_PEEKS {
        match preface(&buffer[..peeked]) {
            Preface::Complete => return Opening::Http2,
            Preface::Not => return Opening::Http1,
            Preface::Partial => {}
        }
        tokio::time::sleep(PARTIAL_PREFACE_PAUSE).await;
        peeked = match io.peek(&mut buffer).await {
            Ok(0) | Err(_) => return Opening::Gone,
            Ok(n) => n,
        };
    }
    Opening::Http1
}

/// Whether a connection's first bytes are the HTTP/2 preface.
#[derive(Debug, PartialEq, Eq)]
pub enum Preface {
    Complete,
    /// The start of it: wait for more bytes.
    Partial,
    Not,
}

pub fn preface(bytes: &[u8]) -> Preface {
    let length = bytes.len().min(H2_PREFACE.len());
    if bytes[..length] != H2_PREFACE[..length] {
        Preface::Not
    } else if length == H2_PREFACE.len() {
        Preface::Complete
    } else {
        Preface::Partial
    }
}

/// What actix-web tells handlers about the listener.
pub fn app_config(address: SocketAddr) -> AppConfig {
    // The constructor actix-web's own server uses; `AppConfig::default()` would
    // claim port 8080.
    AppConfig::__priv_test_new(false, address.to_string(), address)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_whole_http2_preface_opens_http2() {
        assert_eq!(preface(H2_PREFACE), Preface::Complete);
        let mut more = H2_PREFACE.to_vec();
        more.extend_from_slice(b"\0\0\x12\x04");
        assert_eq!(preface(&more), Preface::Complete);
        assert_eq!(preface(b"PRI * HTTP/2.0\r\n"), Preface::Partial);
        assert_eq!(preface(b"P"), Preface::Partial);
        assert_eq!(
            preface(b"POST /channels/c/messages HTTP/1.1\r\n"),
            Preface::Not
        );
        assert_eq!(
            preface(b"GET /channels/c/events HTTP/1.1\r\n"),
            Preface::Not
        );
        assert_eq!(preface(b"PRI * HTTP/1.1\r\n\r\n"), Preface::Not);
    }
}
