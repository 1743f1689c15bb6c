//! SIP server and trunk addresses by DNS, as RFC 3263 ("Locating SIP Servers") describes:
//! a `sip:`/`sips:` URI naming a host becomes an ordered list of (address, port, transport)
//! candidates to try one after the other.
//!
//! Module map:
//! - [`destination`]: what is looked up (scheme, host, port, transport) and what comes out
//!   (a [`Candidate`]: socket address and transport);
//! - [`srv_order`]: the RFC 2782 ordering of SRV records (priority, then weighted random);
//! - [`hickory_client`]: rsip-dns's `DnsClient` trait over the current hickory-resolver
//!   (rsip-dns ships an adapter only for the old trust-dns crates);
//! - [`resolver`]: [`SipResolver`], the RFC 3263 §4 procedure (NAPTR → SRV → A/AAAA, with
//!   its fallbacks) built from rsip-dns's resolvables.
//!
//! Caching: every query goes through hickory's response cache, which keeps an answer for the
//! smallest TTL of its records (negative answers for the SOA's minimum) and no longer; sipdm
//! keeps no DNS state of its own, so a changed zone is seen once its old records' TTLs run out.

pub mod destination;
pub mod hickory_client;
pub mod resolver;
pub mod srv_order;

pub use destination::{Candidate, Destination};
pub use hickory_client::HickoryDnsClient;
pub use resolver::{DnsError, SipResolver};
