//! One door for writes: whichever way a write comes in (admin API, CLI, CSV import, the
//! built-in IVR, the VoiceXML flow), the phone's file changes on this instance and on a second
//! instance sharing the PostgreSQL schema (change events, LISTEN/NOTIFY; the wait is printed), and the
//! file of an unrelated phone stays cached on both (same ETag, no render).

mod common;

use std::time::{Duration, Instant};

use common::{eventually, Db, TestServer};
use serde_json::json;

/// How long a test waits for a change to show before it gives up: a bound so that a lost
/// event fails the test instead of hanging it, not a speed target (how fast events travel is
/// for a benchmark; the wait is printed).
const PATIENCE: Duration = Duration::from_secs(10);
/// The unrelated phone: assigned to 1000, cached on both instances before each write.
const BYSTANDER: &str = "001565000b00";

fn config() -> String {
    let base = common::SINGLE_SITE.replace(
        "[ivr]\nnumber = \"8800\"",
        "[ivr]\nnumber = \"8800\"\nvxml-allowed-networks = [\"127.0.0.0/8\"]",
    );
    let base = base.replace(
        "contact = \"builtin:ivr\"",
        "contact = \"builtin:ivr\"\ngroup = \"gcti_provisioning\"",
    );
    format!("{base}\n[sip]\ntrusted-peers = [\"127.0.0.1\"]\n")
}

async fn file(ts: &TestServer, mac: &str) -> (String, String) {
    ts.yealink_file(mac).await
}

fn renders(ts: &TestServer) -> u64 {
    ts.running.as_ref().unwrap().dm.renders()
}

/// Two instances on one schema; DNs 1000–1009; the bystander assigned to 1000 and its file
/// cached on both.
async fn pair() -> (TestServer, TestServer) {
    let a = TestServer::start_with(Db::Postgres, &config()).await;
    let b = a.start_peer(&config()).await;
    for n in 1000..1010 {
        let r = a
            .post(
                "/dns",
                json!({"number": n.to_string(), "password": format!("pw{n}")}),
            )
            .await;
        assert_eq!(r.status(), 201);
    }
    let r = a
        .post("/devices", json!({"mac": BYSTANDER, "dn": "1000"}))
        .await;
    assert_eq!(r.status(), 201);
    for ts in [&a, &b] {
        let (_, body) = file(ts, BYSTANDER).await;
        assert!(body.contains("account.1.user_name = 1000"), "{body}");
    }
    (a, b)
}

/// A known, unassigned phone whose default file both instances have cached.
async fn seen(a: &TestServer, b: &TestServer, mac: &str) {
    for ts in [a, b] {
        let (_, body) = file(ts, mac).await;
        assert!(body.contains("gcti_provisioning"), "{body}");
        // Twice: the second is served from the cache.
        file(ts, mac).await;
    }
}

/// The bystander's ETag on each instance, and its render counters.
async fn bystander(a: &TestServer, b: &TestServer) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for ts in [a, b] {
        let (etag, _) = file(ts, BYSTANDER).await;
        out.push((etag, renders(ts)));
    }
    out
}

