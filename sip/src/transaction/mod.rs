//! Transactions (RFC 3261 §17).
//!
//! * [`key`] — [`TsxKey`] (server) and [`ClientKey`] matching rules;
//! * [`timers`] — [`Timers`]: T1, T2, T4 and timers A–K derived from them;
//! * [`server`] — non-INVITE server transactions (absorbing retransmissions) and
//!   [`server::ServerInvTsx`];
//! * [`client`] — client transactions, INVITE and non-INVITE, with retransmission, timeout
//!   and the ACK for non-2xx finals.
//!
//! [`TransactionLayer`] sits between the transport (it is given received messages and a
//! [`Transmit`]) and the TU (it hands out [`Responder`]s). A final response consumes the
//! responder, so a transaction cannot be answered twice.

pub mod client;
pub mod key;
pub mod server;
pub mod timers;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use parking_lot::Mutex;
use rsip::headers::UntypedHeader;
use rsip::{Header, Method, Request, Response, StatusCode};

pub use client::TsxError;
pub use key::{ClientKey, TsxKey};
pub use server::{Arrival, InviteState, Kept, NonInviteServerTable, ServerInvTsx};
pub use timers::Timers;

use crate::headers::{name_value, new_tag, MessageExt, NameAddr};
use crate::stats::Stats;
use crate::transport::{Flow, Transmit};
use crate::wire::encode::{encode_response_marked, put_header_lines};
use crate::wire::encode_response;

/// What the layer decided about an incoming request.
pub enum RequestDisposition {
    /// New transaction: give the request and this responder to the TU.
    New(Responder),
    /// Retransmission handled (response re-sent or nothing to send yet).
    Absorbed,
    /// An ACK that matched no INVITE server transaction (ACK for a 2xx): the TU's business.
    AckForTu,
    /// An ACK absorbed by an INVITE server transaction (ACK for a non-2xx).
    AckAbsorbed,
}

pub struct TransactionLayer {
    pub(crate) transmit: Arc<dyn Transmit>,
    pub(crate) timers: Timers,
    non_invite: NonInviteServerTable,
    invites: Mutex<HashMap<TsxKey, Arc<ServerInvTsx>>>,
    /// INVITEs answered 2xx and waiting for their ACK, by (Call-ID, CSeq number).
    accepted: Mutex<HashMap<(String, u32), Arc<ServerInvTsx>>>,
    pub(crate) clients: Mutex<HashMap<ClientKey, tokio::sync::mpsc::UnboundedSender<Response>>>,
    pub(crate) stats: Arc<Stats>,
    server_header: String,
    /// Key of the To tags of non-INVITE transactions, derived from the transaction (SipHash
    /// keyed at random: unpredictable to peers) so that a kept response can be rebuilt
    /// with the same tag ([`Kept::Elided`]).
    tag_key: std::collections::hash_map::RandomState,
}

impl TransactionLayer {
    pub fn new(
        transmit: Arc<dyn Transmit>,
        timers: Timers,
        stats: Arc<Stats>,
        server_header: String,
    ) -> Arc<Self> {
        Self::with_limit(
            transmit,
            timers,
            stats,
            server_header,
            server::DEFAULT_MAX_TRANSACTIONS,
        )
    }

    /// `max_server_transactions` bounds the non-INVITE server transactions remembered for
    /// retransmission absorption (about 0.25 KB each for a response to REGISTER, kept without
    /// the headers copied from the request).
    pub fn with_limit(
        transmit: Arc<dyn Transmit>,
        timers: Timers,
        stats: Arc<Stats>,
        server_header: String,
        max_server_transactions: usize,
    ) -> Arc<Self> {
        Arc::new(TransactionLayer {
            transmit,
            timers,
            non_invite: NonInviteServerTable::with_capacity(
                timers.j(crate::transport::Protocol::Udp),
                max_server_transactions,
            ),
            invites: Mutex::new(HashMap::new()),
            accepted: Mutex::new(HashMap::new()),
            clients: Mutex::new(HashMap::new()),
            stats,
            server_header,
            tag_key: Default::default(),
        })
    }

