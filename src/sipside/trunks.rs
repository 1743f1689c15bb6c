//! The trunk table: which trunk carries a dialled number, and whether each trunk is in
//! service.
//!
//! * Routing: the trunks whose `prefix` is the longest prefix of the Request-URI user carry
//!   the call; among trunks with that same prefix, configuration order is preference (the
//!   business-continuity "preferred, then peer").
//! * Groups: trunks that name the same `group` (`gcti_provisioning`) are one route, hunted in
//!   order: a call that one of them carries may fail over to every other member, whatever
//!   its prefix, after the longest-prefix trunks (members first in configuration order,
//!   then the rest). So a group of an IVR media server on `8800` and the built-in IVR on
//!   `88` sends 8800 to the media server and, while it is out of service or refuses, to the
//!   built-in IVR. A trunk with no group fails over only to trunks of its own prefix.
//! * Addresses: a contact naming a host is resolved per RFC 3263 ([`crate::dns`]): a
//!   contact without port or transport (`sip:ivr.example.test`) through NAPTR and SRV, so
//!   that one trunk may have several records (addresses), tried in the order DNS gives them.
//!   Resolution happens per call and per probe; hickory's cache keeps answers within their TTL.
//! * Health: every external trunk is probed with an out-of-dialog OPTIONS (RFC 3261 §11) each
//!   `[sip] trunk-options-interval-ms`, with the trunk's `oos-options-max-forwards` as the
//!   probe's Max-Forwards (1 makes an SBC answer for itself instead of asking the far end).
//!   Every record of the trunk is probed, and health is kept per record: a record whose probe
//!   is answered 5xx or not within the interval is out of service, and calls skip it until a
//!   probe is answered again (any status below 500: a 404 or 405 still proves the peer is up).
//!   The trunk is in service while any of its records is: a dead record then costs a call
//!   nothing, where trunk-level health would make every call wait out Timer B on it (or
//!   would drop a trunk whose other records are fine). A contact that does not resolve puts
//!   the trunk out of service; the error is logged at most once per probe interval, not per
//!   call. `builtin:ivr` is always in service.
//! * The states are exported as `sipdm_trunk_in_service{trunk="…",group="…"}` (1 or 0; `group`
//!   empty for a trunk of none) and through [`TrunkTable::states`] for the admin API.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;
use sip::dialog::RequestBuilder;
use sip::rsip;
use sip::transport::Protocol;
use sip::{Endpoint, Target};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::TrunkConfig;
use crate::dns::{Candidate, Destination, DnsError, SipResolver};

/// The contact value naming the built-in IVR.
pub const BUILTIN_IVR: &str = "builtin:ivr";

#[derive(Debug, thiserror::Error)]
pub enum TrunkError {
    #[error("trunk `{name}`: contact `{contact}` is not a usable SIP URI: {reason}")]
    BadContact {
        name: String,
        contact: String,
        reason: &'static str,
    },
}

/// Where a trunk's calls go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrunkTarget {
    BuiltinIvr,
    Sip(SipTarget),
}

/// `sip:[user@]host[:port][;transport=tcp]`, taken apart once at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipTarget {
    /// `sip` or `sips`.
    pub scheme: String,
    /// Host as written (IPv6 with its brackets).
    pub host: String,
    /// As written; `None` lets DNS (SRV) or the transport's default decide.
    pub port: Option<u16>,
    /// The `transport` parameter; `None` lets DNS (NAPTR) or the scheme decide.
    pub transport: Option<Protocol>,
}

