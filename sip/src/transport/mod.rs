//! Transports: UDP and TCP on the same port, per listen address (IPv4 and IPv6), and TLS on
//! addresses of its own.
//!
//! * [`flow`] — [`Flow`] (which socket/connection a message used) and the table of live TCP
//!   and TLS connections, so a request to a registered contact goes down the flow its
//!   REGISTER used;
//! * [`udp`] — sockets and their receiver threads, which hand each datagram to a
//!   [`DatagramHandler`] on the thread that read it;
//! * [`stream`] — one established stream connection: reader with Content-Length framing and
//!   writer, generic over the byte stream;
//! * [`tcp`] — TCP accept loop and outgoing connections;
//! * [`tls`] — TLS accept loop and handshake (server side only; see there).
//!
//! The transport holds no transaction state: it hands datagrams to a [`DatagramHandler`],
//! reports stream traffic upward with [`TransportEvent`]s on a channel, and sends what it is
//! given ([`Transmit`]). Memory per peer is bounded by the
//! message size limit, the per-connection buffer limit and the writer queue length.

pub mod flow;
mod stream;
pub mod tcp;
pub mod tls;
pub mod udp;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

pub use flow::{Flow, FlowTable, Protocol};
pub use tls::TlsConfig;
pub use udp::DatagramHandler;

use crate::stats::Stats;
use crate::wire::WireError;
use crate::BoxFuture;

#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// Each address gets a UDP socket and a TCP listener on the same port. Port 0 picks a free
    /// port (the same one for UDP and TCP).
    pub listen: Vec<SocketAddr>,
    /// Largest message accepted (513 above it).
    pub max_message_size: usize,
    /// SIP over TLS listeners (none by default). Their connections share the TCP limits
    /// below.
    pub tls: Option<TlsConfig>,
    /// Most bytes buffered for one TCP or TLS connection before it is cut.
    pub max_tcp_buffer: usize,
    /// Most messages queued for sending on one TCP or TLS connection.
    pub tcp_send_queue: usize,
    /// Most TCP and TLS connections open at once.
    pub max_tcp_connections: usize,
    /// A TCP or TLS connection with no traffic for this long is closed.
    pub tcp_idle_timeout: Duration,
    /// SO_RCVBUF / SO_SNDBUF for UDP sockets. What waits in the receive buffer is what the
    /// receiver threads have not read yet; a datagram that finds it full is dropped by the
    /// kernel, unanswered. It should hold more than the overload queue delay's worth of
    /// traffic ([`crate::overload`]), so that sipdm answers 503 before the kernel drops.
    /// Linux doubles the size asked (its bookkeeping allowance) and charges each datagram's
    /// whole buffer against it (1 280 bytes for a 550-byte REGISTER on loopback): 8 MB asked
    /// hold about 13 000 REGISTERs, 330 ms at 40 000 messages a second, above the default
    /// 200 ms queue delay. It grants at most `net.core.rmem_max`; a smaller grant is forced
    /// where the process may (CAP_NET_ADMIN), else logged.
    pub udp_buffer: usize,
    /// Stream events queued towards each endpoint dispatcher before the reader waits.
    pub event_queue: usize,
    /// Receiver threads per UDP socket (0: one per core but one, and at least one). Each
    /// handles what it reads to the end, so one thread carries tens of thousands of messages
    /// a second; the core left over serves the store writer, HTTP and timers, which the
    /// UDP threads otherwise preempt (measured in BENCHMARKS.md).
    pub udp_threads: usize,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            listen: vec!["0.0.0.0:5060".parse().expect("static addr")],
            tls: None,
            max_message_size: 65_535,
            max_tcp_buffer: 131_072,
            tcp_send_queue: 1024,
            max_tcp_connections: 20_000,
            tcp_idle_timeout: Duration::from_secs(3600),
            udp_buffer: 8 << 20,
            event_queue: 4096,
            udp_threads: 0,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("send to {addr}: {source}")]
    Send {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("no socket for {0:?} to reach {1}")]
    NoRoute(Protocol, SocketAddr),
    #[error("connection to {0} is congested")]
    Congested(SocketAddr),
    #[error("connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

