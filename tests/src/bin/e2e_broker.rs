//! rumqttd as a process of its own, so tests can kill it and start it again on the
//! same port (an in-process rumqttd cannot be stopped).
//!
//! Usage: `e2e-broker 127.0.0.1:PORT`; prints `broker listening on mqtt://ADDR`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    match crier::embedded_broker::start(&listen) {
        Ok(address) => {
            println!("broker listening on mqtt://{address}");
            loop {
                std::thread::park();
            }
        }
        Err(e) => {
            eprintln!("e2e-broker: {e}");
            ExitCode::FAILURE
        }
    }
}
