//! Calls to external trunks, as a back-to-back user agent (RFC 3261 §6 "B2BUA": "a logical
//! entity that receives a request and processes it as a user agent server (UAS)" and then
//! "acts as a user agent client (UAC) and generates requests").
//!
//! sipdm answers the caller's INVITE itself (the A leg) and originates a new INVITE to the
//! trunk's contact (the B leg) with the caller's SDP, the caller's From URI, a Call-ID of its
//! own and, when the caller authenticated as a device, `X-Sipdm-Device: <mac>` (the VoiceXML
//! page reads it to know which phone it is provisioning). A proxy would have to keep the
//! transaction state of both sides in step and could not add the device identity from the
//! digest it verified; a B2BUA only has to map dialog to dialog.
//!
//! Both legs use the sip crate's user-agent layer: the B-leg INVITE is built with
//! [`RequestBuilder`] and driven as a [`ClientTsx`]; the A leg's 1xx/2xx are made with
//! [`dialog_response`], so that the Record-Route set of a switch in front of the phone is
//! copied into them (§12.1.1); each leg keeps a [`Dialog`] (route set, remote target, CSeq)
//! for the requests sent in it.
//!
//! What crosses between the legs:
//! * provisional responses: the trunk's 180/183 (101–199) are relayed to the caller with the
//!   same status, its SDP (early media of a 183) and our Contact, in the A leg's early dialog
//!   (our To tag); the caller's 100 Trying comes from its own transaction layer;
//! * the final response: a 2xx is ACKed on the B leg by [`ClientTsx::ack`] (§13.2.2.4: the
//!   UAC core, not the transaction, ACKs a 2xx), which also re-ACKs the trunk's
//!   retransmissions of it until Timer M (RFC 6026: our ACK may have been lost), and turned
//!   into a 200 to the caller carrying the callee's SDP and our Contact (§12.1.1: the Contact
//!   of a dialog-creating response is the remote target the caller sends its ACK and BYE
//!   to); an error is relayed with the same status, a 401/407 with its WWW-Authenticate /
//!   Proxy-Authenticate challenge (the caller may answer it: its Proxy-Authorization is
//!   carried in the next B-leg INVITE), 3xx with its Contacts;
//! * failover: a trunk's contact resolves (RFC 3263) to one or more records, tried in order;
//!   Timer B (§17.1.1.2), a transport error, or a 503 (§21.5.4) moves the call to the next
//!   record, then to the next trunk with the same prefix. A trunk already out of service, or
//!   whose contact does not resolve, is skipped; a Timer B marks that record out of service
//!   until a probe succeeds (the trunk, once none of its records is left). When nothing took
//!   the call the caller gets 503, also after timeouts, so that a phone with a peer server
//!   fails over;
//! * CANCEL: the caller's CANCEL is answered (200, and 487 to its INVITE, §9.2) by the
//!   transaction layer; the B-leg INVITE is then cancelled with [`ClientTsx::cancel`] (§9.1:
//!   same branch, sent once the trunk sent a provisional). If the trunk answered 2xx first
//!   it is ACKed and hung up at once with a BYE (§15: the 2xx/CANCEL race is resolved by the
//!   UAC with ACK then BYE);
//! * BYE: from either side is answered 200 (§15.1.2) and sent on in the other dialog
//!   (§15.1.1); other in-dialog requests (INFO DTMF, NOTIFY, …) are relayed and their final
//!   status relayed back; re-INVITEs are refused with 488, which leaves the session as it was
//!   (§14.2).
//!
//! Known limit: a caller's answer to a trunk's challenge is computed over the A-leg
//! Request-URI (`uri=` of the digest), which a trunk that checks it against the B-leg
//! Request-URI refuses; trunks are normally trusted by address instead.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use sip::dialog::{dialog_response, BuildError, Dialog, RequestBuilder};
use sip::endpoint::SendError;
use sip::headers::name_addr::NameAddr;
use sip::headers::MessageExt;
use sip::rsip::headers::UntypedHeader;
use sip::rsip::{self, Header, Method, StatusCode};
use sip::transaction::TsxError;
use sip::transport::{Flow, Protocol};
use sip::uac::{ClientTsx, Progress};
use sip::{Endpoint, IncomingRequest, Target};

use super::trunks::{Trunk, TrunkTarget};
use crate::dns::Candidate;
use crate::ivr::vxml::DEVICE_HEADER;
use crate::provisioning::mac::Mac;

/// What we allow in both dialogs (the Allow of our INVITE and of our 200).
const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, NOTIFY";