impl TransportError {
    /// RFC 3261 §8.1.3.1: a transport failure is treated like a 503.
    pub fn status(&self) -> u16 {
        503
    }
}

/// What the transport reports upward.
#[derive(Debug)]
pub enum TransportEvent {
    /// One framed message from a stream (not yet parsed).
    Message { data: Bytes, flow: Flow },
    /// A stream could not be framed; `head` holds what was buffered so a 400/513 can be tried.
    /// The connection is closed shortly after.
    StreamError {
        flow: Flow,
        error: WireError,
        head: Bytes,
    },
    /// A TCP or TLS connection ended.
    Closed { flow: Flow },
}

/// Sending, as the transaction layer sees it (tests substitute an in-memory implementation).
pub trait Transmit: Send + Sync + 'static {
    /// Sends `data` down `flow`. For a TCP flow whose connection is gone, a new connection to
    /// `flow.remote` is opened; the flow actually used is returned. A TLS flow whose
    /// connection is gone (and no other TLS connection from that remote) is
    /// [`TransportError::NoRoute`]: TLS connections are only accepted, never opened.
    fn transmit(&self, flow: Flow, data: Bytes) -> BoxFuture<'_, Result<Flow, TransportError>>;

    /// Sends at once if that needs no waiting (UDP socket with buffer room, live TCP
    /// connection with queue room); otherwise gives `data` back for [`Transmit::transmit`].
    /// Saves a task per response on the hot path.
    fn try_transmit(&self, flow: Flow, data: Bytes) -> Result<(), Bytes> {
        let _ = flow;
        Err(data)
    }
}

/// The running transports.
pub struct Transport {
    /// Each with its bound address, read once: asking the socket (`getsockname`) on every
    /// send was one extra system call per response.
    udp: Vec<udp::UdpSock>,
    tls_addrs: Vec<SocketAddr>,
    flows: Arc<FlowTable>,
    cfg: TransportConfig,
    events: EventSenders,
    stats: Arc<Stats>,
    shutdown: watch::Sender<bool>,
    /// Tells the UDP receiver threads to stop.
    udp_stop: Arc<AtomicBool>,
    udp_receivers: parking_lot::Mutex<Vec<std::thread::JoinHandle<()>>>,
}

/// The upward channels for stream traffic: one per endpoint dispatcher. A connection's
/// messages always use the same channel (chosen by its peer's address), so they are handled
/// in the order they arrived while different peers are handled in parallel.
#[derive(Clone, Debug)]
pub struct EventSenders(Arc<Vec<mpsc::Sender<TransportEvent>>>);

impl EventSenders {
    pub fn new(senders: Vec<mpsc::Sender<TransportEvent>>) -> Self {
        assert!(!senders.is_empty(), "at least one event channel");
        EventSenders(Arc::new(senders))
    }

    /// Events sent and not yet taken by a dispatcher, over every channel.
    pub fn queued(&self) -> usize {
        self.0
            .iter()
            .map(|s| s.max_capacity().saturating_sub(s.capacity()))
            .sum()
    }

