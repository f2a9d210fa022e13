//! The publish hook: before a post is stored, the app behind Crier is asked
//! whether to store it as it is, store it with another text, or refuse it.
//!
//! `POST {url}` with `{"channel","author","text","claims"}` (`claims`: the
//! token's payload, `null` without authentication); the app answers `200` with
//! `{"action":"accept"}`, `{"action":"accept","text":"…"}` or
//! `{"action":"reject","code":"…","message":"…"}`. Anything else, or no answer
//! within the timeout, is a failure, which `--publish-hook-failure` turns into a
//! refusal (`closed`) or the post stored as posted (`open`).
//!
//! The call is made by the task that took the post (a REST handler, the MQTT
//! intake), before the post is handed to the store, so the store's writer never
//! waits on the app; one HTTP client, built at start, serves every call.

use std::time::Instant;

use actix_web::http::StatusCode;
use protocol::ChannelId;
use serde::{Deserialize, Serialize};
use server::error::ApiError;

use crate::app_url::redacted;
use crate::config::{HookFailure, Limits, PublishHookSettings};
use crate::domain::{NewMessage, Text};
use crate::error::{ChatError, with_causes};
use crate::metrics;

/// Largest answer read from the app, in bytes: the longest text it may send
/// back, with room for the JSON around it.
const MAX_ANSWER_BYTES: usize = 256 * 1024;
/// Longest message of a rejection passed on to the poster, in characters.
const MAX_REJECT_MESSAGE: usize = 500;
/// Longest code of a rejection, in characters.
const MAX_REJECT_CODE: usize = 64;
const DEFAULT_REJECT_CODE: &str = "rejected";
const DEFAULT_REJECT_MESSAGE: &str = "rejected by the publish hook";

/// The hook's client and policy; cheap to clone (the client is shared).
#[derive(Clone)]
pub struct PublishHook {
    client: reqwest::Client,
    url: reqwest::Url,
    failure: HookFailure,
}

/// What a post turns into after the hook.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// Store it as posted.
    Accept,
    /// Store it with this text instead.
    Rewrite(Text),
    /// Store nothing; the poster is told this (`403`).
    Reject { code: String, message: String },
}

/// Why the hook gave no verdict.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("no answer: {0}")]
    Unreachable(String),
    #[error("answered {0}, not 200")]
    Status(u16),
    #[error("its answer is not a verdict: {0}")]
    BadAnswer(String),
}

/// What the app is sent.
#[derive(Serialize)]
struct Request<'a> {
    channel: ChannelId,
    author: &'a str,
    text: &'a str,
    claims: Option<&'a serde_json::Value>,
}

/// What the app answers, before it is checked.
#[derive(Deserialize)]
#[serde(tag = "action", rename_all = "lowercase")]
enum Answer {
    Accept {
        text: Option<String>,
    },
    /// Not checked as strings: a code or message of another type is replaced,
    /// like an invalid one, rather than making the rejection a failure.
    Reject {
        code: Option<serde_json::Value>,
        message: Option<serde_json::Value>,
    },
}

