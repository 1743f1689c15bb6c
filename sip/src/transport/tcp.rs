//! TCP: accept loop and outgoing connections; each connection runs in [`super::stream`].

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::{stream, Flow, Protocol, Transport, TransportError};

pub async fn accept_loop(
    t: Arc<Transport>,
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (stream, remote) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "tcp accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        if t.flows().len() >= t.config().max_tcp_connections {
            t.stats.dropped_overload.fetch_add(1, Ordering::Relaxed);
            continue; // dropping the stream closes it
        }
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().unwrap_or(remote);
        spawn_connection(t.clone(), stream, local, remote);
    }
}

/// Opens an outgoing connection (RFC 3261 §18.1.1) and registers its flow.
pub async fn connect(t: Arc<Transport>, remote: SocketAddr) -> Result<Flow, TransportError> {
    let stream = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        TcpStream::connect(remote),
    )
    .await
    .map_err(|_| TransportError::Connect {
        addr: remote,
        source: std::io::ErrorKind::TimedOut.into(),
    })?
    .map_err(|source| TransportError::Connect {
        addr: remote,
        source,
    })?;
    let _ = stream.set_nodelay(true);
    let local = stream
        .local_addr()
        .map_err(|source| TransportError::Connect {
            addr: remote,
            source,
        })?;
    Ok(spawn_connection(t, stream, local, remote))
}

fn spawn_connection(
    t: Arc<Transport>,
    stream: TcpStream,
    local: SocketAddr,
    remote: SocketAddr,
) -> Flow {
    // Owned halves: no lock between the reader and the writer of a plain TCP connection.
    let (rd, wr) = stream.into_split();
    stream::spawn_connection(t, rd, wr, Protocol::Tcp, local, remote)
}