    pub fn for_peer(&self, remote: SocketAddr) -> &mpsc::Sender<TransportEvent> {
        let n = self.0.len();
        if n == 1 {
            return &self.0[0];
        }
        let h = match remote.ip() {
            std::net::IpAddr::V4(ip) => u32::from(ip) as u64,
            std::net::IpAddr::V6(ip) => (u128::from(ip) as u64) ^ ((u128::from(ip) >> 64) as u64),
        };
        let h = (h ^ remote.port() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        &self.0[(h >> 32) as usize % n]
    }
}

impl Transport {
    /// Binds every listen address and starts accepting stream connections. Datagrams are
    /// read once [`Transport::start_udp`] names their handler.
    pub async fn bind(
        cfg: TransportConfig,
        events: EventSenders,
        stats: Arc<Stats>,
    ) -> Result<Arc<Transport>, TransportError> {
        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut udp = Vec::new();
        let mut listeners = Vec::new();
        for addr in &cfg.listen {
            let (sock, listener) = bind_pair(*addr, cfg.udp_buffer)?;
            let sock = udp::UdpSock::new(sock).map_err(|source| TransportError::Bind {
                addr: *addr,
                source,
            })?;
            udp.push(sock);
            listeners.push(listener);
        }
        let mut tls_listeners = Vec::new();
        let mut tls_addrs = Vec::new();
        for addr in cfg.tls.iter().flat_map(|c| &c.listen) {
            let l = bind_stream(*addr)?;
            tls_addrs.push(l.local_addr().unwrap_or(*addr));
            tls_listeners.push(l);
        }
        let t = Arc::new(Transport {
            udp,
            tls_addrs,
            flows: Arc::new(FlowTable::default()),
            cfg,
            events,
            stats,
            shutdown,
            udp_stop: Arc::new(AtomicBool::new(false)),
            udp_receivers: Default::default(),
        });
        for l in listeners {
            tokio::spawn(tcp::accept_loop(t.clone(), l, shutdown_rx.clone()));
        }
        if let Some(tls) = &t.cfg.tls {
            for l in tls_listeners {
                tokio::spawn(tls::accept_loop(
                    t.clone(),
                    l,
                    tls.clone(),
                    shutdown_rx.clone(),
                ));
            }
        }
        Ok(t)
    }

