use axum::response::{IntoResponse, Response};
use axum::Json;
use http::StatusCode;
use serde_json::json;

use crate::bus::BusError;
use crate::store::StoreError;

/// Every error a REST handler returns. It becomes the response and logs nothing; the trace layer logs the
/// status with the request id.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body or query is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// Missing, invalid or expired credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// No such resource for this caller.
    #[error("not found")]
    NotFound,
    /// Too many requests.
    #[error("{0}")]
    RateLimited(String),
    /// A dependency is down; retry.
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        (
            status,
            Json(json!({"error": {"code": code, "message": self.to_string()}})),
        )
            .into_response()
    }
}

impl From<BusError> for ApiError {
    fn from(error: BusError) -> ApiError {
        match error {
            BusError::NotFound | BusError::NotAllowed(_) | BusError::Closed => ApiError::NotFound,
            BusError::Invalid(message) => ApiError::BadRequest(message),
            BusError::UnknownAgent => ApiError::Unauthorized("unknown agent".to_owned()),
            BusError::Unavailable(message) => ApiError::Unavailable(message),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        ApiError::Unavailable(error.to_string())
    }
}
