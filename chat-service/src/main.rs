//! The chat-service binary: the service as [`server::binary::run`] runs every binary.

fn main() -> std::process::ExitCode {
    server::binary::run::<chat_service::Application>()
}