impl SipTarget {
    pub fn parse(contact: &str) -> Result<SipTarget, &'static str> {
        let (scheme, rest) = contact.split_once(':').ok_or("no scheme")?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "sip" && scheme != "sips" {
            return Err("scheme must be sip or sips");
        }
        let mut parts = rest.split(';');
        let userhost = parts.next().unwrap_or("").split('?').next().unwrap_or("");
        let hostport = userhost.rsplit_once('@').map(|x| x.1).unwrap_or(userhost);
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or("unclosed [")?;
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p.parse::<u16>().map_err(|_| "bad port")?),
                None if after.is_empty() => None,
                None => return Err("junk after ]"),
            };
            (format!("[{h}]"), port)
        } else {
            match hostport.split_once(':') {
                Some((h, p)) => (
                    h.to_owned(),
                    Some(p.parse::<u16>().map_err(|_| "bad port")?),
                ),
                None => (hostport.to_owned(), None),
            }
        };
        if host.is_empty() || host == "[]" {
            return Err("no host");
        }
        let mut transport = None;
        for p in parts {
            if let Some((k, v)) = p.split_once('=') {
                if k.trim().eq_ignore_ascii_case("transport") {
                    transport = Some(Protocol::parse(v.trim()).ok_or("unknown transport")?);
                }
            }
        }
        Ok(SipTarget {
            scheme,
            host,
            port,
            transport,
        })
    }

    /// The URI of a request to `user` on this trunk (`sip:8800@10.0.0.9:5070;transport=tcp`),
    /// or of the trunk itself when `user` is empty (OPTIONS probes). The host, port and
    /// transport are the contact's as written, whichever record the request is sent to
    /// (RFC 3263 §4: resolution picks where to send, not what to ask for).
    pub fn uri(&self, user: &str) -> String {
        let at = if user.is_empty() {
            String::new()
        } else {
            format!("{user}@")
        };
        let port = self.port.map(|p| format!(":{p}")).unwrap_or_default();
        let transport = self
            .transport
            .map(|t| format!(";transport={}", t.as_str().to_ascii_lowercase()))
            .unwrap_or_default();
        format!("{}:{at}{}{port}{transport}", self.scheme, self.host)
    }

    /// What RFC 3263 resolution starts from.
    pub fn destination(&self) -> Destination {
        Destination {
            secure: self.scheme == "sips",
            host: self.host.trim_matches(['[', ']']).to_owned(),
            port: self.port,
            transport: self.transport,
        }
    }
}

/// One resolved record of a trunk, as its last probe (or call) left it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct RecordState {
    /// `ip:port/TRANSPORT`.
    pub address: String,
    pub in_service: bool,
    pub last_probe: String,
}

#[derive(Debug, Clone)]
struct Health {
    in_service: bool,
    last_probe: Option<String>,
    /// The records of the last probe round, in resolution order.
    records: Vec<(Candidate, bool, String)>,
}

/// One configured trunk and its health.
#[derive(Debug)]
pub struct Trunk {
    pub config: TrunkConfig,
    pub target: TrunkTarget,
    health: Mutex<Health>,
    resolver: Arc<SipResolver>,
    /// When a resolution failure was last logged, and how long to stay quiet after it.
    dns_logged: Mutex<Option<Instant>>,
    dns_log_window: Duration,
}

impl Trunk {
    pub fn in_service(&self) -> bool {
        self.health.lock().in_service
    }

    /// Records a probe (or call) result; logs and updates the gauge on a change of state.
    pub fn record(&self, in_service: bool, result: impl Into<String>) {
        let result = result.into();
        let changed = {
            let mut h = self.health.lock();
            let changed = h.in_service != in_service;
            h.in_service = in_service;
            h.last_probe = Some(result.clone());
            changed
        };
        if changed {
            if in_service {
                tracing::info!(trunk = %self.config.name, contact = %self.config.contact, result, "trunk back in service");
            } else {
                tracing::warn!(trunk = %self.config.name, contact = %self.config.contact, result, "trunk out of service");
            }
        }
        self.publish();
    }

    fn publish(&self) {
        let v = if self.in_service() { 1.0 } else { 0.0 };
        metrics::gauge!(
            "sipdm_trunk_in_service",
            "trunk" => self.config.name.clone(),
            "group" => self.config.group.clone().unwrap_or_default()
        )
        .set(v);
    }

    /// The trunk's records now (RFC 3263 order), less those whose last probe failed, unless
    /// that leaves none (the record set may have changed since the probe).
    pub async fn addresses(&self) -> Result<Vec<Candidate>, DnsError> {
        let Some(dest) = self.sip_destination() else {
            return Ok(Vec::new());
        };
        let all = self.resolver.resolve(&dest).await?;
        let dead: Vec<Candidate> = self
            .health
            .lock()
            .records
            .iter()
            .filter(|(_, ok, _)| !ok)
            .map(|(c, _, _)| *c)
            .collect();
        let live: Vec<Candidate> = all.iter().filter(|c| !dead.contains(c)).copied().collect();
        Ok(if live.is_empty() { all } else { live })
    }

    fn sip_destination(&self) -> Option<Destination> {
        match &self.target {
            TrunkTarget::Sip(t) => Some(t.destination()),
            TrunkTarget::BuiltinIvr => None,
        }
    }

