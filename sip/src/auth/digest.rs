//! Digest parameters and the response computation. rsip 0.4's typed Authorization refuses
//! `algorithm=SHA-256` (it only knows `SHA256`) and drops `nc`/`cnonce`, so the parameters
//! are parsed here.

use md5::Md5;
use sha2::{Digest, Sha256};

use crate::headers::params::{split_top_level, unquote};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Md5,
    Md5Sess,
    Sha256,
    Sha256Sess,
}

impl Algorithm {
    pub fn parse(s: &str) -> Option<Algorithm> {
        Some(match s.to_ascii_uppercase().as_str() {
            "MD5" => Algorithm::Md5,
            "MD5-SESS" => Algorithm::Md5Sess,
            "SHA-256" | "SHA256" => Algorithm::Sha256,
            "SHA-256-SESS" | "SHA256-SESS" => Algorithm::Sha256Sess,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Md5Sess => "MD5-sess",
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Sha256Sess => "SHA-256-sess",
        }
    }

    /// The algorithm without `-sess`: what a stored HA1 is computed with.
    pub fn base(self) -> Algorithm {
        match self {
            Algorithm::Md5 | Algorithm::Md5Sess => Algorithm::Md5,
            Algorithm::Sha256 | Algorithm::Sha256Sess => Algorithm::Sha256,
        }
    }

    pub fn is_sess(self) -> bool {
        matches!(self, Algorithm::Md5Sess | Algorithm::Sha256Sess)
    }

    /// Lower-case hex of the hash of `parts` joined by `:`.
    pub fn hash(self, parts: &[&str]) -> String {
        fn run<D: Digest>(parts: &[&str]) -> String {
            let mut d = D::new();
            for (i, p) in parts.iter().enumerate() {
                if i > 0 {
                    d.update(b":");
                }
                d.update(p.as_bytes());
            }
            let mut out = String::with_capacity(64);
            super::push_hex(&mut out, &d.finalize());
            out
        }
        match self.base() {
            Algorithm::Md5 => run::<Md5>(parts),
            _ => run::<Sha256>(parts),
        }
    }
}

/// The parameters of a `Digest` Authorization / Proxy-Authorization header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DigestResponse {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub uri: String,
    pub response: String,
    pub algorithm: Option<String>,
    pub cnonce: Option<String>,
    pub opaque: Option<String>,
    pub qop: Option<String>,
    pub nc: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("not a Digest credential")]
    NotDigest,
    #[error("missing parameter {0}")]
    Missing(&'static str),
    #[error("unsupported algorithm")]
    Algorithm,
    #[error("unsupported qop")]
    Qop,
}

impl DigestResponse {
    pub fn parse(value: &str) -> Result<DigestResponse, DigestError> {
        let value = value.trim();
        let (scheme, rest) = value
            .split_once(char::is_whitespace)
            .ok_or(DigestError::NotDigest)?;
        if !scheme.eq_ignore_ascii_case("Digest") {
            return Err(DigestError::NotDigest);
        }
        let mut r = DigestResponse::default();
        let mut have = [false; 5];
        for part in split_top_level(rest, b',') {
            let Some((k, v)) = part.split_once('=') else {
                continue;
            };
            let k = k.trim();
            // Matched without lower-casing a copy of the name: ten parameters per request.
            const KEYS: [&str; 10] = [
                "username",
                "realm",
                "nonce",
                "uri",
                "response",
                "algorithm",
                "cnonce",
                "opaque",
                "qop",
                "nc",
            ];
            let Some(i) = KEYS.iter().position(|n| n.eq_ignore_ascii_case(k)) else {
                continue;
            };
            let v = unquote(v.trim()).into_owned();
            if i < 5 {
                have[i] = true;
            }
            match i {
                0 => r.username = v,
                1 => r.realm = v,
                2 => r.nonce = v,
                3 => r.uri = v,
                4 => r.response = v,
                5 => r.algorithm = Some(v),
                6 => r.cnonce = Some(v),
                7 => r.opaque = Some(v),
                8 => r.qop = Some(v),
                _ => r.nc = Some(v),
            }
        }
        const NAMES: [&str; 5] = ["username", "realm", "nonce", "uri", "response"];
        if let Some(i) = have.iter().position(|h| !h) {
            return Err(DigestError::Missing(NAMES[i]));
        }
        Ok(r)
    }

