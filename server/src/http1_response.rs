//! HTTP/1.1 responses written straight to a socket, for connections that no
//! actix dispatcher serves: a client that said nothing in time, and the plain
//! HTTP/1 streams broadcast-sse serves itself.

use std::time::SystemTime;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::http::StatusCode;
use actix_web::http::header::HeaderMap;
use actix_web::{HttpResponse, ResponseError};
use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::error::ApiError;

/// Answers a connection that sent nothing within the request-header timeout.
pub async fn refuse_silent(mut io: TcpStream) {
    let error = ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "request_timeout",
        "no request arrived in time",
    );
    if write_response(&mut io, error.error_response())
        .await
        .is_ok()
    {
        let _ = io.shutdown().await;
    }
}

/// Writes a complete response, then the connection is closed.
pub async fn write_response(io: &mut TcpStream, response: HttpResponse) -> std::io::Result<()> {
    io.write_all(&response_bytes(response)).await
}

/// A response as HTTP/1.1 bytes with its body, closing the connection.
pub fn response_bytes(response: HttpResponse<BoxBody>) -> Bytes {
    let (response, body) = response.into_parts();
    let body = body.try_into_bytes().unwrap_or_default();
    let mut bytes = response_head(response.status(), response.headers(), Some(body.len()));
    bytes.put_slice(&body);
    bytes.freeze()
}

/// The status line and headers of a response that closes the connection: its
/// body is delimited by the close, with `content-length` when it is known.
pub fn response_head(
    status: StatusCode,
    headers: &HeaderMap,
    content_length: Option<usize>,
) -> BytesMut {
    let mut bytes = BytesMut::with_capacity(256 + content_length.unwrap_or(0));
    bytes.put_slice(b"HTTP/1.1 ");
    bytes.put_slice(status.as_str().as_bytes());
    bytes.put_u8(b' ');
    bytes.put_slice(status.canonical_reason().unwrap_or("").as_bytes());
    bytes.put_slice(b"\r\n");
    for (name, value) in headers {
        put_header(&mut bytes, name.as_str(), value.as_bytes());
    }
    if let Some(length) = content_length {
        put_header(&mut bytes, "content-length", length.to_string().as_bytes());
    }
    put_header(&mut bytes, "connection", b"close");
    put_date(&mut bytes);
    bytes.put_slice(b"\r\n");
    bytes
}

/// Adds a `date` header of now.
fn put_date(bytes: &mut BytesMut) {
    let now = httpdate::fmt_http_date(SystemTime::now());
    put_header(bytes, "date", now.as_bytes());
}

/// Adds a header line.
fn put_header(bytes: &mut BytesMut, name: &str, value: &[u8]) {
    bytes.put_slice(name.as_bytes());
    bytes.put_slice(b": ");
    bytes.put_slice(value);
    bytes.put_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_response_is_complete_http() {
        let error = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_streams",
            "slow down",
        )
        .with_retry_after(5);
        let bytes = response_bytes(error.error_response());
        let text = String::from_utf8(bytes.to_vec()).expect("text");
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        assert!(
            head.starts_with("HTTP/1.1 429 Too Many Requests\r\n"),
            "{head}"
        );
        assert!(head.contains("retry-after: 5"), "{head}");
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let body: serde_json::Value = serde_json::from_str(body).expect("JSON body");
        assert_eq!(body["error"]["code"], "too_many_streams");
    }
}
