//! The template door: an operator edits a template in `[server] template-dir` and reloads it
//! (admin API or SIGHUP). Both instances sharing PostgreSQL drop their rendered files and
//! re-read the directory; a template that does not compile is refused and the previous set
//! stays in service. A test binary of its own: SIGHUP reaches every server in the process.

mod common;

use std::time::{Duration, Instant};

use common::{eventually, Db, TestServer};
use serde_json::json;

/// How long a test waits for a change to show before it gives up: a bound so that a lost
/// event fails the test instead of hanging it, not a speed target (the wait is printed).
const PATIENCE: Duration = Duration::from_secs(10);
const BYSTANDER: &str = "001565000b00";

async fn file(ts: &TestServer, mac: &str) -> (String, String) {
    ts.yealink_file(mac).await
}

/// Until `ts` serves the bystander's file with (`present`) or without `marker`; the wait is
/// printed, bounded by [`PATIENCE`].
async fn bystander_shows(ts: &TestServer, name: &str, marker: &str) {
    let since = Instant::now();
    eventually(PATIENCE, Duration::from_millis(20), || async {
        let (_, body) = file(ts, BYSTANDER).await;
        match body.contains(marker) {
            true => Ok(()),
            false => Err(format!("{name} still serves the old template:\n{body}")),
        }
    })
    .await;
    eprintln!(
        "{name} served the new template {} ms after the reload",
        since.elapsed().as_millis()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn template_reload() {
    let dir = tempfile::tempdir().unwrap();
    let vendor_dir = dir.path().join("yealink");
    std::fs::create_dir(&vendor_dir).unwrap();
    let shipped = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/templates/yealink/phone.cfg"),
    )
    .unwrap();
    let config = common::SINGLE_SITE.replacen(
        "[server]\n",
        &format!("[server]\ntemplate-dir = \"{}\"\n", dir.path().display()),
        1,
    );
    let a = TestServer::start_with(Db::Postgres, &config).await;
    let b = a.start_peer(&config).await;
    let r = a
        .post("/dns", json!({"number": "1000", "password": "pw1000"}))
        .await;
    assert_eq!(r.status(), 201);
    let r = a
        .post("/devices", json!({"mac": BYSTANDER, "dn": "1000"}))
        .await;
    assert_eq!(r.status(), 201);
    for ts in [&a, &b] {
        let (_, body) = file(ts, BYSTANDER).await;
        assert!(body.contains("account.1.user_name = 1000"), "{body}");
    }

    // Edited, then reloaded through the API on one instance: both serve the new file.
    std::fs::write(
        vendor_dir.join("phone.cfg"),
        format!("{shipped}\n# site-wide change 1\n"),
    )
    .unwrap();
    let (_, body) = file(&a, BYSTANDER).await;
    assert!(
        !body.contains("site-wide change 1"),
        "served before the reload"
    );
    let r = a.post("/templates/reload", json!({})).await;
    assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());
    bystander_shows(&a, "this instance", "site-wide change 1").await;
    bystander_shows(&b, "the peer", "site-wide change 1").await;

    // A typo is refused with the template's name; the previous set stays in service.
    std::fs::write(vendor_dir.join("phone.cfg"), "{% if %}\n").unwrap();
    let r = a.post("/templates/reload", json!({})).await;
    assert_eq!(r.status(), 422);
    let err = r.text().await.unwrap();
    assert!(err.contains("yealink/phone.cfg"), "{err}");
    for ts in [&a, &b] {
        let (_, body) = file(ts, BYSTANDER).await;
        assert!(body.contains("site-wide change 1"), "{body}");
    }

    // SIGHUP, as for any daemon's files (both instances live in this process).
    std::fs::write(
        vendor_dir.join("phone.cfg"),
        format!("{shipped}\n# site-wide change 2\n"),
    )
    .unwrap();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    bystander_shows(&a, "this instance", "site-wide change 2").await;
    bystander_shows(&b, "the peer", "site-wide change 2").await;
}
