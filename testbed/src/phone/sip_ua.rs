//! The phone's SIP user agent over UDP: client transactions with RFC 3261 retransmission
//! timers, digest answers to 401/407, REGISTER, an outgoing call, and a server side that
//! answers what a phone is sent (the check-sync NOTIFY, BYE, INFO, OPTIONS).
//!
//! One socket per phone for its whole life, as on a real phone: sipdm sends the check-sync
//! NOTIFY to the exact contact the phone registered, so the new registration must come from
//! the same address the old one did.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::digest::{new_cnonce, Authorization, Challenge, DigestError};
use super::sip_msg::{self, hostport, new_branch, param, token, uri_of, Outgoing, SipMsg};

/// RFC 3261 timer values. Defaults are the RFC's; tests may shorten them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SipTimers {
    /// Round-trip estimate: first retransmission interval (timers A and E).
    pub t1: Duration,
    /// Cap of the non-INVITE retransmission interval.
    pub t2: Duration,
    /// How long an answered-with-1xx INVITE may ring before the phone gives up.
    pub ring_timeout: Duration,
}

impl Default for SipTimers {
    fn default() -> Self {
        SipTimers {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            ring_timeout: Duration::from_secs(30),
        }
    }
}

impl SipTimers {
    /// Timers B and F: 64·T1.
    pub fn transaction_timeout(&self) -> Duration {
        self.t1 * 64
    }
}

/// Who the phone is on a line: the identity of the REGISTER and the INVITE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub user: String,
    pub display_name: String,
    pub auth_user: String,
    pub password: String,
}

/// A SIP exchange that failed.
#[derive(Debug, thiserror::Error)]
pub enum UaError {
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot resolve {0}")]
    Resolve(String),
    #[error("{method}: no final response after {after:?}")]
    Timeout { method: String, after: Duration },
    #[error("{method}: rejected with {code}")]
    Rejected {
        method: String,
        code: u16,
        /// The response's Retry-After (RFC 3261 §20.33), when it had one.
        retry_after: Option<Duration>,
    },
    #[error("{method}: credentials refused ({code} after answering the challenge)")]
    AuthFailed { method: String, code: u16 },
    #[error("{method}: cannot answer the challenge: {source}")]
    Digest {
        method: String,
        #[source]
        source: DigestError,
    },
    #[error("building a request: {0}")]
    Build(#[from] sip_msg::ParseError),
    #[error("malformed response: {0}")]
    BadResponse(String),
    #[error("user agent stopped")]
    Stopped,
}

/// One check-sync (or any out-of-dialog NOTIFY) the phone answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyReceived {
    /// The Event header, e.g. `check-sync;reboot=false`.
    pub event: String,
    pub from: SocketAddr,
    pub at: Instant,
}

/// Hooks of an established (or establishing) call, keyed by Call-ID.
struct DialogHook {
    /// The ACK for the 2xx, re-sent when the 2xx is retransmitted (the answerer did not get it).
    ack: Option<(Vec<u8>, SocketAddr)>,
    /// In-dialog requests the peer sent (after they were answered).
    requests: mpsc::UnboundedSender<SipMsg>,
}

struct Shared {
    socket: UdpSocket,
    local: SocketAddr,
    user_agent: String,
    timers: SipTimers,
    /// Our to-tag on responses to out-of-dialog requests.
    tag: String,
    transactions: Mutex<HashMap<String, mpsc::UnboundedSender<SipMsg>>>,
    dialogs: Mutex<HashMap<String, DialogHook>>,
    notifies_seen: Mutex<HashSet<(String, String)>>,
    notifies: watch::Sender<Vec<NotifyReceived>>,
    /// Registration dialogs (registrar, AOR user) → (Call-ID, last CSeq), reused by refreshes
    /// and by the unregister, as RFC 3261 §10.2.4 asks.
    registrations: Mutex<HashMap<(SocketAddr, String), (String, u32)>>,
    parse_errors: AtomicU64,
}

/// The phone's SIP side. Cheap to clone; the socket lives until the last clone is dropped and
/// [`UserAgent::shutdown`] is called (or the runtime ends).
#[derive(Clone)]
pub struct UserAgent {
    shared: Arc<Shared>,
    recv: Arc<Mutex<Option<JoinHandle<()>>>>,
}

