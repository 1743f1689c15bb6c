//! DNs, profiles and sites.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use super::AdminState;
use crate::http::error::ApiError;
use crate::store::model::{Dn, Profile, Site};

pub fn routes() -> Router<AdminState> {
    Router::new()
        .route("/dns", get(list_dns).post(create_dn))
        .route("/dns/import", axum::routing::post(import_dns))
        .route(
            "/dns/{number}",
            get(read_dn).put(update_dn).delete(delete_dn),
        )
        .route("/profiles", get(list_profiles).post(create_profile))
        .route(
            "/profiles/{name}",
            get(read_profile).put(update_profile).delete(delete_profile),
        )
        .route("/sites", get(list_sites).post(create_site))
        .route(
            "/sites/{name}",
            get(read_site).put(update_site).delete(delete_site),
        )
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
            .map_err(|e| ApiError::Dm(crate::service::DmError::Invalid(e)))?;
        Ok(Dn {
            number: self.number,
            password: self.password,
            switch: self.switch,
            authenticate_requests,
            display_name: self.display_name,
        })
    }
}

async fn create_dn(
    State(st): State<AdminState>,
    j: Result<Json<DnBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let dn = body(j)?.into_dn(&st)?;
    let dn = st.dm.add_dn(dn).await.map_err(ApiError::from)?;
    Ok((StatusCode::CREATED, Json(dn)).into_response())
}

/// Body: CSV `number,password[,switch[,authenticate-requests]]`; all or nothing.
async fn import_dns(
    State(st): State<AdminState>,
    csv: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let text =
        std::str::from_utf8(&csv).map_err(|_| ApiError::BadRequest("CSV is not UTF-8".into()))?;
    let report = st.dm.import_dns_csv(text).await?;
    Ok(super::devices::import_response(report))
}

async fn read_dn(
    State(st): State<AdminState>,
    Path(n): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(st.dm.store.dn(&n).await?).into_response())
}

async fn update_dn(
    State(st): State<AdminState>,
    Path(n): Path<String>,
    j: Result<Json<DnBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let dn = body(j)?.into_dn(&st)?;
    same_key(&n, &dn.number)?;
    st.dm.store.update_dn(&dn).await?;
    st.dm.invalidate();
    Ok(Json(dn).into_response())
}

async fn delete_dn(
    State(st): State<AdminState>,
    Path(n): Path<String>,
) -> Result<Response, ApiError> {
    st.dm.store.delete_dn(&n).await?;
    st.dm.invalidate();
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_profiles(State(st): State<AdminState>) -> Result<Response, ApiError> {
    Ok(Json(st.dm.store.profiles().await?).into_response())
}

async fn create_profile(
    State(st): State<AdminState>,
    j: Result<Json<Profile>, JsonRejection>,
) -> Result<Response, ApiError> {
    let p = body(j)?;
    st.dm.store.create_profile(&p).await?;
    st.dm.invalidate();
    Ok((StatusCode::CREATED, Json(p)).into_response())
}

async fn read_profile(
    State(st): State<AdminState>,
    Path(n): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(st.dm.store.profile(&n).await?).into_response())
}

async fn update_profile(
    State(st): State<AdminState>,
    Path(n): Path<String>,
    j: Result<Json<Profile>, JsonRejection>,
) -> Result<Response, ApiError> {
    let p = body(j)?;
    same_key(&n, &p.name)?;
    st.dm.store.update_profile(&p).await?;
    st.dm.invalidate();
    Ok(Json(p).into_response())
}

async fn delete_profile(
    State(st): State<AdminState>,
    Path(n): Path<String>,
) -> Result<Response, ApiError> {
    st.dm.store.delete_profile(&n).await?;
    st.dm.invalidate();
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_sites(State(st): State<AdminState>) -> Result<Response, ApiError> {
    Ok(Json(st.dm.store.sites().await?).into_response())
}

async fn create_site(
    State(st): State<AdminState>,
    j: Result<Json<Site>, JsonRejection>,
) -> Result<Response, ApiError> {
    let s = body(j)?;
    if s.name.trim().is_empty() {
        return Err(ApiError::BadRequest("site name is empty".into()));
    }
    st.dm.store.create_site(&s).await?;
    st.dm.invalidate();
    Ok((StatusCode::CREATED, Json(s)).into_response())
}

async fn read_site(
    State(st): State<AdminState>,
    Path(n): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(st.dm.store.site(&n).await?).into_response())
}

async fn update_site(
    State(st): State<AdminState>,
    Path(n): Path<String>,
    j: Result<Json<Site>, JsonRejection>,
) -> Result<Response, ApiError> {
    let s = body(j)?;
    same_key(&n, &s.name)?;
    st.dm.store.update_site(&s).await?;
    st.dm.invalidate();
    Ok(Json(s).into_response())
}

async fn delete_site(
    State(st): State<AdminState>,
    Path(n): Path<String>,
) -> Result<Response, ApiError> {
    st.dm.store.delete_site(&n).await?;
    st.dm.invalidate();
    Ok(StatusCode::NO_CONTENT.into_response())
}
