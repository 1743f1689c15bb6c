//! The endpoint: transport → transactions → handlers, and nothing else. Also the public
//! API the server crate starts, queries and stops.
//!
//! Handler chain: the registrar first, then the server crate's handlers in order, then the
//! fallback: OPTIONS → 200 with Allow/Accept, other known methods → 405 with Allow (RFC 3261
//! §8.2.1); unknown methods were already answered 501 by the wire layer (§21.5.2).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use rsip::headers::UntypedHeader;
use rsip::{Header, Method, Request, Response, SipMessage, StatusCode};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::auth::{AuthConfig, Authenticator, DigestGuard};
use crate::handler::{IncomingRequest, RequestHandler};
use crate::headers::params::split_top_level;
use crate::headers::{MessageExt, NameAddr, Via, ACCEPT, ALLOW};
use crate::overload::{InProgress, Overload, OverloadConfig, Shed};
use crate::registrar::{Binding, BindingStore, Registrar, RegistrarConfig, StoreError};
use crate::stats::Stats;
use crate::transaction::client::StartedClient;
use crate::transaction::{RequestDisposition, Timers, TransactionLayer, TsxError, TsxKey};
use crate::transport::{
    DatagramHandler, EventSenders, Flow, Protocol, Transmit, Transport, TransportConfig,
    TransportError, TransportEvent,
};
use crate::wire::{self, normalise, RawMessage, WireError};

#[derive(Debug, Clone)]
pub struct EndpointConfig {
    pub transport: TransportConfig,
    pub timers: Timers,
    pub registrar: RegistrarConfig,
    pub auth: AuthConfig,
    /// `Server` header of our responses (empty: none).
    pub server_header: String,
    /// Host (and port) put in the Via of requests we send, when the listen address is a
    /// wildcard or behind NAT. Defaults to the bound address.
    pub advertised_host: Option<String>,
    /// Dispatcher tasks for TCP and TLS messages (parse, transaction matching, inline
    /// handling); default: one per core. UDP datagrams are handled on the transport's
    /// receiver threads instead ([`TransportConfig::udp_threads`]).
    pub dispatchers: Option<usize>,
    /// Bound on non-INVITE server transactions kept for retransmission absorption.
    pub max_server_transactions: usize,
    /// When new requests are answered 503 + Retry-After instead of taken on.
    pub overload: OverloadConfig,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            transport: TransportConfig::default(),
            timers: Timers::default(),
            registrar: RegistrarConfig::default(),
            auth: AuthConfig::default(),
            server_header: "sipdm".into(),
            advertised_host: None,
            dispatchers: None,
            max_server_transactions: crate::transaction::server::DEFAULT_MAX_TRANSACTIONS,
            overload: OverloadConfig::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("no usable address in contact {0}")]
    NoRoute(String),
    #[error(transparent)]
    Transaction(#[from] TsxError),
}

impl SendError {
    /// The status to act on as if it had been received (RFC 3261 §8.1.3.1).
    pub fn status(&self) -> u16 {
        match self {
            SendError::NoRoute(_) => 503,
            SendError::Transaction(e) => e.status(),
        }
    }
}

/// Where [`Endpoint::send_request`] sends.
///
/// TLS is reached only down connections the peer opened (sipdm accepts TLS but opens no TLS
/// connections): a TLS flow that died, a TLS address with no live connection from it, or a
/// `sips:` / `;transport=tls` contact whose flow is gone all end in a no-route error (503).
#[derive(Debug, Clone)]
pub enum Target {
    /// Down this flow (a TCP flow that died is reconnected to its remote address).
    Flow(Flow),
    /// A fresh (or reused) flow to this address.
    Address(Protocol, SocketAddr),
    /// A registered contact: its flow while alive, else its contact URI.
    Binding(Arc<Binding>),
}

