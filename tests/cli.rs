//! The CLI over the same service layer, against a SQLite file; and the commands that talk to
//! a running server (check-sync, campaigns, fleet) through its admin API.

mod common;

use std::process::Command;
use std::time::Duration;

use common::followers::{desk_profile, follow, set_ntp};
use common::{eventually, Db, TestServer};
use serde_json::json;
use testbed::phone::{Mac, Phone, PhoneOptions, PhoneSpec, Vendor};
use tokio::sync::watch;

fn sipdm(config: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sipdm"))
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn device_lifecycle_and_import() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sipdm.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\nurl = \"sqlite://{}\"\n",
            dir.path().join("s.db").display()
        ),
    )
    .unwrap();

    assert!(sipdm(&config, &["dn", "add", "1000", "--password", "pw1000"]).0);
    assert!(sipdm(&config, &["dn", "add", "1001", "--password", "pw1001"]).0);
    let (ok, _, err) = sipdm(&config, &["dn", "add", "1000", "--password", "again"]);
    assert!(!ok && err.contains("already exists"), "{err}");

    let dns = dir.path().join("dns.csv");
    std::fs::write(&dns, "number,password\n2000,pw2000\n2001,pw2001\n").unwrap();
    let (ok, out, err) = sipdm(&config, &["dn", "import", dns.to_str().unwrap()]);
    assert!(ok && out.contains("imported 2"), "{out}{err}");
    std::fs::write(&dns, "2002,pw\n2000,dup\n").unwrap();
    let (ok, _, err) = sipdm(&config, &["dn", "import", dns.to_str().unwrap()]);
    assert!(!ok && err.contains("dns.csv:2"), "{err}");

    let (ok, out, err) = sipdm(
        &config,
        &["device", "add", "00:04:F2:00:00:01", "--model", "VVX 450"],
    );
    assert!(ok, "{err}");
    assert!(out.contains("0004f2000001"), "{out}");
    let (ok, _, err) = sipdm(&config, &["device", "add", "garbage"]);
    assert!(!ok && err.contains("not a MAC"), "{err}");

    assert!(sipdm(&config, &["device", "assign", "0004f2000001", "1000"]).0);
    let (_, out, _) = sipdm(&config, &["device", "list"]);
    let line = out.lines().find(|l| l.starts_with("0004f2000001")).unwrap();
    assert!(
        line.contains("1000") && line.contains("assigned") && line.contains("polycom"),
        "{line}"
    );
    assert!(sipdm(&config, &["device", "unassign", "0004f2000001"]).0);
    let (_, out, _) = sipdm(&config, &["device", "list", "--search", "0004f2000001"]);
    assert!(out.contains("unassigned"), "{out}");

    let bad = dir.path().join("bad.csv");
    std::fs::write(
        &bad,
        "mac,model,profile,dn\n0004f2000002,VVX 450,,1001\nnot-a-mac,VVX 450,,\n",
    )
    .unwrap();
    let (ok, _, err) = sipdm(&config, &["import", bad.to_str().unwrap()]);
    assert!(!ok, "a bad line fails the import");
    assert!(err.contains("bad.csv:3"), "names the line: {err}");
    let (_, out, _) = sipdm(&config, &["device", "list"]);
    assert!(!out.contains("0004f2000002"), "nothing imported:\n{out}");

    let good = dir.path().join("good.csv");
    std::fs::write(&good, "0004f2000002,VVX 450,,1001\n0004f2000003,T46S,,\n").unwrap();
    let (ok, out, err) = sipdm(&config, &["import", good.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("imported 2"), "{out}");
}

