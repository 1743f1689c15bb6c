//! The operator console in headless Chromium (Debian `chromium` + `chromium-driver`, driven
//! over WebDriver with fantoccini): log in with the token, import a CSV, find a device, assign
//! a DN, press check-sync on a registered phone (sipp) and see it recorded; page through more
//! devices than one page holds, create a device from the form (and see a refusal's message),
//! delete one; start a check-sync campaign from the Campaigns page and watch 20 simulated
//! phones come up to date.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::followers::{desk_profile, fleet, set_ntp};
use common::{Db, TestServer};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use tokio::sync::watch;

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
    wait_text_for(c, css, want, Duration::from_secs(10)).await
}

/// Waits (at most `patience`) until `css` shows `want`; the text it showed.
async fn wait_text_for(c: &Client, css: &str, want: &str, patience: Duration) -> String {
    let mut seen = String::new();
    let since = Instant::now();
    while since.elapsed() < patience {
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

async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("`{css}`: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("click `{css}`: {e}"));
}

/// Replaces the text of the input `css` with `text`.
async fn type_into(c: &Client, css: &str, text: &str) {
    let e = c.find(Locator::Css(css)).await.unwrap();
    e.clear().await.unwrap();
    if !text.is_empty() {
        e.send_keys(text).await.unwrap();
    }
}

/// Waits (at most 10 s) until nothing matches `css`.
async fn wait_gone(c: &Client, css: &str) {
    for _ in 0..100 {
        if c.find_all(Locator::Css(css)).await.unwrap().is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("`{css}` is still there");
}

async fn is_enabled(c: &Client, css: &str) -> bool {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .is_enabled()
        .await
        .unwrap()
}

async fn rows(c: &Client) -> usize {
    c.find_all(Locator::Css("tr.dev")).await.unwrap().len()
}

async fn log_in(c: &Client, ts: &TestServer) {
    c.goto(&format!("{}/fs/dm/ui", ts.base)).await.unwrap();
    type_into(c, "#token", &ts.token).await;
    click(c, "#login").await;
}

/// More devices than the largest page: the pager reaches the last one and shows the total, the
/// search counts across pages, and the form creates and the detail deletes a device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_pages_creates_and_deletes_devices() {
    const N: usize = 1203;
    let ts = TestServer::start(Db::Sqlite).await;
    let mut csv = String::from("mac,model,profile,dn\n");
    for i in 0..N {
        csv.push_str(&format!("0004f2{i:06x},VVX 450,,\n"));
    }
    let r = ts
        .http
        .post(ts.api("/import"))
        .bearer_auth(&ts.token)
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(
        ts.post("/dns", json!({"number": "2001", "password": "pw2001"}))
            .await
            .status(),
        201
    );
    let last = format!("0004f2{:06x}", N - 1);

    let (_driver, c, _profile) = browser().await;
    log_in(&c, &ts).await;

    // The first page of 100 (the default), with the total; no way back from the first page.
    wait_text(&c, "#page-info", &format!("showing 1–100 of {N}")).await;
    assert_eq!(rows(&c).await, 100);
    assert!(!is_enabled(&c, "#prev").await);
    click(&c, "#next").await;
    wait_text(&c, "#page-info", &format!("showing 101–200 of {N}")).await;
    wait_text(&c, "#device-rows", "0004f2000064").await; // the 101st in MAC order

    // Pages of 500 keep the first device shown in view; Next reaches the last device.
    c.find(Locator::Id("page-size"))
        .await
        .unwrap()
        .select_by_value("500")
        .await
        .unwrap();
    wait_text(&c, "#page-info", &format!("showing 1–500 of {N}")).await;
    assert_eq!(rows(&c).await, 500);
    click(&c, "#next").await;
    wait_text(&c, "#page-info", &format!("showing 501–1000 of {N}")).await;
    click(&c, "#next").await;
    wait_text(&c, "#page-info", &format!("showing 1001–{N} of {N}")).await;
    wait_text(&c, "#device-rows", &last).await;
    assert_eq!(rows(&c).await, N - 1000);
    assert!(!is_enabled(&c, "#next").await, "no page after the last");
    click(&c, "#prev").await;
    wait_text(&c, "#page-info", &format!("showing 501–1000 of {N}")).await;
    click(&c, "#first").await;
    wait_text(&c, "#page-info", &format!("showing 1–500 of {N}")).await;
    click(&c, "#last").await;
    wait_text(&c, "#page-info", &format!("showing 1001–{N} of {N}")).await;

    // The search is the server's, counted across pages: 0004f2000400..=0004f20004b2.
    c.find(Locator::Id("page-size"))
        .await
        .unwrap()
        .select_by_value("100")
        .await
        .unwrap();
    type_into(&c, "#search", "0004f20004").await;
    click(&c, "#find").await;
    wait_text(&c, "#page-info", "showing 1–100 of 179").await;
    click(&c, "#next").await;
    wait_text(&c, "#page-info", "showing 101–179 of 179").await;
    wait_text(&c, "#device-rows", &last).await;
    type_into(&c, "#search", "").await;
    click(&c, "#find").await;
    wait_text(&c, "#page-info", &format!("showing 1–100 of {N}")).await;

    // Create a device from the form (a MAC with separators, a model, a DN): it opens, counts,
    // and is listed on the last page (it sorts last).
    type_into(&c, "#c-mac", "00:04:F2:FF:FF:F0").await;
    type_into(&c, "#c-model", "VVX 450").await;
    type_into(&c, "#c-dn", "2001").await;
    click(&c, "#c-add").await;
    wait_text(&c, "#c-msg", "created 0004f2fffff0").await;
    wait_text(&c, "#d-title", "0004f2fffff0").await;
    wait_text(&c, "#page-info", &format!("of {}", N + 1)).await;
    let (status, d) = ts.get_json("/devices/0004f2fffff0").await;
    assert_eq!(status, 200);
    assert_eq!(d["dn"], "2001");
    assert_eq!(d["vendor"], "polycom");
    click(&c, "#last").await;
    wait_text(
        &c,
        "#page-info",
        &format!("showing 1201–{} of {}", N + 1, N + 1),
    )
    .await;
    wait_text(&c, "tr.dev[data-mac='0004f2fffff0']", "2001").await;

    // A bogus MAC: the API's own message, and nothing created.
    let refusal = ts.post("/devices", json!({"mac": "not-a-mac"})).await;
    assert_eq!(refusal.status(), 422);
    let message = refusal.json::<serde_json::Value>().await.unwrap()["error"]
        .as_str()
        .unwrap()
        .to_owned();
    type_into(&c, "#c-mac", "not-a-mac").await;
    click(&c, "#c-add").await;
    let shown = wait_text(&c, "#c-msg.err", &message).await;
    assert_eq!(shown, message);
    wait_text(&c, "#page-info", &format!("of {}", N + 1)).await;
    // The MAC the form just created is taken: the 409's message.
    type_into(&c, "#c-mac", "0004f2fffff0").await;
    click(&c, "#c-add").await;
    wait_text(&c, "#c-msg.err", "0004f2fffff0").await;

    // Delete asks first; Cancel keeps the device, Yes deletes it.
    click(&c, "tr.dev[data-mac='0004f2fffff0']").await;
    wait_text(&c, "#d-title", "0004f2fffff0").await;
    click(&c, "#d-delete").await;
    assert!(c
        .find(Locator::Id("d-confirm"))
        .await
        .unwrap()
        .is_displayed()
        .await
        .unwrap());
    click(&c, "#d-delete-no").await;
    assert_eq!(ts.get_json("/devices/0004f2fffff0").await.0, 200);
    click(&c, "#d-delete").await;
    click(&c, "#d-delete-yes").await;
    wait_text(&c, "#status", "deleted 0004f2fffff0").await;
    wait_gone(&c, "tr.dev[data-mac='0004f2fffff0']").await;
    wait_text(&c, "#page-info", &format!("showing 1201–{N} of {N}")).await;
    assert_eq!(ts.get_json("/devices/0004f2fffff0").await.0, 404);
    assert!(!c
        .find(Locator::Id("detail"))
        .await
        .unwrap()
        .is_displayed()
        .await
        .unwrap());

    c.close().await.unwrap();
    ts.stop().await;
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

/// The Campaigns page: a profile edit leaves 20 phones out of date, the page says so, a
/// campaign started from its form brings them up to date with the progress shown live, and a
/// selection that matches nothing shows the API's refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_runs_a_campaign() {
    const N: u32 = 20;
    let ts = TestServer::start_with(
        Db::Sqlite,
        r#"
[server]
http = "127.0.0.1:0"
sip = ["127.0.0.1:0"]
admin-token = "test-token"
secret = "test-secret"

[campaigns]
mode = "manual"
rate-per-source = 50
wave-timeout-seconds = 10
"#,
    )
    .await;
    desk_profile(&ts, "desk").await;
    let (stop, stop_rx) = watch::channel(false);
    let followers = fleet(&ts, N, "desk", 0, &stop_rx).await;
    set_ntp(&ts, "desk", "x").await;

    let (_driver, c, _profile) = browser().await;
    log_in(&c, &ts).await;
    click(&c, "a[data-tab=campaigns]").await;
    wait_text(&c, "#fleet-summary", &format!("{N} out of date")).await;
    wait_text(&c, "#fleet-profile tr[data-value='desk']", &N.to_string()).await;
    wait_text(&c, "#fleet-model", "T46S").await;
    wait_text(&c, "#no-campaigns", "No campaigns yet").await;

    // Start one for the profile from the form; its progress reaches every phone.
    type_into(&c, "#k-profile", "desk").await;
    click(&c, "#k-start").await;
    wait_text(
        &c,
        "#k-msg.ok",
        &format!("started campaign 1 for {N} device(s)"),
    )
    .await;
    let patience = Duration::from_secs(30);
    wait_text_for(&c, "#cd-progress", &format!("{N} updated"), patience).await;
    wait_text_for(&c, "tr.campaign[data-id='1'] .c-state", "done", patience).await;
    wait_text(&c, "#cd-state", "done").await;
    wait_text(
        &c,
        "tr.campaign[data-id='1'] .c-progress",
        &format!("{N} / {N}"),
    )
    .await;
    let waves = c.find_all(Locator::Css("#cd-waves tr.wave")).await.unwrap();
    assert_eq!(waves.len(), 2, "waves of 10 and 10");
    wait_text(&c, "#cd-failures", "none").await;
    assert_eq!(
        wait_text(&c, "#fleet-summary.ok", "0 out of date").await,
        "0 out of date"
    );
    wait_gone(&c, "tr.campaign button.stop").await;
    let (_, api_view) = ts.get_json("/campaigns/1").await;
    assert_eq!(api_view["state"], "done", "{api_view}");
    assert_eq!(api_view["updated"], N, "{api_view}");

    // The page, for the README (tall enough for the waves).
    c.set_window_size(1280, 1000).await.unwrap();
    let png = c.screenshot().await.unwrap();
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-campaigns.png");
    std::fs::write(&out, png).unwrap();

    // A profile no device has: the API's own message, and no campaign.
    let refusal = ts.post("/campaigns", json!({"profile": "nobody"})).await;
    assert_eq!(refusal.status(), 422);
    let message = refusal.json::<serde_json::Value>().await.unwrap()["error"]
        .as_str()
        .unwrap()
        .to_owned();
    type_into(&c, "#k-profile", "nobody").await;
    click(&c, "#k-start").await;
    let shown = wait_text(&c, "#k-msg.err", &message).await;
    assert_eq!(shown, message);
    assert_eq!(
        ts.get_json("/campaigns").await.1.as_array().unwrap().len(),
        1
    );

    c.close().await.unwrap();
    let _ = stop.send(true);
    for f in followers {
        let f = f.await.unwrap();
        assert_eq!(
            (f.notifies.len(), f.reregistered),
            (1, 1),
            "{}: every phone followed one check-sync ({:?})",
            f.mac,
            f.last_error
        );
    }
    ts.stop().await;
}
