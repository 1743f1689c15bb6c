//! Deprovisioning with sipdm as the registrar: reassigning a DN to another phone, unassigning
//! it and deleting its device each leave the old phone unassigned and registered as
//! `gcti_provisioning` (it got a check-sync, re-fetched and obeyed its default file), with no
//! binding of the DN left from it; the audit log names the DN freed. Simulated Yealink phones
//! do what their files say.

mod common;

use std::time::Duration;

use common::{Db, TestServer};
use serde_json::{json, Value};
use testbed::phone::{Mac, Phone, PhoneConfig, PhoneSpec, Vendor};

/// sipdm is the DNs' registrar (no switch): every file points the phones back at it.
const SELF_REGISTRAR: &str = r#"
[server]
http = "127.0.0.1:0"
sip = ["127.0.0.1:0"]
admin-token = "test-token"
secret = "test-secret"

[ivr]
number = "8800"
"#;

const DN: &str = "1001";
/// Bound of every wait for a check-sync (not a speed target).
const NOTIFY_WAIT: Duration = Duration::from_secs(15);

async fn phone(ts: &TestServer, index: u32) -> Phone {
    Phone::new(PhoneSpec {
        mac: Mac::generated(Vendor::Yealink, index),
        vendor: Vendor::Yealink,
        prov_url: format!("{}/fs/dm/prov", ts.base),
        fallback_prov_urls: Vec::new(),
        local_ip: [127, 0, 0, 1].into(),
    })
    .await
    .expect("phone starts")
}

/// Fetches (a changed file is expected) and registers as the file says.
async fn fetch_and_register(p: &mut Phone) -> PhoneConfig {
    let cfg = p
        .fetch_config()
        .await
        .expect("fetch")
        .expect("a changed file");
    p.register(&cfg).await.expect("register");
    cfg
}

/// The `n`th check-sync reaches the phone; it re-fetches, finds its default file and
/// registers as `gcti_provisioning`.
async fn back_to_default(p: &mut Phone, n: usize) {
    p.wait_check_sync(n, NOTIFY_WAIT)
        .await
        .expect("check-sync reaches the old phone");
    let cfg = fetch_and_register(p).await;
    assert_eq!(cfg.user, "gcti_provisioning", "the default file");
    assert!(cfg.hotline.is_some(), "hot-lined to the IVR again");
}

fn contacts(ts: &TestServer, aor: &str) -> Vec<String> {
    ts.sip()
        .registrar()
        .bindings(aor)
        .iter()
        .map(|b| b.contact.clone())
        .collect()
}

/// The phone's own registration as an unassigned phone (its per-device user).
fn on_provisioning(ts: &TestServer, p: &Phone) -> bool {
    let user = format!("dm-{}", p.spec().mac.plain());
    ts.sip()
        .registrar()
        .binding_of_device(&user)
        .is_some_and(|b| b.aor == "gcti_provisioning")
}