struct Inner {
    cfg: EndpointConfig,
    transport: Arc<Transport>,
    tsx: Arc<TransactionLayer>,
    registrar: Arc<Registrar>,
    guard: Arc<DigestGuard>,
    /// Registrar first, then the server crate's handlers. Swapped whole when a handler is
    /// added (rare), read per request (an Arc clone under a read lock).
    handlers: parking_lot::RwLock<Arc<Vec<Arc<dyn RequestHandler>>>>,
    stats: Arc<Stats>,
    dispatchers: Mutex<Vec<JoinHandle<()>>>,
    overload: Arc<Overload>,
    /// The dispatchers' queues (stream messages waiting count as work in progress).
    events: EventSenders,
}

/// A running SIP endpoint. Cheap to clone.
#[derive(Clone)]
pub struct Endpoint {
    inner: Arc<Inner>,
}

impl Endpoint {
    /// Binds the transports, loads bindings from `store` and starts serving. `handlers` get
    /// every request the registrar does not take (INVITE routing, IVR, …), in order.
    pub async fn start(
        cfg: EndpointConfig,
        store: Arc<dyn BindingStore>,
        authenticator: Arc<dyn Authenticator>,
        handlers: Vec<Arc<dyn RequestHandler>>,
    ) -> Result<Endpoint, StartError> {
        let stats = Arc::new(Stats::default());
        let guard = Arc::new(DigestGuard::new(cfg.auth.clone(), authenticator));
        let registrar =
            Registrar::start(cfg.registrar.clone(), store, guard.clone(), stats.clone()).await?;
        // One stream dispatcher per core.
        let n = cfg
            .dispatchers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1);
        let per_queue = cfg.transport.event_queue.max(16);
        let (senders, receivers): (Vec<_>, Vec<_>) =
            (0..n).map(|_| mpsc::channel(per_queue)).unzip();
        let events = EventSenders::new(senders);
        let transport =
            Transport::bind(cfg.transport.clone(), events.clone(), stats.clone()).await?;
        let transmit: Arc<dyn Transmit> = Arc::new(transport.clone());
        let tsx = TransactionLayer::with_limit(
            transmit,
            cfg.timers,
            stats.clone(),
            cfg.server_header.clone(),
            cfg.max_server_transactions,
        );
        let mut chain: Vec<Arc<dyn RequestHandler>> = vec![registrar.clone()];
        chain.extend(handlers);
        let overload = Overload::new(cfg.overload.clone());
        let inner = Arc::new(Inner {
            cfg,
            transport,
            tsx,
            registrar,
            guard,
            handlers: parking_lot::RwLock::new(Arc::new(chain)),
            stats,
            dispatchers: Mutex::new(Vec::new()),
            overload,
            events,
        });
        *inner.dispatchers.lock() = receivers
            .into_iter()
            .map(|rx| tokio::spawn(dispatch(inner.clone(), rx)))
            .collect();
        inner
            .transport
            .start_udp(Arc::new(Datagrams(Arc::downgrade(&inner))))?;
        for a in inner.transport.local_addrs() {
            tracing::info!(addr = %a, "SIP listening on UDP and TCP");
        }
        for a in inner.transport.tls_local_addrs() {
            tracing::info!(addr = %a, "SIP listening on TLS");
        }
        Ok(Endpoint { inner })
    }

    /// Bound addresses (UDP and TCP share each).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.inner.transport.local_addrs()
    }

    /// Bound TLS addresses (empty when TLS is off).
    pub fn tls_local_addrs(&self) -> Vec<SocketAddr> {
        self.inner.transport.tls_local_addrs()
    }

    /// The first bound address (tests bind port 0 and read it here).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addrs()
            .first()
            .copied()
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    pub fn registrar(&self) -> &Arc<Registrar> {
        &self.inner.registrar
    }

    /// Appends a handler to the chain (after the registrar and earlier handlers). For handlers
    /// that need the endpoint itself (to send requests), created after [`Endpoint::start`].
    pub fn add_handler(&self, handler: Arc<dyn RequestHandler>) {
        let mut h = self.inner.handlers.write();
        let mut next: Vec<_> = h.as_ref().clone();
        next.push(handler);
        *h = Arc::new(next);
    }

    /// For handlers that challenge other methods (INVITE with `authenticate-requests`).
    pub fn digest_guard(&self) -> &Arc<DigestGuard> {
        &self.inner.guard
    }

    pub fn stats(&self) -> &Arc<Stats> {
        &self.inner.stats
    }

    /// Requests being handled now (see [`crate::overload`]).
    pub fn requests_in_progress(&self) -> usize {
        self.inner.overload.in_progress()
    }

    pub fn transaction_layer(&self) -> &Arc<TransactionLayer> {
        &self.inner.tsx
    }

    /// Whether a flow can still carry requests (UDP flows always can).
    pub fn flow_alive(&self, flow: &Flow) -> bool {
        self.inner.transport.flows().is_alive(flow)
    }

    /// Sends an out-of-dialog request (e.g. NOTIFY check-sync) in a client transaction and
    /// returns the final response. The caller builds the request (Request-URI, From, To,
    /// Call-ID, CSeq, …); the top Via is added here. A 401/407 is returned as is (the caller
    /// may retry with credentials). [`crate::uac`] builds on [`Endpoint::start_request`] for
    /// provisionals, CANCEL and the ACK of a 2xx.
    pub async fn send_request(&self, req: Request, target: Target) -> Result<Response, SendError> {
        Ok(self
            .start_request(req, target, None, None)?
            .final_response()
            .await?)
    }

    /// Starts a client transaction for `req` towards `target` without waiting for its answer
    /// (see [`TransactionLayer::start_request`] for `branch` and `observer`).
    pub fn start_request(
        &self,
        mut req: Request,
        target: Target,
        branch: Option<String>,
        observer: Option<mpsc::UnboundedSender<Response>>,
    ) -> Result<StartedClient, SendError> {
        if let Target::Binding(b) = &target {
            // RFC 3327: a binding registered through proxies is reached through them.
            if !b.path.is_empty() && req.header_value("Route").is_none() {
                let mut headers: Vec<Header> = b
                    .path
                    .iter()
                    .map(|p| Header::Route(rsip::headers::Route::new(p.clone())))
                    .collect();
                headers.extend(req.headers.iter().cloned());
                req.headers = headers.into();
            }
        }
        let flow = self.resolve(&target)?;
        let sent_by = self.sent_by(&flow);
        Ok(self
            .inner
            .tsx
            .start_request(req, flow, &sent_by, branch, observer)?)
    }

    /// Sends a request outside any transaction: the ACK of a 2xx (RFC 3261 §13.2.2.4, §17.1.1.3:
    /// "the ACK for a 2xx is sent by the UAC core"), with a top Via of a new branch. Returns the
    /// request as sent (to be sent again for a retransmitted 2xx).
    pub async fn send_stateless(&self, req: Request, target: Target) -> Result<Request, SendError> {
        let flow = self.resolve(&target)?;
        let via = format!(
            "SIP/2.0/{} {};branch={};rport",
            flow.protocol.as_str(),
            self.sent_by(&flow),
            crate::headers::new_branch()
        );
        let mut headers: Vec<Header> = Vec::with_capacity(req.headers.iter().count() + 1);
        headers.push(Header::Via(rsip::headers::Via::new(via)));
        headers.extend(req.headers.iter().cloned());
        let mut sent = req;
        sent.headers = headers.into();
        self.resend_stateless(&sent, &target).await?;
        Ok(sent)
    }

    /// Sends again a request [`Endpoint::send_stateless`] returned, unchanged.
    pub async fn resend_stateless(&self, sent: &Request, target: &Target) -> Result<(), SendError> {
        let flow = self.resolve(target)?;
        self.inner
            .transport
            .send(flow, wire::encode_request(sent))
            .await
            .map_err(|e| SendError::Transaction(TsxError::Transport(e)))?;
        Ok(())
    }

    /// The sent-by of our Via on `flow`.
    fn sent_by(&self, flow: &Flow) -> String {
        match &self.inner.cfg.advertised_host {
            Some(h) => h.clone(),
            None => {
                let local = if flow.local.port() != 0 {
                    flow.local
                } else {
                    self.local_for(flow.remote)
                };
                local.to_string()
            }
        }
    }

    /// [`Endpoint::send_request`], answering one 401/407 challenge with `username` and
    /// `password` (phones that validate NOTIFY by digest, e.g. Cisco SPA). The retry gets the
    /// next CSeq and a new branch ([`crate::auth::authorized_retry`]); the final response of
    /// the retry is returned.
    pub async fn send_request_authenticated(
        &self,
        req: Request,
        target: Target,
        username: &str,
        password: &str,
    ) -> Result<Response, SendError> {
        let first = self.send_request(req.clone(), target.clone()).await?;
        match crate::auth::authorized_retry(&req, &first, username, password) {
            Some(retry) => self.send_request(retry, target).await,
            None => Ok(first),
        }
    }

    fn local_for(&self, remote: SocketAddr) -> SocketAddr {
        let addrs = self.local_addrs();
        addrs
            .iter()
            .find(|a| a.is_ipv4() == remote.is_ipv4())
            .or(addrs.first())
            .copied()
            .unwrap_or(remote)
    }

    fn resolve(&self, target: &Target) -> Result<Flow, SendError> {
        let flow = match target {
            Target::Flow(f) => *f,
            Target::Address(p, a) => Flow {
                protocol: *p,
                local: self.local_for(*a),
                remote: *a,
                conn: 0,
            },
            Target::Binding(b) => match b.flow {
                Some(f) if self.flow_alive(&f) => f,
                _ => {
                    // First Path hop if any (its URI inside <>), else the contact itself.
                    let next_hop = match b.path.first() {
                        Some(p) => NameAddr::parse(p)
                            .map(|n| n.uri)
                            .unwrap_or_else(|_| p.clone()),
                        None => b.contact.clone(),
                    };
                    let (p, a) = contact_address(&next_hop)
                        .ok_or_else(|| SendError::NoRoute(next_hop.clone()))?;
                    if p == Protocol::Tls {
                        // No TLS connections are opened from here: only a live one from that
                        // address (the phone reconnected) can carry the request.
                        return self
                            .inner
                            .transport
                            .flows()
                            .by_remote(Protocol::Tls, a)
                            .ok_or(SendError::NoRoute(next_hop));
                    }
                    Flow {
                        protocol: p,
                        local: self.local_for(a),
                        remote: a,
                        conn: 0,
                    }
                }
            },
        };
        Ok(flow)
    }

    /// Stops listening, then flushes the binding store (bounded wait).
    pub async fn shutdown(&self) {
        self.inner.transport.shutdown();
        for h in self.inner.dispatchers.lock().drain(..) {
            h.abort();
        }
        self.inner.transport.join_receivers().await;
        if tokio::time::timeout(Duration::from_secs(30), self.inner.registrar.flush())
            .await
            .is_err()
        {
            tracing::error!("binding store flush timed out at shutdown");
        }
    }
}

