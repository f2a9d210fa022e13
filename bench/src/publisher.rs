//! Publishers: `connections` keep-alive HTTP/1.1 connections, each with one
//! request in flight, taking message numbers from a shared counter. Message
//! `i` goes to channel `i % channels` with sequence number `i / channels + 1`,
//! paced to `rate` per second or as fast as the server answers. Each text
//! also says up to which number the channel's messages were all answered when
//! it was sent, so subscribers can tell real reordering from a race between
//! two requests in flight. The time from writing each request to reading
//! its whole `2xx` answer is kept as the POST latency.

use crate::http::{self, BodyDecoder};
use crate::target::{UrlTemplate, channel_id, render_body, stamp_text};
use crate::wire::{self, now_nanos};
use hdrhistogram::Histogram;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a publisher waits before posting a message the server refused
/// as overloaded again (the `Retry-After` of a second is for people).
const OVERLOAD_PAUSE: Duration = Duration::from_millis(10);
/// Attempts at one message before its `503` counts as a failure (10 s).
const OVERLOAD_ATTEMPTS: u32 = 1000;

pub struct PublishPlan {
    pub url: UrlTemplate,
    pub body: String,
    pub content_type: String,
    pub channels: u64,
    pub channel_salt: u32,
    pub total: u64,
    pub rate: Option<f64>,
    pub connections: usize,
    /// Notified just before message number `storm_at` is sent.
    pub storm_at: Option<u64>,
}

#[derive(Debug)]
pub struct Published {
    pub ok: u64,
    /// Not stored in the end: answered with another error, timed out or
    /// broken off.
    pub failed: u64,
    /// `503` answers (overloaded), each followed by the same message again.
    pub refused: u64,
    /// Request written to `2xx` answer read, microseconds.
    pub latency_us: Histogram<u64>,
    /// Messages attempted per channel (the highest sequence number sent).
    pub per_channel: Vec<u64>,
    pub started_nanos: u64,
    pub secs: f64,
    pub first_error: Option<String>,
}

struct Shared {
    plan: PublishPlan,
    next: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
    refused: AtomicU64,
    /// A std lock, like `answered`: held only to record one value.
    latency_us: Mutex<Histogram<u64>>,
    started: Instant,
    storm: Arc<Notify>,
    first_error: Mutex<Option<String>>,
    /// Per channel; a std lock: held for a few instructions, never across `.await`.
    answered: Mutex<Vec<Answered>>,
}

/// Which sequence numbers of a channel have been answered (ok or not).
#[derive(Debug, Default)]
struct Answered {
    /// 1..=prefix are all answered.
    prefix: u64,
    beyond: BTreeSet<u64>,
}

impl Answered {
    fn mark(&mut self, seq: u64) {
        if seq != self.prefix + 1 {
            if seq > self.prefix {
                self.beyond.insert(seq);
            }
            return;
        }
        self.prefix = seq;
        while self.beyond.remove(&(self.prefix + 1)) {
            self.prefix += 1;
        }
    }
}

impl Shared {
    fn answered_prefix(&self, channel: usize) -> u64 {
        self.answered
            .lock()
            .ok()
            .and_then(|a| a.get(channel).map(|c| c.prefix))
            .unwrap_or(0)
    }

    fn mark_answered(&self, channel: usize, seq: u64) {
        if let Ok(mut answered) = self.answered.lock()
            && let Some(c) = answered.get_mut(channel)
        {
            c.mark(seq);
        }
    }

    fn accepted(&self, took: Duration) {
        self.ok.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut h) = self.latency_us.lock() {
            h.saturating_record(took.as_micros() as u64);
        }
    }

    /// Answered with an error: not stored.
    fn failed_with(&self, status: u16) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        note(self, format!("publish: status {status}"));
    }
}

