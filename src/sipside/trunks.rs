//! The trunk table: which trunk carries a dialled number, and whether each trunk is in
//! service.
//!
//! * Routing: the trunks whose `prefix` is the longest prefix of the Request-URI user carry
//!   the call; among trunks with that same prefix, configuration order is preference (the
//!   business-continuity "preferred, then peer").
//! * Health: every external trunk is probed with an out-of-dialog OPTIONS (RFC 3261 §11) each
//!   `[sip] trunk-options-interval-ms`, with the trunk's `oos-options-max-forwards` as the
//!   probe's Max-Forwards (1 makes an SBC answer for itself instead of asking the far end). A
//!   probe answered 5xx, or not answered within the interval, puts the trunk out of service;
//!   the next answered probe (any status below 500: a 404 or 405 still proves the peer is up)
//!   brings it back. `builtin:ivr` is always in service.
//! * The states are exported as `sipdm_trunk_in_service{trunk="…"}` (1 or 0) and through
//!   [`TrunkTable::states`] for the admin API.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;
use sip::headers::new_tag;
use sip::rsip;
use sip::transport::Protocol;
use sip::{Endpoint, Target};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::TrunkConfig;

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
    #[error("trunk `{name}`: cannot resolve `{host}`: {source}")]
    Resolve {
        name: String,
        host: String,
        source: std::io::Error,
    },
    #[error("trunk `{name}`: `{host}` has no address")]
    NoAddress { name: String, host: String },
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
    pub port: u16,
    pub protocol: Protocol,
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
        let mut protocol = if scheme == "sips" {
            Protocol::Tcp
        } else {
            Protocol::Udp
        };
        for p in parts {
            if let Some((k, v)) = p.split_once('=') {
                if k.trim().eq_ignore_ascii_case("transport") {
                    protocol = Protocol::parse(v.trim()).ok_or("transport must be udp or tcp")?;
                }
            }
        }
        Ok(SipTarget {
            scheme,
            host,
            port: port.unwrap_or(5060),
            protocol,
        })
    }

    /// The URI of a request to `user` on this trunk (`sip:8800@10.0.0.9:5070;transport=tcp`),
    /// or of the trunk itself when `user` is empty (OPTIONS probes).
    pub fn uri(&self, user: &str) -> String {
        let at = if user.is_empty() {
            String::new()
        } else {
            format!("{user}@")
        };
        let transport = match self.protocol {
            Protocol::Tcp if self.scheme == "sip" => ";transport=tcp",
            _ => "",
        };
        format!("{}:{at}{}:{}{transport}", self.scheme, self.host, self.port)
    }

    /// The address to send to: the literal IP, or the first A/AAAA record of the host (no
    /// RFC 3263 NAPTR/SRV here: trunks name their port).
    pub async fn resolve(&self, name: &str) -> Result<SocketAddr, TrunkError> {
        let bare = self.host.trim_matches(['[', ']']);
        if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
            return Ok(SocketAddr::new(ip, self.port));
        }
        let mut addrs = tokio::net::lookup_host((bare, self.port))
            .await
            .map_err(|source| TrunkError::Resolve {
                name: name.to_owned(),
                host: self.host.clone(),
                source,
            })?;
        addrs.next().ok_or_else(|| TrunkError::NoAddress {
            name: name.to_owned(),
            host: self.host.clone(),
        })
    }
}

#[derive(Debug, Clone)]
struct Health {
    in_service: bool,
    last_probe: Option<String>,
}

/// One configured trunk and its health.
#[derive(Debug)]
pub struct Trunk {
    pub config: TrunkConfig,
    pub target: TrunkTarget,
    health: Mutex<Health>,
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
        metrics::gauge!("sipdm_trunk_in_service", "trunk" => self.config.name.clone()).set(v);
    }
}

/// A trunk's state as the admin API and metrics show it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TrunkState {
    pub name: String,
    pub contact: String,
    pub prefix: String,
    pub group: Option<String>,
    pub in_service: bool,
    /// `200`, `503`, `timeout`, `INVITE timeout`, … (`None`: not probed yet).
    pub last_probe: Option<String>,
}