/// Host, port and transport of a contact URI with a literal IP (no DNS here). `sips:` and
/// `;transport=tls` are TLS (RFC 3261 §19.1.2, §26.2.2); the default port is 5060 for UDP and
/// TCP, 5061 for TLS.
pub fn contact_address(uri: &str) -> Option<(Protocol, SocketAddr)> {
    let (scheme, rest) = uri.split_once(':')?;
    let secure = scheme.eq_ignore_ascii_case("sips");
    let mut parts = rest.split(';');
    let userhost = parts.next()?.split('?').next()?;
    let hostport = userhost.rsplit_once('@').map(|x| x.1).unwrap_or(userhost);
    let (host, port) = crate::headers::via::split_host_port(hostport)?;
    let ip: std::net::IpAddr = host.trim_matches(['[', ']']).parse().ok()?;
    let mut proto = if secure { Protocol::Tls } else { Protocol::Udp };
    for p in parts {
        if let Some((k, v)) = p.split_once('=') {
            // sips: is TLS whatever its transport parameter says (RFC 3261 §26.2.2).
            if k.eq_ignore_ascii_case("transport") && !secure {
                proto = Protocol::parse(v)?;
            }
        }
    }
    let default_port = if proto == Protocol::Tls { 5061 } else { 5060 };
    Some((proto, SocketAddr::new(ip, port.unwrap_or(default_port))))
}