/// `sipdm dn add` without `--authenticate-requests` gives the DN `[auth]
/// authenticate-requests`; an explicit value is checked, and a wrong one is an error that
/// names the valid values and writes nothing.
#[test]
fn dn_add_takes_the_configured_authenticate_requests() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sipdm.toml");
    let db = dir.path().join("s.db");
    std::fs::write(
        &config,
        format!(
            "[store]\nurl = \"sqlite://{}\"\n[auth]\nauthenticate-requests = \"invite\"\n",
            db.display()
        ),
    )
    .unwrap();
    let (ok, _, err) = sipdm(&config, &["dn", "add", "1000", "--password", "pw"]);
    assert!(ok, "{err}");
    let (ok, _, err) = sipdm(
        &config,
        &[
            "dn",
            "add",
            "1001",
            "--password",
            "pw",
            "--authenticate-requests",
            "register",
        ],
    );
    assert!(ok, "{err}");
    let (ok, _, err) = sipdm(
        &config,
        &[
            "dn",
            "add",
            "1002",
            "--password",
            "pw",
            "--authenticate-requests",
            "",
        ],
    );
    assert!(ok, "{err}");
    let (ok, _, err) = sipdm(
        &config,
        &[
            "dn",
            "add",
            "1003",
            "--password",
            "pw",
            "--authenticate-requests",
            "options",
        ],
    );
    assert!(!ok, "options accepted");
    assert!(
        err.contains("authenticate-requests") && err.contains("options"),
        "{err}"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let got: Vec<(String, String)> = rt.block_on(async {
        let store = sipdm::store::Store::open(&format!("sqlite://{}", db.display()), 1)
            .await
            .unwrap();
        store
            .dns()
            .await
            .unwrap()
            .into_iter()
            .map(|d| (d.number, d.authenticate_requests))
            .collect()
    });
    assert_eq!(
        got,
        [
            ("1000".to_owned(), "invite".to_owned()),
            ("1001".to_owned(), "register".to_owned()),
            ("1002".to_owned(), String::new()),
        ]
    );
}

/// The server the remote commands talk to: manual campaigns, no admin token in its
/// configuration (it generates one and keeps it in the store, where the CLI finds it).
const SERVER: &str = r#"
[server]
http = "127.0.0.1:0"
sip = ["127.0.0.1:0"]
secret = "test-secret"

[campaigns]
mode = "manual"
rate-per-source = 100
jitter-ms = 0
wave-timeout-seconds = 20
"#;

