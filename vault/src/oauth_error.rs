//! OAuth-style error answers: `{"error", "error_description"}` (plus
//! `connect_url` when the user has to link or re-link an account). Built only
//! from fixed texts and names we chose; never from a token or a library's
//! error string.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

/// An error answer.
#[derive(Debug, Clone, Serialize)]
pub struct OAuthError {
    /// HTTP status.
    #[serde(skip)]
    pub status: StatusCode,
    /// The OAuth error code.
    pub error: &'static str,
    /// A human explanation.
    pub error_description: String,
    /// Where the user can (re)link the account.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_url: Option<String>,
}

impl OAuthError {
    /// An error with the given status, code and description.
    pub fn new(
        status: StatusCode,
        error: &'static str,
        description: impl Into<String>,
    ) -> OAuthError {
        OAuthError {
            status,
            error,
            error_description: description.into(),
            connect_url: None,
        }
    }

    /// 400 `invalid_request`.
    pub fn invalid_request(description: impl Into<String>) -> OAuthError {
        OAuthError::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    /// 401 `invalid_client`.
    pub fn invalid_client() -> OAuthError {
        OAuthError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed",
        )
    }

    /// 401 `invalid_token` for a user-facing endpoint.
    pub fn invalid_token(description: impl Into<String>) -> OAuthError {
        OAuthError::new(StatusCode::UNAUTHORIZED, "invalid_token", description)
    }

    /// 503 `temporarily_unavailable`.
    pub fn unavailable(description: impl Into<String>) -> OAuthError {
        OAuthError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            description,
        )
    }

    /// 500 `server_error`; the cause goes to the log, not to the client.
    pub fn server_error() -> OAuthError {
        OAuthError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "internal error in the vault",
        )
    }

    /// Adds the link the user should open.
    pub fn with_connect_url(mut self, url: String) -> OAuthError {
        self.connect_url = Some(url);
        self
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let status = self.status;
        let mut response = (status, Json(&self)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        if status == StatusCode::UNAUTHORIZED && self.error == "invalid_client" {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"agentward-vault\""),
            );
        } else if status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
        }
        response
    }
}
