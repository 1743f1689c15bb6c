//! What a default file is worth to whoever holds it, and who can get one.
//!
//! * An unknown phone's default file gives it credentials of its own (`dm-<mac>`): they
//!   register it as `gcti_provisioning` and call the IVR, and nothing else. A call with them
//!   to another number is refused 403, whether sipdm is the registrar (its own digest), the
//!   call comes through a trusted switch that asserts the device, or the phone is on the
//!   switch itself (Kamailio with the shipped configuration).
//! * The provisioning scan lockout is on by default: a boot storm of 2000 known phones behind
//!   one address fetches every file, while a scan of unknown MACs from one address is locked
//!   out.
//!
//! Simulated phones (the testbed phone library) obey only their files; the one deviation is
//! the user dialling another number than the hotline with the same account.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::kamailio::{Kamailio, KamailioParams, SwitchDb};
use common::trunk::{wait_for_trunk, SippUas};
use common::{Db, TestServer};
use testbed::phone::{Mac, Phone, PhoneConfig, PhoneError, PhoneSpec, Step, UaError, Vendor};

/// A number no IVR answers: the site's SBC trunk (prefix 9) carries it.
const OUTSIDE: &str = "90015551234";

/// sipdm as the registrar: the built-in IVR on 88, an SBC on 9 (sipp answering), and a
/// trusted switch at 127.0.0.31 that asserts callers.
fn registrar_config(sbc_port: u16) -> String {
    format!(
        r#"
[server]
http = "127.0.0.1:0"
sip = ["127.0.0.1:0"]
admin-token = "test-token"
secret = "test-secret"

[sip]
trunk-options-interval-ms = 200
trusted-peers = ["127.0.0.31/32"]

[ivr]
number = "8800"

[[trunks]]
name = "ivr"
prefix = "88"
contact = "builtin:ivr"
group = "gcti_provisioning"

[[trunks]]
name = "sbc"
prefix = "9"
contact = "sip:127.0.0.1:{sbc_port}"
oos-options-max-forwards = 1
"#
    )
}

fn spec(ts: &TestServer, vendor: Vendor, index: u32, local_ip: [u8; 4]) -> PhoneSpec {
    PhoneSpec {
        mac: Mac::generated(vendor, index),
        vendor,
        prov_url: format!("{}/fs/dm/prov", ts.base),
        fallback_prov_urls: Vec::new(),
        local_ip: local_ip.into(),
    }
}

/// The same account dialling `number` instead of the hotline.
fn dialling(cfg: &PhoneConfig, number: &str) -> PhoneConfig {
    PhoneConfig {
        hotline: Some(number.into()),
        ..cfg.clone()
    }
}

fn is_403(e: &PhoneError) -> bool {
    matches!(e, PhoneError::Sip(UaError::Rejected { code: 403, .. }))
}

async fn add_dn(ts: &TestServer, dn: &str) {
    let r = ts
        .post(
            "/dns",
            serde_json::json!({"number": dn, "password": format!("pw-{dn}")}),
        )
        .await;
    assert_eq!(r.status(), 201);
}

