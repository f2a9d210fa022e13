use crier::Application;
use crier::config::Config;

/// jemalloc instead of the system allocator: the services allocate and free small
/// buffers for every request and message from several threads, where glibc's
/// malloc cost a sixth of the CPU time. It also holds idle streams in less memory
/// (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// rumqttd reports every packet through `tracing` spans (some at error level), which
/// would drown the service's own log and cost more than the work itself. They stay
/// off unless `RUST_LOG` names `rumqttd`.
const QUIET_BROKER: &str = "rumqttd=off,tracing=off";

const NAME: &str = "crier";

#[actix_web::main]
async fn main() -> std::process::ExitCode {
    init_logging();
    server::tls::install_crypto_provider();
    let config = server::config_file::parse::<Config>();
    let data_dir = config.chat.data_dir.display().to_string();
    let scheme = config.server.scheme();
    let prefix = config.topic_prefix.clone();
    let app = match Application::build(config).await {
        Ok(app) => app,
        Err(e) => {
            log::error!("crier could not start: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let endpoints = app.endpoints();
    let kind = if endpoints.broker_is_embedded {
        "embedded"
    } else {
        "external"
    };
    println!("crier listening on {scheme}://{}", endpoints.http);
    println!("  demo page:   {scheme}://{}/", endpoints.http);
    println!(
        "  post:        POST {scheme}://{}/channels/{{uuid}}/messages",
        endpoints.http
    );
    println!(
        "  stream:      GET  {scheme}://{}/channels/{{uuid}}/events",
        endpoints.http
    );
    println!("  MQTT broker: {} ({kind})", endpoints.broker);
    if let Some(websocket) = endpoints.broker_websocket {
        println!("  MQTT over WebSocket: ws://{websocket}/mqtt");
    }
    println!(
        "  MQTT post:   {{\"author\",\"text\"}} to {}/channels/{{uuid}}/post",
        prefix
    );
    println!("  history in:  {data_dir}");
    log::info!("{NAME} {} started", env!("CARGO_PKG_VERSION"));
    match app.run_until_stopped().await {
        Ok(()) => {
            log::info!("{NAME} stopped");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            log::error!("crier stopped: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = match std::env::var("RUST_LOG") {
        Ok(filter) if filter.contains("rumqttd") => filter,
        Ok(filter) if !filter.trim().is_empty() => format!("{filter},{QUIET_BROKER}"),
        _ => format!("info,{QUIET_BROKER}"),
    };
    env_logger::Builder::new().parse_filters(&filter).init();
}
