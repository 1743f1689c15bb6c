//! NOTIFY check-sync: tell a phone to re-fetch its file.
//!
//! One home for every way a NOTIFY reaches a phone, tried in order (`Delivery`): a binding
//! this instance holds (down its flow), a binding another instance stored (handed over to
//! that instance, or straight to the contact when it is gone), then the switch the phone is
//! registered on ([`super::via_switch`]). Where sipdm holds the binding, the NOTIFY goes to
//! the exact contact of the device's own binding — never to the AOR, since every unassigned
//! phone shares `gcti_provisioning` — in a client transaction (retransmitted over UDP), with
//! the vendor's Event. Phones that challenge NOTIFYs (Cisco, snom with `challenge_checksync`)
//! get the device's credentials, answered once.

use std::sync::Arc;
use std::time::Duration;

use sip::transport::Protocol;
use sip::{Endpoint, Target};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub mod handover;
mod notify;
mod via_switch;

use handover::{Cluster, ClusterError, Handover};
use notify::{send, Identity};
pub use notify::{CheckSyncError, CheckSyncReport, Route};

use crate::credentials::PROVISIONING_USER;
use crate::service::Dm;
use crate::sipside::bindings::from_row;
use crate::store::{FreedDn, StoredBinding};
use crate::BoxFuture;

fn is_provisioning_aor(aor: &str) -> bool {
    aor == PROVISIONING_USER || aor.starts_with(&format!("{PROVISIONING_USER}@"))
}

/// After an IVR assignment the phone may not be found at once (its switch saw its
/// registration a moment after sipdm looked, or the switch was restarting): tried again after
/// these pauses before the failure is reported. The assignment is committed either way; a
/// phone that is never reached still finds its DN on its next scheduled re-fetch.
const NOT_REGISTERED_RETRIES: [Duration; 3] = [
    Duration::from_secs(2),
    Duration::from_secs(5),
    Duration::from_secs(10),
];

/// The check-sync service: built once, after the store and before SIP; every call is handed
/// the endpoint it sends with (the SIP handlers get it per request, the HTTP side holds the
/// running one).
pub struct CheckSync {
    dm: Arc<Dm>,
    /// This instance among those sharing the database, and its hand-overs.
    cluster: Arc<Cluster>,
}

impl CheckSync {
    pub fn new(dm: Arc<Dm>, cluster: Arc<Cluster>) -> Arc<CheckSync> {
        Arc::new(CheckSync { dm, cluster })
    }

    /// The store it reads devices and bindings from.
    pub fn store(&self) -> &crate::store::Store {
        &self.dm.store
    }

    /// This instance's id (every binding row it writes names it).
    pub fn instance_id(&self) -> &str {
        self.cluster.id()
    }

    /// Sends check-sync to the device `mac` (normalised) and records it in the audit log.
    /// When this instance does not hold the phone's registration but another instance
    /// sharing the database does, the NOTIFY is handed over to it (or, if it is gone, sent to
    /// the stored contact directly); else it goes through the phone's switch.
    pub async fn send(
        &self,
        ep: &Endpoint,
        mac: &str,
        actor: &str,
    ) -> Result<CheckSyncReport, CheckSyncError> {
        self.send_with(ep, mac, actor, &DELIVERIES).await
    }

