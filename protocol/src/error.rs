//! The one error body every Crier endpoint answers with:
//! `{"error":{"code":"snake_case_code","message":"human sentence"}}`.
//! The services make it from their errors (the `server` crate's `ApiError`);
//! clients (tests, the load generator) read it with these types.

use serde::{Deserialize, Serialize};

/// The wire shape of an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}
