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

use super::notify::{
    credentials_of, event_for, notify, record, CheckSyncError, CheckSyncReport, Identity, Route,
};
use crate::config::{CheckSyncRoute, SwitchConfig};
use crate::domain::Transport;
use crate::service::Dm;
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
///
/// The AORs are tried in turn: `dm-<mac>` on the switches unassigned phones register to
/// (`[dm] sip-servers` first), then the DN on its own switch and that switch's peer first.
/// 404/480 from a switch means "not registered here"; any other refusal (the switch does not
/// trust this node, the phone refused) is kept as the answer unless a later switch delivers.
pub async fn check_sync(
    dm: &Dm,
    ep: &Endpoint,
    device: &Device,
    actor: &str,
    me: &str,
) -> Result<CheckSyncReport, CheckSyncError> {
    let via: Vec<&SwitchConfig> = dm
        .config
        .switches
        .iter()
        .filter(|s| s.check_sync == CheckSyncRoute::ViaSwitch)
        .collect();
    if via.is_empty() {
        return Err(CheckSyncError::NotRegistered(device.mac.clone()));
    }
    let mut resolved = Vec::new();
    let mut unanswered = Vec::new();
    for sw in via {
        match resolve(sw).await {
            Some(t) => resolved.push((sw, t)),
            None => unanswered.push(format!("{}: address does not resolve", sw.name)),
        }
    }
    let event = event_for(dm, device).await;
    let mut attempts = vec![(
        Identity::Device(dm.credentials.auth_user(&device.mac)),
        provisioning_order(dm, &resolved),
    )];
    if let Some(dn) = &device.dn {
        attempts.push((Identity::Dn(dn.clone()), dn_order(dm, dn, &resolved).await));
    }
    let mut silent: Vec<SocketAddr> = Vec::new();
    let mut refused: Option<(String, u16)> = None;
    for (identity, order) in attempts {
        let (user, password) = credentials_of(dm, &device.mac, identity).await;
        for i in order {
            let (sw, (addr, protocol, host_port)) = &resolved[i];
            if silent.contains(addr) {
                continue;
            }
            let uri = format!("sip:{user}@{host_port}");
            let target = Target::Address(*protocol, *addr);
            let sent = tokio::time::timeout(
                SWITCH_WAIT,
                notify(ep, &uri, target, &event, &user, &password),
            )
            .await;
            match sent {
                Ok(Ok(status)) if (200..300).contains(&status) => {
                    DOWN.lock().remove(addr);
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
                Ok(Ok(status)) if status == 404 || status == 480 => {
                    tracing::debug!(mac = %device.mac, switch = %sw.name, aor = %uri, status, "not registered on this switch");
                }
                Ok(Ok(status)) => {
                    tracing::info!(mac = %device.mac, switch = %sw.name, aor = %uri, status, "check-sync refused through this switch");
                    refused.get_or_insert((uri, status));
                }
                Ok(Err(e)) => {
                    switch_down(sw, *addr, &e.to_string());
                    unanswered.push(format!("{}: {e}", sw.name));
                    silent.push(*addr);
                }
                Err(_) => {
                    switch_down(sw, *addr, "no answer");
                    unanswered.push(format!("{}: no answer in {SWITCH_WAIT:?}", sw.name));
                    silent.push(*addr);
                }
            }
        }
    }
    if let Some((uri, status)) = refused {
        return record(
            dm,
            device,
            &event,
            &uri,
            status,
            &format!("{actor}, via switch"),
            Route::ViaSwitch,
            me,
        )
        .await;
    }
    if unanswered.is_empty() {
        tracing::info!(mac = %device.mac, "check-sync: not registered on any switch");
        Err(CheckSyncError::NotRegistered(device.mac.clone()))
    } else {
        Err(CheckSyncError::Unreachable(unanswered.join("; ")))
    }
}

type Resolved<'a> = (&'a SwitchConfig, (SocketAddr, Protocol, String));

/// Indices of `resolved` for the provisioning identity: the switches unassigned phones are
/// told to register to (`[dm] sip-servers`) first, then the others; a switch that did not
/// answer lately goes last.
fn provisioning_order(dm: &Dm, resolved: &[Resolved<'_>]) -> Vec<usize> {
    let listed = |sw: &SwitchConfig| {
        dm.config
            .dm
            .sip_servers
            .iter()
            .position(|s| *s == sw.address)
            .unwrap_or(usize::MAX)
    };
    let mut order: Vec<usize> = (0..resolved.len()).collect();
    order.sort_by_key(|&i| (is_down(&resolved[i].1 .0), listed(resolved[i].0)));
    order
}

/// Indices of `resolved` for the DN: its switch, that switch's business-continuity peer, then
/// the rest; a switch that did not answer lately goes last.
async fn dn_order(dm: &Dm, dn: &str, resolved: &[Resolved<'_>]) -> Vec<usize> {
    let home = match dm.store.dn(dn).await.ok().and_then(|d| d.switch) {
        Some(name) => Some(name),
        None => dm.config.switch_for_dn(dn).map(|s| s.name.clone()),
    };
    let peer = home.as_ref().and_then(|h| {
        dm.config
            .switches
            .iter()
            .find(|s| &s.name == h)
            .and_then(|s| s.peer.clone())
    });
    let rank = |sw: &SwitchConfig| {
        if home.as_deref() == Some(sw.name.as_str()) {
            0
        } else if peer.as_deref() == Some(sw.name.as_str()) {
            1
        } else {
            2
        }
    };
    let mut order: Vec<usize> = (0..resolved.len()).collect();
    order.sort_by_key(|&i| (is_down(&resolved[i].1 .0), rank(resolved[i].0)));
    order
}

fn is_down(addr: &SocketAddr) -> bool {
    DOWN.lock()
        .get(addr)
        .is_some_and(|t| t.elapsed() < DOWN_WINDOW)
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

/// The switch's address to send to, its transport, and `host:port` for the Request-URI.
async fn resolve(sw: &SwitchConfig) -> Option<(SocketAddr, Protocol, String)> {
    let server = &sw.address;
    let protocol = match server.transport {
        Transport::Udp => Protocol::Udp,
        Transport::Tcp => Protocol::Tcp,
        Transport::Tls => Protocol::Tls,
    };
    let host_port = server.host_port();
    let addr = match server.host.parse::<std::net::IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, server.port),
        Err(_) => tokio::net::lookup_host((server.host.as_str(), server.port))
            .await
            .ok()?
            .next()?,
    };
    Some((addr, protocol, host_port))
}