/// The outcome of a REGISTER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    pub registrar: SocketAddr,
    /// Expires the registrar granted (from Contact or Expires of the 200), 0 for an unregister.
    pub expires: u32,
    /// Whether a challenge was answered.
    pub challenged: bool,
}

/// Locks a mutex even if a panicking thread poisoned it: the maps stay consistent because no
/// code holds them across a panic point that leaves half an update.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Resolves `host:port` to one address of the same family as `local`, when there is one.
pub async fn resolve(host: &str, port: u16, local: SocketAddr) -> Result<SocketAddr, UaError> {
    let name = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(&name)
        .await
        .map_err(|_| UaError::Resolve(name.clone()))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4() == local.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or(UaError::Resolve(name))
}

/// Host and port of a SIP URI (`sip:user@host:port;params`), default port 5060.
fn uri_hostport(uri: &str) -> Option<(String, u16)> {
    let rest = uri
        .strip_prefix("sips:")
        .or_else(|| uri.strip_prefix("sip:"))?;
    let rest = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let rest = rest.split([';', '?']).next()?;
    if let Some(v6) = rest.strip_prefix('[') {
        let (h, p) = v6.split_once(']')?;
        let port = p
            .strip_prefix(':')
            .and_then(|p| p.parse().ok())
            .unwrap_or(5060);
        return Some((h.to_string(), port));
    }
    match rest.split_once(':') {
        Some((h, p)) => Some((h.to_string(), p.parse().ok()?)),
        None => Some((rest.to_string(), 5060)),
    }
}

/// The delta-seconds of a response's Retry-After (`120`, `120;duration=60`, `120 (busy)`).
fn retry_after(resp: &SipMsg) -> Option<Duration> {
    let v = resp.header("Retry-After")?.trim();
    let digits: &str = &v[..v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len())];
    digits.parse().ok().map(Duration::from_secs)
}

impl UaError {
    /// A 503 with Retry-After: the server asks to be tried again after that long.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            UaError::Rejected {
                code: 503,
                retry_after,
                ..
            } => *retry_after,
            _ => None,
        }
    }
}

/// Removes the transaction's entry when the waiting side is done, however it finishes.
struct TxGuard<'a> {
    shared: &'a Shared,
    branch: String,
}

impl Drop for TxGuard<'_> {
    fn drop(&mut self) {
        lock(&self.shared.transactions).remove(&self.branch);
    }
}

/// A request about to be sent (everything but the Via, which each attempt gets anew).
#[derive(Debug, Clone)]
struct Req {
    method: String,
    uri: String,
    from: String,
    to: String,
    call_id: String,
    cseq: u32,
    headers: Vec<(String, String)>,
    body: Option<(String, Vec<u8>)>,
}

impl UserAgent {
    /// Binds `local` (port 0 for any) and starts answering incoming requests.
    pub async fn bind(
        local: SocketAddr,
        user_agent: &str,
        timers: SipTimers,
    ) -> Result<UserAgent, UaError> {
        let socket = UdpSocket::bind(local).await?;
        let local = socket.local_addr()?;
        let (notifies, _) = watch::channel(Vec::new());
        let shared = Arc::new(Shared {
            socket,
            local,
            user_agent: user_agent.to_string(),
            timers,
            tag: token(),
            transactions: Mutex::default(),
            dialogs: Mutex::default(),
            notifies_seen: Mutex::default(),
            notifies,
            registrations: Mutex::default(),
            parse_errors: AtomicU64::new(0),
        });
        let task = tokio::spawn(receive_loop(Arc::clone(&shared)));
        Ok(UserAgent {
            shared,
            recv: Arc::new(Mutex::new(Some(task))),
        })
    }

