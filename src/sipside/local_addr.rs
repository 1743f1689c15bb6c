//! This end's address as a peer sees it: for the SDP of the built-in IVR, the Contact of its
//! dialogs and of the B2BUA's, and the Via of requests the B2BUA sends. Used by [`super::calls`]
//! and [`super::b2bua`] alike, so neither needs the other for it.

use std::net::{IpAddr, Ipv6Addr, SocketAddr, UdpSocket};

use sip::transport::Flow;
use sip::Endpoint;

/// The address RTP is offered on: the one the INVITE reached.
pub(super) fn local_ip(ep: &Endpoint, flow: &Flow) -> IpAddr {
    let ip = flow.local.ip();
    if ip.is_unspecified() {
        let a = ep.local_addr().ip();
        if a.is_unspecified() {
            IpAddr::from([127, 0, 0, 1])
        } else {
            a
        }
    } else {
        ip
    }
}

/// The local address requests to `remote` leave from: the bound address of its family, or,
/// when that is a wildcard, the address the routing table picks for `remote`.
pub(super) fn local_ip_for(ep: &Endpoint, remote: SocketAddr) -> IpAddr {
    let bound = ep
        .local_addrs()
        .into_iter()
        .find(|a| a.is_ipv4() == remote.is_ipv4())
        .unwrap_or_else(|| ep.local_addr());
    if !bound.ip().is_unspecified() {
        return bound.ip();
    }
    let any: SocketAddr = if remote.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    UdpSocket::bind(any)
        .and_then(|s| s.connect(remote).and_then(|_| s.local_addr()))
        .map(|a| a.ip())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]))
}

/// `ip:port` (IPv6 in brackets) of this end of `flow`, for a Contact header.
pub(super) fn contact_host(ep: &Endpoint, flow: &Flow) -> String {
    let ip = local_ip(ep, flow);
    let port = if flow.local.port() != 0 {
        flow.local.port()
    } else {
        ep.local_addr().port()
    };
    match ip {
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
        v4 => format!("{v4}:{port}"),
    }
}
