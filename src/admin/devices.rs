//! Devices: CRUD, assign/unassign, audit, CSV import.

use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody};
use super::AdminState;
use crate::fault::{http_status, HasFault};
use crate::service::Dm;
use crate::sipside::checksync::CheckSyncReport;
use crate::sipside::deprovision::{Deprovision, Deprovisioned};
use crate::sipside::trunks::TrunkState;
use crate::store::model::{AuditEntry, Device, DevicePatch, NewDevice};
use crate::store::{AssignOutcome, FreedDn};

/// Each `routes!` names the handlers of one path; their `#[utoipa::path]` gives the methods.
pub fn routes() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(read, update, remove))
        .routes(routes!(assign))
        .routes(routes!(unassign))
        .routes(routes!(device_audit))
        .routes(routes!(check_sync))
        .routes(routes!(device_bindings))
        .routes(routes!(http_credentials))
        .routes(routes!(preview))
        .routes(routes!(bindings))
        .routes(routes!(trunks))
        .routes(routes!(audit))
        .routes(routes!(import))
}

/// The device a path names (`{mac}`: 12 hex digits, separators allowed).
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // describes the path; handlers take `Path<String>`
struct MacPath {
    mac: String,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Substring of the MAC, DN, model or vendor.
    #[serde(default)]
    q: Option<String>,
    /// At most this many (1..=10000, default 500).
    #[serde(default = "default_limit")]
    limit: i64,
    /// Skip this many first (default 0); devices come in MAC order, so `limit` and `offset`
    /// page through them. The response's `X-Total-Count` says how many match `q` in all.
    #[serde(default)]
    offset: i64,
}

/// The response header of `GET /devices` that counts every matching device, not only the page.
const TOTAL_COUNT: &str = "x-total-count";

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

#[utoipa::path(
    get,
    path = "/devices",
    summary = "List devices, one page in MAC order (query: q, limit, offset; header X-Total-Count: how many match in all)",
    params(ListQuery),
    responses((status = 200, description = "success: the page of devices", body = Vec<Device>,
        headers(("X-Total-Count" = i64, description = "How many devices match `q` in all (every page)"))))
)]
async fn list(
    State(st): State<AdminState>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let search = q.q.as_deref();
    let devices = st
        .dm
        .store
        .devices(search, q.limit.clamp(1, 10_000), q.offset.max(0))
        .await?;
    let total = st.dm.store.count_devices(search).await?;
    Ok(([(TOTAL_COUNT, total.to_string())], Json(devices)).into_response())
}

#[utoipa::path(
    post,
    path = "/devices",
    summary = "Create a device",
    request_body = NewDevice,
    responses(
        (status = 201, description = "success", body = Device),
        (status = 409, description = "the MAC or the DN is taken", body = ErrorBody),
        (status = 422, description = "invalid MAC, unknown profile or DN", body = ErrorBody),
    )
)]
async fn create(
    State(st): State<AdminState>,
    j: Result<Json<NewDevice>, JsonRejection>,
) -> Result<Response, ApiError> {
    let d = st.dm.add_device(body(j)?, "api").await?;
    Ok((StatusCode::CREATED, Json(d)).into_response())
}

#[utoipa::path(
    get,
    path = "/devices/{mac}",
    summary = "Read a device",
    params(MacPath),
    responses(
        (status = 200, description = "success", body = Device),
        (status = 404, description = "no such device", body = ErrorBody),
    )
)]
async fn read(State(st): State<AdminState>, Path(mac): Path<String>) -> Result<Response, ApiError> {
    Ok(Json(st.dm.device(&mac).await?).into_response())
}

#[utoipa::path(
    patch,
    path = "/devices/{mac}",
    summary = "Change a device",
    params(MacPath),
    request_body = DevicePatch,
    responses(
        (status = 200, description = "success", body = Device),
        (status = 404, description = "no such device", body = ErrorBody),
        (status = 422, description = "invalid change", body = ErrorBody),
    )
)]
async fn update(
    State(st): State<AdminState>,
    Path(mac): Path<String>,
    j: Result<Json<DevicePatch>, JsonRejection>,
) -> Result<Response, ApiError> {
    Ok(Json(st.dm.update_device(&mac, &body(j)?).await?).into_response())
}

