//! Flows: which socket or connection a message used, and the table of live TCP connections.
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
}

impl Protocol {
    /// The Via transport token.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Udp => "UDP",
            Protocol::Tcp => "TCP",
        }
    }

    pub fn is_reliable(self) -> bool {
        matches!(self, Protocol::Tcp)
    }

    pub fn parse(s: &str) -> Option<Protocol> {
        match s.to_ascii_uppercase().as_str() {
            "UDP" => Some(Protocol::Udp),
            "TCP" => Some(Protocol::Tcp),
            _ => None,
        }
    }
}

/// One path to a peer: our socket, theirs, and for TCP the connection id (0 for UDP).
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

    /// A stable text form (`udp:LOCAL;REMOTE` / `tcp:LOCAL;REMOTE;ID`), for storage and logs.
    pub fn token(&self) -> String {
        match self.protocol {
            Protocol::Udp => format!("udp:{};{}", self.local, self.remote),
            Protocol::Tcp => format!("tcp:{};{};{}", self.local, self.remote, self.conn),
        }
    }

    pub fn from_token(s: &str) -> Option<Flow> {
        let (proto, rest) = s.split_once(':')?;
        let mut it = rest.split(';');
        let local = it.next()?.parse().ok()?;
        let remote = it.next()?.parse().ok()?;
        match proto {
            "udp" => Some(Flow::udp(local, remote)),
            "tcp" => Some(Flow {
                protocol: Protocol::Tcp,
                local,
                remote,
                conn: it.next()?.parse().ok()?,
            }),
            _ => None,
        }
    }
}

/// Sending half of a live TCP connection.
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
    by_remote: HashMap<SocketAddr, u64>,
}

impl FlowTable {
    pub fn next_conn_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn insert(&self, flow: Flow, tx: mpsc::Sender<Bytes>) {
        let mut t = self.conns.lock();
        t.by_remote.insert(flow.remote, flow.conn);
        t.by_id.insert(flow.conn, ConnSender { flow, tx });
    }

    pub fn remove(&self, flow: &Flow) {
        let mut t = self.conns.lock();
        t.by_id.remove(&flow.conn);
        if t.by_remote.get(&flow.remote) == Some(&flow.conn) {
            t.by_remote.remove(&flow.remote);
        }
    }

    pub fn sender(&self, conn: u64) -> Option<ConnSender> {
        if conn == 0 {
            return None;
        }
        self.conns.lock().by_id.get(&conn).cloned()
    }

    /// The live connection of `flow`, if it is still the same peer.
    pub fn sender_for(&self, flow: &Flow) -> Option<ConnSender> {
        self.sender(flow.conn)
            .filter(|c| c.flow.remote == flow.remote)
    }

    pub fn by_remote(&self, remote: SocketAddr) -> Option<Flow> {
        let t = self.conns.lock();
        t.by_remote
            .get(&remote)
            .and_then(|id| t.by_id.get(id))
            .map(|c| c.flow)
    }

    /// Whether a flow can still carry messages (UDP always can).
    pub fn is_alive(&self, flow: &Flow) -> bool {
        match flow.protocol {
            Protocol::Udp => true,
            Protocol::Tcp => self
                .conns
                .lock()
                .by_id
                .get(&flow.conn)
                .is_some_and(|c| c.flow.remote == flow.remote),
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
        assert_eq!(Flow::from_token("garbage"), None);
    }
}
