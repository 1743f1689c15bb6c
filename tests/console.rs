//! The operator console in headless Chromium (Debian `chromium` + `chromium-driver`, driven
//! over WebDriver with fantoccini): log in with the token, import a CSV, find a device, assign
//! a DN, press check-sync on a registered phone (sipp) and see it recorded.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Db, TestServer};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn browser() -> (Driver, Client, tempfile::TempDir) {
    // The WebDriver client speaks plain HTTP to chromedriver, but its TLS stack wants a provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let port = common::free_port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver is required (Debian package chromium-driver; run testbed/test.sh)");
    let driver = Driver(child);
    let profile = tempfile::tempdir().unwrap();
    let caps = json!({
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                     "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--window-size=1280,800", format!("--user-data-dir={}", profile.path().display())]
        }
    });
    let caps = caps.as_object().unwrap().clone();
    let mut last = None;
    for _ in 0..50 {
        match ClientBuilder::rustls()
            .expect("tls")
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(c) => return (driver, c, profile),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("could not start headless Chromium: {last:?}");
}

async fn wait_text(c: &Client, css: &str, want: &str) -> String {
    let mut seen = String::new();
    for _ in 0..100 {
        if let Ok(e) = c.find(Locator::Css(css)).await {
            seen = e.text().await.unwrap_or_default();
            if seen.contains(want) {
                return seen;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("`{css}` never showed `{want}`; last: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_console_flow() {
    let ts = TestServer::start(Db::Sqlite).await;
    assert_eq!(
        ts.post("/dns", json!({"number": "1001", "password": "pw1001"}))
            .await
            .status(),
        201
    );
    let (_driver, c, _profile) = browser().await;
    c.goto(&format!("{}/fs/dm/ui", ts.base)).await.unwrap();
    c.find(Locator::Id("token"))
        .await
        .unwrap()
        .send_keys(&ts.token)
        .await
        .unwrap();
    c.find(Locator::Id("login"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();

    // Import a CSV.
    c.find(Locator::Css("a[data-tab=import]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.find(Locator::Id("csv"))
        .await
        .unwrap()
        .send_keys("mac,model,profile,dn\n000e08000001,SPA504G,,\n0004f2000002,VVX 450,,\n")
        .await
        .unwrap();
    c.find(Locator::Id("do-import"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&c, "#import-report", "imported 2").await;

    // Find the device and assign it a DN.
    c.find(Locator::Css("a[data-tab=devices]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.find(Locator::Id("search"))
        .await
        .unwrap()
        .send_keys("000e08")
        .await
        .unwrap();
    c.find(Locator::Id("find"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&c, "#device-rows", "000e08000001").await;
    c.find(Locator::Css("tr.dev[data-mac='000e08000001']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&c, "#d-title", "000e08000001").await;
    wait_text(&c, "#d-file", "flat-profile").await; // the Cisco file as the phone would get it
    c.find(Locator::Id("d-dn"))
        .await
        .unwrap()
        .send_keys("1001")
        .await
        .unwrap();
    c.find(Locator::Id("d-assign"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&c, "#d-audit", "assign").await;
    assert_eq!(ts.get_json("/devices/000e08000001").await.1["dn"], "1001");

    // A phone registers as 1001 (sipp, which also checks the NOTIFY's digest); press check-sync.
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
    for _ in 0..100 {
        if !ts.sip().registrar().bindings("1001").is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.find(Locator::Css("tr.dev[data-mac='000e08000001']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&c, "#d-bindings", "sip:1001@").await;
    c.find(Locator::Id("d-checksync"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let audit = wait_text(&c, "#d-audit", "check-sync").await;
    assert!(
        audit.contains("resync"),
        "Cisco's event is recorded: {audit}"
    );
    let (ok, out) = phone.await.unwrap();
    assert!(ok, "{out}");

    // The device list, for the README.
    c.find(Locator::Css("a[data-tab=devices]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&c, "#device-rows", "registered").await;
    let png = c.screenshot().await.unwrap();
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-device-list.png");
    std::fs::write(&out, png).unwrap();
    c.close().await.unwrap();
    ts.stop().await;
}
