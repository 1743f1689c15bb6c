//! Identity through a switch: a call relayed over the IVR trunk carries no digest of the
//! phone's (it ended at the switch); the device is whoever a *trusted* peer asserts in
//! P-Asserted-Identity. The same header from anyone else assigns nothing.

mod common;

use common::{Db, TestServer};
use serde_json::json;

const VICTIM: &str = "0004f2000d01";

fn config(trusted: &str) -> String {
    format!(
        r#"
[server]
http = "127.0.0.1:0"
sip = ["127.0.0.1:0"]
admin-token = "test-token"
secret = "test-secret"

[sip]
trusted-peers = [{trusted}]

[ivr]
number = "8800"

[[trunks]]
name = "ivr"
prefix = "88"
contact = "builtin:ivr"
group = "gcti_provisioning"
"#
    )
}

/// The victim is a known, unassigned phone (it fetched its default file); DN 1001 is free.
async fn setup(ts: &TestServer) {
    let r = ts
        .post("/dns", json!({"number": "1001", "password": "pw1001"}))
        .await;
    assert_eq!(r.status(), 201);
    let r = ts
        .fetch(
            &format!("{VICTIM}.cfg"),
            Some("PolycomVVX-VVX_450-UA/6.3.0.14929"),
        )
        .await;
    assert_eq!(r.status(), 200);
}

async fn run_sipp(ts: &TestServer, scenario: &'static str) -> (bool, String) {
    let target = ts.sip_addr();
    let media = common::free_port().to_string();
    let pai = format!("<sip:dm-{VICTIM}@sips1.example.test>");
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = vec![
            "-s", "8800", "-key", "pai", &pai, "-key", "dn1", "1", "-key", "dn2", "0", "-key",
            "dn3", "0", "-key", "dn4", "1", "-mp", &media,
        ];
        common::sipp(target, scenario, "u1", &args)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_switch_asserts_the_calling_device() {
    let ts = TestServer::start_with(Db::Sqlite, &config(r#""127.0.0.1""#)).await;
    setup(&ts).await;
    let (ok, out) = run_sipp(&ts, "ivr_switch_trunk.xml").await;
    assert!(ok, "sipp as the switch:\n{out}");
    let (_, d) = ts.get_json(&format!("/devices/{VICTIM}")).await;
    assert_eq!(d["dn"], "1001", "{d}");
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_identity_from_an_untrusted_address_assigns_nothing() {
    // Only the switch at .31 is trusted; the forger calls from 127.0.0.1.
    let ts = TestServer::start_with(Db::Postgres, &config(r#""127.0.0.31/32""#)).await;
    setup(&ts).await;
    let (ok, out) = run_sipp(&ts, "ivr_switch_forged.xml").await;
    assert!(ok, "the forged INVITE must be challenged (401):\n{out}");
    let (_, d) = ts.get_json(&format!("/devices/{VICTIM}")).await;
    assert!(d["dn"].is_null(), "the forger got the victim assigned: {d}");
    let (_, audit) = ts.get_json(&format!("/devices/{VICTIM}/audit")).await;
    assert!(
        !audit.to_string().contains("assign"),
        "an assignment was recorded: {audit}"
    );
    let metrics = ts
        .http
        .get(format!("{}/metrics", ts.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("sipdm_sip_identity_ignored_total")),
        "the ignored assertion is not counted:\n{metrics}"
    );
    ts.stop().await;
}