    /// The To tag this layer gives a non-INVITE transaction: 12 characters of `[0-9a-z]`
    /// (62 bits) from a keyed hash of its key.
    fn tag_for(&self, key: &TsxKey) -> String {
        use std::hash::BuildHasher;
        let mut h = self.tag_key.hash_one(key);
        let mut tag = String::with_capacity(12);
        for _ in 0..12 {
            tag.push(char::from(
                b"0123456789abcdefghijklmnopqrstuvwxyz"[(h % 36) as usize],
            ));
            h /= 36;
        }
        tag
    }

    /// A kept response with the request's headers put back from a retransmission of it.
    fn restore(&self, req: &Request, key: &TsxKey, rest: &Bytes, at: usize) -> Bytes {
        let skeleton = skeleton_of(req, || self.tag_for(key));
        let mut out = BytesMut::with_capacity(rest.len() + 320);
        out.put_slice(&rest[..at]);
        put_header_lines(&mut out, &skeleton);
        out.put_slice(&rest[at..]);
        out.freeze()
    }

    pub fn timers(&self) -> Timers {
        self.timers
    }

    /// Sends now if possible, else in a task.
    pub(crate) fn send_soon(self: &Arc<Self>, flow: Flow, data: Bytes) {
        match self.transmit.try_transmit(flow, data) {
            Ok(()) => Stats::inc(&self.stats.responses_sent),
            Err(data) => {
                let this = self.clone();
                tokio::spawn(async move { this.send(flow, data).await });
            }
        }
    }

    pub(crate) async fn send(&self, flow: Flow, data: Bytes) {
        match self.transmit.transmit(flow, data).await {
            Ok(_) => Stats::inc(&self.stats.responses_sent),
            Err(e) => {
                Stats::inc(&self.stats.send_errors);
                tracing::debug!(remote = %flow.remote, error = %e, "send failed");
            }
        }
    }

    /// Matches a request (its top Via already stamped) against the server transactions.
    /// `response_flow` is where responses go (the connection, or the Via-derived address).
    pub fn on_request(
        self: &Arc<Self>,
        req: &Request,
        key: TsxKey,
        response_flow: Flow,
    ) -> RequestDisposition {
        match req.method {
            Method::Ack => {
                let tsx = self.invites.lock().get(&key.invite_of()).cloned();
                if let Some(tsx) = tsx {
                    let mut st = tsx.state.lock();
                    match &*st {
                        InviteState::Completed { .. } => {
                            *st = InviteState::Confirmed;
                            drop(st);
                            tsx.acked.notify_one();
                            return RequestDisposition::AckAbsorbed;
                        }
                        InviteState::Confirmed => return RequestDisposition::AckAbsorbed,
                        _ => {}
                    }
                }
                // ACK for a 2xx: its own transaction; stop the 2xx retransmissions and hand
                // it to the TU.
                if let (Some(call_id), Some((n, _))) = (req.call_id(), req.cseq()) {
                    let tsx = self.accepted.lock().get(&(call_id.to_string(), n)).cloned();
                    if let Some(tsx) = tsx {
                        tsx.acked.notify_one();
                    }
                }
                RequestDisposition::AckForTu
            }
            Method::Invite => {
                let existing = self.invites.lock().get(&key).cloned();
                if let Some(tsx) = existing {
                    Stats::inc(&self.stats.retransmissions_absorbed);
                    let again = match &*tsx.state.lock() {
                        InviteState::Proceeding { last } => last.clone(),
                        InviteState::Completed { last } | InviteState::Accepted { last } => {
                            Some(last.clone())
                        }
                        _ => None,
                    };
                    if let Some(data) = again {
                        self.send_soon(tsx.flow, data);
                    }
                    return RequestDisposition::Absorbed;
                }
                let dialog = (
                    req.call_id().unwrap_or_default().to_string(),
                    req.cseq().map(|c| c.0).unwrap_or(0),
                );
                let tsx = ServerInvTsx::new(key.clone(), response_flow, dialog);
                self.invites.lock().insert(key.clone(), tsx.clone());
                let responder = Responder::new(self.clone(), key, response_flow, req, Some(tsx));
                // §17.2.1: send 100 Trying at once so the client stops retransmitting.
                let trying = responder.response(StatusCode::Trying);
                responder.provisional(&trying);
                RequestDisposition::New(responder)
            }
            _ => match self.non_invite.arrive(&key, response_flow) {
                Arrival::New => RequestDisposition::New(Responder::new(
                    self.clone(),
                    key,
                    response_flow,
                    req,
                    None,
                )),
                Arrival::Retransmission(again) => {
                    Stats::inc(&self.stats.retransmissions_absorbed);
                    if let Some((kept, flow)) = again {
                        let data = match kept {
                            Kept::Whole(data) => data,
                            Kept::Elided { rest, at } => {
                                self.restore(req, &key, &rest, at as usize)
                            }
                        };
                        self.send_soon(flow, data);
                    }
                    RequestDisposition::Absorbed
                }
            },
        }
    }

