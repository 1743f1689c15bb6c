//! UDP: one datagram is one message.
//!
//! Each UDP socket is read by receiver threads of its own (by default one per core but one),
//! which hand each datagram to the endpoint on the thread that read it: parsing, transaction
//! matching and most REGISTERs finish there, and the response leaves from there too. This is
//! the model of Kamailio's UDP workers. Handing every datagram from a reader task to
//! dispatcher tasks instead cost wake-ups and context switches per message: under a digest
//! registration storm on two cores, 65–68 µs of CPU per registration against 46–50 µs this
//! way, and about a fifth less throughput (BENCHMARKS.md).
//!
//! The threads wait for the socket in an epoll set of their own with `EPOLLEXCLUSIVE`, so a
//! datagram arriving at an idle socket wakes one of them, not all. The socket is not
//! registered with tokio at all while things go well: a registration wakes a runtime worker
//! per datagram received, and one for write space per datagram sent. Only a send that finds
//! the buffer full registers a descriptor of it, for write space, until it is through.
//!
//! Each datagram is read with its kernel receive timestamp (`SO_TIMESTAMPNS`), so the
//! endpoint knows how long it waited in the receive buffer (an overloaded endpoint answers
//! 503 rather than fall further behind: [`crate::overload`]), and with the socket's count of
//! datagrams the kernel dropped for want of buffer space (`SO_RXQ_OVFL`), which nobody can
//! answer and which is counted.
//!
//! UDP never promised order, so two datagrams of one call may be handled at once on two
//! threads; the transaction tables match atomically, which is what absorbs a retransmission
//! racing its original.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::Flow;
use crate::stats::Stats;

/// Receives the datagrams read by the receiver threads.
pub trait DatagramHandler: Send + Sync + 'static {
    /// One received datagram, not yet parsed, whole (even above the message size limit, so
    /// that a 513 can copy its headers). `queued`: how long it waited in the socket's receive
    /// buffer (from the kernel's receive timestamp; zero where the system gives none). Runs
    /// on a receiver thread, inside the tokio runtime's context (it may spawn tasks), and
    /// must not block.
    fn on_datagram(&self, data: Bytes, flow: Flow, queued: Duration);
    /// False once nothing is left to hand datagrams to: the receivers then stop.
    fn alive(&self) -> bool;
}

/// A bound UDP socket: read by the receiver threads, written by whoever sends.
pub(crate) struct UdpSock {
    sock: std::net::UdpSocket,
    pub(crate) local: SocketAddr,
}

impl UdpSock {
    /// Wraps a bound, non-blocking socket.
    pub(crate) fn new(sock: std::net::UdpSocket) -> io::Result<UdpSock> {
        let local = sock.local_addr()?;
        Ok(UdpSock { sock, local })
    }

    /// Sends without waiting; `WouldBlock` when the send buffer is full.
    pub(crate) fn try_send_to(&self, data: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.sock.send_to(data, to)
    }

    /// Sends, waiting for buffer room if need be. Must run inside a tokio runtime.
    pub(crate) async fn send_to(&self, data: &[u8], to: SocketAddr) -> io::Result<usize> {
        match self.sock.send_to(data, to) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            r => return r,
        }
        // SAFETY: a std socket owns its descriptor, keeps it open until dropped and always
        // reports the same one, which is what registering it asks.
        let full =
            unsafe { AsyncFd::register_with_interest(self.sock.try_clone()?, Interest::WRITABLE) }
                .map_err(|e| e.into_parts().1)?;
        loop {
            let mut guard = full.writable().await?;
            if let Ok(r) = guard.try_io(|s| s.get_ref().send_to(data, to)) {
                return r;
            }
        }
    }

    /// Starts `threads` receiver threads. They stop when `stop` is set (after
    /// the datagram in hand) or the handler is gone, within [`IDLE_CHECK_MS`] when idle.
    pub(crate) fn spawn_receivers(
        &self,
        threads: usize,
        handler: Arc<dyn DatagramHandler>,
        stats: Arc<Stats>,
        stop: Arc<AtomicBool>,
    ) -> io::Result<Vec<std::thread::JoinHandle<()>>> {
        let runtime = tokio::runtime::Handle::current();
        recv::enable(&self.sock);
        let drops_seen = Arc::new(AtomicU32::new(0));
        let mut handles = Vec::new();
        for i in 0..threads {
            let receiver = Receiver {
                sock: self.sock.try_clone()?,
                wait: wait::Exclusive::new(&self.sock)?,
                local: self.local,
                handler: handler.clone(),
                stats: stats.clone(),
                stop: stop.clone(),
                drops_seen: drops_seen.clone(),
            };
            let runtime = runtime.clone();
            handles.push(
                std::thread::Builder::new()
                    .name(format!("sip-udp-{i}"))
                    .spawn(move || {
                        let _context = runtime.enter();
                        receiver.run();
                    })?,
            );
        }
        Ok(handles)
    }
}

/// How often an idle receiver looks at its stop conditions.
const IDLE_CHECK_MS: i32 = 50;

