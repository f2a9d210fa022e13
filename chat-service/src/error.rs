//! Everything that can go wrong at the chat-service's edge, and how each is answered.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use protocol::channel::InvalidChannel;
use server::error::ApiError;

use crate::store::StoreError;

/// Seconds a client is asked to wait when the store's ingest queue is full,
/// the publish hook did not answer, or a signal could not reach the broker.
const BUSY_RETRY_AFTER_SECS: u64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error(transparent)]
    InvalidChannel(#[from] InvalidChannel),
    #[error("{0}")]
    InvalidAuthor(String),
    #[error("{0}")]
    InvalidText(String),
    #[error("{0}")]
    InvalidJson(String),
    #[error("request body is not valid UTF-8")]
    InvalidEncoding,
    #[error("{0}")]
    InvalidQuery(String),
    #[error("message id must be a positive integer, got {0:?}")]
    InvalidMessageId(String),
    #[error("{0}")]
    InvalidIdempotencyKey(String),
    /// A signal body that names no known type, or a read marker without a
    /// message id.
    #[error("{0}")]
    InvalidSignal(String),
    /// One item of an admin request is not valid.
    #[error("{0}")]
    InvalidItem(String),
    #[error("no message {id} in this channel")]
    MessageNotFound { id: u64 },
    #[error("message {id} is deleted")]
    MessageDeleted { id: u64 },
    #[error("{id} is an edit or a deletion, not a message")]
    NotAMessage { id: u64 },
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error(
        "unsupported content type {0:?}: use application/json, text/plain or application/x-www-form-urlencoded"
    )]
    UnsupportedMediaType(String),
    #[error("could not read the request body: {0}")]
    BodyRead(String),
    #[error("storage failure: {0}")]
    Storage(#[from] sled::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The blocking pool that runs storage reads is gone (the server is stopping).
    #[error("the storage reader has stopped")]
    ReaderStopped,
    /// The publish hook failed and `--publish-hook-failure closed` refuses posts
    /// meanwhile (the cause is logged).
    #[error("the app that checks posts did not answer; retry shortly")]
    PublishHookUnavailable,
    /// A signal cannot reach the broker now (not connected, or too many
    /// signals wait for the publisher); it is not kept for later.
    #[error("{0}")]
    SignalUnavailable(crate::publish::SignalRefused),
    /// A feature the NATS JetStream history (`--nats-url`) does not have yet.
    #[error("{0} is not available with --nats-url yet")]
    NotWithNats(&'static str),
    /// Already in its final form (authentication and authorization, a
    /// rejection by the publish hook).
    #[error(transparent)]
    Api(#[from] ApiError),
}

impl ChatError {
    fn code(&self) -> &'static str {
        match self {
            ChatError::InvalidChannel(_) => "invalid_channel",
            ChatError::InvalidAuthor(_) => "invalid_author",
            ChatError::InvalidText(_) => "invalid_text",
            ChatError::InvalidJson(_) => "invalid_json",
            ChatError::InvalidEncoding => "invalid_encoding",
            ChatError::InvalidQuery(_) => "invalid_query",
            ChatError::InvalidMessageId(_) => "invalid_message_id",
            ChatError::InvalidIdempotencyKey(_) => "invalid_idempotency_key",
            ChatError::InvalidSignal(_) => "invalid_signal",
            ChatError::InvalidItem(_) => "invalid_item",
            ChatError::MessageNotFound { .. } => "message_not_found",
            ChatError::MessageDeleted { .. } => "message_deleted",
            ChatError::NotAMessage { .. } => "not_a_message",
            ChatError::PayloadTooLarge { .. } => "payload_too_large",
            ChatError::UnsupportedMediaType(_) => "unsupported_media_type",
            ChatError::BodyRead(_) => "bad_request",
            ChatError::Store(StoreError::Busy) => "overloaded",
            ChatError::Store(StoreError::Unavailable(_)) => "history_unavailable",
            ChatError::NotWithNats(_) => "not_available_with_nats",
            ChatError::PublishHookUnavailable => "publish_hook_unavailable",
            ChatError::SignalUnavailable(refused) => refused.code(),
            ChatError::Storage(_) | ChatError::Store(_) | ChatError::ReaderStopped => {
                "internal_error"
            }
            ChatError::Api(_) => "api_error",
        }
    }

    /// What the client is told; storage causes stay in the log.
    fn public_message(&self) -> String {
        match self {
            ChatError::Store(StoreError::Busy) => {
                "too many messages are waiting to be stored; retry shortly".to_string()
            }
            ChatError::Store(StoreError::Unavailable(_)) => {
                "history cannot be reached now; retry shortly".to_string()
            }
            ChatError::Storage(_) | ChatError::Store(_) | ChatError::ReaderStopped => {
                "internal server error".to_string()
            }
            other => other.to_string(),
        }
    }

    pub fn to_api_error(&self) -> ApiError {
        if let ChatError::Api(error) = self {
            return error.clone();
        }
        let error = ApiError::new(self.status_code(), self.code(), self.public_message());
        match self {
            ChatError::Store(StoreError::Busy | StoreError::Unavailable(_))
            | ChatError::PublishHookUnavailable
            | ChatError::SignalUnavailable(_) => error.with_retry_after(BUSY_RETRY_AFTER_SECS),
            _ => error,
        }
    }

    /// A failure of ours rather than of the request (logged, never detailed).
    pub fn is_internal(&self) -> bool {
        self.status_code() == StatusCode::INTERNAL_SERVER_ERROR
    }
}

impl ResponseError for ChatError {
    fn status_code(&self) -> StatusCode {
        match self {
            ChatError::MessageNotFound { .. } => StatusCode::NOT_FOUND,
            ChatError::MessageDeleted { .. } | ChatError::NotAMessage { .. } => {
                StatusCode::CONFLICT
            }
            ChatError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ChatError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ChatError::Store(StoreError::Busy | StoreError::Unavailable(_))
            | ChatError::PublishHookUnavailable
            | ChatError::SignalUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ChatError::NotWithNats(_) => StatusCode::NOT_IMPLEMENTED,
            ChatError::Storage(_) | ChatError::Store(_) | ChatError::ReaderStopped => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            ChatError::Api(error) => error.status,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if self.is_internal() {
            log::error!("{self}");
        } else if let ChatError::Store(StoreError::Unavailable(_)) = self {
            log::warn!("{self}");
        }
        self.to_api_error().error_response()
    }
}

/// An error and its causes, `: `-separated: what to log of a failed outgoing
/// request (reqwest's own error says only "error sending request"; a timeout
/// or a refused connection is in its sources).
pub fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
