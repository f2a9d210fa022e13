//! Everything that can go wrong at broadcast-sse's edge, and how each is answered.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use protocol::channel::InvalidChannel;
use server::error::ApiError;

#[derive(Debug, thiserror::Error)]
pub enum BroadcastError {
    #[error(transparent)]
    InvalidChannel(#[from] InvalidChannel),
    #[error("invalid channel list: {0}")]
    InvalidChannels(String),
    #[error("invalid Last-Event-ID: {0}")]
    InvalidLastEventId(String),
    #[error("invalid name: {0}")]
    InvalidName(String),
    #[error("invalid presence: {0:?} is not one of 1, true, 0, false")]
    InvalidPresence(String),
    #[error("history is unavailable, try again: {0}")]
    HistoryUnavailable(String),
    /// Already in its final form (authentication and authorization).
    #[error(transparent)]
    Api(#[from] ApiError),
}

impl BroadcastError {
    fn code(&self) -> &'static str {
        match self {
            BroadcastError::InvalidChannel(_) | BroadcastError::InvalidChannels(_) => {
                "invalid_channel"
            }
            BroadcastError::InvalidLastEventId(_) => "invalid_last_event_id",
            BroadcastError::InvalidName(_) => "invalid_name",
            BroadcastError::InvalidPresence(_) => "invalid_presence",
            BroadcastError::HistoryUnavailable(_) => "history_unavailable",
            BroadcastError::Api(_) => "api_error",
        }
    }
}

impl ResponseError for BroadcastError {
    fn status_code(&self) -> StatusCode {
        match self {
            BroadcastError::HistoryUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            BroadcastError::Api(error) => error.status,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let BroadcastError::Api(error) = self {
            return error.error_response();
        }
        ApiError::new(self.status_code(), self.code(), self.to_string()).error_response()
    }
}