struct Receiver {
    sock: std::net::UdpSocket,
    wait: wait::Exclusive,
    local: SocketAddr,
    handler: Arc<dyn DatagramHandler>,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
    /// The socket's kernel drop count as last reported (shared by its receiver threads).
    drops_seen: Arc<AtomicU32>,
}

/// The largest UDP payload (IPv4: 65 507 bytes; the buffer is a little larger). A datagram is
/// read whole whatever the message size limit, so that one above the limit can still be
/// answered 513 with the headers a response copies, wherever they are in it.
const MAX_DATAGRAM: usize = 65_536;

impl Receiver {
    fn run(self) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        while !self.stop.load(Ordering::Relaxed) {
            match recv::datagram(&self.sock, &mut buf) {
                Ok(got) => {
                    if let Some(drops) = got.kernel_drops {
                        self.note_drops(drops);
                    }
                    let data = &buf[..got.len];
                    // CRLF keep-alives (and empty datagrams) carry no message.
                    if data.iter().all(|b| b.is_ascii_whitespace()) {
                        continue;
                    }
                    self.stats.received.fetch_add(1, Ordering::Relaxed);
                    let flow = Flow::udp(self.local, got.remote);
                    let data = Bytes::copy_from_slice(data);
                    let remote = got.remote;
                    // A bug that panics on one message must not silence the socket: with one
                    // receiver thread that would be every phone's registrar gone.
                    let handled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        self.handler.on_datagram(data, flow, got.queued)
                    }));
                    if handled.is_err() {
                        self.stats.malformed_dropped.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(%remote, "a datagram's handling panicked; dropped");
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !self.handler.alive() {
                        return;
                    }
                    if let Err(e) = self.wait.readable(IDLE_CHECK_MS) {
                        tracing::error!(local = %self.local, error = %e, "udp wait failed");
                        return;
                    }
                }
                Err(e) => {
                    // ICMP port unreachable and the like surface here on some platforms. The
                    // wait returns at once when a datagram is queued, and keeps an error that
                    // does not clear from spinning.
                    tracing::trace!(local = %self.local, error = %e, "udp receive error");
                    let _ = self.wait.readable(IDLE_CHECK_MS);
                }
            }
        }
    }
}

impl Receiver {
    /// Adds what the kernel dropped since the socket's count was last seen (by any of its
    /// receiver threads) to the stats.
    fn note_drops(&self, now: u32) {
        let before = self.drops_seen.fetch_max(now, Ordering::Relaxed);
        if now > before {
            let lost = now - before;
            self.stats
                .udp_kernel_drops
                .fetch_add(u64::from(lost), Ordering::Relaxed);
            // Once per 10 s at most: an overflow lasts, and the log must not add to the load.
            static LAST_WARNED: AtomicU64 = AtomicU64::new(0);
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let last = LAST_WARNED.load(Ordering::Relaxed);
            if secs >= last + 10
                && LAST_WARNED
                    .compare_exchange(last, secs, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                tracing::warn!(
                    local = %self.local,
                    dropped_so_far = now,
                    "the UDP receive buffer overflowed: the kernel dropped datagrams that sipdm \
                     never saw and could not answer (sipdm_sip_udp_kernel_drops_total)"
                );
            }
        }
    }
}

/// Reading one datagram with what the kernel knows about it: when it arrived (the time it
/// then waited in the receive buffer is the measure of how far behind the receivers are) and
/// how many datagrams the socket has dropped so far for lack of buffer space.
mod recv {
    use std::io;
    use std::net::SocketAddr;
    use std::time::Duration;

    pub(super) struct Got {
        pub len: usize,
        pub remote: SocketAddr,
        /// Time spent in the receive buffer (zero when unknown).
        pub queued: Duration,
        pub kernel_drops: Option<u32>,
    }

