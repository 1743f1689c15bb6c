//! INVITEs: routed by trunk prefix (see [`super::trunks`]); calls to a trunk whose contact is
//! `builtin:ivr` are answered by the built-in IVR, and the in-dialog ACK, INFO (DTMF) and BYE of
//! those calls are handled here too; calls to external trunks (a media server, an SBC) are
//! bridged by [`super::b2bua`], which also takes the in-dialog requests of those calls.
//!
//! The caller is authenticated when its `authenticate-requests` include `invite` (always for
//! `gcti_provisioning`); the digest user names the device whose DN the IVR assigns. A device
//! (by its digest or a trusted switch's word) may call the IVR's route only
//! ([`super::device_scope`]). When the IVR reports an assignment and the call is over, the
//! phone is sent check-sync.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use sip::auth::AuthOutcome;
use sip::headers::name_addr::NameAddr;
use sip::headers::MessageExt;
use sip::rsip::headers::UntypedHeader;
use sip::rsip::{self, Method, StatusCode};
use sip::{BoxFuture, Endpoint, IncomingRequest, RequestHandler};

use super::assignment::IvrAssigner;
use super::b2bua::{B2bua, Forwarded};
use super::checksync::CheckSync;
use super::device_scope::DeviceScope;
use super::identity::{Assertion, TrustedPeers};
use super::local_addr::{contact_host, local_ip};
use super::trunks::{TrunkError, TrunkTable};
use crate::credentials::DeviceCredentials;
use crate::ivr::{CallOutcome, CallerIdentity, IvrCall, IvrControl, IvrError, IvrSettings};
use crate::provisioning::mac::Mac;
use crate::service::Dm;

/// A call the IVR answered: its control and the dialog our BYE is sent in.
struct IvrDialog {
    control: IvrControl,
    /// The UAS dialog (RFC 3261 §12.1.1): the INVITE's Record-Route as route set, its Contact
    /// as remote target, our tag and theirs.
    dialog: sip::dialog::Dialog,
}

pub struct CallRouter {
    trunks: Arc<TrunkTable>,
    b2bua: Arc<B2bua>,
    assigner: Arc<IvrAssigner>,
    check_sync: Arc<CheckSync>,
    ivr: IvrSettings,
    dialogs: Mutex<HashMap<String, IvrDialog>>,
    /// Switches and SBCs whose P-Asserted-Identity names the calling device.
    trusted: TrustedPeers,
    /// Where an unassigned phone's credentials may call: the IVR.
    devices: DeviceScope,
}

impl CallRouter {
    /// Fails when a trunk's contact is not a usable SIP URI.
    pub fn new(
        dm: Arc<Dm>,
        assigner: Arc<IvrAssigner>,
        check_sync: Arc<CheckSync>,
        ivr: IvrSettings,
    ) -> Result<Arc<Self>, TrunkError> {
        let sip = &dm.config.sip;
        let resolver = Arc::new(crate::dns::SipResolver::new(&sip.dns_servers));
        let trunks = Arc::new(TrunkTable::new(
            &dm.config.trunks,
            resolver,
            std::time::Duration::from_millis(sip.trunk_options_interval_ms),
        )?);
        let devices = DeviceScope::new(trunks.clone(), &dm.config.ivr.number);
        Ok(Arc::new(CallRouter {
            trunks,
            devices,
            b2bua: Arc::new(B2bua::with_ivr_application(
                &dm.config.ivr.number,
                dm.config.ivr.initial_page_url.as_deref(),
            )),
            assigner,
            check_sync,
            ivr,
            dialogs: Mutex::new(HashMap::new()),
            trusted: TrustedPeers::new(sip.trusted_peers.clone()),
        }))
    }

    /// The trunk table (states for the admin API and metrics; the health checker).
    pub fn trunks(&self) -> &Arc<TrunkTable> {
        &self.trunks
    }

    async fn invite(self: Arc<Self>, ep: &Endpoint, req: IncomingRequest) {
        let target_user = uri_user(&req.request.uri.to_string());
        let candidates = self.trunks.candidates(&target_user);
        if candidates.is_empty() {
            tracing::info!(to = %target_user, "INVITE: no trunk for this number");
            return req.reply(StatusCode::NotFound);
        }
        let from = req
            .request
            .header_value("From")
            .and_then(|f| NameAddr::parse(f).ok());
        let from_user = from.as_ref().map(|f| uri_user(&f.uri)).unwrap_or_default();
        // Through a trusted switch the phone's digest ended there: take the switch's word.
        let device = match self.trusted.assertion(&req.request, req.flow.remote.ip()) {
            Assertion::Device(mac) => Some(Some(mac)),
            Assertion::OtherUser(user) => {
                tracing::info!(asserted = %user, "INVITE from a trusted peer for a user that is no device: nothing to assign");
                Some(None)
            }
            Assertion::Absent | Assertion::Untrusted => None,
        };
        let device = match device {
            Some(d) => d,
            None => match self.authenticate(ep, &req, &from_user).await {
                Ok(d) => d,
                Err(res) => return req.respond(res),
            },
        };
        if let Some(mac) = device {
            if !self.devices.allows(mac, &target_user, req.flow.remote.ip()) {
                return req.reply(StatusCode::Forbidden);
            }
        }
        // Preferred trunk first; the B2BUA hands the call back when the next one in line is
        // the built-in IVR.
        match self
            .b2bua
            .forward(ep, req, &target_user, candidates, device)
            .await
        {
            Forwarded::Done => {}
            Forwarded::BuiltinIvr(req) => self.answer_ivr(ep.clone(), *req, from, device).await,
        }
    }