    pub fn algorithm(&self) -> Result<Algorithm, DigestError> {
        match &self.algorithm {
            None => Ok(Algorithm::Md5),
            Some(a) => Algorithm::parse(a).ok_or(DigestError::Algorithm),
        }
    }

    /// The nonce count as a number (`nc` is 8 hex digits).
    pub fn nc_value(&self) -> Option<u32> {
        u32::from_str_radix(self.nc.as_deref()?, 16).ok()
    }

    /// The expected `response` for `method`, given HA1 = H(username:realm:password).
    pub fn expected(&self, method: &str, ha1: &str) -> Result<String, DigestError> {
        let alg = self.algorithm()?;
        let ha1 = if alg.is_sess() {
            let cnonce = self
                .cnonce
                .as_deref()
                .ok_or(DigestError::Missing("cnonce"))?;
            alg.hash(&[ha1, &self.nonce, cnonce])
        } else {
            ha1.to_string()
        };
        let ha2 = alg.hash(&[method, &self.uri]);
        match self.qop.as_deref() {
            None => Ok(alg.hash(&[&ha1, &self.nonce, &ha2])),
            Some(q) if q.eq_ignore_ascii_case("auth") => {
                let nc = self.nc.as_deref().ok_or(DigestError::Missing("nc"))?;
                let cnonce = self
                    .cnonce
                    .as_deref()
                    .ok_or(DigestError::Missing("cnonce"))?;
                Ok(alg.hash(&[&ha1, &self.nonce, nc, cnonce, "auth", &ha2]))
            }
            Some(_) => Err(DigestError::Qop),
        }
    }
}

/// Constant-time comparison of two response strings.
pub fn ct_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 2617 §3.5 example (MD5, qop=auth).
    #[test]
    fn rfc2617_example() {
        let d = DigestResponse::parse(r#"Digest username="Mufasa", realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html", qop=auth, nc=00000001, cnonce="0a4f113b", response="6629fae49393a05397450978507c4ef1", opaque="5ccc069c403ebaf9f0171e9517f40e41""#).unwrap();
        let ha1 = Algorithm::Md5.hash(&["Mufasa", "testrealm@host.com", "Circle Of Life"]);
        assert_eq!(d.expected("GET", &ha1).unwrap(), d.response);
        assert_eq!(d.nc_value(), Some(1));
    }

    /// RFC 7616 §3.9.1 example (SHA-256).
    #[test]
    fn rfc7616_sha256_example() {
        let d = DigestResponse::parse(r#"Digest username="Mufasa", realm="http-auth@example.org", uri="/dir/index.html", algorithm=SHA-256, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", nc=00000001, cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", qop=auth, response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#).unwrap();
        assert_eq!(d.algorithm().unwrap(), Algorithm::Sha256);
        let ha1 = Algorithm::Sha256.hash(&["Mufasa", "http-auth@example.org", "Circle of Life"]);
        assert_eq!(d.expected("GET", &ha1).unwrap(), d.response);
    }

    #[test]
    fn rejects_incomplete() {
        assert_eq!(
            DigestResponse::parse("Basic abc"),
            Err(DigestError::NotDigest)
        );
        assert_eq!(
            DigestResponse::parse("Digest realm=\"x\""),
            Err(DigestError::Missing("username"))
        );
        assert_eq!(DigestResponse::parse(""), Err(DigestError::NotDigest));
    }
}

/// A `Digest` challenge (WWW-Authenticate / Proxy-Authenticate), for answering one: the
/// notifier's NOTIFY to phones that challenge it (Cisco SPA acts only on the authenticated
/// retry).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DigestChallenge {
    pub realm: String,
    pub nonce: String,
    pub algorithm: Option<String>,
    pub opaque: Option<String>,
    /// The offered qop values (`auth`, `auth-int`).
    pub qop: Vec<String>,
    pub stale: bool,
}