#[utoipa::path(
    delete,
    path = "/devices/{mac}",
    summary = "Delete a device; the DN it held is freed: its bindings removed, the phone sent check-sync (it re-fetches and, unknown now, gets the default file)",
    params(MacPath),
    responses(
        (status = 200, description = "deleted, and the DN it held freed", body = Deleted),
        (status = 204, description = "deleted (it held no DN)"),
        (status = 404, description = "no such device", body = ErrorBody),
    )
)]
async fn remove(
    State(st): State<AdminState>,
    Path(mac): Path<String>,
) -> Result<Response, ApiError> {
    let Some(freed) = st.dm.delete_device(&mac, "api").await? else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    let deprovisioned = deprovision(&st, std::slice::from_ref(&freed)).await;
    Ok(Json(Deleted {
        mac: freed.mac().to_owned(),
        deprovisioned,
    })
    .into_response())
}

/// What deleting a device that held a DN answers.
#[derive(Serialize, ToSchema)]
struct Deleted {
    mac: String,
    /// The DN it held: its bindings removed and the phone's check-sync.
    deprovisioned: Vec<Deprovisioned>,
}

/// The SIP side of the DNs a write took from devices: their bindings removed, the devices
/// told to re-fetch. A check-sync that fails is reported, not an error of the write.
async fn deprovision(st: &AdminState, freed: &[FreedDn]) -> Vec<Deprovisioned> {
    Deprovision::new(&st.sip, &st.check_sync)
        .run(freed, "api")
        .await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct AssignBody {
    dn: String,
}

/// What an assignment answers: the outcome, and the devices that lost a DN in it.
#[derive(Serialize, ToSchema)]
struct Assigned {
    #[serde(flatten)]
    outcome: AssignOutcome,
    /// The DN's former holder (a take-over) and this device's previous DN: their bindings
    /// removed and the check-sync sent to the device that lost them.
    deprovisioned: Vec<Deprovisioned>,
}

#[utoipa::path(
    post,
    path = "/devices/{mac}/assign",
    summary = "Assign a DN (a DN taken from another device, or this device's previous one, is deprovisioned: bindings removed, check-sync to the device that lost it)",
    params(MacPath),
    request_body = AssignBody,
    responses(
        (status = 200, description = "success", body = Assigned),
        (status = 404, description = "no such device or DN", body = ErrorBody),
        (status = 409, description = "the DN is held by another device", body = ErrorBody),
    )
)]
async fn assign(
    State(st): State<AdminState>,
    Path(mac): Path<String>,
    j: Result<Json<AssignBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let b = body(j)?;
    let outcome = st.dm.assign(&mac, &b.dn, "api").await?;
    let deprovisioned = deprovision(&st, &outcome.freed).await;
    Ok(Json(Assigned {
        outcome,
        deprovisioned,
    })
    .into_response())
}

#[utoipa::path(
    post,
    path = "/devices/{mac}/unassign",
    summary = "Unassign the device's DN: its bindings are removed and the phone sent check-sync (it re-fetches the default file)",
    params(MacPath),
    responses(
        (status = 200, description = "success", body = Unassigned),
        (status = 404, description = "no such device", body = ErrorBody),
    )
)]
async fn unassign(
    State(st): State<AdminState>,
    Path(mac): Path<String>,
) -> Result<Response, ApiError> {
    let freed = st.dm.unassign(&mac, "api").await?;
    let deprovisioned = match &freed {
        Some(f) => deprovision(&st, std::slice::from_ref(f)).await.pop(),
        None => None,
    };
    Ok(Json(Unassigned {
        mac: Dm::parse_mac(&mac)?,
        previous_dn: freed.map(|f| f.dn),
        deprovisioned,
    })
    .into_response())
}

