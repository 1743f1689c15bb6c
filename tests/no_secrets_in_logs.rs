//! Passwords never reach the logs: everything sipdm logs at every level, through a
//! provisioning fetch, registrations with a wrong and the right password, and a check-sync,
//! is captured and searched for the secrets involved.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::{sipp, Db, TestServer};
use serde_json::json;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_stay_out_of_the_logs() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .with_env_filter("trace")
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let secret_dn_password = "Zq7-dn-password-9k";
    let ts = TestServer::start(Db::Sqlite).await;
    ts.post(
        "/dns",
        json!({"number": "1001", "password": secret_dn_password}),
    )
    .await;
    ts.post(
        "/devices",
        json!({"mac": "000e08000001", "vendor": "cisco", "dn": "1001"}),
    )
    .await;
    let file = ts
        .fetch("spa000e08000001.xml", None)
        .await
        .text()
        .await
        .unwrap();
    assert!(
        file.contains(secret_dn_password),
        "the file itself carries it"
    );
    let default_file = ts
        .fetch("001565000009.cfg", Some("Yealink SIP-T46S 66.86.0.15"))
        .await
        .text()
        .await
        .unwrap();
    let device_password = default_file
        .lines()
        .find_map(|l| l.strip_prefix("account.1.password = "))
        .expect("per-device password in the default file")
        .trim()
        .to_owned();
    let target = ts.sip_addr();
    let (ok, _) = tokio::task::spawn_blocking(move || {
        sipp(
            target,
            "register_digest.xml",
            "u1",
            &["-s", "1001", "-au", "1001", "-ap", "wrong-guess-pw"],
        )
    })
    .await
    .unwrap();
    assert!(!ok);
    let (ok, out) = tokio::task::spawn_blocking(move || {
        sipp(
            target,
            "register_digest.xml",
            "u1",
            &["-s", "1001", "-au", "1001", "-ap", "Zq7-dn-password-9k"],
        )
    })
    .await
    .unwrap();
    assert!(ok, "{out}");
    ts.stop().await;

    let logs = String::from_utf8_lossy(&capture.0.lock().unwrap()).into_owned();
    assert!(logs.len() > 1000, "something was logged:\n{logs}");
    for secret in [
        secret_dn_password,
        device_password.as_str(),
        "test-secret",
        "test-token",
    ] {
        assert!(!logs.contains(secret), "`{secret}` reached the logs");
    }
}
