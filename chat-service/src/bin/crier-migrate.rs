//! `crier-migrate`: copies a sled data directory into a JetStream stream
//! (see [`chat_service::migrate`]).

use std::process::ExitCode;

use chat_service::migrate::{self, MigrateConfig};
use clap::Parser;

fn main() -> ExitCode {
    server::binary::init_logging();
    server::tls::install_crypto_provider();
    let config = MigrateConfig::parse();
    match actix_web::rt::System::new().block_on(migrate::run(&config)) {
        Ok(copied) => {
            println!(
                "copied {} entries of {} channels into {} ({} were there already)",
                copied.copied, copied.channels, config.nats.nats_stream, copied.present
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
