//! A simulated desk phone that does what a real one does in sipdm's provisioning flows.
//!
//! The phone obeys only its files: from the provisioning URL DHCP gave it (option 66) it walks
//! its vendor's chain of files as the firmware does ([`chain`]: Polycom's master and the files it
//! names, Yealink's common file then its own, Cisco's `spa$PSN.cfg` then wherever `Profile_Rule`
//! points…); every later fetch goes where the files said (their provisioning URL), never back
//! to the DHCP URL; SIP servers, credentials, hotline and what a check-sync does all come from
//! the files, and a file that leaves out one of them is an error naming the key.
//!
//! Zero touch: walk the chain, parse, REGISTER. IVR provisioning: the same as `gcti_provisioning`, then lift the handset
//! (the hotline dials the IVR), key the extension as RFC 4733 events (or SIP INFO) once the
//! prompt plays, hang up, answer the check-sync NOTIFY, re-fetch, unregister the provisioning
//! identity and register the new DN.
//!
//! Every wait is bounded; every failure names the step it happened in ([`Step`]), which is what
//! the fleet runner's "failures by step" table counts.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use testbed::phone::{Phone, PhoneSpec, Vendor};
//! let mut phone = Phone::new(PhoneSpec {
//!     mac: "0004f2000001".parse()?,
//!     vendor: Vendor::Polycom,
//!     prov_url: "http://127.0.0.1:8080/fs/dm/prov".into(),
//!     fallback_prov_urls: Vec::new(),
//!     local_ip: "127.0.0.1".parse()?,
//! })
//! .await?;
//! let done = phone.run_ivr_provisioning("1001").await?;
//! assert_eq!(done.config.user, "1001");
//! assert_eq!(phone.check_sync_count(), 1);
//! # Ok(()) }
//! ```

pub mod chain;
pub mod config_parse;
pub mod digest;
pub mod http;
pub mod rtp;
pub mod sdp;
pub mod sip_msg;
pub mod sip_ua;
pub mod vendor;

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

pub use chain::ChainError;
pub use config_parse::{
    CheckSyncAction, CheckSyncPolicy, ConfigError, PhoneConfig, Redundancy, Registrar, Transport,
};
pub use http::{Fetched, HttpError};
pub use rtp::{DtmfShape, MediaStats, RtpError};
pub use sdp::SdpError;
pub use sip_ua::{Account, NotifyReceived, Registered, SipTimers, UaError, UserAgent};
pub use vendor::{Mac, Vendor};

/// Who the simulated phone is and where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhoneSpec {
    pub mac: Mac,
    pub vendor: Vendor,
    /// The provisioning URL as DHCP option 66 gives it, e.g. `http://127.0.0.1:8080/fs/dm/prov`:
    /// where the first walk down the file chain starts. Later fetches go where the files say.
    pub prov_url: String,
    /// Other nodes serving the same files (a pair behind one name, `fs1` resolving to both):
    /// tried in order when the current one does not answer, as a phone moves to the next
    /// address of its provisioning server.
    pub fallback_prov_urls: Vec<String>,
    /// Address its SIP and RTP sockets bind (port 0) and its Contact and SDP carry.
    pub local_ip: IpAddr,
}

/// How keyed digits reach the IVR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtmfMode {
    /// RFC 4733 telephone-events in the RTP stream (what phones do by default).
    Rfc4733,
    /// SIP INFO with `application/dtmf-relay`, one request per key.
    SipInfo,
}

/// Knobs of the simulation; the defaults are what a phone does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhoneOptions {
    pub timers: SipTimers,
    pub dtmf: DtmfMode,
    pub dtmf_shape: DtmfShape,
    /// Expires asked for in REGISTER.
    pub register_expires: u32,
    /// Per-fetch HTTP timeout.
    pub http_timeout: Duration,
    /// The DNS server (`ip:port`) DHCP option 6 gave the phone: host names in provisioning
    /// URLs are asked of it. `None`: the system's resolver.
    pub dns: Option<SocketAddr>,
    /// RTP packets of the prompt to hear before keying (a user waits for the voice).
    pub prompt_packets: u64,
    /// How long to wait for the prompt to start.
    pub prompt_timeout: Duration,
    /// How long to wait for the IVR's BYE after the last key before hanging up ourselves.
    pub bye_timeout: Duration,
    /// How long to wait for the check-sync NOTIFY after the call.
    pub notify_timeout: Duration,
    /// Unregister the provisioning identity before registering the new one.
    pub unregister_old: bool,
    /// Bound of a whole `run_*` flow.
    pub overall_timeout: Duration,
    /// How many times the IVR flow starts over (re-fetch, re-register, re-dial) after a step
    /// failed, as a phone whose server went away keeps trying; in zero touch, how many times
    /// the boot fetch and the REGISTER are each tried. 1 = no retry.
    pub flow_attempts: u32,
    /// Wait before the next attempt ([`PhoneOptions::flow_attempts`]), drawn at random
    /// between half and one and a half times this: phones that failed together (a boot storm,
    /// a server restart) do not all come back in the same instant. Real phones wait about
    /// 30 s after a failed registration (Yealink `reg_fail_retry_interval`, Cisco "Reg Retry
    /// Intvl").
    pub retry_interval: Duration,
    /// A 503 with Retry-After (to a REGISTER or a file fetch) is waited out, then the same
    /// request is tried again, as phones do; a Retry-After longer than this is waited this
    /// long.
    pub max_retry_after: Duration,
    /// Most 503s with Retry-After waited out in a row for one request before it counts as
    /// failed.
    pub retry_after_waits: u32,
    /// A registration is refreshed at a random point within these percentages of the
    /// expiry the registrar granted, so that a fleet that booted together does not refresh
    /// together ([`Phone::refresh_due`]).
    pub refresh_percent: std::ops::RangeInclusive<u32>,
}

