//! The admin REST API under `/fs/dm/api/v1`: a router per resource, one bearer token, JSON in
//! and out. The OpenAPI document is served unauthenticated so tools can discover the API.

mod catalog;
mod devices;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::http::error::ApiError;
use crate::service::Dm;

pub const BASE: &str = "/fs/dm/api/v1";

#[derive(Clone)]
pub struct AdminState {
    pub dm: Arc<Dm>,
    pub token: Arc<str>,
}

pub fn router(state: AdminState) -> Router {
    let protected = Router::new()
        .merge(devices::routes())
        .merge(catalog::routes())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ));
    Router::new()
        .route("/openapi.json", get(openapi))
        .merge(protected)
        .with_state(state)
}

async fn openapi() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
}

async fn require_token(State(st): State<AdminState>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    match given {
        Some(t) if constant_time_eq(t.as_bytes(), st.token.as_bytes()) => next.run(req).await,
        _ => ApiError::Unauthorized.into_response(),
    }
}

/// Compares without an early exit, so response timing does not reveal a token's prefix.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
