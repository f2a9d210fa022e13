//! Event streams served straight on the socket.
//!
//! actix-http gives every connection an 8 KiB read buffer, an 8 KiB write buffer
//! and a dispatcher with its timers, all kept as long as the connection lives:
//! most of what an idle stream would cost. A stream needs none of it: it reads
//! nothing after its request and writes frames that are already bytes. So the
//! server peeks at each new plain-HTTP connection's first request. A simple
//! `GET /channels/{channel}/events` is read and answered here, writing the
//! stream's frames to the socket (the body ends when the connection closes);
//! everything else (other routes, cross-origin requests, bodies, upgrades,
//! percent-encoded channels, and HTTP/2) goes to actix untouched, since only
//! peeked bytes were looked at. Both paths open streams through
//! [`crate::routes::events`], so they check and answer alike.

use std::convert::Infallible;
use std::net::IpAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::{HttpResponse, ResponseError};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::Stream;
use protocol::auth::{Cookies, TokenCarriers};
use protocol::http1_response::{put_date, put_header, write_response};
use protocol::plain_server::{self, Preface};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::AppState;
use crate::routes::events::{STREAM_HEADERS, StreamRequest, admit, open};
use crate::stream::ClientStream;

/// A stream request's head must fit in this; longer heads go to actix.
const MAX_HEAD_BYTES: usize = 4096;
const MAX_HEADERS: usize = 32;
/// How a stream request starts; a connection whose first bytes differ goes to
/// actix at once.
const STREAM_REQUEST_START: &[u8] = b"GET /channels/";
/// A stream request's head that arrived in part is peeked at again this often,
/// this many times, before the connection goes to actix.
const PARTIAL_HEAD_PAUSE: Duration = Duration::from_millis(5);
const PARTIAL_HEAD_PEEKS: u32 = 20;
/// Bytes read at a time from an open stream's socket, to notice the close, and
/// reads per wake-up.
const PROBE_BYTES: usize = 32;
const MAX_PROBES: usize = 16;

/// What a new connection's first request is.
pub enum FirstRequest {
    /// A stream request, read off the socket.
    Stream(StreamHead),
    /// The HTTP/2 preface (h2c with prior knowledge), left unread for actix.
    Http2,
    /// Anything else, left unread for actix.
    Other,
    /// Nothing arrived within the request-header timeout.
    Silent,
    /// The client closed the connection or it failed.
    Gone,
}

/// The parts of a stream request's head that opening the stream needs.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct StreamHead {
    channel: String,
    query: String,
    last_event_id: Option<Vec<u8>>,
    authorization: Option<Vec<u8>>,
    cookie: Option<String>,
}

/// Peeks at the first request (waiting at most `header_timeout` for its first
/// bytes) and, when it is a stream request, reads its head off the socket.
pub async fn first_request(io: &mut TcpStream, header_timeout: Duration) -> FirstRequest {
    let mut buffer = vec![0; MAX_HEAD_BYTES];
    let first = tokio::time::timeout(header_timeout, io.peek(&mut buffer)).await;
    let mut peeked = match first {
        Err(_) => return FirstRequest::Silent,
        Ok(Ok(0) | Err(_)) => return FirstRequest::Gone,
        Ok(Ok(n)) => n,
    };
    for _ in 0..PARTIAL_HEAD_PEEKS {
        match parse_head(&buffer[..peeked]) {
            Parsed::Stream(length, head) => {
                return match io.read_exact(&mut buffer[..length]).await {
                    Ok(_) => FirstRequest::Stream(head),
                    Err(_) => FirstRequest::Gone,
                };
            }
            Parsed::Http2 => return FirstRequest::Http2,
            Parsed::Other => return FirstRequest::Other,
            Parsed::Partial if peeked == buffer.len() => return FirstRequest::Other,
            Parsed::Partial => {}
        }
        tokio::time::sleep(PARTIAL_HEAD_PAUSE).await;
        peeked = match io.peek(&mut buffer).await {
            Ok(0) | Err(_) => return FirstRequest::Gone,
            Ok(n) => n,
        };
    }
    FirstRequest::Other
}

enum Parsed {
    /// A complete stream request: its head's length and parts.
    Stream(usize, StreamHead),
    /// The HTTP/2 preface.
    Http2,
    Partial,
    Other,
}