/// What an unassignment answers.
#[derive(Serialize, ToSchema)]
struct Unassigned {
    mac: String,
    /// The DN the device held, if any.
    previous_dn: Option<String>,
    /// That DN's bindings removed and the phone's check-sync.
    deprovisioned: Option<Deprovisioned>,
}

#[utoipa::path(
    get,
    path = "/devices/{mac}/audit",
    summary = "Assignment history of a device",
    params(MacPath),
    responses((status = 200, description = "success", body = Vec<AuditEntry>))
)]
async fn device_audit(
    State(st): State<AdminState>,
    Path(mac): Path<String>,
) -> Result<Response, ApiError> {
    let mac = Dm::parse_mac(&mac)?;
    Ok(Json(st.dm.store.audit_log(Some(&mac), 1000).await?).into_response())
}

/// Sends the phone NOTIFY check-sync now (after an administrator's change).
#[utoipa::path(
    post,
    path = "/devices/{mac}/check-sync",
    summary = "Send the phone NOTIFY check-sync now (502 when the phone refuses or does not answer, 409 when it is not registered)",
    params(MacPath),
    responses(
        (status = 200, description = "delivered", body = CheckSyncReport),
        (status = 409, description = "not registered", body = ErrorBody),
        (status = 502, description = "refused or unanswered", body = ErrorBody),
    )
)]
async fn check_sync(
    State(st): State<AdminState>,
    Path(mac): Path<String>,
) -> Result<Response, ApiError> {
    let mac = Dm::parse_mac(&mac)?;
    match st.check_sync.send(&st.sip, &mac, "api").await {
        Ok(report) => Ok(Json(report).into_response()),
        Err(e) => {
            let status =
                StatusCode::from_u16(http_status(e.fault())).unwrap_or(StatusCode::BAD_GATEWAY);
            tracing::info!(mac = %mac, error = %e, "check-sync not delivered");
            Ok((status, Json(serde_json::json!({ "error": e.to_string() }))).into_response())
        }
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct BindingQuery {
    /// Only the bindings of this address of record.
    #[serde(default)]
    aor: Option<String>,
}

/// Current registrations (from the registrar's memory), optionally of one AOR.
#[utoipa::path(
    get,
    path = "/bindings",
    summary = "Current registrations (query: aor)",
    params(BindingQuery),
    responses((status = 200, description = "success", body = Vec<BindingView>))
)]
async fn bindings(
    State(st): State<AdminState>,
    Query(q): Query<BindingQuery>,
) -> Result<Response, ApiError> {
    let ep = &st.sip;
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
#[utoipa::path(
    get,
    path = "/devices/{mac}/bindings",
    summary = "Registrations of one device (its provisioning identity and its DN)",
    params(MacPath),
    responses(
        (status = 200, description = "success", body = Vec<BindingView>),
        (status = 404, description = "no such device", body = ErrorBody),
    )
)]
async fn device_bindings(
    State(st): State<AdminState>,
    Path(mac): Path<String>,
) -> Result<Response, ApiError> {
    let device = st.dm.device(&mac).await?;
    let ep = &st.sip;
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

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct PreviewQuery {
    /// Render this vendor's template instead of the device's own.
    #[serde(default)]
    vendor: Option<String>,
}

/// The device's file as the phone would get it (records nothing); `?vendor=` previews another
/// vendor's template for the same device.
#[utoipa::path(
    get,
    path = "/devices/{mac}/file",
    summary = "The device's provisioning file as the phone would get it (query: vendor to preview another vendor's template); records nothing",
    params(MacPath, PreviewQuery),
    responses(
        (status = 200, description = "the file"),
        (status = 404, description = "no such device", body = ErrorBody),
    )
)]
async fn preview(
    State(st): State<AdminState>,
    Path(mac): Path<String>,
    Query(q): Query<PreviewQuery>,
) -> Result<Response, ApiError> {
    let who = crate::service::Requester {
        sip_port: Some(st.sip.local_addr().port()),
        ..Default::default()
    };
    let served = st.dm.preview(&mac, q.vendor.as_deref(), &who).await?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, served.content_type)],
        served.body,
    )
        .into_response())
}

