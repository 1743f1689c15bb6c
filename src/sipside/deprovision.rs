//! Deprovisioning: what follows a write that took a DN from a device (unassigned, taken over
//! by another device, replaced by another DN, or deleted with its device). The store has
//! already committed the change (and rotated the DN's password when configured); here, the
//! only place that can touch the registrar and send NOTIFYs:
//!
//! 1. every binding of the DN goes, from this instance's registrar and from the store's
//!    bindings table (whichever instance wrote it): the DN now belongs to another device or
//!    to nobody, so no call for it may reach the old phone;
//! 2. the old device gets a check-sync, down the line registration just removed when it had
//!    one here ([`CheckSync::send_to_former`]), so that it re-fetches its file: the default
//!    one (an unassigned device's, or an unknown phone's once deleted) or its new DN's, and
//!    registers as that.
//!
//! A check-sync that does not reach the phone (not registered, no answer) is logged and
//! reported, never an error of the write: the phone finds its new file at its next re-fetch.
//! Every door that deprovisions goes through [`Deprovision::run`]: the admin API (unassign,
//! delete, an assignment that takes a DN over or replaces one) and the IVR assignment.

use serde::Serialize;
use sip::Endpoint;
use utoipa::ToSchema;

use crate::fault::HasFault;
use crate::sipside::checksync::{CheckSync, CheckSyncReport};
use crate::store::FreedDn;

/// What became of one device that lost a DN, as the API reports it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Deprovisioned {
    /// The device that lost the DN.
    pub mac: String,
    /// The DN it lost.
    pub dn: String,
    /// The device was deleted (it is an unknown phone now).
    pub deleted: bool,
    /// The DN got a new password in the same write (`[dm] rotate-password-on-reassign`).
    pub password_rotated: bool,
    /// Bindings of the DN removed: this instance's registrations and the stored rows of the
    /// others.
    pub bindings_removed: usize,
    /// The check-sync the device answered.
    pub check_sync: Option<CheckSyncReport>,
    /// Why no check-sync reached the device (it re-fetches on its own schedule instead).
    pub check_sync_error: Option<String>,
}

/// The SIP side of a deprovisioning: the running endpoint and the check-sync service.
pub struct Deprovision<'a> {
    pub ep: &'a Endpoint,
    pub check_sync: &'a CheckSync,
}

impl<'a> Deprovision<'a> {
    pub fn new(ep: &'a Endpoint, check_sync: &'a CheckSync) -> Self {
        Deprovision { ep, check_sync }
    }

    /// Clears each freed DN's bindings and sends its old device a check-sync, in order.
    pub async fn run(&self, freed: &[FreedDn], actor: &str) -> Vec<Deprovisioned> {
        self.run_except(freed, actor, None).await
    }

    /// [`Deprovision::run`], without the check-sync to `busy` (a device in a call to the IVR,
    /// which gets its check-sync when the call ends): its freed DN's bindings still go.
    pub async fn run_except(
        &self,
        freed: &[FreedDn],
        actor: &str,
        busy: Option<&str>,
    ) -> Vec<Deprovisioned> {
        let mut out = Vec::with_capacity(freed.len());
        for f in freed {
            out.push(self.one(f, actor, busy != Some(f.mac())).await);
        }
        out
    }

    async fn one(&self, f: &FreedDn, actor: &str, notify: bool) -> Deprovisioned {
        let mac = f.mac();
        let here = self.ep.registrar().remove_bindings(&f.dn).await;
        let stored = match self.check_sync.store().take_bindings_of(&f.dn).await {
            Ok(rows) => rows,
            Err(e) => {
                // This instance's were removed above and their rows follow behind; another
                // instance's row stays until it expires.
                tracing::warn!(dn = %f.dn, error = %e, "stored bindings of a freed DN not removed");
                Vec::new()
            }
        };
        let me = self.check_sync.instance_id();
        let others = stored
            .iter()
            .filter(|r| r.holder.as_deref() != Some(me))
            .count();
        let sent = match notify {
            true => Some(
                self.check_sync
                    .send_to_former(self.ep, f, &here, &stored, actor)
                    .await,
            ),
            false => None,
        };
        let (check_sync, check_sync_error) = match sent {
            Some(Ok(report)) => (Some(report), None),
            Some(Err(e)) => {
                tracing::info!(mac, dn = %f.dn, error = %e, fault = ?e.fault(), "check-sync after freeing a DN not delivered");
                (None, Some(e.to_string()))
            }
            None => (None, None),
        };
        tracing::info!(
            mac,
            dn = %f.dn,
            deleted = f.deleted,
            bindings_removed = here.len() + others,
            check_sync = check_sync.is_some(),
            "DN freed: bindings removed, device told to re-fetch"
        );
        Deprovisioned {
            mac: mac.to_owned(),
            dn: f.dn.clone(),
            deleted: f.deleted,
            password_rotated: f.rotated_from.is_some(),
            bindings_removed: here.len() + others,
            check_sync,
            check_sync_error,
        }
    }
}