/// (a) and (b) with sipdm as registrar and INVITE authenticator: the default file's
/// credentials register as gcti_provisioning and call the IVR (which assigns the DN); a call
/// with them to the SBC's number is refused 403 and never reaches the SBC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_credentials_register_and_call_the_ivr_only() {
    let port = common::free_port();
    let sbc = SippUas::start(port);
    let ts = TestServer::start_with(Db::Sqlite, &registrar_config(port)).await;
    wait_for_trunk(&ts, "sbc", |s| {
        s.in_service && s.last_probe.as_deref() == Some("200")
    })
    .await;
    add_dn(&ts, "1000").await;

    let mut phone = Phone::new(spec(&ts, Vendor::Yealink, 0xabc, [127, 0, 0, 1]))
        .await
        .expect("phone starts");
    let mac = phone.spec().mac.plain();
    let cfg = phone
        .fetch_config()
        .await
        .expect("default file")
        .expect("a file");
    assert_eq!(cfg.user, "gcti_provisioning");
    assert_eq!(cfg.auth_user, format!("dm-{mac}"));
    assert_eq!(cfg.hotline.as_deref(), Some("8800"));

    // (a) REGISTER as gcti_provisioning, bound under the device's own digest identity.
    phone.register(&cfg).await.expect("registers");
    let bound = ts.sip().registrar().bindings("gcti_provisioning");
    assert!(
        bound
            .iter()
            .any(|b| b.device.as_deref() == Some(cfg.auth_user.as_str())),
        "{bound:?}"
    );

    // No other AOR: not a DN's, not one of the device's own name.
    for user in ["1000".to_owned(), format!("dm-{mac}")] {
        let other_aor = PhoneConfig {
            user: user.clone(),
            ..cfg.clone()
        };
        match phone.register(&other_aor).await {
            Err(PhoneError::NotRegistered(_)) => {}
            other => panic!("REGISTER of {user} with the device's credentials: {other:?}"),
        }
    }
    assert!(ts.sip().registrar().bindings("1000").is_empty());

    // Another destination: 403 (after the digest), twice, and the SBC sees no INVITE.
    for _ in 0..2 {
        match phone.call_ivr(&dialling(&cfg, OUTSIDE), "").await {
            Err((Step::Invite, e)) if is_403(&e) => {}
            Err((step, e)) => panic!("{OUTSIDE}: {step:?}: {e}"),
            Ok(r) => panic!("{OUTSIDE} was answered: {r:?}"),
        }
    }
    assert!(
        !sbc.received().iter().any(|m| m.contains("INVITE sip:")),
        "a refused call reached the SBC:\n{}",
        sbc.messages()
    );

    // (b) The IVR: answered, the keyed DN assigned, the phone told to re-fetch.
    let call = phone.call_ivr(&cfg, "1000#").await;
    assert!(
        call.is_ok(),
        "IVR call: {:?}",
        call.err().map(|(s, e)| (s, e.to_string()))
    );
    phone
        .wait_check_sync(1, Duration::from_secs(20))
        .await
        .expect("check-sync after the assignment");
    let new = phone
        .fetch_config()
        .await
        .expect("re-fetch")
        .expect("new file");
    assert_eq!(new.user, "1000");
    phone.unregister_all().await.expect("unregisters");
    phone.register(&new).await.expect("registers as the DN");
    let dn_bound = ts.sip().registrar().bindings("1000");
    assert_eq!(dn_bound.len(), 1, "{dn_bound:?}");
    phone.shutdown();

    let metrics = ts
        .http
        .get(format!("{}/metrics", ts.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("sipdm_sip_device_calls_refused_total"),
        "{metrics}"
    );
    ts.stop().await;
}

/// One INVITE from `from` (a switch's address) asserting device `mac`, without SDP; the final
/// status.
async fn asserted_invite(ts: &TestServer, from: [u8; 4], mac: &str, to_user: &str) -> String {
    let sock = tokio::net::UdpSocket::bind((std::net::Ipv4Addr::from(from), 0))
        .await
        .unwrap();
    let me = sock.local_addr().unwrap();
    let sip = ts.sip_addr();
    let id = common::hex_id();
    let invite = format!(
        "INVITE sip:{to_user}@{sip} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{id}\r\n\
         Max-Forwards: 69\r\nFrom: <sip:gcti_provisioning@sips1.test>;tag=a\r\n\
         To: <sip:{to_user}@{sip}>\r\nCall-ID: {id}\r\nCSeq: 1 INVITE\r\n\
         Contact: <sip:gcti_provisioning@{me}>\r\n\
         P-Asserted-Identity: <sip:dm-{mac}@sips1.test>\r\nContent-Length: 0\r\n\r\n"
    );
    sock.send_to(invite.as_bytes(), sip).await.unwrap();
    let mut buf = vec![0u8; 4096];
    while let Ok(Ok((n, _))) =
        tokio::time::timeout(Duration::from_secs(10), sock.recv_from(&mut buf)).await
    {
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if !text.starts_with("SIP/2.0 1") {
            return text.split_whitespace().nth(1).unwrap_or("").to_owned();
        }
    }
    "no final response".into()
}

