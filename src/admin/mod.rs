//! The admin REST API under `/fs/dm/api/v1`: a router per resource, one bearer token, JSON in
//! and out. The OpenAPI document is served unauthenticated so tools can discover the API.
//!
//! Route table and document are one: every route is registered with `utoipa_axum::routes!`,
//! which adds the handler to the router and its `#[utoipa::path]` to the document in the same
//! call, so a route cannot be served without being documented (`tests/openapi.rs` checks that
//! no route in this module is registered any other way).

mod campaigns;
mod catalog;
mod devices;
pub mod error;
mod templates;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder, Server};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::service::Dm;
use error::{ApiError, ErrorBody};

pub const BASE: &str = "/fs/dm/api/v1";

#[derive(Clone)]
pub struct AdminState {
    pub dm: Arc<Dm>,
    pub token: Arc<str>,
    /// The running SIP endpoint: its registrations, and what check-sync sends with.
    pub sip: sip::Endpoint,
    pub check_sync: Arc<crate::sipside::checksync::CheckSync>,
    /// Trunk health (OPTIONS probes).
    pub trunks: Arc<crate::sipside::trunks::TrunkTable>,
    /// Check-sync campaigns and the fleet's out-of-date state.
    pub campaigns: Arc<crate::fleet::Campaigns>,
}

/// The document's frame; the paths and their schemas come from the routes.
#[derive(OpenApi)]
#[openapi(
    info(title = "sipdm admin API", version = "1"),
    security(("bearer" = [])),
    components(schemas(ErrorBody))
)]
struct ApiDoc;

/// The document as served, made once per router.
#[derive(Clone)]
struct OpenApiJson(bytes::Bytes);

pub fn router(state: AdminState) -> Router {
    let protected = OpenApiRouter::new()
        .merge(devices::routes())
        .merge(catalog::routes())
        .merge(templates::routes())
        .merge(campaigns::routes())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ));
    let (router, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(openapi))
        .merge(protected)
        .split_for_parts();
    finish(&mut doc);
    let json = doc
        .to_pretty_json()
        .expect("an OpenAPI document always serializes");
    router
        .layer(Extension(OpenApiJson(json.into())))
        .with_state(state)
}

/// What the routes cannot say themselves: where the API lives, how it authenticates, and that
/// every operation behind the token answers 401 with the error body.
fn finish(doc: &mut utoipa::openapi::OpenApi) {
    doc.servers = Some(vec![Server::new(BASE)]);
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
    );
    let unauthorized = ResponseBuilder::new()
        .description("missing or wrong admin token")
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Error")))
                .build(),
        )
        .build();
    for item in doc.paths.paths.values_mut() {
        let operations: [&mut Option<Operation>; 5] = [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
        ];
        // An operation with its own `security` (the document itself) is open; the rest inherit
        // the bearer token.
        for op in operations.into_iter().flatten() {
            if op.security.is_none() {
                op.responses
                    .responses
                    .insert("401".into(), unauthorized.clone().into());
            }
        }
    }
}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    summary = "This OpenAPI document (no token needed)",
    security(()),
    responses((status = 200, description = "the document", content_type = "application/json"))
)]
async fn openapi(Extension(OpenApiJson(json)): Extension<OpenApiJson>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], json)
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
