//! [`SipResolver`]: RFC 3263 §4 ("Client usage"), from a SIP URI's host to the ordered
//! candidates to try, using rsip-dns's resolvables over [`HickoryDnsClient`].
//!
//! | the URI names | lookups (§4.1, §4.2) | transport, port |
//! | --- | --- | --- |
//! | a literal IP | none | given, else UDP (`sip:`) / TLS (`sips:`); given port, else 5060/5061 |
//! | a host and a port | A/AAAA | given, else UDP / TLS |
//! | a host and a transport | SRV `_sip._udp` / `_sip._tcp` / `_sips._tcp`; none: A/AAAA | given; SRV port, else the default |
//! | a host alone | NAPTR (`SIP+D2U`, `SIP+D2T` for `sip:`, `SIPS+D2T` for `sips:`) → SRV → A/AAAA; no NAPTR: SRV for each of those transports; no SRV: A/AAAA | NAPTR/SRV's, else UDP / TLS on 5060/5061 |
//!
//! Each stage is used only when the one before it found nothing (rsip-dns's own `Lookup`
//! runs the stages one after the other, so that the A/AAAA fallback would come after SRV
//! targets that answered). One leniency: NAPTR records whose SRV names yield no address fall
//! through to the plain SRV queries, rather than failing the name.
//!
//! sipdm opens no TLS connections (see `sip::transport::tls`), so `sip:` URIs are resolved to
//! UDP and TCP only; a `sips:` URI yields TLS candidates, which a send then reports as having
//! no route unless the peer holds a TLS connection to us.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::SeedableRng;
use rsip_dns::resolvables::{
    ResolvableAddrRecord, ResolvableExt, ResolvableNaptrRecord, ResolvableSrvRecord,
};
use rsip_dns::SrvDomain;
use sip::rsip::{Domain, Transport};

use super::destination::{from_rsip, to_rsip};
use super::hickory_client::{HickoryDnsClient, Trail};
use super::{Candidate, Destination};

/// More than any sane zone gives for one name; bounds a resolution.
const MAX_CANDIDATES: usize = 32;

/// Per query, against servers named in the configuration (the system's own resolv.conf
/// options apply otherwise): a call waits on DNS for seconds, not the default ten.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("cannot look up `{host}`: no DNS resolver ({why})")]
    NoResolver { host: String, why: String },
    #[error("`{host}` resolves to no SIP target ({})", .trail.join("; "))]
    NoTarget { host: String, trail: Vec<String> },
    #[error("`{host}`: sipdm does not send over {transport}")]
    Transport { host: String, transport: Transport },
}

pub struct SipResolver {
    resolver: Result<TokioResolver, String>,
    rng: Arc<Mutex<StdRng>>,
}

