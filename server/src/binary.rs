//! What every binary's `main` does: logging, the TLS crypto provider, the
//! configuration (flags, environment, `--config FILE`), build, a line saying
//! where it listens, run until stopped, and an exit code.

use std::future::Future;
use std::process::ExitCode;

/// jemalloc instead of the system allocator, for every binary built on this
/// crate: the services allocate and free small buffers for every request and
/// message from several threads, where glibc's malloc cost a sixth of the CPU
/// time. It also holds idle streams in less memory (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// rumqttd reports every packet through `tracing` spans (some at error level),
/// which would drown the service's own log and cost more than the work
/// itself. They stay off unless `RUST_LOG` names `rumqttd`.
const QUIET_BROKER: &str = "rumqttd=off,tracing=off";

/// A service as its `main` runs it.
pub trait Binary: Sized {
    /// The binary's name, for its log.
    const NAME: &'static str;
    type Config: clap::Parser;
    type Error: std::fmt::Display;

    fn build(config: Self::Config) -> impl Future<Output = Result<Self, Self::Error>>;

    /// What to print once it listens: where, and what it uses.
    fn banner(&self) -> &str;

    /// Serves until SIGINT/SIGTERM (then stops in order) or until a task it
    /// cannot work without fails.
    fn run_until_stopped(self) -> impl Future<Output = std::io::Result<()>>;
}

/// The whole `main` of binary `B`, on actix's runtime.
pub fn run<B: Binary>() -> ExitCode {
    init_logging();
    crate::tls::install_crypto_provider();
    let config = crate::config_file::parse::<B::Config>();
    actix_web::rt::System::new().block_on(build_and_run::<B>(config))
}

async fn build_and_run<B: Binary>(config: B::Config) -> ExitCode {
    let name = B::NAME;
    let binary = match B::build(config).await {
        Ok(binary) => binary,
        Err(e) => {
            log::error!("{name} could not start: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("{}", binary.banner());
    log::info!("{name} {} started", env!("CARGO_PKG_VERSION"));
    match binary.run_until_stopped().await {
        Ok(()) => {
            log::info!("{name} stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            log::error!("{name} stopped: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `RUST_LOG` (default `info`), with the embedded broker's tracing kept quiet.
pub fn init_logging() {
    let filter = match std::env::var("RUST_LOG") {
        Ok(filter) if filter.contains("rumqttd") => filter,
        Ok(filter) if !filter.trim().is_empty() => format!("{filter},{QUIET_BROKER}"),
        _ => format!("info,{QUIET_BROKER}"),
    };
    env_logger::Builder::new().parse_filters(&filter).init();
}
