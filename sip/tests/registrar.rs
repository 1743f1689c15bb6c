//! The endpoint through its public interface, over real UDP and TCP sockets on 127.0.0.1
//! port 0: a hand-written phone sends REGISTERs and reads the answers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sip::auth::{Algorithm, StaticUsers};
use sip::registrar::{BindingEvent, MemoryStore};
use sip::rsip;
use sip::{Endpoint, EndpointConfig, Target};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

async fn start_with(store: Arc<MemoryStore>, auth: bool) -> Endpoint {
    start_cfg(store, auth, |_| {}).await
}

async fn start_cfg(
    store: Arc<MemoryStore>,
    auth: bool,
    tweak: impl FnOnce(&mut EndpointConfig),
) -> Endpoint {
    let mut cfg = EndpointConfig::default();
    cfg.transport.listen = vec!["127.0.0.1:0".parse().unwrap()];
    cfg.auth.realm = "sipdm.test".into();
    cfg.auth.secret = b"shared-secret".to_vec();
    cfg.auth.algorithms = vec![Algorithm::Md5, Algorithm::Sha256];
    cfg.registrar.write_interval = Duration::from_millis(20);
    let users = StaticUsers {
        users: HashMap::from([
            ("1000".to_string(), "pw1000".to_string()),
            ("1001".to_string(), "pw1001".to_string()),
        ]),
        methods: if auth {
            vec![rsip::Method::Register]
        } else {
            vec![]
        },
    };
    tweak(&mut cfg);
    Endpoint::start(cfg, store, Arc::new(users), vec![])
        .await
        .expect("endpoint starts")
}

async fn start(auth: bool) -> (Endpoint, Arc<MemoryStore>) {
    let store = Arc::new(MemoryStore::default());
    (start_with(store.clone(), auth).await, store)
}

struct Phone {
    sock: UdpSocket,
    server: SocketAddr,
}

impl Phone {
    async fn new(server: SocketAddr) -> Phone {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        Phone { sock, server }
    }
    fn addr(&self) -> SocketAddr {
        self.sock.local_addr().unwrap()
    }
    async fn send(&self, text: &str) {
        self.sock
            .send_to(text.as_bytes(), self.server)
            .await
            .unwrap();
    }
    async fn recv(&self) -> Option<String> {
        let mut buf = vec![0u8; 65536];
        match tokio::time::timeout(Duration::from_secs(2), self.sock.recv_from(&mut buf)).await {
            Ok(Ok((n, _))) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
            _ => None,
        }
    }
    async fn transact(&self, text: &str) -> String {
        self.send(text).await;
        self.recv().await.expect("a response")
    }
}

fn register(
    user: &str,
    contact: SocketAddr,
    transport: &str,
    branch: &str,
    cseq: u32,
    extra: &str,
) -> String {
    format!(
        "REGISTER sip:sipdm.test SIP/2.0\r\n\
         Via: SIP/2.0/{transport} {contact};branch=z9hG4bK{branch};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{user}@sipdm.test>;tag=ft{user}\r\n\
         To: <sip:{user}@sipdm.test>\r\n\
         Call-ID: cid-{user}-{transport}\r\n\
         CSeq: {cseq} REGISTER\r\n\
         Contact: <sip:{user}@{contact};transport={t}>\r\n\
         {extra}\
         Content-Length: 0\r\n\r\n",
        t = transport.to_lowercase()
    )
}

fn header<'a>(msg: &'a str, name: &str) -> Vec<&'a str> {
    msg.split("\r\n")
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
        .collect()
}

fn param<'a>(challenge: &'a str, name: &str) -> Option<&'a str> {
    challenge
        .split(',')
        .filter_map(|p| p.trim().trim_start_matches("Digest ").split_once('='))
        .find(|(k, _)| k.trim() == name)
        .map(|(_, v)| v.trim_matches('"'))
}

/// Authorization header answering `challenge` (qop=auth, nc as given).
fn authorization(challenge: &str, user: &str, password: &str, nc: u32) -> String {
    let realm = param(challenge, "realm").unwrap();
    let nonce = param(challenge, "nonce").unwrap();
    let alg = Algorithm::parse(param(challenge, "algorithm").unwrap_or("MD5")).unwrap();
    let uri = "sip:sipdm.test";
    let ha1 = alg.hash(&[user, realm, password]);
    let ha2 = alg.hash(&["REGISTER", uri]);
    let nc = format!("{nc:08x}");
    let response = alg.hash(&[&ha1, nonce, &nc, "abcdef", "auth", &ha2]);
    format!(
        "Authorization: Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{response}\", algorithm={}, qop=auth, nc={nc}, cnonce=\"abcdef\"\r\n",
        alg.as_str()
    )
}