    /// The caller's own digest (a phone calling sipdm directly): the device its `dm-<mac>`
    /// user names, none for a DN or where no authentication is required, or the response
    /// that refuses the INVITE.
    async fn authenticate(
        &self,
        ep: &Endpoint,
        req: &IncomingRequest,
        from_user: &str,
    ) -> Result<Option<Mac>, rsip::Response> {
        let outcome = match ep
            .digest_guard()
            .check(&req.request, req.flow.remote.ip(), from_user, false)
            .await
        {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(error = %e, "INVITE: credential lookup failed");
                return Err(req.response(StatusCode::from(e.status())));
            }
        };
        match outcome {
            AuthOutcome::Challenge { stale } => {
                Err(ep.digest_guard().challenge_response(req, stale, false))
            }
            AuthOutcome::Throttled => Err(req.response(StatusCode::Forbidden)),
            AuthOutcome::Authenticated { username } => {
                Ok(DeviceCredentials::mac_of_auth_user(&username).and_then(|m| Mac::parse(m).ok()))
            }
            AuthOutcome::NotRequired => Ok(None),
        }
    }

    async fn answer_ivr(
        self: Arc<Self>,
        ep: Endpoint,
        req: IncomingRequest,
        from: Option<NameAddr>,
        device: Option<Mac>,
    ) {
        let offer = String::from_utf8_lossy(&req.request.body).into_owned();
        let local_ip = local_ip(&ep, &req.flow);
        let caller = CallerIdentity {
            device,
            remote_uri: from.as_ref().map(|f| f.uri.clone()).unwrap_or_default(),
        };
        let started = IvrCall::start(
            &offer,
            local_ip,
            caller,
            Arc::new(self.assigner.on_call(&ep, &self.check_sync)),
            self.ivr.clone(),
        )
        .await;
        let (answer, handle) = match started {
            Ok(x) => x,
            Err(IvrError::Sdp(e)) => {
                tracing::info!(error = %e, "INVITE: unusable offer");
                return req.reply(StatusCode::NotAcceptableHere);
            }
            Err(e) => {
                tracing::error!(error = %e, "INVITE: IVR could not start");
                return req.reply(StatusCode::ServerInternalError);
            }
        };
        let call_id = req.request.call_id().unwrap_or_default().to_owned();
        let contact = format!("<sip:ivr@{}>", contact_host(&ep, &req.flow));
        // §12.1.1: the 200 copies the INVITE's Record-Route, so that the caller's ACK and
        // BYE come back through the proxies that asked to stay in the path.
        let mut ok = sip::dialog::dialog_response(&req, StatusCode::OK);
        ok.headers
            .push(rsip::Header::Contact(rsip::headers::Contact::new(contact)));
        ok.headers
            .push(rsip::Header::ContentType(rsip::headers::ContentType::new(
                "application/sdp",
            )));
        ok.headers.push(rsip::Header::Other(
            "Allow".into(),
            "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, NOTIFY".into(),
        ));
        ok.body = answer.into_bytes();
        let dialog = match sip::dialog::Dialog::uas(&req.request, &ok, req.flow) {
            Ok(d) => d,
            Err(e) => {
                // §8.1.1.8: an INVITE without a usable Contact cannot be called back.
                tracing::info!(call_id, error = %e, "INVITE: no dialog can be made from it");
                handle.control().hang_up();
                return req.reply(StatusCode::BadRequest);
            }
        };
        self.dialogs.lock().insert(
            call_id.clone(),
            IvrDialog {
                control: handle.control(),
                dialog,
            },
        );
        req.respond(ok);
        metrics::gauge!("sipdm_ivr_calls_active").increment(1.0);
        let this = self.clone();
        tokio::spawn(async move {
            let ended = handle.ended().await;
            metrics::gauge!("sipdm_ivr_calls_active").decrement(1.0);
            let dialog = this.dialogs.lock().remove(&call_id);
            if let (true, Some(mut d)) = (ended.send_bye, dialog) {
                send_bye(&ep, &call_id, &mut d.dialog).await;
            }
            tracing::info!(call_id, outcome = ?ended.outcome, "IVR call ended");
            if let (CallOutcome::Assigned(dn), Some(mac)) = (&ended.outcome, device) {
                if let Err(e) = this
                    .check_sync
                    .after_assignment(&ep, &mac.to_string())
                    .await
                {
                    tracing::warn!(mac = %mac, dn, error = %e, "check-sync after the IVR assignment failed");
                }
            }
        });
    }

    fn in_dialog(&self, ep: &Endpoint, req: IncomingRequest) -> Option<IncomingRequest> {
        let call_id = req.request.call_id().unwrap_or_default().to_owned();
        if self.b2bua.owns(&call_id) {
            return self.b2bua.in_dialog(ep, req);
        }
        let control = self.dialogs.lock().get(&call_id).map(|d| d.control.clone());
        match req.request.method {
            Method::Ack => {
                if control.is_some() {
                    return None;
                }
                Some(req)
            }
            Method::Bye => {
                match control {
                    Some(c) => {
                        c.hang_up();
                        self.dialogs.lock().remove(&call_id);
                        req.reply(StatusCode::OK);
                    }
                    None => req.reply(StatusCode::CallTransactionDoesNotExist),
                }
                None
            }
            Method::Info => {
                let Some(c) = control else {
                    req.reply(StatusCode::CallTransactionDoesNotExist);
                    return None;
                };
                let ct = req
                    .request
                    .header_value("Content-Type")
                    .unwrap_or_default()
                    .to_owned();
                let body = String::from_utf8_lossy(&req.request.body).into_owned();
                let status = match c.info(&ct, &body) {
                    Ok(()) => StatusCode::OK,
                    Err(IvrError::Ended) => StatusCode::CallTransactionDoesNotExist,
                    Err(IvrError::Dtmf(_))
                        if !ct.to_ascii_lowercase().starts_with("application/dtmf") =>
                    {
                        StatusCode::UnsupportedMediaType
                    }
                    Err(_) => StatusCode::BadRequest,
                };
                req.reply(status);
                None
            }
            _ => Some(req),
        }
    }
}