/// The endpoint as the UDP receiver threads see it. Weak, so that an endpoint dropped without
/// [`Endpoint::shutdown`] (tests) still ends its receivers and closes its sockets.
struct Datagrams(std::sync::Weak<Inner>);

impl DatagramHandler for Datagrams {
    fn on_datagram(&self, data: Bytes, flow: Flow, queued: Duration) {
        if let Some(inner) = self.0.upgrade() {
            on_message(&inner, data, flow, true, queued);
        }
    }

    fn alive(&self) -> bool {
        self.0.strong_count() > 0
    }
}

async fn dispatch(inner: Arc<Inner>, mut rx: mpsc::Receiver<TransportEvent>) {
    while let Some(ev) = rx.recv().await {
        match ev {
            TransportEvent::Message { data, flow } => {
                // With a backlog, hand handlers to the other workers instead of running them
                // here, so a CPU-heavy mix (digest) uses every core.
                let inline = rx.len() < INLINE_BACKLOG;
                on_message(&inner, data, flow, inline, Duration::ZERO)
            }
            TransportEvent::StreamError { flow, error, head } => {
                let answered = wire::normalise::salvage(&head)
                    .is_some_and(|raw| answer_malformed(&inner, &raw, &error, flow));
                if !answered {
                    Stats::inc(&inner.stats.malformed_dropped);
                }
            }
            TransportEvent::Closed { .. } => {}
        }
    }
}