    /// The contact did not resolve: logged at most once per probe interval, whoever asks (a
    /// probe or every call); the trunk is out of service until a probe resolves it again.
    /// When this takes the trunk out of service, the "out of service" line is the one that
    /// carries the error.
    pub fn dns_failed(&self, e: &DnsError) {
        let was_in_service = self.in_service();
        let now = Instant::now();
        let quiet = {
            let mut last = self.dns_logged.lock();
            let quiet = !was_in_service
                && last.is_some_and(|t| now.duration_since(t) < self.dns_log_window);
            if !quiet {
                *last = Some(now);
            }
            quiet
        };
        if quiet {
            tracing::debug!(trunk = %self.config.name, error = %e, "trunk contact does not resolve");
        } else if !was_in_service {
            tracing::warn!(trunk = %self.config.name, contact = %self.config.contact, error = %e, "trunk contact does not resolve");
        }
        self.record(false, format!("DNS: {e}"));
    }

    /// A call to `record` got no answer (Timer B): calls skip it until a probe is answered;
    /// the trunk goes out of service with its last record.
    pub fn record_failed(&self, record: Candidate, result: &str) {
        let any_left = {
            let mut h = self.health.lock();
            match h.records.iter_mut().find(|(c, _, _)| *c == record) {
                Some(r) => {
                    r.1 = false;
                    r.2 = result.to_owned();
                }
                None => h.records.push((record, false, result.to_owned())),
            }
            h.records.iter().any(|(_, ok, _)| *ok)
        };
        if !any_left {
            self.record(false, result);
        }
    }

    /// One probe round: each record's result, in resolution order. In service when any
    /// record answered below 500; the round's summary is the first such answer (else the first
    /// record's result), so a trunk of one record reads as before (`200`, `timeout`).
    fn record_round(&self, results: Vec<(Candidate, Result<u16, String>)>) {
        let records: Vec<(Candidate, bool, String)> = results
            .into_iter()
            .map(|(c, r)| match r {
                Ok(code) => (c, code < 500, code.to_string()),
                Err(why) => (c, false, why),
            })
            .collect();
        let summary = records
            .iter()
            .find(|(_, ok, _)| *ok)
            .or(records.first())
            .map(|(_, _, r)| r.clone())
            .unwrap_or_else(|| "no address".into());
        let in_service = records.iter().any(|(_, ok, _)| *ok);
        self.health.lock().records = records;
        self.record(in_service, summary);
    }
}

/// A trunk's state as the admin API and metrics show it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct TrunkState {
    pub name: String,
    pub contact: String,
    pub prefix: String,
    pub group: Option<String>,
    pub in_service: bool,
    /// `200`, `503`, `timeout`, `INVITE timeout`, `DNS: …` (`None`: not probed yet).
    pub last_probe: Option<String>,
    /// The resolved records as the last probe round found them (empty: not probed yet, or
    /// the contact did not resolve).
    pub records: Vec<RecordState>,
}

pub struct TrunkTable {
    trunks: Vec<Arc<Trunk>>,
}

impl TrunkTable {
    /// Takes the configured trunks apart. Every trunk starts in service: a call arriving before
    /// the first probe is answered still goes to the preferred trunk, and fails over on its own
    /// (Timer B or 503) if that trunk is down. `probe_interval` is also how long a resolution
    /// failure, once logged, stays quiet.
    pub fn new(
        configs: &[TrunkConfig],
        resolver: Arc<SipResolver>,
        probe_interval: Duration,
    ) -> Result<TrunkTable, TrunkError> {
        let mut trunks = Vec::with_capacity(configs.len());
        for c in configs {
            let target = if c.contact == BUILTIN_IVR {
                TrunkTarget::BuiltinIvr
            } else {
                TrunkTarget::Sip(SipTarget::parse(&c.contact).map_err(|reason| {
                    TrunkError::BadContact {
                        name: c.name.clone(),
                        contact: c.contact.clone(),
                        reason,
                    }
                })?)
            };
            let t = Trunk {
                config: c.clone(),
                target,
                health: Mutex::new(Health {
                    in_service: true,
                    last_probe: None,
                    records: Vec::new(),
                }),
                resolver: resolver.clone(),
                dns_logged: Mutex::new(None),
                dns_log_window: probe_interval,
            };
            t.publish();
            trunks.push(Arc::new(t));
        }
        Ok(TrunkTable { trunks })
    }

