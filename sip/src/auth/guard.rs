//! [`DigestGuard`]: decides whether a request is authenticated, and builds the challenge when it
//! is not. Used by the registrar for REGISTER and by the endpoint for other challenged methods.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use rsip::headers::UntypedHeader;
use rsip::{Header, Request};

use super::digest::{ct_eq, Algorithm, DigestResponse};
use super::nonce::{NcTracker, NonceCheck, NonceFactory};
use super::throttle::{Throttle, ThrottleConfig};
use super::{AuthError, Authenticator, Credential};
use crate::headers::MessageExt;

#[derive(Clone)]
pub struct AuthConfig {
    pub realm: String,
    /// Shared by all instances that must accept each other's nonces.
    pub secret: Vec<u8>,
    pub nonce_lifetime: Duration,
    /// Challenges offered, most preferred first (RFC 8760 §2.4). MD5 alone by default: many
    /// clients mishandle a second challenge instead of ignoring an algorithm they lack — sipp
    /// answers the first challenge whatever its algorithm, and baresip on libre 1.1 (Debian
    /// bookworm) abandons the whole 401 when any challenge is not MD5. Add
    /// [`Algorithm::Sha256`] for fleets that handle it; responses with SHA-256 are verified
    /// whatever was offered.
    pub algorithms: Vec<Algorithm>,
    /// Bound on remembered nonces for `nc` replay detection.
    pub nc_capacity: usize,
    pub throttle: ThrottleConfig,
}

impl std::fmt::Debug for AuthConfig {
    /// The secret is never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("realm", &self.realm)
            .field("secret", &"<redacted>")
            .field("nonce_lifetime", &self.nonce_lifetime)
            .field("algorithms", &self.algorithms)
            .field("nc_capacity", &self.nc_capacity)
            .field("throttle", &self.throttle)
            .finish()
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            realm: "sipdm".into(),
            secret: rand::random::<[u8; 32]>().to_vec(),
            nonce_lifetime: Duration::from_secs(300),
            algorithms: vec![Algorithm::Md5],
            nc_capacity: 1_000_000,
            throttle: ThrottleConfig::default(),
        }
    }
}

/// The verdict on one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    /// No authentication required for this user and method.
    NotRequired,
    /// Authenticated as this digest user name (the "device" identity for shared AORs).
    Authenticated { username: String },
    /// Answer 401 (or 407) with [`DigestGuard::challenge`].
    Challenge { stale: bool },
    /// This user from this source (or this source as a whole) throttled after repeated
    /// failures: answer 403.
    Throttled,
}

pub struct DigestGuard {
    cfg: AuthConfig,
    nonces: NonceFactory,
    nc: NcTracker,
    throttle: Throttle,
    authenticator: Arc<dyn Authenticator>,
}

impl DigestGuard {
    pub fn new(cfg: AuthConfig, authenticator: Arc<dyn Authenticator>) -> Self {
        DigestGuard {
            nonces: NonceFactory::new(&cfg.secret, cfg.nonce_lifetime),
            nc: NcTracker::new(cfg.nc_capacity),
            throttle: Throttle::new(cfg.throttle.clone()),
            cfg,
            authenticator,
        }
    }

    pub fn realm(&self) -> &str {
        &self.cfg.realm
    }

