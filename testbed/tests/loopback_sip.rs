//! The phone's SIP user agent against tiny registrars written here, over real UDP on loopback:
//! a 401 challenge answered with a correct digest, timer E retransmissions when datagrams are
//! lost, a 407-challenged INVITE through to ACK and BYE, and the check-sync NOTIFY.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use testbed::phone::digest::{auth_params, Algorithm};
use testbed::phone::sip_msg::{param, response_to, Outgoing, SipMsg};
use testbed::phone::{Account, SipTimers, UaError, UserAgent};
use tokio::net::UdpSocket;

fn account() -> Account {
    Account {
        user: "gcti_provisioning".into(),
        display_name: "Provisioning".into(),
        auth_user: "prov-0004f2000001".into(),
        password: "s3cret".into(),
    }
}

async fn recv(sock: &UdpSocket) -> (SipMsg, SocketAddr, Instant) {
    let mut buf = vec![0u8; 65536];
    let (n, from) = tokio::time::timeout(Duration::from_secs(10), sock.recv_from(&mut buf))
        .await
        .expect("the phone sent nothing")
        .unwrap();
    (
        SipMsg::parse(&buf[..n]).expect("the phone's message parses"),
        from,
        Instant::now(),
    )
}

/// Checks an Authorization header value against the digest definition, computed here
/// independently of the client's own code path.
fn check_digest(value: &str, method: &str, algorithm: Algorithm, password: &str) {
    let params = auth_params(value.strip_prefix("Digest ").expect("Digest scheme"));
    let get = |k: &str| {
        params
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let ha1 = algorithm.hash_hex(&format!("{}:{}:{password}", get("username"), get("realm")));
    let ha2 = algorithm.hash_hex(&format!("{method}:{}", get("uri")));
    let expected = algorithm.hash_hex(&format!(
        "{ha1}:{}:{}:{}:{}:{ha2}",
        get("nonce"),
        get("nc"),
        get("cnonce"),
        get("qop")
    ));
    assert_eq!(get("response"), expected, "digest of {value}");
    assert_eq!(get("username"), "prov-0004f2000001");
    assert_eq!(get("qop"), "auth");
    assert_eq!(get("nc"), "00000001");
    assert!(!get("cnonce").is_empty());
}

/// REGISTER → (lost) → retransmission after T1 → 401 → authorized REGISTER → (lost) →
/// retransmission → 200. Proves timer E and the digest answer.
#[tokio::test]
async fn register_with_401_and_lost_datagrams() {
    let registrar = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let reg_addr = registrar.local_addr().unwrap();
    let ua = UserAgent::bind(
        "127.0.0.1:0".parse().unwrap(),
        "PolycomVVX-VVX_450-UA/6.3.0.14929",
        SipTimers::default(),
    )
    .await
    .unwrap();
    let phone_addr = ua.local_addr();

    let server = tokio::spawn(async move {
        // First REGISTER: dropped.
        let (first, _, t_first) = recv(&registrar).await;
        assert_eq!(first.method(), Some("REGISTER"));
        assert!(first.header("Authorization").is_none());
        // Its retransmission, one T1 later.
        let (again, from, t_again) = recv(&registrar).await;
        assert_eq!(
            again.top_branch(),
            first.top_branch(),
            "retransmission of the same transaction"
        );
        let gap = t_again - t_first;
        assert!(
            gap >= Duration::from_millis(400) && gap < Duration::from_millis(900),
            "timer E at T1: {gap:?}"
        );
        assert_eq!(from, phone_addr);
        let contact = again.header("Contact").unwrap().to_string();
        assert_eq!(contact, format!("<sip:gcti_provisioning@{phone_addr}>"));
        assert_eq!(again.header("Expires"), Some("3600"));
        let challenge = Outgoing::new()
            .header("Via", again.header("Via").unwrap())
            .header("From", again.header("From").unwrap())
            .header("To", format!("{};tag=srv1", again.header("To").unwrap()))
            .header("Call-ID", again.call_id().unwrap())
            .header("CSeq", again.header("CSeq").unwrap())
            .header(
                "WWW-Authenticate",
                r#"Digest realm="sipdm", nonce="n0nce-1", algorithm=MD5, qop="auth", opaque="op""#,
            )
            .response(401);
        registrar.send_to(&challenge, from).await.unwrap();

        // Authorized REGISTER: dropped, then its retransmission answered.
        let (auth1, _, _) = recv(&registrar).await;
        let (auth2, from, _) = recv(&registrar).await;
        assert_eq!(auth1.top_branch(), auth2.top_branch());
        assert_ne!(
            auth2.top_branch(),
            first.top_branch(),
            "a new transaction for the retry"
        );
        assert_eq!(
            auth2.call_id(),
            first.call_id(),
            "same registration Call-ID"
        );
        assert_eq!(
            auth2.cseq().unwrap().0,
            first.cseq().unwrap().0 + 1,
            "CSeq advances"
        );
        let value = auth2
            .header("Authorization")
            .expect("answers the challenge")
            .to_string();
        check_digest(&value, "REGISTER", Algorithm::Md5, "s3cret");
        assert!(value.contains("opaque=\"op\""));
        let ok = Outgoing::new()
            .header("Via", auth2.header("Via").unwrap())
            .header("From", auth2.header("From").unwrap())
            .header("To", format!("{};tag=srv1", auth2.header("To").unwrap()))
            .header("Call-ID", auth2.call_id().unwrap())
            .header("CSeq", auth2.header("CSeq").unwrap())
            .header("Contact", format!("{contact};expires=120"))
            .response(200);
        registrar.send_to(&ok, from).await.unwrap();
        registrar
    });

    let reg = ua
        .register(
            reg_addr,
            "127.0.0.1",
            &format!("127.0.0.1:{}", reg_addr.port()),
            &account(),
            3600,
        )
        .await
        .unwrap();
    assert!(reg.challenged);
    assert_eq!(reg.expires, 120, "the registrar's expires wins");
    server.await.unwrap();
}

/// A registrar that never answers: the REGISTER fails with a timeout after 64·T1, having been
/// retransmitted with doubling intervals capped at T2.
#[tokio::test]
async fn register_times_out_with_timer_f() {
    let registrar = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let reg_addr = registrar.local_addr().unwrap();
    let timers = SipTimers {
        t1: Duration::from_millis(20),
        t2: Duration::from_millis(80),
        ring_timeout: Duration::from_secs(1),
    };
    let ua = UserAgent::bind("127.0.0.1:0".parse().unwrap(), "test", timers)
        .await
        .unwrap();
    let counter = tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        let mut times = Vec::new();
        while let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_millis(500), registrar.recv_from(&mut buf)).await
        {
            times.push(Instant::now());
        }
        times
    });
    let started = Instant::now();
    let err = ua
        .register(reg_addr, "127.0.0.1", "127.0.0.1", &account(), 3600)
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, UaError::Timeout { .. }), "{err}");
    assert!(
        took >= Duration::from_millis(1280) && took < Duration::from_millis(2000),
        "64·T1: {took:?}"
    );
    let times = counter.await.unwrap();
    let gaps: Vec<u128> = times
        .windows(2)
        .map(|w| (w[1] - w[0]).as_millis())
        .collect();
    // 20, 40, 80, 80, …: doubling, capped at T2.
    assert!(gaps.len() >= 12, "{gaps:?}");
    assert!(gaps[0] >= 15 && gaps[0] < 40, "{gaps:?}");
    assert!(gaps[1] >= 35 && gaps[1] < 70, "{gaps:?}");
    assert!(gaps[2..].iter().all(|g| *g >= 70 && *g < 120), "{gaps:?}");
}

