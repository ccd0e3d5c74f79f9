//! OpenFGA's error answers: `{"code": "...", "message": "..."}` with the
//! HTTP status OpenFGA's gateway gives each family of codes (400 for input
//! errors, 401 for authentication, 404 for unknown stores and paths, 500 for
//! internal errors).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// An error answer of the FGA API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FgaError {
    /// HTTP status.
    pub status: StatusCode,
    /// OpenFGA's error code, e.g. `validation_error`.
    pub code: &'static str,
    /// What went wrong, for a person.
    pub message: String,
}

impl FgaError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> FgaError {
        FgaError {
            status,
            code,
            message: message.into(),
        }
    }

    /// 400 `validation_error`.
    pub fn validation(message: impl Into<String>) -> FgaError {
        FgaError::new(StatusCode::BAD_REQUEST, "validation_error", message)
    }

    /// 400 with another input-error code of OpenFGA's `ErrorCode`.
    pub fn input(code: &'static str, message: impl Into<String>) -> FgaError {
        FgaError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 400 `invalid_authorization_model`.
    pub fn invalid_model(message: impl Into<String>) -> FgaError {
        FgaError::input("invalid_authorization_model", message)
    }

    /// 404 `store_id_not_found`.
    pub fn store_not_found() -> FgaError {
        FgaError::new(
            StatusCode::NOT_FOUND,
            "store_id_not_found",
            "Store ID not found",
        )
    }

    /// 404 `undefined_endpoint` (also what every path answers while the FGA
    /// API is off).
    pub fn undefined_endpoint() -> FgaError {
        FgaError::new(
            StatusCode::NOT_FOUND,
            "undefined_endpoint",
            "Not Found: the FGA API is not enabled on this vault",
        )
    }

    /// 400 `authorization_model_not_found`.
    pub fn model_not_found(id: &str) -> FgaError {
        FgaError::input(
            "authorization_model_not_found",
            format!("Authorization Model '{id}' not found"),
        )
    }

    /// 400 `latest_authorization_model_not_found`.
    pub fn no_model(store: &str) -> FgaError {
        FgaError::input(
            "latest_authorization_model_not_found",
            format!("No authorization models found for store '{store}'"),
        )
    }

    /// 400 `authorization_model_resolution_too_complex`: the resolve depth
    /// limit was reached.
    pub fn too_complex() -> FgaError {
        FgaError::input(
            "authorization_model_resolution_too_complex",
            "Authorization Model resolution required too many rewrite rules to be resolved. \
             Check your authorization model for infinite recursion or too much nesting",
        )
    }

    /// 400 `exceeded_entity_limit`.
    pub fn entity_limit(entity: &str, limit: usize) -> FgaError {
        FgaError::input(
            "exceeded_entity_limit",
            format!("The number of {entity} exceeds the allowed limit of {limit}"),
        )
    }

    /// 401 `bearer_token_missing`.
    pub fn bearer_missing() -> FgaError {
        FgaError::new(
            StatusCode::UNAUTHORIZED,
            "bearer_token_missing",
            "missing bearer token",
        )
    }

    /// 401 `unauthenticated`.
    pub fn unauthenticated() -> FgaError {
        FgaError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "unauthenticated",
        )
    }

    /// 500 `internal_error`; the cause is logged, not answered.
    pub fn internal(cause: impl std::fmt::Display) -> FgaError {
        tracing::error!(error = %cause, "fga: internal error");
        FgaError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "Internal Server Error",
        )
    }

    /// 500 `deadline_exceeded`.
    pub fn deadline() -> FgaError {
        FgaError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "deadline_exceeded",
            "Request Deadline Exceeded",
        )
    }
}

impl std::fmt::Display for FgaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl From<crate::store::StoreError> for FgaError {
    fn from(e: crate::store::StoreError) -> Self {
        FgaError::internal(e)
    }
}

impl From<sqlx::Error> for FgaError {
    fn from(e: sqlx::Error) -> Self {
        FgaError::internal(crate::store::StoreError::from(e))
    }
}

impl IntoResponse for FgaError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({"code": self.code, "message": self.message})),
        )
            .into_response()
    }
}
