//! Digest credentials and the per-DN challenge policy, for the SIP stack.
//!
//! * A DN authenticates as itself with its password; whether REGISTER or INVITE is challenged
//!   follows its `authenticate-requests`.
//! * The shared AOR `gcti_provisioning` is always challenged, and only a device's own
//!   credentials (auth user `dm-<mac>`, password derived from the server secret) are accepted
//!   for it, so the binding names the device (see `crate::credentials`).
//!
//! Lookups are memoised per user and dropped when the service's epoch moves (any write that
//! may change a DN), so a REGISTER storm costs no SQL after the first sight of each user.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;
use sip::auth::{AuthError, Authenticator, Credential};
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
    cache: RwLock<HashMap<String, DnEntry>>,
}

/// Users remembered before the memo is cleared.
const CACHE_LIMIT: usize = 1_000_000;

impl DmAuthenticator {
    pub fn new(dm: Arc<Dm>) -> Self {
        DmAuthenticator {
            dm,
            cache: RwLock::new(HashMap::new()),
        }
    }

    async fn dn(&self, user: &str) -> Result<Option<(String, bool, bool)>, AuthError> {
        let epoch = self.dm.epoch();
        if let Some(e) = self.cache.read().get(user).filter(|e| e.epoch == epoch) {
            return Ok(e.found.clone());
        }
        let found = match self.dm.store.dn(user).await {
            Ok(dn) => {
                let methods = dn.authenticate_requests.to_ascii_lowercase();
                let has = |m: &str| methods.split(',').any(|x| x.trim() == m);
                Some((dn.password, has("register"), has("invite")))
            }
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