    /// The address the phone's Contact carries.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local
    }

    pub fn timers(&self) -> SipTimers {
        self.shared.timers
    }

    /// Stops answering; pending transactions fail with [`UaError::Timeout`].
    pub fn shutdown(&self) {
        if let Some(t) = lock(&self.recv).take() {
            t.abort();
        }
    }

    /// Datagrams that could not be parsed (they are dropped, as a phone drops them).
    pub fn parse_errors(&self) -> u64 {
        self.shared.parse_errors.load(Ordering::Relaxed)
    }

    /// Out-of-dialog NOTIFYs answered so far (retransmissions counted once).
    pub fn notifies(&self) -> Vec<NotifyReceived> {
        self.shared.notifies.borrow().clone()
    }

    /// Waits until at least `n` NOTIFYs have been answered, at most `limit`.
    pub async fn wait_notifies(&self, n: usize, limit: Duration) -> Option<Vec<NotifyReceived>> {
        let mut rx = self.shared.notifies.subscribe();
        let fut = async { rx.wait_for(|v| v.len() >= n).await.map(|v| v.clone()).ok() };
        tokio::time::timeout(limit, fut).await.ok().flatten()
    }

    fn contact(&self, user: &str) -> String {
        format!("<sip:{}@{}>", user, hostport(self.shared.local))
    }

    fn serialise(
        &self,
        req: &Req,
        branch: &str,
        auth: Option<(&str, &str)>,
    ) -> Result<Vec<u8>, UaError> {
        let mut out = Outgoing::new()
            .header(
                "Via",
                format!(
                    "SIP/2.0/UDP {};branch={branch};rport",
                    hostport(self.shared.local)
                ),
            )
            .header("Max-Forwards", "70")
            .header("From", req.from.as_str())
            .header("To", req.to.as_str())
            .header("Call-ID", req.call_id.as_str())
            .header("CSeq", format!("{} {}", req.cseq, req.method));
        for (n, v) in &req.headers {
            out = out.header(n, v.as_str());
        }
        if let Some((name, value)) = auth {
            out = out.header(name, value);
        }
        out = out.header("User-Agent", self.shared.user_agent.as_str());
        if let Some((ct, body)) = &req.body {
            out = out.body(ct, body.clone());
        }
        Ok(out.request(&req.method, &req.uri)?)
    }

    /// Runs one client transaction: sends `bytes`, retransmits on timer A/E, returns the final
    /// response. Provisional responses of an INVITE go to `on_provisional`.
    async fn transaction(
        &self,
        dest: SocketAddr,
        branch: &str,
        method: &str,
        bytes: &[u8],
        on_provisional: &mut (dyn FnMut(&SipMsg) + Send),
    ) -> Result<SipMsg, UaError> {
        let invite = method == "INVITE";
        let timers = self.shared.timers;
        let (tx, mut rx) = mpsc::unbounded_channel();
        lock(&self.shared.transactions).insert(branch.to_string(), tx);
        let _guard = TxGuard {
            shared: &self.shared,
            branch: branch.to_string(),
        };
        let start = tokio::time::Instant::now();
        let mut deadline = start + timers.transaction_timeout();
        let mut interval = timers.t1;
        let mut next = start + interval;
        let mut retransmit = true;
        self.shared.socket.send_to(bytes, dest).await?;
        loop {
            let wake = if retransmit {
                next.min(deadline)
            } else {
                deadline
            };
            match tokio::time::timeout_at(wake, rx.recv()).await {
                Ok(Some(resp)) => {
                    let code = resp.code().unwrap_or(0);
                    if code >= 200 {
                        return Ok(resp);
                    }
                    on_provisional(&resp);
                    if invite {
                        // Timer A stops at the first provisional; the call may now ring.
                        retransmit = false;
                        deadline = tokio::time::Instant::now() + timers.ring_timeout;
                    } else {
                        interval = timers.t2;
                    }
                }
                Ok(None) => return Err(UaError::Stopped),
                Err(_) => {
                    let now = tokio::time::Instant::now();
                    if now >= deadline {
                        return Err(UaError::Timeout {
                            method: method.to_string(),
                            after: now - start,
                        });
                    }
                    self.shared.socket.send_to(bytes, dest).await?;
                    interval = if invite {
                        interval * 2
                    } else {
                        (interval * 2).min(timers.t2)
                    };
                    next = now + interval;
                }
            }
        }
    }

    /// Sends `req`, answering one 401/407 (and a later `stale=true` one) with `account`'s
    /// credentials. Returns the final response and whether a challenge was answered; for an
    /// INVITE, non-2xx finals are ACKed here.
    async fn request_with_auth(
        &self,
        dest: SocketAddr,
        mut req: Req,
        account: &Account,
        on_provisional: &mut (dyn FnMut(&SipMsg) + Send),
    ) -> Result<(SipMsg, Req, bool), UaError> {
        let mut answered = 0;
        let mut auth: Option<(&'static str, String)> = None;
        loop {
            let branch = new_branch();
            let bytes =
                self.serialise(&req, &branch, auth.as_ref().map(|(n, v)| (*n, v.as_str())))?;
            let resp = self
                .transaction(dest, &branch, &req.method, &bytes, on_provisional)
                .await?;
            let code = resp.code().unwrap_or(0);
            if req.method == "INVITE" && code >= 300 {
                self.ack_non_2xx(dest, &req, &branch, &resp).await?;
            }
            if code != 401 && code != 407 {
                return Ok((resp, req, answered > 0));
            }
            let (challenge_header, auth_header) = if code == 401 {
                ("WWW-Authenticate", "Authorization")
            } else {
                ("Proxy-Authenticate", "Proxy-Authorization")
            };
            let challenge =
                Challenge::pick(resp.headers_named(challenge_header)).map_err(|source| {
                    UaError::Digest {
                        method: req.method.clone(),
                        source,
                    }
                })?;
            // A second challenge is a refusal unless the server says our nonce was only stale.
            if answered >= 1 && !(challenge.stale && answered < 2) {
                return Err(UaError::AuthFailed {
                    method: req.method.clone(),
                    code,
                });
            }
            answered += 1;
            let a = Authorization::answer(
                &challenge,
                &account.auth_user,
                &account.password,
                &req.method,
                &req.uri,
                1,
                &new_cnonce(),
            );
            auth = Some((auth_header, a.header_value()));
            req.cseq += 1;
        }
    }

    /// The ACK of a non-2xx final response to an INVITE: part of the INVITE transaction (same
    /// branch, same CSeq number), To with the response's tag.
    async fn ack_non_2xx(
        &self,
        dest: SocketAddr,
        req: &Req,
        branch: &str,
        resp: &SipMsg,
    ) -> Result<(), UaError> {
        let to = resp.header("To").unwrap_or(&req.to).to_string();
        let mut out = Outgoing::new()
            .header(
                "Via",
                format!(
                    "SIP/2.0/UDP {};branch={branch};rport",
                    hostport(self.shared.local)
                ),
            )
            .header("Max-Forwards", "70")
            .header("From", req.from.as_str())
            .header("To", to)
            .header("Call-ID", req.call_id.as_str())
            .header("CSeq", format!("{} ACK", req.cseq));
        for (n, v) in req
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("Route"))
        {
            out = out.header(n, v.as_str());
        }
        let bytes = out.request("ACK", &req.uri)?;
        self.shared.socket.send_to(&bytes, dest).await?;
        Ok(())
    }

    /// REGISTERs `account` (AOR `sip:user@domain`) at `dest` with Request-URI
    /// `sip:request_host` for `expires` seconds; 0 removes the binding of this phone's contact. Refreshes reuse the Call-ID of the first REGISTER.
    pub async fn register(
        &self,
        dest: SocketAddr,
        domain: &str,
        request_host: &str,
        account: &Account,
        expires: u32,
    ) -> Result<Registered, UaError> {
        let key = (dest, account.user.clone());
        let (call_id, cseq) = {
            let mut regs = lock(&self.shared.registrations);
            let e = regs.entry(key.clone()).or_insert_with(|| (token(), 0));
            e.1 += 1;
            e.clone()
        };
        let aor = format!("sip:{}@{}", account.user, domain);
        let from = if account.display_name.is_empty() {
            format!("<{aor}>;tag={}", token())
        } else {
            format!(
                "\"{}\" <{aor}>;tag={}",
                account.display_name.replace('"', ""),
                token()
            )
        };
        let req = Req {
            method: "REGISTER".into(),
            uri: format!("sip:{request_host}"),
            from,
            to: format!("<{aor}>"),
            call_id,
            cseq,
            headers: vec![
                ("Contact".into(), self.contact(&account.user)),
                ("Expires".into(), expires.to_string()),
                (
                    "Allow".into(),
                    "INVITE, ACK, CANCEL, BYE, NOTIFY, INFO, OPTIONS".into(),
                ),
            ],
            body: None,
        };
        let (resp, sent, challenged) = self
            .request_with_auth(dest, req, account, &mut |_| {})
            .await?;
        if let Some(e) = lock(&self.shared.registrations).get_mut(&key) {
            e.1 = e.1.max(sent.cseq);
        }
        let code = resp.code().unwrap_or(0);
        if !(200..300).contains(&code) {
            return Err(UaError::Rejected {
                method: "REGISTER".into(),
                code,
                retry_after: retry_after(&resp),
            });
        }
        // The registrar's word on our binding: the expires of our Contact in the 200.
        let mine = hostport(self.shared.local);
        let granted = resp
            .headers_named("Contact")
            .flat_map(|v| v.split(','))
            .find(|c| uri_of(c).contains(&mine))
            .and_then(|c| param(c, "expires"))
            .and_then(|e| e.parse().ok())
            .or_else(|| resp.header("Expires").and_then(|e| e.trim().parse().ok()))
            .unwrap_or(if expires == 0 { 0 } else { expires });
        Ok(Registered {
            registrar: dest,
            expires: granted,
            challenged,
        })
    }

    /// Places a call to `target` (a SIP URI) through `dest` with `sdp` as offer. Returns the
    /// established dialog once the 2xx is ACKed.
    pub async fn invite(
        &self,
        dest: SocketAddr,
        domain: &str,
        target: &str,
        account: &Account,
        sdp: &str,
    ) -> Result<Dialog, UaError> {
        let call_id = token();
        let local_tag = token();
        let aor = format!("sip:{}@{}", account.user, domain);
        let from = if account.display_name.is_empty() {
            format!("<{aor}>;tag={local_tag}")
        } else {
            format!(
                "\"{}\" <{aor}>;tag={local_tag}",
                account.display_name.replace('"', "")
            )
        };
        let req = Req {
            method: "INVITE".into(),
            uri: target.to_string(),
            from,
            to: format!("<{target}>"),
            call_id: call_id.clone(),
            cseq: 1,
            headers: vec![
                ("Contact".into(), self.contact(&account.user)),
                (
                    "Allow".into(),
                    "INVITE, ACK, CANCEL, BYE, NOTIFY, INFO, OPTIONS".into(),
                ),
            ],
            body: Some(("application/sdp".into(), sdp.as_bytes().to_vec())),
        };
        // In-dialog requests may arrive as soon as the 2xx is sent: hook the Call-ID first.
        let (req_tx, req_rx) = mpsc::unbounded_channel();
        lock(&self.shared.dialogs).insert(
            call_id.clone(),
            DialogHook {
                ack: None,
                requests: req_tx,
            },
        );
        let mut provisional = Vec::new();
        let result = self
            .request_with_auth(dest, req, account, &mut |r| {
                if let Some(c) = r.code() {
                    provisional.push(c)
                }
            })
            .await;
        let (resp, sent, _) = match result {
            Ok(r) => r,
            Err(e) => {
                lock(&self.shared.dialogs).remove(&call_id);
                return Err(e);
            }
        };
        let code = resp.code().unwrap_or(0);
        if !(200..300).contains(&code) {
            lock(&self.shared.dialogs).remove(&call_id);
            return Err(UaError::Rejected {
                method: "INVITE".into(),
                code,
                retry_after: retry_after(&resp),
            });
        }
        let remote_to = resp.header("To").unwrap_or(&sent.to).to_string();
        let remote_target = resp
            .header("Contact")
            .map(|c| uri_of(c).to_string())
            .unwrap_or_else(|| target.to_string());
        // The route set is the Record-Route of the 2xx in reverse (RFC 3261 §12.1.2).
        let mut route: Vec<String> = resp
            .headers_named("Record-Route")
            .flat_map(|v| v.split(','))
            .map(|r| r.trim().to_string())
            .collect();
        route.reverse();
        let next_hop = match route
            .first()
            .map(|r| uri_of(r))
            .or(Some(remote_target.as_str()))
            .and_then(uri_hostport)
        {
            Some((h, p)) => resolve(&h, p, self.shared.local).await.unwrap_or(dest),
            None => dest,
        };
        let dialog = Dialog {
            ua: self.clone(),
            call_id: call_id.clone(),
            from: sent.from.clone(),
            to: remote_to,
            remote_target,
            route,
            cseq: sent.cseq,
            next_hop,
            account: account.clone(),
            answer: String::from_utf8_lossy(&resp.body).into_owned(),
            provisional,
            requests: req_rx,
            ended: false,
        };
        let ack = dialog.build("ACK", sent.cseq, None)?;
        self.shared.socket.send_to(&ack, next_hop).await?;
        if let Some(h) = lock(&self.shared.dialogs).get_mut(&call_id) {
            h.ack = Some((ack, next_hop));
        }
        Ok(dialog)
    }
}