/// What [`B2bua::forward`] did with the INVITE.
pub enum Forwarded {
    /// Answered (or handed to a task that will answer it).
    Done,
    /// The next trunk in line is the built-in IVR: the caller answers the INVITE itself.
    BuiltinIvr(Box<IncomingRequest>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Caller,
    Callee,
}

impl Side {
    fn other(self) -> Side {
        match self {
            Side::Caller => Side::Callee,
            Side::Callee => Side::Caller,
        }
    }
}

/// Two dialogs joined by sipdm: the caller's (we are its UAS) and the trunk's (its UAC).
struct Bridge {
    caller: Mutex<Dialog>,
    callee: Mutex<Dialog>,
    trunk: String,
}

impl Bridge {
    fn leg(&self, side: Side) -> &Mutex<Dialog> {
        match side {
            Side::Caller => &self.caller,
            Side::Callee => &self.callee,
        }
    }
}

/// What every B-leg INVITE copies from the caller's.
#[derive(Debug, Clone)]
struct Caller {
    /// The caller's From without its tag.
    from: NameAddr,
    max_forwards: u32,
    content_type: Option<String>,
    body: Vec<u8>,
    user_agent: Option<String>,
    device: Option<Mac>,
    /// The caller's answers to a trunk's proxy challenge (relayed 407), passed on.
    proxy_authorization: Vec<String>,
}

/// What to do after one B-leg INVITE ended (§8.1.3.1, RFC 3263 §4.3).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// A 2xx: bridge the call.
    Bridge,
    /// Try the next record or trunk; `status` is what the caller gets if none is left, and
    /// `timed_out` marks the record out of service (Timer B).
    Next { status: u16, timed_out: bool },
    /// A refusal the caller gets as it is.
    Relay,
}

fn step(result: &Result<rsip::Response, SendError>) -> Step {
    match result {
        Ok(r) => match r.status_code.code() {
            200..=299 => Step::Bridge,
            503 => Step::Next {
                status: 503,
                timed_out: false,
            },
            _ => Step::Relay,
        },
        Err(e) => Step::Next {
            // Not the 408 a UAC reports to itself for Timer B: the caller asked a server that
            // could not reach its trunk, and 503 (§21.5.4) is what makes a
            // business-continuity phone retry through its peer server at once (RFC 3263
            // §4.3), instead of failing this call.
            status: match e.status() {
                408 => 503,
                other => other,
            },
            timed_out: matches!(e, SendError::Transaction(TsxError::Timeout)),
        },
    }
}

pub struct B2bua {
    /// Both Call-IDs of every bridged call, each with the side it names.
    calls: Mutex<HashMap<String, (Arc<Bridge>, Side)>>,
    /// The IVR number and the VoiceXML application (`[ivr] initial-page-url`) a media server
    /// runs for it: a call to that number names the application and the calling device in
    /// its Request-URI (RFC 5552).
    ivr_application: Option<(String, String)>,
}

impl Default for B2bua {
    fn default() -> Self {
        Self::new()
    }
}

impl B2bua {
    pub fn new() -> Self {
        B2bua {
            calls: Mutex::new(HashMap::new()),
            ivr_application: None,
        }
    }

    /// Calls to `ivr_number` bridged to a media server name the device-management
    /// application `initial_page_url` (when set) and the calling device.
    pub fn with_ivr_application(ivr_number: &str, initial_page_url: Option<&str>) -> Self {
        B2bua {
            calls: Mutex::new(HashMap::new()),
            ivr_application: initial_page_url.map(|u| (ivr_number.to_owned(), u.to_owned())),
        }
    }

    /// Bridged calls in progress.
    pub fn active_calls(&self) -> usize {
        self.calls.lock().len() / 2
    }

    pub fn owns(&self, call_id: &str) -> bool {
        self.calls.lock().contains_key(call_id)
    }

