//! The UAC against a loopback peer (a raw UDP socket that answers as a test tells it): the
//! authenticated retry, provisionals, CANCEL and the ACK of a 2xx, as they go on the wire.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rsip::{Method, Request};
use tokio::net::UdpSocket;

use super::*;
use crate::auth::{Algorithm, DigestResponse, NoAuthentication};
use crate::dialog::RequestBuilder;
use crate::headers::Via;
use crate::registrar::MemoryStore;
use crate::transport::Protocol;
use crate::EndpointConfig;

async fn endpoint() -> Endpoint {
    let mut cfg = EndpointConfig::default();
    cfg.transport.listen = vec!["127.0.0.1:0".parse().unwrap()];
    Endpoint::start(
        cfg,
        Arc::new(MemoryStore::default()),
        Arc::new(NoAuthentication),
        vec![],
    )
    .await
    .expect("endpoint starts")
}

struct Peer {
    sock: UdpSocket,
}

impl Peer {
    async fn new() -> Peer {
        Peer {
            sock: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
        }
    }

    fn addr(&self) -> SocketAddr {
        self.sock.local_addr().unwrap()
    }

    fn target(&self) -> Target {
        Target::Address(Protocol::Udp, self.addr())
    }

    /// The next request (responses and retransmissions of other methods are skipped).
    async fn recv(&self, method: Method) -> (Request, String, SocketAddr) {
        let mut buf = vec![0u8; 65535];
        loop {
            let (n, from) =
                tokio::time::timeout(Duration::from_secs(5), self.sock.recv_from(&mut buf))
                    .await
                    .expect("a request within 5 s")
                    .unwrap();
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            if let Ok(req) = Request::try_from(text.as_str()) {
                if req.method == method {
                    return (req, text, from);
                }
            }
        }
    }

    /// Answers `req` with `status` and extra header lines.
    async fn answer(
        &self,
        req: &Request,
        to: SocketAddr,
        status: &str,
        extra: &str,
        to_tag: Option<&str>,
    ) {
        let mut text = format!("SIP/2.0 {status}\r\n");
        for name in ["Via", "From"] {
            for v in req.header_values(name) {
                text.push_str(&format!("{name}: {v}\r\n"));
            }
        }
        let to_value = req.header_value("To").unwrap();
        match to_tag {
            Some(t) => text.push_str(&format!("To: {to_value};tag={t}\r\n")),
            None => text.push_str(&format!("To: {to_value}\r\n")),
        }
        text.push_str(&format!(
            "Call-ID: {}\r\nCSeq: {}\r\n{extra}Content-Length: 0\r\n\r\n",
            req.call_id().unwrap(),
            req.header_value("CSeq").unwrap()
        ));
        self.sock.send_to(text.as_bytes(), to).await.unwrap();
    }
}

fn notify(peer: &Peer) -> Request {
    RequestBuilder::new(Method::Notify, &format!("sip:phone@{}", peer.addr()))
        .from("<sip:sipdm@127.0.0.1>")
        .header("Event", "check-sync")
        .header("Subscription-State", "terminated")
        .build()
        .unwrap()
}

const CHALLENGE: &str =
    "WWW-Authenticate: Digest realm=\"phone\", nonce=\"n0nce\", qop=\"auth\", algorithm=MD5\r\n";

#[tokio::test]
async fn one_authenticated_retry_after_a_401() {
    let ep = endpoint().await;
    let peer = Peer::new().await;
    let req = notify(&peer);
    let pending = tokio::spawn({
        let ep = ep.clone();
        let target = peer.target();
        async move { request(&ep, req, target, Some(Credentials::new("dev1", "secret"))).await }
    });
    let (first, _, from) = peer.recv(Method::Notify).await;
    assert!(first.header_value("Authorization").is_none());
    peer.answer(&first, from, "401 Unauthorized", CHALLENGE, Some("p1"))
        .await;
    let (retry, _, from) = peer.recv(Method::Notify).await;
    assert_eq!(retry.cseq(), Some((first.cseq().unwrap().0 + 1, "NOTIFY")));
    assert_eq!(retry.call_id(), first.call_id());
    assert_eq!(retry.header_value("From"), first.header_value("From"));
    assert_eq!(retry.header_value("To"), first.header_value("To"));
    assert_ne!(
        retry.top_via().unwrap().branch(),
        first.top_via().unwrap().branch(),
        "a retry is a new transaction"
    );
    let d = DigestResponse::parse(retry.header_value("Authorization").unwrap()).unwrap();
    assert_eq!(d.username, "dev1");
    let ha1 = Algorithm::Md5.hash(&["dev1", "phone", "secret"]);
    assert_eq!(d.expected("NOTIFY", &ha1).unwrap(), d.response);
    peer.answer(&retry, from, "200 OK", "", Some("p1")).await;
    let resp = pending.await.unwrap().unwrap();
    assert_eq!(resp.status_code.code(), 200);
}

#[tokio::test]
async fn a_second_challenge_is_returned_not_answered() {
    let ep = endpoint().await;
    let peer = Peer::new().await;
    let req = notify(&peer);
    let pending = tokio::spawn({
        let ep = ep.clone();
        let target = peer.target();
        async move { request(&ep, req, target, Some(Credentials::new("dev1", "wrong"))).await }
    });
    for _ in 0..2 {
        let (r, _, from) = peer.recv(Method::Notify).await;
        peer.answer(&r, from, "401 Unauthorized", CHALLENGE, Some("p1"))
            .await;
    }
    let resp = pending.await.unwrap().unwrap();
    assert_eq!(resp.status_code.code(), 401);
}

