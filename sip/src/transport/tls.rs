//! SIP over TLS (RFC 3261 §26.2; port 5061 by convention): accept loop and TLS handshake;
//! each established connection then runs in [`super::stream`] exactly like a TCP one.
//!
//! Server side only. A request to a TLS contact goes down the TLS connection that phone
//! opened (its flow); sipdm opens no TLS connections of its own, so a `sips:` or
//! `;transport=tls` contact with no live flow is reported as
//! [`super::TransportError::NoRoute`].

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;

use super::{stream, Protocol, Transport};

/// TLS listeners and their server certificate.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// Addresses to accept TLS on (port 0: a free port, see `Transport::tls_local_addrs`).
    pub listen: Vec<SocketAddr>,
    /// Certificate chain, key, protocol versions (built by the caller, e.g. from PEM files).
    pub server: Arc<rustls::ServerConfig>,
    /// A handshake not done within this long is abandoned (and counted as failed).
    pub handshake_timeout: Duration,
    /// Handshakes in progress at once; connections beyond it are closed at once and counted
    /// as dropped for overload. Established connections count against
    /// `TransportConfig::max_tcp_connections` like TCP ones.
    pub max_handshakes: usize,
}

impl TlsConfig {
    pub fn new(listen: Vec<SocketAddr>, server: Arc<rustls::ServerConfig>) -> TlsConfig {
        TlsConfig {
            listen,
            server,
            handshake_timeout: Duration::from_secs(10),
            max_handshakes: 1024,
        }
    }
}

pub async fn accept_loop(
    t: Arc<Transport>,
    listener: TcpListener,
    cfg: TlsConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let acceptor = TlsAcceptor::from(cfg.server.clone());
    let handshakes = Arc::new(Semaphore::new(cfg.max_handshakes.max(1)));
    loop {
        let (tcp, remote) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "tls accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        if t.flows().len() >= t.config().max_tcp_connections {
            t.stats.dropped_overload.fetch_add(1, Ordering::Relaxed);
            continue; // dropping the stream closes it
        }
        let Ok(permit) = handshakes.clone().try_acquire_owned() else {
            t.stats.dropped_overload.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let local = tcp.local_addr().unwrap_or(remote);
        let t = t.clone();
        let acceptor = acceptor.clone();
        let timeout = cfg.handshake_timeout;
        tokio::spawn(async move {
            let result = tokio::time::timeout(timeout, acceptor.accept(tcp)).await;
            drop(permit);
            match result {
                Ok(Ok(tls)) => {
                    let (rd, wr) = tokio::io::split(tls);
                    stream::spawn_connection(t, rd, wr, Protocol::Tls, local, remote);
                }
                Ok(Err(e)) => {
                    t.stats.tls_handshake_failed.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%remote, error = %e, "TLS handshake failed");
                }
                Err(_) => {
                    t.stats.tls_handshake_failed.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%remote, "TLS handshake timed out");
                }
            }
        });
    }
}
