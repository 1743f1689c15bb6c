//! INVITE server transactions through the endpoint, with a handler standing in for the
//! server crate's router/IVR: provisional responses, CANCEL → 487, ACK absorption, and
//! handlers added after start.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sip::auth::NoAuthentication;
use sip::registrar::MemoryStore;
use sip::rsip::{Method, StatusCode};
use sip::{BoxFuture, Endpoint, EndpointConfig, IncomingRequest, RequestHandler};
use tokio::net::UdpSocket;

/// Rings, then answers 486 for user "busy", 200 for user "answer", or waits to be cancelled.
/// Counts the INVITEs and ACKs it sees.
#[derive(Default)]
struct Ringer {
    invites: AtomicUsize,
    acks: AtomicUsize,
}

impl RequestHandler for Ringer {
    fn handle<'a>(
        &'a self,
        _ep: &'a sip::Endpoint,
        req: IncomingRequest,
    ) -> BoxFuture<'a, Option<IncomingRequest>> {
        Box::pin(async move {
            if req.request.method == Method::Ack {
                self.acks.fetch_add(1, Ordering::SeqCst);
                return None;
            }
            if req.request.method != Method::Invite {
                return Some(req);
            }
            self.invites.fetch_add(1, Ordering::SeqCst);
            let ringing = req.response(StatusCode::Ringing);
            req.provisional(&ringing);
            let uri = req.request.uri.to_string();
            let busy = uri.contains("busy");
            let answer = uri.contains("answer");
            let (_, _, responder) = req.into_parts();
            let responder = responder?;
            if busy {
                let r = responder.response(StatusCode::BusyHere);
                responder.respond(r);
            } else if answer {
                let r = responder.response(StatusCode::OK);
                responder.respond(r);
            } else {
                tokio::select! {
                    _ = responder.cancelled() => {}
                    _ = tokio::time::sleep(Duration::from_secs(10)) => {
                        let r = responder.response(StatusCode::OK);
                        responder.respond(r);
                    }
                }
            }
            None
        })
    }
}

async fn start() -> Endpoint {
    start_with(Arc::new(Ringer::default())).await
}

async fn start_with(ringer: Arc<Ringer>) -> Endpoint {
    let mut cfg = EndpointConfig::default();
    cfg.transport.listen = vec!["127.0.0.1:0".parse().unwrap()];
    let ep = Endpoint::start(
        cfg,
        Arc::new(MemoryStore::default()),
        Arc::new(NoAuthentication),
        vec![],
    )
    .await
    .unwrap();
    ep.add_handler(ringer);
    ep
}

fn invite(method: &str, user: &str, me: SocketAddr, branch: &str) -> String {
    format!(
        "{method} sip:{user}@sipdm.test SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{branch}\r\nMax-Forwards: 70\r\nFrom: <sip:1000@sipdm.test>;tag=caller\r\nTo: <sip:{user}@sipdm.test>\r\nCall-ID: call-{branch}\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
    )
}

async fn recv(sock: &UdpSocket, wait: Duration) -> Option<String> {
    let mut buf = vec![0u8; 65536];
    match tokio::time::timeout(wait, sock.recv_from(&mut buf)).await {
        Ok(Ok((n, _))) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        _ => None,
    }
}

