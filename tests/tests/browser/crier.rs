//! The real all-in-one `crier` process the pages talk to, and the HTTP calls a test
//! makes next to the browser (the `curl` of the scenarios).

use std::time::{Duration, Instant};

use protocol::{ChannelId, Message};
use reqwest::StatusCode;
use reqwest::blocking::Client;
use tempfile::TempDir;

use crate::WAIT;
use crate::process::Service;

const CRIER: &str = env!("CARGO_BIN_EXE_e2e-crier");

/// `crier` on a free loopback port with a fresh data dir; killed when dropped.
pub struct Crier {
    service: Option<Service>,
    /// `127.0.0.1:PORT`, kept so a restart listens where the pages expect it.
    address: String,
    pub url: String,
    dir: TempDir,
    http: Client,
}

impl Crier {
    pub fn start() -> Crier {
        Crier::start_with(&[])
    }

    /// With extra flags (CORS origins, keys…).
    pub fn start_with(flags: &[&str]) -> Crier {
        let dir = tempfile::tempdir().expect("temp dir");
        let flags: Vec<String> = flags.iter().map(|flag| flag.to_string()).collect();
        let service = start_on("127.0.0.1:0", &dir, &flags);
        server::tls::install_crypto_provider();
        let http = Client::builder()
            .timeout(WAIT)
            .build()
            .expect("HTTP client");
        let crier = Crier {
            address: service.address().to_string(),
            url: service.url.clone(),
            service: Some(service),
            dir,
            http,
        };
        crier.wait_until_ready();
        crier
    }

    /// `kill -9`; [`Crier::start_again`] brings it back on the same port and data.
    pub fn kill(&mut self) {
        if let Some(service) = self.service.take() {
            service.kill();
        }
    }

    /// Starts on the address and data dir of the killed process (with a new
    /// embedded broker) and waits until it is ready.
    pub fn start_again(&mut self) {
        assert!(self.service.is_none(), "crier was killed first");
        self.service = Some(start_on(&self.address, &self.dir, &[]));
        self.wait_until_ready();
    }

    /// Removes the killed process's data, as a restore from an old backup or
    /// a new disk would: [`Crier::start_again`] then starts with no history.
    pub fn lose_data(&self) {
        assert!(self.service.is_none(), "crier was killed first");
        std::fs::remove_dir_all(self.dir.path().join("data")).expect("remove the data dir");
    }

    /// The page's address for a room (`None`: no `?c=`, the page picks one).
    pub fn page_url(&self, channel: Option<ChannelId>) -> String {
        match channel {
            Some(channel) => format!("{}/?c={channel}", self.url),
            None => format!("{}/", self.url),
        }
    }

    pub fn post(&self, channel: ChannelId, author: &str, text: &str) -> Message {
        let response = self
            .http
            .post(format!("{}/channels/{channel}/messages", self.url))
            .json(&serde_json::json!({ "author": author, "text": text }))
            .send()
            .expect("POST reaches crier");
        assert_eq!(response.status(), StatusCode::CREATED, "POST answers 201");
        response.json().expect("POST answers the stored message")
    }

    /// The streams open on the server now: `crier_sse_connections` of `/metrics`.
    pub fn open_streams(&self) -> u64 {
        let metrics = self
            .http
            .get(format!("{}/metrics", self.url))
            .send()
            .and_then(|response| response.text())
            .expect("GET /metrics");
        metrics
            .lines()
            .find_map(|line| line.strip_prefix("crier_sse_connections "))
            .and_then(|value| value.trim().parse::<f64>().ok())
            .map(|value| value as u64)
            .unwrap_or_else(|| panic!("no crier_sse_connections in:\n{metrics}"))
    }

    /// The streams on `channel`, as its `GET /channels/{c}/stats` counts them.
    pub fn subscribers(&self, channel: ChannelId) -> u64 {
        let stats: serde_json::Value = self
            .http
            .get(format!("{}/channels/{channel}/stats", self.url))
            .send()
            .and_then(|response| response.json())
            .expect("GET stats");
        stats["subscribers"]
            .as_u64()
            .unwrap_or_else(|| panic!("stats without subscribers: {stats}"))
    }

    fn wait_until_ready(&self) {
        let started = Instant::now();
        while started.elapsed() < WAIT {
            let ready = self.http.get(format!("{}/readyz", self.url)).send();
            if ready.is_ok_and(|r| r.status() == StatusCode::OK) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("crier was not ready within {WAIT:?}; log:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        let log = self.dir.path().join("crier.log");
        std::fs::read_to_string(log).unwrap_or_default()
    }
}

fn start_on(listen: &str, dir: &TempDir, flags: &[String]) -> Service {
    let mut args = vec![
        "--listen".to_string(),
        listen.to_string(),
        "--data-dir".into(),
        dir.path().join("data").display().to_string(),
    ];
    args.extend_from_slice(flags);
    Service::start(CRIER, &args, &dir.path().join("crier.log"))
}
