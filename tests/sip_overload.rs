//! `[sip] max-requests-in-progress` and `overload-retry-after` reach the running server's SIP
//! endpoint: with the limit at 1, a call held ringing on an external trunk is the one request
//! in progress, and a phone's REGISTER meanwhile is answered 503 with a Retry-After from the
//! configured range (counted in `sipdm_sip_overload_rejected_total`), not dropped.
//! (The mechanism itself is tested in sip/tests/overload.rs.)

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Db, TestServer};
use tokio::net::UdpSocket;

fn config(trunk: SocketAddr) -> String {
    format!(
        r#"
[server]
http = "127.0.0.1:0"
sip = ["127.0.0.1:0"]
admin-token = "test-token"
secret = "test-secret"

[sip]
trunk-options-interval-ms = 200
max-requests-in-progress = 1
overload-retry-after = [2, 4]
# The caller below is a trusted switch asserting who calls: no digest round trip.
trusted-peers = ["127.0.0.1"]

[[trunks]]
name = "ringing"
prefix = "77"
contact = "sip:{trunk}"
"#
    )
}

fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.split("\r\n")
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

/// A trunk that answers its OPTIONS probes 200 and every INVITE 180, and never anything
/// more: a call through it rings until the test ends.
async fn ringing_trunk() -> SocketAddr {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
            let req = String::from_utf8_lossy(&buf[..n]).into_owned();
            let code = if req.starts_with("OPTIONS ") {
                "200 OK"
            } else if req.starts_with("INVITE ") {
                "180 Ringing"
            } else {
                continue;
            };
            let mut resp = format!("SIP/2.0 {code}\r\n");
            for name in ["Via", "From", "Call-ID", "CSeq"] {
                for line in req.split("\r\n").filter(|l| {
                    l.split_once(':')
                        .is_some_and(|(n, _)| n.trim().eq_ignore_ascii_case(name))
                }) {
                    resp.push_str(line);
                    resp.push_str("\r\n");
                }
            }
            resp.push_str(&format!(
                "To: {};tag=trunk\r\nContent-Length: 0\r\n\r\n",
                header(&req, "To").unwrap_or_default()
            ));
            let _ = sock.send_to(resp.as_bytes(), from).await;
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_register_while_a_call_holds_the_one_request_in_progress_is_503_with_retry_after() {
    let trunk = ringing_trunk().await;
    let ts = TestServer::start_with(Db::Sqlite, &config(trunk)).await;
    let sip = ts.sip_addr();
    let trunks = ts.running.as_ref().unwrap().trunks.clone();
    common::eventually(Duration::from_secs(10), Duration::from_millis(50), || {
        let states = trunks.states();
        async move {
            match states.iter().any(|s| s.name == "ringing" && s.in_service) {
                true => Ok(()),
                false => Err(format!("trunk not in service: {states:?}")),
            }
        }
    })
    .await;

    // The call: it rings on the trunk, its INVITE in progress.
    let caller = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let me = caller.local_addr().unwrap();
    let invite = format!(
        "INVITE sip:7701@{sip} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKcall1\r\n\
         Max-Forwards: 70\r\nFrom: <sip:caller@{sip}>;tag=c1\r\nTo: <sip:7701@{sip}>\r\n\
         Call-ID: overload-call\r\nCSeq: 1 INVITE\r\nContact: <sip:caller@{me}>\r\n\
         P-Asserted-Identity: <sip:caller@{sip}>\r\n\
         Content-Type: application/sdp\r\nContent-Length: 0\r\n\r\n"
    );
    caller.send_to(invite.as_bytes(), sip).await.unwrap();
    let mut seen = String::new();
    common::eventually(Duration::from_secs(10), Duration::from_millis(20), || {
        let n = ts.sip().requests_in_progress();
        let mut buf = [0u8; 4096];
        while let Ok((len, _)) = caller.try_recv_from(&mut buf) {
            seen.push_str(&String::from_utf8_lossy(&buf[..len]));
        }
        let seen = seen.clone();
        async move {
            match n {
                1 => Ok(()),
                n => Err(format!("{n} requests in progress; the caller got:\n{seen}")),
            }
        }
    })
    .await;

    let phone = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let me = phone.local_addr().unwrap();
    let register = format!(
        "REGISTER sip:{sip} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKreg1;rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:1000@{sip}>;tag=r1\r\nTo: <sip:1000@{sip}>\r\n\
         Call-ID: overload-reg\r\nCSeq: 1 REGISTER\r\nContact: <sip:1000@{me}>\r\n\
         Expires: 300\r\nContent-Length: 0\r\n\r\n"
    );
    phone.send_to(register.as_bytes(), sip).await.unwrap();
    let mut buf = vec![0u8; 8192];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), phone.recv_from(&mut buf))
        .await
        .expect("the REGISTER is answered")
        .unwrap();
    let resp = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(resp.starts_with("SIP/2.0 503 "), "{resp}");
    let secs: u32 = header(&resp, "Retry-After")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("a Retry-After: {resp}"));
    assert!((2..=4).contains(&secs), "Retry-After {secs}");

    let metrics = reqwest::get(format!("{}/metrics", ts.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let rejected = metrics
        .lines()
        .find(|l| l.starts_with("sipdm_sip_overload_rejected_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<f64>().ok());
    assert_eq!(rejected, Some(1.0), "{metrics}");
    assert!(
        metrics.contains("sipdm_sip_requests_in_progress 1"),
        "{metrics}"
    );
    ts.stop().await;
}
