//! The client side of HTTP digest authentication as SIP uses it (RFC 3261 §22, RFC 2617,
//! RFC 7616 algorithms as allowed in SIP by RFC 8760).
//!
//! Written here rather than borrowed from the server's `sip` crate on purpose: a second,
//! independent implementation is what makes a passing end-to-end test mean something.

use md5::{Digest as _, Md5};
use sha2::Sha256;

/// A digest hash algorithm, with or without the `-sess` variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Md5,
    Md5Sess,
    Sha256,
    Sha256Sess,
}

impl Algorithm {
    /// `None` for algorithms this client does not implement (SHA-512-256, unknown tokens): the
    /// challenge carrying it is skipped in favour of another one, as RFC 8760 §2.4 asks.
    pub fn from_token(token: &str) -> Option<Algorithm> {
        match token.trim().to_ascii_uppercase().as_str() {
            "MD5" => Some(Algorithm::Md5),
            "MD5-SESS" => Some(Algorithm::Md5Sess),
            "SHA-256" => Some(Algorithm::Sha256),
            "SHA-256-SESS" => Some(Algorithm::Sha256Sess),
            _ => None,
        }
    }

    pub fn token(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Md5Sess => "MD5-sess",
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Sha256Sess => "SHA-256-sess",
        }
    }

    fn is_sess(self) -> bool {
        matches!(self, Algorithm::Md5Sess | Algorithm::Sha256Sess)
    }

    /// Lowercase hex of the hash of `data`.
    pub fn hash_hex(self, data: &str) -> String {
        match self {
            Algorithm::Md5 | Algorithm::Md5Sess => hex::encode(Md5::digest(data.as_bytes())),
            Algorithm::Sha256 | Algorithm::Sha256Sess => {
                hex::encode(Sha256::digest(data.as_bytes()))
            }
        }
    }

    /// Preference when a server offers several challenges: the stronger hash first.
    fn strength(self) -> u8 {
        match self {
            Algorithm::Sha256 | Algorithm::Sha256Sess => 2,
            Algorithm::Md5 | Algorithm::Md5Sess => 1,
        }
    }
}

/// A challenge this client cannot answer.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DigestError {
    #[error("not a Digest challenge: {0:?}")]
    NotDigest(String),
    #[error("challenge lacks {0}")]
    Missing(&'static str),
    #[error("unsupported algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    #[error("challenge offers qop {0:?} without auth")]
    UnsupportedQop(String),
    #[error("no usable challenge among {0}")]
    NoUsableChallenge(usize),
}

/// A parsed `WWW-Authenticate` / `Proxy-Authenticate` Digest challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub opaque: Option<String>,
    pub algorithm: Algorithm,
    /// The server offered `qop=auth` (possibly among others): answer with cnonce and nc.
    /// When false the RFC 2069 form (no qop) is used.
    pub qop_auth: bool,
    pub stale: bool,
}

/// `name=value` pairs of an auth header, values unquoted (with `\"` escapes resolved).
pub fn auth_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while matches!(chars.peek(), Some(c) if c.is_whitespace() || *c == ',') {
            chars.next();
        }
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ',' {
                break;
            }
            name.push(c);
            chars.next();
        }
        if name.trim().is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'=') {
            chars.next();
            while matches!(chars.peek(), Some(c) if c.is_whitespace()) {
                chars.next();
            }
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some(n) = chars.next() {
                                value.push(n)
                            }
                        }
                        '"' => break,
                        c => value.push(c),
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ',' {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
                value = value.trim().to_string();
            }
        }
        out.push((name.trim().to_ascii_lowercase(), value));
    }
    out
}

impl Challenge {
    /// Parses the value of one `WWW-Authenticate` / `Proxy-Authenticate` header.
    pub fn parse(value: &str) -> Result<Challenge, DigestError> {
        let value = value.trim();
        let (scheme, rest) = value.split_once(char::is_whitespace).unwrap_or((value, ""));
        if !scheme.eq_ignore_ascii_case("Digest") {
            return Err(DigestError::NotDigest(value.to_string()));
        }
        let params = auth_params(rest);
        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let algorithm = match get("algorithm") {
            None => Algorithm::Md5,
            Some(a) => Algorithm::from_token(&a).ok_or(DigestError::UnsupportedAlgorithm(a))?,
        };
        let qop_auth = match get("qop") {
            None => false,
            Some(q) => {
                if q.split(',').any(|t| t.trim().eq_ignore_ascii_case("auth")) {
                    true
                } else {
                    return Err(DigestError::UnsupportedQop(q));
                }
            }
        };
        Ok(Challenge {
            realm: get("realm").ok_or(DigestError::Missing("realm"))?,
            nonce: get("nonce").ok_or(DigestError::Missing("nonce"))?,
            opaque: get("opaque"),
            algorithm,
            qop_auth,
            stale: get("stale").is_some_and(|s| s.eq_ignore_ascii_case("true")),
        })
    }

