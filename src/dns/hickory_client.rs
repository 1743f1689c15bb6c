//! rsip-dns's [`DnsClient`] over hickory-resolver 0.26 (the trust-dns resolver renamed).
//! rsip-dns's own adapter is written for trust-dns-resolver 0.20; this one is the same three
//! queries against the current API, plus what rsip-dns leaves to its client:
//!
//! * NAPTR records come back sorted by order, then preference (RFC 3403 §4.1), with flags
//!   upper-cased (rsip-dns only recognises `S`);
//! * SRV records come back in RFC 2782 order ([`super::srv_order`]), without the "." target;
//! * every failed or empty query is noted in a [`Trail`], so that a name that resolves to
//!   nothing can be reported with what was asked and what the server said.
//!
//! Caching is hickory's (see the module above).

use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use hickory_resolver::net::NetError;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::TokioResolver;
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rsip_dns::records::{
    AddrRecord, NaptrEntry, NaptrFlags, NaptrRecord, NaptrServices, SrvEntry, SrvRecord,
};
use rsip_dns::{DnsClient, SrvDomain};
use sip::rsip::{self, Domain};

/// What the queries of one resolution found wanting, in the order they were made.
#[derive(Debug, Clone, Default)]
pub struct Trail(Arc<Mutex<Vec<String>>>);

impl Trail {
    fn note(&self, query: &str, name: &str, outcome: String) {
        self.0.lock().push(format!("{query} {name}: {outcome}"));
    }

    pub fn entries(&self) -> Vec<String> {
        self.0.lock().clone()
    }
}

#[derive(Clone)]
pub struct HickoryDnsClient {
    resolver: TokioResolver,
    rng: Arc<Mutex<StdRng>>,
    trail: Trail,
}

impl HickoryDnsClient {
    /// `rng` draws the SRV weighted order; `trail` collects the failures of this resolution.
    pub fn new(resolver: TokioResolver, rng: Arc<Mutex<StdRng>>, trail: Trail) -> Self {
        HickoryDnsClient {
            resolver,
            rng,
            trail,
        }
    }
}

/// A short reason: NXDOMAIN and "no record of this type" are the usual ones and hickory's
/// own message for them quotes the whole query.
fn describe(e: &NetError) -> String {
    if e.is_nx_domain() {
        "no such name (NXDOMAIN)".into()
    } else if e.is_no_records_found() {
        "no record".into()
    } else {
        e.to_string()
    }
}

#[async_trait]
impl DnsClient for HickoryDnsClient {
    async fn naptr_lookup(&self, domain: Domain) -> Option<NaptrRecord> {
        let name = domain.to_string();
        let lookup = match self.resolver.lookup(name.as_str(), RecordType::NAPTR).await {
            Ok(l) => l,
            Err(e) => {
                self.trail.note("NAPTR", &name, describe(&e));
                return None;
            }
        };
        let mut entries: Vec<NaptrEntry> = lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::NAPTR(n) => Some(NaptrEntry {
                    order: n.order,
                    preference: n.preference,
                    flags: NaptrFlags::from(n.flags.to_ascii_uppercase().as_slice()),
                    // Services sipdm cannot parse (`E2U+sip`, …) are not SIP: skipped.
                    services: NaptrServices::try_from(&n.services[..]).ok()?,
                    regexp: n.regexp.to_vec(),
                    replacement: Domain::from(n.replacement.to_string()),
                }),
                _ => None,
            })
            .collect();
        if entries.is_empty() {
            self.trail.note("NAPTR", &name, "no SIP record".into());
            return None;
        }
        entries.sort_by_key(|e| (e.order, e.preference));
        Some(NaptrRecord { domain, entries })
    }

    async fn srv_lookup(&self, domain: SrvDomain) -> Option<SrvRecord> {
        let name = domain.to_string();
        let lookup = match self.resolver.srv_lookup(name.as_str()).await {
            Ok(l) => l,
            Err(e) => {
                self.trail.note("SRV", &name, describe(&e));
                return None;
            }
        };
        let entries: Vec<SrvEntry> = lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::SRV(s) if !s.target.is_root() => Some(SrvEntry {
                    priority: s.priority,
                    weight: s.weight,
                    port: s.port.into(),
                    target: Domain::from(s.target.to_string()),
                }),
                _ => None,
            })
            .collect();
        if entries.is_empty() {
            self.trail.note("SRV", &name, "no usable target".into());
            return None;
        }
        let entries = super::srv_order::order(entries, &mut *self.rng.lock());
        Some(SrvRecord { entries, domain })
    }

    async fn ip_lookup(&self, domain: Domain) -> Result<AddrRecord, rsip::Error> {
        let name = domain.to_string();
        match self.resolver.lookup_ip(name.as_str()).await {
            Ok(ips) => {
                let ip_addrs: Vec<IpAddr> = ips.iter().collect();
                Ok(AddrRecord { domain, ip_addrs })
            }
            Err(e) => {
                let why = describe(&e);
                self.trail.note("A/AAAA", &name, why.clone());
                Err(rsip::Error::Unexpected(why))
            }
        }
    }
}