    /// Starts the receiver threads of every UDP socket, which hand datagrams to `handler`.
    /// Call once; must run inside the tokio runtime the handler uses.
    pub fn start_udp(&self, handler: Arc<dyn DatagramHandler>) -> Result<(), TransportError> {
        let threads = match self.cfg.udp_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1)),
            n => n,
        }
        .max(1);
        for sock in &self.udp {
            let handles = sock
                .spawn_receivers(
                    threads,
                    handler.clone(),
                    self.stats.clone(),
                    self.udp_stop.clone(),
                )
                .map_err(|source| TransportError::Bind {
                    addr: sock.local,
                    source,
                })?;
            self.udp_receivers.lock().extend(handles);
        }
        Ok(())
    }

    /// Waits for the UDP receiver threads to end after [`Transport::shutdown`]: each finishes
    /// the datagram in hand first, so whatever it changed is there to be flushed.
    pub async fn join_receivers(&self) {
        let handles = std::mem::take(&mut *self.udp_receivers.lock());
        let _ = tokio::task::spawn_blocking(move || {
            for h in handles {
                let _ = h.join();
            }
        })
        .await;
    }

    /// The bound UDP addresses (TCP listens on the same ones).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.udp.iter().map(|s| s.local).collect()
    }

    /// The bound TLS addresses (empty when TLS is off).
    pub fn tls_local_addrs(&self) -> Vec<SocketAddr> {
        self.tls_addrs.clone()
    }

    pub fn flows(&self) -> &FlowTable {
        &self.flows
    }

    pub fn config(&self) -> &TransportConfig {
        &self.cfg
    }

    /// Stops accepting and receiving; open connections close as their tasks notice.
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
        self.udp_stop.store(true, Ordering::Relaxed);
        self.flows.close_all();
    }

    /// The UDP socket bound to `local`, else the first of `remote`'s address family.
    fn udp_for(&self, local: Option<SocketAddr>, remote: SocketAddr) -> Option<&udp::UdpSock> {
        let by_local = local.and_then(|l| self.udp.iter().find(|s| s.local == l));
        by_local.or_else(|| {
            self.udp
                .iter()
                .find(|s| s.local.is_ipv4() == remote.is_ipv4())
        })
    }

    /// Sends to `remote` over `protocol`, reusing a live TCP or TLS connection to it if there
    /// is one.
    pub async fn send_to(
        self: &Arc<Self>,
        protocol: Protocol,
        remote: SocketAddr,
        data: Bytes,
    ) -> Result<Flow, TransportError> {
        let flow = match protocol {
            Protocol::Udp => Flow::udp(SocketAddr::new(unspecified(remote), 0), remote),
            Protocol::Tcp | Protocol::Tls => {
                self.flows.by_remote(protocol, remote).unwrap_or(Flow {
                    protocol,
                    local: SocketAddr::new(unspecified(remote), 0),
                    remote,
                    conn: 0,
                })
            }
        };
        self.send(flow, data).await
    }

    /// The live connection for `flow`: its own, else another of the same protocol with the
    /// same remote (the peer reconnected from the same address).
    fn live_conn(&self, flow: &Flow) -> Option<flow::ConnSender> {
        self.flows.sender_for(flow).or_else(|| {
            self.flows
                .by_remote(flow.protocol, flow.remote)
                .and_then(|f| self.flows.sender(f.conn))
        })
    }

    pub async fn send(self: &Arc<Self>, flow: Flow, data: Bytes) -> Result<Flow, TransportError> {
        match flow.protocol {
            Protocol::Udp => {
                let local = (flow.local.port() != 0).then_some(flow.local);
                let sock = self
                    .udp_for(local, flow.remote)
                    .ok_or(TransportError::NoRoute(Protocol::Udp, flow.remote))?;
                sock.send_to(&data, flow.remote)
                    .await
                    .map_err(|source| TransportError::Send {
                        addr: flow.remote,
                        source,
                    })?;
                Ok(Flow::udp(sock.local, flow.remote))
            }
            Protocol::Tls => {
                let conn = self
                    .live_conn(&flow)
                    .ok_or(TransportError::NoRoute(Protocol::Tls, flow.remote))?;
                conn.try_send(data)
                    .map(|_| conn.flow)
                    .map_err(|_| TransportError::Congested(flow.remote))
            }
            Protocol::Tcp => {
                if let Some(conn) = self.live_conn(&flow) {
                    return conn
                        .try_send(data)
                        .map(|_| conn.flow)
                        .map_err(|_| TransportError::Congested(flow.remote));
                }
                let flow = tcp::connect(self.clone(), flow.remote).await?;
                let conn = self
                    .flows
                    .sender(flow.conn)
                    .ok_or(TransportError::NoRoute(Protocol::Tcp, flow.remote))?;
                conn.try_send(data)
                    .map(|_| conn.flow)
                    .map_err(|_| TransportError::Congested(flow.remote))
            }
        }
    }
}

impl Transmit for Arc<Transport> {
    fn transmit(&self, flow: Flow, data: Bytes) -> BoxFuture<'_, Result<Flow, TransportError>> {
        Box::pin(async move { self.send(flow, data).await })
    }

    fn try_transmit(&self, flow: Flow, data: Bytes) -> Result<(), Bytes> {
        match flow.protocol {
            Protocol::Udp => {
                let local = (flow.local.port() != 0).then_some(flow.local);
                let Some(sock) = self.udp_for(local, flow.remote) else {
                    return Err(data);
                };
                match sock.try_send_to(&data, flow.remote) {
                    Ok(_) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Err(data),
                    Err(e) => {
                        // Unreachable peer and the like: what the async path would report too.
                        tracing::debug!(remote = %flow.remote, error = %e, "udp send failed");
                        self.stats
                            .send_errors
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        Ok(())
                    }
                }
            }
            Protocol::Tcp | Protocol::Tls => match self.flows.sender_for(&flow) {
                Some(conn) => conn.try_send(data),
                None => Err(data),
            },
        }
    }
}

fn unspecified(remote: SocketAddr) -> std::net::IpAddr {
    if remote.is_ipv4() {
        std::net::Ipv4Addr::UNSPECIFIED.into()
    } else {
        std::net::Ipv6Addr::UNSPECIFIED.into()
    }
}