    /// Carries an authenticated INVITE to the first trunk of `candidates` that takes it.
    /// `device`: the device the caller's digest named, passed on as `X-Sipdm-Device`.
    pub async fn forward(
        self: &Arc<Self>,
        ep: &Endpoint,
        req: IncomingRequest,
        dialled: &str,
        candidates: Vec<Arc<Trunk>>,
        device: Option<Mac>,
    ) -> Forwarded {
        if req.responder().is_none() {
            return Forwarded::Done;
        }
        // §16.3 item 3 / §8.1.1.6: a B2BUA is not a proxy, but decrementing Max-Forwards keeps
        // two misconfigured servers from passing one call back and forth forever.
        let max_forwards = match req
            .request
            .header_value("Max-Forwards")
            .map(|v| v.trim().parse::<u32>())
        {
            None => 70,
            Some(Ok(n)) => n.min(255),
            Some(Err(_)) => {
                req.reply(StatusCode::BadRequest);
                return Forwarded::Done;
            }
        };
        if max_forwards == 0 {
            req.reply(StatusCode::TooManyHops);
            return Forwarded::Done;
        }
        let Some(mut from) = req
            .request
            .header_value("From")
            .and_then(|f| NameAddr::parse(f).ok())
        else {
            req.reply(StatusCode::BadRequest);
            return Forwarded::Done;
        };
        from.params.remove("tag");
        let caller = Caller {
            from,
            max_forwards: max_forwards - 1,
            content_type: req.request.header_value("Content-Type").map(str::to_owned),
            body: req.request.body.clone(),
            user_agent: req.request.header_value("User-Agent").map(str::to_owned),
            device,
            proxy_authorization: req
                .request
                .header_values("Proxy-Authorization")
                .map(str::to_owned)
                .collect(),
        };
        // Our Contact in the A leg: the remote target of the caller's ACK and BYE.
        let a_contact = format!(
            "<sip:b2bua@{}>",
            super::local_addr::contact_host(ep, &req.flow)
        );
        let mut last_status: u16 = 503;
        for trunk in candidates {
            let target = match &trunk.target {
                TrunkTarget::BuiltinIvr => return Forwarded::BuiltinIvr(Box::new(req)),
                TrunkTarget::Sip(t) => t.clone(),
            };
            // §8.1.1.8: an INVITE without a usable Contact makes no dialog we could call
            // back; refused before a trunk is bothered.
            if caller_contact(&req.request).is_none() {
                tracing::info!("INVITE: no usable Contact, not bridged");
                req.reply(StatusCode::BadRequest);
                return Forwarded::Done;
            }
            if !trunk.in_service() {
                tracing::info!(trunk = %trunk.config.name, "INVITE: trunk out of service, trying the next");
                continue;
            }
            // RFC 3263 §4.3: the trunk's records in order, the next one on a timeout, a
            // transport error or a 503; a name that does not resolve is a transport failure
            // (§8.1.3.1 of RFC 3261: treated as 503).
            let records = match trunk.addresses().await {
                Ok(r) => r,
                Err(e) => {
                    trunk.dns_failed(&e);
                    continue;
                }
            };
            for record in records {
                let request_uri = match &self.ivr_application {
                    Some((number, initial)) => crate::ivr::app_url::voicexml_request_uri(
                        &target.uri(dialled),
                        dialled,
                        number,
                        Some(initial),
                        device,
                    ),
                    None => target.uri(dialled),
                };
                let invite = match b_leg_invite(&caller, &request_uri, &b_leg_contact(ep, record)) {
                    Ok(i) => i,
                    Err(e) => {
                        tracing::error!(error = %e, "INVITE: could not build the B-leg INVITE");
                        req.reply(StatusCode::ServerInternalError);
                        return Forwarded::Done;
                    }
                };
                let call_id = invite.call_id().unwrap_or_default().to_owned();
                tracing::info!(trunk = %trunk.config.name, to = %request_uri, record = %record, call_id, "INVITE: forwarding");
                let started = ClientTsx::send(ep, invite, b_leg_target(ep, record));
                let (tsx, result) = match started {
                    Ok(mut tsx) => match ring(&req, &mut tsx, &a_contact).await {
                        Some(result) => (Some(tsx), result),
                        None => {
                            // The 487 went out with the CANCEL's 200; the B leg is cancelled
                            // in the background (ACK and BYE if it is answered after all).
                            tracing::info!(call_id, "caller cancelled; cancelling the B leg");
                            let ep = ep.clone();
                            tokio::spawn(async move { cancel_b_leg(&ep, tsx, &call_id).await });
                            return Forwarded::Done;
                        }
                    },
                    Err(e) => (None, Err(e)),
                };
                match (step(&result), tsx, result) {
                    (Step::Bridge, Some(tsx), Ok(resp)) => {
                        self.connect(ep, req, tsx, resp, &trunk.config.name, &a_contact)
                            .await;
                        return Forwarded::Done;
                    }
                    (Step::Next { status, timed_out }, _, result) => {
                        if timed_out {
                            trunk.record_failed(record, "INVITE timeout");
                        }
                        match result {
                            Ok(_) => {
                                tracing::info!(trunk = %trunk.config.name, record = %record, "INVITE: answered 503, trying the next")
                            }
                            Err(e) => {
                                tracing::warn!(trunk = %trunk.config.name, record = %record, error = %e, "INVITE: no answer from this address, trying the next")
                            }
                        }
                        last_status = status;
                        continue;
                    }
                    (_, _, Ok(resp)) => {
                        tracing::info!(trunk = %trunk.config.name, code = resp.status_code.code(), "INVITE: refused by the trunk");
                        let r = refusal(&resp, req.response(resp.status_code.clone()));
                        req.respond(r);
                        return Forwarded::Done;
                    }
                    (_, _, Err(e)) => {
                        // `step` sends every error to the next record; kept for completeness.
                        req.reply(StatusCode::from(e.status()));
                        return Forwarded::Done;
                    }
                }
            }
        }
        tracing::info!(dialled, last_status, "INVITE: no trunk took the call");
        req.reply(StatusCode::from(last_status));
        Forwarded::Done
    }