    /// The check-sync an IVR assignment ends with: a phone not registered anywhere yet is
    /// tried again after [`NOT_REGISTERED_RETRIES`].
    pub async fn after_assignment(&self, ep: &Endpoint, mac: &str) -> Result<(), CheckSyncError> {
        let mut pauses = NOT_REGISTERED_RETRIES.iter();
        loop {
            match self.send(ep, mac, "ivr").await {
                Ok(_) => return Ok(()),
                Err(CheckSyncError::NotRegistered(_)) => {
                    match pauses.next() {
                        Some(p) => {
                            tracing::info!(mac, "check-sync: phone not registered anywhere yet; trying again in {p:?}");
                            tokio::time::sleep(*p).await;
                        }
                        None => return Err(CheckSyncError::NotRegistered(mac.to_owned())),
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Serves the other instances' hand-overs down `ep`'s flows until `stop` (PostgreSQL;
    /// nothing on SQLite). Returns once listening.
    pub async fn listen(
        self: &Arc<Self>,
        ep: Endpoint,
        stop: watch::Receiver<bool>,
    ) -> Result<Option<JoinHandle<()>>, ClusterError> {
        let taker = Arc::new(Here {
            check_sync: self.clone(),
            ep,
        });
        self.cluster.listen(taker, stop).await
    }

    /// Check-sync for a device that has just lost `freed.dn` (unassigned, its DN taken over,
    /// or deleted), once the DN's bindings are gone: `here` those removed from this
    /// instance's registrar, `stored` the rows removed from the store. The NOTIFY goes down
    /// the newest live binding of `here` (the phone's line registration, its flow), answering
    /// a challenge with the line's credentials as the phone knew them; else straight to the
    /// contact of a row another instance stored; else by the deliveries of [`CheckSync::send`]
    /// with the device as it was (its provisioning identity, or the switch). A deleted device
    /// is reached the same way: nothing here reads its row.
    pub async fn send_to_former(
        &self,
        ep: &Endpoint,
        freed: &FreedDn,
        here: &[Arc<sip::registrar::Binding>],
        stored: &[StoredBinding],
        actor: &str,
    ) -> Result<CheckSyncReport, CheckSyncError> {
        let dm = self.dm.as_ref();
        let me = self.cluster.id();
        let identity = || match &freed.rotated_from {
            Some(password) => Identity::Line {
                user: freed.dn.clone(),
                password: password.clone(),
            },
            None => Identity::Dn(freed.dn.clone()),
        };
        let now = sip::auth::nonce::now_secs();
        if let Some(b) = here
            .iter()
            .filter(|b| !b.is_expired(now))
            .max_by_key(|b| b.updated_at)
        {
            let target = Target::Binding(b.clone());
            return send(
                dm,
                ep,
                &freed.device,
                &b.contact,
                target,
                identity(),
                actor,
                Route::Local,
                me,
            )
            .await;
        }
        let now_ms = crate::store::now_ms();
        let other = stored
            .iter()
            .filter(|r| r.expires_at > now_ms && r.holder.as_deref() != Some(me))
            .filter_map(from_row)
            .max_by_key(|b| b.updated_at);
        if let Some(mut binding) = other {
            // As for a stored binding whose holder is gone: another instance's flow cannot be
            // used from here, and that instance no longer finds the DN on the device.
            let target = match binding.flow.take() {
                Some(f) if f.protocol == Protocol::Udp => Target::Address(Protocol::Udp, f.remote),
                _ => Target::Binding(Arc::new(binding.clone())),
            };
            return send(
                dm,
                ep,
                &freed.device,
                &binding.contact,
                target,
                identity(),
                &format!("{actor}, direct to contact"),
                Route::Direct,
                me,
            )
            .await;
        }
        // Its provisioning identity, here or on another instance (not the DN's bindings: any
        // left now are the new holder's); then the switch, for the DN it knew.
        let mut unlined = freed.device.clone();
        unlined.dn = None;
        let own = [Delivery::OwnBinding, Delivery::StoredBinding];
        match self.deliver(ep, unlined, actor, &own).await {
            Err(CheckSyncError::NotRegistered(_)) => {
                self.deliver(ep, freed.device.clone(), actor, &[Delivery::ViaSwitch])
                    .await
            }
            other => other,
        }
    }

    async fn send_with(
        &self,
        ep: &Endpoint,
        mac: &str,
        actor: &str,
        deliveries: &[Delivery],
    ) -> Result<CheckSyncReport, CheckSyncError> {
        let device = self
            .dm
            .store
            .device(mac)
            .await
            .map_err(|e| CheckSyncError::Device(e.to_string()))?;
        self.deliver(ep, device, actor, deliveries).await
    }

    /// Tries `deliveries` in order for `device` (as read, or as it was before a write).
    async fn deliver(
        &self,
        ep: &Endpoint,
        device: crate::store::model::Device,
        actor: &str,
        deliveries: &[Delivery],
    ) -> Result<CheckSyncReport, CheckSyncError> {
        let dm = self.dm.as_ref();
        let mac = device.mac.clone();
        let mac = mac.as_str();
        let attempt = Attempt {
            dm,
            ep,
            cluster: &self.cluster,
            device,
            auth_user: dm.credentials.auth_user(mac),
            actor,
            me: self.cluster.id().to_owned(),
            may_hand_over: deliveries.contains(&Delivery::StoredBinding),
        };
        for delivery in deliveries {
            let outcome = match delivery {
                Delivery::OwnBinding => attempt.own_binding().await,
                Delivery::StoredBinding => attempt.stored_binding().await,
                Delivery::ViaSwitch => attempt.via_switch().await,
            };
            if let Some(result) = outcome {
                return result;
            }
        }
        Err(CheckSyncError::NotRegistered(mac.to_owned()))
    }
}

/// What a holder runs for another instance: its own registrations only.
struct Here {
    check_sync: Arc<CheckSync>,
    ep: Endpoint,
}

impl handover::Taker for Here {
    fn check_sync_here<'a>(
        &'a self,
        mac: &'a str,
        actor: &'a str,
    ) -> BoxFuture<'a, Result<CheckSyncReport, CheckSyncError>> {
        Box::pin(
            self.check_sync
                .send_with(&self.ep, mac, actor, &[Delivery::OwnBinding]),
        )
    }
}

/// The ways a NOTIFY can reach a phone, tried in [`DELIVERIES`] order; the first that applies
/// decides (as wazo-provd tries its synchronize strategies one after the other).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    /// A binding this instance holds: down its flow — or, when the binding was restored from
    /// a row that another live instance wrote last, handed over to that instance, which holds
    /// the flow.
    OwnBinding,
    /// A binding another instance stored: handed over to that instance, or, when it is gone,
    /// sent to the stored contact directly.
    StoredBinding,
    /// The phone is registered on a switch (`check-sync = "via-switch"`): a NOTIFY to the
    /// switch for its AOR, which the switch forwards.
    ViaSwitch,
}

const DELIVERIES: [Delivery; 3] = [
    Delivery::OwnBinding,
    Delivery::StoredBinding,
    Delivery::ViaSwitch,
];

/// What every delivery needs to know.
struct Attempt<'a> {
    dm: &'a Dm,
    ep: &'a Endpoint,
    cluster: &'a Cluster,
    device: crate::store::model::Device,
    /// The device's `dm-<mac>` user.
    auth_user: String,
    actor: &'a str,
    /// This instance's id.
    me: String,
    /// Hand-overs allowed (not when running one for another instance).
    may_hand_over: bool,
}

/// `None`: this delivery does not apply, try the next.
type Outcome = Option<Result<CheckSyncReport, CheckSyncError>>;

impl Attempt<'_> {
    async fn own_binding(&self) -> Outcome {
        let (dm, ep, mac) = (self.dm, self.ep, self.device.mac.as_str());
        // The device's own identity: its per-device user while on the default profile, its
        // DN's binding (authenticated as the DN) once assigned and re-registered.
        let (binding, identity) = match ep.registrar().binding_of_device(&self.auth_user) {
            Some(b) if is_provisioning_aor(&b.aor) => (b, Identity::Device(self.auth_user.clone())),
            _ => self.device.dn.as_ref().and_then(|dn| {
                ep.registrar()
                    .binding_of_device(dn)
                    .or_else(|| ep.registrar().bindings(dn).into_iter().next())
                    .map(|b| (b, Identity::Dn(dn.clone())))
            })?,
        };
        if self.may_hand_over {
            // A binding restored from the store at start (a restart loses none) may be one
            // that another live instance registered and whose flow it holds: the row names
            // the instance that took the REGISTER last.
            let holder =
                restored_from_peer(dm, &self.device, &self.auth_user, &binding, &self.me).await;
            if let Some(holder) = holder {
                if let Handover::Done(result) =
                    self.cluster.hand_over(&holder, mac, self.actor).await
                {
                    return Some(handed_over(result));
                }
            }
        }
        let target = Target::Binding(binding.clone());
        Some(
            send(
                dm,
                ep,
                &self.device,
                &binding.contact,
                target,
                identity,
                self.actor,
                Route::Local,
                &self.me,
            )
            .await,
        )
    }

    async fn stored_binding(&self) -> Outcome {
        let (dm, mac) = (self.dm, self.device.mac.as_str());
        let (row, identity) = match stored_binding(dm, &self.device, &self.auth_user).await {
            Ok(found) => found?,
            Err(e) => return Some(Err(e)),
        };
        if let Some(holder) = row.holder.as_deref() {
            if holder != self.me {
                match self.cluster.hand_over(holder, mac, self.actor).await {
                    Handover::Done(result) => return Some(handed_over(result)),
                    Handover::HolderGone => tracing::info!(
                        mac,
                        holder,
                        "the holder of the flow is gone; sending to the contact directly"
                    ),
                }
            }
        }
        let Some(mut binding) = from_row(&row) else {
            return Some(Err(CheckSyncError::Store(format!(
                "unreadable stored binding {}",
                row.contact
            ))));
        };
        // Another instance's flow cannot be used from here. Over UDP the phone is reached
        // where its REGISTER came from (the NAT binding), else at its contact URI (through its
        // Path if any).
        let target = match binding.flow.take() {
            Some(f) if f.protocol == Protocol::Udp => Target::Address(Protocol::Udp, f.remote),
            _ => Target::Binding(Arc::new(binding.clone())),
        };
        Some(
            send(
                dm,
                self.ep,
                &self.device,
                &binding.contact,
                target,
                identity,
                &format!("{}, direct to contact", self.actor),
                Route::Direct,
                &self.me,
            )
            .await,
        )
    }

    async fn via_switch(&self) -> Outcome {
        match via_switch::check_sync(self.dm, self.ep, &self.device, self.actor, &self.me).await {
            Err(CheckSyncError::NotRegistered(_)) => None,
            other => Some(other),
        }
    }
}

/// The holder's report, marked as handed over.
fn handed_over(
    result: Result<CheckSyncReport, CheckSyncError>,
) -> Result<CheckSyncReport, CheckSyncError> {
    result.map(|mut r| {
        r.route = Route::Handover;
        r
    })
}

/// The instance other than this one that holds `binding` according to the store, when the
/// stored row of the device is that same binding (PostgreSQL, several instances only).
async fn restored_from_peer(
    dm: &Dm,
    device: &crate::store::model::Device,
    auth_user: &str,
    binding: &sip::registrar::Binding,
    me: &str,
) -> Option<String> {
    if me.is_empty() || dm.store.backend() != crate::store::Backend::Postgres {
        return None;
    }
    let (row, _) = match stored_binding(dm, device, auth_user).await {
        Ok(found) => found?,
        Err(e) => {
            tracing::debug!(error = %e, "stored binding unknown; sending from here");
            return None;
        }
    };
    let holder = row.holder?;
    (holder != me && row.aor == binding.aor && row.contact == binding.id()).then_some(holder)
}

/// The device's binding as any instance stored it: the per-device user's on the provisioning
/// AOR, else the DN's.
async fn stored_binding(
    dm: &Dm,
    device: &crate::store::model::Device,
    auth_user: &str,
) -> Result<Option<(StoredBinding, Identity)>, CheckSyncError> {
    let db = |e: crate::store::StoreError| CheckSyncError::Store(e.to_string());
    if let Some(row) = dm.store.binding_of_device(auth_user).await.map_err(db)? {
        if is_provisioning_aor(&row.aor) {
            return Ok(Some((row, Identity::Device(auth_user.to_owned()))));
        }
    }
    let Some(dn) = &device.dn else {
        return Ok(None);
    };
    let row = match dm.store.binding_of_device(dn).await.map_err(db)? {
        Some(row) => Some(row),
        None => dm
            .store
            .bindings_of(dn)
            .await
            .map_err(db)?
            .into_iter()
            .next(),
    };
    Ok(row.map(|r| (r, Identity::Dn(dn.clone()))))
}