#[tokio::test]
async fn cancel_gets_200_and_invite_487_then_ack_stops_retransmissions() {
    let ep = start().await;
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let me = sock.local_addr().unwrap();
    sock.send_to(
        invite("INVITE", "ivr", me, "c1").as_bytes(),
        ep.local_addr(),
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(recv(&sock, Duration::from_secs(2)).await.unwrap());
    }
    assert!(got.iter().any(|m| m.starts_with("SIP/2.0 100 ")), "{got:?}");
    assert!(got.iter().any(|m| m.starts_with("SIP/2.0 180 ")), "{got:?}");
    sock.send_to(
        invite("CANCEL", "ivr", me, "c1").as_bytes(),
        ep.local_addr(),
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(recv(&sock, Duration::from_secs(2)).await.unwrap());
    }
    assert!(
        got.iter()
            .any(|m| m.starts_with("SIP/2.0 200 ") && m.contains("CSeq: 1 CANCEL")),
        "{got:?}"
    );
    assert!(
        got.iter()
            .any(|m| m.starts_with("SIP/2.0 487 ") && m.contains("CSeq: 1 INVITE")),
        "{got:?}"
    );
    // The 487 is retransmitted (Timer G) until the ACK.
    let again = recv(&sock, Duration::from_secs(2)).await.unwrap();
    assert!(again.starts_with("SIP/2.0 487 "), "{again}");
    sock.send_to(invite("ACK", "ivr", me, "c1").as_bytes(), ep.local_addr())
        .await
        .unwrap();
    // Drain anything in flight, then silence.
    while let Some(m) = recv(&sock, Duration::from_millis(1500)).await {
        assert!(m.starts_with("SIP/2.0 487 "), "{m}");
    }
    ep.shutdown().await;
}

#[tokio::test]
async fn busy_final_is_absorbed_by_ack_and_stray_cancel_is_481() {
    let ep = start().await;
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let me = sock.local_addr().unwrap();
    sock.send_to(
        invite("INVITE", "busy", me, "b1").as_bytes(),
        ep.local_addr(),
    )
    .await
    .unwrap();
    let mut finals = 0;
    while let Some(m) = recv(&sock, Duration::from_millis(800)).await {
        if m.starts_with("SIP/2.0 486 ") {
            finals += 1;
            if finals == 2 {
                break;
            }
        }
    }
    assert_eq!(finals, 2, "486 retransmitted");
    sock.send_to(invite("ACK", "busy", me, "b1").as_bytes(), ep.local_addr())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    while recv(&sock, Duration::from_millis(50)).await.is_some() {}
    assert!(
        recv(&sock, Duration::from_millis(1500)).await.is_none(),
        "no 486 after ACK"
    );
    sock.send_to(
        invite("CANCEL", "busy", me, "nope").as_bytes(),
        ep.local_addr(),
    )
    .await
    .unwrap();
    let r = recv(&sock, Duration::from_secs(2)).await.unwrap();
    assert!(r.starts_with("SIP/2.0 481 "), "{r}");
    ep.shutdown().await;
}

#[tokio::test]
async fn answered_invite_reaches_the_handler_once_and_ack_stops_the_2xx() {
    let ringer = Arc::new(Ringer::default());
    let ep = start_with(ringer.clone()).await;
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let me = sock.local_addr().unwrap();
    let inv = invite("INVITE", "answer", me, "a1");
    sock.send_to(inv.as_bytes(), ep.local_addr()).await.unwrap();
    let mut oks = 0;
    while let Some(m) = recv(&sock, Duration::from_millis(1200)).await {
        if m.starts_with("SIP/2.0 200 ") {
            oks += 1;
            if oks == 1 {
                // The caller missed it and retransmits the INVITE.
                sock.send_to(inv.as_bytes(), ep.local_addr()).await.unwrap();
            }
            if oks == 3 {
                break;
            }
        }
    }
    assert!(oks >= 3, "2xx retransmitted until ACK");
    assert_eq!(
        ringer.invites.load(Ordering::SeqCst),
        1,
        "retransmitted INVITE absorbed"
    );
    // ACK for the 2xx: a new branch.
    let ack = inv
        .replace("INVITE", "ACK")
        .replace("z9hG4bKa1", "z9hG4bKa1ack");
    sock.send_to(ack.as_bytes(), ep.local_addr()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    while recv(&sock, Duration::from_millis(50)).await.is_some() {}
    assert!(
        recv(&sock, Duration::from_millis(2500)).await.is_none(),
        "no 2xx after ACK"
    );
    assert_eq!(ringer.acks.load(Ordering::SeqCst), 1, "the TU sees the ACK");
    ep.shutdown().await;
}
