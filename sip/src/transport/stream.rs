//! One stream connection (TCP, or TLS over TCP) once it is established: a reader that frames
//! messages by Content-Length within a bounded buffer, and a writer fed by a bounded queue.
//! Generic over the byte stream, so TCP and TLS share every line of it.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::{Flow, Protocol, Transport, TransportEvent};
use crate::wire::{Framed, StreamFramer, WireError};

/// Registers the connection's flow and starts its reader and writer tasks. `rd` and `wr` are
/// the two halves of one connection carrying `protocol` (a stream protocol).
pub(super) fn spawn_connection<R, W>(
    t: Arc<Transport>,
    rd: R,
    wr: W,
    protocol: Protocol,
    local: SocketAddr,
    remote: SocketAddr,
) -> Flow
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    debug_assert!(protocol.is_stream());
    let flow = Flow {
        protocol,
        local,
        remote,
        conn: t.flows().next_conn_id(),
    };
    let (tx, rx) = mpsc::channel::<Bytes>(t.config().tcp_send_queue);
    t.flows().insert(flow, tx.clone());
    tokio::spawn(write_loop(wr, rx));
    tokio::spawn(read_loop(t, rd, tx, flow));
    flow
}

async fn write_loop<W: AsyncWrite + Unpin>(mut wr: W, mut rx: mpsc::Receiver<Bytes>) {
    while let Some(data) = rx.recv().await {
        if wr.write_all(&data).await.is_err() {
            break;
        }
        // TLS holds records back until flushed (a no-op on TCP); flush once the queue is
        // drained rather than after every message.
        if rx.is_empty() && wr.flush().await.is_err() {
            break;
        }
    }
    // Over TLS this also sends close_notify.
    let _ = wr.shutdown().await;
}

async fn read_loop<R: AsyncRead + Unpin>(
    t: Arc<Transport>,
    mut rd: R,
    tx: mpsc::Sender<Bytes>,
    flow: Flow,
) {
    let remote = flow.remote;
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
    tracing::debug!(%remote, conn = flow.conn, protocol = flow.protocol.as_str(), reason, "connection closed");
    t.flows().remove(&flow);
    let _ = t
        .events
        .for_peer(remote)
        .send(TransportEvent::Closed { flow })
        .await;
}
