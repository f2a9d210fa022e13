//! TLS: both HTTP services behind `--tls-cert`/`--tls-key`, and `mqtts://` to a
//! Mosquitto with a TLS listener, all with a certificate authority made here.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use reqwest::StatusCode;
use serde_json::json;
use tempfile::TempDir;

use crate::broker::Broker;
use crate::helpers::{BROADCAST_SSE, CHAT_SERVICE, EventStream, new_channel, wait_for_ready};
use crate::process::Service;

/// A CA and a server certificate for `localhost` and `127.0.0.1`, as PEM files.
pub struct Certificates {
    dir: TempDir,
}

impl Certificates {
    pub fn new() -> Certificates {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // Names of their own: OpenSSL (curl) takes a certificate whose issuer
        // reads like its subject for a self-signed one, and rcgen gives both the
        // same default name.
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Crier test CA");
        let ca_key = KeyPair::generate().expect("CA key");
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA certificate");
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let server_key = KeyPair::generate().expect("server key");
        let mut server_params = CertificateParams::new(names).expect("server params");
        server_params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let server = server_params
            .signed_by(&server_key, &ca)
            .expect("server certificate");
        let write = |name: &str, pem: String| {
            std::fs::write(dir.path().join(name), pem).expect("write PEM");
        };
        write("ca.pem", ca.pem());
        write("server.pem", server.pem());
        write("server.key", server_key.serialize_pem());
        Certificates { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn tls_flags(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.path("server.pem").display().to_string(),
            "--tls-key".into(),
            self.path("server.key").display().to_string(),
        ]
    }

    /// An HTTP client that trusts this CA (and nothing else).
    pub fn trusting_client(&self) -> reqwest::Client {
        client_trusting(Some(&self.path("ca.pem")))
    }
}

fn client_trusting(ca: Option<&Path>) -> reqwest::Client {
    let config = match ca {
        Some(ca) => server::tls::client_config(Some(ca)).expect("client config"),
        None => Arc::new(
            rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
        ),
    };
    server::tls::install_crypto_provider();
    reqwest::Client::builder()
        .use_preconfigured_tls((*config).clone())
        .build()
        .expect("HTTP client")
}

fn start(
    exe: &str,
    mut args: Vec<String>,
    extra: Vec<String>,
    dir: &TempDir,
    log: &str,
) -> Service {
    args.extend(extra);
    Service::start(exe, &args, &dir.path().join(log))
}

#[tokio::test]
async fn both_services_serve_https_to_a_client_that_trusts_their_ca_and_no_other() {
    let certificates = Certificates::new();
    let broker = Broker::embedded();
    let dir = tempfile::tempdir().expect("temp dir");
    let prefix = format!("crier-test-{}", uuid::Uuid::new_v4().simple());
    let common = |extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = ["--listen", "127.0.0.1:0", "--mqtt-url", broker.url.as_str()]
            .map(String::from)
            .to_vec();
        args.extend(["--topic-prefix".to_string(), prefix.clone()]);
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let data = dir.path().join("data").display().to_string();
    let chat = start(
        CHAT_SERVICE,
        common(&["--data-dir", &data]),
        certificates.tls_flags(),
        &dir,
        "chat.log",
    );
    assert!(chat.url.starts_with("https://"), "{}", chat.url);
    let sse = start(
        BROADCAST_SSE,
        common(&["--history-url", &chat.url]),
        certificates.tls_flags(),
        &dir,
        "sse.log",
    );
    let trusting = certificates.trusting_client();
    wait_for_ready(&trusting, &chat.url).await;
    wait_for_ready(&trusting, &sse.url).await;

    let channel = new_channel();
    let url = format!("{}/channels/{channel}/events", sse.url);
    let mut stream = EventStream::from_request(trusting.get(url)).await;
    let posted = trusting
        .post(format!("{}/channels/{channel}/messages", chat.url))
        .json(&json!({"author": "ann", "text": "over TLS"}))
        .send()
        .await
        .expect("POST over TLS");
    assert_eq!(posted.status(), StatusCode::CREATED);
    assert_eq!(stream.next_message().await.text, "over TLS");

    let distrusting = client_trusting(None);
    for base in [&chat.url, &sse.url] {
        let refused = distrusting.get(format!("{base}/healthz")).send().await;
        assert!(
            refused.is_err(),
            "a client that does not trust the CA fails the handshake"
        );
        let plain = base.replacen("https://", "http://", 1);
        let plain = crate::helpers::http_client()
            .get(format!("{plain}/healthz"))
            .send()
            .await;
        assert!(
            plain.is_err_and(|e| !e.is_status()),
            "plain HTTP is not answered"
        );
    }
}

#[tokio::test]
async fn chat_service_reaches_mosquitto_over_mqtts_only_when_it_trusts_the_ca() {
    let certificates = Certificates::new();
    let Some(broker) = Broker::mosquitto_tls(
        &certificates.path("ca.pem"),
        &certificates.path("server.pem"),
        &certificates.path("server.key"),
    ) else {
        return;
    };
    assert!(broker.url.starts_with("mqtts://"), "{}", broker.url);
    let dir = tempfile::tempdir().expect("temp dir");
    let base = |data: &str| -> Vec<String> {
        let data = dir.path().join(data).display().to_string();
        [
            "--listen",
            "127.0.0.1:0",
            "--mqtt-url",
            broker.url.as_str(),
            "--data-dir",
            data.as_str(),
        ]
        .map(String::from)
        .to_vec()
    };
    let ca = [
        "--mqtt-ca-file".to_string(),
        certificates.path("ca.pem").display().to_string(),
    ];
    let trusting = start(CHAT_SERVICE, base("a"), ca.to_vec(), &dir, "a.log");
    let http = crate::helpers::http_client();
    wait_for_ready(&http, &trusting.url).await;

    let channel = new_channel();
    let posted = http
        .post(format!("{}/channels/{channel}/messages", trusting.url))
        .json(&json!({"author": "ann", "text": "hi"}))
        .send()
        .await
        .expect("POST");
    assert_eq!(posted.status(), StatusCode::CREATED);
    crate::helpers::eventually("the broker acknowledged the message over TLS", || async {
        let ready: serde_json::Value = http
            .get(format!("{}/readyz", trusting.url))
            .send()
            .await
            .expect("readyz")
            .json()
            .await
            .expect("JSON");
        ready["outbox"] == 0
    })
    .await;

    // Without the CA the system roots are used, which do not know it.
    let distrusting = start(CHAT_SERVICE, base("b"), Vec::new(), &dir, "b.log");
    crate::helpers::eventually("the untrusted broker certificate is reported", || async {
        let log = distrusting.log_text();
        log.contains("cannot connect to the MQTT broker") && log.contains("certificate")
    })
    .await;
    let ready = http
        .get(format!("{}/readyz", distrusting.url))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let report: serde_json::Value = ready.json().await.expect("JSON");
    assert_eq!(report["broker"], "disconnected");
}
