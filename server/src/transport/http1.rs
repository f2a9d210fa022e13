//! Event streams served straight on the socket.
//!
//! actix-http gives every connection an 8 KiB read buffer, an 8 KiB write buffer
//! and a dispatcher with its timers, all kept as long as the connection lives:
//! most of what an idle stream would cost. A stream needs none of it: it reads
//! nothing after its request and writes frames that are already bytes. So the
//! server peeks at each new plain-HTTP connection's first request. A stream
//! request (a `GET` of a path the binary names a stream route, HTTP/1.1,
//! without a body or an upgrade) is read here and handed to a stream thread,
//! which runs it through the application itself (its middleware, CORS and
//! errors included, and the same handler as every other stream), then writes
//! the response to the socket and pumps its body (the body ends when the
//! connection closes). Everything else (other routes, bodies, upgrades, heads
//! too long for [`MAX_HEAD_BYTES`], and HTTP/2) goes to actix-http untouched, since only
//! peeked bytes were looked at. So this module is a transport, not a second
//! server: what a stream answers is decided in one place.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use super::IsStreamPath;
use crate::http1_response::response_head;
use crate::plain_server::{self, Preface};
use actix_http::body::{BodySize, BoxBody, MessageBody};
use actix_http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_http::{Method, Request, Response, Uri, Version};
use bytes::{Buf, BufMut, Bytes};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// A stream request's head must fit in this; longer heads go to actix.
const MAX_HEAD_BYTES: usize = 8192;
const MAX_HEADERS: usize = 48;
/// How a stream request starts; a connection whose first bytes differ goes to
/// actix at once.
const STREAM_REQUEST_STARTS: [&[u8]; 2] = [b"GET /channels/", b"GET /events?"];
/// A stream request's head that arrived in part is peeked at again this often,
/// this many times, before the connection goes to actix.
const PARTIAL_HEAD_PAUSE: Duration = Duration::from_millis(5);
const PARTIAL_HEAD_PEEKS: u32 = 20;
/// Bytes read at a time from an open stream's socket, to notice the close, and
/// reads per wake-up.
const PROBE_BYTES: usize = 32;
const MAX_PROBES: usize = 16;
/// The most of an error answer's body written (ours are small JSON).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

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

/// A stream request's head, as the application will see it.
#[derive(Debug)]
pub struct StreamHead {
    uri: Uri,
    headers: HeaderMap,
}

impl StreamHead {
    /// The request for the application, from `peer`.
    pub fn into_request(self, peer: Option<std::net::SocketAddr>) -> Request {
        let mut request = Request::new();
        let head = request.head_mut();
        head.method = Method::GET;
        head.uri = self.uri;
        head.version = Version::HTTP_11;
        head.headers = self.headers;
        head.peer_addr = peer;
        request
    }
}

