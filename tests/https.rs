//! HTTPS for provisioning and the admin API, checked with curl against a test CA made with
//! openssl (both from the base system).

mod common;

use std::process::Command;

use common::{Db, TestServer};

fn curl(args: &[&str]) -> (bool, String) {
    let out = Command::new("curl")
        .args(["-s", "-S", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioning_and_admin_over_https() {
    let dir = tempfile::tempdir().unwrap();
    common::test_ca::make(dir.path());
    let config = common::SINGLE_SITE.replace(
        "secret = \"test-secret\"",
        &format!(
            "secret = \"test-secret\"\ntls-cert = \"{}\"\ntls-key = \"{}\"",
            dir.path().join("server.pem").display(),
            dir.path().join("server.key").display()
        ),
    );
    let ts = TestServer::start_with(Db::Sqlite, &config).await;
    let port = ts.base.rsplit(':').next().unwrap().to_owned();
    let ca = dir.path().join("ca.pem").display().to_string();
    let url = format!("https://localhost:{port}/fs/dm/prov/001565000001.cfg");
    let resolve = format!("localhost:{port}:127.0.0.1");
    let (ok, body) = tokio::task::spawn_blocking({
        let (ca, url, resolve) = (ca.clone(), url.clone(), resolve.clone());
        move || {
            curl(&[
                "--cacert",
                &ca,
                "--resolve",
                &resolve,
                "-A",
                "Yealink SIP-T46S 66.86.0.15",
                &url,
            ])
        }
    })
    .await
    .unwrap();
    assert!(ok && body.contains("gcti_provisioning"), "{body}");
    // The admin API is on the same listener, token and all.
    let api = format!("https://localhost:{port}/fs/dm/api/v1/devices/001565000001");
    let (ok, body) = tokio::task::spawn_blocking({
        let (ca, resolve) = (ca.clone(), resolve.clone());
        move || {
            curl(&[
                "--cacert",
                &ca,
                "--resolve",
                &resolve,
                "-H",
                "Authorization: Bearer test-token",
                &api,
            ])
        }
    })
    .await
    .unwrap();
    assert!(ok && body.contains("\"state\":\"unassigned\""), "{body}");
    // Without the CA the certificate is not trusted; plain HTTP gets no answer.
    let (ok, _) = tokio::task::spawn_blocking({
        let (url, resolve) = (url.clone(), resolve.clone());
        move || curl(&["--resolve", &resolve, &url])
    })
    .await
    .unwrap();
    assert!(!ok, "an unknown CA is refused");
    let plain = format!("http://127.0.0.1:{port}/fs/dm/prov/001565000001.cfg");
    let (ok, body) = tokio::task::spawn_blocking(move || {
        curl(&["-o", "/dev/null", "-w", "%{http_code}", &plain])
    })
    .await
    .unwrap();
    assert!(
        !ok || !body.starts_with('2'),
        "plain HTTP is not served: {body}"
    );
    ts.stop().await;
}