#[tokio::test]
async fn udp_register_challenge_digest_refresh_unregister() {
    let (ep, store) = start(true).await;
    let mut events = ep.registrar().subscribe();
    let phone = Phone::new(ep.local_addr()).await;

    let r = phone
        .transact(&register("1000", phone.addr(), "UDP", "a1", 1, ""))
        .await;
    assert!(r.starts_with("SIP/2.0 401 "), "{r}");
    let challenges = header(&r, "WWW-Authenticate");
    assert_eq!(challenges.len(), 2, "MD5 and SHA-256 offered: {r}");
    assert!(challenges[0].contains("algorithm=MD5") && challenges[1].contains("algorithm=SHA-256"));
    // RFC 3581: rport filled in, received not needed (same address).
    assert!(
        header(&r, "Via")[0].contains(&format!("rport={}", phone.addr().port())),
        "{r}"
    );

    let auth = authorization(challenges[0], "1000", "pw1000", 1);
    let r = phone
        .transact(&register("1000", phone.addr(), "UDP", "a2", 2, &auth))
        .await;
    assert!(r.starts_with("SIP/2.0 200 "), "{r}");
    let contacts = header(&r, "Contact");
    assert_eq!(contacts.len(), 1);
    assert!(
        contacts[0].contains("expires=3600") || contacts[0].contains("expires=3599"),
        "{r}"
    );
    assert!(header(&r, "To")[0].contains("tag="));

    let b = ep.registrar().bindings("1000");
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].device.as_deref(), Some("1000"));
    assert_eq!(b[0].flow.map(|f| f.remote), Some(phone.addr()));
    assert!(ep.registrar().binding_of_device("1000").is_some());
    assert!(matches!(
        events.recv().await.unwrap(),
        BindingEvent::Inserted(_)
    ));

    // Refresh with the same nonce, next nc, shorter expiry.
    let auth = authorization(challenges[0], "1000", "pw1000", 2);
    let r = phone
        .transact(&register(
            "1000",
            phone.addr(),
            "UDP",
            "a3",
            3,
            &format!("{auth}Expires: 600\r\n"),
        ))
        .await;
    assert!(r.starts_with("SIP/2.0 200 "), "{r}");
    assert!(
        header(&r, "Contact")[0].contains("expires=600")
            || header(&r, "Contact")[0].contains("expires=599")
    );
    assert!(matches!(
        events.recv().await.unwrap(),
        BindingEvent::Refreshed(_)
    ));

    // Replayed nc is refused with a fresh, stale challenge.
    let r = phone
        .transact(&register("1000", phone.addr(), "UDP", "a4", 4, &auth))
        .await;
    assert!(
        r.starts_with("SIP/2.0 401 ") && r.contains("stale=true"),
        "{r}"
    );

    // Unregister.
    let auth = authorization(challenges[0], "1000", "pw1000", 3);
    let r = phone
        .transact(&register(
            "1000",
            phone.addr(),
            "UDP",
            "a5",
            5,
            &format!("{auth}Expires: 0\r\n"),
        ))
        .await;
    assert!(r.starts_with("SIP/2.0 200 "), "{r}");
    assert!(header(&r, "Contact").is_empty(), "{r}");
    assert!(ep.registrar().bindings("1000").is_empty());
    assert!(matches!(
        events.recv().await.unwrap(),
        BindingEvent::Removed(_)
    ));

    ep.shutdown().await;
    assert!(store.bindings.lock().is_empty());
}

#[tokio::test]
async fn sha256_digest_and_wrong_password() {
    let (ep, _) = start(true).await;
    let phone = Phone::new(ep.local_addr()).await;
    let r = phone
        .transact(&register("1001", phone.addr(), "UDP", "s1", 1, ""))
        .await;
    let sha = header(&r, "WWW-Authenticate")
        .into_iter()
        .find(|c| c.contains("SHA-256"))
        .unwrap()
        .to_string();
    let bad = authorization(&sha, "1001", "wrong", 1);
    let r = phone
        .transact(&register("1001", phone.addr(), "UDP", "s2", 2, &bad))
        .await;
    assert!(r.starts_with("SIP/2.0 401 "), "{r}");
    // Another user's credentials cannot register this AOR.
    let other = authorization(&sha, "1000", "pw1000", 1);
    let r = phone
        .transact(&register("1001", phone.addr(), "UDP", "s3", 3, &other))
        .await;
    assert!(r.starts_with("SIP/2.0 401 "), "{r}");
    let good = authorization(&sha, "1001", "pw1001", 2);
    let r = phone
        .transact(&register("1001", phone.addr(), "UDP", "s4", 4, &good))
        .await;
    assert!(r.starts_with("SIP/2.0 200 "), "{r}");
    ep.shutdown().await;
}