/// After a write: `mac`'s file on both instances comes to show `dn`, and the
/// bystander is served from the cache, unchanged.
async fn check(a: &TestServer, b: &TestServer, mac: &str, dn: &str, before: Vec<(String, u64)>) {
    let written = Instant::now();
    let want = format!("account.1.user_name = {dn}");
    for (name, ts) in [("this instance", a), ("the peer", b)] {
        eventually(PATIENCE, Duration::from_millis(20), || async {
            let (_, body) = file(ts, mac).await;
            match body.contains(&want) {
                true => Ok(()),
                false => Err(format!("{name} still serves {mac} without {dn}:\n{body}")),
            }
        })
        .await;
        eprintln!(
            "{name} served {mac} with {dn} {} ms after the write",
            written.elapsed().as_millis()
        );
    }
    for ((ts, name), (etag, _)) in [(a, "this instance"), (b, "the peer")].iter().zip(&before) {
        let n = renders(ts);
        let (now, body) = file(ts, BYSTANDER).await;
        assert_eq!(
            &now, etag,
            "the bystander's file changed on {name}:\n{body}"
        );
        assert_eq!(renders(ts), n, "the bystander was re-rendered on {name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api() {
    let (a, b) = pair().await;
    let mac = "001565000a01";
    seen(&a, &b, mac).await;
    let before = bystander(&a, &b).await;
    let r = a
        .post(&format!("/devices/{mac}/assign"), json!({"dn": "1001"}))
        .await;
    assert!(r.status().is_success(), "{}", r.status());
    check(&a, &b, mac, "1001", before).await;

    // A DN's own change reaches its holder's file (and only it) through the DN event.
    let before = bystander(&a, &b).await;
    let r = a
        .http
        .put(a.api("/dns/1001"))
        .bearer_auth(&a.token)
        .json(&json!({"number": "1001", "password": "pw1001", "display_name": "Reception"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    for ts in [&a, &b] {
        eventually(PATIENCE, Duration::from_millis(20), || async {
            match file(ts, mac).await.1.contains("Reception") {
                true => Ok(()),
                false => Err("the DN's new name is not served".to_owned()),
            }
        })
        .await;
    }
    check(&a, &b, mac, "1001", before).await;
    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli() {
    let (a, b) = pair().await;
    let mac = "001565000a02";
    seen(&a, &b, mac).await;
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("sipdm.toml");
    std::fs::write(
        &conf,
        format!("{}\n[store]\nurl = \"{}\"\n", config(), a.db.url),
    )
    .unwrap();
    let before = bystander(&a, &b).await;
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_sipdm"))
            .arg("--config")
            .arg(&conf)
            .args(["device", "assign", "001565000a02", "1002"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    check(&a, &b, mac, "1002", before).await;
    b.stop().await;
    a.stop().await;
}

/// An import creates devices, so no instance can have their files cached before it: what is
/// checked is that both serve the imported line at once and that the import leaves every
/// other phone's file cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_import() {
    let (a, b) = pair().await;
    let mac = "001565000a03";
    let before = bystander(&a, &b).await;
    let r = a
        .http
        .post(a.api("/import"))
        .bearer_auth(&a.token)
        .body(format!("mac,model,profile,dn\n{mac},SIP-T46S,,1003\n"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    check(&a, &b, mac, "1003", before).await;
    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ivr_assignment() {
    let (a, b) = pair().await;
    let mac = "001565000a04";
    seen(&a, &b, mac).await;
    let before = bystander(&a, &b).await;
    // sipp plays the switch relaying the phone's call to 8800 and keys in 1004.
    let target = a.sip_addr();
    let media = common::free_port().to_string();
    let pai = format!("<sip:dm-{mac}@sips1.example.test>");
    let (ok, out) = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = vec![
            "-s", "8800", "-key", "pai", &pai, "-key", "dn1", "1", "-key", "dn2", "0", "-key",
            "dn3", "0", "-key", "dn4", "4", "-mp", &media,
        ];
        common::sipp(target, "ivr_switch_trunk.xml", "u1", &args)
    })
    .await
    .unwrap();
    assert!(ok, "sipp as the switch:\n{out}");
    check(&a, &b, mac, "1004", before).await;
    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn voicexml_assignment() {
    let (a, b) = pair().await;
    let mac = "001565000a05";
    seen(&a, &b, mac).await;
    let before = bystander(&a, &b).await;
    let doc = a
        .http
        .post(format!("{}/fs/dm/ivr/assign", a.base))
        .form(&[
            ("dn", "1005"),
            ("caller", "sip:gcti_provisioning@127.0.0.1"),
            ("device", mac),
            ("attempt", "1"),
        ])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(doc.contains("assigned"), "{doc}");
    check(&a, &b, mac, "1005", before).await;
    b.stop().await;
    a.stop().await;
}
