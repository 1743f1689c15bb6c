//! The HTTP listener: one single-threaded runtime per core, each accepting on its own
//! `SO_REUSEPORT` socket of the same address.
//!
//! Why: a phone fleet's fetches are many short requests; with one shared multi-threaded
//! runtime, every request pays cross-core wake-ups (the reactor on one core, the handler on
//! another), which showed as the largest cost in profiles. Per-core accept loops keep a
//! connection on one core from accept to close, the way nginx's workers do; the kernel spreads
//! new connections across the sockets.

use std::net::SocketAddr;
use std::thread::JoinHandle;

use axum::Router;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::watch;

/// Binds `workers` sockets on `addr` (port 0: one free port shared by all) and serves `app` on
/// each from its own thread. Returns the bound address and the threads.
pub fn serve(
    addr: SocketAddr,
    workers: usize,
    app: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<(SocketAddr, Vec<JoinHandle<()>>)> {
    let first = bind(addr)?;
    let bound = first.local_addr()?;
    let mut sockets = vec![first];
    for _ in 1..workers.max(1) {
        sockets.push(bind(bound)?);
    }
    let mut threads = Vec::with_capacity(sockets.len());
    for (i, std_listener) in sockets.into_iter().enumerate() {
        let app = app.clone();
        let tls = tls.clone();
        let mut stop = shutdown.clone();
        let thread = std::thread::Builder::new()
            .name(format!("http-{i}"))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => return tracing::error!(error = %e, "HTTP worker runtime"),
                };
                rt.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(std_listener) {
                        Ok(l) => l,
                        Err(e) => return tracing::error!(error = %e, "HTTP worker listener"),
                    };
                    if let Some(acceptor) = tls {
                        return super::tls::serve(listener, acceptor, app, stop).await;
                    }
                    let serve = axum::serve(
                        listener,
                        app.into_make_service_with_connect_info::<SocketAddr>(),
                    )
                    .with_graceful_shutdown(async move {
                        let _ = stop.wait_for(|s| *s).await.map(|_| ());
                    });
                    if let Err(e) = serve.await {
                        tracing::error!(error = %e, "HTTP worker stopped");
                    }
                });
            })?;
        threads.push(thread);
    }
    Ok((bound, threads))
}

fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    #[cfg(unix)]
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}
