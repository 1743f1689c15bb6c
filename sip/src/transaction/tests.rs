//! Transaction scenarios with paused tokio time and an in-memory transport: what goes on
//! the wire, and when.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use rsip::{Request, Response, SipMessage, StatusCode};
use tokio::time::Instant;

use super::*;
use crate::headers::MessageExt;
use crate::transport::{Flow, Protocol, Transmit, TransportError};
use crate::wire::parse::parse_bytes;
use crate::BoxFuture;

/// Records every transmission with its (paused-clock) time.
#[derive(Default)]
struct Wire {
    sent: Mutex<Vec<(Instant, Flow, Bytes)>>,
}

impl Transmit for Arc<Wire> {
    fn transmit(&self, flow: Flow, data: Bytes) -> BoxFuture<'_, Result<Flow, TransportError>> {
        self.sent.lock().push((Instant::now(), flow, data));
        Box::pin(std::future::ready(Ok(flow)))
    }
}

impl Wire {
    fn texts(&self) -> Vec<String> {
        self.sent
            .lock()
            .iter()
            .map(|(_, _, d)| String::from_utf8_lossy(d).into_owned())
            .collect()
    }
}

fn layer() -> (Arc<TransactionLayer>, Arc<Wire>) {
    let wire = Arc::new(Wire::default());
    let l = TransactionLayer::new(
        Arc::new(wire.clone()),
        Timers::default(),
        Arc::new(Stats::default()),
        String::new(),
    );
    (l, wire)
}

fn udp() -> Flow {
    Flow::udp(
        "127.0.0.1:5060".parse().unwrap(),
        "127.0.0.1:5070".parse().unwrap(),
    )
}

fn request(method: &str, branch: &str) -> Request {
    let t = format!("{method} sip:a@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch={branch}\r\nFrom: <sip:b@x>;tag=1\r\nTo: <sip:a@x>\r\nCall-ID: c\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n");
    match parse_bytes(t.as_bytes()).unwrap() {
        SipMessage::Request(r) => r,
        _ => unreachable!(),
    }
}

fn response_to(sent: &str, code: u16) -> Response {
    let mut t = format!("SIP/2.0 {code} X\r\n");
    for line in sent.split("\r\n").skip(1) {
        let n = line.split(':').next().unwrap_or("");
        if ["Via", "From", "To", "Call-ID", "CSeq"].contains(&n) {
            t.push_str(line);
            if n == "To" {
                t.push_str(";tag=srv");
            }
            t.push_str("\r\n");
        }
    }
    t.push_str("Content-Length: 0\r\n\r\n");
    match parse_bytes(t.as_bytes()).unwrap() {
        SipMessage::Response(r) => r,
        _ => unreachable!(),
    }
}

fn key_of(req: &Request) -> TsxKey {
    TsxKey::server(&req.top_via().unwrap(), req)
}

#[tokio::test(start_paused = true)]
async fn non_invite_client_retransmits_per_timer_e_and_times_out_per_f() {
    let (l, wire) = layer();
    let start = Instant::now();
    let r = l
        .send_request(request("OPTIONS", "ignored"), udp(), "127.0.0.1:5060")
        .await;
    assert!(matches!(r, Err(TsxError::Timeout)));
    assert_eq!(start.elapsed(), Duration::from_secs(32), "Timer F = 64·T1");
    let times: Vec<u64> = wire
        .sent
        .lock()
        .iter()
        .map(|(t, _, _)| t.duration_since(start).as_millis() as u64)
        .collect();
    // T1, doubling, capped at T2 = 4 s.
    assert_eq!(
        times,
        [0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]
    );
}

