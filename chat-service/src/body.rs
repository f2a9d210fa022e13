//! Reads a message POST body in any accepted content type:
//! `application/json` (`{"author","text"}`), `text/plain` (the text; author from
//! `?author=`) and `application/x-www-form-urlencoded` (`author=…&text=…`).

use actix_web::HttpRequest;
use actix_web::http::header;
use actix_web::web::{BytesMut, Payload};
use futures_util::StreamExt;
use serde::Deserialize;

use crate::config::Limits;
use crate::domain::Author;
use crate::error::ChatError;

/// The submitted fields, not yet validated.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RawFields {
    pub author: Option<String>,
    pub text: Option<String>,
}

#[derive(Deserialize)]
struct JsonFields {
    author: Option<String>,
    text: Option<String>,
}

/// Reads at most `limit` bytes: a declared `Content-Length` above it is refused
/// before reading, and reading stops as soon as the limit is passed.
pub async fn read_limited(
    req: &HttpRequest,
    mut payload: Payload,
    limit: usize,
) -> Result<BytesMut, ChatError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<usize>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(ChatError::PayloadTooLarge { limit });
    }
    let mut body = BytesMut::with_capacity(declared.unwrap_or(1024).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ChatError::BodyRead(e.to_string()))?;
        if body.len() + chunk.len() > limit {
            return Err(ChatError::PayloadTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Reads the body of a post or an edit and decodes its fields.
/// `query_author` (`?author=`, which names the author of a `text/plain`
/// body) is checked whatever the content type, so a bad one is refused
/// either way.
pub async fn read_fields(
    req: &HttpRequest,
    payload: Payload,
    query_author: Option<String>,
    limits: &Limits,
) -> Result<RawFields, ChatError> {
    let body = read_limited(req, payload, limits.max_body_bytes).await?;
    let content_type = req.headers().get(header::CONTENT_TYPE);
    let content_type = content_type.and_then(|value| value.to_str().ok());
    if let Some(author) = &query_author {
        Author::parse(Some(author), limits)?;
    }
    parse_fields(content_type, &body, query_author)
}

/// Decodes the body according to its content type.
pub fn parse_fields(
    content_type: Option<&str>,
    body: &[u8],
    query_author: Option<String>,
) -> Result<RawFields, ChatError> {
    let mime = content_type
        .map(|value| {
            value
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    let text = std::str::from_utf8(body).map_err(|_| ChatError::InvalidEncoding)?;
    match mime.as_str() {
        "application/json" => parse_json(text),
        "text/plain" => Ok(RawFields {
            author: query_author,
            text: Some(text.to_string()),
        }),
        "application/x-www-form-urlencoded" => parse_form(text),
        "" => Err(ChatError::UnsupportedMediaType("none".into())),
        other => Err(ChatError::UnsupportedMediaType(
            other.chars().take(100).collect(),
        )),
    }
}

fn parse_json(text: &str) -> Result<RawFields, ChatError> {
    let fields: JsonFields = json_object(text, r#"{"author": string, "text": string}"#)?;
    Ok(RawFields {
        author: fields.author,
        text: fields.text,
    })
}

/// A body that must be a JSON object of the `shape` described (an error
/// names it). Only an object is accepted: serde would otherwise read
/// `["ann","hi"]` as the struct's fields in order.
pub fn json_object<T: serde::de::DeserializeOwned>(
    text: &str,
    shape: &str,
) -> Result<T, ChatError> {
    let invalid = |reason: String| {
        ChatError::InvalidJson(format!("body must be a JSON object {shape}: {reason}"))
    };
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
    if !value.is_object() {
        return Err(invalid("not an object".into()));
    }
    serde_json::from_value(value).map_err(|e| invalid(e.to_string()))
}

fn parse_form(text: &str) -> Result<RawFields, ChatError> {
    let mut fields = RawFields::default();
    for pair in text.split('&').filter(|pair| !pair.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = form_decode(value)?;
        match form_decode(name)?.as_str() {
            "author" => fields.author = Some(value),
            "text" => fields.text = Some(value),
            _ => {}
        }
    }
    Ok(fields)
}

/// `+` is a space and `%XX` a byte; the decoded bytes must be UTF-8. Not the
/// `url` crate's form decoder: it replaces bytes that are not UTF-8 with U+FFFD
/// and stores the result, where a bad body must be a `400 invalid_encoding`
/// that stores nothing.
fn form_decode(raw: &str) -> Result<String, ChatError> {
    let replaced = raw.replace('+', " ");
    let decoded: Vec<u8> = percent_encoding::percent_decode_str(&replaced).collect();
    String::from_utf8(decoded).map_err(|_| ChatError::InvalidEncoding)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_with_charset_is_accepted() {
        let fields = parse_fields(
            Some("application/json; charset=utf-8"),
            br#"{"author":"ann","text":"hi"}"#,
            None,
        )
        .expect("valid json");
        assert_eq!(fields.author.as_deref(), Some("ann"));
        assert_eq!(fields.text.as_deref(), Some("hi"));
    }

    #[test]
    fn plain_text_takes_author_from_the_query() {
        let fields = parse_fields(Some("text/plain"), b"hello", Some("bob".into())).expect("ok");
        assert_eq!(fields.author.as_deref(), Some("bob"));
        assert_eq!(fields.text.as_deref(), Some("hello"));
    }

    #[test]
    fn form_fields_are_percent_decoded() {
        let fields = parse_fields(
            Some("application/x-www-form-urlencoded"),
            b"author=ann+lee&text=caf%C3%A9%21",
            None,
        )
        .expect("ok");
        assert_eq!(fields.author.as_deref(), Some("ann lee"));
        assert_eq!(fields.text.as_deref(), Some("café!"));
    }

    #[test]
    fn bad_bodies_are_refused_with_the_right_error() {
        let cases: [(Option<&str>, &[u8], &str); 6] = [
            (Some("application/json"), br#"["ann","hi"]"#, "invalid_json"),
            (Some("application/json"), b"{\"author\":", "invalid_json"),
            (
                Some("application/json"),
                br#"{"author":1,"text":"x"}"#,
                "invalid_json",
            ),
            (Some("application/json"), b"\xff\xfe", "invalid_encoding"),
            (
                Some("application/x-www-form-urlencoded"),
                b"text=%FF",
                "invalid_encoding",
            ),
            (Some("image/png"), b"x", "unsupported_media_type"),
        ];
        for (content_type, body, code) in cases {
            let err = parse_fields(content_type, body, None).expect_err("must fail");
            assert_eq!(err.to_api_error().code, code, "{content_type:?} {body:?}");
        }
    }
}
