//! `POST /templates/reload`: the operator edited a template in `[server] template-dir`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody};
use super::AdminState;

pub fn routes() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new().routes(routes!(reload))
}

/// Re-reads the template directory (as `SIGHUP` does). Every template must compile, or the
/// previous set stays in service; then every rendered file is dropped on every instance.
#[utoipa::path(
    post,
    path = "/templates/reload",
    summary = "Re-read the template directory (all or nothing); every instance drops its rendered files",
    responses(
        (status = 204, description = "reloaded"),
        (status = 422, description = "a template does not compile; the previous set stays", body = ErrorBody),
    )
)]
async fn reload(State(st): State<AdminState>) -> Result<Response, ApiError> {
    st.dm.reload_templates().await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