impl Default for PhoneOptions {
    fn default() -> Self {
        PhoneOptions {
            timers: SipTimers::default(),
            dtmf: DtmfMode::Rfc4733,
            dtmf_shape: DtmfShape::default(),
            register_expires: 3600,
            http_timeout: Duration::from_secs(10),
            dns: None,
            prompt_packets: 5,
            prompt_timeout: Duration::from_secs(10),
            bye_timeout: Duration::from_secs(15),
            notify_timeout: Duration::from_secs(20),
            unregister_old: true,
            overall_timeout: Duration::from_secs(120),
            flow_attempts: 1,
            retry_interval: Duration::from_millis(200),
            max_retry_after: Duration::from_secs(120),
            retry_after_waits: 10,
            refresh_percent: 70..=90,
        }
    }
}

/// A step of the provisioning flows, as the fleet summary counts failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Step {
    Fetch,
    Register,
    Invite,
    Dtmf,
    Notify,
    Refetch,
    Reregister,
}

impl Step {
    pub const ALL: [Step; 7] = [
        Step::Fetch,
        Step::Register,
        Step::Invite,
        Step::Dtmf,
        Step::Notify,
        Step::Refetch,
        Step::Reregister,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Step::Fetch => "fetch",
            Step::Register => "register",
            Step::Invite => "invite",
            Step::Dtmf => "dtmf",
            Step::Notify => "notify",
            Step::Refetch => "refetch",
            Step::Reregister => "reregister",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a step failed.
#[derive(Debug, thiserror::Error)]
pub enum PhoneError {
    #[error("HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("the file did not change (304) where a new one was expected")]
    NotModified,
    #[error("configuration file: {0}")]
    Config(#[from] ConfigError),
    #[error("file chain: {0}")]
    Chain(#[from] ChainError),
    #[error("the file says to ignore check-sync ({0}): the phone would not re-fetch")]
    CheckSyncIgnored(String),
    #[error(transparent)]
    Sip(#[from] UaError),
    #[error("no registrar accepted the registration: {0}")]
    NotRegistered(String),
    #[error("the file configures no hotline (IVR number)")]
    NoHotline,
    #[error("SDP answer: {0}")]
    Sdp(#[from] SdpError),
    #[error("media: {0}")]
    Media(#[from] RtpError),
    #[error("no prompt RTP within {0:?}")]
    NoPrompt(Duration),
    #[error("no check-sync NOTIFY within {0:?}")]
    NoNotify(Duration),
    #[error("the new file names user {got:?}, expected {expected:?}")]
    WrongIdentity { expected: String, got: String },
    #[error("the file must be fetched before this step")]
    NoConfig,
    #[error("flow did not finish within {0:?}")]
    Overall(Duration),
}

/// How long a step took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepTiming {
    pub step: Step,
    pub elapsed: Duration,
}

/// What happened on the IVR call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallReport {
    /// Provisional response codes seen (100, 180…).
    pub provisional: Vec<u16>,
    pub media: MediaStats,
    /// From sending the INVITE to the ACKed 2xx (challenge included).
    pub answered_after: Duration,
    /// The IVR hung up (true) or the phone did after [`PhoneOptions::bye_timeout`] (false).
    pub ivr_hung_up: bool,
}

/// A phone that reached its final registration.
#[derive(Debug, Clone)]
pub struct Provisioned {
    /// The configuration it registered with (the new DN's after IVR provisioning).
    pub config: PhoneConfig,
    pub registered: Vec<Registered>,
    pub timings: Vec<StepTiming>,
    /// From the start of the flow to the final registration: time-to-provisioned.
    pub total: Duration,
    pub call: Option<CallReport>,
    /// Events of the NOTIFYs answered during the flow.
    pub notifies: Vec<String>,
    /// What each check-sync the phone acted on made it do (its file's policy applied to the
    /// event), in order: `(event, action)`.
    pub check_sync_actions: Vec<(String, CheckSyncAction)>,
}

/// A flow that stopped at `step`.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {error}")]
pub struct FlowError {
    pub step: Step,
    #[source]
    pub error: PhoneError,
    /// Steps that completed before it.
    pub timings: Vec<StepTiming>,
    pub elapsed: Duration,
}

/// A simulated phone: one SIP socket for its lifetime, an HTTP client, the last file's ETag.
pub struct Phone {
    spec: PhoneSpec,
    options: PhoneOptions,
    ua: UserAgent,
    http: reqwest::Client,
    /// URL → (ETag, body) of every file of the chain last fetched: conditional GETs, and the
    /// copy a 304 stands for.
    files: HashMap<String, (Option<String>, String)>,
    config: Option<PhoneConfig>,
    /// What each check-sync made it do.
    actions: Vec<(String, CheckSyncAction)>,
    /// Where the current identity is registered, for the unregister.
    bindings: Vec<Binding>,
    /// Index in [`Phone::prov_urls`] of the provisioning server that answered last.
    prov_index: usize,
    /// When the registrations are to be refreshed (jittered within the granted expiry).
    refresh_at: Option<Instant>,
    /// 503s with Retry-After waited out (REGISTER and fetches), shared with register tasks.
    retry_after_waits: std::sync::Arc<std::sync::atomic::AtomicU32>,
    /// Attempts made again after a failed one ([`PhoneOptions::flow_attempts`]), by the step
    /// that failed (a failed refresh counts as [`Step::Register`]).
    retries: std::collections::BTreeMap<Step, u32>,
}

/// One registration this phone holds.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Binding {
    addr: SocketAddr,
    domain: String,
    request_host: String,
    account: Account,
}

fn account_of(c: &PhoneConfig) -> Account {
    Account {
        user: c.user.clone(),
        display_name: c.display_name.clone(),
        auth_user: c.auth_user.clone(),
        password: c.password.clone(),
    }
}

/// How a phone waits out 503s with Retry-After.
#[derive(Clone)]
struct Patience {
    /// Longest wait.
    cap: Duration,
    /// Most waits in a row for one request.
    most: u32,
    /// Waits so far (the phone's count).
    waited: std::sync::Arc<std::sync::atomic::AtomicU32>,
}

/// REGISTERs through `ua`, waiting out each 503's Retry-After (capped at `patience.0`, at
/// most `patience.1` times in a row) and trying again, as phones do. `to`: registrar
/// address, domain, Request-URI host.
async fn register_obeying(
    ua: &UserAgent,
    to: (SocketAddr, &str, &str),
    account: &Account,
    expires: u32,
    patience: Patience,
) -> Result<Registered, UaError> {
    let (addr, domain, request_host) = to;
    let mut waits = 0;
    loop {
        let r = ua
            .register(addr, domain, request_host, account, expires)
            .await;
        match r.as_ref().err().and_then(UaError::retry_after) {
            Some(d) if waits < patience.most => {
                waits += 1;
                patience
                    .waited
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let d = d.min(patience.cap);
                tracing::debug!(registrar = %addr, user = %account.user, wait = ?d, "503 with Retry-After: registering again after it");
                tokio::time::sleep(d).await;
            }
            _ => return r,
        }
    }
}

/// `host` or `host:port` when the port is not 5060, as a SIP URI writes it.
fn uri_host(r: &Registrar) -> String {
    let h = if r.host.contains(':') {
        format!("[{}]", r.host)
    } else {
        r.host.clone()
    };
    if r.port == 5060 {
        h
    } else {
        format!("{h}:{}", r.port)
    }
}

struct Clock {
    start: Instant,
    mark: Instant,
    timings: Vec<StepTiming>,
}

impl Clock {
    fn new() -> Clock {
        let now = Instant::now();
        Clock {
            start: now,
            mark: now,
            timings: Vec::new(),
        }
    }
    fn done(&mut self, step: Step) {
        let now = Instant::now();
        self.timings.push(StepTiming {
            step,
            elapsed: now - self.mark,
        });
        self.mark = now;
    }
    fn fail(&self, step: Step, error: impl Into<PhoneError>) -> FlowError {
        FlowError {
            step,
            error: error.into(),
            timings: self.timings.clone(),
            elapsed: self.start.elapsed(),
        }
    }
}

impl Phone {
    /// A phone with default options: binds its SIP socket on `spec.local_ip`, port 0.
    pub async fn new(spec: PhoneSpec) -> Result<Phone, PhoneError> {
        Phone::with_options(spec, PhoneOptions::default()).await
    }

    pub async fn with_options(spec: PhoneSpec, options: PhoneOptions) -> Result<Phone, PhoneError> {
        let ua = UserAgent::bind(
            SocketAddr::new(spec.local_ip, 0),
            &spec.vendor.sip_user_agent(&spec.mac),
            options.timers,
        )
        .await?;
        let http = http::client(options.http_timeout, options.dns, Some(spec.local_ip))
            .map_err(PhoneError::HttpClient)?;
        Ok(Phone {
            spec,
            options,
            ua,
            http,
            files: HashMap::new(),
            config: None,
            actions: Vec::new(),
            bindings: Vec::new(),
            prov_index: 0,
            refresh_at: None,
            retry_after_waits: Default::default(),
            retries: Default::default(),
        })
    }

    pub fn spec(&self) -> &PhoneSpec {
        &self.spec
    }

    /// The SIP address (the Contact of its registrations, where NOTIFYs arrive).
    pub fn sip_addr(&self) -> SocketAddr {
        self.ua.local_addr()
    }

    /// The configuration last fetched.
    pub fn config(&self) -> Option<&PhoneConfig> {
        self.config.as_ref()
    }

    /// The first URL of the next walk: from where its files said once it has them, else from
    /// the DHCP URL in use.
    pub fn file_url(&self) -> String {
        let mut walk = match &self.config {
            Some(c) => chain::Walk::refetch(self.spec.vendor, self.spec.mac, &c.prov_url),
            None => {
                let urls = self.prov_urls();
                let base = urls.get(self.prov_index).unwrap_or(&urls[0]);
                chain::Walk::boot(self.spec.vendor, self.spec.mac, base)
            }
        };
        match walk.next_step() {
            chain::Next::Fetch { url, .. } => url,
            chain::Next::Done(_) => String::new(),
        }
    }

    /// What each check-sync so far made the phone do, `(event, action)`.
    pub fn check_sync_actions(&self) -> &[(String, CheckSyncAction)] {
        &self.actions
    }

    /// The provisioning URL first, then the fallbacks.
    pub fn prov_urls(&self) -> Vec<&str> {
        std::iter::once(self.spec.prov_url.as_str())
            .chain(self.spec.fallback_prov_urls.iter().map(String::as_str))
            .collect()
    }

    /// Out-of-dialog NOTIFYs answered so far (check-sync, resync…), retransmissions once.
    pub fn check_sync_count(&self) -> usize {
        self.ua.notifies().len()
    }

    pub fn notifies(&self) -> Vec<NotifyReceived> {
        self.ua.notifies()
    }

    /// The SIP side, for tests that drive it directly.
    pub fn user_agent(&self) -> &UserAgent {
        &self.ua
    }

    /// Stops answering SIP (the socket closes when the phone is dropped).
    pub fn shutdown(&self) {
        self.ua.shutdown();
    }

    /// Walks the file chain (conditional GETs after the first time) and parses it. `Ok(None)`:
    /// every file answered 304 (or came back the same). The first walk starts from the DHCP URL
    /// and its fallbacks; every later one from the provisioning URL of the files, then from
    /// the same path on the other addresses of that server (when it is one of the DHCP URLs'
    /// servers). A server that does not answer (refused, timed out, 5xx) is left for the next.
    pub async fn fetch_config(&mut self) -> Result<Option<PhoneConfig>, PhoneError> {
        let (vendor, mac) = (self.spec.vendor, self.spec.mac);
        let starts: Vec<(Option<usize>, chain::Walk)> = match &self.config {
            Some(c) => {
                let known = self.prov_urls();
                std::iter::once(c.prov_url.clone())
                    .chain(chain::alternates(&c.prov_url, &known))
                    .map(|u| (None, chain::Walk::refetch(vendor, mac, &u)))
                    .collect()
            }
            None => {
                let urls = self.prov_urls();
                let n = urls.len();
                (0..n)
                    .map(|k| (self.prov_index + k) % n)
                    .map(|i| (Some(i), chain::Walk::boot(vendor, mac, urls[i])))
                    .collect()
            }
        };
        let n = starts.len();
        let mut last = None;
        for (k, (index, walk)) in starts.into_iter().enumerate() {
            if let Some(i) = index {
                self.prov_index = i;
            }
            match self.walk(walk).await {
                Ok(r) => return Ok(r),
                Err(PhoneError::Http(e @ HttpError::Transport { .. })) => last = Some(e),
                Err(PhoneError::Http(e @ HttpError::Status { status, .. })) if status >= 500 => {
                    last = Some(e)
                }
                Err(e) => return Err(e),
            }
            if k + 1 < n {
                tracing::info!(mac = %self.spec.mac, "provisioning server did not answer, trying the next: {}", last.as_ref().map(|e| e.to_string()).unwrap_or_default());
            }
        }
        Err(last.map(PhoneError::from).unwrap_or(PhoneError::NoConfig))
    }

    /// One walk down the chain: GETs what it asks for, conditionally when a copy is held.
    async fn walk(&mut self, mut walk: chain::Walk) -> Result<Option<PhoneConfig>, PhoneError> {
        let ua = self.spec.vendor.http_user_agent(&self.spec.mac);
        let mut changed = false;
        let mut next = walk.next_step();
        loop {
            let (url, optional) = match next {
                chain::Next::Done(cfg) => {
                    tracing::debug!(mac = %self.spec.mac, files = ?walk.urls(), changed, "file chain walked");
                    if !changed && self.config.is_some() {
                        return Ok(None);
                    }
                    self.config = Some(cfg.clone());
                    return Ok(Some(cfg));
                }
                chain::Next::Fetch { url, optional } => (url, optional),
            };
            let held = self.files.get(&url);
            let etag = held.and_then(|(e, _)| e.as_deref());
            let mut waits = 0;
            let fetched = loop {
                let r = http::fetch(&self.http, &url, &ua, etag).await;
                match r.as_ref().err().and_then(HttpError::retry_after) {
                    Some(d) if waits < self.options.retry_after_waits => {
                        waits += 1;
                        self.retry_after_waits
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let d = d.min(self.options.max_retry_after);
                        tracing::debug!(mac = %self.spec.mac, %url, wait = ?d, "503 with Retry-After: fetching again after it");
                        tokio::time::sleep(d).await;
                    }
                    _ => break r,
                }
            };
            let body = match fetched {
                Ok(Fetched::NotModified) => match held {
                    Some((_, body)) => Some(body.clone()),
                    None => return Err(PhoneError::NotModified),
                },
                Ok(Fetched::File { body, etag }) => {
                    changed |= held.map(|(_, b)| b != &body).unwrap_or(true);
                    self.files.insert(url.clone(), (etag, body.clone()));
                    Some(body)
                }
                Err(HttpError::Status { status: 404, .. }) if optional => {
                    changed |= self.files.remove(&url).is_some();
                    None
                }
                Err(e) => return Err(e.into()),
            };
            next = walk.fetched(&url, body.as_deref())?;
        }
    }

    /// REGISTERs the line of `cfg`: to every registrar at once ([`Redundancy::Concurrent`]),
    /// or to the first that accepts ([`Redundancy::Failover`]). Succeeds when at least one
    /// registrar accepted; the others' failures are logged.
    pub async fn register(&mut self, cfg: &PhoneConfig) -> Result<Vec<Registered>, PhoneError> {
        let account = account_of(cfg);
        let local = self.ua.local_addr();
        let mut targets = Vec::new();
        for r in &cfg.registrars {
            if r.transport != Transport::Udp {
                tracing::warn!(host = %r.host, "registrar configured for {:?}; the simulator speaks UDP", r.transport);
            }
            match sip_ua::resolve(&r.host, r.port, local).await {
                Ok(a) => targets.push((a, r.host.clone(), uri_host(r))),
                Err(e) => tracing::warn!("{e}"),
            }
        }
        let order: Vec<SocketAddr> = targets.iter().map(|t| t.0).collect();
        let mut done = Vec::new();
        let mut errors = Vec::new();
        match cfg.redundancy {
            Redundancy::Concurrent => {
                let mut set = tokio::task::JoinSet::new();
                for (addr, domain, request_host) in targets {
                    let ua = self.ua.clone();
                    let account = account.clone();
                    let expires = self.options.register_expires;
                    let patience = self.patience();
                    set.spawn(async move {
                        let r = register_obeying(
                            &ua,
                            (addr, &domain, &request_host),
                            &account,
                            expires,
                            patience,
                        )
                        .await;
                        let binding = Binding {
                            addr,
                            domain,
                            request_host,
                            account,
                        };
                        (binding, r)
                    });
                }
                while let Some(j) = set.join_next().await {
                    match j {
                        Ok((binding, Ok(reg))) => {
                            self.remember(binding);
                            done.push(reg);
                        }
                        Ok((binding, Err(e))) => errors.push(format!("{}: {e}", binding.addr)),
                        Err(e) => errors.push(e.to_string()),
                    }
                }
                // Keep the preferred registrar first whatever order they answered in.
                done.sort_by_key(|r: &Registered| {
                    order
                        .iter()
                        .position(|a| *a == r.registrar)
                        .unwrap_or(usize::MAX)
                });
            }
            Redundancy::Failover => {
                for (addr, domain, request_host) in targets {
                    match register_obeying(
                        &self.ua,
                        (addr, &domain, &request_host),
                        &account,
                        self.options.register_expires,
                        self.patience(),
                    )
                    .await
                    {
                        Ok(reg) => {
                            self.remember(Binding {
                                addr,
                                domain,
                                request_host,
                                account: account.clone(),
                            });
                            done.push(reg);
                            break;
                        }
                        Err(e) => errors.push(format!("{addr}: {e}")),
                    }
                }
            }
        }
        for e in &errors {
            tracing::warn!(mac = %self.spec.mac, "REGISTER failed: {e}");
        }
        if done.is_empty() {
            return Err(PhoneError::NotRegistered(errors.join("; ")));
        }
        // The next refresh: within the shortest expiry granted, at a random point of it.
        self.refresh_at = done
            .iter()
            .map(|r| r.expires)
            .filter(|e| *e > 0)
            .min()
            .map(|e| {
                let r = &self.options.refresh_percent;
                let pct = if r.start() < r.end() {
                    rand::Rng::gen_range(&mut rand::thread_rng(), r.clone())
                } else {
                    *r.start()
                };
                Instant::now() + Duration::from_secs(u64::from(e)) * pct / 100
            });
        Ok(done)
    }

    /// How long and how often this phone waits out a 503's Retry-After, and where it counts
    /// the waits.
    fn patience(&self) -> Patience {
        Patience {
            cap: self.options.max_retry_after,
            most: self.options.retry_after_waits,
            waited: self.retry_after_waits.clone(),
        }
    }

    /// 503s with Retry-After this phone has waited out so far.
    pub fn retry_after_waits(&self) -> u32 {
        self.retry_after_waits
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Attempts made again after a failed one so far, by the step that had failed (boot
    /// fetch, REGISTER or its refresh, a step of the IVR flow).
    pub fn retries(&self) -> &std::collections::BTreeMap<Step, u32> {
        &self.retries
    }

    /// When the current registrations are due for a refresh (a random point between
    /// [`PhoneOptions::refresh_percent`] of the expiry granted); `None` when none is held.
    pub fn refresh_due(&self) -> Option<Instant> {
        self.refresh_at.filter(|_| !self.bindings.is_empty())
    }

    /// Refreshes the registration of the current file's line, as its registrars say
    /// (failing over when the one that held it no longer answers).
    /// A refresh that fails is tried again after [`PhoneOptions::retry_interval`].
    pub async fn refresh(&mut self) -> Result<Vec<Registered>, PhoneError> {
        let cfg = self.config.clone().ok_or(PhoneError::NoConfig)?;
        let r = self.register(&cfg).await;
        if r.is_err() {
            *self.retries.entry(Step::Register).or_default() += 1;
            let base = self.options.retry_interval;
            self.refresh_at = Some(Instant::now() + base / 2 + base.mul_f64(rand::random::<f64>()));
        }
        r
    }

    /// The wait before another attempt: [`PhoneOptions::retry_interval`], jittered.
    async fn pause_before_retry(&mut self, failed: Step) {
        *self.retries.entry(failed).or_default() += 1;
        let base = self.options.retry_interval;
        let jittered = base / 2 + base.mul_f64(rand::random::<f64>());
        tokio::time::sleep(jittered).await;
    }

    /// Records a registration; a refresh of the same one replaces it.
    fn remember(&mut self, b: Binding) {
        self.bindings
            .retain(|old| !(old.addr == b.addr && old.account.user == b.account.user));
        self.bindings.push(b);
    }

    /// Removes every binding this phone made (REGISTER with Expires: 0 from the same Call-ID).
    pub async fn unregister_all(&mut self) -> Result<(), PhoneError> {
        let bindings = std::mem::take(&mut self.bindings);
        let mut first_err = None;
        for b in bindings {
            if let Err(e) = self
                .ua
                .register(b.addr, &b.domain, &b.request_host, &b.account, 0)
                .await
            {
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    /// Lifts the handset: calls the hotline of `cfg` through its registrars in order (the next
    /// one when a registrar does not answer or answers 5xx), waits for the prompt, keys `keys`,
    /// and waits for the IVR to hang up. Errors say whether the call or the keying failed.
    pub async fn call_ivr(
        &mut self,
        cfg: &PhoneConfig,
        keys: &str,
    ) -> Result<CallReport, (Step, PhoneError)> {
        let number = cfg
            .hotline
            .clone()
            .ok_or((Step::Invite, PhoneError::NoHotline))?;
        let account = account_of(cfg);
        let rtp = UdpSocket::bind(SocketAddr::new(self.spec.local_ip, 0))
            .await
            .map_err(|e| (Step::Invite, PhoneError::Sip(e.into())))?;
        let rtp_addr = rtp
            .local_addr()
            .map_err(|e| (Step::Invite, PhoneError::Sip(e.into())))?;
        let offer = sdp::offer(rtp_addr, rand::random::<u32>().into());
        let local = self.ua.local_addr();
        let t0 = Instant::now();
        let mut last_err = PhoneError::NotRegistered("no registrar configured".into());
        let mut dialog = None;
        for r in &cfg.registrars {
            let addr = match sip_ua::resolve(&r.host, r.port, local).await {
                Ok(a) => a,
                Err(e) => {
                    last_err = e.into();
                    continue;
                }
            };
            let target = format!("sip:{number}@{}", uri_host(r));
            match self
                .ua
                .invite(addr, &r.host, &target, &account, &offer)
                .await
            {
                Ok(d) => {
                    dialog = Some(d);
                    break;
                }
                Err(e) => {
                    let next = matches!(e, UaError::Timeout { .. })
                        || matches!(e, UaError::Rejected { code, .. } if code >= 500);
                    last_err = e.into();
                    if !next {
                        break;
                    }
                }
            }
        }
        let mut dialog = dialog.ok_or((Step::Invite, last_err))?;
        let answered_after = t0.elapsed();
        let params = match sdp::parse_answer(&dialog.answer) {
            Ok(p) => p,
            Err(e) => {
                let _ = dialog.hangup().await;
                return Err((Step::Invite, e.into()));
            }
        };
        let mut media = rtp::MediaSession::start(rtp, params);
        let result = self.key_in(&mut dialog, &mut media, keys).await;
        let ivr_hung_up = match &result {
            Ok(()) => dialog.wait_bye(self.options.bye_timeout).await,
            Err(_) => false,
        };
        if !dialog.ended() {
            let _ = dialog.hangup().await;
        }
        let stats = media.stop().await;
        result.map_err(|e| (Step::Dtmf, e))?;
        Ok(CallReport {
            provisional: dialog.provisional.clone(),
            media: stats,
            answered_after,
            ivr_hung_up,
        })
    }

    async fn key_in(
        &self,
        dialog: &mut sip_ua::Dialog,
        media: &mut rtp::MediaSession,
        keys: &str,
    ) -> Result<(), PhoneError> {
        if !media
            .wait_received(self.options.prompt_packets, self.options.prompt_timeout)
            .await
        {
            return Err(PhoneError::NoPrompt(self.options.prompt_timeout));
        }
        match self.options.dtmf {
            DtmfMode::Rfc4733 => media.send_keys(keys, self.options.dtmf_shape).await?,
            DtmfMode::SipInfo => {
                let ms = u32::from(self.options.dtmf_shape.tone_packets) * 20;
                for key in keys.chars() {
                    dialog.send_info_dtmf(key, ms).await?;
                    tokio::time::sleep(rtp::PTIME * u32::from(self.options.dtmf_shape.gap_packets))
                        .await;
                }
            }
        }
        Ok(())
    }

    /// Waits for the `n`th NOTIFY the phone answered.
    pub async fn wait_check_sync(
        &self,
        n: usize,
        limit: Duration,
    ) -> Result<NotifyReceived, PhoneError> {
        self.ua
            .wait_notifies(n, limit)
            .await
            .and_then(|v| v.get(n.saturating_sub(1)).cloned())
            .ok_or(PhoneError::NoNotify(limit))
    }

    /// Zero-touch provisioning: fetch, parse, register. Bounded by
    /// [`PhoneOptions::overall_timeout`].
    pub async fn run_zero_touch(&mut self) -> Result<Provisioned, FlowError> {
        let limit = self.options.overall_timeout;
        let started = Instant::now();
        match tokio::time::timeout(limit, self.zero_touch()).await {
            Ok(r) => r,
            Err(_) => Err(FlowError {
                step: Step::Fetch,
                error: PhoneError::Overall(limit),
                timings: Vec::new(),
                elapsed: started.elapsed(),
            }),
        }
    }

    async fn zero_touch(&mut self) -> Result<Provisioned, FlowError> {
        let mut clock = Clock::new();
        let attempts = self.options.flow_attempts.max(1);
        let mut attempt = 1;
        let cfg = loop {
            match self.fetch_config().await {
                Ok(Some(c)) => break c,
                Ok(None) => return Err(clock.fail(Step::Fetch, PhoneError::NotModified)),
                Err(e) if attempt < attempts => {
                    tracing::debug!(mac = %self.spec.mac, attempt, "boot fetch failed ({e}); trying again");
                    attempt += 1;
                    self.pause_before_retry(Step::Fetch).await;
                }
                Err(e) => return Err(clock.fail(Step::Fetch, e)),
            }
        };
        clock.done(Step::Fetch);
        let mut attempt = 1;
        let registered = loop {
            match self.register(&cfg).await {
                Ok(r) => break r,
                Err(e) if attempt < attempts => {
                    tracing::debug!(mac = %self.spec.mac, attempt, "REGISTER failed ({e}); trying again");
                    attempt += 1;
                    self.pause_before_retry(Step::Register).await;
                }
                Err(e) => return Err(clock.fail(Step::Register, e)),
            }
        };
        clock.done(Step::Register);
        Ok(Provisioned {
            config: cfg,
            registered,
            total: clock.start.elapsed(),
            timings: clock.timings,
            call: None,
            notifies: self.notifies().into_iter().map(|n| n.event).collect(),
            check_sync_actions: self.actions.clone(),
        })
    }

    /// IVR provisioning of an unassigned phone to `dn`: fetch, register (as
    /// `gcti_provisioning`), call the hotline, key `dn#`, hang up, wait for the check-sync,
    /// re-fetch (conditional GET), unregister the old identity, register the new one, and check
    /// that the new file names `dn`. Bounded by [`PhoneOptions::overall_timeout`].
    ///
    /// With [`PhoneOptions::flow_attempts`] above 1, a failed attempt is followed by another
    /// from a fresh (unconditional) fetch, the next provisioning server first when the last
    /// one stopped answering: a file that already names `dn` (the assignment was committed
    /// but its check-sync never came) is registered at once; otherwise the phone dials again.
    pub async fn run_ivr_provisioning(&mut self, dn: &str) -> Result<Provisioned, FlowError> {
        let attempts = self.options.flow_attempts.max(1);
        let mut attempt = 1;
        loop {
            match self.ivr_attempt(dn).await {
                Ok(p) => return Ok(p),
                Err(e) if attempt < attempts => {
                    tracing::info!(mac = %self.spec.mac, dn, attempt, "IVR provisioning failed at {e}; starting over");
                    self.files.clear();
                    attempt += 1;
                    self.pause_before_retry(e.step).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn ivr_attempt(&mut self, dn: &str) -> Result<Provisioned, FlowError> {
        let limit = self.options.overall_timeout;
        let started = Instant::now();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let flow = self.ivr_provisioning(dn, tx);
        match tokio::time::timeout(limit, flow).await {
            Ok(r) => r,
            Err(_) => {
                // The step in progress is the one after the last completed one.
                let mut timings = Vec::new();
                while let Ok(t) = rx.try_recv() {
                    timings.push(t);
                }
                let step = timings
                    .last()
                    .and_then(|t: &StepTiming| Step::ALL.iter().position(|s| *s == t.step))
                    .and_then(|i| Step::ALL.get(i + 1).copied())
                    .unwrap_or(Step::Fetch);
                Err(FlowError {
                    step,
                    error: PhoneError::Overall(limit),
                    timings,
                    elapsed: started.elapsed(),
                })
            }
        }
    }

    async fn ivr_provisioning(
        &mut self,
        dn: &str,
        progress: tokio::sync::mpsc::UnboundedSender<StepTiming>,
    ) -> Result<Provisioned, FlowError> {
        let mut clock = Clock::new();
        macro_rules! done {
            ($step:expr) => {{
                clock.done($step);
                if let Some(t) = clock.timings.last() {
                    let _ = progress.send(*t);
                }
            }};
        }
        let notifies_before = self.check_sync_count();
        let cfg = match self.fetch_config().await {
            Ok(Some(c)) => c,
            Ok(None) => return Err(clock.fail(Step::Fetch, PhoneError::NotModified)),
            Err(e) => return Err(clock.fail(Step::Fetch, e)),
        };
        done!(Step::Fetch);
        if cfg.user == dn && cfg.hotline.is_none() {
            // Assigned by an earlier attempt whose check-sync was lost with its server.
            self.bindings.clear();
            let registered = self
                .register(&cfg)
                .await
                .map_err(|e| clock.fail(Step::Reregister, e))?;
            done!(Step::Reregister);
            return Ok(Provisioned {
                config: cfg,
                registered,
                total: clock.start.elapsed(),
                timings: clock.timings,
                call: None,
                notifies: self.notifies().into_iter().map(|n| n.event).collect(),
                check_sync_actions: self.actions.clone(),
            });
        }
        if cfg.hotline.is_none() {
            return Err(clock.fail(Step::Invite, PhoneError::NoHotline));
        }
        self.register(&cfg)
            .await
            .map_err(|e| clock.fail(Step::Register, e))?;
        done!(Step::Register);

        let mut keys = dn.to_string();
        keys.push('#');
        let call = self
            .call_ivr(&cfg, &keys)
            .await
            .map_err(|(s, e)| clock.fail(s, e))?;
        // The call is one await; split its time at the 2xx.
        clock.mark += call.answered_after;
        let invite = StepTiming {
            step: Step::Invite,
            elapsed: call.answered_after,
        };
        clock.timings.push(invite);
        let _ = progress.send(invite);
        done!(Step::Dtmf);

        let n = self
            .wait_check_sync(notifies_before + 1, self.options.notify_timeout)
            .await
            .map_err(|e| clock.fail(Step::Notify, e))?;
        tracing::debug!(event = %n.event, "check-sync received");
        // What the file says a check-sync does: nothing, a reboot (the whole chain again, as
        // after power-up, from where the files said), or a re-fetch.
        match cfg.check_sync.action(&n.event, false) {
            CheckSyncAction::Ignore => {
                self.actions
                    .push((n.event.clone(), CheckSyncAction::Ignore));
                return Err(clock.fail(Step::Notify, PhoneError::CheckSyncIgnored(n.event)));
            }
            CheckSyncAction::Reboot => self.files.clear(),
            CheckSyncAction::Refetch => {}
        }
        done!(Step::Notify);

        let new = match self.fetch_config().await {
            Ok(Some(c)) => c,
            Ok(None) => return Err(clock.fail(Step::Refetch, PhoneError::NotModified)),
            Err(e) => return Err(clock.fail(Step::Refetch, e)),
        };
        let action = cfg.check_sync.action(&n.event, true);
        tracing::debug!(mac = %self.spec.mac, event = %n.event, ?action, "check-sync applied");
        self.actions.push((n.event.clone(), action));
        if new.user != dn {
            let e = PhoneError::WrongIdentity {
                expected: dn.to_string(),
                got: new.user.clone(),
            };
            return Err(clock.fail(Step::Refetch, e));
        }
        done!(Step::Refetch);

        if self.options.unregister_old {
            if let Err(e) = self.unregister_all().await {
                tracing::warn!(mac = %self.spec.mac, "unregistering the provisioning identity: {e}");
            }
        } else {
            self.bindings.clear();
        }
        let registered = self
            .register(&new)
            .await
            .map_err(|e| clock.fail(Step::Reregister, e))?;
        done!(Step::Reregister);

        Ok(Provisioned {
            config: new,
            registered,
            total: clock.start.elapsed(),
            timings: clock.timings,
            call: Some(call),
            notifies: self.notifies().into_iter().map(|n| n.event).collect(),
            check_sync_actions: self.actions.clone(),
        })
    }
}