/// Through a trusted switch the device's digest ended there and the switch's assertion names
/// it: the same rule holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_asserted_by_a_trusted_switch_calls_the_ivr_only() {
    let port = common::free_port();
    let sbc = SippUas::start(port);
    let ts = TestServer::start_with(Db::Sqlite, &registrar_config(port)).await;
    wait_for_trunk(&ts, "sbc", |s| s.in_service).await;
    let mac = "0004f2000abc";
    assert_eq!(
        asserted_invite(&ts, [127, 0, 0, 31], mac, OUTSIDE).await,
        "403"
    );
    // To the IVR it gets past the rule: the built-in IVR itself refuses a call without SDP.
    assert_eq!(
        asserted_invite(&ts, [127, 0, 0, 31], mac, "8800").await,
        "488"
    );
    assert!(
        !sbc.received().iter().any(|m| m.contains("INVITE sip:")),
        "{}",
        sbc.messages()
    );
    ts.stop().await;
}

/// The phone on the switch (Kamailio with the shipped configuration, authenticating from
/// sipdm's switch_subscriber view): registers as gcti_provisioning, its IVR call reaches
/// sipdm and is answered, a call to a DN or out is refused 403 by the switch, and a REGISTER
/// of any other AOR with the device's credentials too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_switch_default_credentials_call_the_ivr_only() {
    const REALM: &str = "sips1.test";
    let db = SwitchDb::create().await;
    let sipdm_port = common::free_port();
    let kamailio = Kamailio::start(
        &db,
        &KamailioParams {
            realm: REALM.into(),
            sipdm: ([127, 0, 0, 1], sipdm_port).into(),
            ivr_prefix: "88".into(),
            port: common::free_port(),
        },
    );
    let ts = db
        .start_sipdm(&format!(
            r#"
[server]
http = "127.0.0.1:0"
sip = ["127.0.0.1:{sipdm_port}"]
admin-token = "test-token"
secret = "test-secret"

[sip]
# Kamailio (and sipdm itself); the phone lives on 127.0.0.2.
trusted-peers = ["127.0.0.1/32"]

[dm]
sip-servers = ["{switch}"]

[ivr]
number = "8800"

[[switches]]
name = "SIPS1"
site = "site1"
address = "{switch}"
realm = "{REALM}"
dn-ranges = ["1000-1999"]
check-sync = "via-switch"

[[sites]]
name = "site1"
sip-servers = ["{switch}"]

[[trunks]]
name = "ivr"
prefix = "88"
contact = "builtin:ivr"
"#,
            switch = kamailio.addr
        ))
        .await;
    add_dn(&ts, "1001").await;
    let mut phone = Phone::new(spec(&ts, Vendor::Polycom, 0xabd, [127, 0, 0, 2]))
        .await
        .expect("phone starts");
    let mac = phone.spec().mac.plain();
    let cfg = phone
        .fetch_config()
        .await
        .expect("default file")
        .expect("a file");
    assert_eq!(cfg.auth_user, format!("dm-{mac}"));
    phone
        .register(&cfg)
        .await
        .unwrap_or_else(|e| panic!("REGISTER to the switch: {e}\n{}", kamailio.log_tail(30)));
    for number in ["1001", OUTSIDE] {
        match phone.call_ivr(&dialling(&cfg, number), "").await {
            Err((Step::Invite, e)) if is_403(&e) => {}
            Err((step, e)) => panic!("{number}: {step:?}: {e}\n{}", kamailio.log_tail(30)),
            Ok(r) => panic!("{number} was answered: {r:?}"),
        }
    }
    assert!(
        kamailio.log().contains("with device credentials"),
        "the refusal is logged:\n{}",
        kamailio.log_tail(30)
    );
    let other_aor = PhoneConfig {
        user: format!("dm-{mac}"),
        ..cfg.clone()
    };
    match phone.register(&other_aor).await {
        Err(PhoneError::NotRegistered(why)) if why.contains("403") => {}
        other => panic!("REGISTER of dm-{mac}: {other:?}"),
    }
    // The IVR: through the switch to sipdm, answered, the DN keyed.
    let call = phone.call_ivr(&cfg, "1001#").await;
    assert!(
        call.is_ok(),
        "IVR call: {:?}\n{}",
        call.err().map(|(s, e)| (s, e.to_string())),
        kamailio.log_tail(30)
    );
    phone.shutdown();
    ts.stop().await;
    drop(kamailio);
    drop(db);
}

