//! A small authoritative DNS server on loopback, for tests and testbed deployments: one zone
//! (A, AAAA, SRV, NAPTR, … records with their TTLs), held in memory, served over UDP and TCP
//! on one port with hickory-server.
//!
//! * [`Zone`]: the records, built in code ([`Zone::a`], [`Zone::srv`], [`Zone::naptr`], …)
//!   or parsed from an RFC 1035 master file ([`Zone::parse`], [`Zone::load`]). Records of one
//!   name and type are answered in the order they were written (the deployments' `fs3 →
//!   FS2-DM, FS2-VM` order), not shuffled.
//! * [`ZoneServer`]: serves a zone; the zone can be swapped while it runs
//!   ([`ZoneServer::set_zone`], for TTL tests), every question asked is logged
//!   ([`ZoneServer::queries`], to tell a cached answer from a fresh one), and the server can
//!   be told to stop answering ([`ZoneServer::set_silent`]).
//!
//! Answers: the records of the asked name and type (authoritative); a name with records of
//! other types only gets an empty answer (NODATA), an unknown name NXDOMAIN, both with the
//! zone's SOA in the authority section so that resolvers cache the negative answer for the
//! SOA's minimum (RFC 2308); a name outside the zone is REFUSED. No CNAME chasing, no
//! wildcards, no DNSSEC.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Header, HeaderCounts, Metadata, ResponseCode};
use hickory_server::proto::rr::rdata::{A, AAAA, NAPTR, SOA, SRV};
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordType};
use hickory_server::proto::serialize::txt::Parser;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use hickory_server::Server;

#[derive(Debug, thiserror::Error)]
pub enum ZoneError {
    #[error("bad name `{name}`: {reason}")]
    Name { name: String, reason: String },
    #[error("zone file {path}: {reason}")]
    File { path: String, reason: String },
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The negative-answer TTL (SOA minimum) of a zone that does not set its own SOA.
pub const DEFAULT_NEGATIVE_TTL: u32 = 5;

/// One zone's records, in the order they were added.
#[derive(Debug, Clone)]
pub struct Zone {
    origin: Name,
    records: Vec<Record>,
    negative_ttl: u32,
}

impl Zone {
    /// An empty zone for `origin` (`example.test`, or `.` for single-label names such as
    /// `fs1`).
    pub fn new(origin: &str) -> Result<Zone, ZoneError> {
        let mut origin = parse_name(origin)?;
        origin.set_fqdn(true);
        Ok(Zone {
            origin,
            records: Vec::new(),
            negative_ttl: DEFAULT_NEGATIVE_TTL,
        })
    }

    /// Parses an RFC 1035 master file (`$ORIGIN`, `$TTL`, `name [ttl] [IN] type rdata`).
    /// `origin` applies until the file's own `$ORIGIN`, and names the zone when given; else
    /// the zone is the file's SOA owner, or the root (so that a file with several `$ORIGIN`s
    /// is served whole).
    pub fn parse(text: &str, origin: Option<&str>) -> Result<Zone, ZoneError> {
        let origin = origin.map(parse_name).transpose()?;
        let (_, sets) = Parser::new(text, None, origin.clone())
            .parse()
            .map_err(|e| ZoneError::File {
                path: "(text)".into(),
                reason: e.to_string(),
            })?;
        let records: Vec<Record> = sets
            .values()
            .flat_map(|set| set.records_without_rrsigs().cloned())
            .collect();
        let soa_owner = records
            .iter()
            .find(|r| r.record_type() == RecordType::SOA)
            .map(|r| r.name.clone());
        let mut zone_origin = origin.or(soa_owner).unwrap_or_else(Name::root);
        zone_origin.set_fqdn(true);
        Ok(Zone {
            origin: zone_origin,
            records,
            negative_ttl: DEFAULT_NEGATIVE_TTL,
        })
    }

