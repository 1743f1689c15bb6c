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
//! What crosses between the legs:
//! * provisional responses: the sip crate's `Endpoint::send_request` returns only the final
//!   response, so the callee's 180/183 cannot be observed; the caller gets a locally
//!   generated 180 Ringing (§8.2.6: a UAS may send provisionals of its own) once the first
//!   B-leg INVITE is on its way, and the 100 Trying of its transaction layer before that;
//! * the final response: a 2xx is ACKed at once on the B leg (§13.2.2.4: the UAC core, not the
//!   transaction, ACKs a 2xx) and turned into a 200 to the caller carrying the callee's SDP and
//!   our Contact (§12.1.1: the Contact of a dialog-creating response is the remote target the
//!   caller sends its ACK and BYE to); an error is relayed with the same status (401/407 from
//!   the callee become 403: the caller cannot answer a challenge of a realm it never dealt
//!   with);
//! * failover: a trunk's contact resolves (RFC 3263) to one or more records, tried in order;
//!   Timer B (§17.1.1.2), a transport error, or a 503
//!   (§21.5.4) moves the call to the next record, then to the next trunk with the same
//!   prefix. A trunk already out of service, or whose contact does not resolve, is skipped; a
//!   Timer B marks that record out of service until a probe succeeds (the trunk, once none of
//!   its records is left). When nothing took the call the caller gets 503, also after
//!   timeouts, so that a phone with a peer server fails over;
//! * CANCEL: the caller's CANCEL is answered (200, and 487 to its INVITE, §9.2) by the
//!   transaction layer. `send_request` does not expose the B-leg INVITE's branch, so a CANCEL
//!   matching it (§9.1 requires the same top Via branch) cannot be built here: the B leg is
//!   left to finish, and if it is answered 2xx it is ACKed and hung up at once with a BYE
//!   (§15: the 2xx/CANCEL race is resolved by the UAC with ACK then BYE);
//! * BYE: from either side is answered 200 (§15.1.2) and sent on to the other side (§15.1.1);
//!   other in-dialog requests (INFO DTMF, NOTIFY, …) are relayed and their final status
//!   relayed back; re-INVITEs are refused with 488, which leaves the session as it was
//!   (§14.2).
//!
//! Known limits: no Record-Route/route set on either leg (trunks are reached directly), and a
//! retransmitted 2xx from the callee (our ACK lost) is not re-ACKed: the transaction layer drops
//! it as stray.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use sip::endpoint::{contact_address, SendError};
use sip::headers::name_addr::NameAddr;
use sip::headers::{new_branch, new_tag, MessageExt};
use sip::rsip::headers::UntypedHeader;
use sip::rsip::{self, Method, StatusCode};
use sip::transaction::TsxError;
use sip::transport::{Flow, Protocol};
use sip::{Endpoint, IncomingRequest, Target};
use tokio::net::UdpSocket;

use super::trunks::{SipTarget, Trunk, TrunkTarget};
use crate::dns::Candidate;
use crate::ivr::vxml::DEVICE_HEADER;
use crate::provisioning::mac::Mac;

