//! sipdm: zero-touch and IVR provisioning plus a registrar for IP-phone fleets.
//!
//! Module map:
//! - [`config`]: the TOML configuration, in the deployment guide's vocabulary.
//! - [`domain`]: typed values parsed once at the edge (`AuthPolicy`, `ProfileKind`, `Mac`); no I/O.
//! - [`fault`]: the kinds of failure, and one table each for their HTTP and SIP statuses.
//! - [`store`]: the only SQL (SQLite file or PostgreSQL).
//! - [`provisioning`]: MACs, vendor file names, the vendor table, template rendering.
//! - [`credentials`]: per-device credentials of unassigned phones.
//! - [`service`]: the device-management service the API, CLI and IVR share; every write
//!   emits typed change events ([`store::Change`]).
//! - [`render_cache`]: rendered phone files, dropped precisely by change events.
//! - [`http`] and [`admin`]: the HTTP edge (provisioning, admin API, health, metrics).
//! - [`ivr`]: the built-in IVR (RTP, DTMF, prompts) and the VoiceXML pages for media servers.
//! - [`sipside`]: the store and credentials behind the SIP stack (`sip/`), the call router and
//!   the check-sync service (with its hand-over between instances sharing PostgreSQL).
//! - [`dns`]: RFC 3263 resolution of SIP server and trunk addresses (NAPTR, SRV, A/AAAA).
//! - [`tls`]: the certificate both HTTPS and SIP over TLS serve.
//! - [`fleet`]: fetch receipts, out-of-date phones and paced check-sync campaigns.
//! - [`app`]: wiring and startup.

pub mod admin;
pub mod app;
pub mod config;
pub mod credentials;
pub mod dns;
pub mod domain;
pub mod fault;
pub mod fleet;
pub mod http;
pub mod ivr;
pub mod provisioning;
pub mod render_cache;
pub mod service;
pub mod sipside;
pub mod store;
pub mod tls;

/// A boxed, sendable future: keeps the traits between rooms object-safe.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;
