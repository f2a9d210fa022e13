//! HTTP/2: with TLS every binary offers `h2` by ALPN next to `http/1.1`, so a
//! browser carries all its streams on one connection; without TLS every binary
//! also serves h2c to a client that opens with the HTTP/2 preface, as a proxy
//! that speaks it does. Driven with curl, which speaks both as a browser and a
//! proxy would.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tempfile::TempDir;

use crate::broker::{Broker, required_sbin};
use crate::helpers::{
    BROADCAST_SSE, CHAT_SERVICE, CRIER, TestApp, WAIT, eventually, new_channel, wait_for_ready,
};
use crate::process::Service;
use crate::tls::Certificates;

/// What one transfer reports when it ends: HTTP version, new connections made
/// for it, and the stream's response headers.
const STREAM_REPORT: &str = "%{http_version} %{num_connects} %{content_type} \
                             %header{cache-control} %header{x-accel-buffering}\\n";
/// What a graceful stop may take: streams end at once, requests get 5 s.
const STOP_BOUND: Duration = Duration::from_secs(10);

/// curl, found like Mosquitto: `None` (the test is skipped) when it is missing
/// and not required.
struct Curl {
    program: PathBuf,
    /// Extra flags for every call (`--cacert`).
    trust: Vec<String>,
}

impl Curl {
    fn find() -> Option<Curl> {
        let program = required_sbin("curl")?;
        Some(Curl {
            program,
            trust: Vec::new(),
        })
    }

    /// The same curl, trusting only the CA of `certificates`.
    fn trusting(self, certificates: &Certificates) -> Curl {
        let ca = certificates.path("ca.pem").display().to_string();
        Curl {
            trust: vec!["--cacert".into(), ca],
            ..self
        }
    }