/// An established call (UAC side).
pub struct Dialog {
    ua: UserAgent,
    pub call_id: String,
    from: String,
    to: String,
    remote_target: String,
    route: Vec<String>,
    cseq: u32,
    next_hop: SocketAddr,
    account: Account,
    /// SDP answer of the 2xx.
    pub answer: String,
    /// Codes of the provisional responses, in order (100, 180, 183…).
    pub provisional: Vec<u16>,
    requests: mpsc::UnboundedReceiver<SipMsg>,
    ended: bool,
}

impl Dialog {
    fn build(
        &self,
        method: &str,
        cseq: u32,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<Vec<u8>, UaError> {
        let branch = new_branch();
        self.build_with_branch(method, cseq, &branch, body, None)
    }

    fn build_with_branch(
        &self,
        method: &str,
        cseq: u32,
        branch: &str,
        body: Option<(&str, Vec<u8>)>,
        auth: Option<(&str, &str)>,
    ) -> Result<Vec<u8>, UaError> {
        let mut out = Outgoing::new()
            .header(
                "Via",
                format!(
                    "SIP/2.0/UDP {};branch={branch};rport",
                    hostport(self.ua.shared.local)
                ),
            )
            .header("Max-Forwards", "70")
            .header("From", self.from.as_str())
            .header("To", self.to.as_str())
            .header("Call-ID", self.call_id.as_str())
            .header("CSeq", format!("{cseq} {method}"));
        for r in &self.route {
            out = out.header("Route", r.as_str());
        }
        if let Some((n, v)) = auth {
            out = out.header(n, v);
        }
        out = out.header("User-Agent", self.ua.shared.user_agent.as_str());
        if let Some((ct, b)) = body {
            out = out.body(ct, b);
        }
        Ok(out.request(method, &self.remote_target)?)
    }

    /// A new in-dialog request (BYE, INFO), answering a challenge once.
    async fn request(
        &mut self,
        method: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<SipMsg, UaError> {
        let mut auth: Option<(&'static str, String)> = None;
        for _ in 0..2 {
            self.cseq += 1;
            let branch = new_branch();
            let bytes = self.build_with_branch(
                method,
                self.cseq,
                &branch,
                body.clone(),
                auth.as_ref().map(|(n, v)| (*n, v.as_str())),
            )?;
            let resp = self
                .ua
                .transaction(self.next_hop, &branch, method, &bytes, &mut |_| {})
                .await?;
            let code = resp.code().unwrap_or(0);
            if (code == 401 || code == 407) && auth.is_none() {
                let (ch, ah) = if code == 401 {
                    ("WWW-Authenticate", "Authorization")
                } else {
                    ("Proxy-Authenticate", "Proxy-Authorization")
                };
                let c =
                    Challenge::pick(resp.headers_named(ch)).map_err(|source| UaError::Digest {
                        method: method.into(),
                        source,
                    })?;
                let a = Authorization::answer(
                    &c,
                    &self.account.auth_user,
                    &self.account.password,
                    method,
                    &self.remote_target,
                    1,
                    &new_cnonce(),
                );
                auth = Some((ah, a.header_value()));
                continue;
            }
            if !(200..300).contains(&code) {
                return Err(UaError::Rejected {
                    method: method.into(),
                    code,
                    retry_after: retry_after(&resp),
                });
            }
            return Ok(resp);
        }
        Err(UaError::AuthFailed {
            method: method.into(),
            code: 401,
        })
    }

    /// Sends one key as SIP INFO `application/dtmf-relay` (the Cisco/Polycom form).
    pub async fn send_info_dtmf(&mut self, key: char, duration_ms: u32) -> Result<(), UaError> {
        let body = format!("Signal={key}\r\nDuration={duration_ms}\r\n").into_bytes();
        self.request("INFO", Some(("application/dtmf-relay", body)))
            .await
            .map(|_| ())
    }

    /// Waits for the peer's BYE (already answered with 200), at most `limit`. Other in-dialog
    /// requests (INFO, re-INVITE refreshes) are skipped.
    pub async fn wait_bye(&mut self, limit: Duration) -> bool {
        if self.ended {
            return true;
        }
        let until = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(until, self.requests.recv()).await {
                Ok(Some(m)) if m.method() == Some("BYE") => {
                    self.ended = true;
                    return true;
                }
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => return false,
            }
        }
    }

    /// Hangs up with BYE (unless the peer already did).
    pub async fn hangup(&mut self) -> Result<(), UaError> {
        if self.ended {
            return Ok(());
        }
        self.ended = true;
        self.request("BYE", None).await.map(|_| ())
    }

    pub fn ended(&self) -> bool {
        self.ended
    }
}

impl Drop for Dialog {
    fn drop(&mut self) {
        lock(&self.ua.shared.dialogs).remove(&self.call_id);
    }
}

/// Reads datagrams until the socket fails or the task is aborted.
async fn receive_loop(shared: Arc<Shared>) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, from) = match shared.socket.recv_from(&mut buf).await {
            Ok(r) => r,
            // ICMP port-unreachable from an earlier send surfaces here on some systems: not fatal.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => continue,
            Err(_) => return,
        };
        // Keep-alive CRLFs (RFC 5626) and stray bytes.
        if buf[..n].iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        let msg = match SipMsg::parse(&buf[..n]) {
            Ok(m) => m,
            Err(e) => {
                shared.parse_errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%from, "dropping datagram: {e}");
                continue;
            }
        };
        if msg.code().is_some() {
            handle_response(&shared, msg).await;
        } else {
            handle_request(&shared, msg, from).await;
        }
    }
}