/// Queue length below which a dispatcher runs handlers itself.
const INLINE_BACKLOG: usize = 128;

/// `queued`: how long a datagram waited in the socket's receive buffer (zero for streams,
/// whose backlog counts as work in progress instead).
fn on_message(inner: &Arc<Inner>, data: Bytes, flow: Flow, inline: bool, queued: Duration) {
    let limit = inner.cfg.transport.max_message_size;
    if data.len() > limit {
        // RFC 3261 §18.1.2, §21.5.14: a datagram is read whole, so the 513 copies its Via,
        // From, To, Call-ID and CSeq wherever they are in it.
        let e = WireError::TooLarge {
            size: data.len(),
            limit,
        };
        let answered = wire::normalise::salvage(&data)
            .is_some_and(|raw| answer_malformed(inner, &raw, &e, flow));
        if !answered {
            Stats::inc(&inner.stats.malformed_dropped);
        }
        return;
    }
    let raw = match normalise(&data) {
        Ok(raw) => raw,
        Err(e) => {
            let answered = wire::normalise::salvage(&data)
                .is_some_and(|raw| answer_malformed(inner, &raw, &e, flow));
            if !answered {
                Stats::inc(&inner.stats.malformed_dropped);
            }
            return;
        }
    };
    if nul_in_headers(&raw) {
        let e = WireError::BadHeader {
            name: "header",
            reason: "NUL byte",
        };
        if !answer_malformed(inner, &raw, &e, flow) {
            Stats::inc(&inner.stats.malformed_dropped);
        }
        return;
    }
    let parsed = match flow.protocol {
        Protocol::Udp => {
            wire::parse::check_datagram_length(&raw).and_then(|_| wire::parse_raw(&raw))
        }
        Protocol::Tcp | Protocol::Tls => wire::parse_raw(&raw),
    };
    let parsed = parsed.and_then(check_mandatory);
    match parsed {
        Ok((SipMessage::Request(req), via)) => on_request(inner, req, via, flow, inline, queued),
        Ok((SipMessage::Response(resp), _)) => {
            inner.tsx.on_response(resp);
        }
        Err(e) => {
            if !answer_malformed(inner, &raw, &e, flow) {
                Stats::inc(&inner.stats.malformed_dropped);
            }
        }
    }
}

