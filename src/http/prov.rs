//! `GET /fs/dm/prov/{file}`: what phones fetch (the DHCP option 66/160 URL plus their file name).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::scan_guard::{ScanGuard, Verdict};
use crate::config::HttpAuth;
use crate::fault::{http_status, HasFault};
use crate::provisioning::filename::{parse_file_name, FileRequest};
use crate::service::{Dm, Requester};

pub const PREFIX: &str = "/fs/dm/prov/";

#[derive(Clone)]
pub struct ProvState {
    pub dm: Arc<Dm>,
    pub guard: Arc<ScanGuard>,
    /// Our SIP port as bound, for files that name no SIP server.
    pub sip_port: u16,
}

pub async fn serve_file(
    State(ProvState {
        dm,
        guard,
        sip_port,
    }): State<ProvState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    // The raw path, not axum's decoded capture: traversal is judged on what was sent.
    let mut raw = uri.path().strip_prefix(PREFIX).unwrap_or("");
    if let Some(key) = dm.config.prov_security.url_key.as_deref() {
        // Without the key the files do not exist, as far as the requester can tell.
        match raw.strip_prefix(key).and_then(|r| r.strip_prefix('/')) {
            Some(rest) if !key.is_empty() => raw = rest,
            _ => {
                guard.check(peer.ip(), raw, |_| None);
                return refuse(StatusCode::NOT_FOUND, &peer, "(no URL key)", "no such file");
            }
        }
    }
    let file = match percent_encoding::percent_decode_str(raw).decode_utf8() {
        Ok(f) => f.into_owned(),
        Err(_) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                &peer,
                raw,
                "file name is not UTF-8",
            )
        }
    };
    let verdict = guard.check(peer.ip(), &file, |f| {
        match parse_file_name(f, &dm.vendors) {
            Ok(FileRequest::PerPhone { mac, .. }) => Some(mac),
            _ => None,
        }
    });
    let verdict = match verdict {
        // Asked before provisioning, which records an unknown phone as a device.
        Verdict::LookUp(mac) => match dm.store.find_device(&mac.to_string()).await {
            Ok(Some(_)) => Verdict::Serve,
            Ok(None) => guard.unknown_mac(peer.ip(), mac),
            // Not counted: the provisioning below meets the same store and answers for it.
            Err(e) => {
                tracing::debug!(mac = %mac, error = %e, "scan guard: device look-up failed");
                Verdict::Serve
            }
        },
        v => v,
    };
    match verdict {
        Verdict::Serve | Verdict::LookUp(_) => {}
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
    if dm.config.prov_security.http_auth == HttpAuth::Basic {
        if let Err(res) = check_basic(&dm, &guard, &peer, &headers, &file) {
            return *res;
        }
    }
    // The authority the phone used; a Host that is not a plain host[:port] is not written
    // into anybody's file.
    let authority = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| is_authority(h));
    let who = Requester {
        ip: peer.ip().to_string(),
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(String::from),
        host: authority.map(host_without_port).filter(|h| !h.is_empty()),
        base_url: authority.map(|a| format!("{}://{a}", dm.config.server.http_scheme())),
        sip_port: Some(sip_port),
    };
    match dm.provision(&file, &who).await {
        Ok(served) => {
            served_counter().increment(1);
            let etag = HeaderValue::from_str(&served.etag)
                .unwrap_or_else(|_| HeaderValue::from_static("\"0\""));
            let fresh = headers
                .get(header::IF_NONE_MATCH)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| {
                    v.split(',').any(|t| {
                        t.trim().trim_start_matches("W/") == served.etag || t.trim() == "*"
                    })
                });
            let mut res = if fresh {
                StatusCode::NOT_MODIFIED.into_response()
            } else {
                let ct = HeaderValue::from_str(&served.content_type)
                    .unwrap_or(HeaderValue::from_static("text/plain"));
                ([(header::CONTENT_TYPE, ct)], served.body).into_response()
            };
            res.headers_mut().insert(header::ETAG, etag);
            res.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            res
        }
        Err(e) => {
            let status = StatusCode::from_u16(http_status(e.fault()))
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            if status.is_client_error() {
                refuse(status, &peer, &file, &e.to_string())
            } else if status == StatusCode::SERVICE_UNAVAILABLE {
                // No database for this phone (an unknown phone while degraded, or a failover
                // under way): a phone waits Retry-After before asking again, and the jitter
                // keeps a fleet that was refused together from returning together.
                tracing::warn!(file = %file, peer = %peer, error = %e, "provisioning: store unavailable; told to retry");
                metrics::counter!("sipdm_prov_requests_total", "status" => "503").increment(1);
                let mut res = (status, "service unavailable: try again later\n").into_response();
                let wait = rand::Rng::gen_range(&mut rand::thread_rng(), UNAVAILABLE_RETRY_AFTER);
                res.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(wait));
                res
            } else {
                tracing::error!(file = %file, peer = %peer, error = %e, "provisioning failed");
                metrics::counter!("sipdm_prov_requests_total", "status" => status.as_str().to_owned()).increment(1);
                (status, "internal error\n").into_response()
            }
        }
    }
}

