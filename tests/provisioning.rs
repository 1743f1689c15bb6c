//! Zero-touch provisioning through the real HTTP interface, on SQLite and on PostgreSQL.

mod common;

use common::{raw_get_status, Db, TestServer};
use serde_json::json;

const MAC: &str = "0004f2a1b2c3";
const POLYCOM_UA: &str = "FileTransport PolycomVVX-VVX_450-UA/6.3.0.14929";
const YEALINK_UA: &str = "Yealink SIP-T46S 66.86.0.15 00:04:f2:a1:b2:c3";

async fn device_count(ts: &TestServer) -> usize {
    ts.get_json("/devices")
        .await
        .1
        .as_array()
        .map(|a| a.len())
        .unwrap_or(usize::MAX)
}

async fn zero_touch(db: Db) {
    let ts = TestServer::start(db).await;
    let r = ts
        .post("/dns", json!({"number": "1000", "password": "s3cret-1000"}))
        .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let r = ts
        .post(
            "/devices",
            json!({"mac": "00:04:F2:A1:B2:C3", "model": "VVX 450", "dn": "1000"}),
        )
        .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());

    for (file, ua) in [
        (format!("{MAC}.cfg"), Some(POLYCOM_UA)),
        (format!("{MAC}-phone.cfg"), Some(POLYCOM_UA)),
        (format!("{}.cfg", MAC.to_uppercase()), Some(YEALINK_UA)),
        (format!("{MAC}.cfg"), None),
        ("00-04-f2-a1-b2-c3.cfg".to_string(), None),
    ] {
        let r = ts.fetch(&file, ua).await;
        assert_eq!(r.status(), 200, "{file} as {ua:?}");
        let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
        let body = r.text().await.unwrap();
        if body.contains("<APPLICATION") {
            // Polycom reads {mac}.cfg as its master file: it names the settings file, checked
            // as {MAC}-phone.cfg above.
            assert!(
                !ua.is_some_and(|u| u.contains("Yealink")),
                "{file} as {ua:?}: a Polycom master"
            );
            assert!(
                body.contains(&format!("CONFIG_FILES=\"{MAC}-phone.cfg\"")),
                "{file} as {ua:?} names its settings file:\n{body}"
            );
            assert!(!body.contains("s3cret-1000"), "no credentials in a master");
            continue;
        }
        assert!(
            body.contains("1000"),
            "{file} as {ua:?} lacks the DN:\n{body}"
        );
        assert!(
            body.contains("s3cret-1000"),
            "{file} as {ua:?} lacks the password:\n{body}"
        );
        assert!(
            body.contains("sips1.example.test"),
            "{file} as {ua:?} lacks the SIP server:\n{body}"
        );
        assert!(
            !body.contains("gcti_provisioning"),
            "an assigned phone is not on the default profile"
        );
        match ua {
            Some(u) if u.contains("Yealink") => {
                assert!(
                    body.starts_with("#!version:1.0.0.1"),
                    "Yealink format:\n{body}"
                );
                assert!(ct.starts_with("text/plain"), "{ct}");
            }
            _ => {
                assert!(
                    body.contains("polycomConfig"),
                    "Polycom format (the device's model says Polycom):\n{body}"
                );
                assert!(ct.contains("xml"), "{ct}");
            }
        }
    }
    // The fetch is recorded (write-behind, flushed within a second or two).
    let mut seen = None;
    for _ in 0..50 {
        let (_, d) = ts.get_json(&format!("/devices/{MAC}")).await;
        if d["last_seen_ip"].is_string() {
            seen = Some(d);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let d = seen.expect("last seen recorded");
    assert_eq!(d["last_seen_ip"], "127.0.0.1");
    assert_eq!(d["state"], "assigned");
    ts.stop().await;
}
on_both_backends!(zero_touch_assigned_phone, zero_touch);

async fn unknown_mac(db: Db) {
    let ts = TestServer::start(db).await;
    let mac = "001565aabbcc";
    let r = ts
        .fetch(
            &format!("{mac}.cfg"),
            Some("Yealink SIP-T46S 66.86.0.15 00:15:65:aa:bb:cc"),
        )
        .await;
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    assert!(body.contains("gcti_provisioning"), "{body}");
    assert!(body.contains("8800"), "hotline to the IVR number:\n{body}");
    assert!(
        body.contains(&format!("dm-{mac}")),
        "per-device auth user:\n{body}"
    );
    let (status, d) = ts.get_json(&format!("/devices/{mac}")).await;
    assert_eq!(status, 200);
    assert_eq!(d["state"], "unassigned");
    assert_eq!(d["first_seen_ip"], "127.0.0.1");
    assert_eq!(d["vendor"], "yealink");
    assert!(d["user_agent"].as_str().unwrap().contains("SIP-T46S"));

    // Each unknown phone gets its own password.
    let other = ts
        .fetch("001565aabbcd.cfg", Some("Yealink SIP-T46S 66.86.0.15"))
        .await
        .text()
        .await
        .unwrap();
    let pw = |b: &str| {
        b.lines()
            .find(|l| l.contains("account.1.password"))
            .map(String::from)
    };
    assert!(pw(&body).is_some(), "{body}");
    assert_ne!(pw(&body), pw(&other));
    ts.stop().await;
}
on_both_backends!(unknown_mac_gets_default_profile, unknown_mac);

async fn not_modified(db: Db) {
    // Polycom's settings file (its {mac}.cfg is the master naming it, which does not change).
    let ts = TestServer::start(db).await;
    let r = ts.fetch("0004f2000001-phone.cfg", Some(POLYCOM_UA)).await;
    assert_eq!(r.status(), 200);
    let etag = r.headers()["etag"].to_str().unwrap().to_owned();
    let r2 = ts
        .http
        .get(ts.prov("0004f2000001-phone.cfg"))
        .header("User-Agent", POLYCOM_UA)
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r2.status(), 304);
    assert_eq!(r2.headers()["etag"].to_str().unwrap(), etag);
    // A change to what the file says makes the old tag stale.
    ts.post("/dns", json!({"number": "1001", "password": "pw1001"}))
        .await;
    ts.post("/devices/0004f2000001/assign", json!({"dn": "1001"}))
        .await;
    let r3 = ts
        .http
        .get(ts.prov("0004f2000001-phone.cfg"))
        .header("User-Agent", POLYCOM_UA)
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r3.status(), 200);
    assert!(r3.text().await.unwrap().contains("pw1001"));
    ts.stop().await;
}
on_both_backends!(unchanged_refetch_is_304, not_modified);

