//! `GET /fs/dm/prov/{file}`: what phones fetch (the DHCP option 66/160 URL plus their file name).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::scan_guard::{ScanGuard, Verdict};
use crate::service::{Dm, DmError, Requester};

pub const PREFIX: &str = "/fs/dm/prov/";

#[derive(Clone)]
pub struct ProvState {
    pub dm: Arc<Dm>,
    pub guard: Arc<ScanGuard>,
}

pub async fn serve_file(
    State(ProvState { dm, guard }): State<ProvState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    // The raw path, not axum's decoded capture: traversal is judged on what was sent.
    let raw = uri.path().strip_prefix(PREFIX).unwrap_or("");
    let file = match percent_encoding::percent_decode_str(raw).decode_utf8() {
        Ok(f) => f.into_owned(),
        Err(_) => return refuse(StatusCode::BAD_REQUEST, &peer, raw, "file name is not UTF-8"),
    };
    match guard.check(peer.ip(), &file) {
        Verdict::Serve => {}
        Verdict::Forbidden => {
            metrics::counter!("sipdm_prov_requests_total", "status" => "403").increment(1);
            return (StatusCode::FORBIDDEN, "forbidden\n").into_response();
        }
        Verdict::Locked { retry_after } => {
            // Not logged per request: the lockout itself was logged once.
            metrics::counter!("sipdm_prov_requests_total", "status" => "429").increment(1);
            let mut res = (StatusCode::TOO_MANY_REQUESTS, "locked out\n").into_response();
            if let Ok(v) = HeaderValue::from_str(&retry_after.as_secs().max(1).to_string()) {
                res.headers_mut().insert(header::RETRY_AFTER, v);
            }
            return res;
        }
    }
    let who = Requester {
        ip: peer.ip().to_string(),
        user_agent: headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).map(String::from),
        host: headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(host_without_port)
            .filter(|h| !h.is_empty()),
    };
    match dm.provision(&file, &who).await {
        Ok(served) => {
            served_counter().increment(1);
            let etag = HeaderValue::from_str(&served.etag).unwrap_or_else(|_| HeaderValue::from_static("\"0\""));
            let fresh = headers
                .get(header::IF_NONE_MATCH)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.split(',').any(|t| t.trim().trim_start_matches("W/") == served.etag || t.trim() == "*"));
            let mut res = if fresh {
                StatusCode::NOT_MODIFIED.into_response()
            } else {
                let ct = HeaderValue::from_str(&served.content_type).unwrap_or(HeaderValue::from_static("text/plain"));
                ([(header::CONTENT_TYPE, ct)], served.body).into_response()
            };
            res.headers_mut().insert(header::ETAG, etag);
            res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            res
        }
        Err(e) => {
            let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            if matches!(e, DmError::UnknownFile | DmError::Traversal) {
                refuse(status, &peer, &file, &e.to_string())
            } else {
                tracing::error!(file = %file, peer = %peer, error = %e, "provisioning failed");
                metrics::counter!("sipdm_prov_requests_total", "status" => status.as_str().to_owned()).increment(1);
                (status, "internal error\n").into_response()
            }
        }
    }
}

fn refuse(status: StatusCode, peer: &SocketAddr, file: &str, why: &str) -> Response {
    tracing::info!(status = status.as_u16(), peer = %peer, file = %file.escape_debug(), why, "provisioning request refused");
    metrics::counter!("sipdm_prov_requests_total", "status" => status.as_str().to_owned()).increment(1);
    (status, format!("{why}\n")).into_response()
}

/// The 200 counter, resolved once: the `counter!` macro looks its key up on every call, which
/// shows on the hot path.
fn served_counter() -> &'static metrics::Counter {
    static C: std::sync::OnceLock<metrics::Counter> = std::sync::OnceLock::new();
    C.get_or_init(|| metrics::counter!("sipdm_prov_requests_total", "status" => "200"))
}

fn host_without_port(h: &str) -> String {
    if let Some(rest) = h.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("").to_owned();
    }
    h.rsplit_once(':').map(|(a, _)| a).unwrap_or(h).to_owned()
}