    /// The callee answered: ACK it, answer the caller 200 with the callee's SDP, and remember
    /// both dialogs.
    async fn connect(
        &self,
        ep: &Endpoint,
        req: IncomingRequest,
        tsx: ClientTsx,
        resp: rsip::Response,
        trunk: &str,
        a_contact: &str,
    ) {
        let mut callee = match tsx.dialog(&resp) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "the trunk's 2xx makes no dialog; not bridged");
                return req.reply(StatusCode::BadGateway);
            }
        };
        // §13.2.2.4: the 2xx is ACKed whatever happens to the caller (and re-ACKed when the
        // trunk retransmits it).
        if let Err(e) = tsx.ack(&callee).await {
            tracing::warn!(call_id = %callee.call_id, error = %e, "could not ACK the trunk's 2xx");
        }
        if req.responder().is_some_and(|r| r.is_cancelled()) {
            // §15: the caller cancelled while the callee was answering.
            send_in_dialog_bye(ep, &mut callee).await;
            return;
        }
        let mut ok = dialog_response(&req, StatusCode::OK);
        ok.headers
            .push(Header::Contact(rsip::headers::Contact::new(a_contact)));
        ok.headers.push(Header::Other("Allow".into(), ALLOW.into()));
        copy_session(&resp, &mut ok);
        let caller = match Dialog::uas(&req.request, &ok, req.flow) {
            Ok(d) => d,
            Err(e) => {
                tracing::info!(error = %e, "INVITE: no dialog can be made from it");
                req.reply(StatusCode::BadRequest);
                send_in_dialog_bye(ep, &mut callee).await;
                return;
            }
        };
        let bridge = Arc::new(Bridge {
            caller: Mutex::new(caller),
            callee: Mutex::new(callee),
            trunk: trunk.to_owned(),
        });
        let (a, b) = (
            bridge.caller.lock().call_id.clone(),
            bridge.callee.lock().call_id.clone(),
        );
        {
            let mut calls = self.calls.lock();
            calls.insert(a.clone(), (bridge.clone(), Side::Caller));
            calls.insert(b.clone(), (bridge.clone(), Side::Callee));
        }
        tracing::info!(caller = %a, callee = %b, trunk, "call bridged");
        req.respond(ok);
    }

    /// Requests inside a bridged dialog; gives back requests of other dialogs.
    pub fn in_dialog(
        self: &Arc<Self>,
        ep: &Endpoint,
        req: IncomingRequest,
    ) -> Option<IncomingRequest> {
        let call_id = req.request.call_id().unwrap_or_default().to_owned();
        let Some((bridge, side)) = self.calls.lock().get(&call_id).cloned() else {
            return Some(req);
        };
        let other = side.other();
        match req.request.method {
            // The caller's ACK of our 200 (ours to the callee went out when it answered).
            Method::Ack => {}
            Method::Bye => {
                {
                    let mut calls = self.calls.lock();
                    calls.remove(&bridge.caller.lock().call_id);
                    calls.remove(&bridge.callee.lock().call_id);
                }
                req.reply(StatusCode::OK);
                tracing::info!(call_id, from = ?side, trunk = %bridge.trunk, "bridged call ended");
                let ep = ep.clone();
                tokio::spawn(async move {
                    let mut dialog = bridge.leg(other).lock().clone();
                    send_in_dialog_bye(&ep, &mut dialog).await;
                });
            }
            // §14.2: a refused re-INVITE leaves the session as it was.
            Method::Invite => req.reply(StatusCode::NotAcceptableHere),
            _ => {
                let ep = ep.clone();
                tokio::spawn(async move {
                    let status = relay(&ep, bridge.leg(other), &req.request).await;
                    req.reply(status);
                });
            }
        }
        None
    }
}

