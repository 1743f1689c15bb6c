//! Digest failure throttling that fits a switch: counted per (source, user), so one phone
//! with a wrong password does not lock out the other phones behind the same NAT or switch; a
//! higher per-source ceiling stops a scanner trying many users; a trusted peer is never
//! throttled as a whole.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Db, TestServer};
use serde_json::json;
use testbed::phone::digest::{Authorization, Challenge};
use tokio::net::UdpSocket;

fn config(trusted: &str) -> String {
    format!(
        r#"
[server]
http = "127.0.0.1:0"
sip = ["127.0.0.1:0"]
admin-token = "test-token"
secret = "test-secret"

[sip]
auth-failures-per-minute = 3
auth-failures-per-source-per-minute = 10
trusted-peers = [{trusted}]
"#
    )
}

/// One REGISTER of `user` answered with `password`; the final status.
async fn register(sock: &UdpSocket, server: SocketAddr, user: &str, password: &str) -> u16 {
    let me = sock.local_addr().unwrap();
    let call_id = common::hex_id();
    let request = |cseq: u32, auth: Option<String>| {
        let auth = auth
            .map(|a| format!("Authorization: {a}\r\n"))
            .unwrap_or_default();
        format!(
            "REGISTER sip:{server} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{call_id}{cseq}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:{user}@{server}>;tag=t{cseq}\r\nTo: <sip:{user}@{server}>\r\n\
             Call-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:{user}@{me}>\r\nExpires: 300\r\n\
             {auth}Content-Length: 0\r\n\r\n"
        )
    };
    let first = exchange(sock, server, &request(1, None)).await;
    let status = status_of(&first);
    if status != 401 {
        return status;
    }
    let challenge = first
        .lines()
        .find_map(|l| l.strip_prefix("WWW-Authenticate: "))
        .map(|v| Challenge::parse(v).expect("challenge"))
        .expect("a 401 carries a challenge");
    let auth = Authorization::answer(
        &challenge,
        user,
        password,
        "REGISTER",
        &format!("sip:{server}"),
        1,
        "c0ffee",
    );
    status_of(&exchange(sock, server, &request(2, Some(auth.header_value()))).await)
}

async fn exchange(sock: &UdpSocket, server: SocketAddr, text: &str) -> String {
    sock.send_to(text.as_bytes(), server).await.unwrap();
    let mut buf = vec![0u8; 8192];
    loop {
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
            .await
            .expect("an answer within 5 s")
            .unwrap();
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if !text.starts_with("SIP/2.0 1") {
            return text;
        }
    }
}

fn status_of(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

async fn with_dns(trusted: &str) -> TestServer {
    let ts = TestServer::start_with(Db::Sqlite, &config(trusted)).await;
    for dn in ["1000", "1001"] {
        let r = ts
            .post("/dns", json!({"number": dn, "password": format!("pw{dn}")}))
            .await;
        assert_eq!(r.status(), 201);
    }
    ts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_wrong_password_does_not_lock_out_its_neighbours() {
    let ts = with_dns(r#""127.0.0.31""#).await;
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let server = ts.sip_addr();
    for _ in 0..3 {
        assert_eq!(register(&sock, server, "1000", "wrong").await, 401);
    }
    // 1000 from this address is refused now, even with the right password …
    assert_eq!(register(&sock, server, "1000", "pw1000").await, 403);
    // … but the phone next to it, behind the same address, registers.
    assert_eq!(register(&sock, server, "1001", "pw1001").await, 200);
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_trying_many_users_is_stopped() {
    let ts = with_dns(r#""127.0.0.31""#).await;
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let server = ts.sip_addr();
    for u in 0..10 {
        // Unknown users are failures too; each user stays under its own limit of 3.
        register(&sock, server, &format!("{}", 5000 + u), "guess").await;
    }
    assert_eq!(register(&sock, server, "1001", "pw1001").await, 403);
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_peer_is_never_throttled_as_a_whole() {
    let ts = with_dns(r#""127.0.0.1""#).await;
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let server = ts.sip_addr();
    for u in 0..20 {
        register(&sock, server, &format!("{}", 5000 + u), "guess").await;
    }
    assert_eq!(register(&sock, server, "1001", "pw1001").await, 200);
    ts.stop().await;
}