async fn handle_response(shared: &Shared, msg: SipMsg) {
    let Some(branch) = msg.top_branch() else {
        return;
    };
    let tx = lock(&shared.transactions).get(&branch).cloned();
    if let Some(tx) = tx {
        let _ = tx.send(msg);
        return;
    }
    // A retransmitted 2xx to our INVITE: the ACK was lost, send it again.
    let is_invite_2xx = msg.code().is_some_and(|c| (200..300).contains(&c))
        && msg.cseq().is_some_and(|(_, m)| m == "INVITE");
    if is_invite_2xx {
        let ack = msg
            .call_id()
            .and_then(|c| lock(&shared.dialogs).get(c).and_then(|h| h.ack.clone()));
        if let Some((bytes, to)) = ack {
            let _ = shared.socket.send_to(&bytes, to).await;
        }
    }
}

async fn handle_request(shared: &Shared, msg: SipMsg, from: SocketAddr) {
    let method = msg.method().unwrap_or_default().to_string();
    if method == "ACK" {
        return;
    }
    let in_dialog = msg.to_tag().is_some();
    let call_id = msg.call_id().unwrap_or_default().to_string();
    let dialog = lock(&shared.dialogs)
        .get(&call_id)
        .map(|h| h.requests.clone());
    let code = match (method.as_str(), dialog) {
        (_, Some(tx)) if in_dialog => {
            // BYE, INFO, UPDATE, re-INVITE of our call. A re-INVITE would need an SDP answer;
            // the IVR call never needs one, so it is refused without ending the call.
            let code = if method == "INVITE" { 488 } else { 200 };
            let _ = tx.send(msg.clone());
            code
        }
        ("NOTIFY", _) if !in_dialog => {
            let key = (call_id, msg.header("CSeq").unwrap_or_default().to_string());
            if lock(&shared.notifies_seen).insert(key) {
                let event = msg.header("Event").unwrap_or_default().to_string();
                shared.notifies.send_modify(|v| {
                    v.push(NotifyReceived {
                        event,
                        from,
                        at: Instant::now(),
                    })
                });
            }
            200
        }
        ("OPTIONS", _) => 200,
        ("INVITE", _) => 486,
        (_, _) if in_dialog => 481,
        ("BYE", _) | ("INFO", _) | ("CANCEL", _) => 481,
        _ => 501,
    };
    let bytes = sip_msg::response_to(&msg, code, &shared.tag);
    let _ = shared.socket.send_to(&bytes, from).await;
}
