//! NOTIFY check-sync: tell a phone to re-fetch its file.
//!
//! The NOTIFY goes to the exact contact of the device's own binding — never to the AOR, since
//! every unassigned phone shares `gcti_provisioning` — down the flow it registered on, in a
//! client transaction (so it is retransmitted over UDP), with the vendor's Event. Phones that
//! challenge NOTIFYs (Cisco, snom with `challenge_checksync`) get the device's credentials.

use std::sync::Arc;

use sip::auth::DigestChallenge;
use sip::headers::MessageExt;
use sip::registrar::Binding;
use sip::{Endpoint, Target};

use crate::assignment::CheckSync;
use crate::credentials::PROVISIONING_USER;
use crate::service::Dm;
use crate::BoxFuture;

/// Why a check-sync did not reach the phone.
#[derive(Debug, thiserror::Error)]
pub enum CheckSyncError {
    #[error("SIP is not running")]
    NoSip,
    #[error("device {0} has no registration to notify")]
    NotRegistered(String),
    #[error("device: {0}")]
    Device(String),
    #[error("the phone answered {0}")]
    Refused(u16),
    #[error("no answer: {0}")]
    Unreachable(String),
}

impl CheckSyncError {
    pub fn status(&self) -> u16 {
        match self {
            CheckSyncError::NoSip => 503,
            CheckSyncError::NotRegistered(_) => 409,
            CheckSyncError::Device(_) => 404,
            CheckSyncError::Refused(_) | CheckSyncError::Unreachable(_) => 502,
        }
    }
}

/// What was sent, for the audit log and the API.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckSyncReport {
    pub mac: String,
    pub event: String,
    pub contact: String,
    pub status: u16,
}

/// Sends check-sync to the device `mac` (normalised) and records it in the audit log.
pub async fn check_sync(dm: &Dm, mac: &str, actor: &str) -> Result<CheckSyncReport, CheckSyncError> {
    let ep = dm.sip.get().ok_or(CheckSyncError::NoSip)?;
    let device = dm.store.device(mac).await.map_err(|e| CheckSyncError::Device(e.to_string()))?;
    let event = event_for(dm, &device).await;
    // The device's own identity: its per-device user while on the default profile, its DN's
    // binding (authenticated as the DN) once assigned and re-registered.
    let auth_user = dm.credentials.auth_user(mac);
    let (binding, username, password) = match ep.registrar().binding_of_device(&auth_user) {
        Some(b) if b.aor == PROVISIONING_USER || b.aor.starts_with(&format!("{PROVISIONING_USER}@")) => {
            (b, auth_user, dm.credentials.password(mac))
        }
        _ => {
            let dn = device.dn.clone().ok_or_else(|| CheckSyncError::NotRegistered(mac.to_owned()))?;
            let b = ep
                .registrar()
                .binding_of_device(&dn)
                .or_else(|| ep.registrar().bindings(&dn).into_iter().next())
                .ok_or_else(|| CheckSyncError::NotRegistered(mac.to_owned()))?;
            let password = dm.store.dn(&dn).await.map(|d| d.password).unwrap_or_default();
            (b, dn, password)
        }
    };
    let status = notify(ep, &binding, &event, &username, &password).await?;
    let report = CheckSyncReport { mac: mac.to_owned(), event: event.clone(), contact: binding.contact.clone(), status };
    if let Err(e) = dm.store.add_audit(mac, device.dn.as_deref(), "check-sync", actor, Some(&format!("{event} → {status}"))).await {
        tracing::warn!(mac, error = %e, "check-sync sent but not recorded");
    }
    tracing::info!(mac, event = %event, contact = %binding.contact, status, "check-sync");
    if (200..300).contains(&status) {
        Ok(report)
    } else {
        Err(CheckSyncError::Refused(status))
    }
}

/// The profile's override, else the vendor's re-fetch event.
async fn event_for(dm: &Dm, device: &crate::store::model::Device) -> String {
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
async fn notify(ep: &Endpoint, b: &Arc<Binding>, event: &str, username: &str, password: &str) -> Result<u16, CheckSyncError> {
    let local = ep.local_addr();
    let call_id = format!("{}@sipdm", hex::encode(rand::random::<[u8; 12]>()));
    let from_tag = hex::encode(rand::random::<[u8; 6]>());
    let mut authorization: Option<String> = None;
    for cseq in 1..=2u32 {
        let mut text = format!(
            "NOTIFY {uri} SIP/2.0\r\nMax-Forwards: 70\r\nFrom: <sip:sipdm@{local}>;tag={from_tag}\r\nTo: <{uri}>\r\n\
             Call-ID: {call_id}\r\nCSeq: {cseq} NOTIFY\r\nContact: <sip:sipdm@{local}>\r\nEvent: {event}\r\n\
             Subscription-State: terminated\r\nUser-Agent: sipdm\r\n",
            uri = b.contact
        );
        if let Some(a) = &authorization {
            text.push_str(a);
        }
        text.push_str("Content-Length: 0\r\n\r\n");
        let req = rsip::Request::try_from(text.as_str()).map_err(|e| CheckSyncError::Unreachable(format!("building NOTIFY: {e}")))?;
        let resp = ep
            .send_request(req, Target::Binding(b.clone()))
            .await
            .map_err(|e| CheckSyncError::Unreachable(e.to_string()))?;
        let code = resp.status_code.code();
        if (code == 401 || code == 407) && authorization.is_none() {
            let header = if code == 401 { "WWW-Authenticate" } else { "Proxy-Authenticate" };
            let Some(challenge) = resp.header_values(header).find_map(|v| DigestChallenge::parse(v).ok()) else {
                return Ok(code);
            };
            let cnonce = hex::encode(rand::random::<[u8; 8]>());
            let answer = challenge
                .answer("NOTIFY", &b.contact, username, password, 1, &cnonce)
                .map_err(|e| CheckSyncError::Unreachable(format!("answering the phone's challenge: {e}")))?;
            let name = if code == 401 { "Authorization" } else { "Proxy-Authorization" };
            authorization = Some(format!("{name}: {answer}\r\n"));
            continue;
        }
        return Ok(code);
    }
    Ok(401)
}

/// The check-sync the IVR assignment uses.
pub struct SipCheckSync(pub Arc<Dm>);

impl CheckSync for SipCheckSync {
    fn check_sync(&self, mac: String) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move { check_sync(&self.0, &mac, "ivr").await.map(|_| ()).map_err(|e| e.to_string()) })
    }
}