impl SipResolver {
    /// A resolver asking `servers` (`ip:port`, UDP then TCP), or the system's name servers
    /// when the list is empty. Never fails: without a usable system configuration, names do
    /// not resolve (each attempt says why) while literal addresses still work.
    pub fn new(servers: &[SocketAddr]) -> SipResolver {
        let builder = if servers.is_empty() {
            TokioResolver::builder_tokio().map_err(|e| format!("system DNS configuration: {e}"))
        } else {
            let name_servers = servers
                .iter()
                .map(|s| {
                    let mut ns = NameServerConfig::udp_and_tcp(s.ip());
                    for c in &mut ns.connections {
                        c.port = s.port();
                    }
                    ns
                })
                .collect();
            let mut b = TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(name_servers),
                TokioRuntimeProvider::default(),
            );
            b.options_mut().timeout = QUERY_TIMEOUT;
            Ok(b)
        };
        let resolver = builder.and_then(|b| b.build().map_err(|e| e.to_string()));
        if let Err(why) = &resolver {
            tracing::warn!(
                why,
                "no DNS resolver: SIP addresses naming a host will not resolve"
            );
        }
        SipResolver {
            resolver,
            rng: Arc::new(Mutex::new(StdRng::from_entropy())),
        }
    }

    /// Draws the SRV weighted order from a seeded generator (repeatable orders, for tests).
    pub fn with_seed(self, seed: u64) -> SipResolver {
        *self.rng.lock() = StdRng::seed_from_u64(seed);
        self
    }

    /// The candidates for `dest`, first to try first. Never empty when `Ok`.
    pub async fn resolve(&self, dest: &Destination) -> Result<Vec<Candidate>, DnsError> {
        // §4.1: what a sips: URI may use; sip: also takes the transport it names.
        let mut allowed = if dest.secure {
            vec![Transport::Tls]
        } else {
            vec![Transport::Udp, Transport::Tcp]
        };
        if let Some(p) = dest.transport {
            allowed = vec![to_rsip(p)];
        }
        if let Some(ip) = dest.ip() {
            let t = dest.default_transport();
            let protocol = from_rsip(t).ok_or_else(|| DnsError::Transport {
                host: dest.host.clone(),
                transport: t,
            })?;
            let port = dest.port.unwrap_or_else(|| t.default_port().into());
            return Ok(vec![Candidate {
                protocol,
                addr: SocketAddr::new(ip, port),
            }]);
        }
        let resolver = self.resolver.as_ref().map_err(|why| DnsError::NoResolver {
            host: dest.host.clone(),
            why: why.clone(),
        })?;
        let trail = Trail::default();
        let client = HickoryDnsClient::new(resolver.clone(), self.rng.clone(), trail.clone());
        let domain = Domain::from(dest.host.clone());
        let mut found = Found::new(allowed.clone());
        let srv_domain = |t: Transport| SrvDomain {
            // §4.2: TLS is looked up as _sips._tcp, also for a sip: URI naming it.
            secure: dest.secure || t == Transport::Tls,
            protocol: t.protocol(),
            domain: domain.clone(),
        };
        match (dest.port, dest.transport) {
            (Some(port), _) => {
                let t = dest.default_transport();
                found
                    .drain(ResolvableAddrRecord::new(
                        client,
                        domain.clone(),
                        port.into(),
                        t,
                    ))
                    .await;
            }
            (None, Some(p)) => {
                let t = to_rsip(p);
                found
                    .drain(ResolvableSrvRecord::new(client.clone(), srv_domain(t)))
                    .await;
                if found.is_empty() {
                    found
                        .drain(ResolvableAddrRecord::new(
                            client,
                            domain.clone(),
                            t.default_port(),
                            t,
                        ))
                        .await;
                }
            }
            (None, None) => {
                found
                    .drain(ResolvableNaptrRecord::new(
                        client.clone(),
                        domain.clone(),
                        allowed.clone(),
                    ))
                    .await;
                if found.is_empty() {
                    for t in &allowed {
                        found
                            .drain(ResolvableSrvRecord::new(client.clone(), srv_domain(*t)))
                            .await;
                    }
                }
                if found.is_empty() {
                    let t = dest.default_transport();
                    found
                        .drain(ResolvableAddrRecord::new(
                            client,
                            domain.clone(),
                            t.default_port(),
                            t,
                        ))
                        .await;
                }
            }
        }
        if found.is_empty() {
            let mut trail = trail.entries();
            if trail.is_empty() {
                trail.push("no record for a transport sipdm sends over".into());
            }
            return Err(DnsError::NoTarget {
                host: dest.host.clone(),
                trail,
            });
        }
        Ok(found.candidates)
    }
}

/// The candidates of one resolution, without repeats, within [`MAX_CANDIDATES`].
struct Found {
    allowed: Vec<Transport>,
    candidates: Vec<Candidate>,
}

impl Found {
    fn new(allowed: Vec<Transport>) -> Found {
        Found {
            allowed,
            candidates: Vec::new(),
        }
    }

    fn is_empty(&self) -> bool {
        self.candidates.is_empty()
    }

    /// Takes every target `r` yields (rsip-dns queries lazily, one record at a time).
    async fn drain<R: ResolvableExt<rsip_dns::Target> + Send>(&mut self, mut r: R) {
        while self.candidates.len() < MAX_CANDIDATES {
            let Some(t) = r.resolve_next().await else {
                return;
            };
            if !self.allowed.contains(&t.transport) {
                continue;
            }
            let Some(protocol) = from_rsip(t.transport) else {
                continue;
            };
            let c = Candidate {
                protocol,
                addr: SocketAddr::new(t.ip_addr, u16::from(t.port)),
            };
            if !self.candidates.contains(&c) {
                self.candidates.push(c);
            }
        }
    }
}

