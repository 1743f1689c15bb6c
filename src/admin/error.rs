//! One API error type for every admin route: maps service errors to statuses, logs the cause
//! once, and keeps internals (SQL, paths) out of what the client sees.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::fault::{http_status, HasFault};
use crate::service::DmError;
use crate::store::StoreError;

/// What every refused API request carries: one message, never the internal cause.
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    pub error: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Dm(#[from] DmError),
    #[error("{0}")]
    BadRequest(String),
    #[error("missing or wrong admin token")]
    Unauthorized,
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::Dm(DmError::Store(e))
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Dm(e) => StatusCode::from_u16(http_status(e.fault()))
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
            "internal error; see the server log".to_owned()
        } else {
            tracing::info!(status = status.as_u16(), error = %self, "request refused");
            self.to_string()
        };
        let mut res = (status, Json(ErrorBody { error: message })).into_response();
        if status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(
                "www-authenticate",
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        res
    }
}