/// The router as the endpoint's handler (the router itself is shared with its call tasks).
pub struct CallHandler(pub Arc<CallRouter>);

impl RequestHandler for CallHandler {
    fn handle<'a>(
        &'a self,
        ep: &'a Endpoint,
        req: IncomingRequest,
    ) -> BoxFuture<'a, Option<IncomingRequest>> {
        let this = &self.0;
        Box::pin(async move {
            match req.request.method {
                Method::Invite => {
                    // In-dialog re-INVITEs are not supported by the IVR: refuse them cleanly.
                    let call_id = req.request.call_id().unwrap_or_default().to_owned();
                    if this.b2bua.owns(&call_id) {
                        return this.in_dialog(ep, req);
                    }
                    if this.dialogs.lock().contains_key(&call_id) {
                        req.reply(StatusCode::NotAcceptableHere);
                        return None;
                    }
                    this.clone().invite(ep, req).await;
                    None
                }
                _ => this.in_dialog(ep, req),
            }
        })
    }
}

/// BYE within the IVR's dialog (§15.1.1, §12.2.1.1): Route headers from the route set, sent
/// towards the first route (the proxy that record-routed), else down the caller's flow.
async fn send_bye(ep: &Endpoint, call_id: &str, d: &mut sip::dialog::Dialog) {
    let mut req = match d.next_request(Method::Bye) {
        Ok(r) => r,
        Err(e) => return tracing::warn!(call_id, error = %e, "could not build BYE"),
    };
    req.headers
        .push(rsip::Header::UserAgent(rsip::headers::UserAgent::new(
            "sipdm",
        )));
    let Some(target) = d.target() else {
        return tracing::warn!(call_id, "BYE: the dialog names no address to send to");
    };
    match sip::uac::request(ep, req, target, None).await {
        Ok(r) if r.status_code.code() < 300 => {}
        Ok(r) => tracing::info!(call_id, status = r.status_code.code(), "BYE refused"),
        Err(e) => tracing::info!(call_id, error = %e, "BYE got no answer"),
    }
}

/// The user part of a SIP URI (`sip:8800@host;x` → `8800`).
fn uri_user(uri: &str) -> String {
    let rest = uri.split_once(':').map(|(_, r)| r).unwrap_or(uri);
    match rest.split_once('@') {
        Some((user, _)) => user.split(';').next().unwrap_or("").to_owned(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::uri_user;

    #[test]
    fn user_parts() {
        assert_eq!(uri_user("sip:8800@127.0.0.1:5060;transport=udp"), "8800");
        assert_eq!(uri_user("sip:8800;phone-context=x@host"), "8800");
        assert_eq!(uri_user("sip:host"), "");
        assert_eq!(uri_user("garbage"), "");
    }
}
