//! Overload through the endpoint's public interface, over UDP on 127.0.0.1 port 0: a request
//! sipdm will not take on now is answered 503 with Retry-After (never dropped in silence),
//! what was taken on finishes, and what the kernel drops is counted.
//!
//! Overload is provoked deterministically: a handler that holds its request until the test
//! lets it go (in progress, limit 1), or one that keeps the only receiver thread busy while
//! the next datagram waits in the receive buffer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sip::auth::NoAuthentication;
use sip::overload::OverloadConfig;
use sip::registrar::MemoryStore;
use sip::rsip::{Method, StatusCode};
use sip::{BoxFuture, Endpoint, EndpointConfig, IncomingRequest, RequestHandler};
use tokio::net::UdpSocket;
use tokio::sync::Notify;

/// Holds every OPTIONS until released (async: the receiver thread is free meanwhile), then
/// answers 200; with `block_thread`, sleeps on the thread that polls it instead.
struct Holder {
    release: Notify,
    block_thread: Option<Duration>,
}

impl RequestHandler for Holder {
    fn handle<'a>(
        &'a self,
        _ep: &'a Endpoint,
        req: IncomingRequest,
    ) -> BoxFuture<'a, Option<IncomingRequest>> {
        Box::pin(async move {
            if req.request.method != Method::Options {
                return Some(req);
            }
            match self.block_thread {
                // A handler doing CPU-bound work on the receiver thread (what a digest storm
                // is to the one UDP thread), simulated by a sleep.
                Some(d) => std::thread::sleep(d),
                None => self.release.notified().await,
            }
            req.reply(StatusCode::OK);
            None
        })
    }
}

async fn start(overload: OverloadConfig, holder: Arc<Holder>, udp_buffer: usize) -> Endpoint {
    let mut cfg = EndpointConfig::default();
    cfg.transport.listen = vec!["127.0.0.1:0".parse().unwrap()];
    cfg.transport.udp_threads = 1;
    cfg.transport.udp_buffer = udp_buffer;
    cfg.overload = overload;
    cfg.registrar.write_interval = Duration::from_millis(20);
    Endpoint::start(
        cfg,
        Arc::new(MemoryStore::default()),
        Arc::new(NoAuthentication),
        vec![holder],
    )
    .await
    .expect("endpoint starts")
}

struct Peer {
    sock: UdpSocket,
    server: SocketAddr,
}

impl Peer {
    async fn new(server: SocketAddr) -> Peer {
        Peer {
            sock: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            server,
        }
    }

    async fn send(&self, text: &str) {
        self.sock
            .send_to(text.as_bytes(), self.server)
            .await
            .unwrap();
    }

    /// The next datagram (bounded wait).
    async fn recv(&self) -> String {
        let mut buf = vec![0u8; 65536];
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), self.sock.recv_from(&mut buf))
            .await
            .expect("an answer within 5 s")
            .unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    fn request(&self, method: &str, branch: &str, to_tag: &str) -> String {
        let me = self.sock.local_addr().unwrap();
        format!(
            "{method} sip:sipdm.test SIP/2.0\r\n\
             Via: SIP/2.0/UDP {me};branch=z9hG4bK{branch};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:2000@sipdm.test>;tag=f{branch}\r\n\
             To: <sip:2000@sipdm.test>{to_tag}\r\n\
             Call-ID: call-{branch}\r\n\
             CSeq: 1 {method}\r\n\
             Contact: <sip:2000@{me}>\r\n\
             Content-Length: 0\r\n\r\n"
        )
    }
}

fn status(resp: &str) -> u16 {
    resp.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn header<'a>(resp: &'a str, name: &str) -> Option<&'a str> {
    resp.split("\r\n")
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

fn branch_of(resp: &str) -> &str {
    let via = header(resp, "Via").unwrap_or_default();
    via.split(";branch=z9hG4bK")
        .nth(1)
        .and_then(|b| b.split(';').next())
        .unwrap_or_default()
}

/// Bounded poll until the endpoint has `n` requests in progress.
async fn wait_in_progress(ep: &Endpoint, n: usize) {
    for _ in 0..500 {
        if ep.requests_in_progress() == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "expected {n} requests in progress, have {}",
        ep.requests_in_progress()
    );
}

