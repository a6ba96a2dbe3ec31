//! Errors as the API answers them: a status and `{"error": …, "detail": …}`, plus the problems
//! of an invalid policy or the current version after a failed precondition.

use axum::response::{IntoResponse, Response};
use berth_core::policy::{InvalidPolicy, Problem};
use berth_core::registry::RegistryError;
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// An error answer.
#[derive(Debug, Serialize)]
pub struct ApiError {
    #[serde(skip)]
    pub status: StatusCode,
    /// What went wrong, in a few words (`invalid policy`, `version mismatch`).
    pub error: String,
    /// What exactly, and what to do.
    pub detail: String,
    /// Every problem of an invalid policy, with where it is.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<Problem>,
    /// After a failed precondition: the version that is current.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_version: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, error: &str, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            error: error.into(),
            detail: detail.into(),
            problems: Vec::new(),
            current_version: None,
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad request", detail)
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not found", detail)
    }

    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", detail)
    }

    /// 412: the policy is no longer at the version the caller read.
    pub fn precondition_failed(current: u64, detail: impl Into<String>) -> Self {
        ApiError {
            current_version: Some(current),
            ..Self::new(StatusCode::PRECONDITION_FAILED, "version mismatch", detail)
        }
    }

    /// 422 with every problem the validator found.
    pub fn invalid(what: &str, e: InvalidPolicy) -> Self {
        let detail =
            format!("{what}: {}", e.0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "));
        ApiError { problems: e.0, ..Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid policy", detail) }
    }

    /// 422 for a request body of the wrong shape.
    pub fn unprocessable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid request", detail)
    }

    /// The reason label for the auth failure metric.
    pub fn auth_reason(&self) -> &'static str {
        if self.status == StatusCode::FORBIDDEN { "read_only" } else { "unauthenticated" }
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        let status = match e {
            RegistryError::Conflict { .. } => StatusCode::PRECONDITION_FAILED,
            RegistryError::Failed { .. } => StatusCode::BAD_GATEWAY,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        Self::new(status, "registry error", format!("{e}; try again once the registry answers"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body =
            serde_json::to_string(&self).unwrap_or_else(|_| format!("{{\"error\":\"{}\"}}", self.error));
        let mut resp = (self.status, body).into_response();
        let headers = resp.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"berth\""));
        }
        resp
    }
}

/// Reads a JSON body: not JSON at all is 400, JSON of the wrong shape 422.
pub(crate) fn json_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}")))?;
    serde_json::from_value(value).map_err(|e| ApiError::unprocessable(format!("the body does not fit: {e}")))
}