/// With the default `[prov-security]`: 2000 known phones (imported) behind one address boot
/// at once and every one gets its files; one address asking for unknown MACs is locked out
/// after the default 100 (plus its first), for every file, known phones' included, while the
/// fleet's address goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_boot_storm_passes_and_a_scan_is_locked_out_by_default() {
    const PHONES: u32 = 2000;
    // No [prov-security] section: its defaults. No fs_url: the files send phones back to the
    // address they used.
    let ts = TestServer::start_with(
        Db::Sqlite,
        r#"
[server]
http = "127.0.0.1:0"
sip = ["127.0.0.1:0"]
admin-token = "test-token"
secret = "test-secret"

[[trunks]]
name = "ivr"
prefix = "88"
contact = "builtin:ivr"
"#,
    )
    .await;
    let specs: Vec<PhoneSpec> = (0..PHONES)
        .map(|i| {
            let vendor = Vendor::ALL[i as usize % Vendor::ALL.len()];
            spec(&ts, vendor, i + 1, [127, 0, 0, 1])
        })
        .collect();
    let csv: String = specs
        .iter()
        .map(|s| format!("{},,,\n", s.mac.plain()))
        .collect();
    let r = ts
        .http
        .post(ts.api("/import"))
        .bearer_auth(&ts.token)
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());

    // All at once, from 127.0.0.1 (a bound on open connections, not on the window).
    let gate = Arc::new(tokio::sync::Semaphore::new(200));
    let mut set = tokio::task::JoinSet::new();
    for s in specs.iter().cloned() {
        let gate = gate.clone();
        set.spawn(async move {
            let _permit = gate.acquire_owned().await.expect("gate");
            let mut phone = Phone::new(s.clone()).await.expect("phone starts");
            let got = phone.fetch_config().await;
            phone.shutdown();
            (s, got.map(|c| c.is_some()).map_err(|e| e.to_string()))
        });
    }
    let mut failures = Vec::new();
    while let Some(done) = set.join_next().await {
        let (s, got) = done.expect("phone task");
        if got != Ok(true) {
            failures.push(format!("{} {}: {got:?}", s.vendor.name(), s.mac.plain()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {PHONES} phones got no file:\n{}",
        failures.len(),
        failures[..failures.len().min(20)].join("\n")
    );

    // A scan from 127.0.0.2: MACs nobody has.
    let scanner = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let (mut served, mut locked) = (0, 0);
    for i in 0..300u32 {
        let r = scanner
            .get(ts.prov(&format!("0004f2{:06x}.cfg", 0xf00000 + i)))
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            200 => served += 1,
            429 => {
                locked += 1;
                assert!(r.headers().contains_key("retry-after"));
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(
        (served, locked),
        (101, 199),
        "its first MAC, then 100 unknown"
    );
    let known = specs[0].mac.plain();
    let from_scanner = scanner
        .get(ts.prov(&format!("{known}.cfg")))
        .send()
        .await
        .unwrap();
    assert_eq!(from_scanner.status(), 429, "locked out for every file");
    assert_eq!(ts.fetch(&format!("{known}.cfg"), None).await.status(), 200);
    let r = ts
        .http
        .get(ts.api("/devices?limit=1"))
        .bearer_auth(&ts.token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["x-total-count"].to_str().unwrap(),
        (PHONES + 101).to_string(),
        "the refused requests recorded nothing"
    );
    ts.stop().await;
}