/// Contacts of the DN in the store's bindings table once they satisfy `want`, or as they are
/// after a bounded wait (the registrar queues a write after its 200 OK, so a flush right after
/// the phone's registration may come before it).
async fn stored_contacts(
    ts: &TestServer,
    aor: &str,
    want: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let dm = &ts.running.as_ref().expect("running").dm;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        ts.sip().registrar().flush().await;
        let rows = dm.store.bindings_of(aor).await.expect("stored bindings");
        let contacts: Vec<String> = rows.into_iter().map(|r| r.contact).collect();
        if want(&contacts) || tokio::time::Instant::now() >= deadline {
            return contacts;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn audit_of(ts: &TestServer, mac: &Mac) -> Vec<Value> {
    let (status, audit) = ts
        .get_json(&format!("/devices/{}/audit", mac.plain()))
        .await;
    assert_eq!(status, 200);
    audit.as_array().cloned().unwrap_or_default()
}

/// The one deprovisioning the answer reports: the device, the DN, the check-sync answered.
fn assert_deprovisioned(d: &Value, mac: &Mac) {
    assert_eq!(d["mac"], mac.plain(), "{d}");
    assert_eq!(d["dn"], DN, "{d}");
    assert!(
        d["check_sync"]["status"].is_u64(),
        "check-sync answered: {d}"
    );
    assert!(d["bindings_removed"].as_u64() >= Some(1), "{d}");
}

async fn reassign_unassign_delete(db: Db) {
    let ts = TestServer::start_with(db, SELF_REGISTRAR).await;
    let r = ts
        .post("/dns", json!({"number": DN, "password": "pw1001"}))
        .await;
    assert_eq!(r.status(), 201);
    let r = ts
        .post(
            "/profiles",
            json!({"name": "takeover", "kind": "device-management", "allow_reassign": 1}),
        )
        .await;
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());

    // Phone A holds 1001 and is registered as 1001.
    let mut a = phone(&ts, 1).await;
    let r = ts
        .post(
            "/devices",
            json!({"mac": a.spec().mac.plain(), "model": "T46S", "dn": DN}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let cfg = fetch_and_register(&mut a).await;
    assert_eq!(cfg.user, DN);
    assert_eq!(contacts(&ts, DN).len(), 1);

    // Reassigned to phone B (its profile allows taking a DN over).
    let mut b = phone(&ts, 2).await;
    let b_mac = b.spec().mac;
    let r = ts
        .post(
            "/devices",
            json!({"mac": b_mac.plain(), "model": "T46S", "profile": "takeover"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let r = ts
        .post(
            &format!("/devices/{}/assign", b_mac.plain()),
            json!({"dn": DN}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["taken_from"], a.spec().mac.plain(), "{answer}");
    let dep = answer["deprovisioned"].as_array().expect("deprovisioned");
    assert_eq!(dep.len(), 1, "{answer}");
    assert_deprovisioned(&dep[0], &a.spec().mac);
    assert!(contacts(&ts, DN).is_empty(), "A's binding of 1001 is gone");

    back_to_default(&mut a, 1).await;
    assert!(
        on_provisioning(&ts, &a),
        "A registered as gcti_provisioning"
    );
    let cfg = fetch_and_register(&mut b).await;
    assert_eq!(cfg.user, DN);
    let b_contact = format!("{}", b.sip_addr());
    let bound = contacts(&ts, DN);
    assert_eq!(bound.len(), 1, "{bound:?}");
    assert!(bound[0].contains(&b_contact), "only B is bound: {bound:?}");
    let only_b = |c: &[String]| c.len() == 1 && c[0].contains(&b_contact);
    let stored = stored_contacts(&ts, DN, only_b).await;
    assert!(only_b(&stored), "the store too: {stored:?}");
    let (_, a_device) = ts
        .get_json(&format!("/devices/{}", a.spec().mac.plain()))
        .await;
    assert_eq!(a_device["state"], "unassigned");
    assert!(audit_of(&ts, &a.spec().mac).await.iter().any(|e| {
        e["action"] == "unassign"
            && e["dn"] == DN
            && e["detail"]
                .as_str()
                .is_some_and(|d| d.contains("freed 1001"))
    }));

    // Unassigned from B.
    let r = ts
        .post(&format!("/devices/{}/unassign", b_mac.plain()), json!({}))
        .await;
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["previous_dn"], DN);
    assert_deprovisioned(&answer["deprovisioned"], &b_mac);
    back_to_default(&mut b, 1).await;
    assert!(
        on_provisioning(&ts, &b),
        "B registered as gcti_provisioning"
    );
    assert!(contacts(&ts, DN).is_empty(), "no binding of 1001 left");
    assert!(stored_contacts(&ts, DN, |c| c.is_empty()).await.is_empty());
    assert!(audit_of(&ts, &b_mac)
        .await
        .iter()
        .any(|e| { e["action"] == "unassign" && e["dn"] == DN && e["detail"] == "freed 1001" }));

    // A takes 1001 again, then its device is deleted.
    let a_mac = a.spec().mac;
    let r = ts
        .post(
            &format!("/devices/{}/assign", a_mac.plain()),
            json!({"dn": DN}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let cfg = fetch_and_register(&mut a).await;
    assert_eq!(cfg.user, DN);
    assert_eq!(contacts(&ts, DN).len(), 1);
    let r = ts
        .http
        .delete(ts.api(&format!("/devices/{}", a_mac.plain())))
        .bearer_auth(&ts.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    let dep = answer["deprovisioned"].as_array().expect("deprovisioned");
    assert_eq!(dep.len(), 1, "{answer}");
    assert_deprovisioned(&dep[0], &a_mac);
    assert_eq!(dep[0]["deleted"], true);
    // Deleted, it is an unknown phone when it fetches again: the default file.
    back_to_default(&mut a, 2).await;
    assert!(
        on_provisioning(&ts, &a),
        "A registered as gcti_provisioning"
    );
    assert!(contacts(&ts, DN).is_empty(), "no binding of 1001 left");
    assert!(stored_contacts(&ts, DN, |c| c.is_empty()).await.is_empty());
    let audit = audit_of(&ts, &a_mac).await;
    assert!(
        audit
            .iter()
            .any(|e| e["action"] == "delete" && e["dn"] == DN && e["detail"] == "freed 1001"),
        "{audit:?}"
    );
    // Newest first: told to re-fetch after the delete, then seen again as a new phone.
    let actions: Vec<&str> = audit
        .iter()
        .take(3)
        .map(|e| e["action"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(actions, ["first-seen", "check-sync", "delete"], "{audit:?}");
    let (_, again) = ts.get_json(&format!("/devices/{}", a_mac.plain())).await;
    assert_eq!(again["state"], "unassigned", "seen again as a new phone");

    a.shutdown();
    b.shutdown();
    ts.stop().await;
}

on_both_backends!(
    reassign_unassign_delete_leave_phones_unassigned,
    reassign_unassign_delete
);

/// With `[dm] rotate-password-on-reassign`, the DN that left phone A has a new password: A's
/// cached credentials no longer register it, the new holder's file carries the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reassignment_rotates_the_password_when_configured() {
    let config = format!("{SELF_REGISTRAR}\n[dm]\nrotate-password-on-reassign = true\n");
    let ts = TestServer::start_with(Db::Sqlite, &config).await;
    ts.post("/dns", json!({"number": DN, "password": "pw1001"}))
        .await;
    ts.post(
        "/profiles",
        json!({"name": "takeover", "kind": "device-management", "allow_reassign": 1}),
    )
    .await;
    let mut a = phone(&ts, 11).await;
    ts.post(
        "/devices",
        json!({"mac": a.spec().mac.plain(), "model": "T46S", "dn": DN}),
    )
    .await;
    let old = fetch_and_register(&mut a).await;
    assert_eq!(old.password, "pw1001");

    let mut b = phone(&ts, 12).await;
    ts.post(
        "/devices",
        json!({"mac": b.spec().mac.plain(), "model": "T46S", "profile": "takeover"}),
    )
    .await;
    let r = ts
        .post(
            &format!("/devices/{}/assign", b.spec().mac.plain()),
            json!({"dn": DN}),
        )
        .await;
    let answer: Value = r.json().await.unwrap();
    assert_eq!(
        answer["deprovisioned"][0]["password_rotated"], true,
        "{answer}"
    );
    back_to_default(&mut a, 1).await;

    let new = fetch_and_register(&mut b).await;
    assert_eq!(new.user, DN);
    assert_ne!(new.password, old.password, "a new password");
    // A phone that kept the old file cannot register the DN any more.
    assert!(
        a.register(&old).await.is_err(),
        "the old credentials are refused"
    );
    assert_eq!(contacts(&ts, DN).len(), 1, "B only");
    a.shutdown();
    b.shutdown();
    ts.stop().await;
}
