//! One NOTIFY and its record: what check-sync reports, the credentials that answer a phone's
//! challenge, the vendor's event, and the audit entry. Every delivery route sends through here.

use sip::dialog::RequestBuilder;
use sip::rsip::Method;
use sip::uac::{self, Credentials};
use sip::{Endpoint, Target};

use crate::fault::{Fault, HasFault};
use crate::service::Dm;

/// Why a check-sync did not reach the phone.
#[derive(Debug, thiserror::Error)]
pub enum CheckSyncError {
    #[error("device {0} has no registration to notify")]
    NotRegistered(String),
    #[error("device: {0}")]
    Device(String),
    #[error("the phone answered {0}")]
    Refused(u16),
    #[error("no answer: {0}")]
    Unreachable(String),
    #[error("store: {0}")]
    Store(String),
    /// The instance holding the phone's flow took the check-sync and reported this failure.
    #[error("instance {holder}: {message}")]
    Holder {
        holder: String,
        fault: Fault,
        message: String,
    },
}

impl HasFault for CheckSyncError {
    fn fault(&self) -> Fault {
        match self {
            CheckSyncError::Store(_) => Fault::Unavailable,
            CheckSyncError::NotRegistered(_) => Fault::NotRegistered,
            CheckSyncError::Device(_) => Fault::NotFound,
            CheckSyncError::Refused(_) | CheckSyncError::Unreachable(_) => Fault::PeerRefused,
            CheckSyncError::Holder { fault, .. } => *fault,
        }
    }
}

/// How the NOTIFY left: down this instance's own flow, handed to the instance that holds the
/// flow ([`super::handover`]), straight to the stored contact because that holder is gone, or to
/// the switch the phone is registered on, for its AOR (`check-sync = "via-switch"`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Route {
    Local,
    Handover,
    Direct,
    ViaSwitch,
}

/// What was sent, for the audit log and the API.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct CheckSyncReport {
    pub mac: String,
    pub event: String,
    pub contact: String,
    pub status: u16,
    pub route: Route,
    /// The id of the instance that sent the NOTIFY.
    pub via: String,
}

/// Which credentials answer the phone's challenge: the per-device user of an unassigned
/// phone, or its DN's.
pub enum Identity {
    Device(String),
    Dn(String),
    /// A line's user and the password the phone's file gave it: a DN the phone just lost,
    /// whose stored password may have been rotated since.
    Line {
        user: String,
        password: String,
    },
}

/// Sends the NOTIFY, records it in the audit log and reports it.
#[allow(clippy::too_many_arguments)]
pub async fn send(
    dm: &Dm,
    ep: &Endpoint,
    device: &crate::store::model::Device,
    contact: &str,
    target: Target,
    identity: Identity,
    actor: &str,
    route: Route,
    me: &str,
) -> Result<CheckSyncReport, CheckSyncError> {
    let mac = device.mac.as_str();
    let event = event_for(dm, device).await;
    let (username, password) = credentials_of(dm, mac, identity).await;
    let status = notify(ep, contact, target, &event, &username, &password).await?;
    record(dm, device, &event, contact, status, actor, route, me).await
}

/// The user and password that answer a challenge for `identity`.
pub async fn credentials_of(dm: &Dm, mac: &str, identity: Identity) -> (String, String) {
    match identity {
        Identity::Device(user) => (user, dm.credentials.password(mac)),
        Identity::Line { user, password } => (user, password),
        Identity::Dn(dn) => {
            let password = dm
                .store
                .dn(&dn)
                .await
                .map(|d| d.password)
                .unwrap_or_default();
            (dn, password)
        }
    }
}

/// Records a NOTIFY the phone (or the switch for it) answered, in the audit log and the log,
/// and reports it.
#[allow(clippy::too_many_arguments)]
pub async fn record(
    dm: &Dm,
    device: &crate::store::model::Device,
    event: &str,
    contact: &str,
    status: u16,
    actor: &str,
    route: Route,
    me: &str,
) -> Result<CheckSyncReport, CheckSyncError> {
    let mac = device.mac.as_str();
    let report = CheckSyncReport {
        mac: mac.to_owned(),
        event: event.to_owned(),
        contact: contact.to_owned(),
        status,
        route,
        via: me.to_owned(),
    };
    if let Err(e) = dm
        .store
        .add_audit(
            mac,
            device.dn.as_deref(),
            "check-sync",
            actor,
            Some(&format!("{event} → {status}")),
        )
        .await
    {
        tracing::warn!(mac, error = %e, "check-sync sent but not recorded");
    }
    tracing::info!(mac, event = %event, contact, status, ?route, "check-sync");
    if (200..300).contains(&status) {
        Ok(report)
    } else {
        Err(CheckSyncError::Refused(status))
    }
}

/// The profile's override, else the vendor's re-fetch event.
pub async fn event_for(dm: &Dm, device: &crate::store::model::Device) -> String {
    if let Some(p) = &device.profile {
        if let Ok(p) = dm.store.profile(p).await {
            if let Some(e) = p.check_sync_event.filter(|e| !e.trim().is_empty()) {
                return e;
            }
        }
    }
    device
        .vendor
        .as_deref()
        .and_then(|v| dm.vendors.get(v))
        .map(|v| v.check_sync_event.clone())
        .unwrap_or_else(|| "check-sync".into())
}

/// One out-of-dialog NOTIFY, answering one challenge with the device's credentials.
pub async fn notify(
    ep: &Endpoint,
    contact: &str,
    target: Target,
    event: &str,
    username: &str,
    password: &str,
) -> Result<u16, CheckSyncError> {
    let me = format!("sip:sipdm@{}", ep.local_addr());
    let req = RequestBuilder::new(Method::Notify, contact)
        .from(&format!("<{me}>"))
        .contact(&me)
        .header("Event", event)
        .header("Subscription-State", "terminated")
        .header("User-Agent", "sipdm")
        .build()
        .map_err(|e| CheckSyncError::Unreachable(format!("building NOTIFY: {e}")))?;
    let resp = uac::request(ep, req, target, Some(Credentials::new(username, password)))
        .await
        .map_err(|e| CheckSyncError::Unreachable(e.to_string()))?;
    Ok(resp.status_code.code())
}
