//! Every bad input gets our JSON error with the right status, and nothing is stored.

use protocol::ChannelId;
use reqwest::{Method, StatusCode};

use crate::broker::Broker;
use crate::helpers::{TestApp, error_of, new_channel};

pub struct BadPost {
    pub what: &'static str,
    content_type: Option<&'static str>,
    pub body: Vec<u8>,
    status: StatusCode,
    pub code: &'static str,
}

fn bad(
    what: &'static str,
    content_type: Option<&'static str>,
    body: impl Into<Vec<u8>>,
    status: StatusCode,
    code: &'static str,
) -> BadPost {
    BadPost {
        what,
        content_type,
        body: body.into(),
        status,
        code,
    }
}

const JSON: Option<&str> = Some("application/json");
const BAD: StatusCode = StatusCode::BAD_REQUEST;

fn bad_posts() -> Vec<BadPost> {
    let long_author = format!(r#"{{"author":"{}","text":"x"}}"#, "a".repeat(65));
    let long_text = format!(r#"{{"author":"ann","text":"{}"}}"#, "é".repeat(4001));
    let huge = format!(r#"{{"author":"ann","text":"{}"}}"#, "x".repeat(70 * 1024));
    vec![
        bad(
            "malformed JSON",
            JSON,
            r#"{"author":"ann","#,
            BAD,
            "invalid_json",
        ),
        bad("JSON array", JSON, r#"["ann","hi"]"#, BAD, "invalid_json"),
        bad(
            "author of wrong type",
            JSON,
            r#"{"author":5,"text":"hi"}"#,
            BAD,
            "invalid_json",
        ),
        bad(
            "text of wrong type",
            JSON,
            r#"{"author":"ann","text":["hi"]}"#,
            BAD,
            "invalid_json",
        ),
        bad(
            "missing author",
            JSON,
            r#"{"text":"hi"}"#,
            BAD,
            "invalid_author",
        ),
        bad(
            "empty author",
            JSON,
            r#"{"author":"  ","text":"hi"}"#,
            BAD,
            "invalid_author",
        ),
        bad("author too long", JSON, long_author, BAD, "invalid_author"),
        bad(
            "missing text",
            JSON,
            r#"{"author":"ann"}"#,
            BAD,
            "invalid_text",
        ),
        bad(
            "empty text",
            JSON,
            r#"{"author":"ann","text":""}"#,
            BAD,
            "invalid_text",
        ),
        bad("text too long", JSON, long_text, BAD, "invalid_text"),
        bad(
            "control character in text",
            JSON,
            r#"{"author":"ann","text":"a\u0000b"}"#,
            BAD,
            "invalid_text",
        ),
        bad(
            "invalid UTF-8",
            JSON,
            b"{\"author\":\"ann\",\"text\":\"\xff\xfe\"}".to_vec(),
            BAD,
            "invalid_encoding",
        ),
        bad(
            "invalid UTF-8 in a form",
            Some("application/x-www-form-urlencoded"),
            "author=ann&text=%FF",
            BAD,
            "invalid_encoding",
        ),
        bad(
            "text/plain without ?author",
            Some("text/plain"),
            "hi",
            BAD,
            "invalid_author",
        ),
        bad(
            "unsupported content type",
            Some("image/png"),
            "hi",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        bad(
            "no content type",
            None,
            r#"{"author":"ann","text":"hi"}"#,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        bad(
            "oversized body",
            JSON,
            huge,
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
    ]
}

/// The bad posts with a JSON body: what an MQTT post can carry too.
pub fn bad_json_posts() -> Vec<BadPost> {
    let json = bad_posts().into_iter();
    json.filter(|case| case.content_type == JSON).collect()
}

#[tokio::test]
async fn bad_posts_get_a_json_error_and_store_nothing() {
    let app = TestApp::on(Broker::embedded()).await;
    let channel = new_channel();
    for case in bad_posts() {
        let mut request = app
            .http
            .post(format!("{}/channels/{channel}/messages", app.chat_url()))
            .body(case.body);
        if let Some(content_type) = case.content_type {
            request = request.header("content-type", content_type);
        }
        let response = request.send().await.expect("POST");
        assert_eq!(response.status(), case.status, "{}: status", case.what);
        let (status, body) = error_of(response).await;
        assert_eq!(status, case.status, "{}: status", case.what);
        assert_eq!(body.error.code, case.code, "{}: code", case.what);
        assert!(!body.error.message.is_empty(), "{}: message", case.what);
    }
    assert!(
        app.history(channel, "").await.is_empty(),
        "nothing was stored"
    );
    let first = app.post_message(channel, "ann", "valid").await;
    assert_eq!(first.id, 1, "no id was used up by a rejected post");
}

struct BadRequest {
    what: &'static str,
    method: Method,
    url: String,
    last_event_id: Option<&'static str>,
    status: StatusCode,
    code: &'static str,
}

fn request(
    what: &'static str,
    method: Method,
    url: String,
    status: StatusCode,
    code: &'static str,
) -> BadRequest {
    BadRequest {
        what,
        method,
        url,
        last_event_id: None,
        status,
        code,
    }
}

fn bad_requests(chat: &str, sse: &str, channel: ChannelId) -> Vec<BadRequest> {
    let messages = format!("{chat}/channels/{channel}/messages");
    let events = format!("{sse}/channels/{channel}/events");
    let several = format!("{sse}/events?channel={channel}");
    let (get, post) = (Method::GET, Method::POST);
    vec![
        request(
            "post to a non-UUID channel",
            post.clone(),
            format!("{chat}/channels/general/messages"),
            BAD,
            "invalid_channel",
        ),
        request(
            "history of a non-UUID channel",
            get.clone(),
            format!("{chat}/channels/1234/messages"),
            BAD,
            "invalid_channel",
        ),
        request(
            "after is not a number",
            get.clone(),
            format!("{messages}?after=abc"),
            BAD,
            "invalid_query",
        ),
        request(
            "after is negative",
            get.clone(),
            format!("{messages}?after=-1"),
            BAD,
            "invalid_query",
        ),
        request(
            "limit is zero",
            get.clone(),
            format!("{messages}?limit=0"),
            BAD,
            "invalid_query",
        ),
        request(
            "limit is too large",
            get.clone(),
            format!("{messages}?limit=100000"),
            BAD,
            "invalid_query",
        ),
        request(
            "message id is not a number",
            get.clone(),
            format!("{messages}/abc"),
            BAD,
            "invalid_message_id",
        ),
        request(
            "message id is zero",
            get.clone(),
            format!("{messages}/0"),
            BAD,
            "invalid_message_id",
        ),
        request(
            "unknown chat route",
            get.clone(),
            format!("{chat}/nope"),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        request(
            "wrong method on messages",
            Method::DELETE,
            messages.clone(),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        request(
            "stream of a non-UUID channel",
            get.clone(),
            format!("{sse}/channels/general/events"),
            BAD,
            "invalid_channel",
        ),
        BadRequest {
            last_event_id: Some("abc"),
            ..request(
                "Last-Event-ID is not a number",
                get.clone(),
                events.clone(),
                BAD,
                "invalid_last_event_id",
            )
        },
        request(
            "last_event_id is negative",
            get.clone(),
            format!("{events}?last_event_id=-3"),
            BAD,
            "invalid_last_event_id",
        ),
        request(
            "presence is neither 1, true, 0 nor false",
            get.clone(),
            format!("{events}?presence=yes"),
            BAD,
            "invalid_presence",
        ),
        request(
            "presence is not a flag on a stream of several channels",
            get.clone(),
            format!("{several}&presence=AAA"),
            BAD,
            "invalid_presence",
        ),
        request(
            "a stream of several channels names none",
            get.clone(),
            format!("{sse}/events?name=ann"),
            BAD,
            "invalid_channel",
        ),
        request(
            "a stream of several channels names one twice",
            get.clone(),
            format!("{several}&channel={channel}"),
            BAD,
            "invalid_channel",
        ),
        request(
            "a stream of several channels names a non-UUID",
            get.clone(),
            format!("{several}&channel=general"),
            BAD,
            "invalid_channel",
        ),
        BadRequest {
            last_event_id: Some("5"),
            ..request(
                "a cursor that is a plain id",
                get.clone(),
                several.clone(),
                BAD,
                "invalid_last_event_id",
            )
        },
        BadRequest {
            last_event_id: Some("deadbeef:5"),
            ..request(
                "a cursor of another stream's channel",
                get.clone(),
                several.clone(),
                BAD,
                "invalid_last_event_id",
            )
        },
        request(
            "a cursor in the query with no id",
            get.clone(),
            format!("{several}&last_event_id={}:", &channel.to_string()[..8]),
            BAD,
            "invalid_last_event_id",
        ),
        request(
            "wrong method on events",
            post,
            events,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        request(
            "unknown stream route",
            get,
            format!("{sse}/channels/{channel}"),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
    ]
}

#[tokio::test]
async fn bad_requests_to_both_services_get_a_json_error() {
    let app = TestApp::on(Broker::embedded()).await;
    let channel = new_channel();
    for case in bad_requests(app.chat_url(), &app.sse.url, channel) {
        let mut request = app.http.request(case.method, &case.url);
        if let Some(id) = case.last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        let (status, body) = error_of(request.send().await.expect("request")).await;
        assert_eq!(status, case.status, "{}: status", case.what);
        assert_eq!(body.error.code, case.code, "{}: code", case.what);
    }
    assert!(
        app.history(channel, "").await.is_empty(),
        "nothing was stored"
    );
}

/// `?author=` belongs to text/plain bodies, but a bad one is refused with any body.
#[tokio::test]
async fn a_bad_author_in_the_query_is_refused_even_with_a_json_body() {
    let app = TestApp::on(Broker::embedded()).await;
    let channel = new_channel();
    let url = format!(
        "{}/channels/{channel}/messages?author={}",
        app.chat_url(),
        "a".repeat(65)
    );
    let body = serde_json::json!({"author": "ann", "text": "hi"});
    let response = app.http.post(url).json(&body).send().await.expect("POST");
    let (status, error) = error_of(response).await;
    assert_eq!((status, error.error.code.as_str()), (BAD, "invalid_author"));
    assert!(
        app.history(channel, "").await.is_empty(),
        "nothing was stored"
    );
}