    /// Asks the kernel for a receive timestamp and the drop count with each datagram.
    #[cfg(target_os = "linux")]
    pub(super) fn enable(sock: &std::net::UdpSocket) {
        use std::os::fd::AsRawFd;
        let on: libc::c_int = 1;
        for opt in [libc::SO_TIMESTAMPNS, libc::SO_RXQ_OVFL] {
            // SAFETY: a valid descriptor and a c_int option value of the right size.
            let r = unsafe {
                libc::setsockopt(
                    sock.as_raw_fd(),
                    libc::SOL_SOCKET,
                    opt,
                    (&on as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if r < 0 {
                tracing::debug!(opt, error = %io::Error::last_os_error(), "udp socket option not set");
            }
        }
    }

    #[cfg(not(target_os = "linux"))]
    pub(super) fn enable(_sock: &std::net::UdpSocket) {}

    #[cfg(target_os = "linux")]
    pub(super) fn datagram(sock: &std::net::UdpSocket, buf: &mut [u8]) -> io::Result<Got> {
        use std::os::fd::AsRawFd;
        // Room for a timespec and a u32, each behind its header.
        let mut control = [0u64; 16];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let mut stamp = None;
        let mut drops = None;
        // SAFETY: `try_init` hands out storage for a socket address of the size it reports;
        // the message header points at that storage, at `iov` (over `buf`) and at
        // `control`, all of which outlive the call; control messages are read only within
        // the length the kernel wrote, through the CMSG_* accessors.
        let (len, addr) = unsafe {
            socket2::SockAddr::try_init(|storage, addr_len| {
                let mut msg: libc::msghdr = std::mem::zeroed();
                msg.msg_name = storage.cast();
                msg.msg_namelen = *addr_len;
                msg.msg_iov = &mut iov;
                msg.msg_iovlen = 1;
                msg.msg_control = control.as_mut_ptr().cast();
                msg.msg_controllen = std::mem::size_of_val(&control) as _;
                let n = libc::recvmsg(sock.as_raw_fd(), &mut msg, 0);
                if n < 0 {
                    return Err(io::Error::last_os_error());
                }
                *addr_len = msg.msg_namelen;
                let mut c = libc::CMSG_FIRSTHDR(&msg);
                while !c.is_null() {
                    let h = &*c;
                    if h.cmsg_level == libc::SOL_SOCKET && h.cmsg_type == libc::SCM_TIMESTAMPNS {
                        let ts: libc::timespec =
                            std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                        stamp = Some(ts);
                    } else if h.cmsg_level == libc::SOL_SOCKET && h.cmsg_type == libc::SO_RXQ_OVFL {
                        drops = Some(std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<u32>()));
                    }
                    c = libc::CMSG_NXTHDR(&msg, c);
                }
                Ok(n as usize)
            })?
        };
        let remote = addr
            .as_socket()
            .ok_or_else(|| io::Error::other("datagram from a non-IP address"))?;
        Ok(Got {
            len: len.min(buf.len()),
            remote,
            queued: stamp.map_or(Duration::ZERO, since),
            kernel_drops: drops,
        })
    }

    /// How long ago a kernel timestamp (CLOCK_REALTIME) was; zero if the clock went back.
    #[cfg(target_os = "linux")]
    fn since(ts: libc::timespec) -> Duration {
        let then = Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32);
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(Duration::ZERO, |now| now.saturating_sub(then))
    }

    #[cfg(not(target_os = "linux"))]
    pub(super) fn datagram(sock: &std::net::UdpSocket, buf: &mut [u8]) -> io::Result<Got> {
        let (len, remote) = sock.recv_from(buf)?;
        Ok(Got {
            len,
            remote,
            queued: Duration::ZERO,
            kernel_drops: None,
        })
    }
}

/// Waiting for a socket to become readable, waking one waiter per event where the system
/// allows it.
mod wait {
    use std::io;
    #[cfg(target_os = "linux")]
    use std::os::fd::FromRawFd;
    use std::os::fd::{AsFd, AsRawFd, OwnedFd};

    /// A system call's result: negative is the thread's last OS error, except an interrupted
    /// wait, which is as good as a timeout (the caller checks its conditions and waits again).
    fn checked(r: libc::c_int) -> io::Result<()> {
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        Ok(())
    }

    pub(super) struct Exclusive {
        #[cfg(target_os = "linux")]
        epoll: OwnedFd,
        #[cfg(not(target_os = "linux"))]
        fd: OwnedFd,
    }

    #[cfg(target_os = "linux")]
    impl Exclusive {
        pub(super) fn new(sock: &impl AsFd) -> io::Result<Exclusive> {
            // SAFETY: plain system calls on descriptors we own; the result is checked.
            let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
            if epoll < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `epoll` is a fresh descriptor that nothing else owns.
            let epoll = unsafe { OwnedFd::from_raw_fd(epoll) };
            let mut ev = libc::epoll_event {
                events: (libc::EPOLLIN | libc::EPOLLEXCLUSIVE) as u32,
                u64: 0,
            };
            // SAFETY: both descriptors are open for the duration of the call.
            let r = unsafe {
                libc::epoll_ctl(
                    epoll.as_raw_fd(),
                    libc::EPOLL_CTL_ADD,
                    sock.as_fd().as_raw_fd(),
                    &mut ev,
                )
            };
            if r < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(Exclusive { epoll })
        }

        /// Waits until the socket is readable or `timeout_ms` passes.
        pub(super) fn readable(&self, timeout_ms: i32) -> io::Result<()> {
            let mut ev = libc::epoll_event { events: 0, u64: 0 };
            // SAFETY: `ev` is a valid buffer of one event; the descriptor is open.
            checked(unsafe { libc::epoll_wait(self.epoll.as_raw_fd(), &mut ev, 1, timeout_ms) })
        }
    }

    #[cfg(not(target_os = "linux"))]
    impl Exclusive {
        pub(super) fn new(sock: &impl AsFd) -> io::Result<Exclusive> {
            Ok(Exclusive {
                fd: sock.as_fd().try_clone_to_owned()?,
            })
        }

        pub(super) fn readable(&self, timeout_ms: i32) -> io::Result<()> {
            let mut p = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: `p` is a valid array of one entry; the descriptor is open.
            checked(unsafe { libc::poll(&mut p, 1, timeout_ms) })
        }
    }
}
