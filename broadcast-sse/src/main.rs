//! The broadcast-sse binary: the service as [`server::binary::run`] runs every binary.

fn main() -> std::process::ExitCode {
    server::binary::run::<broadcast_sse::Application>()
}
