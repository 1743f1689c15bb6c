//! Registrar (RFC 3261 §10, RFC 5626 basics, RFC 3327 Path).
//!
//! * [`binding`] — [`Binding`] and [`BindingEvent`];
//! * [`table`] — the sharded in-memory [`BindingTable`] (the hot path);
//! * [`store`] — the [`BindingStore`] trait, [`MemoryStore`], write-behind batching;
//! * [`register`] — REGISTER processing: the [`Registrar`] as a [`RequestHandler`].
//!
//! Bindings are served from memory and persisted through the store; binding changes are
//! published as events (insert, refresh, remove, expire) on a broadcast channel.

pub mod binding;
pub mod register;
pub mod store;
pub mod table;

use std::time::Duration;

use tokio::sync::broadcast;

pub use binding::{Binding, BindingEvent};
pub use register::Registrar;
pub use store::{BindingChange, BindingStore, MemoryStore, StoreError};
pub use table::BindingTable;

#[allow(unused_imports)]
use crate::handler::RequestHandler;

#[derive(Debug, Clone)]
pub struct RegistrarConfig {
    /// Shorter registrations are refused with 423 and Min-Expires (RFC 3261 §10.3 step 7).
    pub min_expires: u32,
    /// Longer ones are shortened to this.
    pub max_expires: u32,
    /// Used when neither the contact nor the request says.
    pub default_expires: u32,
    pub max_contacts_per_aor: usize,
    /// AORs many devices share (sipdm's `gcti_provisioning`: one binding per unassigned
    /// phone), exempt from `max_contacts_per_aor`.
    pub shared_aors: Vec<String>,
    /// AOR keys are `user@host` when true, the user part alone when false (one domain).
    pub use_domain: bool,
    pub sweep_interval: Duration,
    /// Write-behind: most changes per batch, and longest wait before a batch is written.
    pub write_batch: usize,
    pub write_interval: Duration,
    /// Changes queued before REGISTER handling waits for the store.
    pub write_queue: usize,
    /// Event channel capacity (slow subscribers miss events, they never block the registrar).
    pub event_capacity: usize,
    /// Longest wait for the [`crate::auth::Authenticator`] before answering 500.
    pub auth_timeout: Duration,
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        RegistrarConfig {
            min_expires: 60,
            max_expires: 7200,
            default_expires: 3600,
            max_contacts_per_aor: 10,
            shared_aors: Vec::new(),
            use_domain: false,
            sweep_interval: Duration::from_secs(1),
            write_batch: 2000,
            write_interval: Duration::from_millis(200),
            write_queue: 200_000,
            event_capacity: 8192,
            auth_timeout: Duration::from_secs(5),
        }
    }
}

/// Registrar failures, each with the status it is answered with (cf. Kamailio registrar
/// `reply.c`: one table from error to status).
#[derive(Debug, Clone, thiserror::Error)]
pub enum RegistrarError {
    #[error("To header missing or not a SIP URI")]
    BadTo,
    #[error("malformed Contact: {0}")]
    BadContact(String),
    #[error("Contact * needs Expires: 0 and no other contact")]
    BadStar,
    #[error("invalid q-value")]
    BadQ,
    #[error("interval too brief for {aor}: {requested}s < {min}s")]
    IntervalTooBrief {
        aor: String,
        requested: u32,
        min: u32,
    },
    #[error("Call-ID/CSeq out of order for {aor}")]
    OutOfOrder { aor: String },
    #[error("too many contacts for {aor} (max {max})")]
    TooManyContacts { aor: String, max: usize },
    #[error("missing Call-ID or CSeq")]
    MissingHeader,
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    #[error("unsupported extensions required: {0}")]
    BadExtension(String),
}

/// How long a phone is asked to wait when the credential source is down (RFC 3261 §21.5.4).
pub const RETRY_AFTER_UNAVAILABLE: u32 = 5;

impl RegistrarError {
    pub fn status(&self) -> (u16, &'static str) {
        match self {
            RegistrarError::BadTo => (400, "Bad To Header"),
            RegistrarError::BadContact(_) => (400, "Bad Contact"),
            RegistrarError::BadStar => (400, "Invalid Contact *"),
            RegistrarError::BadQ => (400, "Bad q-value"),
            RegistrarError::MissingHeader => (400, "Missing Call-ID or CSeq"),
            RegistrarError::IntervalTooBrief { .. } => (423, "Interval Too Brief"),
            RegistrarError::OutOfOrder { .. } => (500, "Out Of Order Registration"),
            RegistrarError::TooManyContacts { .. } => (403, "Too Many Contacts"),
            RegistrarError::Auth(e) if e.status == 503 => (503, "Service Unavailable"),
            RegistrarError::Auth(_) => (500, "Server Internal Error"),
            RegistrarError::BadExtension(_) => (420, "Bad Extension"),
        }
    }
}

pub(crate) fn new_events(cap: usize) -> broadcast::Sender<BindingEvent> {
    broadcast::channel(cap.max(16)).0
}