/// Publishes the whole plan; `storm` is notified at `plan.storm_at`.
pub async fn publish(plan: PublishPlan, storm: Arc<Notify>) -> Published {
    let connections = plan.connections.max(1);
    let shared = Arc::new(Shared {
        next: AtomicU64::new(0),
        ok: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        refused: AtomicU64::new(0),
        latency_us: Mutex::new(wire::new_histogram()),
        started: Instant::now(),
        storm,
        first_error: Mutex::new(None),
        answered: Mutex::new(
            (0..plan.channels.max(1))
                .map(|_| Answered::default())
                .collect(),
        ),
        plan,
    });
    let started_nanos = now_nanos();
    let tasks: Vec<_> = (0..connections)
        .map(|_| tokio::spawn(connection(shared.clone())))
        .collect();
    for task in tasks {
        if let Err(e) = task.await {
            note(&shared, format!("publisher task: {e}"));
        }
    }
    let plan = &shared.plan;
    let channels = plan.channels.max(1);
    let per_channel = (0..channels)
        .map(|c| plan.total / channels + u64::from(c < plan.total % channels))
        .collect();
    let first_error = shared.first_error.lock().ok().and_then(|e| e.clone());
    let latency_us = shared
        .latency_us
        .lock()
        .map(|h| h.clone())
        .unwrap_or_else(|_| wire::new_histogram());
    Published {
        ok: shared.ok.load(Ordering::Relaxed),
        failed: shared.failed.load(Ordering::Relaxed),
        refused: shared.refused.load(Ordering::Relaxed),
        latency_us,
        per_channel,
        started_nanos,
        secs: shared.started.elapsed().as_secs_f64(),
        first_error,
    }
}

fn note(shared: &Shared, error: String) {
    if let Ok(mut first) = shared.first_error.lock()
        && first.is_none()
    {
        *first = Some(error);
    }
}