async fn bad_file_names(db: Db) {
    let ts = TestServer::start(db).await;
    let before = device_count(&ts).await;
    for bad in [
        "0004f2zzzzzz.cfg",
        "0004f2a1b2.cfg",
        "hello.txt",
        "0004f2a1b2c3.exe",
        "ffffffffffff.cfg",
        "spa.cfg",
    ] {
        assert_eq!(ts.fetch(bad, None).await.status(), 404, "{bad}");
    }
    for raw in [
        &b"/fs/dm/prov/../../etc/passwd"[..],
        b"/fs/dm/prov/%2e%2e/%2e%2e/etc/passwd",
        b"/fs/dm/prov/%2E%2E%2Fsecret.cfg",
        b"/fs/dm/prov//etc/passwd",
        b"/fs/dm/prov/0004f2a1b2c3.cfg%00.xml",
        b"/fs/dm/prov/..%5c..%5cwindows.ini",
    ] {
        assert_eq!(
            raw_get_status(&ts.base, raw).await,
            400,
            "{}",
            String::from_utf8_lossy(raw)
        );
    }
    assert_eq!(device_count(&ts).await, before, "garbage created no device");
    ts.stop().await;
}
on_both_backends!(bad_file_names_are_refused_and_write_nothing, bad_file_names);

async fn vendor_files(db: Db) {
    let ts = TestServer::start(db).await;
    ts.post("/dns", json!({"number": "1002", "password": "pw-1002"}))
        .await;
    ts.post("/devices", json!({"mac": "0004f2000002", "dn": "1002"}))
        .await;
    for (file, ua) in [
        (
            "spa0004f2000002.cfg",
            Some("Cisco/SPA504G-7.6.2c (0004F2000002)"),
        ),
        ("spa0004f2000002.xml", None),
        ("cfg0004f2000002.xml", Some("Grandstream GXP2170 1.0.11.3")),
        ("0004f2000002.xml", Some("snom D785/10.1.46.16")),
        ("snomD785-0004F2000002.htm", Some("snom D785/10.1.46.16")),
        (
            "0004f2000002.cfg",
            Some("AUDC-IPPhone/3.4.6.604 (445HD-Rev1; 0004F2000002)"),
        ),
    ] {
        let r = ts.fetch(file, ua).await;
        assert_eq!(r.status(), 200, "{file}");
        let body = r.text().await.unwrap();
        assert!(
            body.contains("1002") && body.contains("pw-1002"),
            "{file}:\n{body}"
        );
    }
    for common in ["000000000000.cfg", "y000000000028.cfg"] {
        assert_eq!(ts.fetch(common, None).await.status(), 200, "{common}");
    }
    ts.stop().await;
}
on_both_backends!(every_vendor_file_name_is_served, vendor_files);