    /// Checks `req` for AOR user `aor_user`. `proxy` selects Proxy-Authorization (407 flows).
    pub async fn check(
        &self,
        req: &Request,
        source: IpAddr,
        aor_user: &str,
        proxy: bool,
    ) -> Result<AuthOutcome, AuthError> {
        if !self
            .authenticator
            .must_authenticate(aor_user, &req.method)
            .await?
        {
            return Ok(AuthOutcome::NotRequired);
        }
        let header = if proxy {
            "Proxy-Authorization"
        } else {
            "Authorization"
        };
        // Several credentials may be present (one per realm); use ours.
        let Some(d) = req
            .header_values(header)
            .filter_map(|v| DigestResponse::parse(v).ok())
            .find(|d| d.realm == self.cfg.realm)
        else {
            return Ok(AuthOutcome::Challenge { stale: false });
        };
        // Counted per (source, digest user): the phones behind one NAT or switch are not
        // punished for one of them.
        if self.throttle.is_blocked(source, &d.username) {
            return Ok(AuthOutcome::Throttled);
        }
        let Ok(alg) = d.algorithm() else {
            self.throttle.record_failure(source, &d.username);
            return Ok(AuthOutcome::Challenge { stale: false });
        };
        match self.nonces.check(&d.nonce, &self.cfg.realm) {
            NonceCheck::Valid => {}
            NonceCheck::Stale => return Ok(AuthOutcome::Challenge { stale: true }),
            NonceCheck::Invalid => {
                self.throttle.record_failure(source, &d.username);
                return Ok(AuthOutcome::Challenge { stale: false });
            }
        }
        let Some(cred) = self
            .authenticator
            .credential(&self.cfg.realm, &d.username, aor_user)
            .await?
        else {
            tracing::debug!(username = %d.username, aor_user, "unknown digest user or not allowed for AOR");
            self.throttle.record_failure(source, &d.username);
            return Ok(AuthOutcome::Challenge { stale: false });
        };
        let ha1 = match cred {
            Credential::Password(p) => alg.hash(&[&d.username, &self.cfg.realm, &p]),
            Credential::Ha1 { algorithm, ha1 } if algorithm.base() == alg.base() => ha1,
            Credential::Ha1 { .. } => {
                // Stored HA1 is for another algorithm: let the client pick one we can check.
                return Ok(AuthOutcome::Challenge { stale: false });
            }
        };
        let method = req.method.to_string();
        let ok = d
            .expected(&method, &ha1)
            .map(|e| ct_eq(&e, &d.response))
            .unwrap_or(false);
        if !ok {
            tracing::debug!(username = %d.username, %source, "digest response mismatch");
            self.throttle.record_failure(source, &d.username);
            return Ok(AuthOutcome::Challenge { stale: false });
        }
        if d.qop.is_some() {
            let fresh = d.nc_value().is_some_and(|nc| self.nc.accept(&d.nonce, nc));
            if !fresh {
                tracing::debug!(username = %d.username, %source, "digest nc replay refused");
                // A fresh nonce lets an honest client recover; a replayer gains nothing.
                return Ok(AuthOutcome::Challenge { stale: true });
            }
        }
        Ok(AuthOutcome::Authenticated {
            username: d.username,
        })
    }

    /// A complete 401 (or 407 when `proxy`) answer to `req`, for handlers of other methods
    /// (INVITE with `authenticate-requests = register,invite`).
    pub fn challenge_response(
        &self,
        req: &crate::handler::IncomingRequest,
        stale: bool,
        proxy: bool,
    ) -> rsip::Response {
        let status = if proxy {
            rsip::StatusCode::ProxyAuthenticationRequired
        } else {
            rsip::StatusCode::Unauthorized
        };
        let mut r = req.response(status);
        for h in self.challenge(stale, proxy) {
            r.headers.push(h);
        }
        r
    }

