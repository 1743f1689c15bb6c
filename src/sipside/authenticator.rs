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
use crate::service::Dm;
use crate::store::StoreError;

#[derive(Clone)]
struct DnEntry {
    epoch: u64,
    /// `None`: no such DN (remembered too, so unknown users cost no SQL either).
    found: Option<(String, bool, bool)>, // password, challenge REGISTER, challenge INVITE
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
        let dns = self
            .dm
            .store
            .dns()
            .await
            .map_err(|e| AuthError(e.to_string()))?;
        let n = dns.len().min(CACHE_LIMIT);
        let mut c = self.cache.write();
        for dn in dns.into_iter().take(CACHE_LIMIT) {
            let found = Some(policy(dn.password, &dn.authenticate_requests));
            c.entry(dn.number).or_insert(DnEntry { epoch, found });
        }
        Ok(n)
    }

    async fn dn(&self, user: &str) -> Result<Option<(String, bool, bool)>, AuthError> {
        let epoch = self.dm.epoch();
        if let Some(e) = self.cache.read().get(user).filter(|e| e.epoch == epoch) {
            return Ok(e.found.clone());
        }
        let found = match self.dm.store.dn(user).await {
            Ok(dn) => Some(policy(dn.password, &dn.authenticate_requests)),
            Err(StoreError::NotFound { .. }) => None,
            Err(e) => return Err(AuthError(e.to_string())),
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

/// A DN's password and whether REGISTER and INVITE are challenged, from its
/// `authenticate-requests` (`register,invite`).
fn policy(password: String, authenticate_requests: &str) -> (String, bool, bool) {
    let methods = authenticate_requests.to_ascii_lowercase();
    let has = |m: &str| methods.split(',').any(|x| x.trim() == m);
    (password, has("register"), has("invite"))
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
                Some((_, register, invite)) => match method {
                    rsip::Method::Register => register,
                    rsip::Method::Invite => invite,
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
                .map(|(password, _, _)| Credential::Password(password)))
        })
    }
}