/// A second 401 after the answer means the credentials are wrong: an error, not a loop.
#[tokio::test]
async fn register_refused_credentials() {
    let registrar = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let reg_addr = registrar.local_addr().unwrap();
    let ua = UserAgent::bind("127.0.0.1:0".parse().unwrap(), "test", SipTimers::default())
        .await
        .unwrap();
    let server = tokio::spawn(async move {
        for _ in 0..2 {
            let (req, from, _) = recv(&registrar).await;
            let resp = Outgoing::new()
                .header("Via", req.header("Via").unwrap())
                .header("From", req.header("From").unwrap())
                .header("To", req.header("To").unwrap())
                .header("Call-ID", req.call_id().unwrap())
                .header("CSeq", req.header("CSeq").unwrap())
                .header(
                    "WWW-Authenticate",
                    r#"Digest realm="sipdm", nonce="n", algorithm=SHA-256"#,
                )
                .response(401);
            registrar.send_to(&resp, from).await.unwrap();
        }
    });
    let err = ua
        .register(reg_addr, "127.0.0.1", "127.0.0.1", &account(), 3600)
        .await
        .unwrap_err();
    assert!(
        matches!(err, UaError::AuthFailed { code: 401, .. }),
        "{err}"
    );
    server.await.unwrap();
}

