//! DNs, profiles and sites.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::devices::ImportReport;
use super::error::{ApiError, ErrorBody};
use super::AdminState;
use crate::store::model::{Dn, Profile, Site};

/// Each `routes!` names the handlers of one path; their `#[utoipa::path]` gives the methods.
pub fn routes() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new()
        .routes(routes!(list_dns, create_dn))
        .routes(routes!(import_dns))
        .routes(routes!(read_dn, update_dn, delete_dn))
        .routes(routes!(list_profiles, create_profile))
        .routes(routes!(read_profile, update_profile, delete_profile))
        .routes(routes!(list_sites, create_site))
        .routes(routes!(read_site, update_site, delete_site))
}

/// The DN a path names.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // describes the path; handlers take `Path<String>`
struct NumberPath {
    number: String,
}

/// The profile or site a path names.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // describes the path; handlers take `Path<String>`
struct NamePath {
    name: String,
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

/// The path names the resource; a body naming another is a client mistake.
fn same_key(path: &str, body: &str) -> Result<(), ApiError> {
    if path == body {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "path names `{path}` but body names `{body}`"
        )))
    }
}

#[utoipa::path(
    get,
    path = "/dns",
    summary = "List DNs",
    responses((status = 200, description = "success", body = Vec<Dn>))
)]
async fn list_dns(State(st): State<AdminState>) -> Result<Response, ApiError> {
    Ok(Json(st.dm.store.dns().await?).into_response())
}

/// A DN as a client writes it: `authenticate_requests` may be left out, and then the DN gets
/// `[auth] authenticate-requests` (a `Dn` would default to a built-in value instead).
#[derive(serde::Deserialize)]
struct DnBody {
    number: String,
    password: String,
    #[serde(default)]
    switch: Option<String>,
    #[serde(default)]
    authenticate_requests: Option<String>,
    #[serde(default)]
    display_name: Option<String>,
}

impl DnBody {
    /// The DN to write: its policy checked and normalised, or the configured default.
    fn into_dn(self, st: &AdminState) -> Result<Dn, ApiError> {
        let authenticate_requests = st
            .dm
            .config
            .auth
            .for_new_dn(self.authenticate_requests.as_deref())
            .map_err(|e| ApiError::Dm(crate::service::DmError::Invalid(e.to_string())))?;
        Ok(Dn {
            number: self.number,
            password: self.password,
            switch: self.switch,
            authenticate_requests: authenticate_requests.to_string(),
            display_name: self.display_name,
        })
    }
}

#[utoipa::path(
    post,
    path = "/dns",
    summary = "Create a DN",
    request_body = Dn,
    responses(
        (status = 201, description = "success", body = Dn),
        (status = 409, description = "the DN exists", body = ErrorBody),
        (status = 422, description = "invalid DN", body = ErrorBody),
    )
)]
async fn create_dn(
    State(st): State<AdminState>,
    j: Result<Json<DnBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let dn = body(j)?.into_dn(&st)?;
    let dn = st.dm.add_dn(dn).await.map_err(ApiError::from)?;
    Ok((StatusCode::CREATED, Json(dn)).into_response())
}

/// Body: CSV `number,password[,switch[,authenticate-requests]]`; all or nothing.
#[utoipa::path(
    post,
    path = "/dns/import",
    summary = "Import DNs from CSV number,password[,switch[,authenticate-requests]] (all or nothing; 422 with a per-line report)",
    request_body(content = String, content_type = "text/csv"),
    responses(
        (status = 200, description = "success", body = ImportReport),
        (status = 422, description = "refused lines", body = ImportReport),
    )
)]
async fn import_dns(
    State(st): State<AdminState>,
    csv: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let text =
        std::str::from_utf8(&csv).map_err(|_| ApiError::BadRequest("CSV is not UTF-8".into()))?;
    let report = st.dm.import_dns_csv(text).await?;
    Ok(super::devices::import_response(report))
}

#[utoipa::path(
    get,
    path = "/dns/{number}",
    summary = "Read a DN",
    params(NumberPath),
    responses(
        (status = 200, description = "success", body = Dn),
        (status = 404, description = "no such DN", body = ErrorBody),
    )
)]
async fn read_dn(
    State(st): State<AdminState>,
    Path(n): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(st.dm.store.dn(&n).await?).into_response())
}

#[utoipa::path(
    put,
    path = "/dns/{number}",
    summary = "Replace a DN",
    params(NumberPath),
    request_body = Dn,
    responses(
        (status = 200, description = "success", body = Dn),
        (status = 400, description = "the body names another DN", body = ErrorBody),
        (status = 404, description = "no such DN", body = ErrorBody),
        (status = 422, description = "invalid DN", body = ErrorBody),
    )
)]
async fn update_dn(
    State(st): State<AdminState>,
    Path(n): Path<String>,
    j: Result<Json<DnBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let dn = body(j)?.into_dn(&st)?;
    same_key(&n, &dn.number)?;
    st.dm.update_dn(&dn).await?;
    Ok(Json(dn).into_response())
}

