//! Counters the server crate exports (to Prometheus). Plain atomics: cheap on the hot path.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Stats {
    /// Messages received (framed) on any transport.
    pub received: AtomicU64,
    /// Malformed messages answered with 4xx/5xx (400, 501, 505, 513).
    pub malformed_answered: AtomicU64,
    /// Malformed messages that could not be answered and were dropped.
    pub malformed_dropped: AtomicU64,
    /// Connections refused because a connection limit was hit (TCP, TLS). Requests are not
    /// dropped for overload: they are answered 503 ([`Stats::overload_rejected`]).
    pub dropped_overload: AtomicU64,
    /// New requests answered 503 with Retry-After because the endpoint was overloaded
    /// ([`crate::overload`]).
    pub overload_rejected: AtomicU64,
    /// Datagrams the kernel dropped because a UDP socket's receive buffer was full: they never
    /// reached sipdm and could not be answered (`SO_RXQ_OVFL`, summed over the sockets as of
    /// the last datagram read from each).
    pub udp_kernel_drops: AtomicU64,
    /// Request retransmissions absorbed by a server transaction.
    pub retransmissions_absorbed: AtomicU64,
    /// Responses that matched no client transaction.
    pub stray_responses: AtomicU64,
    /// Responses sent (including retransmissions).
    pub responses_sent: AtomicU64,
    /// Send failures reported by the transport.
    pub send_errors: AtomicU64,
    /// REGISTER requests answered 200.
    pub registrations_ok: AtomicU64,
    /// Digest challenges sent (401/407).
    pub challenges: AtomicU64,
    /// Connections to a TLS port closed because the TLS handshake failed or timed out
    /// (plain SIP or garbage sent to 5061, a certificate the client refused, a scanner).
    pub tls_handshake_failed: AtomicU64,
}

/// A point-in-time copy, for export.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub received: u64,
    pub malformed_answered: u64,
    pub malformed_dropped: u64,
    pub dropped_overload: u64,
    pub overload_rejected: u64,
    pub udp_kernel_drops: u64,
    pub retransmissions_absorbed: u64,
    pub stray_responses: u64,
    pub responses_sent: u64,
    pub send_errors: u64,
    pub registrations_ok: u64,
    pub challenges: u64,
    pub tls_handshake_failed: u64,
}

impl Stats {
    pub fn snapshot(&self) -> StatsSnapshot {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            received: l(&self.received),
            malformed_answered: l(&self.malformed_answered),
            malformed_dropped: l(&self.malformed_dropped),
            dropped_overload: l(&self.dropped_overload),
            overload_rejected: l(&self.overload_rejected),
            udp_kernel_drops: l(&self.udp_kernel_drops),
            retransmissions_absorbed: l(&self.retransmissions_absorbed),
            stray_responses: l(&self.stray_responses),
            responses_sent: l(&self.responses_sent),
            send_errors: l(&self.send_errors),
            registrations_ok: l(&self.registrations_ok),
            challenges: l(&self.challenges),
            tls_handshake_failed: l(&self.tls_handshake_failed),
        }
    }

    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
