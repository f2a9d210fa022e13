//! Tokens, bans and the admin API, against both services as processes with a
//! shared secret and a public key configured.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use protocol::{ChannelId, Message};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::broker::Broker;
use crate::helpers::{EventStream, TestApp, error_of, eventually, new_channel};

const SECRET: &str = "the secret shared with the application server";
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures");

fn fixture(name: &str) -> String {
    format!("{FIXTURES}/{name}")
}

pub(crate) async fn app_with_keys(public_key: &str) -> TestApp {
    let key = fixture(public_key);
    let flags = ["--jwt-secret", SECRET, "--jwt-public-key", key.as_str()];
    TestApp::with_options(Broker::embedded(), &flags, &flags).await
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

pub(crate) fn hs256(claims: &Value) -> String {
    sign(
        claims,
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
}

fn sign(claims: &Value, algorithm: Algorithm, key: &EncodingKey) -> String {
    jsonwebtoken::encode(&Header::new(algorithm), claims, key).expect("sign a token")
}

/// A publisher and reader of `channel`, named `name`, valid for a minute.
pub(crate) fn member(name: &str, channel: ChannelId) -> Value {
    json!({
        "name": name,
        "channels": [channel.to_string()],
        "subscribe": [channel.to_string()],
        "exp": now() + 60,
    })
}

pub(crate) fn admin() -> String {
    hs256(&json!({"name": "ops", "admin": true, "exp": now() + 60}))
}

async fn post_with(
    app: &TestApp,
    channel: ChannelId,
    token: Option<&str>,
    body: Value,
) -> reqwest::Response {
    let mut request = app
        .http
        .post(format!("{}/channels/{channel}/messages", app.chat_url()))
        .json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("POST reaches chat-service")
}

pub(crate) async fn expect_error(
    response: reqwest::Response,
    status: StatusCode,
    code: &str,
) -> String {
    let www_authenticate = response.headers().get("www-authenticate").cloned();
    let (actual, body) = error_of(response).await;
    assert_eq!(
        (actual, body.error.code.as_str()),
        (status, code),
        "{}",
        body.error.message
    );
    if status == StatusCode::UNAUTHORIZED {
        assert_eq!(
            www_authenticate.as_ref().and_then(|v| v.to_str().ok()),
            Some("Bearer")
        );
    }
    body.error.message
}

fn hello() -> Value {
    json!({"author": "ann", "text": "hello"})
}

#[tokio::test]
async fn posting_without_a_valid_token_is_refused_with_401() {
    let app = app_with_keys("rsa-public.pem").await;
    let channel = new_channel();
    let response = post_with(&app, channel, None, hello()).await;
    expect_error(response, StatusCode::UNAUTHORIZED, "missing_token").await;

    let expired = hs256(&json!({"name": "ann", "channels": "*", "exp": now() - 60}));
    let response = post_with(&app, channel, Some(&expired), hello()).await;
    let message = expect_error(response, StatusCode::UNAUTHORIZED, "invalid_token").await;
    assert_eq!(message, "the token has expired");

    let other_key = EncodingKey::from_secret(b"not our secret");
    let forged = sign(&member("ann", channel), Algorithm::HS256, &other_key);
    let response = post_with(&app, channel, Some(&forged), hello()).await;
    let message = expect_error(response, StatusCode::UNAUTHORIZED, "invalid_token").await;
    assert_eq!(message, "the token signature is invalid");

    let unsigned = unsigned_token(&member("ann", channel));
    let response = post_with(&app, channel, Some(&unsigned), hello()).await;
    expect_error(response, StatusCode::UNAUTHORIZED, "invalid_token").await;

    // HS/RS confusion: HS256 "signed" with the RSA public key as the secret.
    let public_pem = std::fs::read(fixture("rsa-public.pem")).expect("public key");
    let confused = sign(
        &member("ann", channel),
        Algorithm::HS256,
        &EncodingKey::from_secret(&public_pem),
    );
    let response = post_with(&app, channel, Some(&confused), hello()).await;
    expect_error(response, StatusCode::UNAUTHORIZED, "invalid_token").await;

    assert!(
        app.history_with(channel, &admin_reader()).await.is_empty(),
        "nothing was stored"
    );
}

fn admin_reader() -> String {
    hs256(&json!({"subscribe": "*", "exp": now() + 60}))
}

/// `{"alg":"none"}` with an empty signature.
fn unsigned_token(claims: &Value) -> String {
    use std::fmt::Write;
    let encode = |text: String| {
        let table = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in text.as_bytes().chunks(3) {
            let n =
                chunk.iter().fold(0u32, |n, b| (n << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
            for i in 0..=chunk.len() {
                let _ = write!(
                    out,
                    "{}",
                    table[((n >> (18 - 6 * i)) & 63) as usize] as char
                );
            }
        }
        out
    };
    format!(
        "{}.{}.",
        encode(r#"{"alg":"none","typ":"JWT"}"#.into()),
        encode(claims.to_string())
    )
}

#[tokio::test]
async fn tokens_signed_with_the_rsa_or_ec_private_key_are_accepted() {
    for (public, private, algorithm) in [
        ("rsa-public.pem", "rsa-private.pem", Algorithm::RS256),
        ("ec-public.pem", "ec-private.pem", Algorithm::ES256),
    ] {
        let app = app_with_keys(public).await;
        let channel = new_channel();
        let pem = std::fs::read(fixture(private)).expect("private key");
        let key = match algorithm {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
            _ => EncodingKey::from_ec_pem(&pem),
        }
        .expect("private key parses");
        let token = sign(&member("ann", channel), algorithm, &key);
        let response = post_with(&app, channel, Some(&token), hello()).await;
        assert_eq!(response.status(), StatusCode::CREATED, "{algorithm:?}");
    }
}

#[tokio::test]
async fn a_valid_token_for_another_channel_is_refused_with_403() {
    let app = app_with_keys("rsa-public.pem").await;
    let token = hs256(&member("ann", new_channel()));
    let response = post_with(&app, new_channel(), Some(&token), hello()).await;
    expect_error(response, StatusCode::FORBIDDEN, "forbidden_channel").await;
}

#[tokio::test]
async fn the_token_names_the_author_and_its_user_object_is_broadcast() {
    let app = app_with_keys("rsa-public.pem").await;
    let channel = new_channel();
    let mut claims = member("ann", channel);
    claims["_public"] = json!({"avatar": "https://example.com/ann.png"});
    let token = hs256(&claims);
    let mut stream = stream_with_query_token(&app, channel, &token).await;

    let body = json!({"author": "mallory", "text": "who am I?"});
    let response = post_with(&app, channel, Some(&token), body).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let stored: Message = response.json().await.expect("message");
    assert_eq!(stored.author, "ann", "the body's author is ignored");
    let live = stream.next_message().await;
    assert_eq!(live, stored);
    assert_eq!(
        live.user,
        Some(json!({"avatar": "https://example.com/ann.png"}))
    );
}

async fn stream_with_query_token(app: &TestApp, channel: ChannelId, token: &str) -> EventStream {
    let url = format!(
        "{}/channels/{channel}/events?access_token={token}",
        app.sse.url
    );
    EventStream::from_request(app.http.get(url)).await
}

#[tokio::test]
async fn subscribing_takes_a_token_in_the_header_the_query_or_a_cookie() {
    let app = app_with_keys("rsa-public.pem").await;
    let channel = new_channel();
    let token = hs256(&member("ann", channel));
    let url = format!("{}/channels/{channel}/events", app.sse.url);
    let mut by_header = EventStream::from_request(app.http.get(&url).bearer_auth(&token)).await;
    let mut by_query = stream_with_query_token(&app, channel, &token).await;
    let cookie = format!("crier_token={token}");
    let mut by_cookie =
        EventStream::from_request(app.http.get(&url).header("cookie", cookie)).await;

    let response = app.http.get(&url).send().await.expect("GET");
    expect_error(response, StatusCode::UNAUTHORIZED, "missing_token").await;
    let other = hs256(&member("ann", new_channel()));
    let response = app
        .http
        .get(&url)
        .bearer_auth(other)
        .send()
        .await
        .expect("GET");
    expect_error(response, StatusCode::FORBIDDEN, "forbidden_channel").await;

    let response = post_with(&app, channel, Some(&token), hello()).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    for stream in [&mut by_header, &mut by_query, &mut by_cookie] {
        assert_eq!(stream.next_message().await.id, 1);
    }
}

#[tokio::test]
async fn history_needs_the_subscribe_right() {
    let app = app_with_keys("rsa-public.pem").await;
    let channel = new_channel();
    let token = hs256(&member("ann", channel));
    post_with(&app, channel, Some(&token), hello()).await;
    let url = format!("{}/channels/{channel}/messages", app.chat_url());

    let response = app.http.get(&url).send().await.expect("GET");
    expect_error(response, StatusCode::UNAUTHORIZED, "missing_token").await;
    let publisher_only = hs256(&json!({"name": "ann", "channels": "*", "exp": now() + 60}));
    let response = app
        .http
        .get(&url)
        .bearer_auth(publisher_only)
        .send()
        .await
        .expect("GET");
    expect_error(response, StatusCode::FORBIDDEN, "forbidden_channel").await;
    let one = format!("{url}/1?access_token={token}");
    let response = app.http.get(one).send().await.expect("GET");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(app.history_with(channel, &token).await.len(), 1);
}

#[tokio::test]
async fn a_stream_ends_with_reconnect_when_its_token_expires() {
    let app = app_with_keys("rsa-public.pem").await;
    let channel = new_channel();
    let mut claims = member("ann", channel);
    claims["exp"] = json!(now() + 2);
    let mut stream = stream_with_query_token(&app, channel, &hs256(&claims)).await;
    let event = stream.next_event().await;
    assert_eq!(event.event, "reconnect");
    assert_eq!(event.data, r#"{"reason":"the token has expired"}"#);
    stream.expect_end().await;
}

#[tokio::test]
async fn a_ban_blocks_a_name_until_it_expires_and_survives_a_restart() {
    let mut app = app_with_keys("rsa-public.pem").await;
    let channel = new_channel();
    let ann = hs256(&member("ann", channel));
    let bans = json!([{"name": "ann", "channel": channel.to_string(), "expire": 3}]);
    let response = admin_request(&app, reqwest::Method::POST, "/bans", Some(bans)).await;
    assert_eq!(response.status(), StatusCode::CREATED);

    let response = post_with(&app, channel, Some(&ann), hello()).await;
    expect_error(response, StatusCode::FORBIDDEN, "banned").await;
    let other = hs256(&member("bob", channel));
    assert_eq!(
        post_with(&app, channel, Some(&other), hello())
            .await
            .status(),
        StatusCode::CREATED
    );

    app.restart_chat_service().await;
    let listed: Value = admin_request(&app, reqwest::Method::GET, "/bans", None)
        .await
        .json()
        .await
        .expect("bans JSON");
    assert_eq!(
        listed["bans"][0]["name"], "ann",
        "the ban survived the restart"
    );
    let response = post_with(&app, channel, Some(&ann), hello()).await;
    expect_error(response, StatusCode::FORBIDDEN, "banned").await;

    eventually("the ban expires", || async {
        post_with(&app, channel, Some(&ann), hello()).await.status() == StatusCode::CREATED
    })
    .await;
}

#[tokio::test]
async fn an_admin_lifts_a_ban_and_only_admins_may() {
    let app = app_with_keys("rsa-public.pem").await;
    let channel = new_channel();
    let bans = json!([{"name": "ann", "channel": channel.to_string(), "expire": 600}]);
    admin_request(&app, reqwest::Method::POST, "/bans", Some(bans)).await;
    let path = format!("/bans/{channel}/ann");

    let not_admin = hs256(&member("ann", channel));
    let response = app
        .http
        .delete(format!("{}{path}", app.chat_url()))
        .bearer_auth(not_admin)
        .send()
        .await
        .expect("DELETE");
    expect_error(response, StatusCode::FORBIDDEN, "not_admin").await;

    let response = admin_request(&app, reqwest::Method::DELETE, &path, None).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let response = admin_request(&app, reqwest::Method::DELETE, &path, None).await;
    expect_error(response, StatusCode::NOT_FOUND, "ban_not_found").await;
    let ann = hs256(&member("ann", channel));
    assert_eq!(
        post_with(&app, channel, Some(&ann), hello()).await.status(),
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn bulk_publish_stores_and_broadcasts_each_and_a_bad_item_changes_nothing() {
    let app = app_with_keys("rsa-public.pem").await;
    let (first, second) = (new_channel(), new_channel());
    let reader = admin_reader();
    let mut first_stream = stream_with_query_token(&app, first, &reader).await;
    let mut second_stream = stream_with_query_token(&app, second, &reader).await;

    let bad = json!([
        {"channel": first.to_string(), "text": "fine"},
        {"channel": "not-a-uuid", "text": "bad"},
    ]);
    let response = admin_request(&app, reqwest::Method::POST, "/publish", Some(bad)).await;
    let message = expect_error(response, StatusCode::BAD_REQUEST, "invalid_item").await;
    assert!(message.starts_with("item 1:"), "{message}");
    assert!(
        app.history_with(first, &reader).await.is_empty(),
        "the good item was not stored"
    );

    let items = json!([
        {"channel": first.to_string(), "text": "maintenance at noon", "user": {"name": "Server"}},
        {"channel": second.to_string(), "text": "maintenance at noon", "user": {"name": "Server"}},
    ]);
    let response = admin_request(&app, reqwest::Method::POST, "/publish", Some(items)).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let published: Value = response.json().await.expect("JSON");
    assert_eq!(published["messages"].as_array().map(Vec::len), Some(2));
    for stream in [&mut first_stream, &mut second_stream] {
        let message = stream.next_message().await;
        assert_eq!((message.id, message.author.as_str()), (1, "Server"));
        assert_eq!(message.user, Some(json!({"name": "Server"})));
    }

    let member_token = hs256(&member("ann", first));
    let response = app
        .http
        .post(format!("{}/publish", app.chat_url()))
        .bearer_auth(member_token)
        .json(&json!([{"channel": first.to_string(), "text": "x"}]))
        .send()
        .await
        .expect("POST /publish");
    expect_error(response, StatusCode::FORBIDDEN, "not_admin").await;
}

pub(crate) async fn admin_request(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request = app
        .http
        .request(method, format!("{}{path}", app.chat_url()))
        .bearer_auth(admin());
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.expect("admin request")
}

/// An admin token posts as the author the body names (how a relay of MQTT posts
/// keeps each post's author), and as its own name when the body names none.
#[tokio::test]
async fn an_admin_token_posts_as_the_author_the_body_names() {
    let app = app_with_keys("rsa-public.pem").await;
    let channel = new_channel();
    let relay = hs256(&json!({"name": "ops", "admin": true, "channels": "*", "exp": now() + 60}));
    let named = json!({"author": "dev", "text": "relayed"});
    let response = post_with(&app, channel, Some(&relay), named).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let unnamed = json!({"text": "from ops"});
    let response = post_with(&app, channel, Some(&relay), unnamed).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let member = hs256(&member("ann", channel));
    let response = post_with(
        &app,
        channel,
        Some(&member),
        json!({"author": "dev", "text": "mine"}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);

    let history = app.history_with(channel, &member).await;
    let authors: Vec<(&str, &str)> = history
        .iter()
        .map(|m| (m.author.as_str(), m.text.as_str()))
        .collect();
    assert_eq!(
        authors,
        [("dev", "relayed"), ("ops", "from ops"), ("ann", "mine")],
        "a member's token names its author whatever the body says"
    );
}

/// Stats and presence need the channel's subscribe right when tokens are on.
#[tokio::test]
async fn stats_and_presence_need_the_subscribe_right() {
    let app = app_with_keys("rsa-public.pem").await;
    let channel = new_channel();
    let other = new_channel();
    let member = hs256(&member("ann", channel));
    for what in ["stats", "presence"] {
        let url = format!("{}/channels/{channel}/{what}", app.chat_url());
        let response = app.http.get(&url).send().await.expect("GET");
        expect_error(response, StatusCode::UNAUTHORIZED, "missing_token").await;
        let response = app
            .http
            .get(&url)
            .bearer_auth(&member)
            .send()
            .await
            .expect("GET");
        assert_eq!(response.status(), StatusCode::OK, "{what} with the right");
        let url = format!("{}/channels/{other}/{what}", app.chat_url());
        let response = app
            .http
            .get(&url)
            .bearer_auth(&member)
            .send()
            .await
            .expect("GET");
        assert_eq!(
            response.status(),
            StatusCode::FORBIDDEN,
            "{what} of another channel"
        );
    }
}
