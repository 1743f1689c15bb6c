//! IVR assignments: the service-side rules behind [`crate::ivr::Assigner`].
//!
//! The IVR (built-in or VoiceXML) only knows "this device asked for this DN". Here that becomes
//! a committed assignment — the DN exists, belongs to a switch this deployment serves, and is
//! free (or the device's profile allows taking it over) — and, once committed, a check-sync so
//! the phone re-fetches its file. The assignment is durable before the caller hears "assigned".
//! A DN taken over from another device is deprovisioned there ([`Deprovision`]: its bindings
//! removed, that phone told to re-fetch), behind the caller's answer.

use std::sync::Arc;
use std::time::Duration;

use sip::Endpoint;

use crate::fault::{Fault, HasFault};
use crate::ivr::{AssignRefusal, Assigner, CallerIdentity};
use crate::service::{Dm, DmError};
use crate::sipside::checksync::CheckSync;
use crate::sipside::deprovision::Deprovision;
use crate::store::{AssignOutcome, StoreError};

/// The check-sync a VoiceXML assignment is followed by: the media server hangs up after the
/// read-back, so the NOTIFY goes out after `delay` from the endpoint that is running.
pub struct ThenCheckSync {
    pub check_sync: Arc<CheckSync>,
    pub ep: Endpoint,
    pub delay: Duration,
}

pub struct IvrAssigner {
    dm: Arc<Dm>,
    /// Unset for the built-in IVR, which notifies when its call has ended.
    then: Option<ThenCheckSync>,
    /// What deprovisions a device whose DN the caller took: the running endpoint and the
    /// check-sync service (the built-in IVR's assigner gets them per call, [`Self::on_call`]).
    sip: Option<(Endpoint, Arc<CheckSync>)>,
}

impl IvrAssigner {
    /// The built-in IVR's: the rules only (its call router sends the check-sync at hang-up,
    /// and hands each call the endpoint with [`Self::on_call`]).
    pub fn new(dm: Arc<Dm>) -> Self {
        IvrAssigner {
            dm,
            then: None,
            sip: None,
        }
    }

    /// The VoiceXML flow's: the rules, then a check-sync.
    pub fn with_check_sync(dm: Arc<Dm>, then: ThenCheckSync) -> Self {
        let sip = Some((then.ep.clone(), then.check_sync.clone()));
        IvrAssigner {
            dm,
            then: Some(then),
            sip,
        }
    }

    /// This assigner for one call that `ep` answered: a take-over it commits is
    /// deprovisioned from there.
    pub fn on_call(&self, ep: &Endpoint, check_sync: &Arc<CheckSync>) -> Self {
        IvrAssigner {
            dm: self.dm.clone(),
            then: self.then.as_ref().map(|t| ThenCheckSync {
                check_sync: t.check_sync.clone(),
                ep: t.ep.clone(),
                delay: t.delay,
            }),
            sip: Some((ep.clone(), check_sync.clone())),
        }
    }

    /// The rules, without the notification. A failover in progress (the database
    /// unavailable) is waited out once, up to [`FAILOVER_WAIT`], and the whole assignment made
    /// again on the new primary: assigning a DN to the device that already has it is a no-op,
    /// so a commit that landed but was never confirmed is not doubled.
    pub async fn assign_dn(
        dm: &Dm,
        caller: &CallerIdentity,
        dn: &str,
    ) -> Result<AssignOutcome, AssignRefusal> {
        let first = Self::assign_once(dm, caller, dn).await;
        if matches!(&first, Err(AssignRefusal::Unavailable(_)))
            && dm.store.wait_writable(FAILOVER_WAIT).await
        {
            tracing::warn!(dn, caller = %caller.remote_uri, "IVR assignment made again on the new database primary");
            return Self::assign_once(dm, caller, dn).await;
        }
        first
    }

    async fn assign_once(
        dm: &Dm,
        caller: &CallerIdentity,
        dn: &str,
    ) -> Result<AssignOutcome, AssignRefusal> {
        let Some(mac) = caller.device else {
            tracing::warn!(caller = %caller.remote_uri, dn, "IVR assignment refused: the call names no device");
            return Err(AssignRefusal::NotPermitted);
        };
        let record = match dm.store.dn(dn).await {
            Ok(d) => d,
            Err(StoreError::NotFound { .. }) => return Err(AssignRefusal::UnknownDn),
            Err(e) => return Err(refusal(e.into())),
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
            Ok(out) => Ok(out),
            Err(DmError::Store(StoreError::Conflict { .. })) => Err(AssignRefusal::Taken),
            Err(DmError::Store(StoreError::NotFound { what: "device", .. })) => {
                tracing::warn!(mac = %mac, dn, "IVR assignment refused: device unknown to the store");
                Err(AssignRefusal::NotPermitted)
            }
            Err(DmError::Store(StoreError::NotFound { .. })) => Err(AssignRefusal::UnknownDn),
            Err(e) => Err(refusal(e)),
        }
    }
}

/// How long an IVR assignment waits for a writable database before the caller is asked to
/// call again later: about what a pg_auto_failover failover takes with its default timeouts.
/// The caller hears silence meanwhile, after the last digit; a caller who hangs up does not
/// cancel it (see [`Assigner`]).
pub const FAILOVER_WAIT: Duration = Duration::from_secs(30);

/// A failure nothing was committed for: "call again later" when the database is unavailable.
fn refusal(e: DmError) -> AssignRefusal {
    if matches!(e.fault(), Fault::Unavailable) {
        AssignRefusal::Unavailable(e.to_string())
    } else {
        AssignRefusal::Internal(e.to_string())
    }
}

impl Assigner for IvrAssigner {
    async fn assign(&self, caller: &CallerIdentity, dn: &str) -> Result<String, AssignRefusal> {
        let out = Self::assign_dn(&self.dm, caller, dn).await?;
        if !out.freed.is_empty() {
            match &self.sip {
                Some((ep, cs)) => {
                    let (ep, cs, freed, caller) =
                        (ep.clone(), cs.clone(), out.freed.clone(), out.mac.clone());
                    // Behind the caller's answer. The caller itself (a DN it held before)
                    // loses its bindings here and gets its check-sync when the call ends.
                    tokio::spawn(async move {
                        Deprovision::new(&ep, &cs)
                            .run_except(&freed, "ivr", Some(&caller))
                            .await;
                    });
                }
                None => tracing::warn!(
                    dn,
                    "IVR take-over committed with no SIP endpoint to deprovision from"
                ),
            }
        }
        let out = out.dn;
        if let (Some(then), Some(mac)) = (&self.then, caller.device) {
            let (cs, ep, delay) = (then.check_sync.clone(), then.ep.clone(), then.delay);
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                if let Err(e) = cs.after_assignment(&ep, &mac.to_string()).await {
                    tracing::warn!(mac = %mac, error = %e, "check-sync after a VoiceXML assignment failed");
                }
            });
        }
        Ok(out)
    }
}