/// Waits for the B-leg INVITE's final response, relaying its provisionals to the caller.
/// `None`: the caller cancelled first.
async fn ring(
    req: &IncomingRequest,
    tsx: &mut ClientTsx,
    a_contact: &str,
) -> Option<Result<rsip::Response, SendError>> {
    let responder = req.responder()?;
    loop {
        tokio::select! {
            progress = tsx.next() => match progress {
                Progress::Provisional(p) => {
                    // 100 is hop by hop (§8.2.6.1): the caller has its own.
                    if p.status_code.code() > 100 {
                        let mut early = dialog_response(req, p.status_code.clone());
                        early
                            .headers
                            .push(Header::Contact(rsip::headers::Contact::new(a_contact)));
                        copy_session(&p, &mut early);
                        responder.provisional(&early);
                    }
                }
                Progress::Final(result) => return Some(result),
            },
            _ = responder.cancelled() => return None,
        }
    }
}

/// The caller gave up: CANCEL the B-leg INVITE (§9.1); if the trunk answered 2xx first, ACK
/// and BYE it (§15).
async fn cancel_b_leg(ep: &Endpoint, mut tsx: ClientTsx, call_id: &str) {
    match tsx.cancel().await {
        Ok(r) if r.status_code.code() / 100 == 2 => match tsx.dialog(&r) {
            Ok(mut d) => {
                if let Err(e) = tsx.ack(&d).await {
                    tracing::warn!(call_id, error = %e, "could not ACK the late 2xx");
                }
                send_in_dialog_bye(ep, &mut d).await;
            }
            Err(e) => tracing::warn!(call_id, error = %e, "late 2xx unusable"),
        },
        Ok(r) => tracing::debug!(call_id, status = r.status_code.code(), "B leg cancelled"),
        Err(e) => tracing::debug!(call_id, error = %e, "B leg ended without an answer"),
    }
}

/// The caller's Contact URI, which the A-leg dialog needs as its remote target.
fn caller_contact(req: &rsip::Request) -> Option<String> {
    req.header_value("Contact")
        .and_then(|c| NameAddr::parse(c).ok())
        .map(|c| c.uri)
}

/// The B-leg INVITE (§8.1.1): a new Call-ID and From tag, the caller's From URI, To the
/// trunk's URI, decremented Max-Forwards, our Contact, the device and the caller's SDP.
fn b_leg_invite(
    caller: &Caller,
    request_uri: &str,
    contact: &str,
) -> Result<rsip::Request, BuildError> {
    let mut b = RequestBuilder::new(Method::Invite, request_uri)
        .from(&caller.from.to_string())
        .to(&format!("<{request_uri}>"))
        .max_forwards(caller.max_forwards)
        .contact(contact)
        .header("Allow", ALLOW);
    if let Some(mac) = &caller.device {
        b = b.header(DEVICE_HEADER, &mac.to_string());
    }
    if let Some(ua) = &caller.user_agent {
        b = b.header("User-Agent", ua);
    }
    for pa in &caller.proxy_authorization {
        b = b.header("Proxy-Authorization", pa);
    }
    if let Some(ct) = &caller.content_type {
        b = b.body(ct, caller.body.clone());
    }
    b.build()
}

/// Our Contact in the B leg: the address the trunk reaches us at, with the transport it
/// uses (UDP needs no parameter).
fn b_leg_contact(ep: &Endpoint, record: Candidate) -> String {
    let local = super::local_addr::local_ip_for(ep, record.addr);
    let port = local_port(ep, record.addr);
    let host = match local {
        std::net::IpAddr::V6(v6) => format!("[{v6}]:{port}"),
        v4 => format!("{v4}:{port}"),
    };
    match record.protocol {
        Protocol::Udp => format!("<sip:b2bua@{host}>"),
        p => format!(
            "<sip:b2bua@{host};transport={}>",
            p.as_str().to_ascii_lowercase()
        ),
    }
}

fn local_port(ep: &Endpoint, remote: SocketAddr) -> u16 {
    ep.local_addrs()
        .iter()
        .find(|a| a.is_ipv4() == remote.is_ipv4())
        .map_or(ep.local_addr().port(), |a| a.port())
}