impl std::fmt::Debug for SipResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SipResolver")
            .field("usable", &self.resolver.is_ok())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use hickory_resolver::proto::rr::RecordType;
    use sip::transport::Protocol;
    use testbed::dns_zone::{Zone, ZoneServer};

    use super::*;

    fn dest(secure: bool, host: &str, port: Option<u16>, t: Option<Protocol>) -> Destination {
        Destination {
            secure,
            host: host.into(),
            port,
            transport: t,
        }
    }

    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(127, 0, 0, last)
    }

    fn shown(c: &[Candidate]) -> Vec<String> {
        c.iter().map(|c| c.to_string()).collect()
    }

    async fn serve(zone: Zone) -> (ZoneServer, SipResolver) {
        let server = ZoneServer::start(zone, "127.0.0.1:0".parse().unwrap())
            .await
            .expect("zone server");
        let resolver = SipResolver::new(&[server.addr()]).with_seed(1);
        (server, resolver)
    }

    fn zone() -> Zone {
        Zone::new("example.test").unwrap()
    }

    #[tokio::test]
    async fn literal_addresses_need_no_dns() {
        // Nothing listens on port 9: a query would fail.
        let r = SipResolver::new(&["127.0.0.1:9".parse().unwrap()]);
        let got = r
            .resolve(&dest(false, "10.0.0.9", None, None))
            .await
            .unwrap();
        assert_eq!(shown(&got), ["10.0.0.9:5060/UDP"]);
        let got = r
            .resolve(&dest(false, "::1", Some(5070), Some(Protocol::Tcp)))
            .await
            .unwrap();
        assert_eq!(shown(&got), ["[::1]:5070/TCP"]);
    }

    /// §4.2: a port and no transport: A/AAAA only, UDP, every address in order.
    #[tokio::test]
    async fn host_with_port_is_a_and_aaaa() {
        let (dns, r) = serve(zone().a("ms", 60, ip(7)).a("ms", 60, ip(8)).srv(
            "_sip._udp.ms",
            60,
            1,
            1,
            9999,
            "ms",
        ))
        .await;
        let got = r
            .resolve(&dest(false, "ms.example.test", Some(5080), None))
            .await
            .unwrap();
        assert_eq!(shown(&got), ["127.0.0.7:5080/UDP", "127.0.0.8:5080/UDP"]);
        assert_eq!(dns.asked("_sip._udp.ms.example.test", RecordType::SRV), 0);
        assert_eq!(dns.asked("ms.example.test", RecordType::NAPTR), 0);
    }

    /// §4.1: NAPTR (order, then preference) → SRV → A, with the NAPTR's transport.
    #[tokio::test]
    async fn naptr_then_srv_then_a() {
        let (_dns, r) = serve(
            zone()
                // Written out of order: order 20 must come after order 10.
                .naptr("ivr", 60, 20, 10, "S", "SIP+D2U", "_sip._udp.ivr")
                .naptr("ivr", 60, 10, 10, "s", "SIP+D2T", "_sip._tcp.ivr")
                .naptr("ivr", 60, 5, 10, "s", "SIPS+D2T", "_sips._tcp.ivr")
                .srv("_sip._tcp.ivr", 60, 1, 0, 5071, "ms1")
                .srv("_sip._udp.ivr", 60, 1, 0, 5072, "ms2")
                .srv("_sips._tcp.ivr", 60, 1, 0, 5061, "ms1")
                .a("ms1", 60, ip(11))
                .a("ms2", 60, ip(12))
                // Never used: NAPTR found something.
                .a("ivr", 60, ip(99)),
        )
        .await;
        let got = r
            .resolve(&dest(false, "ivr.example.test", None, None))
            .await
            .unwrap();
        // SIPS+D2T is for sips: URIs only.
        assert_eq!(shown(&got), ["127.0.0.11:5071/TCP", "127.0.0.12:5072/UDP"]);
    }

    /// No NAPTR: SRV for UDP and TCP; no SRV either: A/AAAA on 5060 over UDP.
    #[tokio::test]
    async fn fallbacks_without_naptr_or_srv() {
        let (dns, r) = serve(
            zone()
                .srv("_sip._tcp.tcponly", 60, 1, 0, 5090, "ms1")
                .a("ms1", 60, ip(11))
                .a("plain", 60, ip(13)),
        )
        .await;
        let got = r
            .resolve(&dest(false, "tcponly.example.test", None, None))
            .await
            .unwrap();
        assert_eq!(shown(&got), ["127.0.0.11:5090/TCP"]);
        let got = r
            .resolve(&dest(false, "plain.example.test", None, None))
            .await
            .unwrap();
        assert_eq!(shown(&got), ["127.0.0.13:5060/UDP"]);
        assert_eq!(
            dns.asked("_sip._udp.plain.example.test", RecordType::SRV),
            1
        );
        assert_eq!(
            dns.asked("_sip._tcp.plain.example.test", RecordType::SRV),
            1
        );
        // A transport named in the URI: only its SRV, then A on its default port.
        let got = r
            .resolve(&dest(
                false,
                "plain.example.test",
                None,
                Some(Protocol::Tcp),
            ))
            .await
            .unwrap();
        assert_eq!(shown(&got), ["127.0.0.13:5060/TCP"]);
    }

    /// RFC 2782: priority first; among equal priorities the weighted draw decides, which a
    /// seeded resolver makes repeatable and which, over many draws, follows the weights.
    #[tokio::test]
    async fn srv_priority_and_weight() {
        let (_dns, r) = serve(
            zone()
                .srv("_sip._udp.ivr", 60, 20, 0, 5060, "backup")
                .srv("_sip._udp.ivr", 60, 10, 10, 5060, "light")
                .srv("_sip._udp.ivr", 60, 10, 90, 5060, "heavy")
                .a("backup", 60, ip(30))
                .a("light", 60, ip(31))
                .a("heavy", 60, ip(32)),
        )
        .await;
        let d = dest(false, "ivr.example.test", None, None);
        let mut heavy_first = 0;
        let n = 300;
        for _ in 0..n {
            let got = r.resolve(&d).await.unwrap();
            assert_eq!(got.len(), 3);
            assert_eq!(
                got[2].addr.ip(),
                ip(30),
                "priority 20 last: {}",
                shown(&got).join(" ")
            );
            if got[0].addr.ip() == ip(32) {
                heavy_first += 1;
            }
        }
        // Expected 91/101 of 300 ≈ 270; a fair draw stays well inside these bounds.
        assert!(
            (240..=295).contains(&heavy_first),
            "heavy first {heavy_first}/{n}"
        );
        // Same seed, same orders.
        let again = SipResolver::new(&[_dns.addr()]).with_seed(5);
        let other = SipResolver::new(&[_dns.addr()]).with_seed(5);
        for _ in 0..20 {
            assert_eq!(
                again.resolve(&d).await.unwrap(),
                other.resolve(&d).await.unwrap()
            );
        }
    }

    /// A name that resolves to nothing says what was asked and what the server said.
    #[tokio::test]
    async fn nothing_found_is_a_clear_error() {
        let (_dns, r) = serve(zone().a("ms1", 60, ip(11))).await;
        let e = r
            .resolve(&dest(false, "nowhere.example.test", None, None))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`nowhere.example.test` resolves to no SIP target"),
            "{e}"
        );
        assert!(e.contains("NAPTR nowhere.example.test"), "{e}");
        assert!(e.contains("SRV _sip._udp.nowhere.example.test"), "{e}");
        assert!(e.contains("A/AAAA nowhere.example.test"), "{e}");
        assert!(e.contains("NXDOMAIN"), "{e}");
        // No server answering at all: a timeout per query, reported as such.
        let dead = ZoneServer::start(zone(), "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        dead.set_silent(true);
        let r = SipResolver::new(&[dead.addr()]);
        let e = r
            .resolve(&dest(false, "ms1.example.test", Some(5060), None))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("A/AAAA ms1.example.test"), "{e}");
    }

    /// Answers are cached for their TTL: a changed zone is not seen (and not asked) while the
    /// old record's TTL runs, and is seen once it has run out.
    #[tokio::test]
    async fn answers_are_cached_within_their_ttl() {
        let (dns, r) = serve(zone().a("long", 3600, ip(1)).a("short", 1, ip(1))).await;
        let long = dest(false, "long.example.test", Some(5060), None);
        let short = dest(false, "short.example.test", Some(5060), None);
        assert_eq!(r.resolve(&long).await.unwrap()[0].addr.ip(), ip(1));
        assert_eq!(r.resolve(&short).await.unwrap()[0].addr.ip(), ip(1));
        let asked = dns.asked("long.example.test", RecordType::A);
        assert_eq!(asked, 1);
        dns.set_zone(zone().a("long", 3600, ip(2)).a("short", 1, ip(2)));
        // An hour's TTL cannot run out during the test: still the old answer, from the cache.
        for _ in 0..3 {
            assert_eq!(r.resolve(&long).await.unwrap()[0].addr.ip(), ip(1));
        }
        assert_eq!(dns.asked("long.example.test", RecordType::A), asked);
        // One second's does: polled, bounded (about 3 s at most), no assertion on time.
        let mut seen = false;
        for _ in 0..30 {
            if r.resolve(&short).await.unwrap()[0].addr.ip() == ip(2) {
                seen = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(seen, "the new record was never seen");
        assert!(dns.asked("short.example.test", RecordType::A) >= 2);
    }
}
