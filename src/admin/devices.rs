//! Devices: CRUD, assign/unassign, audit, CSV import.

use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::AdminState;
use crate::http::error::ApiError;
use crate::service::Dm;
use crate::store::model::{DevicePatch, NewDevice};

pub fn routes() -> Router<AdminState> {
    Router::new()
        .route("/devices", get(list).post(create))
        .route("/devices/{mac}", get(read).patch(update).delete(remove))
        .route("/devices/{mac}/assign", post(assign))
        .route("/devices/{mac}/unassign", post(unassign))
        .route("/devices/{mac}/audit", get(device_audit))
        .route("/devices/{mac}/check-sync", post(check_sync))
        .route("/devices/{mac}/bindings", get(device_bindings))
        .route("/devices/{mac}/http-credentials", get(http_credentials))
        .route("/devices/{mac}/file", get(preview))
        .route("/bindings", get(bindings))
        .route("/trunks", get(trunks))
        .route("/audit", get(audit))
        .route("/import", post(import))
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(default)]
    q: Option<String>,
    #[serde(default = "default_limit")]
    limit: i64,
    #[serde(default)]
    offset: i64,
}

fn default_limit() -> i64 {
    500
}

fn body<T>(j: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    j.map(|Json(t)| t).map_err(|e| match e {
        // Well-formed JSON of the wrong shape is unprocessable; broken JSON is a bad request.
        JsonRejection::JsonDataError(_) => {
            ApiError::Dm(crate::service::DmError::Invalid(e.body_text()))
        }
        _ => ApiError::BadRequest(e.body_text()),
    })
}

async fn list(
    State(st): State<AdminState>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let devices = st
        .dm
        .store
        .devices(q.q.as_deref(), q.limit.clamp(1, 10_000), q.offset.max(0))
        .await?;
    Ok(Json(devices).into_response())
}

async fn create(
    State(st): State<AdminState>,
    j: Result<Json<NewDevice>, JsonRejection>,
) -> Result<Response, ApiError> {
    let d = st.dm.add_device(body(j)?, "api").await?;
    Ok((StatusCode::CREATED, Json(d)).into_response())
}

async fn read(State(st): State<AdminState>, Path(mac): Path<String>) -> Result<Response, ApiError> {
    Ok(Json(st.dm.device(&mac).await?).into_response())
}

async fn update(
    State(st): State<AdminState>,
    Path(mac): Path<String>,
    j: Result<Json<DevicePatch>, JsonRejection>,
) -> Result<Response, ApiError> {
    Ok(Json(st.dm.update_device(&mac, &body(j)?).await?).into_response())
}

async fn remove(
    State(st): State<AdminState>,
    Path(mac): Path<String>,
) -> Result<Response, ApiError> {
    st.dm.delete_device(&mac, "api").await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AssignBody {
    dn: String,
}

async fn assign(
    State(st): State<AdminState>,
    Path(mac): Path<String>,
    j: Result<Json<AssignBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let b = body(j)?;
    Ok(Json(st.dm.assign(&mac, &b.dn, "api").await?).into_response())
}

async fn unassign(
    State(st): State<AdminState>,
    Path(mac): Path<String>,
) -> Result<Response, ApiError> {
    let dn = st.dm.unassign(&mac, "api").await?;
    Ok(Json(serde_json::json!({ "mac": Dm::parse_mac(&mac)?, "previous_dn": dn })).into_response())
}

async fn device_audit(
    State(st): State<AdminState>,
    Path(mac): Path<String>,
) -> Result<Response, ApiError> {
    let mac = Dm::parse_mac(&mac)?;
    Ok(Json(st.dm.store.audit_log(Some(&mac), 1000).await?).into_response())
}

/// Sends the phone NOTIFY check-sync now (after an administrator's change).
async fn check_sync(
    State(st): State<AdminState>,
    Path(mac): Path<String>,
) -> Result<Response, ApiError> {
    let mac = Dm::parse_mac(&mac)?;
    match crate::sipside::checksync::check_sync(&st.dm, &mac, "api").await {
        Ok(report) => Ok(Json(report).into_response()),
        Err(e) => {
            let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_GATEWAY);
            tracing::info!(mac = %mac, error = %e, "check-sync not delivered");
            Ok((status, Json(serde_json::json!({ "error": e.to_string() }))).into_response())
        }
    }
}

