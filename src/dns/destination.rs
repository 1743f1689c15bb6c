//! The two ends of a resolution: a SIP URI's host part in, candidates out.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use sip::rsip;
use sip::transport::Protocol;

/// What RFC 3263 §4 starts from: the URI's scheme, its host (the TARGET: `maddr` is not
/// supported), and the port and `transport` parameter when the URI names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// `sips:`: only TLS will do (§4.1).
    pub secure: bool,
    /// A domain name or a literal IP address (IPv6 without its brackets).
    pub host: String,
    pub port: Option<u16>,
    pub transport: Option<Protocol>,
}

impl Destination {
    /// The host as a literal address, if it is one.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.trim_matches(['[', ']']).parse().ok()
    }

    /// §4.1: the transport when the URI names none and no NAPTR/SRV record chose one: UDP for
    /// `sip:`, TLS for `sips:`.
    pub fn default_transport(&self) -> rsip::Transport {
        match (self.transport, self.secure) {
            (Some(p), _) => to_rsip(p),
            (None, false) => rsip::Transport::Udp,
            (None, true) => rsip::Transport::Tls,
        }
    }
}

/// One place to send a request to, in the order RFC 3263 says to try them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Candidate {
    pub protocol: Protocol,
    pub addr: SocketAddr,
}

impl fmt::Display for Candidate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.protocol.as_str())
    }
}

/// Our transport as rsip names it.
pub fn to_rsip(p: Protocol) -> rsip::Transport {
    p.as_str().parse().unwrap_or(rsip::Transport::Udp)
}

/// rsip's transport as ours, when the sip crate has it.
pub fn from_rsip(t: rsip::Transport) -> Option<Protocol> {
    Protocol::parse(&t.to_string())
}
