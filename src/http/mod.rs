//! The HTTP edge: provisioning, the admin API, health and metrics on one listener.

pub mod listen;
pub mod prov;
pub mod scan_guard;
pub mod tls;

use std::sync::{Arc, OnceLock};

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::admin::{self, AdminState};
use crate::service::Dm;
use crate::sipside::assignment::IvrAssigner;

/// Everything the routes use, built before HTTP starts (SIP is already up).
pub struct Edge {
    pub dm: Arc<Dm>,
    pub admin: AdminState,
    /// The VoiceXML flow's assigner (it sends check-sync after the read-back).
    pub vxml_assigner: Arc<IvrAssigner>,
    /// The dialogue's settings the VoiceXML pages share with the built-in IVR.
    pub ivr: crate::ivr::IvrSettings,
}

pub fn router(edge: Edge) -> Router {
    let Edge {
        dm,
        admin,
        vxml_assigner: assigner,
        ivr,
    } = edge;
    let sip = admin.sip.clone();
    let allowed: Arc<[ipnet::IpNet]> = dm.config.ivr.vxml_allowed_networks.clone().into();
    let vxml = crate::ivr::vxml::routes_for_apps(
        assigner,
        ivr,
        dm.config.ivr.initial_page_url.clone(),
        dm.config.ivr.alternatevoicexml.clone(),
    )
    .layer(axum::middleware::from_fn_with_state(
        allowed,
        media_servers_only,
    ));
    let prov = Router::new()
        .route("/fs/dm/prov/{*file}", get(prov::serve_file))
        .with_state(prov::ProvState {
            dm: dm.clone(),
            guard: Arc::new(scan_guard::ScanGuard::new(dm.config.prov_security.clone())),
            sip_port: sip.local_addr().port(),
        });
    // Request tracing on the admin side only: the provisioning route logs its own refusals,
    // and a span per phone fetch is measurable at fleet scale.
    let admin = admin::router(admin).layer(tower_http::trace::TraceLayer::new_for_http());
    Router::new()
        .merge(prov)
        .merge(vxml)
        .nest(admin::BASE, admin)
        .route("/healthz", get(healthz).with_state(dm))
        .route("/metrics", get(metrics_text).with_state(sip))
        .route("/fs/dm/ui", get(console))
        .route("/fs/dm/ui/", get(console))
}

/// The VoiceXML pages assign DNs to the device a post names: only media servers may post.
async fn media_servers_only(
    axum::extract::State(allowed): axum::extract::State<Arc<[ipnet::IpNet]>>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let ip = match peer.ip() {
        std::net::IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(std::net::IpAddr::V4)
            .unwrap_or(std::net::IpAddr::V6(v6)),
        v4 => v4,
    };
    if allowed.iter().any(|n| n.contains(&ip)) {
        next.run(req).await
    } else {
        tracing::warn!(peer = %peer, "VoiceXML request from outside the media-server networks refused");
        (axum::http::StatusCode::FORBIDDEN, "forbidden\n").into_response()
    }
}

/// Healthy means the store answers and takes writes. A node whose database is a read-only
/// standby (no writable primary: a failover under way, the primary's site cut off) still serves
/// known phones and takes REGISTERs, so it answers 200 and says `degraded`: a load balancer
/// keeps it. With no database at all it answers 503, so one that has a database is preferred.
async fn healthz(axum::extract::State(dm): axum::extract::State<Arc<Dm>>) -> impl IntoResponse {
    use crate::store::Access;
    let status = axum::http::StatusCode::SERVICE_UNAVAILABLE;
    match dm.store.version().await {
        Ok(_) => match dm.store.access() {
            Access::Writable => (axum::http::StatusCode::OK, "ok\n".to_owned()),
            _ => (
                axum::http::StatusCode::OK,
                format!(
                    "degraded: no writable database; reading from standby {}\n",
                    dm.store.host()
                ),
            ),
        },
        Err(e) => {
            tracing::warn!(error = %e, "health check: store unreachable");
            (
                status,
                "degraded: store unreachable; serving cached files and registrations from memory\n"
                    .to_owned(),
            )
        }
    }
}

/// The operator console: one static page that talks to the admin API with the token typed in.
async fn console() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("../admin/ui/index.html"),
    )
}

async fn metrics_text(
    axum::extract::State(ep): axum::extract::State<sip::Endpoint>,
) -> impl IntoResponse {
    // The SIP stack counts in plain atomics; copy them into the exporter when scraped.
    let s = ep.stats().snapshot();
    for (name, v) in [
        ("sipdm_sip_received_total", s.received),
        ("sipdm_sip_malformed_answered_total", s.malformed_answered),
        ("sipdm_sip_malformed_dropped_total", s.malformed_dropped),
        ("sipdm_sip_dropped_overload_total", s.dropped_overload),
        ("sipdm_sip_overload_rejected_total", s.overload_rejected),
        ("sipdm_sip_udp_kernel_drops_total", s.udp_kernel_drops),
        (
            "sipdm_sip_retransmissions_absorbed_total",
            s.retransmissions_absorbed,
        ),
        ("sipdm_sip_stray_responses_total", s.stray_responses),
        ("sipdm_sip_responses_sent_total", s.responses_sent),
        ("sipdm_sip_send_errors_total", s.send_errors),
        ("sipdm_sip_registrations_ok_total", s.registrations_ok),
        ("sipdm_sip_challenges_total", s.challenges),
        (
            "sipdm_sip_tls_handshake_failed_total",
            s.tls_handshake_failed,
        ),
    ] {
        metrics::counter!(name).absolute(v);
    }
    metrics::gauge!("sipdm_sip_bindings").set(ep.registrar().binding_count() as f64);
    metrics::gauge!("sipdm_sip_requests_in_progress").set(ep.requests_in_progress() as f64);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        prometheus().render(),
    )
}

/// One process-wide recorder: metrics are global in the `metrics` facade, and tests start
/// several servers in one process.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}
