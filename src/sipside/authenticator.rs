//! The digest `Authenticator` the SIP stack asks: DN credentials and the per-DN challenge policy.
//!
//! * A DN authenticates as itself with its password; whether REGISTER or INVITE is challenged
//!   follows its `authenticate-requests`.
//! * The shared AOR `gcti_provisioning` is always challenged, and only a device's own
//!   credentials (auth user `dm-<mac>`, password derived from the server secret) are accepted
//!   for it, so the binding names the device (see `crate::credentials`).
//!
//! Lookups are memoised per user and dropped when the service's epoch moves (any write that
//! may change a DN), so a REGISTER storm costs no SQL after the first sight of each user.

use std::sync::Arc;

use parking_lot::RwLock;
use sip::auth::{AuthError, Authenticator, Credential};
use sip::fastmap::{self, FastMap};
use sip::BoxFuture;

use crate::credentials::{DeviceCredentials, PROVISIONING_USER};
use crate::domain::AuthPolicy;
use crate::fault::{sip_status, HasFault};
use crate::service::Dm;
use crate::store::model::Dn;
use crate::store::StoreError;

#[derive(Clone)]
struct DnEntry {
    epoch: u64,
    /// `None`: no such DN (remembered too, so unknown users cost no SQL either).
    found: Option<DnAuth>,
}

/// A DN's password and its policy, parsed once when the DN is loaded.
#[derive(Clone)]
struct DnAuth {
    password: String,
    policy: AuthPolicy,
}

pub struct DmAuthenticator {
    dm: Arc<Dm>,
    cache: RwLock<FastMap<String, DnEntry>>,
}

/// Users remembered before the memo is cleared.
const CACHE_LIMIT: usize = 1_000_000;

impl DmAuthenticator {
    pub fn new(dm: Arc<Dm>) -> Self {
        DmAuthenticator {
            dm,
            cache: RwLock::new(fastmap::with_capacity(0)),
        }
    }

    /// Loads every DN's credentials in one query, so that the registration storm after a
    /// restart (every phone re-registering at once) costs no SQL per phone. Entries carry
    /// the epoch read *before* the query: a change racing with the load makes them stale
    /// rather than wrong. Users seen by `dn` meanwhile keep their own, newer entries.
    pub async fn warm(&self) -> Result<usize, AuthError> {
        let epoch = self.dm.epoch();
        let dns = self.dm.store.dns().await.map_err(auth_error)?;
        let n = dns.len().min(CACHE_LIMIT);
        let mut c = self.cache.write();
        for dn in dns.into_iter().take(CACHE_LIMIT) {
            let found = Some(DnAuth::of(&dn));
            c.entry(dn.number).or_insert(DnEntry { epoch, found });
        }
        Ok(n)
    }

    async fn dn(&self, user: &str) -> Result<Option<DnAuth>, AuthError> {
        let epoch = self.dm.epoch();
        if let Some(e) = self.cache.read().get(user).filter(|e| e.epoch == epoch) {
            return Ok(e.found.clone());
        }
        let found = match self.dm.store.dn(user).await {
            Ok(dn) => Some(DnAuth::of(&dn)),
            Err(StoreError::NotFound { .. }) => None,
            Err(e) => return Err(auth_error(e)),
        };
        let mut c = self.cache.write();
        if c.len() >= CACHE_LIMIT {
            c.clear();
        }
        c.insert(
            user.to_owned(),
            DnEntry {
                epoch,
                found: found.clone(),
            },
        );
        Ok(found)
    }
}

impl DnAuth {
    /// The store refuses a bad `authenticate_requests`, so one can only come from a row
    /// written around sipdm: it is logged and every request is challenged (fail closed).
    fn of(dn: &Dn) -> DnAuth {
        let policy = dn.auth_policy().unwrap_or_else(|e| {
            tracing::warn!(dn = %dn.number, "{e}; challenging REGISTER and INVITE");
            AuthPolicy::BOTH
        });
        DnAuth {
            password: dn.password.clone(),
            policy,
        }
    }
}

impl Authenticator for DmAuthenticator {
    fn must_authenticate<'a>(
        &'a self,
        aor_user: &'a str,
        method: &'a rsip::Method,
    ) -> BoxFuture<'a, Result<bool, AuthError>> {
        Box::pin(async move {
            if aor_user == PROVISIONING_USER {
                return Ok(true);
            }
            Ok(match self.dn(aor_user).await? {
                Some(DnAuth { policy, .. }) => match method {
                    rsip::Method::Register => policy.register,
                    rsip::Method::Invite => policy.invite,
                    _ => false,
                },
                // Unknown users are challenged; no credential will satisfy the challenge.
                None => true,
            })
        })
    }

    fn credential<'a>(
        &'a self,
        _realm: &'a str,
        username: &'a str,
        aor_user: &'a str,
    ) -> BoxFuture<'a, Result<Option<Credential>, AuthError>> {
        Box::pin(async move {
            if aor_user == PROVISIONING_USER {
                return Ok(DeviceCredentials::mac_of_auth_user(username)
                    .map(|mac| Credential::Password(self.dm.credentials.password(mac))));
            }
            if username != aor_user {
                return Ok(None);
            }
            Ok(self
                .dn(aor_user)
                .await?
                .map(|dn| Credential::Password(dn.password)))
        })
    }
}

/// A store failure under a digest check, answered with the SIP status of its fault (503 while
/// the database is down, so that phones try their next server).
fn auth_error(e: StoreError) -> AuthError {
    AuthError::new(sip_status(e.fault()), e.to_string())
}
