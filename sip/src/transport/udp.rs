//! UDP receive loop: one datagram is one message.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::watch;

use super::{EventSenders, Flow, TransportEvent};
use crate::stats::Stats;

pub async fn receive_loop(
    sock: Arc<UdpSocket>,
    events: EventSenders,
    max_message: usize,
    stats: Arc<Stats>,
    mut shutdown: watch::Receiver<bool>,
) {
    let Ok(local) = sock.local_addr() else { return };
    // One byte more than the limit, so an oversize datagram is seen as such (513), not cut.
    let mut buf = vec![0u8; max_message.saturating_add(1).min(65_536)];
    loop {
        let (n, remote) = tokio::select! {
            r = sock.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    // ICMP port unreachable and the like surface here on some platforms.
                    tracing::trace!(%local, error = %e, "udp receive error");
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let data = &buf[..n];
        // CRLF keep-alives (and empty datagrams) carry no message.
        if data.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        stats.received.fetch_add(1, Ordering::Relaxed);
        let target = events.for_datagram(data, remote);
        let ev = TransportEvent::Message {
            data: Bytes::copy_from_slice(data),
            flow: Flow::udp(local, remote),
        };
        if target.try_send(ev).is_err() {
            stats.dropped_overload.fetch_add(1, Ordering::Relaxed);
        }
    }
}