/// Binds a TCP listener for TLS (a port of its own; port 0 picks a free one).
fn bind_stream(addr: SocketAddr) -> Result<TcpListener, TransportError> {
    use socket2::{Domain, Socket, Type};
    let mk_err = |source| TransportError::Bind { addr, source };
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let ts = Socket::new(domain, Type::STREAM, None).map_err(mk_err)?;
    if addr.is_ipv6() {
        let _ = ts.set_only_v6(true);
    }
    let _ = ts.set_reuse_address(true);
    ts.set_nonblocking(true).map_err(mk_err)?;
    ts.bind(&addr.into()).map_err(mk_err)?;
    ts.listen(1024).map_err(mk_err)?;
    TcpListener::from_std(ts.into()).map_err(mk_err)
}

/// Sets SO_RCVBUF to `want` bytes. Linux caps it at `net.core.rmem_max` (and reports twice
/// what it granted, the doubling being its bookkeeping allowance); when it was capped,
/// SO_RCVBUFFORCE (CAP_NET_ADMIN) is tried, and a buffer still short of it is logged: under a
/// burst the kernel would then drop datagrams before sipdm sees enough of a queue to answer
/// 503.
fn size_receive_buffer(sock: &socket2::Socket, addr: SocketAddr, want: usize) {
    let _ = sock.set_recv_buffer_size(want);
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let granted = |s: &socket2::Socket| s.recv_buffer_size().unwrap_or(0) / 2;
        if granted(sock) >= want {
            return;
        }
        let v = libc::c_int::try_from(want).unwrap_or(libc::c_int::MAX);
        // SAFETY: a valid descriptor and a c_int option value of the right size. Failing
        // (no CAP_NET_ADMIN) leaves the capped size, checked below.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&v as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        let got = granted(sock);
        if got < want {
            tracing::warn!(
                %addr,
                asked = want,
                granted = got,
                "UDP receive buffer smaller than asked: raise net.core.rmem_max (sysctl) or \
                 run with CAP_NET_ADMIN; a burst beyond it is dropped by the kernel before \
                 sipdm can answer 503"
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = addr;
}

/// Binds UDP and TCP on the same port. With port 0 the UDP socket picks a port and TCP takes
/// the same one, retrying a few times if another process holds it.
fn bind_pair(
    addr: SocketAddr,
    udp_buffer: usize,
) -> Result<(std::net::UdpSocket, TcpListener), TransportError> {
    use socket2::{Domain, Socket, Type};
    let mut last_err = None;
    for _ in 0..16 {
        let domain = if addr.is_ipv4() {
            Domain::IPV4
        } else {
            Domain::IPV6
        };
        let mk_err = |source| TransportError::Bind { addr, source };
        let us = Socket::new(domain, Type::DGRAM, None).map_err(mk_err)?;
        if addr.is_ipv6() {
            let _ = us.set_only_v6(true);
        }
        size_receive_buffer(&us, addr, udp_buffer);
        let _ = us.set_send_buffer_size(udp_buffer);
        us.set_nonblocking(true).map_err(mk_err)?;
        us.bind(&addr.into()).map_err(mk_err)?;
        let bound = us
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .ok_or_else(|| mk_err(std::io::Error::other("no local address")))?;
        let ts = Socket::new(domain, Type::STREAM, None).map_err(mk_err)?;
        if addr.is_ipv6() {
            let _ = ts.set_only_v6(true);
        }
        let _ = ts.set_reuse_address(true);
        ts.set_nonblocking(true).map_err(mk_err)?;
        match ts.bind(&bound.into()).and_then(|_| ts.listen(1024)) {
            Ok(()) => {
                let udp: std::net::UdpSocket = us.into();
                let tcp = TcpListener::from_std(ts.into()).map_err(mk_err)?;
                return Ok((udp, tcp));
            }
            Err(e) if addr.port() == 0 => last_err = Some(e),
            Err(e) => return Err(mk_err(e)),
        }
    }
    Err(TransportError::Bind {
        addr,
        source: last_err.unwrap_or_else(|| std::io::Error::other("no port")),
    })
}
