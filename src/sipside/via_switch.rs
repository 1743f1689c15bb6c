//! Check-sync for a phone registered on a switch rather than on sipdm.
//!
//! sipdm holds no binding for such a phone; the switch does. The NOTIFY goes to the switch as
//! an out-of-dialog request for the phone's AOR — `dm-<mac>` while the phone is on the default
//! profile (the shipped Kamailio recipe saves unassigned phones under their auth user), its DN
//! once it registered as that — and the switch forwards it to the registered contact
//! (`lookup("location")`). A 404 or 480 means "not registered here": the next AOR, then the
//! next switch, is tried. A switch that does not answer is remembered as down for a while, so
//! that the next phone does not wait for it first, and that is logged once per switch and
//! window.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use sip::transport::Protocol;
use sip::{Endpoint, Target};

use super::checksync::{
    credentials_of, event_for, notify, record, CheckSyncError, CheckSyncReport, Identity, Route,
};
use crate::config::{CheckSyncRoute, SwitchConfig};
use crate::service::{parse_server, Dm};
use crate::store::model::Device;

/// How long one switch gets to answer before the next is tried (UDP retransmits at T1, 2·T1,
/// 4·T1 fit in it; a live switch answers a NOTIFY in milliseconds, relaying the phone's answer).
const SWITCH_WAIT: Duration = Duration::from_secs(4);
/// A switch that did not answer is tried last (and not logged again) for this long.
const DOWN_WINDOW: Duration = Duration::from_secs(30);

/// Switches that did not answer, by address, and since when. Process-wide on purpose: several
/// instances in one process (the tests) talking to one switch learn the same fact.
static DOWN: LazyLock<Mutex<HashMap<SocketAddr, Instant>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Sends the check-sync through the switches the device may be registered on.
pub async fn check_sync(
    dm: &Dm,
    ep: &Endpoint,
    device: &Device,
    actor: &str,
    me: &str,
) -> Result<CheckSyncReport, CheckSyncError> {
    let switches = switches_for(dm, device).await;
    if switches.is_empty() {
        return Err(CheckSyncError::NotRegistered(device.mac.clone()));
    }
    let event = event_for(dm, device).await;
    let mut aors = vec![Identity::Device(dm.credentials.auth_user(&device.mac))];
    if let Some(dn) = &device.dn {
        aors.push(Identity::Dn(dn.clone()));
    }
    let mut credentials = Vec::with_capacity(aors.len());
    for id in aors {
        credentials.push(credentials_of(dm, &device.mac, id).await);
    }
    let mut unanswered = Vec::new();
    let mut targets = Vec::new();
    for sw in &switches {
        match resolve(sw).await {
            Some(t) => targets.push((sw, t)),
            None => unanswered.push(format!("{}: address does not resolve", sw.name)),
        }
    }
    // Switches that answered lately first; one that is down is still tried, last.
    let now = Instant::now();
    let down_since = |addr: &SocketAddr| {
        DOWN.lock()
            .get(addr)
            .filter(|t| now.duration_since(**t) < DOWN_WINDOW)
            .is_some()
    };
    targets.sort_by_key(|(_, (addr, _, _))| down_since(addr));
    for (sw, (addr, protocol, host_port)) in targets {
        for (user, password) in &credentials {
            let uri = format!("sip:{user}@{host_port}");
            let sent = tokio::time::timeout(
                SWITCH_WAIT,
                notify(
                    ep,
                    &uri,
                    Target::Address(protocol, addr),
                    &event,
                    user,
                    password,
                ),
            )
            .await;
            match sent {
                Ok(Ok(status)) if status == 404 || status == 480 => {
                    tracing::debug!(mac = %device.mac, switch = %sw.name, aor = %uri, status, "not registered on this switch");
                    continue;
                }
                Ok(Ok(status)) => {
                    DOWN.lock().remove(&addr);
                    return record(
                        dm,
                        device,
                        &event,
                        &uri,
                        status,
                        &format!("{actor}, via switch {}", sw.name),
                        Route::ViaSwitch,
                        me,
                    )
                    .await;
                }
                Ok(Err(e)) => {
                    switch_down(sw, addr, &e.to_string());
                    unanswered.push(format!("{}: {e}", sw.name));
                    break;
                }
                Err(_) => {
                    switch_down(sw, addr, "no answer");
                    unanswered.push(format!("{}: no answer in {SWITCH_WAIT:?}", sw.name));
                    break;
                }
            }
        }
    }
    if unanswered.is_empty() {
        tracing::info!(mac = %device.mac, "check-sync: not registered on any switch");
        Err(CheckSyncError::NotRegistered(device.mac.clone()))
    } else {
        Err(CheckSyncError::Unreachable(unanswered.join("; ")))
    }
}

/// Logs a switch that did not answer once per window.
fn switch_down(sw: &SwitchConfig, addr: SocketAddr, why: &str) {
    let now = Instant::now();
    let mut down = DOWN.lock();
    let fresh = down
        .get(&addr)
        .is_none_or(|t| now.duration_since(*t) >= DOWN_WINDOW);
    if fresh {
        down.insert(addr, now);
        tracing::warn!(switch = %sw.name, %addr, why, "check-sync: switch does not answer; trying the next route (logged once per {DOWN_WINDOW:?})");
    }
}

/// The switches with `check-sync = "via-switch"` in the order the phone is likeliest on: its
/// DN's switch, that switch's business-continuity peer, then the rest as configured.
async fn switches_for<'a>(dm: &'a Dm, device: &Device) -> Vec<&'a SwitchConfig> {
    let mut out: Vec<&SwitchConfig> = dm
        .config
        .switches
        .iter()
        .filter(|s| s.check_sync == CheckSyncRoute::ViaSwitch)
        .collect();
    let home = match &device.dn {
        Some(dn) => match dm.store.dn(dn).await.ok().and_then(|d| d.switch) {
            Some(name) => Some(name),
            None => dm.config.switch_for_dn(dn).map(|s| s.name.clone()),
        },
        None => None,
    };
    if let Some(home) = home {
        let peer = dm
            .config
            .switches
            .iter()
            .find(|s| s.name == home)
            .and_then(|s| s.peer.clone());
        let rank = |s: &SwitchConfig| {
            if s.name == home {
                0
            } else if peer.as_deref() == Some(s.name.as_str()) {
                1
            } else {
                2
            }
        };
        out.sort_by_key(|s| rank(s));
    }
    out
}

/// The switch's address to send to, its transport, and `host:port` for the Request-URI.
async fn resolve(sw: &SwitchConfig) -> Option<(SocketAddr, Protocol, String)> {
    let server = parse_server(&sw.address)?;
    let protocol = Protocol::parse(&server.transport).unwrap_or(Protocol::Udp);
    let host_port = if server.host.contains(':') {
        format!("[{}]:{}", server.host, server.port)
    } else {
        format!("{}:{}", server.host, server.port)
    };
    let addr = match server.host.parse::<std::net::IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, server.port),
        Err(_) => tokio::net::lookup_host((server.host.as_str(), server.port))
            .await
            .ok()?
            .next()?,
    };
    Some((addr, protocol, host_port))
}
