//! The one thing the IVR asks of the rest of sipdm: "assign this DN to the calling device".
//!
//! Why a trait: the IVR (built-in or VoiceXML) must not know SQL, switches or profiles; the
//! service layer implements [`Assigner`] and owns every rule (the DN exists, belongs to a switch
//! this deployment serves, is free or re-assignable) and commits before answering, so the
//! caller only hears "assigned" for an assignment that is durable.

use std::future::Future;

use crate::provisioning::mac::Mac;

/// Who is calling, as far as the IVR can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerIdentity {
    /// The device's MAC when the call carries it (the digest identity of the INVITE, or the
    /// device-identity header sipdm adds when it routes the call). `None`: the assigner decides
    /// whether an anonymous assignment is allowed (normally not).
    pub device: Option<Mac>,
    /// The remote URI of the call (From of the INVITE; `session.connection.remote.uri` in
    /// VoiceXML).
    pub remote_uri: String,
}

/// Why an assignment was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssignRefusal {
    /// No such DN.
    #[error("unknown extension")]
    UnknownDn,
    /// The DN belongs to a switch this deployment does not serve.
    #[error("extension of another site")]
    OtherSite,
    /// The DN is assigned to another device and its profile does not allow reassignment.
    #[error("extension already taken")]
    Taken,
    /// The caller may not assign anything (unknown or unauthenticated device).
    #[error("caller not permitted to assign")]
    NotPermitted,
    /// No writable database (a failover that did not finish in time, a site cut off): the
    /// caller is asked to call again later; nothing was committed.
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// The assignment could not be made (a fault of ours); nothing was committed.
    #[error("assignment failed: {0}")]
    Internal(String),
}

impl AssignRefusal {
    /// Whether the caller should be offered another try: only when the entry itself was the
    /// problem. A caller who may not assign, or a broken store, gets "Goodbye" instead of a
    /// loop of refusals.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            AssignRefusal::UnknownDn | AssignRefusal::OtherSite | AssignRefusal::Taken
        )
    }
}

/// Assigns a DN to a calling device; implemented by the service layer.
///
/// The future is `Send` so the IVR can run it on any runtime thread. The IVR calls it at most
/// once per complete entry and never after the caller hung up; it does **not** cancel a call to
/// it that is in flight when the caller hangs up (dropping a half-done commit would leave the
/// store's state unknown to the caller of `assign`).
pub trait Assigner: Send + Sync {
    /// Assigns `dn` to `caller`'s device and returns the DN as stored (it may normalise it).
    fn assign(
        &self,
        caller: &CallerIdentity,
        dn: &str,
    ) -> impl Future<Output = Result<String, AssignRefusal>> + Send;
}