fn parse_head(bytes: &[u8]) -> Parsed {
    match plain_server::preface(bytes) {
        Preface::Complete => return Parsed::Http2,
        Preface::Partial => return Parsed::Partial,
        Preface::Not => {}
    }
    let start = bytes.len().min(STREAM_REQUEST_START.len());
    if bytes[..start] != STREAM_REQUEST_START[..start] {
        return Parsed::Other;
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(bytes) {
        Ok(httparse::Status::Complete(length)) => match stream_head(&request) {
            Some(head) => Parsed::Stream(length, head),
            None => Parsed::Other,
        },
        Ok(httparse::Status::Partial) => Parsed::Partial,
        Err(_) => Parsed::Other,
    }
}

/// The head's parts when this path can serve it, else `None` (actix will).
fn stream_head(request: &httparse::Request) -> Option<StreamHead> {
    if request.method != Some("GET") || request.version != Some(1) {
        return None;
    }
    let (path, query) = request.path?.split_once('?').unwrap_or((request.path?, ""));
    let channel = path.strip_prefix("/channels/")?.strip_suffix("/events")?;
    if channel.is_empty() || channel.contains(['/', '%']) {
        return None;
    }
    let mut head = StreamHead {
        channel: channel.to_string(),
        query: query.to_string(),
        ..StreamHead::default()
    };
    for header in request.headers.iter() {
        let name = header.name.to_ascii_lowercase();
        let seen = match name.as_str() {
            "last-event-id" => head.last_event_id.replace(header.value.to_vec()).is_some(),
            "authorization" => head.authorization.replace(header.value.to_vec()).is_some(),
            "cookie" => {
                let value = std::str::from_utf8(header.value).ok()?;
                head.cookie.replace(value.to_string()).is_some()
            }
            "content-length" => header.value != b"0",
            "origin" | "upgrade" | "transfer-encoding" | "expect" => true,
            _ => false,
        };
        if seen {
            return None;
        }
    }
    Some(head)
}

/// What a connection whose first request is a stream request becomes.
pub enum Opened {
    /// The stream, ready to be pumped.
    Stream(Pump),
    /// The request was refused (and answered) or the client left.
    Done,
}

/// Opens the stream `head` asks for, or answers the error as JSON, as actix
/// would.
pub async fn open_stream(mut io: TcpStream, head: StreamHead, state: &AppState) -> Opened {
    let peer = io.peer_addr().ok().map(|address| address.ip());
    match stream_for(state, &head, peer).await {
        Ok(stream) => {
            let _ = io.set_nodelay(true);
            Opened::Stream(Pump::new(io, stream))
        }
        Err(response) => {
            let path = format!("/channels/{}/events", head.channel);
            protocol::error::log_client_error("GET", &path, peer, response.status());
            if write_response(&mut io, response).await.is_ok() {
                let _ = io.shutdown().await;
            }
            Opened::Done
        }
    }
}

async fn stream_for(
    state: &AppState,
    head: &StreamHead,
    peer: Option<IpAddr>,
) -> Result<ClientStream, HttpResponse> {
    let request = StreamRequest {
        channel: &head.channel,
        last_event_id: head.last_event_id.as_deref(),
        query: &head.query,
        tokens: TokenCarriers {
            authorization: head.authorization.as_deref(),
            query: &head.query,
            cookies: Cookies::Header(head.cookie.as_deref()),
        },
        peer,
    };
    let admission = admit(state, request).map_err(|e| e.error_response())?;
    open(state, admission).await.map_err(|e| e.error_response())
}

type Body = Pin<Box<dyn Stream<Item = Result<Bytes, Infallible>>>>;

/// Writes a stream's response head and chunks to its socket, until the stream
/// ends or the client closes its side. Written by hand rather than as an
/// `async fn` so that an open stream costs only these fields and its body.
pub struct Pump {
    io: TcpStream,
    body: Body,
    /// What is left to write of the current chunk.
    unwritten: Bytes,
}

impl Pump {
    fn new(io: TcpStream, stream: ClientStream) -> Self {
        Pump {
            io,
            body: Box::pin(stream.into_body()),
            unwritten: stream_response_head(),
        }
    }

    /// Drains what the client sent (a stream's client has nothing more to
    /// say); `true` once it closed its side or the socket failed.
    fn client_closed(&mut self, cx: &mut Context<'_>) -> bool {
        let mut probe = [0; PROBE_BYTES];
        for _ in 0..MAX_PROBES {
            match self.io.poll_read_ready(cx) {
                Poll::Pending => return false,
                Poll::Ready(Err(_)) => return true,
                Poll::Ready(Ok(())) => match self.io.try_read(&mut probe) {
                    Ok(0) => return true,
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => return true,
                },
            }
        }
        false
    }

    /// Writes `unwritten`; `Ready(Ok)` once it is all written.
    fn poll_write_unwritten(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while !self.unwritten.is_empty() {
            match Pin::new(&mut self.io).poll_write(cx, &self.unwritten) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(written)) => self.unwritten.advance(written),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl Future for Pump {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let pump = self.get_mut();
        loop {
            if pump.client_closed(cx) {
                return Poll::Ready(());
            }
            match pump.poll_write_unwritten(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
            match pump.body.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => pump.unwritten = chunk,
                // The body ends with the connection, closed when the pump is dropped.
                Poll::Ready(None) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

fn stream_response_head() -> Bytes {
    let mut head = BytesMut::with_capacity(256);
    head.put_slice(b"HTTP/1.1 200 OK\r\n");
    for (name, value) in STREAM_HEADERS {
        put_header(&mut head, name, value.as_bytes());
    }
    put_header(&mut head, "connection", b"close");
    put_date(&mut head);
    head.put_slice(b"\r\n");
    head.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHANNEL: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";

    fn parse(head: &str) -> Parsed {
        parse_head(head.as_bytes())
    }

    #[test]
    fn a_stream_request_is_read_with_what_opening_needs() {
        let raw = format!(
            "GET /channels/{CHANNEL}/events?access_token=t HTTP/1.1\r\nHost: x\r\n\
             Last-Event-ID: 5\r\nAuthorization: Bearer a\r\nCookie: crier_token=c\r\n\r\n"
        );
        let Parsed::Stream(length, head) = parse(&raw) else {
            panic!("not read as a stream request");
        };
        assert_eq!(length, raw.len());
        assert_eq!(head.channel, CHANNEL);
        assert_eq!(head.query, "access_token=t");
        assert_eq!(head.last_event_id.as_deref(), Some(&b"5"[..]));
        assert_eq!(head.authorization.as_deref(), Some(&b"Bearer a"[..]));
        assert_eq!(head.cookie.as_deref(), Some("crier_token=c"));
    }

    #[test]
    fn a_head_still_arriving_is_partial() {
        let raw = format!("GET /channels/{CHANNEL}/events HTTP/1.1\r\nHost: x\r\n");
        assert!(matches!(parse(&raw), Parsed::Partial));
        assert!(matches!(parse("GET /chan"), Parsed::Partial));
    }

    #[test]
    fn the_http2_preface_goes_to_actix_as_http2() {
        let mut opening = plain_server::H2_PREFACE.to_vec();
        opening.extend_from_slice(b"\0\0\x12\x04\0\0\0\0\0");
        assert!(matches!(parse_head(&opening), Parsed::Http2));
        assert!(matches!(parse("PRI * HTTP/2.0\r\n"), Parsed::Partial));
    }

    #[test]
    fn everything_else_is_left_to_actix() {
        let others = [
            "POST /channels/c/messages HTTP/1.1\r\n\r\n".to_string(),
            "GET /healthz HTTP/1.1\r\n\r\n".to_string(),
            format!("GET /channels/{CHANNEL}/events HTTP/1.0\r\n\r\n"),
            format!("GET /channels/{CHANNEL}/events HTTP/1.1\r\nOrigin: https://a.example\r\n\r\n"),
            format!("GET /channels/{CHANNEL}/events HTTP/1.1\r\nUpgrade: h2c\r\n\r\n"),
            format!("GET /channels/{CHANNEL}/events HTTP/1.1\r\nContent-Length: 3\r\n\r\n"),
            format!(
                "GET /channels/{CHANNEL}/events HTTP/1.1\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n"
            ),
            "GET /channels/a%2Fb/events HTTP/1.1\r\n\r\n".to_string(),
            "GET /channels//events HTTP/1.1\r\n\r\n".to_string(),
            format!("GET /channels/{CHANNEL}/events/more HTTP/1.1\r\n\r\n"),
            "GET /channels/\0 nonsense\r\n\r\n".to_string(),
        ];
        for raw in others {
            assert!(matches!(parse(&raw), Parsed::Other), "{raw:?}");
        }
    }
}