/// RFC 3261 §8.1.1: To, From, CSeq, Call-ID, Max-Forwards (its absence not refused: many
/// phones omit it on REGISTER; a value that is no number is) and Via; a usable top Via and a CSeq whose method matches. Returns the parsed
/// top Via with the message, so that it is parsed once.
fn check_mandatory(m: SipMessage) -> Result<(SipMessage, Via), WireError> {
    for (name, label) in [
        ("Via", "Via"),
        ("From", "From"),
        ("To", "To"),
        ("Call-ID", "Call-ID"),
        ("CSeq", "CSeq"),
    ] {
        if m.header_value(name).is_none() {
            return Err(WireError::MissingHeader(label));
        }
    }
    // RFC 2543 peers without a branch are keyed on Call-ID/CSeq/From tag instead.
    let via = m.top_via().ok_or(WireError::BadHeader {
        name: "Via",
        reason: "unparseable",
    })?;
    let (_, method) = m.cseq().ok_or(WireError::BadHeader {
        name: "CSeq",
        reason: "not number and method",
    })?;
    if let SipMessage::Request(r) = &m {
        check_request_values(r)?;
        if crate::wire::parse::parse_method(method).ok() != Some(r.method) {
            return Err(WireError::BadHeader {
                name: "CSeq",
                reason: "method differs from request line",
            });
        }
        for name in ["From", "To"] {
            if m.header_value(name)
                .map(NameAddr::parse)
                .is_none_or(|r| r.is_err())
            {
                return Err(WireError::BadHeader {
                    name: if name == "From" { "From" } else { "To" },
                    reason: "unparseable",
                });
            }
        }
    }
    Ok((m, via))
}

/// A NUL byte in a header value: no SIP grammar allows one, and C-string handling downstream
/// (a switch, a log) would cut the value there.
fn nul_in_headers(raw: &RawMessage<'_>) -> bool {
    raw.headers.iter().any(|h| h.value.as_bytes().contains(&0))
}

/// RFC 3261 §8.2: values a request must get right before anyone acts on it (a registrar
/// that challenged such a request would invite the sender to repeat it with a digest).
/// Max-Forwards is 0 to 255 when present (§20.22), Expires a number of seconds (§20.19). (A
/// NUL byte in a header is refused before parsing, see `nul_in_headers`.)
fn check_request_values(r: &Request) -> Result<(), WireError> {
    let digits = |v: &str| {
        let v = v.trim();
        !v.is_empty() && v.len() <= 10 && v.bytes().all(|b| b.is_ascii_digit())
    };
    if let Some(v) = r.header_value("Max-Forwards") {
        if !digits(v) || v.trim().parse::<u32>().map_or(true, |n| n > 255) {
            return Err(WireError::BadHeader {
                name: "Max-Forwards",
                reason: "not a number from 0 to 255",
            });
        }
    }
    if let Some(v) = r.header_value("Expires") {
        if !digits(v) {
            return Err(WireError::BadHeader {
                name: "Expires",
                reason: "not a number of seconds",
            });
        }
    }
    Ok(())
}