/// Limit 1: one request held by its handler makes every new out-of-dialog request a 503 with
/// a Retry-After from the configured range, stateless (a retransmission of one is refused
/// again with the same To tag). The held request's own retransmission is absorbed, an
/// in-dialog request is still handled, and once the held one is answered new requests are
/// taken on again.
#[tokio::test]
async fn requests_beyond_the_limit_in_progress_are_answered_503_with_retry_after() {
    let holder = Arc::new(Holder {
        release: Notify::new(),
        block_thread: None,
    });
    let ep = start(
        OverloadConfig {
            max_in_progress: 1,
            max_queue_delay: Duration::ZERO,
            retry_after: 5..=15,
        },
        holder.clone(),
        1 << 20,
    )
    .await;
    let peer = Peer::new(ep.local_addr()).await;

    let held = peer.request("OPTIONS", "held", "");
    peer.send(&held).await;
    wait_in_progress(&ep, 1).await;

    let mut tags = Vec::new();
    for (method, branch) in [("REGISTER", "r1"), ("INVITE", "i1"), ("SUBSCRIBE", "s1")] {
        peer.send(&peer.request(method, branch, "")).await;
        let r = peer.recv().await;
        assert_eq!(status(&r), 503, "{method} while overloaded: {r}");
        assert_eq!(branch_of(&r), branch, "answers the {method}");
        let secs: u32 = header(&r, "Retry-After")
            .and_then(|v| v.parse().ok())
            .expect("a Retry-After in seconds");
        assert!((5..=15).contains(&secs), "Retry-After {secs}");
        assert!(header(&r, "CSeq").unwrap().ends_with(method), "{r}");
        tags.push(header(&r, "To").unwrap().to_string());
    }
    assert!(tags.iter().all(|t| t.contains(";tag=")), "{tags:?}");
    // Stateless: nothing kept. The REGISTER's retransmission is looked at afresh, refused
    // again, with the same To tag.
    peer.send(&peer.request("REGISTER", "r1", "")).await;
    let again = peer.recv().await;
    assert_eq!(status(&again), 503);
    assert_eq!(header(&again, "To").unwrap(), tags[0]);
    // The 503 to the INVITE is ACKed; the ACK is taken, not refused.
    peer.send(&peer.request("ACK", "i1", ";tag=x")).await;

    // The held request's retransmission is its transaction's (absorbed), and a request
    // inside a dialog (a To tag) is handled: the fallback's 405.
    peer.send(&held).await;
    peer.send(&peer.request("BYE", "b1", ";tag=dialog")).await;
    let bye = peer.recv().await;
    assert_eq!(branch_of(&bye), "b1", "the next answer is the BYE's: {bye}");
    assert_eq!(status(&bye), 405, "{bye}");

    holder.release.notify_one();
    let ok = peer.recv().await;
    assert_eq!((branch_of(&ok), status(&ok)), ("held", 200), "{ok}");
    wait_in_progress(&ep, 0).await;
    peer.send(&peer.request("REGISTER", "r2", "")).await;
    let r = peer.recv().await;
    assert_eq!((branch_of(&r), status(&r)), ("r2", 200), "{r}");

    let s = ep.stats().snapshot();
    assert_eq!(
        s.overload_rejected, 4,
        "three requests and one retransmission"
    );
    assert_eq!(s.dropped_overload, 0);
    ep.shutdown().await;
}

/// The only receiver thread is kept busy by a slow request: the next one waits in the
/// receive buffer longer than the queue delay allows and is answered 503, while the slow
/// one is answered normally; with the thread free again, requests are taken on.
#[tokio::test]
async fn a_request_that_waited_too_long_in_the_receive_buffer_is_answered_503() {
    let holder = Arc::new(Holder {
        release: Notify::new(),
        block_thread: Some(Duration::from_millis(600)),
    });
    let ep = start(
        OverloadConfig {
            max_in_progress: 0,
            max_queue_delay: Duration::from_millis(100),
            retry_after: 7..=7,
        },
        holder,
        1 << 20,
    )
    .await;
    let peer = Peer::new(ep.local_addr()).await;
    peer.send(&peer.request("OPTIONS", "slow", "")).await;
    peer.send(&peer.request("REGISTER", "late", "")).await;
    let mut answers = [peer.recv().await, peer.recv().await];
    answers.sort_by_key(|r| branch_of(r).to_string());
    assert_eq!(
        (branch_of(&answers[0]), status(&answers[0])),
        ("late", 503),
        "{}",
        answers[0]
    );
    assert_eq!(header(&answers[0], "Retry-After"), Some("7"));
    assert_eq!((branch_of(&answers[1]), status(&answers[1])), ("slow", 200));
    peer.send(&peer.request("REGISTER", "fresh", "")).await;
    let r = peer.recv().await;
    assert_eq!((branch_of(&r), status(&r)), ("fresh", 200), "{r}");
    assert_eq!(ep.stats().snapshot().overload_rejected, 1);
    ep.shutdown().await;
}

/// What the kernel drops when the receive buffer is full never reaches the endpoint and
/// cannot be answered; it is counted (the socket's drop count comes with the next datagram
/// queued after the drops).
#[tokio::test]
async fn datagrams_the_kernel_drops_are_counted() {
    let holder = Arc::new(Holder {
        release: Notify::new(),
        block_thread: Some(Duration::from_millis(500)),
    });
    // A tiny receive buffer (the kernel's minimum is a few KB) and no shedding.
    let ep = start(
        OverloadConfig {
            max_in_progress: 0,
            max_queue_delay: Duration::ZERO,
            retry_after: 5..=15,
        },
        holder,
        4096,
    )
    .await;
    let peer = Peer::new(ep.local_addr()).await;
    peer.send(&peer.request("OPTIONS", "slow", "")).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    const FLOOD: u64 = 100;
    for i in 0..FLOOD {
        peer.send(&peer.request("REGISTER", &format!("flood{i}"), ""))
            .await;
    }
    // The slow OPTIONS is answered, then whatever of the flood fitted in the buffer.
    let mut answered = 0u64;
    loop {
        let mut buf = vec![0u8; 65536];
        match tokio::time::timeout(Duration::from_secs(2), peer.sock.recv_from(&mut buf)).await {
            Ok(Ok(_)) => answered += 1,
            _ => break,
        }
        assert!(answered <= FLOOD + 1);
    }
    let flood_answered = answered - 1;
    assert!(
        flood_answered < FLOOD,
        "the kernel dropped some of the flood"
    );
    assert_eq!(ep.stats().snapshot().overload_rejected, 0);
    // One more datagram brings the socket's drop count.
    peer.send(&peer.request("REGISTER", "after", "")).await;
    let r = peer.recv().await;
    assert_eq!((branch_of(&r), status(&r)), ("after", 200), "{r}");
    assert_eq!(
        ep.stats().snapshot().udp_kernel_drops,
        FLOOD - flood_answered,
        "every datagram of the flood not answered was counted as dropped by the kernel"
    );
    ep.shutdown().await;
}