    /// CANCEL handling (§9.2): true if it matched an INVITE still proceeding, which is then
    /// answered 487 here; the caller answers the CANCEL itself 200 (or 481 when false).
    pub fn cancel_invite(self: &Arc<Self>, cancel_key: &TsxKey, cancel: &Request) -> bool {
        let Some(tsx) = self.invites.lock().get(&cancel_key.invite_of()).cloned() else {
            return false;
        };
        if !matches!(&*tsx.state.lock(), InviteState::Proceeding { .. }) {
            // Already answered: CANCEL has no effect but still matched (200).
            return true;
        }
        tsx.cancel_flag.store(true, Ordering::Release);
        tsx.cancelled.notify_waiters();
        // 487 to the INVITE, built from the CANCEL (same Call-ID, From, To, CSeq number).
        let responder = Responder::new(
            self.clone(),
            tsx.key.clone(),
            tsx.flow,
            cancel,
            Some(tsx.clone()),
        );
        let mut r = responder.response(StatusCode::RequestTerminated);
        for h in r.headers.iter_mut() {
            if let Header::CSeq(c) = h {
                let n = c
                    .value()
                    .split_whitespace()
                    .next()
                    .unwrap_or("0")
                    .to_string();
                *c = rsip::headers::CSeq::new(format!("{n} INVITE"));
            }
        }
        responder.respond(r);
        true
    }

    /// Records and sends a response of a server transaction. `skeleton` is what the
    /// transaction copied from the request: when the response starts with it (as responses
    /// built by [`Responder::response`] do), a non-INVITE transaction keeps the response
    /// without it ([`Kept::Elided`]).
    fn send_response(
        self: &Arc<Self>,
        key: &TsxKey,
        flow: Flow,
        invite: Option<&Arc<ServerInvTsx>>,
        resp: &Response,
        skeleton: &[Header],
    ) {
        let code = resp.status_code.code();
        let is_final = code >= 200;
        let reliable = flow.protocol.is_reliable();
        let data = match invite {
            None if is_final && reliable => {
                // Nothing is kept: the transaction ends with this response.
                let data = encode_response(resp);
                self.non_invite
                    .respond(key, Kept::Whole(data.clone()), is_final, reliable);
                data
            }
            None => {
                let (data, kept) = keep(resp, skeleton);
                self.non_invite.respond(key, kept, is_final, reliable);
                data
            }
            Some(tsx) => {
                let data = encode_response(resp);
                let mut st = tsx.state.lock();
                match &*st {
                    InviteState::Proceeding { .. } => {}
                    // Final already sent (e.g. 487 after CANCEL): late responses are dropped.
                    _ => return,
                }
                if !is_final {
                    *st = InviteState::Proceeding {
                        last: Some(data.clone()),
                    };
                } else if code < 300 {
                    *st = InviteState::Accepted { last: data.clone() };
                    drop(st);
                    self.accepted.lock().insert(tsx.dialog.clone(), tsx.clone());
                    tokio::spawn(run_invite_accepted(self.clone(), tsx.clone()));
                } else {
                    *st = InviteState::Completed { last: data.clone() };
                    drop(st);
                    tokio::spawn(run_invite_completed(self.clone(), tsx.clone()));
                }
                data
            }
        };
        self.send_soon(flow, data);
    }

