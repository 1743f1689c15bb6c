//! Who is calling the IVR when the call comes through a switch.
//!
//! A phone's digest ends at the switch it registered on: the INVITE the switch relays over its
//! IVR trunk carries no credentials sipdm could check. A switch that authenticated the phone
//! says who it was in `P-Asserted-Identity` (RFC 3325) — for an unassigned phone the per-device
//! auth user `dm-<mac>`. That assertion is taken only from a configured trusted peer
//! (`[sip] trusted-peers`); from anyone else the header is a claim anybody can write, so it is
//! ignored, counted, and the caller must authenticate to sipdm itself.

use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::IpNet;
use parking_lot::Mutex;
use sip::headers::name_addr::NameAddr;
use sip::headers::MessageExt;
use sip::rsip;

use crate::credentials::DeviceCredentials;
use crate::provisioning::mac::Mac;

/// The header a trusted switch asserts the caller's identity in.
pub const ASSERTED_IDENTITY: &str = "P-Asserted-Identity";

/// Sources remembered for "logged once"; past this the memo is cleared.
const LOGGED_LIMIT: usize = 1024;

/// What an INVITE's asserted identity is worth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assertion {
    /// A trusted peer named this device.
    Device(Mac),
    /// A trusted peer asserted a user that is not a device's (a DN, or nothing usable).
    OtherUser(String),
    /// A trusted peer sent no assertion.
    Absent,
    /// The sender is not trusted: whatever it claims counts for nothing.
    Untrusted,
}

/// The configured trusted peers.
pub struct TrustedPeers {
    nets: Vec<IpNet>,
    /// Untrusted sources already logged for a forged assertion.
    logged: Mutex<HashSet<IpAddr>>,
}

impl TrustedPeers {
    pub fn new(nets: Vec<IpNet>) -> TrustedPeers {
        TrustedPeers {
            nets,
            logged: Mutex::new(HashSet::new()),
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// Reads the assertion of `req` as received from `source`.
    pub fn assertion(&self, req: &rsip::Request, source: IpAddr) -> Assertion {
        let asserted = req
            .header_values(ASSERTED_IDENTITY)
            .next()
            .map(str::to_owned);
        if !self.contains(source) {
            if asserted.is_some() {
                metrics::counter!("sipdm_sip_identity_ignored_total", "reason" => "untrusted")
                    .increment(1);
                let first = {
                    let mut logged = self.logged.lock();
                    if logged.len() >= LOGGED_LIMIT {
                        logged.clear();
                    }
                    logged.insert(source)
                };
                if first {
                    tracing::warn!(%source, "P-Asserted-Identity from a source that is not a trusted peer: ignored (logged once per source)");
                }
            }
            return Assertion::Untrusted;
        }
        let Some(value) = asserted else {
            return Assertion::Absent;
        };
        // The first identity of the header (RFC 3325 allows a sip: and a tel: one).
        let user = value
            .split(',')
            .find_map(|v| NameAddr::parse(v.trim()).ok())
            .map(|na| uri_user(&na.uri))
            .unwrap_or_default();
        match DeviceCredentials::mac_of_auth_user(&user).and_then(|m| Mac::parse(m).ok()) {
            Some(mac) => Assertion::Device(mac),
            None => Assertion::OtherUser(user),
        }
    }
}

/// IPv4-mapped IPv6 sources (a dual-stack socket) compared as the IPv4 address they are.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// The user part of a SIP URI (`sip:dm-0004f2a1b2c3@realm` → `dm-0004f2a1b2c3`).
fn uri_user(uri: &str) -> String {
    let rest = uri.split_once(':').map(|(_, r)| r).unwrap_or(uri);
    match rest.split_once('@') {
        Some((user, _)) => user.split(';').next().unwrap_or("").to_owned(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invite(pai: Option<&str>) -> rsip::Request {
        let mut text = String::from(
            "INVITE sip:8800@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.31;branch=z9hG4bK1\r\n\
             From: <sip:gcti_provisioning@sips1>;tag=1\r\nTo: <sip:8800@sips1>\r\nCall-ID: a\r\n\
             CSeq: 1 INVITE\r\nMax-Forwards: 70\r\n",
        );
        if let Some(p) = pai {
            text.push_str(&format!("P-Asserted-Identity: {p}\r\n"));
        }
        text.push_str("Content-Length: 0\r\n\r\n");
        rsip::Request::try_from(text.as_str()).unwrap()
    }

    fn peers() -> TrustedPeers {
        TrustedPeers::new(vec![
            "127.0.0.31/32".parse().unwrap(),
            "10.9.0.0/16".parse().unwrap(),
        ])
    }

    #[test]
    fn a_trusted_switch_names_the_device() {
        let p = peers();
        let got = p.assertion(
            &invite(Some("<sip:dm-0004f2a1b2c3@sips1>")),
            "127.0.0.31".parse().unwrap(),
        );
        assert_eq!(got, Assertion::Device(Mac::parse("0004f2a1b2c3").unwrap()));
        let got = p.assertion(
            &invite(Some("\"Desk\" <sip:dm-0004f2a1b2c3@sips1>, <tel:+100>")),
            "10.9.3.4".parse().unwrap(),
        );
        assert!(matches!(got, Assertion::Device(_)), "{got:?}");
    }

    #[test]
    fn the_same_claim_from_anyone_else_counts_for_nothing() {
        let p = peers();
        let got = p.assertion(
            &invite(Some("<sip:dm-0004f2a1b2c3@sips1>")),
            "127.0.0.66".parse().unwrap(),
        );
        assert_eq!(got, Assertion::Untrusted);
    }

    #[test]
    fn trusted_but_no_device() {
        let p = peers();
        let src = "127.0.0.31".parse().unwrap();
        assert_eq!(p.assertion(&invite(None), src), Assertion::Absent);
        assert_eq!(
            p.assertion(&invite(Some("<sip:1001@sips1>")), src),
            Assertion::OtherUser("1001".into())
        );
        assert_eq!(
            p.assertion(&invite(Some("garbage")), src),
            Assertion::OtherUser(String::new())
        );
    }

    #[test]
    fn mapped_v4_sources_match_v4_peers() {
        let p = peers();
        assert!(p.contains("::ffff:127.0.0.31".parse().unwrap()));
        assert!(!p.contains("::1".parse().unwrap()));
    }
}
