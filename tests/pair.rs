//! An active-active pair: two instances on one PostgreSQL schema. A check-sync asked of one
//! instance for a phone registered on the other is handed over (PostgreSQL LISTEN/NOTIFY) and
//! leaves down the holder's flow; with the holder stopped, it goes to the stored contact
//! directly. A change made through one instance is served by the other.

mod common;

use std::time::Duration;

use common::{Db, TestServer};
use serde_json::json;

/// sipdm is the registrar of the DNs (as in tests/ivr_e2e.rs); both instances share the secret
/// and the admin token, as a deployment's pair does.
const PAIR: &str = r#"
[server]
http = "127.0.0.1:0"
sip = ["127.0.0.1:0"]
admin-token = "test-token"
secret = "test-secret"

[ivr]
number = "8800"

[[trunks]]
name = "ivr"
prefix = "88"
contact = "builtin:ivr"
group = "gcti_provisioning"
"#;

const MAC: &str = "000e08000001";

/// Starts sipp as a Cisco phone registered as 1001 on `target`; it answers a challenged
/// check-sync (verifying sipdm's digest against its own password) for about 6 s.
fn phone(target: std::net::SocketAddr) -> tokio::task::JoinHandle<(bool, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testbed/sipp");
    let ooc = dir
        .join("notify_challenge_ooc.xml")
        .to_string_lossy()
        .into_owned();
    tokio::task::spawn_blocking(move || {
        common::sipp(
            target,
            "register_wait.xml",
            "u1",
            &[
                "-s", "1001", "-au", "1001", "-ap", "pw1001", "-key", "authpass", "pw1001",
                "-oocsf", &ooc,
            ],
        )
    })
}

