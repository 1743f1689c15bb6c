//! IVR provisioning end to end: simulated phones unknown to sipdm boot from the provisioning
//! URL, register as `gcti_provisioning`, dial the IVR (built-in, over real UDP and RTP on
//! loopback), key their extension as RFC 4733 events, get check-sync, re-fetch, and register
//! with their DN.

mod common;

use common::{Db, TestServer};
use serde_json::json;
use testbed::phone::{Mac, Phone, PhoneSpec, Vendor};

/// sipdm is the registrar of the DNs too here (no external switch): the assigned files point
/// the phones back at it, so their final registration can be checked.
const SELF_REGISTRAR: &str = r#"
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

async fn provision(db: Db, count: u32) {
    provision_with(db, count, SELF_REGISTRAR).await
}

async fn provision_with(db: Db, count: u32, config: &str) {
    let ts = TestServer::start_with(db, config).await;
    let csv: String = (0..count)
        .map(|i| format!("{},pw-{}\n", 1000 + i, 1000 + i))
        .collect();
    let r = ts
        .http
        .post(ts.api("/dns/import"))
        .bearer_auth(&ts.token)
        .body(csv)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let prov_url = format!("{}/fs/dm/prov", ts.base);
    let mut set = tokio::task::JoinSet::new();
    for i in 0..count {
        let vendor = Vendor::ALL[i as usize % Vendor::ALL.len()];
        let spec = PhoneSpec {
            mac: Mac::generated(vendor, i + 1),
            vendor,
            prov_url: prov_url.clone(),
            fallback_prov_urls: Vec::new(),
            local_ip: [127, 0, 0, 1].into(),
        };
        let dn = (1000 + i).to_string();
        set.spawn(async move {
            let mut phone = Phone::new(spec.clone()).await.expect("phone starts");
            let result = phone.run_ivr_provisioning(&dn).await;
            let notifies = phone.check_sync_count();
            phone.shutdown();
            (
                spec,
                dn,
                result.map(|p| p.total).map_err(|e| e.to_string()),
                notifies,
            )
        });
    }
    let mut failures = Vec::new();
    while let Some(done) = set.join_next().await {
        let (spec, dn, result, notifies) = done.unwrap();
        match result {
            Ok(_) if notifies == 1 => {}
            Ok(_) => failures.push(format!("{:?} {dn}: {notifies} check-syncs", spec.vendor)),
            Err(e) => failures.push(format!("{:?} {} {dn}: {e}", spec.vendor, spec.mac.plain())),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {count} phones failed:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // The store has every assignment, made by the IVR; the registrar every DN binding.
    let (_, devices) = ts.get_json("/devices").await;
    let assigned: Vec<_> = devices
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["state"] == "assigned")
        .collect();
    assert_eq!(assigned.len(), count as usize);
    let (_, audit) = ts.get_json("/audit?limit=10000").await;
    let ivr_assigns = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == "assign" && a["actor"] == "ivr")
        .count();
    assert_eq!(ivr_assigns, count as usize);
    let check_syncs = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == "check-sync")
        .count();
    assert_eq!(check_syncs, count as usize, "one check-sync per phone");
    for i in 0..count {
        let dn = (1000 + i).to_string();
        let b = ts.sip().registrar().bindings(&dn);
        assert_eq!(b.len(), 1, "DN {dn} bound once: {b:?}");
        assert_eq!(
            b[0].device.as_deref(),
            Some(dn.as_str()),
            "authenticated as the DN"
        );
    }
    assert!(
        ts.sip()
            .registrar()
            .bindings("gcti_provisioning")
            .is_empty(),
        "every phone left the provisioning identity"
    );
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_phone_of_each_vendor() {
    provision(Db::Sqlite, 6).await;
}