/// The HTTP basic credentials a phone uses for its files when `http-auth = "basic"`.
#[utoipa::path(
    get,
    path = "/devices/{mac}/http-credentials",
    summary = "HTTP basic credentials of the phone's own provisioning files (used when http-auth = basic)",
    params(MacPath),
    responses(
        (status = 200, description = "success", body = HttpCredentials),
        (status = 422, description = "invalid MAC", body = ErrorBody),
    )
)]
async fn http_credentials(
    State(st): State<AdminState>,
    Path(mac): Path<String>,
) -> Result<Response, ApiError> {
    let mac = Dm::parse_mac(&mac)?;
    let password = st.dm.credentials.http_password(&mac);
    Ok(Json(HttpCredentials {
        user: mac,
        password,
    })
    .into_response())
}

/// HTTP basic credentials of a phone's own files.
#[derive(Serialize, ToSchema)]
struct HttpCredentials {
    /// The MAC, 12 lower-case hex digits.
    user: String,
    password: String,
}

/// Trunks with their health (OPTIONS probes): which carries the IVR calls now.
#[utoipa::path(
    get,
    path = "/trunks",
    summary = "Trunks and their health (in service, last OPTIONS probe)",
    responses((status = 200, description = "success", body = Vec<TrunkState>))
)]
async fn trunks(State(st): State<AdminState>) -> Result<Response, ApiError> {
    let states = st.trunks.states();
    Ok(Json(states).into_response())
}

/// A registration as the API shows it.
#[derive(Serialize, ToSchema)]
#[schema(as = Binding)]
struct BindingView {
    aor: String,
    contact: String,
    /// Seconds until it expires.
    expires_in: u64,
    /// The digest user that registered it (a device's own identity), if authenticated.
    device: Option<String>,
    user_agent: Option<String>,
    /// The connection requests to this contact go down, while it lives.
    flow: Option<String>,
}

fn binding_json(b: &std::sync::Arc<sip::registrar::Binding>) -> BindingView {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    BindingView {
        aor: b.aor.clone(),
        contact: b.contact.clone(),
        expires_in: b.remaining(now),
        device: b.device.clone(),
        user_agent: b.user_agent.clone(),
        flow: b.flow.map(|f| f.token()),
    }
}

#[utoipa::path(
    get,
    path = "/audit",
    summary = "Assignment audit log",
    params(("limit" = Option<i64>, Query, description = "At most this many (1..=10000, default 500)")),
    responses((status = 200, description = "success", body = Vec<AuditEntry>))
)]
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
#[utoipa::path(
    post,
    path = "/import",
    summary = "Import devices from CSV mac,model,profile,dn (all or nothing; 422 with a per-line report)",
    request_body(content = String, content_type = "text/csv"),
    responses(
        (status = 200, description = "success", body = ImportReport),
        (status = 422, description = "refused lines", body = ImportReport),
    )
)]
async fn import(State(st): State<AdminState>, csv: Bytes) -> Result<Response, ApiError> {
    let text =
        std::str::from_utf8(&csv).map_err(|_| ApiError::BadRequest("CSV is not UTF-8".into()))?;
    let report = st.dm.import_csv(text, "api").await?;
    Ok(import_response(report))
}

/// What a CSV import answers: how many rows it wrote, or why each refused line was refused.
#[derive(Serialize, ToSchema)]
pub(super) struct ImportReport {
    imported: usize,
    #[schema(inline)]
    errors: Vec<ImportLineError>,
}

#[derive(Serialize, ToSchema)]
struct ImportLineError {
    line: usize,
    error: String,
}

/// 200 with the count, or 422 with a line-numbered report of every refused line.
pub(super) fn import_response(report: crate::store::ImportReport) -> Response {
    let status = if report.errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let body = ImportReport {
        imported: report.imported,
        errors: report
            .errors
            .into_iter()
            .map(|(line, error)| ImportLineError { line, error })
            .collect(),
    };
    (status, Json(body)).into_response()
}
