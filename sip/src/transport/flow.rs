//! Flows: which socket or connection a message used, and the table of live stream (TCP and
//! TLS) connections.
//!
//! RFC 5626 and common NAT practice: a request to a registered contact must go down the flow
//! its REGISTER arrived on (the only path through the phone's NAT or firewall). The registrar
//! stores the [`Flow`] with each binding; this table says whether that flow is still alive.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::mpsc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Udp,
    Tcp,
    /// SIP over TLS (RFC 3261 §26.2, port 5061): a TCP connection carrying TLS, framed like
    /// TCP. Only connections that peers open to us exist; sipdm opens no TLS connections.
    Tls,
}

impl Protocol {
    /// The Via transport token.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Udp => "UDP",
            Protocol::Tcp => "TCP",
            Protocol::Tls => "TLS",
        }
    }

    /// RFC 3261 §17: on a reliable transport a transaction neither retransmits (timers A, E,
    /// G) nor waits for retransmissions (timers D, I, J, K are zero).
    pub fn is_reliable(self) -> bool {
        matches!(self, Protocol::Tcp | Protocol::Tls)
    }

    /// A connection-oriented transport: messages are framed by Content-Length and a flow is
    /// one connection (id in [`Flow::conn`]).
    pub fn is_stream(self) -> bool {
        matches!(self, Protocol::Tcp | Protocol::Tls)
    }

    pub fn parse(s: &str) -> Option<Protocol> {
        match s.to_ascii_uppercase().as_str() {
            "UDP" => Some(Protocol::Udp),
            "TCP" => Some(Protocol::Tcp),
            "TLS" => Some(Protocol::Tls),
            _ => None,
        }
    }
}

/// One path to a peer: our socket, theirs, and for TCP and TLS the connection id (0 for UDP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Flow {
    pub protocol: Protocol,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub conn: u64,
}

impl Flow {
    pub fn udp(local: SocketAddr, remote: SocketAddr) -> Flow {
        Flow {
            protocol: Protocol::Udp,
            local,
            remote,
            conn: 0,
        }
    }

    /// A stable text form (`udp:LOCAL;REMOTE` / `tcp:LOCAL;REMOTE;ID` / `tls:LOCAL;REMOTE;ID`),
    /// for storage and logs.
    pub fn token(&self) -> String {
        use crate::text::push_socket_addr;
        let mut out = String::with_capacity(64);
        out.push_str(match self.protocol {
            Protocol::Udp => "udp:",
            Protocol::Tcp => "tcp:",
            Protocol::Tls => "tls:",
        });
        push_socket_addr(&mut out, self.local);
        out.push(';');
        push_socket_addr(&mut out, self.remote);
        if self.protocol != Protocol::Udp {
            out.push(';');
            out.push_str(&self.conn.to_string());
        }
        out
    }

    pub fn from_token(s: &str) -> Option<Flow> {
        let (proto, rest) = s.split_once(':')?;
        let mut it = rest.split(';');
        let local = it.next()?.parse().ok()?;
        let remote = it.next()?.parse().ok()?;
        let protocol = match proto {
            "udp" => return Some(Flow::udp(local, remote)),
            "tcp" => Protocol::Tcp,
            "tls" => Protocol::Tls,
            _ => return None,
        };
        Some(Flow {
            protocol,
            local,
            remote,
            conn: it.next()?.parse().ok()?,
        })
    }
}

/// Sending half of a live TCP or TLS connection.
#[derive(Clone, Debug)]
pub struct ConnSender {
    pub flow: Flow,
    tx: mpsc::Sender<Bytes>,
}

impl ConnSender {
    /// Queues `data`; gives it back when the peer is not reading (bounded queue) or the
    /// connection ended.
    pub fn try_send(&self, data: Bytes) -> Result<(), Bytes> {
        self.tx.try_send(data).map_err(|e| match e {
            tokio::sync::mpsc::error::TrySendError::Full(d)
            | tokio::sync::mpsc::error::TrySendError::Closed(d) => d,
        })
    }
}

pub struct FlowTable {
    next_id: AtomicU64,
    conns: Mutex<Tables>,
}

impl Default for FlowTable {
    /// Connection ids start from the clock so that flows stored with bindings by an earlier
    /// run (or another instance) never name one of this run's connections.
    fn default() -> Self {
        let base = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(1)
            << 8;
        FlowTable {
            next_id: AtomicU64::new(base),
            conns: Mutex::new(Tables::default()),
        }
    }
}

