//! A publish hook of the test's own on loopback, answering each post as the
//! test decides and keeping what it was asked.

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::helpers::WAIT;

/// The app's answer to one post: the JSON to send back, or `None` to never
/// answer.
pub type Decide = fn(&Value) -> Option<Value>;

/// Largest request the test's app reads.
const MAX_REQUEST: usize = 64 * 1024;
/// Connections the test's app takes at most (each test makes a handful).
const MAX_CONNECTIONS: usize = 64;

/// A publish hook of the test's own on loopback: it answers what `decide`
/// says and keeps every post it was asked about.
pub struct HookApp {
    pub url: String,
    seen: mpsc::UnboundedReceiver<Value>,
    task: JoinHandle<()>,
}

impl HookApp {
    pub async fn start(decide: Decide) -> HookApp {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("local address");
        let (seen_tx, seen) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            for _ in 0..MAX_CONNECTIONS {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(answer(stream, decide, seen_tx.clone()));
            }
        });
        HookApp {
            url: format!("http://{address}/crier-hook"),
            seen,
            task,
        }
    }

    /// The next post the app was asked about.
    pub async fn next_post(&mut self) -> Value {
        tokio::time::timeout(WAIT, self.seen.recv())
            .await
            .expect("the hook is called in time")
            .expect("the hook is running")
    }

    /// No post reached the app (beyond those already read).
    pub fn asked_nothing_more(&mut self) -> bool {
        self.seen.try_recv().is_err()
    }
}

impl Drop for HookApp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves one connection: one request, one answer (or none), then closes.
async fn answer(mut stream: TcpStream, decide: Decide, seen: mpsc::UnboundedSender<Value>) {
    let served = async {
        let Some(post) = read_post(&mut stream).await else {
            return;
        };
        let reply = decide(&post);
        let _ = seen.send(post);
        let Some(reply) = reply else {
            // Never answers: holds the connection until the test is over.
            tokio::time::sleep(WAIT).await;
            return;
        };
        let body = reply.to_string();
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    };
    let _ = tokio::time::timeout(WAIT, served).await;
}

/// Reads one HTTP/1.1 request and returns its JSON body.
async fn read_post(stream: &mut TcpStream) -> Option<Value> {
    let mut request = Vec::new();
    let mut chunk = [0u8; 4096];
    while request.len() <= MAX_REQUEST {
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        request.extend_from_slice(&chunk[..read]);
        let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = std::str::from_utf8(&request[..end]).ok()?;
        assert!(
            head.starts_with("POST /crier-hook "),
            "the hook is POSTed: {head}"
        );
        let length: usize = head
            .lines()
            .filter_map(|line| line.split_once(':'))
            .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, value)| value.trim().parse().ok())?;
        let body = &request[end + 4..];
        if body.len() >= length {
            return serde_json::from_slice(&body[..length]).ok();
        }
    }
    None
}