#[tokio::test]
async fn interval_too_brief_is_423_with_min_expires() {
    let (ep, _) = start(false).await;
    let phone = Phone::new(ep.local_addr()).await;
    let r = phone
        .transact(&register(
            "2000",
            phone.addr(),
            "UDP",
            "b1",
            1,
            "Expires: 10\r\n",
        ))
        .await;
    assert!(r.starts_with("SIP/2.0 423 "), "{r}");
    assert_eq!(header(&r, "Min-Expires"), ["60"]);
    assert!(ep.registrar().bindings("2000").is_empty());
    ep.shutdown().await;
}

#[tokio::test]
async fn retransmission_gets_same_response_and_is_processed_once() {
    let (ep, _) = start(false).await;
    let phone = Phone::new(ep.local_addr()).await;
    let msg = register("2001", phone.addr(), "UDP", "rtx", 1, "");
    let first = phone.transact(&msg).await;
    let second = phone.transact(&msg).await;
    assert!(first.starts_with("SIP/2.0 200 "));
    assert_eq!(first, second, "byte-identical retransmitted response");
    let s = ep.stats().snapshot();
    assert_eq!(s.registrations_ok, 1);
    assert_eq!(s.retransmissions_absorbed, 1);
    ep.shutdown().await;
}

#[tokio::test]
async fn several_contacts_q_values_star_and_out_of_order() {
    let (ep, _) = start(false).await;
    let phone = Phone::new(ep.local_addr()).await;
    let a = phone.addr();
    let msg = register("2002", a, "UDP", "m1", 5, "Contact: <sip:2002@10.9.9.9:5070>;q=0.5;expires=120;+sip.instance=\"<urn:uuid:00000000-0000-0000-0000-000000000001>\";reg-id=1\r\n");
    let r = phone.transact(&msg).await;
    assert!(r.starts_with("SIP/2.0 200 "), "{r}");
    let contacts = header(&r, "Contact");
    assert_eq!(contacts.len(), 2, "{r}");
    let second = contacts.iter().find(|c| c.contains("10.9.9.9")).unwrap();
    assert!(
        second.contains("q=0.5")
            && second.contains("+sip.instance=\"<urn:uuid:00000000-0000-0000-0000-000000000001>\"")
            && second.contains("reg-id=1"),
        "{second}"
    );
    let b = ep.registrar().bindings("2002");
    assert!(b.iter().any(|b| b.reg_id == Some(1) && b.q == Some(500)));

    // Same Call-ID, lower CSeq: refused, nothing changes.
    let r = phone
        .transact(&register("2002", a, "UDP", "m2", 4, "Expires: 0\r\n"))
        .await;
    assert!(r.starts_with("SIP/2.0 500 "), "{r}");
    assert_eq!(ep.registrar().bindings("2002").len(), 2);

    // Contact: * without Expires: 0 is a 400.
    let star = register("2002", a, "UDP", "m3", 6, "").replace(
        &format!("Contact: <sip:2002@{a};transport=udp>"),
        "Contact: *",
    );
    let r = phone.transact(&star).await;
    assert!(r.starts_with("SIP/2.0 400 "), "{r}");
    let star = register("2002", a, "UDP", "m4", 7, "Expires: 0\r\n").replace(
        &format!("Contact: <sip:2002@{a};transport=udp>"),
        "Contact: *",
    );
    let r = phone.transact(&star).await;
    assert!(r.starts_with("SIP/2.0 200 "), "{r}");
    assert!(ep.registrar().bindings("2002").is_empty());
    ep.shutdown().await;
}

