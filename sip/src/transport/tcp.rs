//! TCP: accept loop, and for each connection a reader (Content-Length framing, bounded
//! buffer) and a writer fed by a bounded queue.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use super::{Flow, Protocol, Transport, TransportError, TransportEvent};
use crate::wire::{Framed, StreamFramer, WireError};

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
    let flow = Flow {
        protocol: Protocol::Tcp,
        local,
        remote,
        conn: t.flows().next_conn_id(),
    };
    let (tx, mut rx) = mpsc::channel::<Bytes>(t.config().tcp_send_queue);
    t.flows().insert(flow, tx.clone());
    let (mut rd, mut wr) = stream.into_split();
    tokio::spawn(async move {
        while let Some(data) = rx.recv().await {
            if wr.write_all(&data).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    tokio::spawn(async move {
        let cfg = t.config().clone();
        let mut framer = StreamFramer::new(cfg.max_message_size.min(cfg.max_tcp_buffer));
        let reason = loop {
            // Drain every complete frame before reading more (pipelined messages).
            match framer.next_frame() {
                Ok(Framed::Message(data)) => {
                    t.stats.received.fetch_add(1, Ordering::Relaxed);
                    // Backpressure on a stream: wait rather than drop.
                    if t.events
                        .for_peer(remote)
                        .send(TransportEvent::Message { data, flow })
                        .await
                        .is_err()
                    {
                        break "endpoint gone";
                    }
                    continue;
                }
                Ok(Framed::KeepAlive { pong }) => {
                    if pong {
                        let _ = tx.try_send(Bytes::from_static(b"\r\n"));
                    }
                    continue;
                }
                Ok(Framed::Incomplete) => {}
                Err(error) => {
                    let head = framer.head(8192);
                    let _ = t
                        .events
                        .for_peer(remote)
                        .send(TransportEvent::StreamError { flow, error, head })
                        .await;
                    // Let an error response go out before closing.
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    break "unframeable stream";
                }
            }
            let buf = framer.buffer();
            if buf.capacity() - buf.len() < 4096 {
                buf.reserve(4096);
            }
            match tokio::time::timeout(cfg.tcp_idle_timeout, rd.read_buf(buf)).await {
                Ok(Ok(0)) => break "closed by peer",
                Ok(Ok(_)) => {
                    if framer.buffered() > cfg.max_tcp_buffer {
                        let err = WireError::TooLarge {
                            size: framer.buffered(),
                            limit: cfg.max_tcp_buffer,
                        };
                        let head = framer.head(8192);
                        let _ = t
                            .events
                            .for_peer(remote)
                            .send(TransportEvent::StreamError {
                                flow,
                                error: err,
                                head,
                            })
                            .await;
                        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                        break "buffer limit";
                    }
                }
                Ok(Err(_)) => break "read error",
                Err(_) => break "idle timeout",
            }
        };
        tracing::debug!(%remote, conn = flow.conn, reason, "tcp connection closed");
        t.flows().remove(&flow);
        let _ = t
            .events
            .for_peer(remote)
            .send(TransportEvent::Closed { flow })
            .await;
    });
    flow
}
