//! API errors: a status code and `{"status":"error","message":...}`, never internals.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::auth::AuthError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// Well-formed but refused: an idempotency key reused for a different event.
    #[error("{0}")]
    Unprocessable(String),
    #[error("request took too long")]
    RequestTimeout,
    #[error("service unavailable")]
    Unavailable,
    /// Unavailable for a reason the caller is told (503).
    #[error("{0}")]
    UnavailableBecause(String),
    /// The store's disk is full: nothing was committed; try again later.
    #[error("store full")]
    StoreFull,
    #[error("internal error")]
    Internal,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::BadRequest(message.into())
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::Unavailable | Self::UnavailableBecause(_) | Self::StoreFull => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({ "status": "error", "message": self.to_string() }));
        if matches!(self, Self::UnavailableBecause(_)) {
            // What it waits for (peers, its own events back) takes about a second.
            let retry = [(axum::http::header::RETRY_AFTER, "1")];
            return (self.status(), retry, body).into_response();
        }
        (self.status(), body).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Closed => Self::Unavailable,
            StoreError::CatchingUp(fenced) => Self::UnavailableBecause(fenced.to_string()),
            other if other.is_full() => Self::StoreFull,
            other => {
                tracing::error!(error = %other, "store error in request");
                Self::Internal
            }
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        Self::Unauthorized(error.to_string())
    }
}

impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::JsonRejection) -> Self {
        match rejection {
            axum::extract::rejection::JsonRejection::BytesRejection(_) => {
                Self::PayloadTooLarge("request body too large".into())
            }
            other => Self::BadRequest(format!("invalid JSON body: {}", other.body_text())),
        }
    }
}