/// The built binary with `args`, apart from the caller's environment: exit code, stdout,
/// stderr.
async fn sipdm_async(args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sipdm"))
        .args(args)
        .env_remove("SIPDM_CONFIG")
        .env_remove("SIPDM_SERVER")
        .env_remove("SIPDM_ADMIN_TOKEN")
        .env_remove("SIPDM_ADMIN_TOKEN_FILE")
        .env_remove("SIPDM_STORE_URL")
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `sipdm device check-sync`, `campaign …` and `fleet` against a running server: where it is
/// and its token from the configuration and the store (or `--server` / `--token`), the API's
/// refusals as messages with their exit codes, and a campaign followed to its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_that_talk_to_the_running_server() {
    let ts = TestServer::start_with(Db::Sqlite, SERVER).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cli.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nhttp = \"{}\"\n[store]\nurl = \"{}\"\n",
            ts.base.trim_start_matches("http://"),
            ts.db.url
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap().to_owned();
    let cli = |args: &[&str]| {
        let mut all = vec!["--config", config.as_str()];
        all.extend_from_slice(args);
        all.iter().map(|s| s.to_string()).collect::<Vec<String>>()
    };
    let run = |args: Vec<String>| async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        sipdm_async(&args).await
    };

    // Three phones on profile `desk`, registered and following check-syncs; one device that
    // never registered.
    desk_profile(&ts, "desk").await;
    let mut phones = Vec::new();
    for i in 0..3u32 {
        let mac = Mac::generated(Vendor::Yealink, i + 1);
        let dn = (1000 + i).to_string();
        let r = ts
            .post(
                "/dns",
                json!({"number": dn, "password": format!("pw-{dn}")}),
            )
            .await;
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        let r = ts
            .post(
                "/devices",
                json!({"mac": mac.plain(), "model": "T46S", "profile": "desk", "dn": dn}),
            )
            .await;
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        let mut phone = Phone::with_options(
            PhoneSpec {
                mac: mac.clone(),
                vendor: Vendor::Yealink,
                prov_url: format!("{}/fs/dm/prov", ts.base),
                fallback_prov_urls: Vec::new(),
                local_ip: [127, 0, 0, 1].into(),
            },
            PhoneOptions::default(),
        )
        .await
        .expect("phone starts");
        let p = phone.run_zero_touch().await.expect("phone boots");
        assert_eq!(p.config.user, dn);
        phones.push(phone);
    }
    let (stop, stop_rx) = watch::channel(false);
    let followers: Vec<_> = phones
        .into_iter()
        .enumerate()
        .map(|(i, p)| tokio::spawn(follow(p, (1000 + i).to_string(), false, stop_rx.clone())))
        .collect();
    let r = ts.post("/devices", json!({"mac": "001565ffff01"})).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    // Every phone's receipt is written (behind the response, within a second).
    eventually(
        Duration::from_secs(10),
        Duration::from_millis(100),
        || async {
            let fleet = ts.get_json("/fleet").await.1;
            match fleet["with_receipts"] == 3 {
                true => Ok(()),
                false => Err(format!("not every receipt: {fleet}")),
            }
        },
    )
    .await;

    // Check-sync: a registered phone gets it; one never registered is said so, exit code 3.
    let phone1 = Mac::generated(Vendor::Yealink, 1).plain();
    let (code, out, err) = run(cli(&["device", "check-sync", &phone1])).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("check-sync sent to") && out.contains("200"),
        "{out}"
    );
    let (code, out, err) = run(cli(&["device", "check-sync", "001565ffff01"])).await;
    assert_eq!(code, 3, "{out}{err}");
    assert!(err.contains("not registered"), "{err}");

    // A selection that matches nothing says so.
    let (code, out, err) = run(cli(&["campaign", "start", "--profile", "nobody"])).await;
    assert_ne!(code, 0, "{out}{err}");
    assert!(err.contains("matches no device"), "{err}");
    let (code, out, err) = run(cli(&["campaign", "list"])).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("no campaigns"), "{out}");

    // Editing the profile puts its three phones out of date.
    set_ntp(&ts, "desk", "ntp.example.test").await;
    // `--server` and `--token` instead of the configuration.
    let (code, out, err) = run(vec![
        "--server".into(),
        ts.base.clone(),
        "--token".into(),
        ts.token.clone(),
        "fleet".into(),
    ])
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("4 device(s), 3 fetched a file, 3 out of date"),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.trim() == "desk                     3"),
        "{out}"
    );
    let (code, _, err) = run(vec![
        "--server".into(),
        ts.base.clone(),
        "--token".into(),
        "wrong".into(),
        "fleet".into(),
    ])
    .await;
    assert_eq!(code, 1);
    assert!(err.contains("refused the admin token"), "{err}");
    let (code, _, err) = run(vec![
        "--server".into(),
        "http://127.0.0.1:1".into(),
        "--token".into(),
        "x".into(),
        "fleet".into(),
    ])
    .await;
    assert_eq!(code, 1);
    assert!(
        err.contains("cannot reach the sipdm server at http://127.0.0.1:1"),
        "{err}"
    );

    // A campaign followed to its end.
    let (code, out, err) = run(cli(&["campaign", "start", "--profile", "desk", "--wait"])).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("campaign 1 started: 3 device(s) of profile=desk"),
        "{out}"
    );
    assert!(out.contains("campaign 1 (manual): done"), "{out}");
    assert!(out.contains("3 updated, 0 failed"), "{out}");
    let (code, out, _) = run(cli(&["campaign", "show", "1"])).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("waves") && out.contains("profile=desk"),
        "{out}"
    );
    let (_, out, _) = run(cli(&["campaign", "list"])).await;
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with("1 "))
        .unwrap();
    assert!(line.contains("done") && line.contains("manual"), "{out}");
    let (code, out, _) = run(cli(&["campaign", "stop", "1"])).await;
    assert_eq!(code, 0);
    assert!(out.contains("had ended already: done"), "{out}");
    let (code, _, err) = run(cli(&["campaign", "show", "7"])).await;
    assert_eq!(code, 1);
    assert!(err.contains("not found"), "{err}");
    let (_, out, _) = run(cli(&["fleet"])).await;
    assert!(out.contains("0 out of date"), "{out}");

    let _ = stop.send(true);
    for f in followers {
        f.await.unwrap();
    }
    ts.stop().await;
}
