//! The all-in-one crier binary: both services as [`server::binary::run`] runs every binary.

fn main() -> std::process::ExitCode {
    server::binary::run::<crier::Application>()
}