#[tokio::test]
async fn without_credentials_the_challenge_is_the_answer() {
    let ep = endpoint().await;
    let peer = Peer::new().await;
    let req = notify(&peer);
    let pending = tokio::spawn({
        let ep = ep.clone();
        let target = peer.target();
        async move { request(&ep, req, target, None).await }
    });
    let (r, _, from) = peer.recv(Method::Notify).await;
    peer.answer(&r, from, "401 Unauthorized", CHALLENGE, Some("p1"))
        .await;
    assert_eq!(pending.await.unwrap().unwrap().status_code.code(), 401);
}

fn invite(peer: &Peer) -> Request {
    RequestBuilder::new(Method::Invite, &format!("sip:8800@{}", peer.addr()))
        .from("<sip:1000@127.0.0.1>")
        .contact("sip:b2bua@127.0.0.1")
        .build()
        .unwrap()
}

#[tokio::test]
async fn provisional_then_cancel_with_the_invite_branch() {
    let ep = endpoint().await;
    let peer = Peer::new().await;
    let mut tsx = ClientTsx::send(&ep, invite(&peer), peer.target()).unwrap();
    let (inv, inv_text, from) = peer.recv(Method::Invite).await;
    peer.answer(&inv, from, "180 Ringing", "", Some("callee"))
        .await;
    match tsx.next().await {
        Progress::Provisional(r) => assert_eq!(r.status_code.code(), 180),
        other => panic!("{other:?}"),
    }
    let cancelled = tokio::spawn(async move { tsx.cancel().await });
    let (cancel, _, from) = peer.recv(Method::Cancel).await;
    // §9.1: same Request-URI, Call-ID, From, To (no tag added), CSeq number, one Via equal to
    // the INVITE's top Via.
    assert_eq!(cancel.uri, inv.uri);
    assert_eq!(cancel.call_id(), inv.call_id());
    assert_eq!(cancel.header_value("From"), inv.header_value("From"));
    assert_eq!(cancel.header_value("To"), inv.header_value("To"));
    assert_eq!(cancel.cseq(), Some((inv.cseq().unwrap().0, "CANCEL")));
    let vias: Vec<_> = cancel.header_values("Via").collect();
    assert_eq!(vias.len(), 1);
    assert_eq!(vias[0], inv.header_value("Via").unwrap(), "{inv_text}");
    peer.answer(&cancel, from, "200 OK", "", Some("callee"))
        .await;
    peer.answer(&inv, from, "487 Request Terminated", "", Some("callee"))
        .await;
    let fin = cancelled.await.unwrap().unwrap();
    assert_eq!(fin.status_code.code(), 487);
    // The transaction layer ACKs the 487 (§17.1.1.3) with the INVITE's branch.
    let (ack, _, _) = peer.recv(Method::Ack).await;
    assert_eq!(
        ack.top_via().unwrap().branch(),
        inv.top_via().unwrap().branch()
    );
}

#[tokio::test]
async fn cancel_before_any_provisional_waits_for_one() {
    let ep = endpoint().await;
    let peer = Peer::new().await;
    let mut tsx = ClientTsx::send(&ep, invite(&peer), peer.target()).unwrap();
    let (inv, _, from) = peer.recv(Method::Invite).await;
    let cancelled = tokio::spawn(async move { tsx.cancel().await });
    // No CANCEL before a provisional: the callee's 200 arrives first and is the outcome.
    tokio::time::sleep(Duration::from_millis(200)).await;
    peer.answer(
        &inv,
        from,
        "200 OK",
        "Contact: <sip:ms@127.0.0.1>\r\n",
        Some("callee"),
    )
    .await;
    assert_eq!(cancelled.await.unwrap().unwrap().status_code.code(), 200);
}

#[tokio::test]
async fn ack_for_2xx_follows_the_route_set_and_repeats_for_retransmissions() {
    let ep = endpoint().await;
    let peer = Peer::new().await;
    let mut tsx = ClientTsx::send(&ep, invite(&peer), peer.target()).unwrap();
    let (inv, _, from) = peer.recv(Method::Invite).await;
    // Two proxies recorded routes; the nearer (listed last) is the peer itself.
    let extra = format!(
        "Record-Route: <sip:10.9.9.9:5099;lr>\r\nRecord-Route: <sip:{};lr>\r\nContact: <sip:ms@10.9.9.8:5070>\r\n",
        peer.addr()
    );
    peer.answer(&inv, from, "200 OK", &extra, Some("callee"))
        .await;
    let ok = loop {
        if let Progress::Final(r) = tsx.next().await {
            break r.unwrap();
        }
    };
    let dialog = tsx.dialog(&ok).unwrap();
    tsx.ack(&dialog).await.unwrap();
    let (ack, _, _) = peer.recv(Method::Ack).await;
    assert_eq!(ack.uri.to_string(), "sip:ms@10.9.9.8:5070");
    let routes: Vec<_> = ack.header_values("Route").collect();
    assert_eq!(
        routes,
        [
            format!("<sip:{};lr>", peer.addr()),
            "<sip:10.9.9.9:5099;lr>".to_string()
        ]
    );
    assert_eq!(ack.cseq(), Some((inv.cseq().unwrap().0, "ACK")));
    assert!(ack.header_value("To").unwrap().contains("tag=callee"));
    let ack_branch = Via::parse(ack.header_value("Via").unwrap())
        .unwrap()
        .branch()
        .map(str::to_owned);
    assert_ne!(
        ack_branch.as_deref(),
        inv.top_via().unwrap().branch(),
        "§17.1.1.3: the 2xx ACK is its own transaction"
    );
    // The 200 again (our ACK lost): ACKed again, identically.
    peer.answer(&inv, from, "200 OK", &extra, Some("callee"))
        .await;
    let (again, _, _) = peer.recv(Method::Ack).await;
    assert_eq!(again.header_value("Via"), ack.header_value("Via"));
}
