//! SIP over TLS through the endpoint's public interface: a tokio-rustls client on 127.0.0.1
//! plays the phone, against a certificate from a CA made here with rcgen.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sip::auth::{Algorithm, StaticUsers};
use sip::endpoint::SendError;
use sip::registrar::MemoryStore;
use sip::rsip;
use sip::transport::{Protocol, TlsConfig};
use sip::{Endpoint, EndpointConfig, Target};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::{self, pki_types};

/// A CA, and a server certificate for localhost / 127.0.0.1 signed by it.
struct TestPki {
    ca: pki_types::CertificateDer<'static>,
    server: Arc<rustls::ServerConfig>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn test_pki() -> TestPki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "sip test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    let key = pki_types::PrivateKeyDer::Pkcs8(pki_types::PrivatePkcs8KeyDer::from(
        leaf_key.serialize_der(),
    ));
    let server = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone(), ca.der().clone()], key)
        .unwrap();
    TestPki {
        ca: ca.der().clone(),
        server: Arc::new(server),
    }
}

async fn start(pki: &TestPki, auth: bool) -> Endpoint {
    let mut cfg = EndpointConfig::default();
    cfg.transport.listen = vec!["127.0.0.1:0".parse().unwrap()];
    cfg.transport.tls = Some(TlsConfig::new(
        vec!["127.0.0.1:0".parse().unwrap()],
        pki.server.clone(),
    ));
    cfg.auth.realm = "sipdm.test".into();
    cfg.auth.secret = b"shared-secret".to_vec();
    cfg.auth.algorithms = vec![Algorithm::Md5];
    let users = StaticUsers {
        users: HashMap::from([("1000".to_string(), "pw1000".to_string())]),
        methods: if auth {
            vec![rsip::Method::Register]
        } else {
            vec![]
        },
    };
    Endpoint::start(
        cfg,
        Arc::new(MemoryStore::default()),
        Arc::new(users),
        vec![],
    )
    .await
    .expect("endpoint starts")
}

async fn tls_connect(pki: &TestPki, server: SocketAddr) -> TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.clone()).unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(server).await.unwrap();
    let name = pki_types::ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .expect("TLS handshake with the endpoint")
}

/// Reads one message off a stream: its header lines, then Content-Length bytes of body.
/// Bytes of a following message stay in `pending`.
async fn read_message<S: AsyncRead + Unpin>(s: &mut S, pending: &mut Vec<u8>) -> String {
    let mut buf = [0u8; 4096];
    for _ in 0..100 {
        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&pending[..end]).into_owned();
            let len: usize = header(&head, "Content-Length")
                .first()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if pending.len() >= end + 4 + len {
                let msg: Vec<u8> = pending.drain(..end + 4 + len).collect();
                return String::from_utf8_lossy(&msg).into_owned();
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("a message within 5 s")
            .expect("read");
        assert!(n > 0, "connection closed; had {pending:?}");
        pending.extend_from_slice(&buf[..n]);
    }
    panic!("no complete message in 100 reads: {pending:?}");
}