#[derive(Deserialize)]
struct BindingQuery {
    #[serde(default)]
    aor: Option<String>,
}

/// Current registrations (from the registrar's memory), optionally of one AOR.
async fn bindings(
    State(st): State<AdminState>,
    Query(q): Query<BindingQuery>,
) -> Result<Response, ApiError> {
    let Some(ep) = st.dm.sip.get() else {
        return Ok(Json(Vec::<serde_json::Value>::new()).into_response());
    };
    let list = match &q.aor {
        Some(aor) => ep.registrar().bindings(aor),
        None => ep
            .registrar()
            .all_bindings()
            .into_iter()
            .take(10_000)
            .collect(),
    };
    Ok(Json(list.iter().map(binding_json).collect::<Vec<_>>()).into_response())
}

/// The registrations that belong to one device: its per-device identity and its DN.
async fn device_bindings(
    State(st): State<AdminState>,
    Path(mac): Path<String>,
) -> Result<Response, ApiError> {
    let device = st.dm.device(&mac).await?;
    let Some(ep) = st.dm.sip.get() else {
        return Ok(Json(Vec::<serde_json::Value>::new()).into_response());
    };
    let mut list: Vec<_> = ep
        .registrar()
        .binding_of_device(&st.dm.credentials.auth_user(&device.mac))
        .into_iter()
        .collect();
    if let Some(dn) = &device.dn {
        list.extend(ep.registrar().bindings(dn));
    }
    Ok(Json(list.iter().map(binding_json).collect::<Vec<_>>()).into_response())
}

#[derive(Deserialize)]
struct PreviewQuery {
    #[serde(default)]
    vendor: Option<String>,
}

/// The device's file as the phone would get it (records nothing); `?vendor=` previews another
/// vendor's template for the same device.
async fn preview(
    State(st): State<AdminState>,
    Path(mac): Path<String>,
    Query(q): Query<PreviewQuery>,
) -> Result<Response, ApiError> {
    let served = st.dm.preview(&mac, q.vendor.as_deref()).await?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, served.content_type)],
        served.body,
    )
        .into_response())
}

/// The HTTP basic credentials a phone uses for its files when `http-auth = "basic"`.
async fn http_credentials(
    State(st): State<AdminState>,
    Path(mac): Path<String>,
) -> Result<Response, ApiError> {
    let mac = Dm::parse_mac(&mac)?;
    Ok(
        Json(serde_json::json!({ "user": mac, "password": st.dm.credentials.http_password(&mac) }))
            .into_response(),
    )
}

/// Trunks with their health (OPTIONS probes): which carries the IVR calls now.
async fn trunks(State(st): State<AdminState>) -> Result<Response, ApiError> {
    let states = st.dm.trunks.get().map(|t| t.states()).unwrap_or_default();
    Ok(Json(states).into_response())
}

fn binding_json(b: &std::sync::Arc<sip::registrar::Binding>) -> serde_json::Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    serde_json::json!({
        "aor": b.aor,
        "contact": b.contact,
        "expires_in": b.remaining(now),
        "device": b.device,
        "user_agent": b.user_agent,
        "flow": b.flow.map(|f| f.token()),
    })
}

async fn audit(
    State(st): State<AdminState>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    Ok(Json(
        st.dm
            .store
            .audit_log(None, q.limit.clamp(1, 10_000))
            .await?,
    )
    .into_response())
}

/// Body: CSV text `mac,model,profile,dn`. All or nothing; 422 with the per-line report when
/// any line is refused.
async fn import(State(st): State<AdminState>, csv: Bytes) -> Result<Response, ApiError> {
    let text =
        std::str::from_utf8(&csv).map_err(|_| ApiError::BadRequest("CSV is not UTF-8".into()))?;
    let report = st.dm.import_csv(text, "api").await?;
    Ok(import_response(report))
}

/// 200 with the count, or 422 with a line-numbered report of every refused line.
pub(super) fn import_response(report: crate::store::ImportReport) -> Response {
    let status = if report.errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let errors: Vec<_> = report
        .errors
        .iter()
        .map(|(line, message)| serde_json::json!({ "line": line, "error": message }))
        .collect();
    (
        status,
        Json(serde_json::json!({ "imported": report.imported, "errors": errors })),
    )
        .into_response()
}