    /// The challenge to answer among several headers of one response (RFC 8760: a server may
    /// offer SHA-256 and MD5 side by side; the client takes the strongest it supports).
    pub fn pick<'a>(values: impl IntoIterator<Item = &'a str>) -> Result<Challenge, DigestError> {
        let mut count = 0;
        let mut best: Option<Challenge> = None;
        for v in values {
            count += 1;
            if let Ok(c) = Challenge::parse(v) {
                let better = match &best {
                    None => true,
                    Some(b) => c.algorithm.strength() > b.algorithm.strength(),
                };
                if better {
                    best = Some(c);
                }
            }
        }
        best.ok_or(DigestError::NoUsableChallenge(count))
    }
}

/// The `response` value (RFC 7616 §3.4.1), lowercase hex.
///
/// `qop` is `Some((nc, cnonce))` for `qop=auth` and `None` for the RFC 2069 form.
#[allow(clippy::too_many_arguments)]
pub fn compute_response(
    algorithm: Algorithm,
    username: &str,
    realm: &str,
    password: &str,
    method: &str,
    uri: &str,
    nonce: &str,
    qop: Option<(&str, &str)>,
) -> String {
    let mut ha1 = algorithm.hash_hex(&format!("{username}:{realm}:{password}"));
    if algorithm.is_sess() {
        let cnonce = qop.map(|(_, c)| c).unwrap_or_default();
        ha1 = algorithm.hash_hex(&format!("{ha1}:{nonce}:{cnonce}"));
    }
    let ha2 = algorithm.hash_hex(&format!("{method}:{uri}"));
    match qop {
        Some((nc, cnonce)) => {
            algorithm.hash_hex(&format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}"))
        }
        None => algorithm.hash_hex(&format!("{ha1}:{nonce}:{ha2}")),
    }
}

/// Everything needed to write an `Authorization` / `Proxy-Authorization` header value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub uri: String,
    pub response: String,
    pub algorithm: Algorithm,
    pub opaque: Option<String>,
    /// `(nc, cnonce)` when answering with `qop=auth`.
    pub qop: Option<(String, String)>,
}

impl Authorization {
    /// Answers `challenge` for a request `method uri`. `nc` counts uses of this nonce (1 for a
    /// fresh challenge); `cnonce` is the client's nonce, random in real use.
    pub fn answer(
        challenge: &Challenge,
        username: &str,
        password: &str,
        method: &str,
        uri: &str,
        nc: u32,
        cnonce: &str,
    ) -> Authorization {
        let qop = challenge
            .qop_auth
            .then(|| (format!("{nc:08x}"), cnonce.to_string()));
        let response = compute_response(
            challenge.algorithm,
            username,
            &challenge.realm,
            password,
            method,
            uri,
            &challenge.nonce,
            qop.as_ref().map(|(n, c)| (n.as_str(), c.as_str())),
        );
        Authorization {
            username: username.to_string(),
            realm: challenge.realm.clone(),
            nonce: challenge.nonce.clone(),
            uri: uri.to_string(),
            response,
            algorithm: challenge.algorithm,
            opaque: challenge.opaque.clone(),
            qop,
        }
    }

    /// The header value, `Digest username="…", …`.
    pub fn header_value(&self) -> String {
        let q = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
        let mut v = format!(
            "Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{}\", response=\"{}\", algorithm={}",
            q(&self.username),
            q(&self.realm),
            q(&self.nonce),
            q(&self.uri),
            self.response,
            self.algorithm.token()
        );
        if let Some(o) = &self.opaque {
            v.push_str(&format!(", opaque=\"{}\"", q(o)));
        }
        if let Some((nc, cnonce)) = &self.qop {
            v.push_str(&format!(", qop=auth, nc={nc}, cnonce=\"{}\"", q(cnonce)));
        }
        v
    }
}

/// A fresh random client nonce.
pub fn new_cnonce() -> String {
    hex::encode(rand::random::<[u8; 8]>())
}