/// INVITE → 407 (SHA-256, no qop) → ACK → INVITE with Proxy-Authorization → 100, 180, 200 with
/// SDP → ACK; then the server sends BYE (answered 200) and an out-of-dialog NOTIFY check-sync
/// twice (a retransmission), which is answered each time and counted once.
#[tokio::test]
async fn invite_challenge_ack_bye_and_notify() {
    let server_sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let server_addr = server_sock.local_addr().unwrap();
    let ua = UserAgent::bind(
        "127.0.0.1:0".parse().unwrap(),
        "Yealink SIP-T46S 66.86.0.15 80:5e:c0:00:00:02",
        SipTimers::default(),
    )
    .await
    .unwrap();
    let target = format!("sip:8800@127.0.0.1:{}", server_addr.port());
    let sdp_offer = testbed::phone::sdp::offer("127.0.0.1:40000".parse().unwrap(), 1);

    let server = tokio::spawn(async move {
        let s = server_sock;
        let (inv, from, _) = recv(&s).await;
        assert_eq!(inv.method(), Some("INVITE"));
        assert_eq!(inv.header("Content-Type"), Some("application/sdp"));
        let body = String::from_utf8(inv.body.clone()).unwrap();
        assert!(body.contains("m=audio 40000 RTP/AVP 0 8 101"), "{body}");
        assert!(body.contains("a=rtpmap:101 telephone-event/8000"), "{body}");
        let resp = Outgoing::new()
            .header("Via", inv.header("Via").unwrap())
            .header("From", inv.header("From").unwrap())
            .header("To", format!("{};tag=t407", inv.header("To").unwrap()))
            .header("Call-ID", inv.call_id().unwrap())
            .header("CSeq", inv.header("CSeq").unwrap())
            .header(
                "Proxy-Authenticate",
                r#"Digest realm="sipdm", nonce="inv-nonce", algorithm=SHA-256"#,
            )
            .response(407);
        s.send_to(&resp, from).await.unwrap();
        let (ack, _, _) = recv(&s).await;
        assert_eq!(ack.method(), Some("ACK"));
        assert_eq!(
            ack.top_branch(),
            inv.top_branch(),
            "ACK of a non-2xx is in the INVITE transaction"
        );
        assert_eq!(ack.to_tag().as_deref(), Some("t407"));
        assert_eq!(ack.cseq().unwrap(), (inv.cseq().unwrap().0, "ACK".into()));

        let (inv2, from, _) = recv(&s).await;
        assert_eq!(inv2.method(), Some("INVITE"));
        assert_eq!(inv2.call_id(), inv.call_id());
        assert_eq!(inv2.cseq().unwrap().0, inv.cseq().unwrap().0 + 1);
        let pa = inv2
            .header("Proxy-Authorization")
            .expect("answers the 407")
            .to_string();
        let p = auth_params(pa.strip_prefix("Digest ").unwrap());
        let get = |k: &str| {
            p.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let a = Algorithm::Sha256;
        let ha1 = a.hash_hex("prov-0004f2000001:sipdm:s3cret");
        let ha2 = a.hash_hex(&format!("INVITE:{}", get("uri")));
        assert_eq!(
            get("response"),
            a.hash_hex(&format!("{ha1}:inv-nonce:{ha2}")),
            "RFC 2069 form with SHA-256"
        );
        assert_eq!(get("algorithm"), "SHA-256");
        assert!(!pa.contains("qop"));

        for code in [100u16, 180] {
            s.send_to(&response_to(&inv2, code, "ivr1"), from)
                .await
                .unwrap();
        }
        let answer = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 41000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n";
        let ok = Outgoing::new()
            .header("Via", inv2.header("Via").unwrap())
            .header("From", inv2.header("From").unwrap())
            .header("To", format!("{};tag=ivr1", inv2.header("To").unwrap()))
            .header("Call-ID", inv2.call_id().unwrap())
            .header("CSeq", inv2.header("CSeq").unwrap())
            .header("Contact", format!("<sip:ivr@{server_addr}>"))
            .body("application/sdp", answer.as_bytes().to_vec())
            .response(200);
        s.send_to(&ok, from).await.unwrap();
        let (ack, _, _) = recv(&s).await;
        assert_eq!(ack.method(), Some("ACK"));
        assert_ne!(
            ack.top_branch(),
            inv2.top_branch(),
            "ACK of a 2xx is its own transaction"
        );
        assert_eq!(ack.to_tag().as_deref(), Some("ivr1"));
        assert_eq!(ack.cseq().unwrap().0, inv2.cseq().unwrap().0);
        if let testbed::phone::sip_msg::StartLine::Request { uri, .. } = &ack.start {
            assert_eq!(
                uri,
                &format!("sip:ivr@{server_addr}"),
                "ACK goes to the remote target"
            );
        }

        // Retransmitted 2xx (as if the ACK were lost): the phone ACKs again.
        s.send_to(&ok, from).await.unwrap();
        let (ack2, _, _) = recv(&s).await;
        assert_eq!(ack2.method(), Some("ACK"));

        // The IVR hangs up: BYE in the dialog (From/To swapped).
        let bye = Outgoing::new()
            .header(
                "Via",
                format!("SIP/2.0/UDP {server_addr};branch=z9hG4bKbye1"),
            )
            .header("From", format!("{};tag=ivr1", inv2.header("To").unwrap()))
            .header("To", inv2.header("From").unwrap())
            .header("Call-ID", inv2.call_id().unwrap())
            .header("CSeq", "1 BYE")
            .request("BYE", &format!("sip:gcti_provisioning@{from}"))
            .unwrap();
        s.send_to(&bye, from).await.unwrap();
        let (bye_ok, _, _) = recv(&s).await;
        assert_eq!(bye_ok.code(), Some(200));
        assert_eq!(bye_ok.top_branch().as_deref(), Some("z9hG4bKbye1"));

        // check-sync, sent twice (a retransmission of one transaction).
        let notify = Outgoing::new()
            .header(
                "Via",
                format!("SIP/2.0/UDP {server_addr};branch=z9hG4bKnotify1"),
            )
            .header("From", format!("<sip:sipdm@{server_addr}>;tag=dm1"))
            .header("To", format!("<sip:gcti_provisioning@{from}>"))
            .header("Call-ID", "notify-call-1")
            .header("CSeq", "1 NOTIFY")
            .header("Event", "check-sync;reboot=false")
            .header("Subscription-State", "terminated")
            .request("NOTIFY", &format!("sip:gcti_provisioning@{from}"))
            .unwrap();
        for _ in 0..2 {
            s.send_to(&notify, from).await.unwrap();
            let (r, _, _) = recv(&s).await;
            assert_eq!(r.code(), Some(200));
            assert!(
                param(r.header("To").unwrap(), "tag").is_some(),
                "the 200 adds a To tag"
            );
        }
    });

    let mut dialog = ua
        .invite(server_addr, "127.0.0.1", &target, &account(), &sdp_offer)
        .await
        .unwrap();
    assert_eq!(dialog.provisional, vec![100, 180]);
    let params = testbed::phone::sdp::parse_answer(&dialog.answer).unwrap();
    assert_eq!(params.remote, "127.0.0.1:41000".parse().unwrap());
    assert_eq!((params.audio_pt, params.event_pt), (0, Some(101)));
    assert!(
        dialog.wait_bye(Duration::from_secs(10)).await,
        "the IVR's BYE reaches the dialog"
    );
    dialog.hangup().await.unwrap(); // no-op after the peer's BYE
    let n = ua.wait_notifies(1, Duration::from_secs(10)).await.unwrap();
    assert_eq!(n[0].event, "check-sync;reboot=false");
    server.await.unwrap();
    assert_eq!(ua.notifies().len(), 1, "a retransmitted NOTIFY counts once");
    assert_eq!(ua.parse_errors(), 0);
}

/// Garbage and half messages never take the user agent down.
#[tokio::test]
async fn garbage_is_dropped() {
    let ua = UserAgent::bind("127.0.0.1:0".parse().unwrap(), "test", SipTimers::default())
        .await
        .unwrap();
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for junk in [
        &b"\x00\x01\x02"[..],
        b"SIP/2.0 200\r\n",
        b"NOTIFY sip:x SIP/2.0\r\nVia: \r\n\r\n",
        b"\r\n\r\n",
    ] {
        s.send_to(junk, ua.local_addr()).await.unwrap();
    }
    // Still answers an OPTIONS afterwards.
    let opt = Outgoing::new()
        .header(
            "Via",
            format!("SIP/2.0/UDP {};branch=z9hG4bKo1", s.local_addr().unwrap()),
        )
        .header("From", "<sip:a@127.0.0.1>;tag=1")
        .header("To", "<sip:b@127.0.0.1>")
        .header("Call-ID", "o1")
        .header("CSeq", "1 OPTIONS")
        .request("OPTIONS", "sip:b@127.0.0.1")
        .unwrap();
    s.send_to(&opt, ua.local_addr()).await.unwrap();
    let (r, _, _) = recv(&s).await;
    assert_eq!(r.code(), Some(200));
    assert!(ua.parse_errors() >= 1);
}