    fn command(&self, args: &[String]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.program);
        command
            .args(["--silent", "--show-error"])
            .args(&self.trust)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    /// Runs one call to its end (within [`WAIT`]); its output, which `--write-out`
    /// ends with the given variables. Panics unless curl succeeds.
    async fn run(&self, args: &[String]) -> String {
        let output = tokio::time::timeout(WAIT, self.command(args).output())
            .await
            .unwrap_or_else(|_| panic!("curl {args:?} did not end within {WAIT:?}"))
            .expect("run curl");
        let stdout = String::from_utf8_lossy(&output.stdout).to_string();
        assert!(
            output.status.success(),
            "curl {args:?}: {}\n{stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }

    /// `GET url` with `version` (`--http2`, `--http1.1`…): the HTTP version
    /// used and the status.
    async fn get(&self, version: &str, url: &str) -> (String, String) {
        let args = [
            version,
            "--output",
            "-",
            "--write-out",
            "\n%{http_version} %{response_code}",
            url,
        ];
        version_and_status(&self.run(&args.map(String::from)).await)
    }

    /// Posts `text` to `channel` through `base` with `version`: the HTTP
    /// version used and the status.
    async fn post(&self, version: &str, base: &str, channel: &str, text: &str) -> (String, String) {
        let body = serde_json::json!({"author": "ann", "text": text}).to_string();
        let url = format!("{base}/channels/{channel}/messages");
        let args = [
            version,
            "--header",
            "content-type: application/json",
            "--data",
            &body,
            "--output",
            "-",
            "--write-out",
            "\n%{http_version} %{response_code}",
            &url,
        ];
        version_and_status(&self.run(&args.map(String::from)).await)
    }

    /// Opens the streams of `urls` in one curl with `version`, each written to a
    /// file of its own in `dir`, as it arrives.
    fn open_streams(&self, version: &str, urls: &[String], dir: &Path) -> Streams {
        let mut args: Vec<String> = [version, "--no-buffer", "--write-out", STREAM_REPORT]
            .map(String::from)
            .to_vec();
        if urls.len() > 1 {
            args.extend(["--parallel", "--parallel-max", "20"].map(String::from));
        }
        let mut files = Vec::new();
        for (i, url) in urls.iter().enumerate() {
            let file = dir.join(format!("stream-{i}"));
            args.extend(["--output".into(), file.display().to_string(), url.clone()]);
            files.push(file);
        }
        let curl = self.command(&args).spawn().expect("start curl");
        Streams { curl, files }
    }
}

fn version_and_status(output: &str) -> (String, String) {
    let last = output.lines().last().unwrap_or_default();
    let (version, status) = last.split_once(' ').unwrap_or((last, ""));
    (version.to_string(), status.to_string())
}

/// Streams being received by one curl process.
struct Streams {
    curl: tokio::process::Child,
    files: Vec<PathBuf>,
}

impl Streams {
    /// Waits until every stream received `text`.
    async fn all_received(&self, text: &str) {
        eventually(&format!("every stream received {text:?}"), || async {
            self.files
                .iter()
                .all(|file| std::fs::read_to_string(file).is_ok_and(|body| body.contains(text)))
        })
        .await;
    }

    /// Waits until every stream started: its first bytes (`retry:`) come after
    /// the node subscribed, so a message posted afterwards is on it.
    async fn all_started(&self) {
        self.all_received("retry:").await;
    }

    /// Waits for curl to end on its own (the server ended every stream): what
    /// it reported of each transfer.
    async fn ended(self) -> Vec<String> {
        let output = tokio::time::timeout(STOP_BOUND, self.curl.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("the streams did not end within {STOP_BOUND:?}"))
            .expect("curl output");
        assert!(
            output.status.success(),
            "every stream ended cleanly: curl {}, {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        stdout.lines().map(String::from).collect()
    }
}

fn start(exe: &str, args: &[String], dir: &TempDir, log: &str) -> Service {
    Service::start(exe, args, &dir.path().join(log))
}

#[tokio::test]
async fn twenty_streams_share_one_tls_connection_over_http2_and_all_receive_a_post() {
    let Some(curl) = Curl::find() else {
        return;
    };
    let certificates = Certificates::new();
    let curl = curl.trusting(&certificates);
    let dir = tempfile::tempdir().expect("temp dir");
    let mut args: Vec<String> = ["--listen", "127.0.0.1:0", "--heartbeat-secs", "1"]
        .map(String::from)
        .to_vec();
    args.extend([
        "--data-dir".into(),
        dir.path().join("data").display().to_string(),
    ]);
    args.extend(certificates.tls_flags());
    let mut crier = start(CRIER, &args, &dir, "crier.log");
    wait_for_ready(&certificates.trusting_client(), &crier.url).await;

    let channel = new_channel();
    let url = format!("{}/channels/{channel}/events", crier.url);
    let urls = vec![url; 20];
    let streams = curl.open_streams("--http2", &urls, dir.path());
    streams.all_started().await;
    let posted = curl
        .post(
            "--http1.1",
            &crier.url,
            &channel.to_string(),
            "to twenty at once",
        )
        .await;
    assert_eq!(
        posted,
        ("1.1".into(), "201".into()),
        "HTTP/1.1 on the same port"
    );
    streams.all_received("to twenty at once").await;
    streams.all_received(": keep-alive").await;

    crier.send_sigterm();
    let reports = streams.ended().await;
    let (status, took) = crier.wait_for_exit(STOP_BOUND).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "crier exits cleanly after its HTTP/2 streams ended: {status:?} after {took:?}"
    );
    crier.assert_no_thread_panicked();
    assert_eq!(reports.len(), 20, "{reports:?}");
    let mut connections = 0;
    for report in &reports {
        let fields: Vec<&str> = report.split(' ').collect();
        let [version, connects, headers @ ..] = fields.as_slice() else {
            panic!("a transfer report: {report:?}");
        };
        assert_eq!(*version, "2", "streamed over HTTP/2: {report:?}");
        assert_eq!(
            headers,
            ["text/event-stream", "no-cache", "no"],
            "the stream's headers over HTTP/2: {report:?}"
        );
        connections += connects.parse::<u32>().expect("num_connects");
    }
    assert_eq!(
        connections, 1,
        "all 20 streams on one connection: {reports:?}"
    );
}

#[tokio::test]
async fn split_services_answer_http2_and_http11_on_their_tls_ports() {
    let Some(curl) = Curl::find() else {
        return;
    };
    let certificates = Certificates::new();
    let curl = curl.trusting(&certificates);
    let broker = Broker::embedded();
    let dir = tempfile::tempdir().expect("temp dir");
    let prefix = format!("crier-test-{}", uuid::Uuid::new_v4().simple());
    let common = |extra: &[String]| -> Vec<String> {
        let mut args: Vec<String> = ["--listen", "127.0.0.1:0", "--mqtt-url", &broker.url]
            .map(String::from)
            .to_vec();
        args.extend(["--topic-prefix".to_string(), prefix.clone()]);
        args.extend_from_slice(extra);
        args.extend(certificates.tls_flags());
        args
    };
    let data = dir.path().join("data").display().to_string();
    let chat = start(
        CHAT_SERVICE,
        &common(&["--data-dir".into(), data]),
        &dir,
        "chat.log",
    );
    let history = ["--history-url".to_string(), chat.url.clone()];
    let sse = start(BROADCAST_SSE, &common(&history), &dir, "sse.log");
    let trusting = certificates.trusting_client();
    wait_for_ready(&trusting, &chat.url).await;
    wait_for_ready(&trusting, &sse.url).await;

    for base in [&chat.url, &sse.url] {
        let url = format!("{base}/healthz");
        for (flag, version) in [("--http2", "2"), ("--http1.1", "1.1")] {
            let answer = curl.get(flag, &url).await;
            assert_eq!(answer, (version.into(), "200".into()), "{flag} to {url}");
        }
    }
    let channel = new_channel();
    let url = format!("{}/channels/{channel}/events", sse.url);
    let streams = curl.open_streams("--http2", &[url], dir.path());
    streams.all_started().await;
    let posted = curl
        .post("--http2", &chat.url, &channel.to_string(), "over h2")
        .await;
    assert_eq!(posted, ("2".into(), "201".into()));
    streams.all_received("over h2").await;
}

/// A stream and a POST, both as h2c with prior knowledge, through `stream_base`
/// and `api_base` (the same port for the all-in-one).
async fn h2c_stream_receives_an_h2c_post(curl: &Curl, stream_base: &str, api_base: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let channel = new_channel();
    let url = format!("{stream_base}/channels/{channel}/events");
    let streams = curl.open_streams("--http2-prior-knowledge", &[url], dir.path());
    streams.all_started().await;
    let posted = curl
        .post(
            "--http2-prior-knowledge",
            api_base,
            &channel.to_string(),
            "over h2c",
        )
        .await;
    assert_eq!(posted, ("2".into(), "201".into()), "POST to {api_base}");
    streams.all_received("over h2c").await;
    let history = format!("{api_base}/channels/{channel}/messages");
    for url in [format!("{stream_base}/healthz"), history] {
        let answer = curl.get("--http2-prior-knowledge", &url).await;
        assert_eq!(answer, ("2".into(), "200".into()), "GET {url}");
    }
}

#[tokio::test]
async fn plain_chat_service_and_broadcast_sse_speak_h2c_with_prior_knowledge() {
    let Some(curl) = Curl::find() else {
        return;
    };
    let app = TestApp::on(Broker::embedded()).await;
    h2c_stream_receives_an_h2c_post(&curl, &app.sse.url, app.chat_url()).await;
    // Plain HTTP/1 still works beside it.
    let url = format!("{}/healthz", app.sse.url);
    assert_eq!(
        curl.get("--http1.1", &url).await,
        ("1.1".into(), "200".into())
    );
}

#[tokio::test]
async fn plain_crier_speaks_h2c_with_prior_knowledge() {
    let Some(curl) = Curl::find() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let args = ["--listen", "127.0.0.1:0", "--data-dir"].map(String::from);
    let mut args = args.to_vec();
    args.push(dir.path().join("data").display().to_string());
    let crier = start(CRIER, &args, &dir, "crier.log");
    wait_for_ready(&crate::helpers::http_client(), &crier.url).await;
    h2c_stream_receives_an_h2c_post(&curl, &crier.url, &crier.url).await;
}

/// actix-http's HTTP/2 dispatcher does not watch for a client's reset while a
/// stream's body waits: the stream is dropped at its next write, which the
/// heartbeat bounds.
#[tokio::test]
async fn an_http2_stream_whose_client_left_is_dropped_by_its_next_heartbeat() {
    let Some(curl) = Curl::find() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let mut args: Vec<String> = ["--listen", "127.0.0.1:0", "--heartbeat-secs", "1"]
        .map(String::from)
        .to_vec();
    args.extend([
        "--data-dir".into(),
        dir.path().join("data").display().to_string(),
    ]);
    let crier = start(CRIER, &args, &dir, "crier.log");
    let http = crate::helpers::http_client();
    wait_for_ready(&http, &crier.url).await;
    let listeners = || async {
        let ready: serde_json::Value = http
            .get(format!("{}/readyz", crier.url))
            .send()
            .await
            .expect("readyz")
            .json()
            .await
            .expect("JSON");
        ready["listeners"].as_u64().expect("listeners")
    };

    let url = format!("{}/channels/{}/events", crier.url, new_channel());
    let mut streams = curl.open_streams("--http2-prior-knowledge", &[url], dir.path());
    streams.all_started().await;
    assert_eq!(listeners().await, 1);
    streams.curl.kill().await.expect("kill curl");
    eventually("the stream of the client that left is dropped", || async {
        listeners().await == 0
    })
    .await;
}