    /// [`Zone::parse`] of a file.
    pub fn load(path: &Path, origin: Option<&str>) -> Result<Zone, ZoneError> {
        let text = std::fs::read_to_string(path).map_err(|e| ZoneError::File {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Zone::parse(&text, origin).map_err(|e| match e {
            ZoneError::File { reason, .. } => ZoneError::File {
                path: path.display().to_string(),
                reason,
            },
            other => other,
        })
    }

    pub fn origin(&self) -> &Name {
        &self.origin
    }

    pub fn records(&self) -> &[Record] {
        &self.records
    }

    /// The TTL of negative answers when the zone has no SOA of its own.
    pub fn negative_ttl(mut self, ttl: u32) -> Zone {
        self.negative_ttl = ttl;
        self
    }

    /// `name` relative to the origin unless it ends with a dot.
    fn name(&self, name: &str) -> Result<Name, ZoneError> {
        let n = parse_name(name)?;
        if name.ends_with('.') {
            return Ok(n);
        }
        n.append_domain(&self.origin).map_err(|e| ZoneError::Name {
            name: name.into(),
            reason: e.to_string(),
        })
    }

    /// Adds a record of `name` (see [`Zone::a`] for names). Panics on a bad name: zones built
    /// in code are test fixtures.
    pub fn record(mut self, name: &str, ttl: u32, rdata: RData) -> Zone {
        let name = self
            .name(name)
            .unwrap_or_else(|e| panic!("test zone record: {e}"));
        self.records.push(Record::from_rdata(name, ttl, rdata));
        self
    }

    /// `name A ip`; `name` is relative to the origin unless it ends with a dot.
    pub fn a(self, name: &str, ttl: u32, ip: Ipv4Addr) -> Zone {
        self.record(name, ttl, RData::A(A(ip)))
    }

    pub fn aaaa(self, name: &str, ttl: u32, ip: Ipv6Addr) -> Zone {
        self.record(name, ttl, RData::AAAA(AAAA(ip)))
    }

    /// A or AAAA, whichever `ip` is.
    pub fn addr(self, name: &str, ttl: u32, ip: IpAddr) -> Zone {
        match ip {
            IpAddr::V4(v4) => self.a(name, ttl, v4),
            IpAddr::V6(v6) => self.aaaa(name, ttl, v6),
        }
    }

    /// `name SRV priority weight port target` (`_sip._udp.ivr`, …).
    pub fn srv(
        self,
        name: &str,
        ttl: u32,
        priority: u16,
        weight: u16,
        port: u16,
        target: &str,
    ) -> Zone {
        let target = self
            .name(target)
            .unwrap_or_else(|e| panic!("test zone SRV target: {e}"));
        self.record(
            name,
            ttl,
            RData::SRV(SRV::new(priority, weight, port, target)),
        )
    }

    /// `name NAPTR order preference "flags" "service" "" replacement` (RFC 3263 §4.1: flags
    /// `s`, service `SIP+D2U`/`SIP+D2T`/`SIPS+D2T`, replacement the SRV name).
    #[allow(clippy::too_many_arguments)] // one per field of the record, as a zone file writes it
    pub fn naptr(
        self,
        name: &str,
        ttl: u32,
        order: u16,
        preference: u16,
        flags: &str,
        service: &str,
        replacement: &str,
    ) -> Zone {
        let replacement = self
            .name(replacement)
            .unwrap_or_else(|e| panic!("test zone NAPTR replacement: {e}"));
        self.record(
            name,
            ttl,
            RData::NAPTR(NAPTR::new(
                order,
                preference,
                flags.as_bytes().into(),
                service.as_bytes().into(),
                Box::default(),
                replacement,
            )),
        )
    }

    /// Drops every record of `name` and `rtype`.
    pub fn without(mut self, name: &str, rtype: RecordType) -> Zone {
        let name = self
            .name(name)
            .unwrap_or_else(|e| panic!("test zone name: {e}"));
        let name = LowerName::new(&name);
        self.records
            .retain(|r| !(LowerName::new(&r.name) == name && r.record_type() == rtype));
        self
    }

    /// The zone's SOA: its own, else one made up with [`Zone::negative_ttl`] as both TTL and
    /// minimum.
    fn soa(&self) -> Record {
        if let Some(soa) = self
            .records
            .iter()
            .find(|r| r.record_type() == RecordType::SOA)
        {
            return soa.clone();
        }
        let host = |label: &str| {
            Name::from_ascii(label)
                .and_then(|n| n.append_domain(&self.origin))
                .unwrap_or_else(|_| self.origin.clone())
        };
        Record::from_rdata(
            self.origin.clone(),
            self.negative_ttl,
            RData::SOA(SOA::new(
                host("ns"),
                host("hostmaster"),
                1,
                3600,
                600,
                86400,
                self.negative_ttl,
            )),
        )
    }

    /// The answer to one question: response code, answer records, authority records.
    fn answer(
        &self,
        name: &LowerName,
        rtype: RecordType,
    ) -> (ResponseCode, Vec<Record>, Vec<Record>) {
        if !LowerName::new(&self.origin).zone_of(name) {
            return (ResponseCode::Refused, Vec::new(), Vec::new());
        }
        let of_name: Vec<&Record> = self
            .records
            .iter()
            .filter(|r| LowerName::new(&r.name) == *name)
            .collect();
        let answers: Vec<Record> = of_name
            .iter()
            .filter(|r| rtype == RecordType::ANY || r.record_type() == rtype)
            .map(|r| (*r).clone())
            .collect();
        if !answers.is_empty() {
            (ResponseCode::NoError, answers, Vec::new())
        } else if !of_name.is_empty() {
            (ResponseCode::NoError, Vec::new(), vec![self.soa()])
        } else {
            (ResponseCode::NXDomain, Vec::new(), vec![self.soa()])
        }
    }
}

fn parse_name(name: &str) -> Result<Name, ZoneError> {
    Name::from_ascii(name).map_err(|e| ZoneError::Name {
        name: name.into(),
        reason: e.to_string(),
    })
}

/// A question the server was asked: name (lower case, with its final dot) and type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    pub name: String,
    pub rtype: RecordType,
}

struct Shared {
    zone: RwLock<Zone>,
    questions: Mutex<Vec<Question>>,
    silent: AtomicBool,
}

struct Handler(Arc<Shared>);

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let mut metadata = Metadata::response_from_request(&request.metadata);
        let failed = |mut metadata: Metadata, code| {
            metadata.response_code = code;
            ResponseInfo::from(Header {
                metadata,
                counts: HeaderCounts::default(),
            })
        };
        let builder = MessageResponseBuilder::from_message_request(request);
        let Ok(info) = request.request_info() else {
            let msg = builder.error_msg(&request.metadata, ResponseCode::FormErr);
            return response_handle
                .send_response(msg)
                .await
                .unwrap_or_else(|_| failed(metadata, ResponseCode::FormErr));
        };
        let name = info.query.name().clone();
        let rtype = info.query.query_type();
        self.0.questions.lock().expect("questions").push(Question {
            name: name.to_string().to_ascii_lowercase(),
            rtype,
        });
        if self.0.silent.load(Ordering::Relaxed) {
            return failed(metadata, ResponseCode::ServFail);
        }
        let (code, answers, authorities) = self.0.zone.read().expect("zone").answer(&name, rtype);
        metadata.authoritative = code != ResponseCode::Refused;
        metadata.recursion_available = false;
        metadata.response_code = code;
        let response = builder.build(metadata, answers.iter(), [], authorities.iter(), []);
        response_handle
            .send_response(response)
            .await
            .unwrap_or_else(|_| failed(metadata, ResponseCode::ServFail))
    }
}