#[tokio::test]
async fn tcp_pipelined_registers_and_framing() {
    let (ep, _) = start(false).await;
    let mut s = TcpStream::connect(ep.local_addr()).await.unwrap();
    let local = s.local_addr().unwrap();
    let mut both = register("3000", local, "TCP", "t1", 1, "");
    both.push_str(&register("3001", local, "TCP", "t2", 1, ""));
    // Written in two pieces that split a message in the middle.
    let (x, y) = both.split_at(both.len() / 2 + 7);
    s.write_all(x.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    s.write_all(y.as_bytes()).await.unwrap();
    let mut got = String::new();
    let mut buf = [0u8; 8192];
    while got.matches("SIP/2.0 200 ").count() < 2 {
        let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
            .await
            .expect("responses")
            .unwrap();
        assert!(n > 0);
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let b = ep.registrar().bindings("3001");
    assert_eq!(b.len(), 1);
    let flow = b[0].flow.unwrap();
    assert_eq!(flow.protocol, sip::transport::Protocol::Tcp);
    assert!(ep.flow_alive(&flow));
    ep.shutdown().await;
}

#[tokio::test]
async fn malformed_input_answered_or_dropped() {
    let (ep, _) = start(false).await;
    let phone = Phone::new(ep.local_addr()).await;
    let a = phone.addr();
    // Content-Length larger than the body.
    let bad = register("4000", a, "UDP", "c1", 1, "").replace(
        "Content-Length: 0\r\n\r\n",
        "Content-Length: 50\r\n\r\nshort",
    );
    let r = phone.transact(&bad).await;
    assert!(r.starts_with("SIP/2.0 400 Content-Length Mismatch"), "{r}");
    // Unknown method.
    let r = phone
        .transact(&register("4000", a, "UDP", "c2", 1, "").replace("REGISTER", "FROBNICATE"))
        .await;
    assert!(r.starts_with("SIP/2.0 501 "), "{r}");
    // Compact forms, folding and bare LF are fine.
    let compact = format!("REGISTER sip:sipdm.test SIP/2.0\nv: SIP/2.0/UDP {a};branch=z9hG4bKc3\ni : cid-compact\nf: <sip:4001@sipdm.test>;tag=x\nt: <sip:4001@sipdm.test>\nCSeq: 1\n REGISTER\nm: <sip:4001@{a}>\nl: 0\n\n");
    let r = phone.transact(&compact).await;
    assert!(r.starts_with("SIP/2.0 200 "), "{r}");
    // A broken header line: still answered 400 from the headers that read.
    let broken = register("4000", a, "UDP", "c7", 1, "this is not a header\r\n");
    let r = phone.transact(&broken).await;
    assert!(r.starts_with("SIP/2.0 400 "), "{r}");
    // Garbage: dropped and counted.
    phone.send("\x01\x02 not sip at all\r\n\r\n").await;
    assert!(phone.recv().await.is_none());
    assert!(ep.stats().snapshot().malformed_dropped >= 1);
    // OPTIONS: 200 with Allow and Accept.
    let opts = register("4000", a, "UDP", "c5", 1, "").replace("REGISTER", "OPTIONS");
    let r = phone.transact(&opts).await;
    assert!(
        r.starts_with("SIP/2.0 200 ")
            && !header(&r, "Allow").is_empty()
            && !header(&r, "Accept").is_empty(),
        "{r}"
    );
    // A known method nobody handles: 405 with Allow.
    let r = phone
        .transact(&register("4000", a, "UDP", "c6", 1, "").replace("REGISTER", "MESSAGE"))
        .await;
    assert!(
        r.starts_with("SIP/2.0 405 ") && !header(&r, "Allow").is_empty(),
        "{r}"
    );
    ep.shutdown().await;
}

#[tokio::test]
async fn send_request_down_the_registered_flow() {
    let (ep, _) = start(false).await;
    let phone = Phone::new(ep.local_addr()).await;
    let r = phone
        .transact(&register("5000", phone.addr(), "UDP", "n1", 1, ""))
        .await;
    assert!(r.starts_with("SIP/2.0 200 "));
    let b = ep.registrar().bindings("5000").pop().unwrap();
    let notify = format!(
        "NOTIFY {} SIP/2.0\r\nFrom: <sip:sipdm@sipdm.test>;tag=n\r\nTo: <sip:5000@sipdm.test>\r\nCall-ID: notify-1\r\nCSeq: 1 NOTIFY\r\nEvent: check-sync\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        b.contact
    );
    let rsip::SipMessage::Request(req) = sip::wire::parse::parse_bytes(notify.as_bytes()).unwrap()
    else {
        panic!()
    };
    let ep2 = ep.clone();
    let pending = tokio::spawn(async move { ep2.send_request(req, Target::Binding(b)).await });
    let got = phone.recv().await.expect("NOTIFY arrives");
    assert!(
        got.starts_with("NOTIFY ") && got.contains("Event: check-sync"),
        "{got}"
    );
    // Answer it: copy Via/From/To/Call-ID/CSeq.
    let mut resp = String::from("SIP/2.0 200 OK\r\n");
    for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
        for v in header(&got, name) {
            resp.push_str(&format!("{name}: {v}\r\n"));
        }
    }
    resp.push_str("Content-Length: 0\r\n\r\n");
    phone.send(&resp).await;
    let final_resp = pending.await.unwrap().expect("final response");
    assert_eq!(final_resp.status_code.code(), 200);
    ep.shutdown().await;
}

#[tokio::test]
async fn bindings_survive_restart() {
    let store = Arc::new(MemoryStore::default());
    let ep = start_with(store.clone(), false).await;
    let phone = Phone::new(ep.local_addr()).await;
    let r = phone
        .transact(&register("6000", phone.addr(), "UDP", "p1", 1, ""))
        .await;
    assert!(r.starts_with("SIP/2.0 200 "));
    ep.shutdown().await;
    assert_eq!(store.bindings.lock().len(), 1, "flushed at shutdown");
    let ep = start_with(store.clone(), false).await;
    let b = ep.registrar().bindings("6000");
    assert_eq!(b.len(), 1);
    assert_eq!(
        b[0].contact,
        format!("sip:6000@{};transport=udp", phone.addr())
    );
    ep.shutdown().await;
}

#[tokio::test]
async fn oversize_message_is_513_on_udp_and_tcp() {
    let ep = start_cfg(Arc::new(MemoryStore::default()), false, |c| {
        c.transport.max_message_size = 2000
    })
    .await;
    let phone = Phone::new(ep.local_addr()).await;
    let big = register(
        "7000",
        phone.addr(),
        "UDP",
        "o1",
        1,
        &format!("X-Pad: {}\r\n", "p".repeat(3000)),
    );
    let r = phone.transact(&big).await;
    assert!(r.starts_with("SIP/2.0 513 "), "{r}");

    let mut s = TcpStream::connect(ep.local_addr()).await.unwrap();
    let local = s.local_addr().unwrap();
    let big = register("7001", local, "TCP", "o2", 1, "")
        .replace("Content-Length: 0", "Content-Length: 5000");
    s.write_all(big.as_bytes()).await.unwrap();
    let mut buf = [0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
        .await
        .expect("answer")
        .unwrap();
    let r = String::from_utf8_lossy(&buf[..n]);
    assert!(r.starts_with("SIP/2.0 513 "), "{r}");
    ep.shutdown().await;
}

/// RFC 3261 §18.1.2, §21.5.14: a datagram above the size limit is answered 513 wherever its
/// headers are: a long header before From, To, Call-ID and CSeq, or a large body. Only one
/// that lacks what a response must copy goes unanswered (and is counted).
#[tokio::test]
async fn oversize_datagram_is_513_wherever_its_headers_are() {
    let ep = start_cfg(Arc::new(MemoryStore::default()), false, |c| {
        c.transport.max_message_size = 2000
    })
    .await;
    let phone = Phone::new(ep.local_addr()).await;
    // The padding comes right after the Via: the first 2000 bytes hold no From or CSeq.
    let padded_first = register("7100", phone.addr(), "UDP", "o3", 1, "").replacen(
        "Max-Forwards: 70\r\n",
        &format!("X-Pad: {}\r\nMax-Forwards: 70\r\n", "p".repeat(6000)),
        1,
    );
    let r = phone.transact(&padded_first).await;
    assert!(r.starts_with("SIP/2.0 513 Message Too Large\r\n"), "{r}");
    assert!(r.contains("branch=z9hG4bKo3"), "{r}");
    assert!(r.contains("CSeq: 1 REGISTER"), "{r}");
    assert!(r.contains("Call-ID: cid-7100-UDP"), "{r}");
    // A large body (an SDP of 20 000 bytes) on an INVITE.
    let body = "v".repeat(20_000);
    let invite = register("7101", phone.addr(), "UDP", "o4", 1, "")
        .replace("REGISTER sip:", "INVITE sip:")
        .replace("CSeq: 1 REGISTER", "CSeq: 1 INVITE")
        .replace(
            "Content-Length: 0\r\n\r\n",
            &format!(
                "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ),
        );
    let r = phone.transact(&invite).await;
    assert!(r.starts_with("SIP/2.0 513 "), "{r}");
    assert!(r.contains("CSeq: 1 INVITE"), "{r}");
    // Without a Call-ID no response can be built: dropped and counted.
    let before = ep.stats().snapshot().malformed_dropped;
    let headless = padded_first.replace("Call-ID: cid-7100-UDP\r\n", "");
    phone.send(&headless).await;
    let mut counted = false;
    for _ in 0..100 {
        if ep.stats().snapshot().malformed_dropped > before {
            counted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(counted, "an unanswerable oversize datagram is counted");
    assert_eq!(ep.stats().snapshot().malformed_answered, 2);
    ep.shutdown().await;
}

#[tokio::test]
async fn send_request_down_the_registered_tcp_connection() {
    let (ep, _) = start(false).await;
    let mut s = TcpStream::connect(ep.local_addr()).await.unwrap();
    let local = s.local_addr().unwrap();
    s.write_all(register("5100", local, "TCP", "tn1", 1, "").as_bytes())
        .await
        .unwrap();
    let mut buf = vec![0u8; 8192];
    let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("SIP/2.0 200 "));
    let b = ep.registrar().bindings("5100").pop().unwrap();
    let notify = format!(
        "NOTIFY {} SIP/2.0\r\nFrom: <sip:sipdm@sipdm.test>;tag=n\r\nTo: <sip:5100@sipdm.test>\r\nCall-ID: notify-tcp\r\nCSeq: 1 NOTIFY\r\nEvent: check-sync\r\nContent-Length: 0\r\n\r\n",
        b.contact
    );
    let rsip::SipMessage::Request(req) = sip::wire::parse::parse_bytes(notify.as_bytes()).unwrap()
    else {
        panic!()
    };
    let ep2 = ep.clone();
    let pending = tokio::spawn(async move { ep2.send_request(req, Target::Binding(b)).await });
    // The NOTIFY arrives on the phone's own connection (no new connection to its contact).
    let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let got = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(
        got.starts_with("NOTIFY ") && header(&got, "Via")[0].starts_with("SIP/2.0/TCP"),
        "{got}"
    );
    let mut resp = String::from("SIP/2.0 200 OK\r\n");
    for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
        for v in header(&got, name) {
            resp.push_str(&format!("{name}: {v}\r\n"));
        }
    }
    resp.push_str("Content-Length: 0\r\n\r\n");
    s.write_all(resp.as_bytes()).await.unwrap();
    assert_eq!(pending.await.unwrap().unwrap().status_code.code(), 200);
    ep.shutdown().await;
}

#[tokio::test]
async fn ipv6_loopback_and_required_extensions() {
    let ep = match tokio::net::UdpSocket::bind("[::1]:0").await {
        Ok(_) => {
            start_cfg(Arc::new(MemoryStore::default()), false, |c| {
                c.transport.listen = vec!["[::1]:0".parse().unwrap()]
            })
            .await
        }
        Err(_) => return, // no IPv6 on this host
    };
    let sock = UdpSocket::bind("[::1]:0").await.unwrap();
    let phone = Phone {
        sock,
        server: ep.local_addr(),
    };
    let r = phone
        .transact(&register("8000", phone.addr(), "UDP", "v6", 1, ""))
        .await;
    assert!(r.starts_with("SIP/2.0 200 "), "{r}");
    assert_eq!(
        ep.registrar().bindings("8000")[0].flow.unwrap().remote,
        phone.addr()
    );
    let r = phone
        .transact(&register(
            "8000",
            phone.addr(),
            "UDP",
            "v6b",
            2,
            "Require: path, foo\r\n",
        ))
        .await;
    assert!(
        r.starts_with("SIP/2.0 420 ") && header(&r, "Unsupported") == ["foo"],
        "{r}"
    );
    ep.shutdown().await;
}

#[tokio::test]
async fn bindings_expire_with_an_event_and_leave_the_store() {
    let store = Arc::new(MemoryStore::default());
    let ep = start_cfg(store.clone(), false, |c| {
        c.registrar.min_expires = 1;
        c.registrar.sweep_interval = Duration::from_millis(200);
    })
    .await;
    let mut events = ep.registrar().subscribe();
    let phone = Phone::new(ep.local_addr()).await;
    let r = phone
        .transact(&register(
            "9000",
            phone.addr(),
            "UDP",
            "e1",
            1,
            "Expires: 1\r\n",
        ))
        .await;
    assert!(r.starts_with("SIP/2.0 200 "), "{r}");
    assert!(matches!(
        events.recv().await.unwrap(),
        BindingEvent::Inserted(_)
    ));
    let ev = tokio::time::timeout(Duration::from_secs(4), events.recv())
        .await
        .expect("expiry in time")
        .unwrap();
    assert!(
        matches!(ev, BindingEvent::Expired(ref b) if b.aor == "9000"),
        "{ev:?}"
    );
    assert!(ep.registrar().bindings("9000").is_empty());
    ep.registrar().flush().await;
    assert!(store.bindings.lock().is_empty());
    ep.shutdown().await;
}

#[tokio::test]
async fn notify_answers_a_phone_challenge() {
    let (ep, _) = start(false).await;
    let phone = Phone::new(ep.local_addr()).await;
    let r = phone
        .transact(&register("5200", phone.addr(), "UDP", "ch1", 1, ""))
        .await;
    assert!(r.starts_with("SIP/2.0 200 "));
    let b = ep.registrar().bindings("5200").pop().unwrap();
    let notify = format!(
        "NOTIFY {} SIP/2.0\r\nFrom: <sip:sipdm@sipdm.test>;tag=n\r\nTo: <sip:5200@sipdm.test>\r\nCall-ID: notify-auth\r\nCSeq: 7 NOTIFY\r\nEvent: resync\r\nContent-Length: 0\r\n\r\n",
        b.contact
    );
    let rsip::SipMessage::Request(req) = sip::wire::parse::parse_bytes(notify.as_bytes()).unwrap()
    else {
        panic!()
    };
    let ep2 = ep.clone();
    let pending = tokio::spawn(async move {
        ep2.send_request_authenticated(req, Target::Binding(b), "admin", "phonepw")
            .await
    });
    let reply = |got: &str, status: &str, extra: &str| {
        let mut resp = format!("SIP/2.0 {status}\r\n");
        for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
            for v in header(got, name) {
                resp.push_str(&format!("{name}: {v}\r\n"));
            }
        }
        resp.push_str(extra);
        resp.push_str("Content-Length: 0\r\n\r\n");
        resp
    };
    // Like a Cisco SPA: challenge first.
    let got = phone.recv().await.unwrap();
    phone
        .send(&reply(
            &got,
            "401 Unauthorized",
            "WWW-Authenticate: Digest realm=\"spa\", nonce=\"abc123\", qop=\"auth\"\r\n",
        ))
        .await;
    let retry = phone.recv().await.unwrap();
    assert_eq!(header(&retry, "CSeq"), ["8 NOTIFY"]);
    let auth = sip::auth::DigestResponse::parse(header(&retry, "Authorization")[0]).unwrap();
    assert_eq!(
        (auth.username.as_str(), auth.realm.as_str()),
        ("admin", "spa")
    );
    let ha1 = Algorithm::Md5.hash(&["admin", "spa", "phonepw"]);
    assert_eq!(auth.expected("NOTIFY", &ha1).unwrap(), auth.response);
    phone.send(&reply(&retry, "200 OK", "")).await;
    assert_eq!(pending.await.unwrap().unwrap().status_code.code(), 200);
    ep.shutdown().await;
}

#[tokio::test]
async fn shared_aor_holds_many_phones_and_lists_only_the_requesters_binding() {
    let ep = start_cfg(Arc::new(MemoryStore::default()), false, |c| {
        c.registrar.shared_aors = vec!["gcti_provisioning".into()];
        c.registrar.max_contacts_per_aor = 2;
    })
    .await;
    let mut phones = Vec::new();
    for _ in 0..5 {
        phones.push(Phone::new(ep.local_addr()).await);
    }
    for (i, p) in phones.iter().enumerate() {
        let msg = register(
            "gcti_provisioning",
            p.addr(),
            "UDP",
            &format!("g{i}"),
            1,
            "",
        )
        .replace(
            "Call-ID: cid-gcti_provisioning-UDP",
            &format!("Call-ID: gcti-{i}"),
        );
        let r = p.transact(&msg).await;
        assert!(r.starts_with("SIP/2.0 200 "), "{r}");
        let contacts = header(&r, "Contact");
        assert_eq!(contacts.len(), 1, "only its own binding: {r}");
        assert!(contacts[0].contains(&p.addr().to_string()));
    }
    assert_eq!(
        ep.registrar().bindings("gcti_provisioning").len(),
        5,
        "not limited by max_contacts_per_aor"
    );
    ep.shutdown().await;
}

/// Several UDP receiver threads read one socket, so copies of one request can be handled at
/// the same moment on different threads: each REGISTER must still be processed once, and
/// every copy that gets an answer gets the same bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_racing_on_several_udp_threads_are_processed_once() {
    let store = Arc::new(MemoryStore::default());
    let ep = start_cfg(store, false, |c| c.transport.udp_threads = 4).await;
    let phone = Phone::new(ep.local_addr()).await;
    const AORS: usize = 50;
    const COPIES: usize = 8;
    let mut answers: HashMap<String, Vec<String>> = HashMap::new();
    // In groups, so that the answers fit the phone's receive buffer.
    for group in (0..AORS).collect::<Vec<_>>().chunks(10) {
        for i in group {
            let user = format!("{}", 3000 + i);
            let msg = register(&user, phone.addr(), "UDP", &format!("race{i}"), 1, "");
            for _ in 0..COPIES {
                phone.send(&msg).await;
            }
        }
        let mut buf = vec![0u8; 65536];
        while let Ok(Ok((n, _))) =
            tokio::time::timeout(Duration::from_millis(300), phone.sock.recv_from(&mut buf)).await
        {
            let r = String::from_utf8_lossy(&buf[..n]).into_owned();
            assert!(r.starts_with("SIP/2.0 200 "), "{r}");
            let call_id = header(&r, "Call-ID")[0].to_string();
            answers.entry(call_id).or_default().push(r);
        }
    }
    assert_eq!(answers.len(), AORS, "every REGISTER answered");
    for copies in answers.values() {
        assert!(
            copies.iter().all(|c| c == &copies[0]),
            "one response per transaction"
        );
    }
    let s = ep.stats().snapshot();
    assert_eq!(s.registrations_ok, AORS as u64);
    assert_eq!(s.retransmissions_absorbed, (AORS * (COPIES - 1)) as u64);
    for i in 0..AORS {
        assert_eq!(ep.registrar().bindings(&format!("{}", 3000 + i)).len(), 1);
    }
    ep.shutdown().await;
}

/// An endpoint whose runtime goes away without a shutdown (a test that ends, a process
/// tearing down) still ends its UDP receiver threads, which hold descriptors of the socket:
/// its port becomes free again.
#[test]
fn udp_receivers_end_with_their_endpoint() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let addr = rt.block_on(async {
        let ep = start_cfg(Arc::new(MemoryStore::default()), false, |c| {
            c.transport.udp_threads = 3
        })
        .await;
        let phone = Phone::new(ep.local_addr()).await;
        let r = phone
            .transact(&register("3100", phone.addr(), "UDP", "gone", 1, ""))
            .await;
        assert!(r.starts_with("SIP/2.0 200 "), "{r}");
        ep.local_addr()
    });
    drop(rt);
    let rebound = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        std::net::UdpSocket::bind(addr).is_ok()
    });
    assert!(
        rebound,
        "{addr} still held after the endpoint's runtime ended"
    );
}

