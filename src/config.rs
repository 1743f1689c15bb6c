//! Configuration in the vocabulary of the deployment guide (`[dm] fs_url`, `[ivr] number`,
//! `[[sites]]`, `[[switches]]`, `[[trunks]]` with `contact` and `prefix`).
//!
//! Every table denies unknown keys: an operator's typo (`fs-url` for `fs_url`) must fail loudly at
//! start, with the key and the line, rather than silently fall back to a default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::domain::{AuthPolicy, AuthPolicyError, DnRange, SipServer};

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// toml's message names the key and the line and column.
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub dm: DmConfig,
    #[serde(default)]
    pub ivr: IvrConfig,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub sites: Vec<SiteConfig>,
    #[serde(default)]
    pub switches: Vec<SwitchConfig>,
    #[serde(default)]
    pub trunks: Vec<TrunkConfig>,
    #[serde(default)]
    pub sip: SipConfig,
    #[serde(default, rename = "prov-security")]
    pub prov_security: ProvSecurityConfig,
    #[serde(default)]
    pub campaigns: CampaignsConfig,
}

/// Whether a change starts a campaign by itself.
///
/// `manual` is the default: an automatic campaign judges every phone by the receipts this
/// node's store holds, and in a multi-site or business-continuity deployment a phone that has
/// moved to the other site's node leaves an old receipt here that never matches again (the
/// phone is sent a check-sync it answers elsewhere, and counts as failed). Single-site and
/// active-active deployments turn `auto` on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CampaignMode {
    /// Every change is followed by a campaign over the phones it left out of date.
    Auto,
    /// Campaigns start only through the API or the CLI.
    #[default]
    Manual,
}

/// Check-sync campaigns: how a change reaches the phones it altered (`crate::fleet`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CampaignsConfig {
    /// `auto`: every change is followed by a campaign over the phones it left out of date
    /// (single site, active-active pair); `manual` (the default): campaigns start through the
    /// API, the console or `sipdm campaign start` only.
    #[serde(default)]
    pub mode: CampaignMode,
    /// Check-syncs per second to the phones of one site.
    #[serde(default = "d_site_rate")]
    pub rate_per_site: f64,
    /// Check-syncs per second to the phones behind one source address (a NAT).
    #[serde(default = "d_source_rate")]
    pub rate_per_source: f64,
    /// Milliseconds added at random to each interval.
    #[serde(default = "d_jitter_ms")]
    pub jitter_ms: u64,
    /// Phones in the first wave; each next wave is twice as large, up to `max-wave`.
    #[serde(default = "d_first_wave")]
    pub first_wave: usize,
    #[serde(default = "d_max_wave")]
    pub max_wave: usize,
    /// Share of a wave (0 to 1) that may fail before the campaign stops itself.
    #[serde(default = "d_failure_budget")]
    pub failure_budget: f64,
    /// Seconds a wave waits for its phones to re-fetch their files.
    #[serde(default = "d_wave_timeout")]
    pub wave_timeout_seconds: u64,
    /// Seconds between a change and its automatic campaign (changes in between join it).
    #[serde(default = "d_settle")]
    pub settle_seconds: u64,
}

fn d_site_rate() -> f64 {
    20.0
}
fn d_source_rate() -> f64 {
    5.0
}
fn d_jitter_ms() -> u64 {
    50
}
fn d_first_wave() -> usize {
    10
}
fn d_max_wave() -> usize {
    200
}
fn d_failure_budget() -> f64 {
    0.2
}
fn d_wave_timeout() -> u64 {
    120
}
fn d_settle() -> u64 {
    10
}

impl Default for CampaignsConfig {
    fn default() -> Self {
        CampaignsConfig {
            mode: Default::default(),
            rate_per_site: d_site_rate(),
            rate_per_source: d_source_rate(),
            jitter_ms: d_jitter_ms(),
            first_wave: d_first_wave(),
            max_wave: d_max_wave(),
            failure_budget: d_failure_budget(),
            wave_timeout_seconds: d_wave_timeout(),
            settle_seconds: d_settle(),
        }
    }
}

impl CampaignsConfig {
    fn validate(&self) -> Result<(), String> {
        for (key, rate) in [
            ("rate-per-site", self.rate_per_site),
            ("rate-per-source", self.rate_per_source),
        ] {
            if !(rate.is_finite() && (0.01..=10_000.0).contains(&rate)) {
                return Err(format!(
                    "[campaigns] {key} = {rate}: want 0.01 to 10000 per second"
                ));
            }
        }
        if !(0.0..=1.0).contains(&self.failure_budget) {
            return Err(format!(
                "[campaigns] failure-budget = {}: want a share from 0 to 1",
                self.failure_budget
            ));
        }
        if self.first_wave == 0 || self.max_wave < self.first_wave {
            return Err(format!(
                "[campaigns] first-wave = {}, max-wave = {}: want 1 <= first-wave <= max-wave",
                self.first_wave, self.max_wave
            ));
        }
        if !(1..=3600).contains(&self.wave_timeout_seconds) {
            return Err(format!(
                "[campaigns] wave-timeout-seconds = {}: want 1 to 3600",
                self.wave_timeout_seconds
            ));
        }
        Ok(())
    }
}

