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
//! UDP never promised order, so two datagrams of one call may be handled at once on two
//! threads; the transaction tables match atomically, which is what absorbs a retransmission
//! racing its original.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::Flow;
use crate::stats::Stats;

/// Receives the datagrams read by the receiver threads.
pub trait DatagramHandler: Send + Sync + 'static {
    /// One received datagram, not yet parsed. Runs on a receiver thread, inside the tokio
    /// runtime's context (it may spawn tasks), and must not block.
    fn on_datagram(&self, data: Bytes, flow: Flow);
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
        max_message: usize,
        stats: Arc<Stats>,
        stop: Arc<AtomicBool>,
    ) -> io::Result<Vec<std::thread::JoinHandle<()>>> {
        let runtime = tokio::runtime::Handle::current();
        let mut handles = Vec::new();
        for i in 0..threads {
            let receiver = Receiver {
                sock: self.sock.try_clone()?,
                wait: wait::Exclusive::new(&self.sock)?,
                local: self.local,
                handler: handler.clone(),
                max_message,
                stats: stats.clone(),
                stop: stop.clone(),
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
    max_message: usize,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
}

impl Receiver {
    fn run(self) {
        // One byte more than the limit, so an oversize datagram is seen as such (513), not cut.
        let mut buf = vec![0u8; self.max_message.saturating_add(1).min(65_536)];
        while !self.stop.load(Ordering::Relaxed) {
            match self.sock.recv_from(&mut buf) {
                Ok((n, remote)) => {
                    let data = &buf[..n];
                    // CRLF keep-alives (and empty datagrams) carry no message.
                    if data.iter().all(|b| b.is_ascii_whitespace()) {
                        continue;
                    }
                    self.stats.received.fetch_add(1, Ordering::Relaxed);
                    let flow = Flow::udp(self.local, remote);
                    let data = Bytes::copy_from_slice(data);
                    // A bug that panics on one message must not silence the socket: with one
                    // receiver thread that would be every phone's registrar gone.
                    let handled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        self.handler.on_datagram(data, flow)
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