pub struct TrunkTable {
    trunks: Vec<Arc<Trunk>>,
}

impl TrunkTable {
    /// Takes the configured trunks apart. Every trunk starts in service: a call arriving before
    /// the first probe is answered still goes to the preferred trunk, and fails over on its own
    /// (Timer B or 503) if that trunk is down.
    pub fn new(configs: &[TrunkConfig]) -> Result<TrunkTable, TrunkError> {
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
                }),
            };
            t.publish();
            trunks.push(Arc::new(t));
        }
        Ok(TrunkTable { trunks })
    }

    /// The trunks that may carry a call to `user`, preferred first: those with the longest
    /// matching prefix, in configuration order. Empty: no trunk matches (404).
    pub fn candidates(&self, user: &str) -> Vec<Arc<Trunk>> {
        let Some(best) = self
            .trunks
            .iter()
            .filter(|t| user.starts_with(&t.config.prefix))
            .map(|t| t.config.prefix.len())
            .max()
        else {
            return Vec::new();
        };
        self.trunks
            .iter()
            .filter(|t| t.config.prefix.len() == best && user.starts_with(&t.config.prefix))
            .cloned()
            .collect()
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
        match probe_once(&ep, &trunk, &target, interval).await {
            Ok(code) if code < 500 => trunk.record(true, code.to_string()),
            Ok(code) => trunk.record(false, code.to_string()),
            Err(reason) => trunk.record(false, reason),
        }
        tokio::select! {
            _ = tokio::time::sleep_until(started + interval) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// One probe: the final status, or why there is none. The client transaction keeps running
/// to its own Timer F when we stop waiting at `timeout`; its late answer is ignored (the next
/// probe's counts), so at most Timer F / interval probes are in flight per dead trunk.
async fn probe_once(
    ep: &Endpoint,
    trunk: &Trunk,
    target: &SipTarget,
    timeout: Duration,
) -> Result<u16, String> {
    // Each probe is a request of its own (new Call-ID, §8.1.1.4), not a dialog.
    let call_id = format!("{}@sipdm-options", new_tag());
    let from_tag = new_tag();
    let addr = target
        .resolve(&trunk.config.name)
        .await
        .map_err(|e| e.to_string())?;
    let uri = target.uri("");
    let local = ep.local_addr();
    let text = format!(
        "OPTIONS {uri} SIP/2.0\r\nMax-Forwards: {mf}\r\nFrom: <sip:sipdm@{local}>;tag={from_tag}\r\nTo: <{uri}>\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nAccept: application/sdp\r\nUser-Agent: sipdm\r\nContent-Length: 0\r\n\r\n",
        mf = trunk.config.oos_options_max_forwards,
    );
    let req = rsip::Request::try_from(text.as_str())
        .map_err(|e| format!("could not build OPTIONS: {e}"))?;
    let send = ep.send_request(req, Target::Address(target.protocol, addr));
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
            (t.host.as_str(), t.port, t.protocol),
            ("10.0.0.9", 5070, Protocol::Tcp)
        );
        assert_eq!(t.uri("8800"), "sip:8800@10.0.0.9:5070;transport=tcp");
        let t = SipTarget::parse("sip:ivr@ms.example:5080").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.protocol),
            ("ms.example", 5080, Protocol::Udp)
        );
        assert_eq!(t.uri(""), "sip:ms.example:5080");
        let t = SipTarget::parse("sip:[::1]").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("[::1]", 5060));
        assert!(SipTarget::parse("sip:host:port").is_err());
        assert!(SipTarget::parse("sip:host;transport=sctp").is_err());
        assert!(SipTarget::parse("http://x").is_err());
    }

    #[test]
    fn longest_prefix_then_config_order() {
        let table = TrunkTable::new(&[
            trunk("short", "8", "sip:10.0.0.1"),
            trunk("preferred", "88", "sip:10.0.0.2"),
            trunk("peer", "88", "sip:10.0.0.3"),
            trunk("other", "89", BUILTIN_IVR),
        ])
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