/// The same with SHA-256 offered first (RFC 8760): the simulated phones answer SHA-256.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_phone_of_each_vendor_sha256() {
    let config = format!("{SELF_REGISTRAR}\n[sip]\ndigest-algorithms = [\"SHA-256\", \"MD5\"]\n");
    provision_with(Db::Sqlite, 6, &config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_phones_concurrently_sqlite() {
    provision(Db::Sqlite, 50).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_phones_concurrently_postgres() {
    provision(Db::Postgres, 50).await;
}

/// A call to the IVR from a phone that does not authenticate is refused, and nothing is
/// assigned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_ivr_call_is_challenged() {
    let ts = TestServer::start(Db::Sqlite).await;
    ts.post("/dns", json!({"number": "1000", "password": "pw"}))
        .await;
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let me = sock.local_addr().unwrap();
    let invite = format!(
        "INVITE sip:8800@{sip} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKx1\r\nMax-Forwards: 70\r\nFrom: <sip:gcti_provisioning@{sip}>;tag=a\r\n\
         To: <sip:8800@{sip}>\r\nCall-ID: anon-1\r\nCSeq: 1 INVITE\r\nContact: <sip:x@{me}>\r\nContent-Type: application/sdp\r\nContent-Length: 0\r\n\r\n",
        sip = ts.sip_addr()
    );
    sock.send_to(invite.as_bytes(), ts.sip_addr())
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let mut statuses = Vec::new();
    while let Ok(Ok((n, _))) =
        tokio::time::timeout(std::time::Duration::from_secs(2), sock.recv_from(&mut buf)).await
    {
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        statuses.push(text.split_whitespace().nth(1).unwrap_or("").to_owned());
        if !text.starts_with("SIP/2.0 1") {
            break;
        }
    }
    assert_eq!(
        statuses.last().map(String::as_str),
        Some("401"),
        "{statuses:?}"
    );
    let (_, audit) = ts.get_json("/audit").await;
    assert_eq!(audit, json!([]));
    ts.stop().await;
}

/// sipp as a real phone: registers as gcti_provisioning with the credentials of its default
/// file, calls the IVR, keys 1001 as SIP INFO, takes the IVR's BYE and answers the check-sync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_phone_through_the_ivr() {
    let ts = TestServer::start_with(Db::Sqlite, SELF_REGISTRAR).await;
    ts.post("/dns", json!({"number": "1001", "password": "pw1001"}))
        .await;
    let mac = "0004f2000abc";
    let file = ts
        .fetch(
            &format!("{mac}-phone.cfg"),
            Some("PolycomVVX-VVX_450-UA/6.3.0.14929"),
        )
        .await
        .text()
        .await
        .unwrap();
    let attr = |name: &str| {
        let at = file
            .find(&format!("{name}=\""))
            .unwrap_or_else(|| panic!("{name} in\n{file}"));
        let rest = &file[at + name.len() + 2..];
        rest[..rest.find('"').unwrap()].to_owned()
    };
    let (user, password) = (attr("reg.1.auth.userId"), attr("reg.1.auth.password"));
    assert_eq!(user, format!("dm-{mac}"));
    let target = ts.sip_addr();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testbed/sipp");
    let ooc = dir.join("ivr_phone_ooc.xml").to_string_lossy().into_owned();
    let media_port = common::free_port().to_string();
    let (ok, out) = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = vec![
            "-s",
            "8800",
            "-au",
            &user,
            "-ap",
            &password,
            "-oocsf",
            &ooc,
            "-key",
            "dn1",
            "1",
            "-key",
            "dn2",
            "0",
            "-key",
            "dn3",
            "0",
            "-key",
            "dn4",
            "1",
            "-mp",
            &media_port,
        ];
        common::sipp(target, "ivr_phone.xml", "u1", &args)
    })
    .await
    .unwrap();
    assert!(ok, "sipp phone:\n{out}");
    let (_, d) = ts.get_json(&format!("/devices/{mac}")).await;
    assert_eq!(d["dn"], "1001");
    let (_, audit) = ts.get_json(&format!("/devices/{mac}/audit")).await;
    let actions: Vec<String> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            format!(
                "{} {}",
                a["action"].as_str().unwrap(),
                a["detail"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert!(
        actions
            .iter()
            .any(|a| a.starts_with("check-sync check-sync → 200")),
        "{actions:?}"
    );
    ts.stop().await;
}

/// An administrator's check-sync (`POST /devices/{mac}/check-sync`) reaches the phone's
/// registered contact with its vendor's Event, and a phone that challenges the NOTIFY gets
/// the device's credentials (verified by sipp against its own password).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_check_sync_answers_the_phones_challenge() {
    let ts = TestServer::start_with(Db::Sqlite, SELF_REGISTRAR).await;
    ts.post("/dns", json!({"number": "1001", "password": "pw1001"}))
        .await;
    ts.post(
        "/devices",
        json!({"mac": "000e08000001", "vendor": "cisco", "dn": "1001"}),
    )
    .await;
    // Not registered yet: nothing to notify.
    let r = ts
        .http
        .post(ts.api("/devices/000e08000001/check-sync"))
        .bearer_auth(&ts.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let target = ts.sip_addr();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testbed/sipp");
    let ooc = dir
        .join("notify_challenge_ooc.xml")
        .to_string_lossy()
        .into_owned();
    let phone = tokio::task::spawn_blocking(move || {
        common::sipp(
            target,
            "register_wait.xml",
            "u1",
            &[
                "-s", "1001", "-au", "1001", "-ap", "pw1001", "-key", "authpass", "pw1001",
                "-oocsf", &ooc,
            ],
        )
    });
    let mut bound = false;
    for _ in 0..100 {
        if !ts.sip().registrar().bindings("1001").is_empty() {
            bound = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(bound, "sipp registered as 1001");
    let r = ts
        .http
        .post(ts.api("/devices/000e08000001/check-sync"))
        .bearer_auth(&ts.token)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["event"], "resync",
        "Cisco's event from the vendor table"
    );
    assert_eq!(body["status"], 200);
    let (ok, out) = phone.await.unwrap();
    assert!(ok, "{out}");
    let (_, audit) = ts.get_json("/devices/000e08000001/audit").await;
    assert_eq!(audit[0]["action"], "check-sync");
    assert_eq!(audit[0]["actor"], "api");
    ts.stop().await;
}
