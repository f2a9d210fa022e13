//! One builder for the HTTP server of every binary: chat-service, broadcast-sse
//! and the all-in-one are each their state, their routes and their answers to
//! `/readyz` and `/metrics` given to a [`Service`].
//!
//! The builder owns what they share: the middleware (request-head limit, CORS,
//! JSON error bodies), the extractor settings, health and `/openapi.json`,
//! metrics on the main listener or on `--metrics-listen`, TLS (HTTP/2 or
//! HTTP/1.1 by ALPN) or plain HTTP/1.1 and h2c through the [`Transport`], and
//! the stop on SIGINT/SIGTERM.

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use actix_service::IntoServiceFactory;
use actix_web::dev::{Server, ServerHandle};
use actix_web::{App, FromRequest, Handler, HttpServer, Responder, Route, web};
use utoipa::openapi::OpenApi;

use crate::error::{json_error_bodies, not_found, path_config, query_config};
use crate::plain_server::{AppFactory, MakeApp};
use crate::settings::{ServerSettings, limit_request_head};
use crate::tls::TlsError;
use crate::transport::Transport;

/// Registers part of the application: its state, or routes.
type Part = Arc<dyn Fn(&mut web::ServiceConfig) + Send + Sync>;
/// Makes a route (a route is not `Clone`: each worker makes its own).
type MakeRoute = Arc<dyn Fn() -> Route + Send + Sync>;

/// A binary's HTTP server, before it listens.
pub struct Service {
    settings: ServerSettings,
    parts: Vec<Part>,
    readyz: MakeRoute,
    /// What `/openapi.json` answers.
    document: OpenApi,
    metrics: Option<MakeRoute>,
    transport: Transport,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: String,
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
}

impl Service {
    /// A server with `settings`, answering `/readyz` with `readyz` and
    /// `/openapi.json` with `document` (see [`crate::openapi::document`]),
    /// every request through actix-http ([`Transport::Requests`]).
    pub fn new<H, Args>(settings: ServerSettings, readyz: H, document: OpenApi) -> Self
    where
        H: Handler<Args> + Send + Sync,
        Args: FromRequest + 'static,
        H::Output: Responder + 'static,
    {
        Service {
            settings,
            parts: Vec::new(),
            readyz: make_get(readyz),
            document,
            metrics: None,
            transport: Transport::Requests,
        }
    }