    fn abandon(self: &Arc<Self>, key: &TsxKey) {
        self.non_invite.remove(key);
        self.invites.lock().remove(key);
    }

    /// Whether a server transaction with this key is live: a request with it is a
    /// retransmission, which that transaction absorbs.
    pub fn knows(&self, key: &TsxKey) -> bool {
        if key.is_invite() {
            self.invites.lock().contains_key(key)
        } else {
            self.non_invite.contains(key)
        }
    }

    /// Answers `req` with a final response outside any transaction (a stateless UAS, RFC 3261
    /// §8.2.7): nothing is kept, so a retransmission of the request is looked at afresh. The
    /// To tag is derived from `key`, so such a retransmission, answered alike, gets the same
    /// tag. `extra` headers follow the copied ones.
    pub fn respond_stateless(
        self: &Arc<Self>,
        req: &Request,
        key: &TsxKey,
        flow: Flow,
        status: StatusCode,
        extra: impl IntoIterator<Item = Header>,
    ) {
        let mut headers = skeleton_of(req, || self.tag_for(key));
        headers.extend(extra);
        if !self.server_header.is_empty() {
            headers.push(Header::Server(rsip::headers::Server::new(
                self.server_header.as_str(),
            )));
        }
        let resp = Response {
            status_code: status,
            version: rsip::Version::V2,
            headers: headers.into(),
            body: Vec::new(),
        };
        self.send_soon(flow, encode_response(&resp));
    }

    /// The size of the response kept for a non-INVITE server transaction (for tests).
    pub fn kept_len(&self, key: &TsxKey) -> Option<usize> {
        self.non_invite.kept(key).map(|k| k.kept_len())
    }

    /// Live server transactions (for tests and metrics).
    pub fn server_count(&self) -> usize {
        self.non_invite.len() + self.invites.lock().len()
    }

    pub fn server_header(&self) -> &str {
        &self.server_header
    }
}

/// Completed → (ACK) Confirmed → Terminated, retransmitting the final per Timer G until ACK
/// or Timer H (§17.2.1).
async fn run_invite_completed(layer: Arc<TransactionLayer>, tsx: Arc<ServerInvTsx>) {
    let t = layer.timers;
    let reliable = tsx.flow.protocol.is_reliable();
    let deadline = tokio::time::Instant::now() + t.h();
    let mut interval = t.g();
    loop {
        let wait = if reliable { t.h() } else { interval };
        tokio::select! {
            _ = tsx.acked.notified() => {
                tokio::time::sleep(t.i(tsx.flow.protocol)).await;
                break;
            }
            _ = tokio::time::sleep_until((tokio::time::Instant::now() + wait).min(deadline)) => {
                if tokio::time::Instant::now() >= deadline {
                    tracing::debug!(branch = %tsx.key.branch, "timer H: no ACK for final response");
                    break;
                }
                if matches!(&*tsx.state.lock(), InviteState::Confirmed) {
                    tokio::time::sleep(t.i(tsx.flow.protocol)).await;
                    break;
                }
                let last = match &*tsx.state.lock() { InviteState::Completed { last } => Some(last.clone()), _ => None };
                if let Some(data) = last {
                    layer.send(tsx.flow, data).await;
                }
                interval = (interval * 2).min(t.t2_capped());
            }
        }
    }
    *tsx.state.lock() = InviteState::Terminated;
    layer.invites.lock().remove(&tsx.key);
}