/// Where the B-leg INVITE goes. Over UDP, the record's address (the dialog then follows the
/// trunk's Contact); over TCP or TLS, a flow to it, which the dialog keeps using (the
/// trunk's connection) unless a route set says otherwise.
fn b_leg_target(ep: &Endpoint, record: Candidate) -> Target {
    match record.protocol {
        Protocol::Udp => Target::Address(Protocol::Udp, record.addr),
        p => Target::Flow(Flow {
            protocol: p,
            local: SocketAddr::new(
                super::local_addr::local_ip_for(ep, record.addr),
                local_port(ep, record.addr),
            ),
            remote: record.addr,
            conn: 0,
        }),
    }
}

/// Copies the session description (Content-Type and body) of one leg's message into the
/// other's.
fn copy_session(from: &rsip::Response, to: &mut rsip::Response) {
    if from.body.is_empty() {
        return;
    }
    if let Some(ct) = from.header_value("Content-Type") {
        to.headers
            .push(Header::ContentType(rsip::headers::ContentType::new(ct)));
    }
    to.body = from.body.clone();
}

/// The caller's copy of the trunk's refusal (`base`: our response with the same status): a
/// challenge keeps its WWW-Authenticate / Proxy-Authenticate (§22.3: the caller may answer
/// it), a redirection its Contacts (§21.3).
fn refusal(from_trunk: &rsip::Response, mut base: rsip::Response) -> rsip::Response {
    let code = from_trunk.status_code.code();
    for h in from_trunk.headers.iter() {
        let keep = match h {
            Header::WwwAuthenticate(_) | Header::ProxyAuthenticate(_) => true,
            Header::Contact(_) => (300..400).contains(&code),
            Header::Other(name, _) => {
                name.eq_ignore_ascii_case("WWW-Authenticate")
                    || name.eq_ignore_ascii_case("Proxy-Authenticate")
            }
            _ => false,
        };
        if keep {
            base.headers.push(h.clone());
        }
    }
    base
}

/// BYE within `dialog` (§15.1.1), sent to its next hop with its route set; failures are
/// logged, the call is over either way.
async fn send_in_dialog_bye(ep: &Endpoint, dialog: &mut Dialog) {
    let call_id = dialog.call_id.clone();
    let mut bye = match dialog.next_request(Method::Bye) {
        Ok(r) => r,
        Err(e) => return tracing::warn!(call_id, error = %e, "no BYE sent"),
    };
    bye.headers
        .push(Header::UserAgent(rsip::headers::UserAgent::new("sipdm")));
    let Some(target) = dialog.target() else {
        return tracing::warn!(call_id, "BYE: the dialog names no address to send to");
    };
    match sip::uac::request(ep, bye, target, None).await {
        Ok(r) if r.status_code.code() < 300 => {}
        Ok(r) => tracing::info!(call_id, status = r.status_code.code(), "BYE refused"),
        Err(e) => tracing::info!(call_id, error = %e, "BYE got no answer"),
    }
}

/// Sends a copy of an in-dialog request (INFO, NOTIFY, …) in the other leg and returns the
/// status to answer the original with (§8.1.3.1: no answer counts as 408).
async fn relay(ep: &Endpoint, leg: &Mutex<Dialog>, original: &rsip::Request) -> StatusCode {
    let (req, target) = {
        let mut d = leg.lock();
        let req = relayed_request(&mut d, original);
        (req, d.target())
    };
    let mut req = match req {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "in-dialog request not relayed");
            return StatusCode::ServerInternalError;
        }
    };
    let Some(target) = target else {
        tracing::warn!("in-dialog request not relayed: the dialog names no address");
        return StatusCode::ServerInternalError;
    };
    req.body = original.body.clone();
    match sip::uac::request(ep, req, target, None).await {
        Ok(r) => r.status_code,
        Err(e) => StatusCode::from(e.status()),
    }
}