/// Who may fetch provisioning files, and the MAC-scanning lockout.
///
/// The lockout is on by default and judges a source by the phones it asks for that nobody
/// knows: a real fleet asks for the files of MACs that are devices (imported, or seen once
/// and recorded), a scanner guesses MACs and mostly misses. So a boot storm of thousands of
/// known phones behind one NAT or HTTP relay counts nothing, however many phones and files it
/// is, while one address probing more than `max-unknown-macs-per-source` unknown MACs within
/// `window-seconds` is locked out for `lockout-seconds`. See `crate::http::scan_guard`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ProvSecurityConfig {
    /// Networks served at all (empty: any).
    #[serde(default)]
    pub allowed_networks: Vec<ipnet::IpNet>,
    /// Distinct files one source may ask for within `window-seconds` before it is locked out
    /// (0, the default: no limit). Every phone behind a NAT asks for files of its own, so this
    /// ceiling counts a boot storm too: size it for the most phones behind one NAT address,
    /// or leave it off and rely on `max-unknown-macs-per-source`.
    #[serde(default)]
    pub max_files_per_source: u32,
    /// MACs that are no known device, asked for by one source within `window-seconds`, before
    /// the source is locked out (0: no limit). Default 100. Known phones never count, so a boot
    /// storm of a whole fleet behind one address passes; 100 still lets a site plug in that
    /// many brand-new (never seen) phones behind one NAT at once, and holds a scanner to
    /// about 100 guesses per `lockout-seconds` (under 10 000 a day with the defaults, against
    /// 16.7 million MACs in one vendor prefix). The first MAC a source asks for in a window
    /// is taken for its own phone and not looked up (no query for one phone per address), so
    /// a scan is refused from its 102nd unknown MAC. Raise it, or list the NAT in
    /// `trusted-networks`, for a roll-out of more new phones than that behind one address.
    #[serde(default = "d_unknown_macs")]
    pub max_unknown_macs_per_source: u32,
    /// The counting window of both limits above and of the failed-credential counts (default
    /// 600 s).
    #[serde(default = "d_scan_window")]
    pub window_seconds: u64,
    /// How long a source stays locked out (default 900 s).
    #[serde(default = "d_lockout")]
    pub lockout_seconds: u64,
    /// A path segment phones must put before their file name (`/fs/dm/prov/<key>/MAC.cfg`);
    /// anything else is 404. Unset: none.
    #[serde(default)]
    pub url_key: Option<String>,
    /// `basic` asks phones for HTTP basic credentials on their own files: user = the MAC (12
    /// hex digits), password = one derived from the server secret and the MAC (the API's
    /// `GET /devices/{mac}/http-credentials` tells it). `none` (default) asks nothing.
    #[serde(default)]
    pub http_auth: HttpAuth,
    /// Failed credentials for one phone's files (one MAC) from one source within
    /// `window-seconds` before that source is refused that phone's files (0: never). The other
    /// phones behind the same NAT address are not affected.
    #[serde(default = "d_auth_failures_prov")]
    pub max_auth_failures: u32,
    /// Failed credentials from one source, whatever the MACs, within `window-seconds` before
    /// the whole source is locked out (0: no such ceiling). Size it for the most phones behind
    /// one NAT address.
    #[serde(default = "d_auth_failures_prov_source")]
    pub max_auth_failures_per_source: u32,
    /// Sources never locked out as a whole (neither by `max-files-per-source`,
    /// `max-unknown-macs-per-source` nor `max-auth-failures-per-source`): an HTTP proxy or a
    /// NAT in front of a whole site, whose one address every phone shares. Their phones are
    /// still refused one by one.
    #[serde(default)]
    pub trusted_networks: Vec<ipnet::IpNet>,
}