    /// The trunks that may carry a call to `user`, preferred first: those with the longest
    /// matching prefix, in configuration order, then the other members of their groups, in
    /// configuration order. Empty: no trunk matches (404).
    pub fn candidates(&self, user: &str) -> Vec<Arc<Trunk>> {
        let Some(best) = self.route_prefix(user) else {
            return Vec::new();
        };
        let mut out: Vec<Arc<Trunk>> = self
            .trunks
            .iter()
            .filter(|t| t.config.prefix == best)
            .cloned()
            .collect();
        let groups: Vec<String> = out.iter().filter_map(|t| t.config.group.clone()).collect();
        for t in &self.trunks {
            let member = t.config.group.as_ref().is_some_and(|g| groups.contains(g));
            if member && !out.iter().any(|o| Arc::ptr_eq(o, t)) {
                out.push(t.clone());
            }
        }
        out
    }

    /// The longest trunk prefix that `user` starts with: the route a call to `user` takes
    /// (its first trunks are those of this prefix). `None`: no trunk carries it.
    pub fn route_prefix(&self, user: &str) -> Option<&str> {
        self.trunks
            .iter()
            .map(|t| t.config.prefix.as_str())
            .filter(|p| user.starts_with(p))
            .max_by_key(|p| p.len())
    }

    pub fn states(&self) -> Vec<TrunkState> {
        self.trunks
            .iter()
            .map(|t| {
                let h = t.health.lock().clone();
                TrunkState {
                    name: t.config.name.clone(),
                    contact: t.config.contact.clone(),
                    prefix: t.config.prefix.clone(),
                    group: t.config.group.clone(),
                    in_service: h.in_service,
                    last_probe: h.last_probe,
                    records: h
                        .records
                        .iter()
                        .map(|(c, ok, r)| RecordState {
                            address: c.to_string(),
                            in_service: *ok,
                            last_probe: r.clone(),
                        })
                        .collect(),
                }
            })
            .collect()
    }

    /// Starts one OPTIONS prober per external trunk; they stop when `stop` turns true.
    pub fn spawn_health_checks(
        &self,
        ep: Endpoint,
        interval: Duration,
        stop: watch::Receiver<bool>,
    ) -> Vec<JoinHandle<()>> {
        let interval = interval.max(Duration::from_millis(50));
        self.trunks
            .iter()
            .filter_map(|t| match &t.target {
                TrunkTarget::Sip(target) => Some(tokio::spawn(probe_loop(
                    ep.clone(),
                    t.clone(),
                    target.clone(),
                    interval,
                    stop.clone(),
                ))),
                TrunkTarget::BuiltinIvr => None,
            })
            .collect()
    }
}

