//! The one error body every Crier endpoint answers with:
//! `{"error":{"code":"snake_case_code","message":"human sentence"}}`.
//! The services make it from their errors (the `server` crate's `ApiError`);
//! clients (tests, the load generator) read it with these types.

use serde::{Deserialize, Serialize};

/// The wire shape of an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = Error, example = json!({"error": {"code": "invalid_channel", "message": "channel must be a UUID, got \"general\""}}))]
pub struct ErrorBody {
    #[schema(inline)]
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// What went wrong, for programs: `snake_case`, stable.
    pub code: String,
    /// What went wrong, for people.
    pub message: String,
}