/// A credential source that fails with the status the server crate chose for its fault.
struct Failing(u16);

impl sip::auth::Authenticator for Failing {
    fn must_authenticate<'a>(
        &'a self,
        _: &'a str,
        _: &'a rsip::Method,
    ) -> sip::BoxFuture<'a, Result<bool, sip::auth::AuthError>> {
        let status = self.0;
        Box::pin(async move { Err(sip::auth::AuthError::new(status, "database down")) })
    }
    fn credential<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
        _: &'a str,
    ) -> sip::BoxFuture<'a, Result<Option<sip::auth::Credential>, sip::auth::AuthError>> {
        let status = self.0;
        Box::pin(async move { Err(sip::auth::AuthError::new(status, "database down")) })
    }
}

/// A credential store that is down for now is 503 with Retry-After (the phone tries its
/// next server, RFC 3263 §4.3); one that is broken is 500; neither is a challenge, and
/// nothing is bound.
#[tokio::test]
async fn credential_source_down_is_503_with_retry_after() {
    for (status, retry_after) in [(503, true), (500, false)] {
        let mut cfg = EndpointConfig::default();
        cfg.transport.listen = vec!["127.0.0.1:0".parse().unwrap()];
        cfg.auth.realm = "sipdm.test".into();
        let ep = Endpoint::start(
            cfg,
            Arc::new(MemoryStore::default()),
            Arc::new(Failing(status)),
            vec![],
        )
        .await
        .expect("endpoint starts");
        let phone = Phone::new(ep.local_addr()).await;
        let r = phone
            .transact(&register("1000", phone.addr(), "UDP", "b1", 1, ""))
            .await;
        assert!(r.starts_with(&format!("SIP/2.0 {status} ")), "{r}");
        assert_eq!(
            header(&r, "Retry-After").len(),
            usize::from(retry_after),
            "{r}"
        );
        assert!(header(&r, "WWW-Authenticate").is_empty(), "{r}");
        assert!(ep.registrar().bindings("1000").is_empty());
        ep.shutdown().await;
    }
}