fn register(user: &str, local: SocketAddr, branch: &str, cseq: u32, extra: &str) -> String {
    format!(
        "REGISTER sip:sipdm.test SIP/2.0\r\n\
         Via: SIP/2.0/TLS {local};branch=z9hG4bK{branch};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{user}@sipdm.test>;tag=ft{user}\r\n\
         To: <sip:{user}@sipdm.test>\r\n\
         Call-ID: cid-{user}-tls\r\n\
         CSeq: {cseq} REGISTER\r\n\
         Contact: <sip:{user}@{local};transport=tls>\r\n\
         {extra}\
         Content-Length: 0\r\n\r\n"
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

fn authorization(challenge: &str, user: &str, password: &str) -> String {
    let realm = param(challenge, "realm").unwrap();
    let nonce = param(challenge, "nonce").unwrap();
    let alg = Algorithm::Md5;
    let uri = "sip:sipdm.test";
    let ha1 = alg.hash(&[user, realm, password]);
    let ha2 = alg.hash(&["REGISTER", uri]);
    let response = alg.hash(&[&ha1, nonce, "00000001", "abcdef", "auth", &ha2]);
    format!(
        "Authorization: Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{response}\", algorithm=MD5, qop=auth, nc=00000001, cnonce=\"abcdef\"\r\n"
    )
}

fn notify_to(contact: &str, call_id: &str) -> rsip::Request {
    let text = format!(
        "NOTIFY {contact} SIP/2.0\r\nFrom: <sip:sipdm@sipdm.test>;tag=n\r\nTo: <sip:1000@sipdm.test>\r\nCall-ID: {call_id}\r\nCSeq: 1 NOTIFY\r\nEvent: check-sync\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    match sip::wire::parse::parse_bytes(text.as_bytes()).unwrap() {
        rsip::SipMessage::Request(r) => r,
        _ => unreachable!(),
    }
}

/// The 200 a phone sends back: Via, From, To, Call-ID and CSeq copied.
fn ok_for(req: &str) -> String {
    let mut resp = String::from("SIP/2.0 200 OK\r\n");
    for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
        for v in header(req, name) {
            resp.push_str(&format!("{name}: {v}\r\n"));
        }
    }
    resp.push_str("Content-Length: 0\r\n\r\n");
    resp
}

#[tokio::test]
async fn register_over_tls_and_notify_down_the_same_connection() {
    let pki = test_pki();
    let ep = start(&pki, true).await;
    let tls_addr = ep.tls_local_addrs()[0];
    assert_ne!(
        tls_addr.port(),
        ep.local_addr().port(),
        "TLS has a port of its own"
    );
    let mut s = tls_connect(&pki, tls_addr).await;
    let local = s.get_ref().0.local_addr().unwrap();
    let mut pending = Vec::new();

    // REGISTER → 401 → digest → 200, all on this one connection; the retry is written in two
    // pieces that split it mid-header, so the framing has to join them.
    s.write_all(register("1000", local, "a1", 1, "").as_bytes())
        .await
        .unwrap();
    let r = read_message(&mut s, &mut pending).await;
    assert!(r.starts_with("SIP/2.0 401 "), "{r}");
    assert!(header(&r, "Via")[0].starts_with("SIP/2.0/TLS "), "{r}");
    let challenge = header(&r, "WWW-Authenticate")[0].to_owned();
    let retry = register(
        "1000",
        local,
        "a2",
        2,
        &authorization(&challenge, "1000", "pw1000"),
    );
    let (x, y) = retry.split_at(retry.len() / 2);
    s.write_all(x.as_bytes()).await.unwrap();
    s.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    s.write_all(y.as_bytes()).await.unwrap();
    let r = read_message(&mut s, &mut pending).await;
    assert!(r.starts_with("SIP/2.0 200 "), "{r}");
    assert!(header(&r, "Contact")[0].contains("transport=tls"), "{r}");

    let b = ep.registrar().bindings("1000").pop().expect("bound");
    let flow = b.flow.expect("flow recorded");
    assert_eq!(flow.protocol, Protocol::Tls);
    assert_eq!(flow.remote, local);
    assert_eq!(flow.local, tls_addr);
    assert!(flow.token().starts_with("tls:"), "{}", flow.token());
    assert!(ep.flow_alive(&flow));

    // A check-sync NOTIFY to that binding comes down this TLS connection, with a TLS Via
    // naming the TLS port; the phone's 200 on the same connection ends it.
    let ep2 = ep.clone();
    let b2 = b.clone();
    let pending_send = tokio::spawn(async move {
        ep2.send_request(notify_to(&b2.contact, "notify-tls"), Target::Binding(b2))
            .await
    });
    let got = read_message(&mut s, &mut pending).await;
    assert!(got.starts_with("NOTIFY "), "{got}");
    assert!(
        header(&got, "Via")[0].starts_with(&format!("SIP/2.0/TLS {tls_addr};")),
        "{got}"
    );
    s.write_all(ok_for(&got).as_bytes()).await.unwrap();
    let resp = pending_send.await.unwrap().expect("final response");
    assert_eq!(resp.status_code.code(), 200);

    // Two REGISTERs pipelined in one TLS record are two messages, answered in order.
    let both = format!(
        "{}{}",
        register(
            "1000",
            local,
            "a3",
            3,
            &authorization(&challenge, "1000", "pw1000")
        ),
        register(
            "1000",
            local,
            "a4",
            4,
            &authorization(&challenge, "1000", "pw1000")
        )
    );
    s.write_all(both.as_bytes()).await.unwrap();
    let r3 = read_message(&mut s, &mut pending).await;
    let r4 = read_message(&mut s, &mut pending).await;
    assert!(
        header(&r3, "CSeq")[0].starts_with("3 ") && header(&r4, "CSeq")[0].starts_with("4 "),
        "{r3}\n{r4}"
    );

    // Once the phone hangs up, nothing reaches its TLS contact: sipdm opens no TLS
    // connections, so the NOTIFY is refused at once rather than sent elsewhere.
    drop(s);
    for _ in 0..200 {
        if !ep.flow_alive(&flow) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!ep.flow_alive(&flow), "flow gone with its connection");
    let err = ep
        .send_request(notify_to(&b.contact, "notify-gone"), Target::Binding(b))
        .await
        .expect_err("no route to a TLS contact without its connection");
    assert!(matches!(err, SendError::NoRoute(_)), "{err}");
    ep.shutdown().await;
}

#[tokio::test]
async fn garbage_on_the_tls_port_is_closed_and_counted() {
    let pki = test_pki();
    let ep = start(&pki, false).await;
    let tls_addr = ep.tls_local_addrs()[0];
    for junk in [
        &b"REGISTER sip:sipdm.test SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5999\r\n\r\n"[..],
        &[0x16, 0x03, 0x01, 0xff, 0xff, 0, 0, 0, 0, 0][..],
    ] {
        let mut tcp = TcpStream::connect(tls_addr).await.unwrap();
        tcp.write_all(junk).await.unwrap();
        // At most a TLS alert comes back, then the end of the stream.
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        let mut closed = false;
        for _ in 0..20 {
            match tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    closed = true;
                    break;
                }
                Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
                Err(_) => break,
            }
        }
        assert!(closed, "connection closed after {junk:?}; got {got:?}");
        assert!(!got.starts_with(b"SIP/2.0"), "no SIP answer in the clear");
    }
    let mut failed = 0;
    for _ in 0..200 {
        failed = ep.stats().snapshot().tls_handshake_failed;
        if failed >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(failed, 2, "both failed handshakes counted");
    assert_eq!(ep.stats().snapshot().received, 0, "nothing reached SIP");

    // The listener is still serving: a real client registers.
    let mut s = tls_connect(&pki, tls_addr).await;
    let local = s.get_ref().0.local_addr().unwrap();
    s.write_all(register("1000", local, "g1", 1, "").as_bytes())
        .await
        .unwrap();
    let r = read_message(&mut s, &mut Vec::new()).await;
    assert!(r.starts_with("SIP/2.0 200 "), "{r}");
    ep.shutdown().await;
}

#[tokio::test]
async fn unframeable_stream_over_tls_is_answered_400_and_closed() {
    let pki = test_pki();
    let ep = start(&pki, false).await;
    let mut s = tls_connect(&pki, ep.tls_local_addrs()[0]).await;
    let local = s.get_ref().0.local_addr().unwrap();
    let bad =
        register("1000", local, "b1", 1, "").replace("Content-Length: 0", "Content-Length: nine");
    s.write_all(bad.as_bytes()).await.unwrap();
    let r = read_message(&mut s, &mut Vec::new()).await;
    assert!(r.starts_with("SIP/2.0 400 "), "{r}");
    let mut buf = [0u8; 64];
    let mut closed = false;
    for _ in 0..20 {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(_)) => {}
            Err(_) => break,
        }
    }
    assert!(closed, "the connection is closed after the 400");
    ep.shutdown().await;
}
