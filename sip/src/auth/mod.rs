//! Digest authentication (RFC 3261 §22, RFC 7616, RFC 8760).
//!
//! * [`digest`] — the Authorization parameters, response computation (MD5, SHA-256, `-sess`);
//! * [`nonce`] — stateless nonces (HMAC of a timestamp with a shared secret, so instances that
//!   share the secret accept each other's nonces) and bounded `nc` replay memory;
//! * [`throttle`] — per-source failure throttling, logged once per window;
//! * [`guard`] — [`DigestGuard`]: check a request, or say how to challenge it;
//! * [`retry`] — the client side: a challenged request sent again with credentials.
//!
//! Credentials and the per-user policy come from the server crate through [`Authenticator`].

pub mod digest;
pub mod guard;
pub mod nonce;
pub mod retry;
pub mod throttle;

pub use digest::{Algorithm, DigestChallenge, DigestResponse};
pub use guard::{AuthConfig, AuthOutcome, DigestGuard};
pub use retry::authorized_retry;

use crate::BoxFuture;

/// Appends the lower-case hex of `bytes`. `hex::encode` goes through `char`s into a fresh
/// String; digests and nonces are hex-encoded several times per authenticated request.
pub(crate) fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    out.reserve(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
}

#[cfg(test)]
#[test]
fn push_hex_is_hex_encode() {
    let bytes: Vec<u8> = (0..=255).collect();
    let mut s = String::from("x");
    push_hex(&mut s, &bytes);
    assert_eq!(s, format!("x{}", hex::encode(&bytes)));
}

/// What the server's store knows about a digest user: the password, or a precomputed HA1
/// (`H(username:realm:password)`) for one algorithm.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    Password(String),
    Ha1 { algorithm: Algorithm, ha1: String },
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets in logs.
        match self {
            Credential::Password(_) => f.write_str("Credential::Password(..)"),
            Credential::Ha1 { algorithm, .. } => write!(f, "Credential::Ha1({algorithm:?}, ..)"),
        }
    }
}

/// Failure of the credential source (a database error, say): never answered 401. The server
/// crate says which SIP status it is (its own table of failures, `src/fault.rs`): 503 for a
/// source that is down for now, so that a phone tries its next server (RFC 3263 §4.3), else
/// 500.
#[derive(Debug, Clone, thiserror::Error)]
#[error("credential lookup failed: {message}")]
pub struct AuthError {
    pub message: String,
    /// The SIP status the request is answered with.
    pub status: u16,
}

impl AuthError {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        AuthError {
            message: message.into(),
            status,
        }
    }

    pub fn status(&self) -> u16 {
        self.status
    }
}

/// Implemented by the server crate from its store.
pub trait Authenticator: Send + Sync + 'static {
    /// Whether `method` requests for AOR user `aor_user` must carry digest credentials
    /// (`authenticate-requests = register,invite` per DN).
    fn must_authenticate<'a>(
        &'a self,
        aor_user: &'a str,
        method: &'a rsip::Method,
    ) -> BoxFuture<'a, Result<bool, AuthError>>;

    /// The credential of digest user `username` in `realm`, if that user may act for
    /// `aor_user` (a DN's own user; any device's user for the shared `gcti_provisioning` AOR).
    /// `None` means "no such user or not allowed", answered with a new challenge.
    fn credential<'a>(
        &'a self,
        realm: &'a str,
        username: &'a str,
        aor_user: &'a str,
    ) -> BoxFuture<'a, Result<Option<Credential>, AuthError>>;
}

/// Accepts everything without challenge: for tests and for registrars without authentication.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoAuthentication;

impl Authenticator for NoAuthentication {
    fn must_authenticate<'a>(
        &'a self,
        _: &'a str,
        _: &'a rsip::Method,
    ) -> BoxFuture<'a, Result<bool, AuthError>> {
        Box::pin(std::future::ready(Ok(false)))
    }
    fn credential<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
        _: &'a str,
    ) -> BoxFuture<'a, Result<Option<Credential>, AuthError>> {
        Box::pin(std::future::ready(Ok(None)))
    }
}

/// A fixed table of users with passwords, every user authenticating for its own AOR only:
/// for tests and examples.
#[derive(Debug, Default, Clone)]
pub struct StaticUsers {
    pub users: std::collections::HashMap<String, String>,
    /// Methods that must be authenticated (e.g. REGISTER, INVITE).
    pub methods: Vec<rsip::Method>,
}

impl Authenticator for StaticUsers {
    fn must_authenticate<'a>(
        &'a self,
        _: &'a str,
        method: &'a rsip::Method,
    ) -> BoxFuture<'a, Result<bool, AuthError>> {
        Box::pin(std::future::ready(Ok(self.methods.contains(method))))
    }
    fn credential<'a>(
        &'a self,
        _realm: &'a str,
        username: &'a str,
        aor_user: &'a str,
    ) -> BoxFuture<'a, Result<Option<Credential>, AuthError>> {
        let c = if username == aor_user {
            self.users.get(username).cloned().map(Credential::Password)
        } else {
            None
        };
        Box::pin(std::future::ready(Ok(c)))
    }
}
