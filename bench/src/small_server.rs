//! What the small servers beside the benchmarks share (`bare-actix`,
//! `accept-hook`): their one flag and their health answer.

use actix_web::HttpResponse;

/// The address of `--listen ADDRESS`, the only flag; exits with usage otherwise.
pub fn listen_address(name: &str) -> String {
    let mut args = std::env::args().skip(1);
    match (args.next().as_deref(), args.next()) {
        (Some("--listen"), Some(address)) => address,
        _ => {
            eprintln!("usage: {name} --listen ADDRESS");
            std::process::exit(2);
        }
    }
}

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}