/// Waits until `holder` has the newest binding of 1001 in memory and in SQL (write-behind).
async fn registered_on(holder: &TestServer, not_contact: Option<&str>) -> String {
    let dm = &holder.running.as_ref().unwrap().dm;
    for _ in 0..100 {
        if let Some(b) = holder.sip().registrar().binding_of_device("1001") {
            if Some(b.contact.as_str()) != not_contact {
                if let Ok(Some(row)) = dm.store.binding_of_device("1001").await {
                    if row.contact == b.id() {
                        assert_eq!(
                            row.holder.as_deref(),
                            Some(holder.instance_id().as_str()),
                            "the row names its holder"
                        );
                        return b.contact.clone();
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("sipp did not register as 1001 on {}", holder.instance_id());
}

async fn check_sync(ts: &TestServer) -> (u16, serde_json::Value) {
    let r = ts
        .http
        .post(ts.api(&format!("/devices/{MAC}/check-sync")))
        .bearer_auth(&ts.token)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(serde_json::Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_sync_is_handed_to_the_instance_holding_the_flow() {
    let a = TestServer::start_with(Db::Postgres, PAIR).await;
    let mut b = a.start_peer(PAIR).await;
    assert_ne!(a.instance_id(), b.instance_id());
    a.post("/dns", json!({"number": "1001", "password": "pw1001"}))
        .await;
    a.post(
        "/devices",
        json!({"mac": MAC, "vendor": "cisco", "dn": "1001"}),
    )
    .await;

    // 1. The phone registers on B; A is asked; B sends, down its flow.
    let sipp = phone(b.sip_addr());
    let first = registered_on(&b, None).await;
    assert!(
        a.sip().registrar().bindings("1001").is_empty(),
        "A does not hold it"
    );
    let (status, body) = check_sync(&a).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], 200);
    assert_eq!(body["event"], "resync");
    assert_eq!(body["route"], "handover");
    assert_eq!(body["via"], b.instance_id());
    let (ok, out) = sipp.await.unwrap();
    assert!(
        ok,
        "the phone took B's NOTIFY with valid credentials:\n{out}"
    );
    let (_, audit) = a.get_json(&format!("/devices/{MAC}/audit")).await;
    assert_eq!(audit[0]["action"], "check-sync");
    assert_eq!(audit[0]["actor"], format!("api via {}", b.instance_id()));
    assert_eq!(audit[0]["detail"], "resync → 200");

    // 2. The phone registers on B again (new port); B stops; A sends to the contact itself.
    let sipp = phone(b.sip_addr());
    registered_on(&b, Some(&first)).await;
    let holder = b.instance_id();
    b.running.take().unwrap().stop().await;
    let (status, body) = check_sync(&a).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], 200);
    assert_eq!(
        body["route"], "direct",
        "a stopped holder is known gone: A sends itself"
    );
    assert_eq!(body["via"], a.instance_id());
    let (ok, out) = sipp.await.unwrap();
    assert!(ok, "the phone took A's direct NOTIFY:\n{out}");
    let (_, audit) = a.get_json(&format!("/devices/{MAC}/audit")).await;
    assert_eq!(
        audit[0]["actor"], "api, direct to contact",
        "holder {holder} was gone"
    );
    a.stop().await;
}

/// A phone not registered anywhere: 409 from either instance, nothing handed over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_sync_of_an_unregistered_phone_is_409_on_both() {
    let a = TestServer::start_with(Db::Postgres, PAIR).await;
    let b = a.start_peer(PAIR).await;
    a.post("/dns", json!({"number": "1001", "password": "pw1001"}))
        .await;
    a.post(
        "/devices",
        json!({"mac": MAC, "vendor": "cisco", "dn": "1001"}),
    )
    .await;
    assert_eq!(check_sync(&a).await.0, 409);
    assert_eq!(check_sync(&b).await.0, 409);
    b.stop().await;
    a.stop().await;
}

/// An assignment made through A is served by B within its version poll (250 ms).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assignment_through_one_instance_renders_on_the_other() {
    let a = TestServer::start_with(Db::Postgres, PAIR).await;
    let b = a.start_peer(PAIR).await;
    a.post("/dns", json!({"number": "1002", "password": "pw1002"}))
        .await;
    let mac = "0004f2000abd";
    let ua = Some("PolycomVVX-VVX_450-UA/6.3.0.14929");
    let before = b
        .fetch(&format!("{mac}-phone.cfg"), ua)
        .await
        .text()
        .await
        .unwrap();
    assert!(
        before.contains(&format!("dm-{mac}")),
        "unassigned on B first:\n{before}"
    );
    let r = a
        .post(&format!("/devices/{mac}/assign"), json!({"dn": "1002"}))
        .await;
    assert_eq!(r.status(), 200);
    // B notices A's change through the store's version (polled every 250 ms): wait for it,
    // a bounded number of times.
    let mut last = String::new();
    for _ in 0..100 {
        last = b
            .fetch(&format!("{mac}-phone.cfg"), ua)
            .await
            .text()
            .await
            .unwrap();
        if last.contains("reg.1.auth.userId=\"1002\"") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        last.contains("reg.1.auth.userId=\"1002\""),
        "B still serves the old file:\n{last}"
    );
    b.stop().await;
    a.stop().await;
}

/// A REGISTER challenged by A and answered to B is accepted: the pair shares the nonce key
/// (derived from the shared secret), so a phone may switch instance between the two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nonce_from_one_instance_is_accepted_by_the_other() {
    let a = TestServer::start_with(Db::Postgres, PAIR).await;
    let b = a.start_peer(PAIR).await;
    a.post("/dns", json!({"number": "1001", "password": "pw1001"}))
        .await;
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let me = sock.local_addr().unwrap();
    let register = |cseq: u32, auth: &str| {
        format!(
            "REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKpair{cseq};rport\r\nMax-Forwards: 70\r\n\
             From: <sip:1001@127.0.0.1>;tag=p1\r\nTo: <sip:1001@127.0.0.1>\r\nCall-ID: pair-nonce\r\nCSeq: {cseq} REGISTER\r\n\
             Contact: <sip:1001@{me}>\r\nExpires: 60\r\n{auth}Content-Length: 0\r\n\r\n"
        )
    };
    let exchange = |to: std::net::SocketAddr, text: String| {
        let sock = &sock;
        async move {
            let mut buf = vec![0u8; 4096];
            sock.send_to(text.as_bytes(), to).await.unwrap();
            let (n, _) = tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf))
                .await
                .expect("an answer")
                .unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        }
    };
    let challenge = exchange(a.sip_addr(), register(1, "")).await;
    assert!(challenge.starts_with("SIP/2.0 401"), "{challenge}");
    let header = challenge
        .lines()
        .find_map(|l| l.strip_prefix("WWW-Authenticate:"))
        .expect("a challenge");
    let digest = sip::auth::DigestChallenge::parse(header.trim()).expect("a digest challenge");
    let answer = digest
        .answer("REGISTER", "sip:127.0.0.1", "1001", "pw1001", 1, "0a4f113b")
        .expect("answer");
    let ok = exchange(
        b.sip_addr(),
        register(2, &format!("Authorization: {answer}\r\n")),
    )
    .await;
    assert!(ok.starts_with("SIP/2.0 200"), "B accepts A's nonce:\n{ok}");
    assert_eq!(b.sip().registrar().bindings("1001").len(), 1);
    b.stop().await;
    a.stop().await;
}