/// Answers a malformed request if it has what a response needs; true if answered.
fn answer_malformed(inner: &Arc<Inner>, raw: &RawMessage<'_>, e: &WireError, flow: Flow) -> bool {
    let (code, reason) = e.status();
    let Some(bytes) = wire::reply::error_response(raw, code, reason, &inner.cfg.server_header)
    else {
        return false;
    };
    tracing::debug!(remote = %flow.remote, error = %e, code, "malformed request answered");
    Stats::inc(&inner.stats.malformed_answered);
    let t = inner.transport.clone();
    let stats = inner.stats.clone();
    tokio::spawn(async move {
        if t.send(flow, Bytes::from(bytes)).await.is_err() {
            Stats::inc(&stats.send_errors);
        }
    });
    true
}

fn on_request(
    inner: &Arc<Inner>,
    mut req: Request,
    mut via: Via,
    flow: Flow,
    inline: bool,
    queued: Duration,
) {
    via.stamp_received(flow.remote);
    replace_top_via(&mut req, &via);
    let response_flow = match flow.protocol {
        Protocol::Tcp | Protocol::Tls => flow,
        Protocol::Udp => Flow::udp(flow.local, via.response_target(5060).unwrap_or(flow.remote)),
    };
    let key = TsxKey::server(&via, &req);
    if req.method == Method::Cancel {
        if let RequestDisposition::New(responder) =
            inner.tsx.on_request(&req, key.clone(), response_flow)
        {
            let matched = inner.tsx.cancel_invite(&key, &req);
            let status = if matched {
                StatusCode::OK
            } else {
                StatusCode::CallTransactionDoesNotExist
            };
            let r = responder.response(status);
            responder.respond(r);
        }
        return;
    }
    // A new out-of-dialog request while overloaded: 503, keeping nothing. ACK (and CANCEL,
    // above) and in-dialog requests finish what was taken on; a retransmission of a request
    // in progress is its transaction's.
    if req.method != Method::Ack {
        if let Some(why) = inner.overload.check(|| inner.events.queued(), queued) {
            if out_of_dialog(&req) && !inner.tsx.knows(&key) {
                shed(inner, &req, &key, response_flow, why);
                return;
            }
        }
    }
    match inner.tsx.on_request(&req, key, response_flow) {
        RequestDisposition::New(responder) => {
            let inc = IncomingRequest::new(req, flow, Some(responder));
            let busy = inner.overload.begin();
            run_now_or_spawn(run_handlers(inner.clone(), inc, busy), inline);
        }
        RequestDisposition::AckForTu => {
            let inc = IncomingRequest::new(req, flow, None);
            let busy = inner.overload.begin();
            run_now_or_spawn(run_handlers(inner.clone(), inc, busy), inline);
        }
        RequestDisposition::Absorbed | RequestDisposition::AckAbsorbed => {}
    }
}

/// No To tag: not inside a dialog (RFC 3261 §12.2.2).
fn out_of_dialog(req: &Request) -> bool {
    req.header_value("To")
        .is_none_or(|to| !crate::headers::has_param(to, "tag"))
}

/// Answers a request the endpoint will not take on now: 503 with a Retry-After from the
/// configured range, stateless (RFC 3261 §21.5.4).
fn shed(inner: &Arc<Inner>, req: &Request, key: &TsxKey, flow: Flow, why: Shed) {
    let secs = inner.overload.retry_after();
    Stats::inc(&inner.stats.overload_rejected);
    inner.overload.log(
        why,
        inner
            .stats
            .overload_rejected
            .load(std::sync::atomic::Ordering::Relaxed),
    );
    tracing::debug!(remote = %flow.remote, method = %req.method, ?why, retry_after = secs, "overloaded: 503");
    inner.tsx.respond_stateless(
        req,
        key,
        flow,
        StatusCode::ServiceUnavailable,
        [Header::RetryAfter(rsip::headers::RetryAfter::new(
            secs.to_string(),
        ))],
    );
}

/// Writes the stamped top Via back (RFC 3581: `received`/`rport` in the request the TU sees
/// and in every response).
fn replace_top_via(req: &mut Request, via: &Via) {
    for h in req.headers.iter_mut() {
        if let Header::Via(v) = h {
            let mut new = via.render();
            // Other Vias folded into this header line follow the stamped top one.
            let mut parts = split_top_level(v.value(), b',');
            let _top = parts.next();
            for r in parts {
                new.push(',');
                new.push_str(r);
            }
            *v = rsip::headers::Via::new(new);
            return;
        }
    }
}

