//! IVR assignments: the service-side rules behind [`crate::ivr::Assigner`].
//!
//! The IVR (built-in or VoiceXML) only knows "this device asked for this DN". Here that becomes
//! a committed assignment — the DN exists, belongs to a switch this deployment serves, and is
//! free (or the device's profile allows taking it over) — and, once committed, a check-sync so
//! the phone re-fetches its file. The assignment is durable before the caller hears "assigned".

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::ivr::{AssignRefusal, Assigner, CallerIdentity};
use crate::service::{Dm, DmError};
use crate::store::StoreError;
use crate::BoxFuture;

/// Sends the check-sync NOTIFY to a device; implemented by the SIP side.
pub trait CheckSync: Send + Sync + 'static {
    fn check_sync(&self, mac: String) -> BoxFuture<'_, Result<(), String>>;
}

pub struct IvrAssigner {
    dm: Arc<Dm>,
    /// Set once SIP is up; VoiceXML assignments made before then are not notified.
    check_sync: Arc<OnceLock<Arc<dyn CheckSync>>>,
    /// When set, a committed assignment is followed by a check-sync after this delay (the
    /// VoiceXML path: the media server hangs up after the read-back). The built-in IVR leaves
    /// it unset and notifies when the call has ended.
    notify_after: Option<Duration>,
}

impl IvrAssigner {
    pub fn new(
        dm: Arc<Dm>,
        check_sync: Arc<OnceLock<Arc<dyn CheckSync>>>,
        notify_after: Option<Duration>,
    ) -> Self {
        IvrAssigner {
            dm,
            check_sync,
            notify_after,
        }
    }

    /// The rules, without the notification.
    pub async fn assign_dn(
        dm: &Dm,
        caller: &CallerIdentity,
        dn: &str,
    ) -> Result<String, AssignRefusal> {
        let Some(mac) = caller.device else {
            tracing::warn!(caller = %caller.remote_uri, dn, "IVR assignment refused: the call names no device");
            return Err(AssignRefusal::NotPermitted);
        };
        let record = match dm.store.dn(dn).await {
            Ok(d) => d,
            Err(StoreError::NotFound { .. }) => return Err(AssignRefusal::UnknownDn),
            Err(e) => return Err(AssignRefusal::Internal(e.to_string())),
        };
        // A DN of a switch outside this deployment's configuration is another site's.
        let served = &dm.config.switches;
        if !served.is_empty() {
            let switch = record
                .switch
                .clone()
                .or_else(|| dm.config.switch_for_dn(dn).map(|s| s.name.clone()));
            if !switch.is_some_and(|s| served.iter().any(|c| c.name == s)) {
                return Err(AssignRefusal::OtherSite);
            }
        }
        match dm.assign(&mac.to_string(), dn, "ivr").await {
            Ok(out) => Ok(out.dn),
            Err(DmError::Store(StoreError::Conflict { .. })) => Err(AssignRefusal::Taken),
            Err(DmError::Store(StoreError::NotFound { what: "device", .. })) => {
                tracing::warn!(mac = %mac, dn, "IVR assignment refused: device unknown to the store");
                Err(AssignRefusal::NotPermitted)
            }
            Err(DmError::Store(StoreError::NotFound { .. })) => Err(AssignRefusal::UnknownDn),
            Err(e) => Err(AssignRefusal::Internal(e.to_string())),
        }
    }
}

impl Assigner for IvrAssigner {
    async fn assign(&self, caller: &CallerIdentity, dn: &str) -> Result<String, AssignRefusal> {
        let out = Self::assign_dn(&self.dm, caller, dn).await?;
        if let (Some(delay), Some(mac)) = (self.notify_after, caller.device) {
            let cs = self.check_sync.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                match cs.get() {
                    Some(sender) => {
                        if let Err(e) = sender.check_sync(mac.to_string()).await {
                            tracing::warn!(mac = %mac, error = %e, "check-sync after a VoiceXML assignment failed");
                        }
                    }
                    None => tracing::warn!(mac = %mac, "no SIP side to send check-sync"),
                }
            });
        }
        Ok(out)
    }
}