#[derive(Debug, thiserror::Error)]
pub enum B2buaError {
    #[error("could not build the {method} request: {reason}")]
    Build {
        method: &'static str,
        reason: String,
    },
    #[error("the callee's 2xx has no usable To header")]
    NoToInAnswer,
    #[error("ACK socket: {0}")]
    AckSocket(#[source] std::io::Error),
    #[error(transparent)]
    Send(#[from] SendError),
}

/// What [`B2bua::forward`] did with the INVITE.
pub enum Forwarded {
    /// Answered (or handed to a task that will answer it).
    Done,
    /// The next trunk in line is the built-in IVR: the caller answers the INVITE itself.
    BuiltinIvr(IncomingRequest),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Caller,
    Callee,
}

/// Our half of one dialog: what the requests we send in it carry (§12.2.1.1).
struct Leg {
    call_id: String,
    /// Our URI with our tag (From of the requests we send).
    local: String,
    /// The peer's URI with its tag (To of the requests we send).
    remote: String,
    /// The peer's Contact: Request-URI of the requests we send.
    remote_target: String,
    /// Where those requests go.
    target: Target,
    /// The last CSeq number we used in this dialog (§12.2.1.1: incremented by one each time).
    cseq: AtomicU32,
}

/// Two dialogs joined by sipdm.
struct Bridge {
    caller: Leg,
    callee: Leg,
    trunk: String,
}

impl Bridge {
    fn leg(&self, side: Side) -> &Leg {
        match side {
            Side::Caller => &self.caller,
            Side::Callee => &self.callee,
        }
    }
}

/// What every B-leg INVITE copies from the caller's.
struct Caller {
    /// The caller's From without its tag.
    from: NameAddr,
    dialled: String,
    max_forwards: u32,
    content_type: Option<String>,
    body: Vec<u8>,
    user_agent: Option<String>,
    device: Option<Mac>,
}

/// One B-leg INVITE under way.
struct Attempt {
    call_id: String,
    /// Our From (with our tag).
    from: String,
    request_uri: String,
    protocol: Protocol,
    addr: SocketAddr,
    trunk: String,
}

pub struct B2bua {
    /// Both Call-IDs of every bridged call, each with the side it names.
    calls: Mutex<HashMap<String, (Arc<Bridge>, Side)>>,
    /// ACKs for 2xx are not transactions (§17.1.1.3: the ACK for a 2xx is sent by the UAC
    /// core, end to end), and the sip crate has no stateless send; UDP ACKs go out from this
    /// socket of ours instead. Bound on first use.
    ack_socket: tokio::sync::OnceCell<UdpSocket>,
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
            ack_socket: tokio::sync::OnceCell::new(),
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
            dialled: dialled.to_owned(),
            max_forwards: max_forwards - 1,
            content_type: req.request.header_value("Content-Type").map(str::to_owned),
            body: req.request.body.clone(),
            user_agent: req.request.header_value("User-Agent").map(str::to_owned),
            device,
        };
        let (request, flow, responder) = req.into_parts();
        let Some(responder) = responder else {
            return Forwarded::Done;
        };
        let mut last_status: u16 = 503;
        let mut ringing = false;
        for trunk in candidates {
            let target = match &trunk.target {
                TrunkTarget::BuiltinIvr => {
                    return Forwarded::BuiltinIvr(IncomingRequest::new(
                        request,
                        flow,
                        Some(responder),
                    ));
                }
                TrunkTarget::Sip(t) => t.clone(),
            };
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
                let (attempt, invite) = match build_invite(ep, &caller, &trunk, &target, record) {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::error!(error = %e, "INVITE: could not build the B-leg INVITE");
                        let r = responder.response(StatusCode::ServerInternalError);
                        responder.respond(r);
                        return Forwarded::Done;
                    }
                };
                if !ringing {
                    ringing = true;
                    responder.provisional(&responder.response(StatusCode::Ringing));
                }
                tracing::info!(trunk = %trunk.config.name, to = %attempt.request_uri, record = %record, call_id = %attempt.call_id, "INVITE: forwarding");
                let mut sent = {
                    let ep = ep.clone();
                    let target = Target::Address(attempt.protocol, attempt.addr);
                    tokio::spawn(async move { ep.send_request(invite, target).await })
                };
                enum Next {
                    Answered(Result<Result<rsip::Response, SendError>, tokio::task::JoinError>),
                    Cancelled,
                }
                let next = tokio::select! {
                    r = &mut sent => Next::Answered(r),
                    _ = responder.cancelled() => Next::Cancelled,
                };
                let result = match next {
                    Next::Answered(r) => r,
                    Next::Cancelled => {
                        // The 487 went out with the CANCEL's 200; the B leg is settled in the
                        // background (ACK and BYE if it is answered after all).
                        tracing::info!(call_id = %attempt.call_id, "caller cancelled; B leg left to finish");
                        let this = self.clone();
                        let ep = ep.clone();
                        tokio::spawn(async move {
                            if let Ok(Ok(resp)) = sent.await {
                                if resp.status_code.code() / 100 == 2 {
                                    this.hang_up_answered(&ep, &attempt, &resp).await;
                                }
                            }
                        });
                        return Forwarded::Done;
                    }
                };
                let resp = match result {
                    Err(e) => {
                        tracing::error!(error = %e, "INVITE: B-leg task failed");
                        let r = responder.response(StatusCode::ServerInternalError);
                        responder.respond(r);
                        return Forwarded::Done;
                    }
                    Ok(Err(e)) => {
                        if matches!(e, SendError::Transaction(TsxError::Timeout)) {
                            trunk.record_failed(record, "INVITE timeout");
                        }
                        tracing::warn!(trunk = %trunk.config.name, record = %record, error = %e, "INVITE: no answer from this address, trying the next");
                        // Not the 408 a UAC reports to itself for Timer B: the caller asked a
                        // server that could not reach its trunk, and 503 (§21.5.4) is what
                        // makes a business-continuity phone retry through its peer server at
                        // once (RFC 3263 §4.3), instead of failing this call.
                        last_status = match e.status() {
                            408 => 503,
                            other => other,
                        };
                        continue;
                    }
                    Ok(Ok(resp)) => resp,
                };
                let code = resp.status_code.code();
                match code {
                    200..=299 => {
                        if let Err(e) = self
                            .connect(ep, &request, flow, responder, &attempt, &resp)
                            .await
                        {
                            tracing::warn!(call_id = %attempt.call_id, error = %e, "could not bridge the answered call");
                        }
                        return Forwarded::Done;
                    }
                    503 => {
                        tracing::info!(trunk = %trunk.config.name, record = %record, "INVITE: answered 503, trying the next");
                        last_status = 503;
                        continue;
                    }
                    _ => {
                        tracing::info!(trunk = %trunk.config.name, code, "INVITE: refused by the trunk");
                        let r = relay_error(&responder, &resp);
                        responder.respond(r);
                        return Forwarded::Done;
                    }
                }
            }
        }
        tracing::info!(dialled, last_status, "INVITE: no trunk took the call");
        let r = responder.response(StatusCode::from(last_status));
        responder.respond(r);
        Forwarded::Done
    }

    /// The callee answered: ACK it, answer the caller 200 with the callee's SDP, and remember
    /// both dialogs.
    async fn connect(
        &self,
        ep: &Endpoint,
        request: &rsip::Request,
        flow: Flow,
        responder: sip::transaction::Responder,
        attempt: &Attempt,
        resp: &rsip::Response,
    ) -> Result<(), B2buaError> {
        let callee = match callee_leg(attempt, resp) {
            Ok(l) => l,
            Err(e) => {
                let r = responder.response(StatusCode::BadGateway);
                responder.respond(r);
                return Err(e);
            }
        };
        // §13.2.2.4: the 2xx is ACKed whatever happens to the caller.
        self.send_ack(ep, &callee, attempt).await?;
        if responder.is_cancelled() {
            // §15: the caller cancelled while the callee was answering.
            send_bye(ep, &callee).await;
            return Ok(());
        }
        let mut ok = responder.response(StatusCode::OK);
        let contact = format!("<sip:b2bua@{}>", super::calls::contact_host(ep, &flow));
        ok.headers
            .push(rsip::Header::Contact(rsip::headers::Contact::new(contact)));
        if let Some(ct) = resp.header_value("Content-Type") {
            ok.headers
                .push(rsip::Header::ContentType(rsip::headers::ContentType::new(
                    ct,
                )));
        }
        ok.headers.push(rsip::Header::Other(
            "Allow".into(),
            "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, NOTIFY".into(),
        ));
        ok.body = resp.body.clone();
        let caller = Leg {
            call_id: request.call_id().unwrap_or_default().to_owned(),
            local: ok.header_value("To").unwrap_or_default().to_owned(),
            remote: request.header_value("From").unwrap_or_default().to_owned(),
            remote_target: request
                .header_value("Contact")
                .and_then(|c| NameAddr::parse(c).ok())
                .map(|c| c.uri)
                .unwrap_or_else(|| request.uri.to_string()),
            target: Target::Flow(flow),
            cseq: AtomicU32::new(0),
        };
        let bridge = Arc::new(Bridge {
            caller,
            callee,
            trunk: attempt.trunk.clone(),
        });
        {
            let mut calls = self.calls.lock();
            calls.insert(
                bridge.caller.call_id.clone(),
                (bridge.clone(), Side::Caller),
            );
            calls.insert(
                bridge.callee.call_id.clone(),
                (bridge.clone(), Side::Callee),
            );
        }
        tracing::info!(caller = %bridge.caller.call_id, callee = %bridge.callee.call_id, trunk = %bridge.trunk, "call bridged");
        responder.respond(ok);
        Ok(())
    }

    /// A 2xx that arrived after the caller gave up: ACK, then BYE (§15).
    async fn hang_up_answered(&self, ep: &Endpoint, attempt: &Attempt, resp: &rsip::Response) {
        let callee = match callee_leg(attempt, resp) {
            Ok(l) => l,
            Err(e) => {
                return tracing::warn!(call_id = %attempt.call_id, error = %e, "late 2xx unusable")
            }
        };
        if let Err(e) = self.send_ack(ep, &callee, attempt).await {
            tracing::warn!(call_id = %attempt.call_id, error = %e, "could not ACK the late 2xx");
        }
        send_bye(ep, &callee).await;
    }

    /// §13.2.2.4: ACK with the INVITE's CSeq number, To with the callee's tag, sent to the
    /// remote target. UDP: from our own socket (no transaction, no retransmission); TCP: down
    /// the trunk's connection in a client transaction whose (absent) answer is not awaited.
    async fn send_ack(
        &self,
        ep: &Endpoint,
        callee: &Leg,
        attempt: &Attempt,
    ) -> Result<(), B2buaError> {
        let head = |via: &str| {
            format!(
                "ACK {rt} SIP/2.0\r\n{via}Max-Forwards: 70\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: {cid}\r\nCSeq: 1 ACK\r\n\
                 Content-Length: 0\r\n\r\n",
                rt = callee.remote_target,
                from = callee.local,
                to = callee.remote,
                cid = callee.call_id,
            )
        };
        let Target::Address(protocol, dest) = callee.target.clone() else {
            return Ok(());
        };
        match protocol {
            Protocol::Udp => {
                let sock = self
                    .ack_socket
                    .get_or_try_init(|| async {
                        let ip = super::calls::local_ip_for(ep, attempt.addr);
                        UdpSocket::bind(SocketAddr::new(ip, 0)).await
                    })
                    .await
                    .map_err(B2buaError::AckSocket)?;
                let me = sock.local_addr().map_err(B2buaError::AckSocket)?;
                let text = head(&format!(
                    "Via: SIP/2.0/UDP {me};branch={};rport\r\n",
                    new_branch()
                ));
                let ack = parse_request("ACK", &text)?;
                sock.send_to(&sip::wire::encode_request(&ack), dest)
                    .await
                    .map_err(B2buaError::AckSocket)?;
            }
            Protocol::Tcp | Protocol::Tls => {
                let ack = parse_request("ACK", &head(""))?;
                let ep = ep.clone();
                // Nobody answers an ACK: the transaction ends at Timer F, unheard.
                tokio::spawn(async move {
                    let _ = ep.send_request(ack, Target::Address(protocol, dest)).await;
                });
            }
        }
        Ok(())
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
        let other = match side {
            Side::Caller => Side::Callee,
            Side::Callee => Side::Caller,
        };
        match req.request.method {
            // The caller's ACK of our 200 (ours to the callee went out when it answered).
            Method::Ack => {}
            Method::Bye => {
                {
                    let mut calls = self.calls.lock();
                    calls.remove(&bridge.caller.call_id);
                    calls.remove(&bridge.callee.call_id);
                }
                req.reply(StatusCode::OK);
                tracing::info!(call_id, from = ?side, trunk = %bridge.trunk, "bridged call ended");
                let ep = ep.clone();
                tokio::spawn(async move { send_bye(&ep, bridge.leg(other)).await });
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

fn build_invite(
    ep: &Endpoint,
    caller: &Caller,
    trunk: &Trunk,
    target: &SipTarget,
    record: Candidate,
) -> Result<(Attempt, rsip::Request), B2buaError> {
    let addr = record.addr;
    let call_id = format!("{}@sipdm", new_tag());
    let mut from = caller.from.clone();
    from.params.set("tag", Some(new_tag()));
    let from = from.to_string();
    let request_uri = target.uri(&caller.dialled);
    let local = super::calls::local_ip_for(ep, addr);
    let port = ep
        .local_addrs()
        .iter()
        .find(|a| a.is_ipv4() == addr.is_ipv4())
        .map_or(ep.local_addr().port(), |a| a.port());
    let contact_host = match local {
        std::net::IpAddr::V6(v6) => format!("[{v6}]:{port}"),
        v4 => format!("{v4}:{port}"),
    };
    // Our Contact names the transport the callee reached us by (UDP needs no parameter).
    let transport = match record.protocol {
        Protocol::Udp => String::new(),
        p => format!(";transport={}", p.as_str().to_ascii_lowercase()),
    };
    let mut text = format!(
        "INVITE {request_uri} SIP/2.0\r\nMax-Forwards: {mf}\r\nFrom: {from}\r\nTo: <{to}>\r\nCall-ID: {call_id}\r\n\
         CSeq: 1 INVITE\r\nContact: <sip:b2bua@{contact_host}{transport}>\r\n\
         Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, NOTIFY\r\n",
        mf = caller.max_forwards,
        to = request_uri,
    );
    if let Some(mac) = &caller.device {
        text.push_str(&format!("{DEVICE_HEADER}: {mac}\r\n"));
    }
    if let Some(ua) = &caller.user_agent {
        text.push_str(&format!("User-Agent: {ua}\r\n"));
    }
    if let Some(ct) = &caller.content_type {
        text.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    text.push_str("Content-Length: 0\r\n\r\n");
    let mut invite = parse_request("INVITE", &text)?;
    invite.body = caller.body.clone();
    let attempt = Attempt {
        call_id,
        from,
        request_uri,
        protocol: record.protocol,
        addr,
        trunk: trunk.config.name.clone(),
    };
    Ok((attempt, invite))
}

/// The B-leg dialog the callee's 2xx established (§12.1.2): its To (with the tag) is the
/// remote party, its Contact the remote target. UDP requests go to that Contact's address
/// when it names one; TCP requests stay on the trunk's connection.
fn callee_leg(attempt: &Attempt, resp: &rsip::Response) -> Result<Leg, B2buaError> {
    let remote = resp
        .header_value("To")
        .filter(|t| NameAddr::parse(t).is_ok_and(|n| n.tag().is_some()))
        .ok_or(B2buaError::NoToInAnswer)?
        .to_owned();
    let remote_target = resp
        .header_value("Contact")
        .and_then(|c| NameAddr::parse(c).ok())
        .map(|c| c.uri)
        .unwrap_or_else(|| attempt.request_uri.clone());
    let dest = match attempt.protocol {
        Protocol::Udp => contact_address(&remote_target)
            .filter(|(p, _)| *p == Protocol::Udp)
            .map_or(attempt.addr, |(_, a)| a),
        Protocol::Tcp | Protocol::Tls => attempt.addr,
    };
    Ok(Leg {
        call_id: attempt.call_id.clone(),
        local: attempt.from.clone(),
        remote,
        remote_target,
        target: Target::Address(attempt.protocol, dest),
        cseq: AtomicU32::new(1),
    })
}

/// The caller's copy of the callee's refusal: same status and reason phrase (§16.7 item 6
/// relays the class; a B2BUA may do the same), but a challenge aimed at us becomes 403.
fn relay_error(responder: &sip::transaction::Responder, resp: &rsip::Response) -> rsip::Response {
    let code = resp.status_code.code();
    let status = match code {
        401 | 407 => StatusCode::Forbidden,
        _ => resp.status_code.clone(),
    };
    let mut r = responder.response(status);
    if (300..400).contains(&code) {
        for c in resp.header_values("Contact") {
            r.headers
                .push(rsip::Header::Contact(rsip::headers::Contact::new(c)));
        }
    }
    r
}

/// BYE within `leg` (§15.1.1); failures are logged, the call is over either way.
async fn send_bye(ep: &Endpoint, leg: &Leg) {
    let cseq = leg.cseq.fetch_add(1, Ordering::Relaxed) + 1;
    let text = format!(
        "BYE {rt} SIP/2.0\r\nMax-Forwards: 70\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: {cid}\r\nCSeq: {cseq} BYE\r\n\
         User-Agent: sipdm\r\nContent-Length: 0\r\n\r\n",
        rt = leg.remote_target,
        from = leg.local,
        to = leg.remote,
        cid = leg.call_id,
    );
    let req = match parse_request("BYE", &text) {
        Ok(r) => r,
        Err(e) => return tracing::warn!(call_id = %leg.call_id, error = %e, "no BYE sent"),
    };
    match ep.send_request(req, leg.target.clone()).await {
        Ok(r) if r.status_code.code() < 300 => {}
        Ok(r) => {
            tracing::info!(call_id = %leg.call_id, status = r.status_code.code(), "BYE refused")
        }
        Err(e) => tracing::info!(call_id = %leg.call_id, error = %e, "BYE got no answer"),
    }
}

/// Sends a copy of an in-dialog request (INFO, NOTIFY, …) in the other leg and returns the
/// status to answer the original with (§8.1.3.1: no answer counts as 408).
async fn relay(ep: &Endpoint, leg: &Leg, original: &rsip::Request) -> StatusCode {
    let cseq = leg.cseq.fetch_add(1, Ordering::Relaxed) + 1;
    let method = original.method.to_string();
    let mut text = format!(
        "{method} {rt} SIP/2.0\r\nMax-Forwards: 70\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: {cid}\r\nCSeq: {cseq} {method}\r\n",
        rt = leg.remote_target,
        from = leg.local,
        to = leg.remote,
        cid = leg.call_id,
    );
    for name in [
        "Content-Type",
        "Event",
        "Subscription-State",
        "Info-Package",
    ] {
        if let Some(v) = original.header_value(name) {
            text.push_str(&format!("{name}: {v}\r\n"));
        }
    }
    text.push_str("Content-Length: 0\r\n\r\n");
    let mut req = match parse_request("in-dialog", &text) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "in-dialog request not relayed");
            return StatusCode::ServerInternalError;
        }
    };
    req.body = original.body.clone();
    match ep.send_request(req, leg.target.clone()).await {
        Ok(r) => r.status_code,
        Err(e) => StatusCode::from(e.status()),
    }
}

fn parse_request(method: &'static str, text: &str) -> Result<rsip::Request, B2buaError> {
    rsip::Request::try_from(text).map_err(|e| B2buaError::Build {
        method,
        reason: e.to_string(),
    })
}