/// Peeks at the first request (waiting at most `header_timeout` for its first
/// bytes) and, when it is a stream request, reads its head off the socket.
pub async fn first_request(
    io: &mut TcpStream,
    header_timeout: Duration,
    is_stream: IsStreamPath,
) -> FirstRequest {
    let mut buffer = vec![0; MAX_HEAD_BYTES];
    let first = tokio::time::timeout(header_timeout, io.peek(&mut buffer)).await;
    let mut peeked = match first {
        Err(_) => return FirstRequest::Silent,
        Ok(Ok(0) | Err(_)) => return FirstRequest::Gone,
        Ok(Ok(n)) => n,
    };
    for _ in 0..PARTIAL_HEAD_PEEKS {
        match parse_head(&buffer[..peeked], is_stream) {
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

fn parse_head(bytes: &[u8], is_stream: IsStreamPath) -> Parsed {
    match plain_server::preface(bytes) {
        Preface::Complete => return Parsed::Http2,
        Preface::Partial => return Parsed::Partial,
        Preface::Not => {}
    }
    let may_be_stream = STREAM_REQUEST_STARTS.iter().any(|start| {
        let length = bytes.len().min(start.len());
        bytes[..length] == start[..length]
    });
    if !may_be_stream {
        return Parsed::Other;
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(bytes) {
        Ok(httparse::Status::Complete(length)) => match stream_head(&request, is_stream) {
            Some(head) => Parsed::Stream(length, head),
            None => Parsed::Other,
        },
        Ok(httparse::Status::Partial) => Parsed::Partial,
        Err(_) => Parsed::Other,
    }
}

/// The head when this path can serve it, else `None` (actix will): a stream
/// route, HTTP/1.1, no body and no upgrade.
fn stream_head(request: &httparse::Request, is_stream: IsStreamPath) -> Option<StreamHead> {
    if request.method != Some("GET") || request.version != Some(1) {
        return None;
    }
    let target = request.path?;
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    if !is_stream(path) {
        return None;
    }
    let uri = target.parse::<Uri>().ok()?;
    let mut headers = HeaderMap::with_capacity(request.headers.len());
    for header in request.headers.iter() {
        let name = HeaderName::from_bytes(header.name.as_bytes()).ok()?;
        let has_body_or_upgrade = match name.as_str() {
            "content-length" => header.value != b"0",
            "upgrade" | "transfer-encoding" | "expect" => true,
            _ => false,
        };
        if has_body_or_upgrade {
            return None;
        }
        headers.append(name, HeaderValue::from_bytes(header.value).ok()?);
    }
    Some(StreamHead { uri, headers })
}

/// The application's answer to a stream request: the pump of a stream, to
/// run until it ends or the client leaves, or `None` once any other answer
/// was written whole and the connection closed.
pub async fn answer(io: TcpStream, response: Response<BoxBody>) -> Option<Pump> {
    match Answer::of(response) {
        Answer::Stream(head, body) => {
            let _ = io.set_nodelay(true);
            Some(Pump::new(io, head, body))
        }
        Answer::Sized(head, body) => {
            write_sized(io, head, body).await;
            None
        }
    }
}

enum Answer {
    Stream(Bytes, BoxBody),
    Sized(Response<()>, BoxBody),
}

impl Answer {
    fn of(response: Response<BoxBody>) -> Self {
        let (head, body) = response.into_parts();
        match body.size() {
            BodySize::Stream => {
                let head = response_head(head.status(), head.headers(), None);
                Answer::Stream(head.freeze(), body)
            }
            _ => Answer::Sized(head, body),
        }
    }
}

async fn write_sized(mut io: TcpStream, head: Response<()>, body: BoxBody) {
    let body = actix_web::body::to_bytes_limited(body, MAX_ANSWER_BYTES).await;
    let body = match body {
        Ok(Ok(bytes)) => bytes,
        _ => return log::warn!("an answer to a stream request could not be read"),
    };
    let mut bytes = response_head(head.status(), head.headers(), Some(body.len()));
    bytes.put_slice(&body);
    if io.write_all(&bytes).await.is_ok() {
        let _ = io.shutdown().await;
    }
}

/// Writes a stream's response head and chunks to its socket, until the stream
/// ends or the client closes its side. Written by hand rather than as an
/// `async fn` so that an open stream costs only these fields and its body.
pub struct Pump {
    io: TcpStream,
    body: BoxBody,
    /// What is left to write of the current chunk.
    unwritten: Bytes,
}

impl Pump {
    fn new(io: TcpStream, head: Bytes, body: BoxBody) -> Self {
        Pump {
            io,
            body,
            unwritten: head,
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
            match Pin::new(&mut pump.body).poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => pump.unwritten = chunk,
                // The body ends with the connection, closed when the pump is dropped.
                Poll::Ready(Some(Err(_)) | None) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHANNEL: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";

    /// The stream routes of broadcast-sse, as it names them.
    fn is_stream(path: &str) -> bool {
        path == "/events" || path == format!("/channels/{CHANNEL}/events")
    }

    fn parse(head: &str) -> Parsed {
        parse_head(head.as_bytes(), is_stream)
    }

    #[test]
    fn a_stream_request_is_read_whole() {
        let raw = format!(
            "GET /channels/{CHANNEL}/events?access_token=t HTTP/1.1\r\nHost: x\r\n\
             Last-Event-ID: 5\r\nOrigin: https://a.example\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n"
        );
        let Parsed::Stream(length, head) = parse(&raw) else {
            panic!("not read as a stream request");
        };
        assert_eq!(length, raw.len());
        assert_eq!(head.uri.path(), format!("/channels/{CHANNEL}/events"));
        assert_eq!(head.uri.query(), Some("access_token=t"));
        assert_eq!(
            head.headers.get("last-event-id").map(|v| v.as_bytes()),
            Some(&b"5"[..])
        );
        assert_eq!(head.headers.get_all("cookie").count(), 2);
        assert!(head.headers.contains_key("origin"));
    }

    #[test]
    fn a_stream_of_several_channels_is_a_stream_request() {
        let raw = format!("GET /events?channel={CHANNEL} HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(matches!(parse(&raw), Parsed::Stream(..)));
    }

    #[test]
    fn a_head_still_arriving_is_partial() {
        let raw = format!("GET /channels/{CHANNEL}/events HTTP/1.1\r\nHost: x\r\n");
        assert!(matches!(parse(&raw), Parsed::Partial));
        assert!(matches!(parse("GET /chan"), Parsed::Partial));
    }

    #[test]
    fn everything_else_is_left_to_actix() {
        let others = [
            "POST /channels/c/messages HTTP/1.1\r\n\r\n".to_string(),
            "GET /healthz HTTP/1.1\r\n\r\n".to_string(),
            format!("GET /channels/{CHANNEL}/events HTTP/1.0\r\n\r\n"),
            format!("GET /channels/{CHANNEL}/events HTTP/1.1\r\nUpgrade: h2c\r\n\r\n"),
            format!("GET /channels/{CHANNEL}/events HTTP/1.1\r\nContent-Length: 3\r\n\r\n"),
            format!("GET /channels/{CHANNEL}/events/more HTTP/1.1\r\n\r\n"),
            "GET /channels/\0 nonsense\r\n\r\n".to_string(),
        ];
        for raw in others {
            assert!(matches!(parse(&raw), Parsed::Other), "{raw:?}");
        }
    }

    #[test]
    fn the_http2_preface_goes_to_actix_as_http2() {
        let mut opening = plain_server::H2_PREFACE.to_vec();
        opening.extend_from_slice(b"\0\0\x12\x04\0\0\0\0\0");
        assert!(matches!(parse_head(&opening, is_stream), Parsed::Http2));
        assert!(matches!(parse("PRI * HTTP/2.0\r\n"), Parsed::Partial));
    }
}