    /// The WWW-Authenticate (or Proxy-Authenticate) headers of a challenge, one per algorithm.
    pub fn challenge(&self, stale: bool, proxy: bool) -> Vec<Header> {
        let nonce = self.nonces.issue(&self.cfg.realm);
        self.cfg
            .algorithms
            .iter()
            .map(|alg| {
                let mut v = format!(
                    "Digest realm=\"{}\", nonce=\"{}\", algorithm={}, qop=\"auth\"",
                    self.cfg.realm,
                    nonce,
                    alg.as_str()
                );
                if stale {
                    v.push_str(", stale=true");
                }
                if proxy {
                    Header::ProxyAuthenticate(rsip::headers::ProxyAuthenticate::new(v))
                } else {
                    Header::WwwAuthenticate(rsip::headers::WwwAuthenticate::new(v))
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{DigestChallenge, StaticUsers};
    use crate::headers::name_value;
    use crate::wire::parse::parse_bytes;

    fn register(auth: Option<&str>) -> Request {
        let a = auth
            .map(|a| format!("Authorization: {a}\r\n"))
            .unwrap_or_default();
        let t = format!("REGISTER sip:sipdm SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1\r\nFrom: <sip:1000@sipdm>;tag=1\r\nTo: <sip:1000@sipdm>\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\n{a}Content-Length: 0\r\n\r\n");
        match parse_bytes(t.as_bytes()).unwrap() {
            rsip::SipMessage::Request(r) => r,
            _ => unreachable!(),
        }
    }

    fn guard(secret: &[u8], lifetime: Duration) -> DigestGuard {
        let users = StaticUsers {
            users: [("1000".to_string(), "pw".to_string())].into(),
            methods: vec![rsip::Method::Register],
        };
        let cfg = AuthConfig {
            secret: secret.to_vec(),
            nonce_lifetime: lifetime,
            ..Default::default()
        };
        DigestGuard::new(cfg, Arc::new(users))
    }

    #[tokio::test]
    async fn challenge_answer_check_across_instances() {
        let a = guard(b"s", Duration::from_secs(300));
        let b = guard(b"s", Duration::from_secs(300));
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(
            a.check(&register(None), ip, "1000", false).await.unwrap(),
            AuthOutcome::Challenge { stale: false }
        );
        // One nonce shared by the MD5 and SHA-256 challenges: nc goes on counting.
        for (nc, h) in (1..).zip(a.challenge(false, false)) {
            let c = DigestChallenge::parse(name_value(&h).1).unwrap();
            let v = c
                .answer("REGISTER", "sip:sipdm", "1000", "pw", nc, "x")
                .unwrap();
            // Instance b shares the secret: accepts a's nonce.
            assert_eq!(
                b.check(&register(Some(&v)), ip, "1000", false)
                    .await
                    .unwrap(),
                AuthOutcome::Authenticated {
                    username: "1000".into()
                }
            );
            // Same nc again: replay.
            assert_eq!(
                b.check(&register(Some(&v)), ip, "1000", false)
                    .await
                    .unwrap(),
                AuthOutcome::Challenge { stale: true }
            );
        }
        // Unknown secret: a plain new challenge, and it counts as a failure.
        let other = guard(b"other", Duration::from_secs(300));
        let c = DigestChallenge::parse(name_value(&other.challenge(false, false)[0]).1).unwrap();
        let v = c
            .answer("REGISTER", "sip:sipdm", "1000", "pw", 1, "x")
            .unwrap();
        assert_eq!(
            a.check(&register(Some(&v)), ip, "1000", false)
                .await
                .unwrap(),
            AuthOutcome::Challenge { stale: false }
        );
    }

    #[tokio::test]
    async fn expired_nonce_is_stale() {
        let g = guard(b"s", Duration::from_secs(0));
        let c = DigestChallenge::parse(name_value(&g.challenge(false, false)[0]).1).unwrap();
        let v = c
            .answer("REGISTER", "sip:sipdm", "1000", "pw", 1, "x")
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let out = g
            .check(
                &register(Some(&v)),
                "10.0.0.1".parse().unwrap(),
                "1000",
                false,
            )
            .await
            .unwrap();
        assert_eq!(out, AuthOutcome::Challenge { stale: true });
        assert!(name_value(&g.challenge(true, false)[0])
            .1
            .contains("stale=true"));
    }

    #[tokio::test]
    async fn throttled_after_failures() {
        let users = StaticUsers {
            users: [("1000".to_string(), "pw".to_string())].into(),
            methods: vec![rsip::Method::Register],
        };
        let cfg = AuthConfig {
            throttle: ThrottleConfig {
                max_failures: 2,
                ..Default::default()
            },
            ..Default::default()
        };
        let g = DigestGuard::new(cfg, Arc::new(users));
        let c = DigestChallenge::parse(name_value(&g.challenge(false, false)[0]).1).unwrap();
        let ip: IpAddr = "10.0.0.9".parse().unwrap();
        for nc in 1..=2 {
            let bad = c
                .answer("REGISTER", "sip:sipdm", "1000", "wrong", nc, "x")
                .unwrap();
            assert_eq!(
                g.check(&register(Some(&bad)), ip, "1000", false)
                    .await
                    .unwrap(),
                AuthOutcome::Challenge { stale: false }
            );
        }
        let good = c
            .answer("REGISTER", "sip:sipdm", "1000", "pw", 3, "x")
            .unwrap();
        assert_eq!(
            g.check(&register(Some(&good)), ip, "1000", false)
                .await
                .unwrap(),
            AuthOutcome::Throttled
        );
        assert!(matches!(
            g.check(
                &register(Some(&good)),
                "10.0.0.8".parse().unwrap(),
                "1000",
                false
            )
            .await
            .unwrap(),
            AuthOutcome::Authenticated { .. }
        ));
    }
}