/// The next request of `dialog` with the method and the event/content headers of
/// `original` (its body is copied by the caller).
fn relayed_request(
    dialog: &mut Dialog,
    original: &rsip::Request,
) -> Result<rsip::Request, BuildError> {
    let mut req = dialog.next_request(original.method)?;
    for name in [
        "Content-Type",
        "Event",
        "Subscription-State",
        "Info-Package",
    ] {
        if let Some(v) = original.header_value(name) {
            req.headers.push(Header::Other(name.into(), v.into()));
        }
    }
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller() -> Caller {
        Caller {
            from: NameAddr::parse("<sip:gcti_provisioning@10.0.0.1>").unwrap(),
            max_forwards: 69,
            content_type: Some("application/sdp".into()),
            body: b"v=0\r\nm=audio 4000 RTP/AVP 0\r\n".to_vec(),
            user_agent: Some("Phone/1.0".into()),
            device: Some(Mac::parse("0004f2000abc").unwrap()),
            proxy_authorization: vec!["Digest username=\"u\", realm=\"trunk\"".into()],
        }
    }

    fn response(text: &str) -> rsip::Response {
        rsip::Response::try_from(text).unwrap()
    }

    #[test]
    fn b_leg_invite_carries_device_sdp_and_a_fresh_dialog() {
        let inv = b_leg_invite(
            &caller(),
            "sip:8800@10.0.0.9:5070",
            "<sip:b2bua@10.0.0.1:5060>",
        )
        .unwrap();
        assert_eq!(inv.method, Method::Invite);
        assert_eq!(inv.uri.to_string(), "sip:8800@10.0.0.9:5070");
        assert_eq!(inv.header_value("X-Sipdm-Device"), Some("0004f2000abc"));
        assert_eq!(inv.header_value("Max-Forwards"), Some("69"));
        assert_eq!(inv.header_value("User-Agent"), Some("Phone/1.0"));
        assert_eq!(inv.header_value("Content-Type"), Some("application/sdp"));
        assert_eq!(inv.header_value("To"), Some("<sip:8800@10.0.0.9:5070>"));
        assert_eq!(
            inv.header_value("Proxy-Authorization"),
            Some("Digest username=\"u\", realm=\"trunk\"")
        );
        assert!(inv.body.starts_with(b"v=0"));
        assert_eq!(inv.cseq(), Some((1, "INVITE")));
        let from = NameAddr::parse(inv.header_value("From").unwrap()).unwrap();
        assert_eq!(from.uri, "sip:gcti_provisioning@10.0.0.1");
        assert!(from.tag().is_some());
        let again = b_leg_invite(&caller(), "sip:8800@10.0.0.9", "<sip:b2bua@h>").unwrap();
        assert_ne!(again.call_id(), inv.call_id());
        // Printed and reparsed, as the trunk reads it.
        let text = String::from_utf8(sip::wire::encode_request(&inv).to_vec()).unwrap();
        assert!(
            text.starts_with("INVITE sip:8800@10.0.0.9:5070 SIP/2.0\r\n"),
            "{text}"
        );
        assert!(rsip::Request::try_from(text.as_str()).is_ok());
    }

    #[test]
    fn b_leg_invite_without_body() {
        let mut c = caller();
        c.content_type = None;
        c.body.clear();
        c.device = None;
        let inv = b_leg_invite(&c, "sip:8800@10.0.0.9", "<sip:b2bua@h>").unwrap();
        assert!(inv.header_value("Content-Type").is_none());
        assert!(inv.header_value("X-Sipdm-Device").is_none());
        assert!(inv.body.is_empty());
    }

    const HEAD: &str = "Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKx\r\nFrom: <sip:a@x>;tag=1\r\n\
                        To: <sip:8800@x>;tag=2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n";

    #[test]
    fn failover_steps() {
        let ok = response(&format!(
            "SIP/2.0 200 OK\r\n{HEAD}Content-Length: 0\r\n\r\n"
        ));
        assert_eq!(step(&Ok(ok)), Step::Bridge);
        let busy = response(&format!(
            "SIP/2.0 503 Service Unavailable\r\n{HEAD}Content-Length: 0\r\n\r\n"
        ));
        assert_eq!(
            step(&Ok(busy)),
            Step::Next {
                status: 503,
                timed_out: false
            }
        );
        let challenge = response(&format!(
            "SIP/2.0 407 Proxy Authentication Required\r\n{HEAD}Content-Length: 0\r\n\r\n"
        ));
        assert_eq!(step(&Ok(challenge)), Step::Relay);
        let nope = response(&format!(
            "SIP/2.0 486 Busy Here\r\n{HEAD}Content-Length: 0\r\n\r\n"
        ));
        assert_eq!(step(&Ok(nope)), Step::Relay);
        // Timer B is 503 to the caller, and takes the record out of service.
        assert_eq!(
            step(&Err(SendError::Transaction(TsxError::Timeout))),
            Step::Next {
                status: 503,
                timed_out: true
            }
        );
        assert_eq!(
            step(&Err(SendError::NoRoute("sip:x".into()))),
            Step::Next {
                status: 503,
                timed_out: false
            }
        );
    }

    fn base(status: u16) -> rsip::Response {
        response(&format!(
            "SIP/2.0 {status} X\r\nVia: SIP/2.0/UDP 10.0.0.2;branch=z9hG4bKa\r\nFrom: <sip:p@x>;tag=9\r\n\
             To: <sip:8800@x>;tag=ours\r\nCall-ID: a\r\nCSeq: 2 INVITE\r\nContent-Length: 0\r\n\r\n"
        ))
    }

    #[test]
    fn refusal_keeps_the_challenge() {
        let trunk = response(&format!(
            "SIP/2.0 407 Proxy Authentication Required\r\n{HEAD}\
             Proxy-Authenticate: Digest realm=\"trunk.example\", nonce=\"abc\"\r\nContact: <sip:ms@10.0.0.9>\r\n\
             Content-Length: 0\r\n\r\n"
        ));
        let r = refusal(&trunk, base(407));
        assert_eq!(
            r.header_value("Proxy-Authenticate"),
            Some("Digest realm=\"trunk.example\", nonce=\"abc\"")
        );
        // Our own dialog identifiers, not the trunk's.
        assert_eq!(r.header_value("Call-ID"), Some("a"));
        assert!(r.header_value("Contact").is_none());
        let www = response(&format!(
            "SIP/2.0 401 Unauthorized\r\n{HEAD}WWW-Authenticate: Digest realm=\"t\", nonce=\"n\"\r\n\
             Content-Length: 0\r\n\r\n"
        ));
        assert_eq!(
            refusal(&www, base(401)).header_value("WWW-Authenticate"),
            Some("Digest realm=\"t\", nonce=\"n\"")
        );
        let moved = response(&format!(
            "SIP/2.0 302 Moved\r\n{HEAD}Contact: <sip:8801@10.0.0.8>\r\nContent-Length: 0\r\n\r\n"
        ));
        assert_eq!(
            refusal(&moved, base(302)).header_value("Contact"),
            Some("<sip:8801@10.0.0.8>")
        );
    }

    #[test]
    fn session_copied_only_with_a_body() {
        let early = response(&format!(
            "SIP/2.0 183 Session Progress\r\n{HEAD}Content-Type: application/sdp\r\nContent-Length: 4\r\n\r\nv=0\n"
        ));
        let mut ours = base(183);
        copy_session(&early, &mut ours);
        assert_eq!(ours.header_value("Content-Type"), Some("application/sdp"));
        assert_eq!(ours.body, b"v=0\n");
        let ringing = response(&format!(
            "SIP/2.0 180 Ringing\r\n{HEAD}Content-Length: 0\r\n\r\n"
        ));
        let mut ours = base(180);
        copy_session(&ringing, &mut ours);
        assert!(ours.header_value("Content-Type").is_none());
    }

    #[test]
    fn relayed_info_is_the_next_request_of_the_other_dialog() {
        let invite = rsip::Request::try_from(
            "INVITE sip:8800@10.0.0.9 SIP/2.0\r\nFrom: <sip:1000@x>;tag=me\r\nTo: <sip:8800@10.0.0.9>\r\n\
             Call-ID: b-1\r\nCSeq: 1 INVITE\r\nContact: <sip:b2bua@10.0.0.1>\r\nContent-Length: 0\r\n\r\n",
        )
        .unwrap();
        let ok = response(
            "SIP/2.0 200 OK\r\nRecord-Route: <sip:10.0.0.5;lr>\r\nFrom: <sip:1000@x>;tag=me\r\n\
             To: <sip:8800@10.0.0.9>;tag=them\r\nCall-ID: b-1\r\nCSeq: 1 INVITE\r\n\
             Contact: <sip:ms@10.0.0.9:5070>\r\nContent-Length: 0\r\n\r\n",
        );
        let mut d = Dialog::uac(&invite, &ok, None).unwrap();
        let info = rsip::Request::try_from(
            "INFO sip:b2bua@10.0.0.1 SIP/2.0\r\nFrom: <sip:p@x>;tag=9\r\nTo: <sip:8800@x>;tag=ours\r\n\
             Call-ID: a\r\nCSeq: 7 INFO\r\nContent-Type: application/dtmf-relay\r\nContent-Length: 0\r\n\r\n",
        )
        .unwrap();
        let r = relayed_request(&mut d, &info).unwrap();
        assert_eq!(r.method, Method::Info);
        assert_eq!(r.uri.to_string(), "sip:ms@10.0.0.9:5070");
        assert_eq!(r.call_id(), Some("b-1"));
        assert_eq!(r.cseq(), Some((2, "INFO")));
        assert_eq!(r.header_value("Route"), Some("<sip:10.0.0.5;lr>"));
        assert_eq!(
            r.header_value("Content-Type"),
            Some("application/dtmf-relay")
        );
        assert_eq!(r.header_value("To"), Some("<sip:8800@10.0.0.9>;tag=them"));
    }
}
