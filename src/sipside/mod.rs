//! The server's side of the SIP stack: what `sip/` asks for through its traits, answered from
//! the store and the service layer.
//!
//! - [`bindings`]: the registrar's durable store (`sip::registrar::BindingStore`) in SQL;
//! - [`authenticator`]: the digest `Authenticator` (DN passwords, per-device credentials of
//!   `gcti_provisioning` phones) with the per-DN `authenticate-requests` policy;
//! - [`assignment`]: the rules of an IVR assignment (built-in or VoiceXML) and the check-sync
//!   that follows it;
//! - [`calls`]: INVITE routing by trunk prefix and the built-in IVR's dialogs;
//! - [`trunks`]: the trunk table, longest-prefix routing and OPTIONS health checks;
//! - [`device_scope`]: an unassigned phone's credentials call the IVR and nothing else;
//! - [`b2bua`]: calls to external trunks, bridged dialog to dialog;
//! - [`local_addr`]: this end's address for SDP, Contact and Via (shared by calls and b2bua);
//! - [`checksync`]: the NOTIFY that makes a phone re-fetch its file, by whichever route reaches
//!   it (own binding, another instance's, the switch's);
//! - [`deprovision`]: after a DN left a device, its bindings go and the device re-fetches;
//! - [`identity`]: the caller's device as a trusted switch asserts it;
//! - [`start`]: builds the endpoint from the configuration (UDP and TCP on `[server] sip`, TLS
//!   on `[sip] tls-listen`).

pub mod assignment;
pub mod authenticator;
pub mod b2bua;
pub mod bindings;
pub mod calls;
pub mod checksync;
pub mod deprovision;
pub mod device_scope;
pub mod identity;
pub mod local_addr;
pub mod trunks;

use std::sync::Arc;
use std::time::Duration;

use sip::{Endpoint, EndpointConfig, RequestHandler, StartError};

use crate::config::Config;
use crate::service::Dm;

/// Why SIP could not start.
#[derive(Debug, thiserror::Error)]
pub enum SipStartError {
    #[error("SIP over TLS certificate: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error(transparent)]
    Start(#[from] StartError),
}

/// Starts SIP on the configured addresses with the store and credentials of `dm`. With `[sip]
/// tls-listen`, its certificate is loaded first: one that cannot be read or used stops the
/// start with the file named.
pub async fn start(
    config: &Config,
    dm: Arc<Dm>,
    instance_id: &str,
    handlers: Vec<Arc<dyn RequestHandler>>,
) -> Result<Endpoint, SipStartError> {
    let mut cfg = EndpointConfig::default();
    cfg.transport.listen = config.server.sip.clone();
    cfg.transport.udp_threads = config.sip.udp_threads;
    let [retry_lo, retry_hi] = config.sip.overload_retry_after;
    cfg.overload = sip::overload::OverloadConfig {
        max_in_progress: config.sip.max_requests_in_progress,
        max_queue_delay: Duration::from_millis(config.sip.max_queue_delay_ms),
        retry_after: retry_lo..=retry_hi,
    };
    if !config.sip.tls_listen.is_empty() {
        // Config::validate guarantees a certificate pair when tls-listen is set.
        if let Some((cert, key)) = config.sip_tls_files() {
            let server = crate::tls::server_config(cert, key)?;
            cfg.transport.tls = Some(sip::transport::TlsConfig::new(
                config.sip.tls_listen.clone(),
                Arc::new(server),
            ));
        }
    }
    cfg.timers.t1 = Duration::from_millis(config.sip.t1_ms);
    cfg.timers.t2 = Duration::from_millis(config.sip.t2_ms);
    cfg.timers.t4 = Duration::from_millis(config.sip.t4_ms);
    cfg.registrar.min_expires = config.sip.min_expires;
    cfg.registrar.max_expires = config.sip.max_expires;
    cfg.registrar.default_expires = config
        .sip
        .default_expires
        .clamp(config.sip.min_expires, config.sip.max_expires);
    // Every unassigned phone binds under the one provisioning AOR.
    cfg.registrar.shared_aors = vec![crate::credentials::PROVISIONING_USER.to_owned()];
    cfg.auth.realm = config.server.realm.clone();
    cfg.auth.algorithms = config
        .sip
        .digest_algorithms
        .iter()
        .filter_map(|a| sip::auth::Algorithm::parse(a))
        .collect();
    // Instances of a deployment share the server secret, so they accept each other's nonces.
    cfg.auth.secret = dm.credentials.derive_key("sip-nonce");
    cfg.auth.throttle.max_failures = config.sip.auth_failures_per_minute;
    cfg.auth.throttle.max_failures_per_source = config.sip.auth_failures_per_source_per_minute;
    // All phones behind a switch or SBC share its address: never lock it out as a whole.
    cfg.auth.throttle.trusted = config.sip.trusted_peers.clone();
    cfg.advertised_host = config.sip.advertised_host.clone();
    // Each binding row names this instance, so that the others can hand it check-syncs.
    let store = Arc::new(bindings::SqlBindings::new(
        dm.store.clone(),
        instance_id.to_owned(),
    ));
    let auth = Arc::new(authenticator::DmAuthenticator::new(dm));
    let warming = auth.clone();
    tokio::spawn(async move {
        match warming.warm().await {
            Ok(n) => tracing::debug!(dns = n, "DN credentials loaded"),
            Err(e) => {
                tracing::warn!(error = %e, "DN credentials not preloaded; looked up per user")
            }
        }
    });
    Ok(Endpoint::start(cfg, store, auth, handlers).await?)
}