impl PublishHook {
    /// The hook the settings name, or `None` when it is off.
    pub fn new(settings: &PublishHookSettings) -> Result<Option<Self>, reqwest::Error> {
        let Some(url) = &settings.publish_hook_url else {
            return Ok(None);
        };
        server::tls::install_crypto_provider();
        // A redirect is not followed: a POST would come back as a GET, which the
        // app never answers with a verdict on the post. It counts as a failure.
        let client = reqwest::Client::builder()
            .timeout(settings.publish_hook_timeout)
            .connect_timeout(settings.publish_hook_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        log::info!(
            "publish hook: {} (timeout {}, on failure: {:?})",
            redacted(url),
            humantime::format_duration(settings.publish_hook_timeout),
            settings.publish_hook_failure
        );
        Ok(Some(PublishHook {
            client,
            url: url.clone(),
            failure: settings.publish_hook_failure,
        }))
    }

    /// Asks the app about `message`; returns what to store, or why nothing is
    /// stored (the app's rejection, or the hook failing with the `closed` policy).
    pub async fn check(
        &self,
        channel: ChannelId,
        message: NewMessage,
        claims: Option<&serde_json::Value>,
        limits: &Limits,
    ) -> Result<NewMessage, ChatError> {
        let started = Instant::now();
        let verdict = self.ask(channel, &message, claims, limits).await;
        metrics::publish_hook_took(started.elapsed());
        match verdict {
            Ok(Verdict::Accept) => {
                metrics::publish_hook_outcome("accept");
                Ok(message)
            }
            Ok(Verdict::Rewrite(text)) => {
                metrics::publish_hook_outcome("rewrite");
                Ok(NewMessage { text, ..message })
            }
            Ok(Verdict::Reject { code, message }) => {
                metrics::publish_hook_outcome("reject");
                Err(ChatError::Api(ApiError::new(
                    StatusCode::FORBIDDEN,
                    code,
                    message,
                )))
            }
            Err(e) => {
                metrics::publish_hook_outcome("failed");
                match self.failure {
                    HookFailure::Closed => {
                        log::warn!("publish hook failed, post refused: {e}");
                        Err(ChatError::PublishHookUnavailable)
                    }
                    HookFailure::Open => {
                        log::warn!("publish hook failed, post stored as posted: {e}");
                        Ok(message)
                    }
                }
            }
        }
    }

    async fn ask(
        &self,
        channel: ChannelId,
        message: &NewMessage,
        claims: Option<&serde_json::Value>,
        limits: &Limits,
    ) -> Result<Verdict, HookError> {
        let request = Request {
            channel,
            author: message.author.as_str(),
            text: message.text.as_str(),
            claims,
        };
        // Without the URL: it may carry credentials, and the log names it at start.
        let unreachable = |e: reqwest::Error| HookError::Unreachable(with_causes(&e.without_url()));
        let mut response = self
            .client
            .post(self.url.clone())
            .json(&request)
            .send()
            .await
            .map_err(unreachable)?;
        if response.status() != reqwest::StatusCode::OK {
            return Err(HookError::Status(response.status().as_u16()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
            if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(HookError::BadAnswer(format!(
                    "longer than {MAX_ANSWER_BYTES} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        verdict(&body, limits)
    }
}

/// Reads the app's answer. A new text is checked like a posted one; a rewrite
/// that would be refused is a failure, not a rejection (the poster did nothing
/// wrong).
pub fn verdict(body: &[u8], limits: &Limits) -> Result<Verdict, HookError> {
    let answer: Answer =
        serde_json::from_slice(body).map_err(|e| HookError::BadAnswer(e.to_string()))?;
    match answer {
        Answer::Accept { text: None } => Ok(Verdict::Accept),
        Answer::Accept { text: Some(text) } => Text::parse(Some(&text), limits)
            .map(Verdict::Rewrite)
            .map_err(|e| HookError::BadAnswer(format!("the new text is refused: {e}"))),
        Answer::Reject { code, message } => Ok(Verdict::Reject {
            code: reject_code(code),
            message: reject_message(message),
        }),
    }
}

/// The app's code when it is 1 to 64 of `[a-z0-9_]`, else `rejected`.
fn reject_code(code: Option<serde_json::Value>) -> String {
    let code = code.as_ref().and_then(serde_json::Value::as_str);
    code.filter(|code| {
        (1..=MAX_REJECT_CODE).contains(&code.len())
            && code
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    })
    .unwrap_or(DEFAULT_REJECT_CODE)
    .to_string()
}

/// The app's message, cut to 500 characters; a default when it gives none.
fn reject_message(message: Option<serde_json::Value>) -> String {
    match message.as_ref().and_then(serde_json::Value::as_str) {
        Some(message) if !message.trim().is_empty() => {
            message.chars().take(MAX_REJECT_MESSAGE).collect()
        }
        _ => DEFAULT_REJECT_MESSAGE.to_string(),
    }
}

impl std::fmt::Debug for PublishHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublishHook")
            .field("url", &redacted(&self.url))
            .field("failure", &self.failure)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_author_chars: 64,
        max_text_chars: 10,
        max_body_bytes: 1024,
        post_rate_per_sec: 0,
        post_burst: 1,
    };

    fn read(answer: &str) -> Result<Verdict, HookError> {
        verdict(answer.as_bytes(), &LIMITS)
    }

    #[test]
    fn accept_keeps_the_text_and_accept_with_a_text_rewrites_it() {
        assert_eq!(read(r#"{"action":"accept"}"#).ok(), Some(Verdict::Accept));
        assert_eq!(
            read(r#"{"action":"accept","text":null}"#).ok(),
            Some(Verdict::Accept)
        );
        let rewritten = Text::parse(Some("new text"), &LIMITS).expect("valid");
        assert_eq!(
            read(r#"{"action":"accept","text":"new text"}"#).ok(),
            Some(Verdict::Rewrite(rewritten))
        );
    }

    #[test]
    fn a_rewrite_a_post_could_not_carry_is_a_failure() {
        for (answer, why) in [
            (r#"{"action":"accept","text":""}"#, "empty"),
            (r#"{"action":"accept","text":"   "}"#, "blank"),
            (r#"{"action":"accept","text":"12345678901"}"#, "11 > 10"),
            (
                r#"{"action":"accept","text":"a\u0007b"}"#,
                "control character",
            ),
            (r#"{"action":"accept","text":7}"#, "not a string"),
        ] {
            assert!(
                matches!(read(answer), Err(HookError::BadAnswer(_))),
                "{why}: {answer}"
            );
        }
    }

    #[test]
    fn a_rejection_keeps_a_valid_code_and_a_bounded_message() {
        assert_eq!(
            read(r#"{"action":"reject","code":"spam","message":"No links please"}"#).ok(),
            Some(Verdict::Reject {
                code: "spam".into(),
                message: "No links please".into()
            })
        );
        assert_eq!(
            read(r#"{"action":"reject"}"#).ok(),
            Some(Verdict::Reject {
                code: DEFAULT_REJECT_CODE.into(),
                message: DEFAULT_REJECT_MESSAGE.into()
            })
        );
        let long_code = "a".repeat(65);
        for code in ["", "Spam", "no-links", "spam!", "é", long_code.as_str()] {
            let answer = serde_json::json!({"action": "reject", "code": code}).to_string();
            match read(&answer) {
                Ok(Verdict::Reject { code, .. }) => assert_eq!(code, "rejected", "{answer}"),
                other => panic!("{answer}: {other:?}"),
            }
        }
        assert_eq!(reject_code(Some("a".repeat(64).into())), "a".repeat(64));
        match read(r#"{"action":"reject","code":7,"message":["x"]}"#) {
            Ok(Verdict::Reject { code, message }) => {
                assert_eq!(
                    (code.as_str(), message.as_str()),
                    ("rejected", DEFAULT_REJECT_MESSAGE)
                )
            }
            other => panic!("{other:?}"),
        }
        let long = "é".repeat(600);
        let answer = serde_json::json!({"action": "reject", "message": long}).to_string();
        match read(&answer) {
            Ok(Verdict::Reject { message, .. }) => assert_eq!(message.chars().count(), 500),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn logs_show_no_credentials_of_the_url() {
        let url = reqwest::Url::parse("https://app:s3cret@app.example/hook?token=t").expect("url");
        assert_eq!(redacted(&url), "https://app.example/hook");
    }

    #[test]
    fn anything_else_is_a_failure() {
        for answer in [
            "",
            "accept",
            "[]",
            "{}",
            r#"{"action":"maybe"}"#,
            r#"{"action":"ACCEPT"}"#,
            r#"{"action":7}"#,
        ] {
            assert!(
                matches!(read(answer), Err(HookError::BadAnswer(_))),
                "{answer:?}"
            );
        }
    }
}