async fn connection(shared: Arc<Shared>) {
    let plan = &shared.plan;
    let channels = plan.channels.max(1);
    let mut conn: Option<Conn> = None;
    loop {
        let i = shared.next.fetch_add(1, Ordering::Relaxed);
        if i >= plan.total {
            return;
        }
        if let Some(rate) = plan.rate {
            let at = shared.started + Duration::from_secs_f64(i as f64 / rate);
            tokio::time::sleep_until(at.into()).await;
        }
        if plan.storm_at == Some(i) {
            shared.storm.notify_one();
        }
        let index = (i % channels) as usize;
        let channel = channel_id(plan.channel_salt, i % channels);
        let seq = i / channels + 1;
        let outcome = post_until_taken(&shared, &mut conn, index, &channel, seq).await;
        shared.mark_answered(index, seq);
        match outcome {
            Ok(answer) if answer.is_success() => shared.accepted(answer.took),
            Ok(answer) => shared.failed_with(answer.status),
            Err(e) => {
                conn = None;
                shared.failed.fetch_add(1, Ordering::Relaxed);
                note(&shared, e);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Posts message `seq` of `channel`, again after [`OVERLOAD_PAUSE`] each time
/// the server refuses it as overloaded (`503`), [`OVERLOAD_ATTEMPTS`] times
/// at most: refusing at the door is how a server keeps its latency, and a
/// publisher that skipped the message would leave a hole its subscribers
/// count as lost. Each attempt is stamped with its own send time.
async fn post_until_taken(
    shared: &Shared,
    conn: &mut Option<Conn>,
    index: usize,
    channel: &str,
    seq: u64,
) -> Result<Answer, String> {
    let plan = &shared.plan;
    let mut attempts = 0;
    loop {
        let acked = shared.answered_prefix(index);
        let body = render_body(
            &plan.body,
            channel,
            seq,
            &stamp_text(seq, now_nanos(), acked),
        );
        let request = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\r\n{body}",
            plan.url.path_for(channel),
            plan.url.host,
            plan.content_type,
            body.len()
        );
        let answer = tokio::time::timeout(REQUEST_TIMEOUT, roundtrip(conn, plan, &request))
            .await
            .unwrap_or_else(|_| Err("publish: timed out".to_owned()))?;
        attempts += 1;
        if answer.status != 503 || attempts >= OVERLOAD_ATTEMPTS {
            return Ok(answer);
        }
        shared.refused.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(OVERLOAD_PAUSE).await;
    }
}

struct Conn {
    socket: TcpStream,
    buf: Vec<u8>,
}

/// The server's answer to one request.
#[derive(Debug, Clone, Copy)]
struct Answer {
    status: u16,
    /// From writing the request (after connecting) to reading the whole response.
    took: Duration,
}

impl Answer {
    fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Sends one request and reads its whole response.
async fn roundtrip(
    slot: &mut Option<Conn>,
    plan: &PublishPlan,
    request: &str,
) -> Result<Answer, String> {
    if slot.is_none() {
        let socket = TcpStream::connect(plan.url.addr)
            .await
            .map_err(|e| format!("publish connect: {e}"))?;
        socket
            .set_nodelay(true)
            .map_err(|e| format!("nodelay: {e}"))?;
        *slot = Some(Conn {
            socket,
            buf: Vec::with_capacity(4096),
        });
    }
    let Some(conn) = slot.as_mut() else {
        return Err("publish: no connection".to_owned());
    };
    let sent = Instant::now();
    conn.socket
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("publish write: {e}"))?;
    let end = loop {
        if let Some(end) = http::head_end(&conn.buf) {
            break end;
        }
        if conn.buf.len() > http::MAX_HEAD {
            return Err(http::HttpError::HeadTooLong.to_string());
        }
        fill(conn).await?;
    };
    let head = http::parse_head(&conn.buf[..end]).map_err(|e| e.to_string())?;
    conn.buf.drain(..end);
    let mut body = BodyDecoder::new(head.framing);
    let until_close = head.framing == http::Framing::UntilClose;
    loop {
        let used = body
            .feed(&conn.buf, &mut |_| {})
            .map_err(|e| e.to_string())?;
        conn.buf.drain(..used);
        if body.is_done() {
            break;
        }
        match fill(conn).await {
            Ok(()) => {}
            Err(_) if until_close => break,
            Err(e) => return Err(e),
        }
    }
    if head.close || until_close {
        *slot = None;
    }
    Ok(Answer {
        status: head.status,
        took: sent.elapsed(),
    })
}

/// Reads more of the response; end of stream is an error.
async fn fill(conn: &mut Conn) -> Result<(), String> {
    let mut chunk = [0u8; 4096];
    let n = conn
        .socket
        .read(&mut chunk)
        .await
        .map_err(|e| format!("publish read: {e}"))?;
    if n == 0 {
        return Err("publish: server closed the connection".to_owned());
    }
    conn.buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answered_prefix_waits_for_the_gaps() {
        let mut a = Answered::default();
        for seq in [2, 3, 1] {
            a.mark(seq);
        }
        assert_eq!(a.prefix, 3);
        a.mark(5);
        assert_eq!(a.prefix, 3);
        a.mark(4);
        assert_eq!((a.prefix, a.beyond.len()), (5, 0));
    }

    /// A server on loopback that answers `statuses` in turn on one connection.
    async fn answering(statuses: &'static [u16]) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut buf = [0u8; 4096];
            for status in statuses {
                // Each request is small and arrives in one segment on loopback.
                let _ = socket.read(&mut buf).await.expect("read");
                let answer = format!("HTTP/1.1 {status} X\r\nContent-Length: 2\r\n\r\n{{}}");
                socket.write_all(answer.as_bytes()).await.expect("write");
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_refused_post_is_sent_again_and_other_errors_counted_as_failures() {
        let addr = answering(&[201, 503, 201, 400]).await;
        let plan = PublishPlan {
            url: UrlTemplate::parse(&format!("http://{addr}/c/{{channel}}")).expect("url"),
            body: "{text}".to_owned(),
            content_type: "text/plain".to_owned(),
            channels: 1,
            channel_salt: 0,
            total: 3,
            rate: None,
            connections: 1,
            storm_at: None,
        };
        let published = publish(plan, Arc::new(Notify::new())).await;
        assert_eq!(
            (published.ok, published.failed, published.refused),
            (2, 1, 1)
        );
        assert_eq!(published.latency_us.len(), 2);
        assert_eq!(
            published.first_error.as_deref(),
            Some("publish: status 400")
        );
    }
}