async fn probe_loop(
    ep: Endpoint,
    trunk: Arc<Trunk>,
    target: SipTarget,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let started = tokio::time::Instant::now();
        match trunk.resolver.resolve(&target.destination()).await {
            Err(e) => trunk.dns_failed(&e),
            Ok(records) => {
                let probes = records
                    .iter()
                    .map(|r| probe_once(&ep, &trunk, &target, *r, interval));
                let results = futures::future::join_all(probes).await;
                trunk.record_round(records.into_iter().zip(results).collect());
            }
        }
        tokio::select! {
            _ = tokio::time::sleep_until(started + interval) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// One probe of one record: the final status, or why there is none. The client transaction
/// keeps running to its own Timer F when we stop waiting at `timeout`; its late answer is
/// ignored (the next probe's counts), so at most Timer F / interval probes are in flight per
/// dead record.
async fn probe_once(
    ep: &Endpoint,
    trunk: &Trunk,
    target: &SipTarget,
    record: Candidate,
    timeout: Duration,
) -> Result<u16, String> {
    // Each probe is a request of its own (new Call-ID and tag, §8.1.1.4), not a dialog; its
    // Max-Forwards is the trunk's `oos-options-max-forwards` (1: an SBC answers itself).
    let uri = target.uri("");
    let req = RequestBuilder::new(rsip::Method::Options, &uri)
        .from(&format!("<sip:sipdm@{}>", ep.local_addr()))
        .max_forwards(u32::from(trunk.config.oos_options_max_forwards))
        .header("Accept", "application/sdp")
        .header("User-Agent", "sipdm")
        .build()
        .map_err(|e| format!("could not build OPTIONS: {e}"))?;
    let send = ep.send_request(req, Target::Address(record.protocol, record.addr));
    match tokio::time::timeout(timeout, send).await {
        Ok(Ok(resp)) => Ok(resp.status_code.code()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timeout".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trunk(name: &str, prefix: &str, contact: &str) -> TrunkConfig {
        TrunkConfig {
            name: name.into(),
            prefix: prefix.into(),
            contact: contact.into(),
            oos_options_max_forwards: 70,
            oosp_transfer_enabled: false,
            group: None,
        }
    }

    #[test]
    fn contacts() {
        let t = SipTarget::parse("sip:10.0.0.9:5070;transport=tcp").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.transport),
            ("10.0.0.9", Some(5070), Some(Protocol::Tcp))
        );
        assert_eq!(t.uri("8800"), "sip:8800@10.0.0.9:5070;transport=tcp");
        let t = SipTarget::parse("sip:ivr@ms.example:5080").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.transport),
            ("ms.example", Some(5080), None)
        );
        assert_eq!(t.uri(""), "sip:ms.example:5080");
        let t = SipTarget::parse("sip:[::1]").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("[::1]", None));
        assert_eq!(t.destination().host, "::1");
        let t = SipTarget::parse("sips:ivr.example.test").unwrap();
        assert_eq!(t.uri("8800"), "sips:8800@ivr.example.test");
        assert!(t.destination().secure);
        assert!(SipTarget::parse("sip:host:port").is_err());
        assert!(SipTarget::parse("sip:host;transport=sctp").is_err());
        assert!(SipTarget::parse("http://x").is_err());
    }

    fn grouped(name: &str, prefix: &str, contact: &str, group: &str) -> TrunkConfig {
        TrunkConfig {
            group: Some(group.into()),
            ..trunk(name, prefix, contact)
        }
    }

    #[test]
    fn a_group_fails_over_to_its_other_members() {
        let resolver = Arc::new(SipResolver::new(&["127.0.0.1:9".parse().unwrap()]));
        let table = TrunkTable::new(
            &[
                grouped("ms", "8800", "sip:10.0.0.1", "gcti_provisioning"),
                trunk("sbc", "9", "sip:10.0.0.2"),
                grouped("ms-peer", "8800", "sip:10.0.0.3", "gcti_provisioning"),
                trunk("other", "88", "sip:10.0.0.4"),
                grouped("ivr", "88", BUILTIN_IVR, "gcti_provisioning"),
                grouped("sbc2", "7", "sip:10.0.0.5", "phones"),
            ],
            resolver,
            Duration::from_secs(5),
        )
        .unwrap();
        let names = |u: &str| {
            table
                .candidates(u)
                .iter()
                .map(|t| t.config.name.clone())
                .collect::<Vec<_>>()
        };
        // The longest prefix first, then the rest of its group (not `other`: no group).
        assert_eq!(names("8800"), ["ms", "ms-peer", "ivr"]);
        // 8812 is the 88 trunks' own; `ivr` brings its group along.
        assert_eq!(names("8812"), ["other", "ivr", "ms", "ms-peer"]);
        assert_eq!(names("9000"), ["sbc"]);
        assert_eq!(names("7000"), ["sbc2"]);
        let states = table.states();
        assert_eq!(states[0].group.as_deref(), Some("gcti_provisioning"));
        assert_eq!(states[1].group, None);
    }

    #[test]
    fn longest_prefix_then_config_order() {
        let resolver = Arc::new(SipResolver::new(&["127.0.0.1:9".parse().unwrap()]));
        let table = TrunkTable::new(
            &[
                trunk("short", "8", "sip:10.0.0.1"),
                trunk("preferred", "88", "sip:10.0.0.2"),
                trunk("peer", "88", "sip:10.0.0.3"),
                trunk("other", "89", BUILTIN_IVR),
            ],
            resolver,
            Duration::from_secs(5),
        )
        .unwrap();
        let names = |u: &str| {
            table
                .candidates(u)
                .iter()
                .map(|t| t.config.name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(names("8800"), ["preferred", "peer"]);
        assert_eq!(names("8100"), ["short"]);
        assert_eq!(names("8900"), ["other"]);
        assert!(names("1000").is_empty());
    }
}