#[tokio::test(start_paused = true)]
async fn non_invite_client_completes_on_final_and_reliable_does_not_retransmit() {
    let (l, wire) = layer();
    let l2 = l.clone();
    let pending = tokio::spawn(async move {
        l2.send_request(request("NOTIFY", "x"), udp(), "127.0.0.1:5060")
            .await
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(wire.sent.lock().len(), 2);
    let sent = wire.texts()[0].clone();
    assert!(l.on_response(response_to(&sent, 200)));
    let r = pending.await.unwrap().unwrap();
    assert_eq!(r.status_code, StatusCode::OK);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        wire.sent.lock().len(),
        2,
        "no retransmission after the final"
    );

    let (l, wire) = layer();
    let tcp = Flow {
        protocol: Protocol::Tcp,
        ..udp()
    };
    let r = l
        .send_request(request("NOTIFY", "x"), tcp, "127.0.0.1:5060")
        .await;
    assert!(matches!(r, Err(TsxError::Timeout)));
    assert_eq!(wire.sent.lock().len(), 1, "reliable transport: no Timer E");
}

#[tokio::test(start_paused = true)]
async fn invite_client_acks_non_2xx() {
    let (l, wire) = layer();
    let l2 = l.clone();
    let pending = tokio::spawn(async move {
        l2.send_request(request("INVITE", "x"), udp(), "127.0.0.1:5060")
            .await
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    let sent = wire.texts()[0].clone();
    l.on_response(response_to(&sent, 180));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(wire.sent.lock().len(), 1, "Proceeding stops Timer A");
    l.on_response(response_to(&sent, 486));
    let r = pending.await.unwrap().unwrap();
    assert_eq!(r.status_code.code(), 486);
    let texts = wire.texts();
    assert!(
        texts[1].starts_with("ACK sip:a@127.0.0.1 SIP/2.0"),
        "{}",
        texts[1]
    );
    assert!(texts[1].contains("CSeq: 1 ACK") && texts[1].contains("tag=srv"));
    // A retransmitted 486 is ACKed again (Timer D).
    l.on_response(response_to(&sent, 486));
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(
        wire.texts().iter().filter(|t| t.starts_with("ACK")).count(),
        2
    );
}

#[tokio::test(start_paused = true)]
async fn invite_server_retransmits_final_per_timer_g_until_ack() {
    let (l, wire) = layer();
    let inv = request("INVITE", "z9hG4bKinv");
    let RequestDisposition::New(resp) = l.on_request(&inv, key_of(&inv), udp()) else {
        panic!("new")
    };
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert!(
        wire.texts()[0].starts_with("SIP/2.0 100 "),
        "100 Trying at once"
    );
    let busy = resp.response(StatusCode::BusyHere);
    resp.respond(busy);
    tokio::time::sleep(Duration::from_millis(1600)).await;
    // 486 at 0, then 500 ms and 1.5 s.
    assert_eq!(
        wire.texts()
            .iter()
            .filter(|t| t.starts_with("SIP/2.0 486"))
            .count(),
        3
    );
    // A retransmitted INVITE gets the 486 again.
    assert!(matches!(
        l.on_request(&inv, key_of(&inv), udp()),
        RequestDisposition::Absorbed
    ));
    let ack = request("ACK", "z9hG4bKinv");
    assert!(matches!(
        l.on_request(&ack, key_of(&ack), udp()),
        RequestDisposition::AckAbsorbed
    ));
    tokio::time::sleep(Duration::from_millis(10)).await;
    let n = wire.sent.lock().len();
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(wire.sent.lock().len(), n, "no retransmission after ACK");
    assert_eq!(l.server_count(), 0, "terminated after Timer I");
}

#[tokio::test(start_paused = true)]
async fn cancel_answers_487_and_late_final_is_dropped() {
    let (l, wire) = layer();
    let inv = request("INVITE", "z9hG4bKc");
    let RequestDisposition::New(resp) = l.on_request(&inv, key_of(&inv), udp()) else {
        panic!()
    };
    let cancel = request("CANCEL", "z9hG4bKc");
    assert!(l.cancel_invite(&key_of(&cancel), &cancel));
    assert!(resp.is_cancelled());
    resp.cancelled().await;
    let ok = resp.response(StatusCode::OK);
    resp.respond(ok);
    tokio::time::sleep(Duration::from_millis(1)).await;
    let texts = wire.texts();
    assert!(
        texts
            .iter()
            .any(|t| t.starts_with("SIP/2.0 487") && t.contains("CSeq: 1 INVITE")),
        "{texts:?}"
    );
    assert!(!texts.iter().any(|t| t.starts_with("SIP/2.0 200")));
    // CANCEL for an unknown INVITE does not match (caller answers 481).
    let stray = request("CANCEL", "z9hG4bKnone");
    assert!(!l.cancel_invite(&key_of(&stray), &stray));
}

#[tokio::test(start_paused = true)]
async fn dropped_responder_answers_500() {
    let (l, wire) = layer();
    let req = request("OPTIONS", "z9hG4bKd");
    let RequestDisposition::New(resp) = l.on_request(&req, key_of(&req), udp()) else {
        panic!()
    };
    drop(resp);
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert!(wire.texts()[0].starts_with("SIP/2.0 500"));
}

#[tokio::test(start_paused = true)]
async fn invite_2xx_is_retransmitted_until_ack_and_invite_retransmissions_absorbed() {
    let (l, wire) = layer();
    let inv = request("INVITE", "z9hG4bKok");
    let RequestDisposition::New(resp) = l.on_request(&inv, key_of(&inv), udp()) else {
        panic!()
    };
    let ok = resp.response(StatusCode::OK);
    resp.respond(ok);
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let oks = || {
        wire.texts()
            .iter()
            .filter(|t| t.starts_with("SIP/2.0 200"))
            .count()
    };
    assert_eq!(oks(), 3, "2xx at 0, 0.5 s, 1.5 s");
    // A retransmitted INVITE does not reach the TU again (RFC 6026 Accepted).
    assert!(matches!(
        l.on_request(&inv, key_of(&inv), udp()),
        RequestDisposition::Absorbed
    ));
    // The ACK for the 2xx has a branch of its own; it goes to the TU and stops the 2xx.
    let ack = request("ACK", "z9hG4bKack");
    assert!(matches!(
        l.on_request(&ack, key_of(&ack), udp()),
        RequestDisposition::AckForTu
    ));
    tokio::time::sleep(Duration::from_millis(10)).await;
    let n = oks();
    tokio::time::sleep(Duration::from_secs(40)).await;
    assert_eq!(oks(), n, "no 2xx after the ACK");
    assert_eq!(l.server_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn unacked_2xx_gives_up_after_timer_l() {
    let (l, wire) = layer();
    let inv = request("INVITE", "z9hG4bKnoack");
    let RequestDisposition::New(resp) = l.on_request(&inv, key_of(&inv), udp()) else {
        panic!()
    };
    let ok = resp.response(StatusCode::OK);
    resp.respond(ok);
    tokio::time::sleep(Duration::from_secs(40)).await;
    let oks = wire
        .texts()
        .iter()
        .filter(|t| t.starts_with("SIP/2.0 200"))
        .count();
    // 0, .5, 1.5, 3.5, 7.5, 11.5 … 31.5: capped at T2, stopped at 32 s.
    assert_eq!(oks, 11);
    assert_eq!(l.server_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn retransmitted_non_invite_gets_the_same_bytes_from_the_kept_response() {
    let (l, wire) = layer();
    let req = request("REGISTER", "z9hG4bKkept");
    let RequestDisposition::New(resp) = l.on_request(&req, key_of(&req), udp()) else {
        panic!("new transaction expected");
    };
    let mut r = resp.response(StatusCode::Unauthorized);
    r.headers.push(rsip::Header::Other(
        "WWW-Authenticate".into(),
        "Digest realm=\"x\", nonce=\"n\"".into(),
    ));
    resp.respond(r);
    tokio::time::sleep(Duration::from_millis(600)).await;
    // The request comes again (another copy of the same datagram), twice.
    for _ in 0..2 {
        let again = request("REGISTER", "z9hG4bKkept");
        assert!(matches!(
            l.on_request(&again, key_of(&again), udp()),
            RequestDisposition::Absorbed
        ));
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    let texts = wire.texts();
    assert_eq!(texts.len(), 3, "{texts:?}");
    assert!(
        texts[0].starts_with("SIP/2.0 401 Unauthorized\r\nVia: "),
        "{}",
        texts[0]
    );
    assert!(texts[0].contains("\r\nTo: <sip:a@x>;tag="), "{}", texts[0]);
    assert!(
        texts[0].contains("\r\nWWW-Authenticate: Digest"),
        "{}",
        texts[0]
    );
    assert_eq!(texts[1], texts[0]);
    assert_eq!(texts[2], texts[0]);

    // What the table keeps is the response without the headers the request brings again.
    let kept = l.kept_len(&key_of(&req)).unwrap();
    assert!(
        kept + 100 < texts[0].len(),
        "kept {kept} of {}",
        texts[0].len()
    );
}

#[tokio::test(start_paused = true)]
async fn a_response_not_built_on_the_request_headers_is_kept_whole() {
    let (l, wire) = layer();
    let req = request("OPTIONS", "z9hG4bKwhole");
    let RequestDisposition::New(resp) = l.on_request(&req, key_of(&req), udp()) else {
        panic!("new transaction expected");
    };
    // A TU that builds its own response: Call-ID first.
    let mut r = resp.response(StatusCode::OK);
    r.headers.retain(|h| !matches!(h, rsip::Header::CallId(_)));
    let mut headers: Vec<rsip::Header> = vec![rsip::Header::CallId("c".into())];
    headers.extend(r.headers.iter().cloned());
    r.headers = headers.into();
    resp.respond(r);
    let again = request("OPTIONS", "z9hG4bKwhole");
    let _ = l.on_request(&again, key_of(&again), udp());
    tokio::time::sleep(Duration::from_millis(10)).await;
    let texts = wire.texts();
    assert_eq!(texts.len(), 2, "{texts:?}");
    assert!(
        texts[0].starts_with("SIP/2.0 200 OK\r\nCall-ID: c\r\n"),
        "{}",
        texts[0]
    );
    assert_eq!(texts[1], texts[0]);
    assert_eq!(l.kept_len(&key_of(&req)), Some(texts[0].len()));
}