/// Accepted (RFC 6026 §7.1): retransmit the 2xx (unreliable transports, T1 doubling to T2)
/// until the ACK arrives or Timer L (64·T1) fires, absorbing INVITE retransmissions meanwhile.
async fn run_invite_accepted(layer: Arc<TransactionLayer>, tsx: Arc<ServerInvTsx>) {
    let t = layer.timers;
    let reliable = tsx.flow.protocol.is_reliable();
    let deadline = tokio::time::Instant::now() + t.h();
    let mut interval = t.g();
    loop {
        let next = if reliable {
            deadline
        } else {
            (tokio::time::Instant::now() + interval).min(deadline)
        };
        tokio::select! {
            _ = tsx.acked.notified() => break,
            _ = tokio::time::sleep_until(next) => {
                if tokio::time::Instant::now() >= deadline {
                    tracing::debug!(branch = %tsx.key.branch, "timer L: no ACK for 2xx");
                    break;
                }
                let last = match &*tsx.state.lock() {
                    InviteState::Accepted { last } => Some(last.clone()),
                    _ => None,
                };
                if let Some(data) = last {
                    layer.send(tsx.flow, data).await;
                }
                interval = (interval * 2).min(t.t2_capped());
            }
        }
    }
    *tsx.state.lock() = InviteState::Terminated;
    layer.invites.lock().remove(&tsx.key);
    layer.accepted.lock().remove(&tsx.dialog);
}

/// The bytes to send for `resp` and what to keep of them for retransmissions.
fn keep(resp: &Response, skeleton: &[Header]) -> (Bytes, Kept) {
    let starts_with_skeleton =
        !skeleton.is_empty() && resp.headers.iter().take(skeleton.len()).eq(skeleton.iter());
    if !starts_with_skeleton {
        let data = encode_response(resp);
        return (data.clone(), Kept::Whole(data));
    }
    let (data, status_end, skeleton_end) = encode_response_marked(resp, skeleton.len());
    let Ok(at) = u16::try_from(status_end) else {
        return (data.clone(), Kept::Whole(data));
    };
    let mut rest = BytesMut::with_capacity(data.len() - (skeleton_end - status_end));
    rest.put_slice(&data[..status_end]);
    rest.put_slice(&data[skeleton_end..]);
    (
        data,
        Kept::Elided {
            rest: rest.freeze(),
            at,
        },
    )
}

/// The Via(s), From, To, Call-ID and CSeq of `req` in its order (§8.2.6.2), with a To tag
/// from `tag` when the request's To has none.
fn skeleton_of(req: &Request, tag: impl FnOnce() -> String) -> Vec<Header> {
    let mut skeleton = Vec::with_capacity(6);
    let mut tag_needed = false;
    for h in req.headers.iter() {
        match h {
            Header::Via(_) | Header::From(_) | Header::CallId(_) | Header::CSeq(_) => {
                skeleton.push(h.clone())
            }
            Header::To(to) => {
                tag_needed = NameAddr::parse(to.value())
                    .map(|n| n.tag().is_none())
                    .unwrap_or(false);
                skeleton.push(h.clone());
            }
            _ => {}
        }
    }
    if tag_needed {
        let tag = tag();
        for h in skeleton.iter_mut() {
            if let Header::To(to) = h {
                *to = rsip::headers::To::new(format!("{};tag={tag}", to.value()));
            }
        }
    }
    skeleton
}

/// The TU's handle on one server transaction.
#[must_use = "a request must be answered; dropping the responder answers 500"]
pub struct Responder {
    layer: Arc<TransactionLayer>,
    key: TsxKey,
    flow: Flow,
    invite: Option<Arc<ServerInvTsx>>,
    /// Via(s), From, To, Call-ID, CSeq of the request, with a To tag chosen once.
    skeleton: Vec<Header>,
    done: bool,
}

