use broadcast_sse::Application;
use broadcast_sse::config::Config;

/// jemalloc instead of the system allocator: the services allocate and free small
/// buffers for every request and message from several threads, where glibc's
/// malloc cost a sixth of the CPU time. It also holds idle streams in less memory
/// (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const NAME: &str = "broadcast-sse";

#[actix_web::main]
async fn main() -> std::process::ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    server::tls::install_crypto_provider();
    let config = server::config_file::parse::<Config>();
    let mqtt_url = server::mqtt::redact(&config.mqtt.mqtt_url);
    let history_url = config.history_url.clone();
    let scheme = config.server.scheme();
    let app = match Application::build(config).await {
        Ok(app) => app,
        Err(e) => {
            log::error!("broadcast-sse could not start: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    println!(
        "broadcast-sse listening on {scheme}://{} (broker {mqtt_url}, history {history_url})",
        app.address()
    );
    log::info!("{NAME} {} started", env!("CARGO_PKG_VERSION"));
    match app.run_until_stopped().await {
        Ok(()) => {
            log::info!("{NAME} stopped");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            log::error!("broadcast-sse stopped: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