    /// State the handlers take as `web::Data<T>`.
    pub fn data<T: Send + Sync + 'static>(mut self, state: T) -> Self {
        let state = web::Data::new(state);
        self.parts
            .push(Arc::new(move |cfg: &mut web::ServiceConfig| {
                cfg.app_data(state.clone());
            }));
        self
    }

    /// Routes (a `configure` of `server::routes!`, or the binary's own).
    pub fn routes(
        mut self,
        configure: impl Fn(&mut web::ServiceConfig) + Send + Sync + 'static,
    ) -> Self {
        self.parts.push(Arc::new(configure));
        self
    }

    /// `GET /metrics`: served on `--metrics-listen` when set, else on the
    /// main listener unless turned off.
    pub fn metrics<H, Args>(mut self, handler: H) -> Self
    where
        H: Handler<Args> + Send + Sync,
        Args: FromRequest + 'static,
        H::Output: Responder + 'static,
    {
        self.metrics = Some(make_get(handler));
        self
    }

    /// How plain-HTTP connections are served (streams on the socket, or not).
    pub fn transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// Binds `listen` and starts serving; the server runs once awaited
    /// ([`Running::until_stopped`]). Must be called on the runtime that will
    /// run it.
    pub fn start(self, listen: &str) -> Result<Running, ServeError> {
        let listen_error = |address: &str| {
            let address = address.to_string();
            move |source| ServeError::Listen { address, source }
        };
        let backlog = self.transport.backlog();
        let listener = crate::listen::bind(listen, backlog).map_err(listen_error(listen))?;
        let address = listener.local_addr().map_err(listen_error(listen))?;
        let tls = self.settings.tls()?;
        if let (Some(metrics), Some(metrics_listen)) =
            (&self.metrics, &self.settings.metrics_listen)
        {
            let metrics_app = self.metrics_app(metrics.clone());
            crate::metrics::serve_alone(metrics_listen, metrics_app)
                .map_err(listen_error(metrics_listen))?;
        }
        let server = self.serve(listener, tls).map_err(listen_error(listen))?;
        Ok(Running { address, server })
    }

    /// The application of the `--metrics-listen` listener: the state and
    /// `/metrics` only.
    fn metrics_app(
        &self,
        metrics: MakeRoute,
    ) -> impl Fn(&mut web::ServiceConfig) + Clone + Send + 'static {
        let parts = self.parts.clone();
        move |cfg: &mut web::ServiceConfig| {
            for part in &parts {
                part(cfg);
            }
            cfg.route("/metrics", metrics());
        }
    }

    fn serve(
        self,
        listener: TcpListener,
        tls: Option<rustls::ServerConfig>,
    ) -> std::io::Result<Server> {
        let header_timeout = self.settings.request_header_timeout();
        let options = self.transport.options(header_timeout);
        let transport = self.transport;
        let app = self.make_app();
        let Some(tls) = tls else {
            return transport.start(app, listener, options);
        };
        let server = HttpServer::new(move || app())
            .h1_allow_half_closed(options.h1_allow_half_closed)
            .max_connections(options.max_connections)
            .backlog(options.backlog)
            .shutdown_timeout(options.shutdown_timeout_secs)
            .disable_signals()
            .client_request_timeout(header_timeout);
        Ok(server.listen_rustls_0_23(listener, tls)?.run())
    }

    /// The application every worker and stream thread runs.
    fn make_app(self) -> MakeApp {
        let Service {
            settings,
            parts,
            readyz,
            document,
            metrics,
            transport: _,
        } = self;
        let metrics = metrics.filter(|_| settings.metrics_on_main_listener());
        Arc::new(move || -> AppFactory {
            let app = App::new()
                .wrap(actix_web::middleware::from_fn(limit_request_head))
                .wrap(settings.cors.middleware())
                .wrap(json_error_bodies())
                .app_data(query_config())
                .app_data(path_config())
                .configure(|cfg| {
                    for part in &parts {
                        part(cfg);
                    }
                    crate::health::configure(cfg, readyz(), document.clone());
                    if let Some(metrics) = &metrics {
                        cfg.route("/metrics", metrics());
                    }
                })
                .default_service(web::to(not_found));
            actix_service::boxed::factory(actix_service::ServiceFactoryExt::map(
                app.into_factory(),
                |response| response.map_into_boxed_body().into(),
            ))
        })
    }
}

fn make_get<H, Args>(handler: H) -> MakeRoute
where
    H: Handler<Args> + Send + Sync,
    Args: FromRequest + 'static,
    H::Output: Responder + 'static,
{
    Arc::new(move || web::get().to(handler.clone()))
}

/// A server that listens, not yet run.
pub struct Running {
    address: SocketAddr,
    server: Server,
}

impl Running {
    /// The bound address, with the real port when port 0 was asked for.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Serves until SIGINT/SIGTERM, or until `task` ends (an error: a task
    /// the service cannot work without, named by `task_name`). On a signal,
    /// `on_signal` runs first (so open streams end at once), then the server
    /// stops accepting and lets requests in flight finish.
    pub async fn until_stopped(
        self,
        task: impl Future,
        task_name: &str,
        on_signal: impl FnOnce(),
    ) -> std::io::Result<()> {
        let handle: ServerHandle = self.server.handle();
        let server = tokio::spawn(self.server);
        tokio::select! {
            () = stop_signal() => {
                on_signal();
                handle.stop(true).await;
                Ok(())
            }
            result = server => result.unwrap_or_else(|e| Err(std::io::Error::other(e))),
            _ = task => Err(std::io::Error::other(format!("the {task_name} stopped"))),
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
