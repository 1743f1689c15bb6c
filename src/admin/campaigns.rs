//! Fleet operations over the API: which phones are out of date, and check-sync campaigns.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody};
use super::AdminState;
use crate::fault::{http_status, HasFault};
use crate::fleet::{CampaignView, FleetState, Selection, StartError};

pub fn routes() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new()
        .routes(routes!(fleet))
        .routes(routes!(list_campaigns, start_campaign))
        .routes(routes!(read_campaign))
        .routes(routes!(stop_campaign))
}

/// The campaign a path names.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // describes the path; handlers take `Path<u64>`
struct IdPath {
    id: u64,
}

/// A campaign to start: the devices of the selection (all when it is empty), only those out
/// of date unless `all` is set.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct StartCampaign {
    #[serde(flatten)]
    selection: Selection,
    /// Every selected device, also those whose files have not changed (a resync).
    #[serde(default)]
    all: bool,
}

/// Devices whose files changed since they last downloaded them.
#[utoipa::path(
    get,
    path = "/fleet",
    summary = "Devices out of date (their file changed since they last fetched it), in all and per site, profile and model",
    responses((status = 200, description = "success", body = FleetState))
)]
async fn fleet(State(st): State<AdminState>) -> Result<Response, ApiError> {
    Ok(Json(st.campaigns.fleet_state().await?).into_response())
}

#[utoipa::path(
    get,
    path = "/campaigns",
    summary = "Check-sync campaigns, newest first",
    responses((status = 200, description = "success", body = Vec<CampaignView>))
)]
async fn list_campaigns(State(st): State<AdminState>) -> Response {
    Json(st.campaigns.list()).into_response()
}

#[utoipa::path(
    post,
    path = "/campaigns",
    summary = "Start a check-sync campaign over a selection (site, profile, model, firmware, macs); only out-of-date devices unless all",
    request_body = StartCampaign,
    responses(
        (status = 201, description = "started", body = CampaignView),
        (status = 400, description = "not a selection", body = ErrorBody),
        (status = 409, description = "devices already in a running campaign", body = ErrorBody),
        (status = 422, description = "the selection matches no device, or none is out of date", body = ErrorBody),
    )
)]
async fn start_campaign(
    State(st): State<AdminState>,
    body: Result<Json<StartCampaign>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    match st.campaigns.start(req.selection, !req.all, "manual").await {
        Ok(view) => Ok((StatusCode::CREATED, Json(view)).into_response()),
        Err(StartError::Dm(e)) => Err(e.into()),
        Err(e) => {
            let status = StatusCode::from_u16(http_status(e.fault()))
                .unwrap_or(StatusCode::UNPROCESSABLE_ENTITY);
            tracing::info!(error = %e, "campaign not started");
            Ok((
                status,
                Json(ErrorBody {
                    error: e.to_string(),
                }),
            )
                .into_response())
        }
    }
}

#[utoipa::path(
    get,
    path = "/campaigns/{id}",
    summary = "A campaign's progress: waves, phones updated and failed (with reasons)",
    params(IdPath),
    responses(
        (status = 200, description = "success", body = CampaignView),
        (status = 404, description = "no such campaign", body = ErrorBody),
    )
)]
async fn read_campaign(State(st): State<AdminState>, Path(id): Path<String>) -> Response {
    match id.parse().ok().and_then(|id| st.campaigns.get(id)) {
        Some(view) => Json(view).into_response(),
        None => not_found(&id),
    }
}

#[utoipa::path(
    post,
    path = "/campaigns/{id}/stop",
    summary = "Stop a running campaign after the check-syncs in flight",
    params(IdPath),
    responses(
        (status = 200, description = "stopping", body = CampaignView),
        (status = 404, description = "no such campaign", body = ErrorBody),
    )
)]
async fn stop_campaign(State(st): State<AdminState>, Path(id): Path<String>) -> Response {
    match id.parse().ok().and_then(|id| st.campaigns.stop(id)) {
        Some(view) => Json(view).into_response(),
        None => not_found(&id),
    }
}

fn not_found(id: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(ErrorBody {
            error: format!("campaign `{id}` not found"),
        }),
    )
        .into_response()
}