/// The same defaults with no `[prov-security]` section at all as with an empty one.
impl Default for ProvSecurityConfig {
    fn default() -> Self {
        ProvSecurityConfig {
            allowed_networks: Vec::new(),
            max_files_per_source: 0,
            max_unknown_macs_per_source: d_unknown_macs(),
            window_seconds: d_scan_window(),
            lockout_seconds: d_lockout(),
            url_key: None,
            http_auth: HttpAuth::default(),
            max_auth_failures: d_auth_failures_prov(),
            max_auth_failures_per_source: d_auth_failures_prov_source(),
            trusted_networks: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HttpAuth {
    #[default]
    None,
    Basic,
}

fn d_auth_failures_prov() -> u32 {
    10
}

fn d_auth_failures_prov_source() -> u32 {
    100
}

fn d_unknown_macs() -> u32 {
    100
}

fn d_scan_window() -> u64 {
    600
}
fn d_lockout() -> u64 {
    900
}

/// SIP timers and registrar limits.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SipConfig {
    #[serde(default = "d_t1")]
    pub t1_ms: u64,
    #[serde(default = "d_t2")]
    pub t2_ms: u64,
    #[serde(default = "d_t4")]
    pub t4_ms: u64,
    /// Shorter registrations are refused with 423 Interval Too Brief.
    #[serde(default = "d_min_expires")]
    pub min_expires: u32,
    #[serde(default = "d_max_expires")]
    pub max_expires: u32,
    #[serde(default = "d_default_expires")]
    pub default_expires: u32,
    /// Failed digest attempts per source and user per minute before that user is refused
    /// from that source (0: never). Phones sharing a NAT address do not share this count.
    #[serde(default = "d_auth_failures")]
    pub auth_failures_per_minute: u32,
    /// Failed digest attempts per source per minute, whatever the users, before the source
    /// is refused (0: no such ceiling); never applied to `trusted-peers`. Size it for the
    /// most phones behind one NAT address.
    #[serde(default = "d_auth_failures_per_source")]
    pub auth_failures_per_source_per_minute: u32,
    /// Host[:port] written in the Via of requests sipdm sends, when it listens on a wildcard
    /// address or behind NAT.
    #[serde(default)]
    pub advertised_host: Option<String>,
    /// Digest algorithms offered in challenges, one WWW-Authenticate each, preferred first.
    /// MD5 alone by default: deployed clients built on older SIP stacks (libre 1.1 in Debian's
    /// baresip, for one) refuse a whole 401 that also offers SHA-256. Add "SHA-256" where every
    /// phone supports RFC 8760.
    #[serde(default = "d_algorithms")]
    pub digest_algorithms: Vec<String>,
    /// How often each external trunk is probed with OPTIONS; a probe unanswered within this
    /// interval (or answered 5xx) puts the trunk out of service until a probe succeeds again.
    #[serde(default = "d_trunk_options_interval")]
    pub trunk_options_interval_ms: u64,
    /// SIP over TLS listen addresses (`["0.0.0.0:5061"]`); empty or absent: no TLS. A phone
    /// registered over TLS is reached down its own connection; sipdm opens no TLS connections,
    /// so a `sips:` or `;transport=tls` contact whose connection is gone cannot be reached.
    #[serde(default)]
    pub tls_listen: Vec<SocketAddr>,
    /// PEM certificate chain (leaf first) and key for SIP over TLS; by default the HTTPS ones
    /// (`[server] tls-cert` / `tls-key`).
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// DNS servers (`ip:port`) for the RFC 3263 lookups (NAPTR, SRV, A/AAAA) of trunk contacts
    /// that name a host; empty: the system's (`/etc/resolv.conf`).
    #[serde(default)]
    pub dns_servers: Vec<SocketAddr>,
    /// Threads reading each UDP listen address; each handles what it reads to the end
    /// (0: one per core but one, at least one). One thread carries tens of thousands of
    /// messages a second.
    #[serde(default)]
    pub udp_threads: usize,
    /// Most SIP requests in progress at once: being handled (a credential look-up, a full
    /// binding-store queue, a call ringing through a trunk) or queued for a TCP/TLS
    /// dispatcher. Above it a new out-of-dialog request (REGISTER, INVITE, SUBSCRIBE, OPTIONS…)
    /// is answered 503 with Retry-After instead of taken on; 0: no limit.
    #[serde(default = "d_max_requests_in_progress")]
    pub max_requests_in_progress: usize,
    /// Longest a datagram may wait in the UDP receive buffer before a UDP receiver thread
    /// reads it (the threads are behind), milliseconds; a new request that waited longer is
    /// answered 503 with Retry-After. Under T1 (500 ms), so that the 503 beats the phone's
    /// retransmission; 0: not checked.
    #[serde(default = "d_max_queue_delay_ms")]
    pub max_queue_delay_ms: u64,
    /// `[min, max]` seconds: the Retry-After of those 503s is drawn at random from this
    /// range, so that phones refused in the same second come back spread out.
    #[serde(default = "d_overload_retry_after")]
    pub overload_retry_after: [u32; 2],
    /// Switches and SBCs whose word sipdm takes on who is calling (addresses or CIDRs). A
    /// phone's digest ends at its switch, so an INVITE relayed by a trusted peer names its
    /// device in `P-Asserted-Identity` (the authenticated `dm-<mac>` user); from anyone else
    /// that header is ignored (and counted) and the caller must authenticate to sipdm.
    #[serde(default, deserialize_with = "de_peers")]
    pub trusted_peers: Vec<ipnet::IpNet>,
}

/// `10.0.0.5` (one host) or `10.0.0.0/24`.
fn de_peers<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<ipnet::IpNet>, D::Error> {
    let raw: Vec<String> = Vec::deserialize(d)?;
    raw.iter()
        .map(|r| {
            r.parse::<ipnet::IpNet>()
                .or_else(|_| r.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    serde::de::Error::custom(format!(
                        "trusted-peers: `{r}` is not an address or a CIDR"
                    ))
                })
        })
        .collect()
}

/// More UDP receiver threads than this is a typo, not a tuning: each one is an OS thread
/// per listen address.
const MAX_UDP_THREADS: usize = 256;

fn d_max_requests_in_progress() -> usize {
    sip::overload::DEFAULT_MAX_IN_PROGRESS
}
fn d_max_queue_delay_ms() -> u64 {
    sip::overload::DEFAULT_MAX_QUEUE_DELAY.as_millis() as u64
}
fn d_overload_retry_after() -> [u32; 2] {
    let r = sip::overload::DEFAULT_RETRY_AFTER;
    [*r.start(), *r.end()]
}

/// Longest Retry-After sipdm asks for when overloaded: an hour is a phone out of service.
const MAX_RETRY_AFTER: u32 = 3600;

fn d_trunk_options_interval() -> u64 {
    5000
}

fn d_algorithms() -> Vec<String> {
    vec!["MD5".into()]
}

fn d_t1() -> u64 {
    500
}
fn d_t2() -> u64 {
    4000
}
fn d_t4() -> u64 {
    5000
}
fn d_min_expires() -> u32 {
    60
}
fn d_max_expires() -> u32 {
    7200
}
fn d_default_expires() -> u32 {
    3600
}
fn d_auth_failures() -> u32 {
    20
}
fn d_auth_failures_per_source() -> u32 {
    200
}

impl Default for SipConfig {
    fn default() -> Self {
        SipConfig {
            t1_ms: d_t1(),
            t2_ms: d_t2(),
            t4_ms: d_t4(),
            min_expires: d_min_expires(),
            max_expires: d_max_expires(),
            default_expires: d_default_expires(),
            auth_failures_per_minute: d_auth_failures(),
            auth_failures_per_source_per_minute: d_auth_failures_per_source(),
            advertised_host: None,
            digest_algorithms: d_algorithms(),
            trunk_options_interval_ms: d_trunk_options_interval(),
            tls_listen: Vec::new(),
            tls_cert: None,
            tls_key: None,
            dns_servers: Vec::new(),
            udp_threads: 0,
            max_requests_in_progress: d_max_requests_in_progress(),
            max_queue_delay_ms: d_max_queue_delay_ms(),
            overload_retry_after: d_overload_retry_after(),
            trusted_peers: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServerConfig {
    /// HTTP listen address for provisioning, the admin API and metrics.
    #[serde(default = "default_http")]
    pub http: SocketAddr,
    /// SIP listen addresses (UDP and TCP on each).
    #[serde(default = "default_sip")]
    pub sip: Vec<SocketAddr>,
    /// Server secret: keys the per-device credentials and the digest nonces. Instances of one
    /// deployment must share it. When absent a random one is generated and kept in the store.
    #[serde(default)]
    pub secret: Option<String>,
    /// Bearer token of the admin API. When absent one is generated, kept in the store and
    /// printed at start.
    #[serde(default)]
    pub admin_token: Option<String>,
    /// Digest realm.
    #[serde(default = "default_realm")]
    pub realm: String,
    /// Operator template directory; a template there overrides the shipped one of the same path.
    #[serde(default)]
    pub template_dir: Option<PathBuf>,
    /// Operator vendor table, the shape of `config/vendors.toml`: its entries replace the
    /// shipped vendors of the same name and add the others (their templates come from
    /// `template-dir`). Read and checked at start; a file that cannot be read or is invalid stops
    /// the start.
    #[serde(default)]
    pub vendor_file: Option<PathBuf>,
    /// PEM certificate chain and key: when both are set, provisioning and the admin API are
    /// served over HTTPS only.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// HTTP accept loops, one per core by default (0).
    #[serde(default)]
    pub http_workers: usize,
    /// Vendor used for a bare `MAC.cfg` when neither the User-Agent, the file name nor the
    /// device record names one.
    #[serde(default = "default_vendor")]
    pub default_vendor: String,
}

fn default_http() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8080))
}
fn default_sip() -> Vec<SocketAddr> {
    vec![SocketAddr::from(([0, 0, 0, 0], 5060))]
}
fn default_realm() -> String {
    "sipdm".into()
}
fn default_vendor() -> String {
    "polycom".into()
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            http: default_http(),
            sip: default_sip(),
            secret: None,
            admin_token: None,
            realm: default_realm(),
            template_dir: None,
            vendor_file: None,
            http_workers: 0,
            tls_cert: None,
            tls_key: None,
            default_vendor: default_vendor(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite://sipdm.db` (the embedded default) or `postgres://…` (shared by several instances).
    #[serde(default = "default_store_url")]
    pub url: String,
    #[serde(default = "default_pool", rename = "max-connections")]
    pub max_connections: u32,
}

fn default_store_url() -> String {
    "sqlite://sipdm.db".into()
}
fn default_pool() -> u32 {
    8
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: default_store_url(),
            max_connections: default_pool(),
        }
    }
}