/// A zone served on one UDP and TCP port until dropped (or [`ZoneServer::stop`]ped).
pub struct ZoneServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: Server<Handler>,
}

impl ZoneServer {
    /// Serves `zone` on `listen` (port 0: a free port, the same for UDP and TCP).
    pub async fn start(zone: Zone, listen: SocketAddr) -> Result<ZoneServer, ZoneError> {
        let (udp, tcp) = bind_pair(listen).await?;
        let addr = udp.local_addr().map_err(|source| ZoneError::Bind {
            addr: listen,
            source,
        })?;
        let shared = Arc::new(Shared {
            zone: RwLock::new(zone),
            questions: Mutex::new(Vec::new()),
            silent: AtomicBool::new(false),
        });
        let mut server = Server::new(Handler(shared.clone()));
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(10), 64);
        Ok(ZoneServer {
            addr,
            shared,
            server,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the zone; answers from now on come from the new one.
    pub fn set_zone(&self, zone: Zone) {
        *self.shared.zone.write().expect("zone") = zone;
    }

    /// A copy of the zone being served.
    pub fn zone(&self) -> Zone {
        self.shared.zone.read().expect("zone").clone()
    }

    /// Every question asked so far, in order.
    pub fn queries(&self) -> Vec<Question> {
        self.shared.questions.lock().expect("questions").clone()
    }

    /// How often `name` (with or without its final dot, any case) was asked for `rtype`.
    pub fn asked(&self, name: &str, rtype: RecordType) -> usize {
        let mut name = name.to_ascii_lowercase();
        if !name.ends_with('.') {
            name.push('.');
        }
        self.queries()
            .iter()
            .filter(|q| q.name == name && q.rtype == rtype)
            .count()
    }

    /// Silent: questions are logged but not answered (a dead name server, as resolvers see
    /// it).
    pub fn set_silent(&self, silent: bool) {
        self.shared.silent.store(silent, Ordering::Relaxed);
    }

    /// Stops serving and waits for the listeners to close.
    pub async fn stop(mut self) {
        let _ = self.server.shutdown_gracefully().await;
    }

    /// Serves until the listeners fail (the command-line server's main loop).
    pub async fn run(mut self) -> Result<(), String> {
        self.server
            .block_until_done()
            .await
            .map_err(|e| e.to_string())
    }
}

/// A UDP socket and a TCP listener on the same port of `listen`'s address.
async fn bind_pair(
    listen: SocketAddr,
) -> Result<(tokio::net::UdpSocket, tokio::net::TcpListener), ZoneError> {
    let bind_err = |source| ZoneError::Bind {
        addr: listen,
        source,
    };
    if listen.port() != 0 {
        let udp = tokio::net::UdpSocket::bind(listen)
            .await
            .map_err(bind_err)?;
        let tcp = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(bind_err)?;
        return Ok((udp, tcp));
    }
    let mut last = None;
    for _ in 0..20 {
        let udp = tokio::net::UdpSocket::bind(listen)
            .await
            .map_err(bind_err)?;
        let addr = udp.local_addr().map_err(bind_err)?;
        match tokio::net::TcpListener::bind(addr).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last = Some(e),
        }
    }
    Err(bind_err(last.unwrap_or_else(|| {
        std::io::Error::other("no port free for both UDP and TCP")
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lower(n: &str) -> LowerName {
        LowerName::new(&Name::from_ascii(n).unwrap())
    }

    #[test]
    fn answers_nodata_nxdomain_refused() {
        let zone = Zone::new("example.test")
            .unwrap()
            .a("ivr", 60, Ipv4Addr::new(127, 0, 0, 2))
            .a("ivr", 60, Ipv4Addr::new(127, 0, 0, 1))
            .srv("_sip._udp.ivr", 30, 10, 60, 5070, "ivr");
        let (code, answers, _) = zone.answer(&lower("IVR.example.test."), RecordType::A);
        assert_eq!(code, ResponseCode::NoError);
        let ips: Vec<String> = answers.iter().map(|r| r.data.to_string()).collect();
        assert_eq!(ips, ["127.0.0.2", "127.0.0.1"], "file order kept");
        let (code, answers, soa) = zone.answer(&lower("ivr.example.test."), RecordType::AAAA);
        assert_eq!(
            (code, answers.len(), soa.len()),
            (ResponseCode::NoError, 0, 1)
        );
        let (code, _, soa) = zone.answer(&lower("nowhere.example.test."), RecordType::A);
        assert_eq!((code, soa.len()), (ResponseCode::NXDomain, 1));
        let (code, _, _) = zone.answer(&lower("example.org."), RecordType::A);
        assert_eq!(code, ResponseCode::Refused);
        let (_, answers, _) = zone.answer(&lower("_sip._udp.ivr.example.test."), RecordType::SRV);
        assert_eq!(answers[0].data.to_string(), "10 60 5070 ivr.example.test.");
    }

    /// The example zone of the testbed (the multi-site deployment's fs1/fs2/fs3) parses, and
    /// keeps the record order.
    #[test]
    fn example_zone_file() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("dns/example.zone");
        let zone = Zone::load(&path, None).unwrap();
        assert_eq!(zone.origin().to_string(), ".");
        let ips = |name: &str| -> Vec<String> {
            zone.answer(&lower(name), RecordType::A)
                .1
                .iter()
                .map(|r| r.data.to_string())
                .collect()
        };
        assert_eq!(
            ips("fs1."),
            ["127.0.0.11", "127.0.0.12", "127.0.0.21", "127.0.0.22"]
        );
        assert_eq!(ips("fs2."), ["127.0.0.11", "127.0.0.12"]);
        assert_eq!(ips("fs3."), ["127.0.0.22", "127.0.0.21"]);
        let (code, naptr, _) = zone.answer(&lower("ivr.example.test."), RecordType::NAPTR);
        assert_eq!((code, naptr.len()), (ResponseCode::NoError, 2));
    }
}