/// RFC 3261 §8.2: a request that is malformed is refused with 400 before anything else looks
/// at it — a registrar that wants credentials must not challenge it first (a 401 would invite
/// the sender to retry the same broken request with a digest).
#[tokio::test]
async fn malformed_requests_are_400_before_any_challenge() {
    let (ep, _) = start(true).await;
    let phone = Phone::new(ep.local_addr()).await;
    let a = phone.addr();
    let cases = [
        (
            "Max-Forwards",
            "Max-Forwards: 70\r\n",
            "Max-Forwards: seventy\r\n",
        ),
        (
            "Max-Forwards",
            "Max-Forwards: 70\r\n",
            "Max-Forwards: 70000000000\r\n",
        ),
        (
            "Expires",
            "Content-Length",
            "Expires: soon\r\nContent-Length",
        ),
        ("Expires", "Content-Length", "Expires: -1\r\nContent-Length"),
        ("NUL", "Call-ID: cid-", "Call-ID: c\0id-"),
    ];
    for (i, (what, from, to)) in cases.iter().enumerate() {
        let req = register("1000", a, "UDP", &format!("m{i}"), 1, "").replacen(from, to, 1);
        assert_ne!(req, register("1000", a, "UDP", &format!("m{i}"), 1, ""));
        let r = phone.transact(&req).await;
        assert!(r.starts_with("SIP/2.0 400 "), "{what}: {r}");
        assert!(header(&r, "WWW-Authenticate").is_empty(), "{what}: {r}");
    }
    // The same REGISTER, well formed: challenged as before.
    let r = phone
        .transact(&register("1000", a, "UDP", "ok", 1, "Expires: 60\r\n"))
        .await;
    assert!(r.starts_with("SIP/2.0 401 "), "{r}");
    assert!(ep.registrar().bindings("1000").is_empty());
    ep.shutdown().await;
}