#[derive(Default)]
struct Tables {
    by_id: HashMap<u64, ConnSender>,
    /// Keyed by protocol too: a phone may use one source port for its TCP connection to 5060
    /// and its TLS connection to 5061, and the two must not be confused.
    by_remote: HashMap<(Protocol, SocketAddr), u64>,
}

impl FlowTable {
    pub fn next_conn_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn insert(&self, flow: Flow, tx: mpsc::Sender<Bytes>) {
        let mut t = self.conns.lock();
        t.by_remote.insert((flow.protocol, flow.remote), flow.conn);
        t.by_id.insert(flow.conn, ConnSender { flow, tx });
    }

    pub fn remove(&self, flow: &Flow) {
        let mut t = self.conns.lock();
        t.by_id.remove(&flow.conn);
        let key = (flow.protocol, flow.remote);
        if t.by_remote.get(&key) == Some(&flow.conn) {
            t.by_remote.remove(&key);
        }
    }

    pub fn sender(&self, conn: u64) -> Option<ConnSender> {
        if conn == 0 {
            return None;
        }
        self.conns.lock().by_id.get(&conn).cloned()
    }

    /// The live connection of `flow`, if it is still the same peer over the same protocol.
    pub fn sender_for(&self, flow: &Flow) -> Option<ConnSender> {
        self.sender(flow.conn)
            .filter(|c| c.flow.remote == flow.remote && c.flow.protocol == flow.protocol)
    }

    /// The live `protocol` connection with `remote`, if any.
    pub fn by_remote(&self, protocol: Protocol, remote: SocketAddr) -> Option<Flow> {
        let t = self.conns.lock();
        t.by_remote
            .get(&(protocol, remote))
            .and_then(|id| t.by_id.get(id))
            .map(|c| c.flow)
    }

    /// Whether a flow can still carry messages (UDP always can).
    pub fn is_alive(&self, flow: &Flow) -> bool {
        match flow.protocol {
            Protocol::Udp => true,
            Protocol::Tcp | Protocol::Tls => self.sender_for(flow).is_some(),
        }
    }

    pub fn len(&self) -> usize {
        self.conns.lock().by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every sender so writer tasks end.
    pub fn close_all(&self) {
        let mut t = self.conns.lock();
        t.by_id.clear();
        t.by_remote.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trip() {
        let f = Flow {
            protocol: Protocol::Tcp,
            local: "[::1]:5060".parse().unwrap(),
            remote: "[::1]:40000".parse().unwrap(),
            conn: 7,
        };
        assert_eq!(Flow::from_token(&f.token()), Some(f));
        let u = Flow::udp(
            "1.2.3.4:5060".parse().unwrap(),
            "5.6.7.8:5060".parse().unwrap(),
        );
        assert_eq!(Flow::from_token(&u.token()), Some(u));
        let t = Flow {
            protocol: Protocol::Tls,
            ..f
        };
        assert_eq!(t.token(), "tls:[::1]:5060;[::1]:40000;7");
        assert_eq!(Flow::from_token(&t.token()), Some(t));
        assert_eq!(Flow::from_token("garbage"), None);
    }

    #[test]
    fn tls_is_a_reliable_stream_like_tcp() {
        assert_eq!(Protocol::parse("tls"), Some(Protocol::Tls));
        assert_eq!(Protocol::Tls.as_str(), "TLS");
        assert!(Protocol::Tls.is_reliable() && Protocol::Tls.is_stream());
        assert!(!Protocol::Udp.is_reliable() && !Protocol::Udp.is_stream());
    }

    #[test]
    fn tcp_and_tls_from_one_remote_are_two_flows() {
        let table = FlowTable::default();
        let remote: SocketAddr = "10.0.0.7:5060".parse().unwrap();
        let mk = |protocol, port| Flow {
            protocol,
            local: SocketAddr::from(([10, 0, 0, 1], port)),
            remote,
            conn: table.next_conn_id(),
        };
        let (tcp, tls) = (mk(Protocol::Tcp, 5060), mk(Protocol::Tls, 5061));
        let (tx1, _rx1) = mpsc::channel(1);
        let (tx2, _rx2) = mpsc::channel(1);
        table.insert(tcp, tx1);
        table.insert(tls, tx2);
        assert_eq!(table.by_remote(Protocol::Tcp, remote), Some(tcp));
        assert_eq!(table.by_remote(Protocol::Tls, remote), Some(tls));
        // A flow read back with the wrong protocol does not reach the other connection.
        assert!(!table.is_alive(&Flow {
            protocol: Protocol::Tcp,
            ..tls
        }));
        table.remove(&tls);
        assert!(!table.is_alive(&tls) && table.is_alive(&tcp));
        assert_eq!(table.by_remote(Protocol::Tls, remote), None);
    }
}