impl Responder {
    fn new(
        layer: Arc<TransactionLayer>,
        key: TsxKey,
        flow: Flow,
        req: &Request,
        invite: Option<Arc<ServerInvTsx>>,
    ) -> Responder {
        // INVITE tags name dialogs: random. Non-INVITE ones are derived from the
        // transaction, so that a kept response can be rebuilt ([`Kept::Elided`]).
        let skeleton = skeleton_of(req, || match invite {
            Some(_) => new_tag(),
            None => layer.tag_for(&key),
        });
        Responder {
            layer,
            key,
            flow,
            invite,
            skeleton,
            done: false,
        }
    }

    /// A response with the mandatory headers copied (§8.2.6.2) and a Server header.
    pub fn response(&self, status: StatusCode) -> Response {
        let mut headers: Vec<Header> = Vec::with_capacity(self.skeleton.len() + 4);
        for h in &self.skeleton {
            headers.push(h.clone());
        }
        let server = self.layer.server_header();
        if !server.is_empty() {
            headers.push(Header::Server(rsip::headers::Server::new(server)));
        }
        Response {
            status_code: status,
            version: rsip::Version::V2,
            headers: headers.into(),
            body: Vec::new(),
        }
    }

    /// The To tag this transaction answers with (for dialog-creating TUs).
    pub fn to_tag(&self) -> Option<String> {
        self.skeleton.iter().find_map(|h| match h {
            Header::To(to) => NameAddr::parse(to.value())
                .ok()
                .and_then(|n| n.tag().map(str::to_string)),
            _ => None,
        })
    }

    /// Where responses go.
    pub fn flow(&self) -> Flow {
        self.flow
    }

    /// Sends a provisional (1xx) response; the transaction stays open.
    pub fn provisional(&self, resp: &Response) {
        if resp.status_code.code() < 200 {
            self.layer.send_response(
                &self.key,
                self.flow,
                self.invite.as_ref(),
                resp,
                &self.skeleton,
            );
        }
    }

    /// Sends the final response, consuming the responder.
    pub fn respond(mut self, resp: Response) {
        self.done = true;
        self.layer.send_response(
            &self.key,
            self.flow,
            self.invite.as_ref(),
            &resp,
            &self.skeleton,
        );
    }

    /// Sends a final response to a non-INVITE request and forgets the transaction at once,
    /// as a stateless reply: a retransmission of the request is then processed again. Meant
    /// for answers that are cheap to recompute and harmless to repeat — a digest challenge
    /// (a retransmitted REGISTER just gets a fresh nonce) — so that the 32 s absorption window
    /// is not paid for them. For INVITE it is the same as [`Responder::respond`].
    pub fn respond_stateless(mut self, resp: Response) {
        if self.invite.is_some() {
            return self.respond(resp);
        }
        self.done = true;
        let data = encode_response(&resp);
        self.layer.non_invite.remove(&self.key);
        self.layer.send_soon(self.flow, data);
    }

    /// For INVITE: resolves when a CANCEL matched (the 487 has then been sent already).
    pub async fn cancelled(&self) {
        match &self.invite {
            Some(tsx) => {
                let notified = tsx.cancelled.notified();
                if tsx.is_cancelled() {
                    return;
                }
                notified.await
            }
            None => std::future::pending().await,
        }
    }

    pub fn is_cancelled(&self) -> bool {
        self.invite.as_ref().is_some_and(|t| t.is_cancelled())
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if self.done || self.is_cancelled() {
            return;
        }
        // The TU dropped the request without answering: a bug, but the peer still gets an
        // answer instead of retransmitting into silence.
        if tokio::runtime::Handle::try_current().is_ok() {
            tracing::warn!(branch = %self.key.branch, "request dropped unanswered; sending 500");
            let r = self.response(StatusCode::ServerInternalError);
            self.layer.send_response(
                &self.key,
                self.flow,
                self.invite.as_ref(),
                &r,
                &self.skeleton,
            );
        } else {
            self.layer.abandon(&self.key);
        }
    }
}

/// Header value of the first header named `name` in a list (helper for response builders).
pub fn find_header<'a>(headers: &'a [Header], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .map(name_value)
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests;