/// Polls `fut` once right here; only if it has to wait (a credential look-up, a full store
/// queue, an INVITE ringing) does it become a task. Most REGISTERs complete in that first
/// poll, which saves a task spawn and a cross-thread wake-up per request. Polling once with a
/// no-op waker is sound: the spawned task polls again with its own waker, and every future
/// registers the waker of its latest poll.
fn run_now_or_spawn(fut: impl std::future::Future<Output = ()> + Send + 'static, inline: bool) {
    if !inline {
        tokio::spawn(fut);
        return;
    }
    let mut fut = Box::pin(fut);
    let waker = noop_waker();
    let mut cx = std::task::Context::from_waker(&waker);
    if fut.as_mut().poll(&mut cx).is_pending() {
        tokio::spawn(fut);
    }
}

fn noop_waker() -> std::task::Waker {
    use std::task::{RawWaker, RawWakerVTable, Waker};
    const VTABLE: RawWakerVTable =
        RawWakerVTable::new(|p| RawWaker::new(p, &VTABLE), |_| {}, |_| {}, |_| {});
    // SAFETY: every vtable function ignores the data pointer, which is never dereferenced.
    unsafe { Waker::from_raw(RawWaker::new(std::ptr::null(), &VTABLE)) }
}

/// `_busy` counts the request as in progress until the chain is done with it.
async fn run_handlers(inner: Arc<Inner>, mut req: IncomingRequest, _busy: InProgress) {
    let handlers = inner.handlers.read().clone();
    let ep = Endpoint { inner };
    for h in handlers.iter() {
        match h.handle(&ep, req).await {
            None => return,
            Some(back) => req = back,
        }
    }
    fallback(req);
}

fn fallback(req: IncomingRequest) {
    if req.responder().is_none() {
        return; // ACK: nothing to answer
    }
    match req.request.method {
        Method::Options => {
            let mut r = req.response(StatusCode::OK);
            r.headers
                .push(Header::Allow(rsip::headers::Allow::new(ALLOW)));
            r.headers
                .push(Header::Accept(rsip::headers::Accept::new(ACCEPT)));
            r.headers
                .push(Header::Supported(rsip::headers::Supported::new("path")));
            req.respond(r);
        }
        _ => {
            let mut r = req.response(StatusCode::MethodNotAllowed);
            r.headers
                .push(Header::Allow(rsip::headers::Allow::new(ALLOW)));
            req.respond(r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contact_addresses() {
        assert_eq!(
            contact_address("sip:1000@10.0.0.5:5062;transport=tcp"),
            Some((Protocol::Tcp, "10.0.0.5:5062".parse().unwrap()))
        );
        assert_eq!(
            contact_address("sip:10.0.0.5"),
            Some((Protocol::Udp, "10.0.0.5:5060".parse().unwrap()))
        );
        assert_eq!(
            contact_address("sip:a@[::1]:5070"),
            Some((Protocol::Udp, "[::1]:5070".parse().unwrap()))
        );
        assert_eq!(
            contact_address("sip:1000@10.0.0.5:5063;transport=TLS"),
            Some((Protocol::Tls, "10.0.0.5:5063".parse().unwrap()))
        );
        assert_eq!(
            contact_address("sips:1000@10.0.0.5"),
            Some((Protocol::Tls, "10.0.0.5:5061".parse().unwrap()))
        );
        assert_eq!(
            contact_address("sips:1000@10.0.0.5:5071;transport=tcp"),
            Some((Protocol::Tls, "10.0.0.5:5071".parse().unwrap()))
        );
        assert_eq!(contact_address("sip:a@host.example"), None);
        assert_eq!(contact_address("garbage"), None);
    }
}