/// Two devices ask for the same DN at the same moment, one through each instance, 20 times:
/// each time exactly one gets it (200) and the other a conflict (409), never both, and the
/// audit log holds one assignment per DN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_assignments_of_one_dn_through_both_instances() {
    let a = TestServer::start_with(Db::Postgres, PAIR).await;
    let b = a.start_peer(PAIR).await;
    for round in 0..20u32 {
        let dn = (3000 + round).to_string();
        a.post("/dns", json!({"number": dn, "password": "pw"}))
            .await;
        let (m1, m2) = (
            format!("0004f2ee{round:04x}"),
            format!("805ec0ee{round:04x}"),
        );
        a.post("/devices", json!({"mac": m1})).await;
        a.post("/devices", json!({"mac": m2})).await;
        let (p1, p2) = (
            format!("/devices/{m1}/assign"),
            format!("/devices/{m2}/assign"),
        );
        let (r1, r2) = tokio::join!(
            a.post(&p1, json!({"dn": dn})),
            b.post(&p2, json!({"dn": dn}))
        );
        let mut codes = [r1.status().as_u16(), r2.status().as_u16()];
        codes.sort();
        assert_eq!(codes, [200, 409], "round {round}: one winner");
    }
    let (_, audit) = a.get_json("/audit?limit=1000").await;
    let assigns = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "assign")
        .count();
    assert_eq!(assigns, 20, "one assignment per DN");
    b.stop().await;
    a.stop().await;
}

/// A restarted instance restores every stored binding (a restart loses none), its peer's too;
/// but the flow of a phone registered on the peer is still the peer's: a check-sync asked of
/// the restarted instance is handed to the peer, not sent from a flow it does not hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_instance_hands_over_what_its_peer_holds() {
    let a = TestServer::start_with(Db::Postgres, PAIR).await;
    let b = a.start_peer(PAIR).await;
    a.post("/dns", json!({"number": "1001", "password": "pw1001"}))
        .await;
    a.post(
        "/devices",
        json!({"mac": MAC, "vendor": "cisco", "dn": "1001"}),
    )
    .await;
    let sipp = phone(b.sip_addr());
    registered_on(&b, None).await;
    let a = a.restart().await;
    assert!(
        !a.sip().registrar().bindings("1001").is_empty(),
        "A restored the stored binding"
    );
    let (status, body) = check_sync(&a).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["route"], "handover", "{body}");
    assert_eq!(body["via"], b.instance_id());
    let (ok, out) = sipp.await.unwrap();
    assert!(ok, "the phone took B's NOTIFY:\n{out}");
    b.stop().await;
    a.stop().await;
}