impl DigestChallenge {
    pub fn parse(value: &str) -> Result<DigestChallenge, DigestError> {
        let value = value.trim();
        let (scheme, rest) = value
            .split_once(char::is_whitespace)
            .ok_or(DigestError::NotDigest)?;
        if !scheme.eq_ignore_ascii_case("Digest") {
            return Err(DigestError::NotDigest);
        }
        let mut c = DigestChallenge::default();
        let (mut realm, mut nonce) = (false, false);
        for part in split_top_level(rest, b',') {
            let Some((k, v)) = part.split_once('=') else {
                continue;
            };
            let v = unquote(v.trim()).into_owned();
            match k.trim().to_ascii_lowercase().as_str() {
                "realm" => {
                    c.realm = v;
                    realm = true;
                }
                "nonce" => {
                    c.nonce = v;
                    nonce = true;
                }
                "algorithm" => c.algorithm = Some(v),
                "opaque" => c.opaque = Some(v),
                "qop" => {
                    c.qop = v
                        .split(',')
                        .map(|q| q.trim().to_ascii_lowercase())
                        .collect()
                }
                "stale" => c.stale = v.eq_ignore_ascii_case("true"),
                _ => {}
            }
        }
        if !realm {
            return Err(DigestError::Missing("realm"));
        }
        if !nonce {
            return Err(DigestError::Missing("nonce"));
        }
        Ok(c)
    }

    /// The Authorization value answering this challenge for `method` `uri`.
    pub fn answer(
        &self,
        method: &str,
        uri: &str,
        username: &str,
        password: &str,
        nc: u32,
        cnonce: &str,
    ) -> Result<String, DigestError> {
        let alg = match &self.algorithm {
            None => Algorithm::Md5,
            Some(a) => Algorithm::parse(a).ok_or(DigestError::Algorithm)?,
        };
        let use_qop = self.qop.iter().any(|q| q == "auth");
        if !self.qop.is_empty() && !use_qop {
            return Err(DigestError::Qop);
        }
        let d = DigestResponse {
            username: username.to_string(),
            realm: self.realm.clone(),
            nonce: self.nonce.clone(),
            uri: uri.to_string(),
            response: String::new(),
            algorithm: Some(alg.as_str().to_string()),
            cnonce: use_qop.then(|| cnonce.to_string()),
            opaque: self.opaque.clone(),
            qop: use_qop.then(|| "auth".to_string()),
            nc: use_qop.then(|| format!("{nc:08x}")),
        };
        let ha1 = alg.hash(&[username, &self.realm, password]);
        let response = d.expected(method, &ha1)?;
        let mut v = format!(
            "Digest username=\"{username}\", realm=\"{}\", nonce=\"{}\", uri=\"{uri}\", response=\"{response}\", algorithm={}",
            self.realm,
            self.nonce,
            alg.as_str()
        );
        if let Some(o) = &self.opaque {
            v.push_str(&format!(", opaque=\"{o}\""));
        }
        if use_qop {
            v.push_str(&format!(", qop=auth, nc={nc:08x}, cnonce=\"{cnonce}\""));
        }
        Ok(v)
    }
}

#[cfg(test)]
mod challenge_tests {
    use super::*;

    #[test]
    fn answer_verifies() {
        let c = DigestChallenge::parse(r#"Digest realm="r", nonce="n", algorithm=SHA-256, qop="auth,auth-int", opaque="o", stale=TRUE"#).unwrap();
        assert!(c.stale);
        let v = c.answer("NOTIFY", "sip:a@b", "u", "p", 1, "cn").unwrap();
        let d = DigestResponse::parse(&v).unwrap();
        let ha1 = Algorithm::Sha256.hash(&["u", "r", "p"]);
        assert_eq!(d.expected("NOTIFY", &ha1).unwrap(), d.response);
        assert_eq!(d.opaque.as_deref(), Some("o"));
        assert!(DigestChallenge::parse("Digest realm=\"r\"").is_err());
        assert!(
            DigestChallenge::parse(r#"Digest realm="r", nonce="n", qop="auth-int""#)
                .unwrap()
                .answer("A", "u", "u", "p", 1, "c")
                .is_err()
        );
    }
}