/// The `[dm]` section of the feature server: where phones fetch their files.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DmConfig {
    /// Base URL written into rendered files (`http://fs1:8080/fs`); a site's own `fs_url`
    /// overrides it for that site's phones. Unset: the URL the phone itself used (scheme, host
    /// and port of its request), so that a phone that follows its file re-fetches from where
    /// it fetched, whatever DHCP told it.
    #[serde(default)]
    pub fs_url: Option<String>,
    /// SIP server(s) for phones of no site (host or host:port); parsed when the file is read.
    #[serde(default, rename = "sip-servers")]
    pub sip_servers: Vec<SipServer>,
    /// A DN that leaves a device (reassigned to another, unassigned, or its device deleted)
    /// gets a new random password in the same write, so that the old phone's cached
    /// credentials stop working. Off by default.
    #[serde(default, rename = "rotate-password-on-reassign")]
    pub rotate_password_on_reassign: bool,
}

impl ServerConfig {
    /// The scheme provisioning is served over: HTTPS once a certificate and key are both set.
    pub fn http_scheme(&self) -> &'static str {
        if self.tls_cert.is_some() && self.tls_key.is_some() {
            "https"
        } else {
            "http"
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct IvrConfig {
    /// The number an unassigned phone's hotline dials.
    #[serde(default = "default_ivr_number")]
    pub number: String,
    /// The VoiceXML application a media server runs for the IVR number
    /// (`http://FS-DM:8080/fs/dm/ivr`): the absolute base of the pages' `<submit>`/`<goto>`
    /// targets, and the `voicexml` Request-URI parameter (RFC 5552) for a media server
    /// (`crate::ivr::app_url`).
    #[serde(default)]
    pub initial_page_url: Option<String>,
    /// The same application on the other node (`http://FS-VM:8080/fs/dm/ivr`): where a page
    /// goes, once, when its next step cannot be fetched (`error.badfetch`), and the targets
    /// of pages served from this host.
    #[serde(default)]
    pub alternatevoicexml: Option<String>,
    /// Networks whose media servers may post VoiceXML assignments. A post names the device it
    /// assigns, so it is only believed from where the media servers are.
    #[serde(default = "default_vxml_networks")]
    pub vxml_allowed_networks: Vec<ipnet::IpNet>,
    /// Seconds between a VoiceXML assignment and the check-sync that follows it (the media
    /// server reads the extension back and hangs up first).
    #[serde(default = "default_vxml_notify_delay")]
    pub vxml_check_sync_delay: u64,
    /// Milliseconds of silence after the prompt before the first key (VoiceXML `timeout`),
    /// for the built-in IVR and the VoiceXML pages alike.
    #[serde(default = "default_first_digit_timeout_ms")]
    pub first_digit_timeout_ms: u64,
    /// Milliseconds of silence allowed between keys (VoiceXML `interdigittimeout`).
    #[serde(default = "default_inter_digit_timeout_ms")]
    pub inter_digit_timeout_ms: u64,
    /// Longest DN a caller may key (a longer entry is a failed attempt).
    #[serde(default = "default_ivr_max_digits")]
    pub max_digits: usize,
    /// Failed entries before "Goodbye".
    #[serde(default = "default_ivr_max_attempts")]
    pub max_attempts: u32,
    /// A directory of the operator's own recordings for the built-in IVR (another language,
    /// another voice): `<prompt>.ul` files, 8 kHz mono μ-law without a header, named as the
    /// shipped ones in `src/ivr/prompts/` (`enter_extension.ul`, `digit_0.ul`, …). A prompt
    /// with no file there keeps the shipped recording.
    #[serde(default)]
    pub prompts_dir: Option<std::path::PathBuf>,
}

fn default_first_digit_timeout_ms() -> u64 {
    10_000
}
fn default_inter_digit_timeout_ms() -> u64 {
    5_000
}
fn default_ivr_max_digits() -> usize {
    16
}
fn default_ivr_max_attempts() -> u32 {
    3
}

impl IvrConfig {
    /// The dialogue's settings (built-in IVR and VoiceXML pages) from this section, with the
    /// recordings of `prompts-dir` read once, here.
    pub fn settings(&self) -> Result<crate::ivr::IvrSettings, crate::ivr::PromptError> {
        let prompts = match &self.prompts_dir {
            Some(dir) => crate::ivr::PromptLibrary::from_dir(dir)?,
            None => crate::ivr::PromptLibrary::builtin(),
        };
        Ok(crate::ivr::IvrSettings {
            first_digit_timeout: std::time::Duration::from_millis(self.first_digit_timeout_ms),
            inter_digit_timeout: std::time::Duration::from_millis(self.inter_digit_timeout_ms),
            max_digits: self.max_digits,
            max_attempts: self.max_attempts,
            prompts,
            ..crate::ivr::IvrSettings::default()
        })
    }

    fn validate(&self) -> Result<(), String> {
        for (key, ms) in [
            ("first-digit-timeout-ms", self.first_digit_timeout_ms),
            ("inter-digit-timeout-ms", self.inter_digit_timeout_ms),
        ] {
            if !(100..=120_000).contains(&ms) {
                return Err(format!("[ivr] {key} = {ms}: want 100 to 120000"));
            }
        }
        if !(1..=32).contains(&self.max_digits) {
            return Err(format!(
                "[ivr] max-digits = {}: want 1 to 32",
                self.max_digits
            ));
        }
        if !(1..=10).contains(&self.max_attempts) {
            return Err(format!(
                "[ivr] max-attempts = {}: want 1 to 10",
                self.max_attempts
            ));
        }
        Ok(())
    }
}

fn default_vxml_networks() -> Vec<ipnet::IpNet> {
    ["127.0.0.0/8", "::1/128"]
        .iter()
        .filter_map(|n| n.parse().ok())
        .collect()
}
fn default_vxml_notify_delay() -> u64 {
    3
}

fn default_ivr_number() -> String {
    "8800".into()
}

impl Default for IvrConfig {
    fn default() -> Self {
        IvrConfig {
            number: default_ivr_number(),
            initial_page_url: None,
            alternatevoicexml: None,
            vxml_allowed_networks: default_vxml_networks(),
            vxml_check_sync_delay: default_vxml_notify_delay(),
            first_digit_timeout_ms: default_first_digit_timeout_ms(),
            inter_digit_timeout_ms: default_inter_digit_timeout_ms(),
            max_digits: default_ivr_max_digits(),
            max_attempts: default_ivr_max_attempts(),
            prompts_dir: None,
        }
    }
}

/// SIP authentication defaults applied to DNs that do not set their own.
/// (Default: `register,invite`, as [`AuthPolicy::default`].)
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AuthConfig {
    /// Parsed when the file is read: a bad value refuses the configuration.
    #[serde(default)]
    pub authenticate_requests: AuthPolicy,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SiteConfig {
    pub name: String,
    /// The guide writes `fs_url` with an underscore, like `[dm] fs_url`.
    #[serde(default, rename = "fs_url")]
    pub fs_url: Option<String>,
    /// SIP servers the site's phones register to (host or host:port).
    #[serde(default)]
    pub sip_servers: Vec<SipServer>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SwitchConfig {
    pub name: String,
    pub site: String,
    /// host or host:port of the SIP server.
    pub address: SipServer,
    /// DN ranges this switch owns, e.g. `["1000-1999"]`; a bad one refuses the file.
    #[serde(default)]
    pub dn_ranges: Vec<DnRange>,
    /// Business-continuity peer switch (DNs exist on both).
    #[serde(default)]
    pub peer: Option<String>,
    /// How a phone registered on this switch is told to re-fetch: `direct` (sipdm is its
    /// registrar, or reaches its contact itself) or `via-switch` (an out-of-dialog NOTIFY to
    /// the switch for the phone's AOR, which the switch forwards to the registered contact).
    #[serde(default)]
    pub check_sync: CheckSyncRoute,
    /// Digest realm this switch challenges phones with; the `switch_subscriber` view carries
    /// every DN's and every device's HA1 for it. Default: the host part of `address`.
    #[serde(default)]
    pub realm: Option<String>,
}

impl SwitchConfig {
    /// `realm`, or the host of `address` (`host`, `host:port`, `[v6]:port`).
    pub fn realm(&self) -> String {
        match self.realm.as_deref().filter(|r| !r.is_empty()) {
            Some(r) => r.to_owned(),
            None => self.address.host.clone(),
        }
    }
}

/// See [`SwitchConfig::check_sync`].
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum CheckSyncRoute {
    #[default]
    Direct,
    ViaSwitch,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TrunkConfig {
    pub name: String,
    /// Request-URI user prefix this trunk carries (the IVR number's prefix).
    pub prefix: String,
    /// Where the call goes: `sip:host:port`, or `builtin:ivr`.
    pub contact: String,
    /// Max-Forwards of the trunk's OPTIONS probes (1: an SBC answers for itself instead of
    /// passing the probe on).
    #[serde(default = "default_max_forwards")]
    pub oos_options_max_forwards: u8,
    /// Only `false` is accepted: see [`OOSP_TRANSFER_REFUSED`].
    #[serde(default)]
    pub oosp_transfer_enabled: bool,
    /// Trunk group, e.g. `gcti_provisioning`: trunks of one group are one route, each failing
    /// over to the others (see `sipside::trunks`), and the group labels the trunk's state.
    #[serde(default)]
    pub group: Option<String>,
}

/// Why `oosp-transfer-enabled = true` is refused. On a SIP Server it hands an SBC trunk's
/// out-of-service state on to the DNs (phones) behind that SBC; sipdm routes calls to
/// trunks, never to phones, so there is nothing to hand it to.
pub const OOSP_TRANSFER_REFUSED: &str = "oosp-transfer-enabled = true is not supported: \
     on a SIP Server it marks the phones behind an out-of-service SBC out of service, and \
     sipdm routes calls to trunks, not to phones. sipdm probes this trunk with OPTIONS \
     (Max-Forwards = oos-options-max-forwards) and skips it while it is out of service. \
     Set it on the switch's trunk DN and remove it here";

impl AuthConfig {
    /// The policy of a new DN: `given` parsed, or the configured default.
    pub fn for_new_dn(&self, given: Option<&str>) -> Result<AuthPolicy, AuthPolicyError> {
        given.map_or(Ok(self.authenticate_requests), str::parse)
    }
}

fn default_max_forwards() -> u8 {
    70
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        config.validate().map_err(|message| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        })?;
        Ok(config)
    }

    /// Cross-references serde cannot check: a switch's site exists, DN ranges do not overlap
    /// (they and the SIP servers were parsed by serde), trunk contacts are SIP URIs or the
    /// built-in IVR.
    pub fn validate(&self) -> Result<(), String> {
        self.ivr.validate()?;
        self.campaigns.validate()?;
        let mut names = std::collections::HashSet::new();
        for site in &self.sites {
            if !names.insert(site.name.as_str()) {
                return Err(format!("site `{}` is defined twice", site.name));
            }
        }
        let mut ranges: Vec<(DnRange, &str)> = Vec::new();
        for sw in &self.switches {
            if !self.sites.iter().any(|s| s.name == sw.site) {
                return Err(format!(
                    "switch `{}` names unknown site `{}`",
                    sw.name, sw.site
                ));
            }
            if let Some(peer) = &sw.peer {
                if !self.switches.iter().any(|s| &s.name == peer) {
                    return Err(format!("switch `{}` names unknown peer `{peer}`", sw.name));
                }
            }
            for &r in &sw.dn_ranges {
                // BC pairs own the same DNs on both switches.
                let peered = |other: &str| {
                    sw.peer.as_deref() == Some(other)
                        || self
                            .switches
                            .iter()
                            .any(|s| s.name == other && s.peer.as_deref() == Some(&sw.name))
                };
                if let Some((_, other)) = ranges
                    .iter()
                    .find(|(taken, o)| taken.overlaps(r) && !peered(o))
                {
                    return Err(format!(
                        "switch `{}`: DN range `{r}` overlaps switch `{other}`",
                        sw.name
                    ));
                }
                ranges.push((r, &sw.name));
            }
        }
        for t in &self.trunks {
            if t.prefix.is_empty()
                || !t
                    .prefix
                    .chars()
                    .all(|c| c.is_ascii_digit() || c == '*' || c == '#' || c == '+')
            {
                return Err(format!(
                    "trunk `{}`: prefix `{}` must be dial digits",
                    t.name, t.prefix
                ));
            }
            if !(t.contact.starts_with("sip:")
                || t.contact.starts_with("sips:")
                || t.contact == "builtin:ivr")
            {
                return Err(format!(
                    "trunk `{}`: contact `{}` must be a sip: URI or builtin:ivr",
                    t.name, t.contact
                ));
            }
            if t.oosp_transfer_enabled {
                return Err(format!("trunk `{}`: {OOSP_TRANSFER_REFUSED}", t.name));
            }
            if t.group.as_deref().is_some_and(|g| g.trim().is_empty()) {
                return Err(format!(
                    "trunk `{}`: group is empty (leave it out for no group)",
                    t.name
                ));
            }
        }
        for (key, url) in [
            ("initial-page-url", &self.ivr.initial_page_url),
            ("alternatevoicexml", &self.ivr.alternatevoicexml),
        ] {
            if let Some(url) = url {
                crate::ivr::app_url::check(url).map_err(|e| format!("ivr: {key}: {e}"))?;
            }
        }
        if self.server.tls_cert.is_some() != self.server.tls_key.is_some() {
            return Err("server: tls-cert and tls-key go together".into());
        }
        if self.sip.tls_cert.is_some() != self.sip.tls_key.is_some() {
            return Err("sip: tls-cert and tls-key go together".into());
        }
        if !self.sip.tls_listen.is_empty() && self.sip_tls_files().is_none() {
            return Err(
                "sip: tls-listen needs a certificate: set [sip] tls-cert and tls-key, or \
                 [server] tls-cert and tls-key"
                    .into(),
            );
        }
        if self.sip.digest_algorithms.is_empty() {
            return Err("sip: digest-algorithms lists none".into());
        }
        for a in &self.sip.digest_algorithms {
            if !matches!(
                a.to_ascii_uppercase().as_str(),
                "MD5" | "SHA-256" | "MD5-SESS" | "SHA-256-SESS"
            ) {
                return Err(format!(
                    "sip: unknown digest algorithm `{a}` (MD5, SHA-256, MD5-sess, SHA-256-sess)"
                ));
            }
        }
        if self.sip.udp_threads > MAX_UDP_THREADS {
            return Err(format!(
                "sip: udp-threads {} is more than {MAX_UDP_THREADS} (0 picks one per core but one)",
                self.sip.udp_threads
            ));
        }
        let [lo, hi] = self.sip.overload_retry_after;
        if lo == 0 || lo > hi || hi > MAX_RETRY_AFTER {
            return Err(format!(
                "sip: overload-retry-after [{lo}, {hi}] must be [min, max] seconds with \
                 1 <= min <= max <= {MAX_RETRY_AFTER}"
            ));
        }
        if self.sip.max_queue_delay_ms > 60_000 {
            return Err(format!(
                "sip: max-queue-delay-ms {} is more than a minute (0 turns the check off)",
                self.sip.max_queue_delay_ms
            ));
        }
        if self.sip.min_expires > self.sip.max_expires {
            return Err(format!(
                "sip: min-expires {} exceeds max-expires {}",
                self.sip.min_expires, self.sip.max_expires
            ));
        }
        if !(self.store.url.starts_with("sqlite:")
            || self.store.url.starts_with("postgres:")
            || self.store.url.starts_with("postgresql:"))
        {
            return Err(format!(
                "store.url `{}` must be sqlite:… or postgres://…",
                self.store.url
            ));
        }
        Ok(())
    }

    /// Certificate chain and key for SIP over TLS: `[sip]`'s own, else the HTTPS ones.
    pub fn sip_tls_files(&self) -> Option<(&Path, &Path)> {
        match (&self.sip.tls_cert, &self.sip.tls_key) {
            (Some(c), Some(k)) => Some((c, k)),
            _ => match (&self.server.tls_cert, &self.server.tls_key) {
                (Some(c), Some(k)) => Some((c, k)),
                _ => None,
            },
        }
    }

    /// The switch owning a DN, by the configured ranges (the first of a BC pair).
    pub fn switch_for_dn(&self, dn: &str) -> Option<&SwitchConfig> {
        let n: u64 = dn.parse().ok()?;
        self.switches
            .iter()
            .find(|sw| sw.dn_ranges.iter().any(|r| r.contains_number(n)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Config, ConfigError> {
        Config::parse(s, Path::new("test.toml"))
    }

    #[test]
    fn empty_config_is_the_embedded_default() {
        let c = parse("").unwrap();
        assert_eq!(c.store.url, "sqlite://sipdm.db");
        assert_eq!(c.ivr.number, "8800");
    }

    #[test]
    fn udp_threads_default_and_bound() {
        assert_eq!(parse("").unwrap().sip.udp_threads, 0);
        assert_eq!(
            parse("[sip]\nudp-threads = 3\n").unwrap().sip.udp_threads,
            3
        );
        let err = parse("[sip]\nudp-threads = 5000\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("udp-threads 5000 is more than 256"), "{err}");
    }

    #[test]
    fn overload_settings_default_and_bounds() {
        let c = parse("").unwrap();
        assert_eq!(c.sip.max_requests_in_progress, 5000);
        assert_eq!(c.sip.max_queue_delay_ms, 200);
        assert_eq!(c.sip.overload_retry_after, [5, 15]);
        let c = parse(
            "[sip]\nmax-requests-in-progress = 0\nmax-queue-delay-ms = 50\noverload-retry-after = [2, 4]\n",
        )
        .unwrap();
        assert_eq!(c.sip.max_requests_in_progress, 0);
        assert_eq!(c.sip.max_queue_delay_ms, 50);
        assert_eq!(c.sip.overload_retry_after, [2, 4]);
        for bad in ["[9, 3]", "[0, 3]", "[5, 86400]"] {
            let err = parse(&format!("[sip]\noverload-retry-after = {bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("overload-retry-after"), "{bad}: {err}");
        }
        let err = parse("[sip]\nmax-queue-delay-ms = 120000\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("max-queue-delay-ms"), "{err}");
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let err = parse("[dm]\nfs_url = \"http://x/fs\"\nfs-url = \"y\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("fs-url"), "{err}");
        assert!(err.contains("line 3"), "{err}");
    }

    #[test]
    fn overlapping_ranges_are_refused_unless_peered() {
        let base = r#"
[[sites]]
name = "s1"
[[switches]]
name = "A"
site = "s1"
address = "a"
dn-ranges = ["1000-1999"]
[[switches]]
name = "B"
site = "s1"
address = "b"
dn-ranges = ["1500-2500"]
"#;
        assert!(parse(base).unwrap_err().to_string().contains("overlaps"));
        let peered = base.replace("address = \"b\"", "address = \"b\"\npeer = \"A\"");
        assert!(parse(&peered).is_ok());
    }

    #[test]
    fn bad_dn_ranges_and_sip_servers_are_refused_when_read() {
        let switch = |address: &str, range: &str| {
            format!(
                "[[sites]]\nname = \"s1\"\n[[switches]]\nname = \"A\"\nsite = \"s1\"\n\
                 address = \"{address}\"\ndn-ranges = [\"1000-1999\", \"{range}\"]\n"
            )
        };
        let c = parse(&switch("sip:sips1;transport=tcp", "3000")).unwrap();
        let sw = &c.switches[0];
        assert_eq!(sw.address.to_string(), "sips1:5060;transport=tcp");
        assert_eq!(sw.dn_ranges[1].to_string(), "3000");
        for (address, range, named, line) in [
            (
                "sips1",
                "1999-1000",
                "bad DN range `1999-1000` (want e.g. 1000-1999)",
                7,
            ),
            ("sips1", "abc", "bad DN range `abc`", 7),
            ("sips1:x", "3000", "SIP server `sips1:x`", 6),
            (
                "sips1;transport=sctp",
                "3000",
                "SIP server `sips1;transport=sctp`",
                6,
            ),
        ] {
            let err = parse(&switch(address, range)).unwrap_err().to_string();
            assert!(
                err.contains(named) && err.contains(&format!("line {line}")),
                "{err}"
            );
        }
        let err = parse("[dm]\nsip-servers = [\"sips1\", \"\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("SIP server ``"), "{err}");
        let err = parse("[[sites]]\nname = \"s1\"\nsip-servers = [\"a b\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("SIP server `a b`"), "{err}");
        let c = parse("[dm]\nsip-servers = [\"[::1]:5070\", \"sips2\"]\n").unwrap();
        let servers: Vec<String> = c.dm.sip_servers.iter().map(|s| s.to_string()).collect();
        assert_eq!(servers, ["[::1]:5070", "sips2:5060"]);
    }

    #[test]
    fn sip_tls_takes_its_own_certificate_or_the_https_one() {
        let off = parse("").unwrap();
        assert!(off.sip.tls_listen.is_empty());
        let err = parse("[sip]\ntls-listen = [\"127.0.0.1:5061\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("tls-listen needs a certificate"), "{err}");
        let https = parse(
            "[server]\ntls-cert = \"h.pem\"\ntls-key = \"h.key\"\n[sip]\ntls-listen = [\"0.0.0.0:5061\"]\n",
        )
        .unwrap();
        assert_eq!(
            https.sip_tls_files(),
            Some((Path::new("h.pem"), Path::new("h.key")))
        );
        let own = parse(
            "[server]\ntls-cert = \"h.pem\"\ntls-key = \"h.key\"\n[sip]\ntls-listen = [\"0.0.0.0:5061\"]\ntls-cert = \"s.pem\"\ntls-key = \"s.key\"\n",
        )
        .unwrap();
        assert_eq!(
            own.sip_tls_files(),
            Some((Path::new("s.pem"), Path::new("s.key")))
        );
        let half = parse("[sip]\ntls-cert = \"s.pem\"\n")
            .unwrap_err()
            .to_string();
        assert!(half.contains("go together"), "{half}");
    }

    #[test]
    fn switch_realm_defaults_to_address_host() {
        let c = parse(
            "[[sites]]\nname=\"s1\"\n[[switches]]\nname=\"A\"\nsite=\"s1\"\naddress=\"sips1.example.test:5060\"\n\
             [[switches]]\nname=\"B\"\nsite=\"s1\"\naddress=\"10.0.0.2\"\nrealm=\"corp.example\"\n\
             [[switches]]\nname=\"C\"\nsite=\"s1\"\naddress=\"[2001:db8::1]:5070\"\n",
        )
        .unwrap();
        let realms: Vec<String> = c.switches.iter().map(|s| s.realm()).collect();
        assert_eq!(
            realms,
            ["sips1.example.test", "corp.example", "2001:db8::1"]
        );
    }

    #[test]
    fn trusted_peers_and_check_sync_route_parse() {
        let c = parse(
            "[sip]\ntrusted-peers = [\"127.0.0.31\", \"10.0.0.0/24\"]\n[[sites]]\nname=\"s1\"\n\
             [[switches]]\nname=\"A\"\nsite=\"s1\"\naddress=\"127.0.0.31\"\ncheck-sync=\"via-switch\"\n",
        )
        .unwrap();
        assert_eq!(c.sip.trusted_peers.len(), 2);
        assert!(c.sip.trusted_peers[0].contains(&"127.0.0.31".parse::<std::net::IpAddr>().unwrap()));
        assert_eq!(c.switches[0].check_sync, CheckSyncRoute::ViaSwitch);
        let err = parse("[sip]\ntrusted-peers = [\"sips1\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("sips1"), "{err}");
        let err = parse("[[sites]]\nname=\"s1\"\n[[switches]]\nname=\"A\"\nsite=\"s1\"\naddress=\"x\"\ncheck-sync=\"carrier-pigeon\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("carrier-pigeon"), "{err}");
    }

    #[test]
    fn oosp_transfer_enabled_true_is_refused_with_what_sipdm_does() {
        let sbc =
            "[[trunks]]\nname = \"sbc\"\nprefix = \"9\"\ncontact = \"sip:sbc.example.test\"\n\
                   oos-options-max-forwards = 1\n";
        let c = parse(&format!("{sbc}oosp-transfer-enabled = false\n")).unwrap();
        assert_eq!(c.trunks[0].oos_options_max_forwards, 1);
        let err = parse(&format!("{sbc}oosp-transfer-enabled = true\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("trunk `sbc`")
                && err.contains("oosp-transfer-enabled = true is not supported")
                && err.contains("OPTIONS"),
            "{err}"
        );
        let err = parse(&format!("{sbc}group = \" \"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("group is empty"), "{err}");
    }

    #[test]
    fn authenticate_requests_values() {
        for (given, want) in [
            ("register,invite", "register,invite"),
            ("Invite , REGISTER", "register,invite"),
            ("register", "register"),
            ("invite", "invite"),
            ("", ""),
            ("  ", ""),
        ] {
            assert_eq!(
                given
                    .parse::<AuthPolicy>()
                    .map(|p| p.to_string())
                    .as_deref(),
                Ok(want)
            );
        }
        for bad in [
            "options",
            "register;invite",
            "invite,invite",
            "register,",
            ",invite",
        ] {
            let err = bad.parse::<AuthPolicy>().unwrap_err().to_string();
            assert!(
                err.contains(bad) && err.contains("register,invite"),
                "{err}"
            );
        }
        let auth = AuthConfig {
            authenticate_requests: "register".parse().unwrap(),
        };
        let new_dn = |given| auth.for_new_dn(given).map(|p| p.to_string());
        assert_eq!(new_dn(None).as_deref(), Ok("register"));
        assert_eq!(new_dn(Some("")).as_deref(), Ok(""));
        let err = parse("[auth]\nauthenticate-requests = \"bye\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("bye"), "{err}");
    }

    #[test]
    fn switch_for_dn_uses_ranges() {
        let c = parse(
            "[[sites]]\nname=\"s1\"\n[[sites]]\nname=\"s2\"\n[[switches]]\nname=\"SIPS1\"\nsite=\"s1\"\naddress=\"a\"\ndn-ranges=[\"1000-1999\"]\n[[switches]]\nname=\"SIPS2\"\nsite=\"s2\"\naddress=\"b\"\ndn-ranges=[\"2000-2999\"]\n",
        )
        .unwrap();
        assert_eq!(c.switch_for_dn("2000").unwrap().name, "SIPS2");
        assert_eq!(c.switch_for_dn("1000").unwrap().name, "SIPS1");
        assert!(c.switch_for_dn("3000").is_none());
        assert!(c.switch_for_dn("abc").is_none());
    }
}