#[utoipa::path(
    delete,
    path = "/dns/{number}",
    summary = "Delete a DN",
    params(NumberPath),
    responses(
        (status = 204, description = "success"),
        (status = 404, description = "no such DN", body = ErrorBody),
    )
)]
async fn delete_dn(
    State(st): State<AdminState>,
    Path(n): Path<String>,
) -> Result<Response, ApiError> {
    st.dm.delete_dn(&n).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[utoipa::path(
    get,
    path = "/profiles",
    summary = "List profiles",
    responses((status = 200, description = "success", body = Vec<Profile>))
)]
async fn list_profiles(State(st): State<AdminState>) -> Result<Response, ApiError> {
    Ok(Json(st.dm.store.profiles().await?).into_response())
}

#[utoipa::path(
    post,
    path = "/profiles",
    summary = "Create a profile",
    request_body = Profile,
    responses(
        (status = 201, description = "success", body = Profile),
        (status = 409, description = "the profile exists", body = ErrorBody),
        (status = 422, description = "invalid profile", body = ErrorBody),
    )
)]
async fn create_profile(
    State(st): State<AdminState>,
    j: Result<Json<Profile>, JsonRejection>,
) -> Result<Response, ApiError> {
    let p = body(j)?;
    st.dm.add_profile(&p).await?;
    Ok((StatusCode::CREATED, Json(p)).into_response())
}

#[utoipa::path(
    get,
    path = "/profiles/{name}",
    summary = "Read a profile",
    params(NamePath),
    responses(
        (status = 200, description = "success", body = Profile),
        (status = 404, description = "no such profile", body = ErrorBody),
    )
)]
async fn read_profile(
    State(st): State<AdminState>,
    Path(n): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(st.dm.store.profile(&n).await?).into_response())
}

#[utoipa::path(
    put,
    path = "/profiles/{name}",
    summary = "Replace a profile",
    params(NamePath),
    request_body = Profile,
    responses(
        (status = 200, description = "success", body = Profile),
        (status = 400, description = "the body names another profile", body = ErrorBody),
        (status = 404, description = "no such profile", body = ErrorBody),
        (status = 422, description = "invalid profile", body = ErrorBody),
    )
)]
async fn update_profile(
    State(st): State<AdminState>,
    Path(n): Path<String>,
    j: Result<Json<Profile>, JsonRejection>,
) -> Result<Response, ApiError> {
    let p = body(j)?;
    same_key(&n, &p.name)?;
    st.dm.update_profile(&p).await?;
    Ok(Json(p).into_response())
}

#[utoipa::path(
    delete,
    path = "/profiles/{name}",
    summary = "Delete a profile",
    params(NamePath),
    responses(
        (status = 204, description = "success"),
        (status = 404, description = "no such profile", body = ErrorBody),
    )
)]
async fn delete_profile(
    State(st): State<AdminState>,
    Path(n): Path<String>,
) -> Result<Response, ApiError> {
    st.dm.delete_profile(&n).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[utoipa::path(
    get,
    path = "/sites",
    summary = "List sites",
    responses((status = 200, description = "success", body = Vec<Site>))
)]
async fn list_sites(State(st): State<AdminState>) -> Result<Response, ApiError> {
    Ok(Json(st.dm.store.sites().await?).into_response())
}

#[utoipa::path(
    post,
    path = "/sites",
    summary = "Create a site",
    request_body = Site,
    responses(
        (status = 201, description = "success", body = Site),
        (status = 400, description = "empty site name", body = ErrorBody),
        (status = 409, description = "the site exists", body = ErrorBody),
        (status = 422, description = "invalid site", body = ErrorBody),
    )
)]
async fn create_site(
    State(st): State<AdminState>,
    j: Result<Json<Site>, JsonRejection>,
) -> Result<Response, ApiError> {
    let s = body(j)?;
    if s.name.trim().is_empty() {
        return Err(ApiError::BadRequest("site name is empty".into()));
    }
    st.dm.add_site(&s).await?;
    Ok((StatusCode::CREATED, Json(s)).into_response())
}

#[utoipa::path(
    get,
    path = "/sites/{name}",
    summary = "Read a site",
    params(NamePath),
    responses(
        (status = 200, description = "success", body = Site),
        (status = 404, description = "no such site", body = ErrorBody),
    )
)]
async fn read_site(
    State(st): State<AdminState>,
    Path(n): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(st.dm.store.site(&n).await?).into_response())
}

#[utoipa::path(
    put,
    path = "/sites/{name}",
    summary = "Replace a site",
    params(NamePath),
    request_body = Site,
    responses(
        (status = 200, description = "success", body = Site),
        (status = 400, description = "the body names another site", body = ErrorBody),
        (status = 404, description = "no such site", body = ErrorBody),
        (status = 422, description = "invalid site", body = ErrorBody),
    )
)]
async fn update_site(
    State(st): State<AdminState>,
    Path(n): Path<String>,
    j: Result<Json<Site>, JsonRejection>,
) -> Result<Response, ApiError> {
    let s = body(j)?;
    same_key(&n, &s.name)?;
    st.dm.update_site(&s).await?;
    Ok(Json(s).into_response())
}

#[utoipa::path(
    delete,
    path = "/sites/{name}",
    summary = "Delete a site",
    params(NamePath),
    responses(
        (status = 204, description = "success"),
        (status = 404, description = "no such site", body = ErrorBody),
    )
)]
async fn delete_site(
    State(st): State<AdminState>,
    Path(n): Path<String>,
) -> Result<Response, ApiError> {
    st.dm.delete_site(&n).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