/// HTTP basic credentials on a phone's own files (common files carry no secrets). The user is
/// the file's MAC, the password the one derived for it.
fn check_basic(
    dm: &Dm,
    guard: &ScanGuard,
    peer: &SocketAddr,
    headers: &HeaderMap,
    file: &str,
) -> Result<(), Box<Response>> {
    let Ok(FileRequest::PerPhone { mac, .. }) = parse_file_name(file, &dm.vendors) else {
        return Ok(()); // common files, or names the provisioning answer refuses anyway
    };
    // Refused this phone's files from this source after repeated wrong credentials; its
    // neighbours behind the same address are not.
    if let Some(retry_after) = guard.auth_locked(peer.ip(), &mac.to_string()) {
        metrics::counter!("sipdm_prov_requests_total", "status" => "429").increment(1);
        let mut res = (StatusCode::TOO_MANY_REQUESTS, "locked out\n").into_response();
        if let Ok(v) = HeaderValue::from_str(&retry_after.as_secs().max(1).to_string()) {
            res.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return Err(Box::new(res));
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Basic ")
                .or_else(|| v.strip_prefix("basic "))
        })
        .and_then(|b| {
            base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b.trim()).ok()
        })
        .and_then(|b| String::from_utf8(b).ok());
    let ok = given
        .as_deref()
        .and_then(|g| g.split_once(':'))
        .is_some_and(|(user, password)| {
            crate::provisioning::mac::Mac::parse(user).is_ok_and(|u| u == mac)
                && crate::admin::constant_time_eq(
                    password.as_bytes(),
                    dm.credentials.http_password(&mac.to_string()).as_bytes(),
                )
        });
    if ok {
        return Ok(());
    }
    if given.is_some() {
        guard.auth_failed(peer.ip(), &mac.to_string());
        tracing::info!(peer = %peer, mac = %mac, "provisioning: wrong credentials");
    }
    metrics::counter!("sipdm_prov_requests_total", "status" => "401").increment(1);
    let mut res = (StatusCode::UNAUTHORIZED, "credentials required\n").into_response();
    res.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"sipdm provisioning\""),
    );
    Err(Box::new(res))
}

/// Seconds a phone refused with 503 is told to wait: about what a database failover takes.
const UNAVAILABLE_RETRY_AFTER: std::ops::RangeInclusive<u32> = 3..=8;

fn refuse(status: StatusCode, peer: &SocketAddr, file: &str, why: &str) -> Response {
    tracing::info!(status = status.as_u16(), peer = %peer, file = %file.escape_debug(), why, "provisioning request refused");
    metrics::counter!("sipdm_prov_requests_total", "status" => status.as_str().to_owned())
        .increment(1);
    (status, format!("{why}\n")).into_response()
}

/// The 200 counter, resolved once: the `counter!` macro looks its key up on every call, which
/// shows on the hot path.
fn served_counter() -> &'static metrics::Counter {
    static C: std::sync::OnceLock<metrics::Counter> = std::sync::OnceLock::new();
    C.get_or_init(|| metrics::counter!("sipdm_prov_requests_total", "status" => "200"))
}

/// `host`, `host:port` or `[v6]:port`, nothing else (no user info, path, spaces or quotes).
fn is_authority(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 255
        && h.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':' | b'[' | b']')
        })
}

fn host_without_port(h: &str) -> String {
    if let Some(rest) = h.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("").to_owned();
    }
    h.rsplit_once(':').map(|(a, _)| a).unwrap_or(h).to_owned()
}

#[cfg(test)]
mod tests {
    use super::{host_without_port, is_authority};

    #[test]
    fn authorities() {
        assert!(is_authority("10.1.2.3:8081"));
        assert!(is_authority("fs1"));
        assert!(is_authority("[::1]:8080"));
        assert!(!is_authority(""));
        assert!(!is_authority("evil\"/><x"));
        assert!(!is_authority("a b"));
        assert!(!is_authority("user@host"));
        assert_eq!(host_without_port("10.1.2.3:8081"), "10.1.2.3");
        assert_eq!(host_without_port("[::1]:8080"), "::1");
    }
}
