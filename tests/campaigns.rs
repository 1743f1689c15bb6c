//! Every change reaches the phones: simulated phones that obey their files, registered to
//! sipdm (the registrar here) on PostgreSQL, follow every check-sync by re-fetching and
//! re-registering. A change makes the phones it alters out of date (their fetch receipts no
//! longer match), and a campaign brings them back in paced waves, or stops itself when a wave
//! does not come back.

mod common;

use std::time::{Duration, Instant};

use common::followers::{desk_profile, fleet, set_ntp, Followed};
use common::{eventually, Db, TestServer};
use serde_json::{json, Value};
use tokio::sync::watch;

/// How long a test waits for a campaign to end: a bound, not a speed target.
const PATIENCE: Duration = Duration::from_secs(120);

fn config(campaigns: &str) -> String {
    format!(
        r#"
[server]
http = "127.0.0.1:0"
sip = ["127.0.0.1:0"]
admin-token = "test-token"
secret = "test-secret"

[campaigns]
{campaigns}
"#
    )
}

/// Until campaign `id` has ended; its final view.
async fn ended(ts: &TestServer, id: u64) -> Value {
    eventually(PATIENCE, Duration::from_millis(200), || async {
        let (status, c) = ts.get_json(&format!("/campaigns/{id}")).await;
        assert_eq!(status, 200, "{c}");
        match c["state"] != "running" {
            true => Ok(c),
            false => Err(format!("campaign still running: {c}")),
        }
    })
    .await
}

/// Until the automatic campaign that follows a change shows up; its id.
async fn automatic(ts: &TestServer) -> u64 {
    eventually(PATIENCE, Duration::from_millis(100), || async {
        let (_, list) = ts.get_json("/campaigns").await;
        let c = list
            .as_array()
            .and_then(|l| l.first())
            .ok_or("no campaign after the change")?;
        assert_eq!(c["origin"], "auto", "{c}");
        Ok(c["id"].as_u64().unwrap())
    })
    .await
}

async fn finish(
    followers: Vec<tokio::task::JoinHandle<Followed>>,
    stop: watch::Sender<bool>,
) -> Vec<Followed> {
    let _ = stop.send(true);
    let mut out = Vec::new();
    for f in followers {
        out.push(f.await.unwrap());
    }
    out
}

/// Rotating the password of one DN held by one of 200 registered phones sends exactly one
/// check-sync, to that phone only; it re-fetches and registers again with the new password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dn_password_reaches_its_phone_only() {
    let ts = TestServer::start_with(
        Db::Postgres,
        &config(
            "mode = \"auto\"\nsettle-seconds = 1\nrate-per-source = 100\nwave-timeout-seconds = 20",
        ),
    )
    .await;
    let (stop, stop_rx) = watch::channel(false);
    let followers = fleet(&ts, 200, "default", 0, &stop_rx).await;

    let r = ts
        .http
        .put(ts.api("/dns/1042"))
        .bearer_auth(&ts.token)
        .json(&json!({"number": "1042", "password": "rotated-1042"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let id = automatic(&ts).await;
    let c = ended(&ts, id).await;
    assert_eq!(c["state"], "done", "{c}");
    assert_eq!(
        (c["devices"].as_u64(), c["updated"].as_u64()),
        (Some(1), Some(1)),
        "{c}"
    );
    // Nobody else hears of it, also not later.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, list) = ts.get_json("/campaigns").await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");

    let seen = finish(followers, stop).await;
    for f in &seen {
        if f.dn == "1042" {
            assert_eq!(f.notifies.len(), 1, "{}: {:?}", f.mac, f.last_error);
            assert_eq!(f.reregistered, 1, "{}: {:?}", f.mac, f.last_error);
        } else {
            assert!(
                f.notifies.is_empty(),
                "{} ({}) got a check-sync",
                f.mac,
                f.dn
            );
        }
    }
    let bindings = ts
        .running
        .as_ref()
        .unwrap()
        .sip()
        .registrar()
        .bindings("1042");
    assert_eq!(bindings.len(), 1);
    ts.stop().await;
}

/// Editing a profile used by 500 phones brings all 500 up to date through waves that never
/// exceed the configured rate, with the campaign's progress visible through the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_edit_reaches_500_phones_in_paced_waves() {
    const RATE: f64 = 100.0;
    let ts = TestServer::start_with(
        Db::Postgres,
        &config(&format!(
            "mode = \"manual\"\nrate-per-site = 1000\nrate-per-source = {RATE}\njitter-ms = 0\nfirst-wave = 25\nmax-wave = 200\nwave-timeout-seconds = 30"
        )),
    )
    .await;
    desk_profile(&ts, "desk").await;
    let (stop, stop_rx) = watch::channel(false);
    let followers = fleet(&ts, 500, "desk", 0, &stop_rx).await;

    set_ntp(&ts, "desk", "ntp.example.test").await;
    let (_, fleet_state) = ts.get_json("/fleet").await;
    assert_eq!(fleet_state["out_of_date"], 500, "{fleet_state}");
    assert_eq!(fleet_state["by_profile"]["desk"], 500, "{fleet_state}");

    // Manual mode: nothing moved by itself; the operator starts it for the profile.
    let (_, list) = ts.get_json("/campaigns").await;
    assert_eq!(list, json!([]));
    let r = ts.post("/campaigns", json!({"profile": "nobody"})).await;
    assert_eq!(r.status(), 422, "a selection that matches nothing says so");
    let r = ts.post("/campaigns", json!({"profile": "desk"})).await;
    assert_eq!(r.status(), 201);
    let started: Value = r.json().await.unwrap();
    let id = started["id"].as_u64().unwrap();
    let r = ts.post("/campaigns", json!({"profile": "desk"})).await;
    assert_eq!(r.status(), 409, "two campaigns never hold the same phones");

    // Progress through the API while it runs.
    let mut progress = Vec::new();
    let c = loop {
        let (_, c) = ts.get_json(&format!("/campaigns/{id}")).await;
        progress.push(c["updated"].as_u64().unwrap());
        if c["state"] != "running" {
            break c;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(c["state"], "done", "{c}");
    assert_eq!(c["updated"], 500, "{c}");
    assert_eq!(c["failed"], 0, "{c}");
    let sizes: Vec<u64> = c["waves"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["size"].as_u64().unwrap())
        .collect();
    assert_eq!(
        sizes,
        vec![25, 50, 100, 200, 125],
        "waves grow to the ceiling"
    );
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "{progress:?}");
    assert!(
        progress.iter().any(|&p| p > 0 && p < 500),
        "progress seen on the way: {progress:?}"
    );
    let (_, fleet_state) = ts.get_json("/fleet").await;
    assert_eq!(fleet_state["out_of_date"], 0, "{fleet_state}");

    // All 500 phones are behind one source address (127.0.0.1): never more than the rate
    // left in any one second, as sent.
    let peak = c["peak_source_per_second"].as_u64().unwrap();
    assert!(
        peak as f64 <= RATE,
        "{peak} check-syncs within one second (rate {RATE})"
    );
    assert!(
        peak as f64 >= RATE * 0.5,
        "the campaign ran at its rate, not far below: {peak}"
    );

    let seen = finish(followers, stop).await;
    let mut times: Vec<Instant> = Vec::new();
    for f in &seen {
        assert_eq!(f.notifies.len(), 1, "{}: {:?}", f.mac, f.last_error);
        assert_eq!(f.reregistered, 1, "{}: {:?}", f.mac, f.last_error);
        times.extend(&f.notifies);
    }
    // As the phones heard them (delivery adds the test host's scheduling to the spacing).
    times.sort();
    let most = times
        .iter()
        .enumerate()
        .map(|(i, t)| {
            times[i..]
                .iter()
                .take_while(|u| **u - *t < Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap();
    eprintln!(
        "500 phones updated; at most {peak} check-syncs sent and {most} received in any second"
    );
    ts.stop().await;
}

/// A wave in which phones do not come back stops the campaign: the phones of later waves
/// are left alone, and the failures are reported by MAC with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wave_that_does_not_come_back_stops_the_campaign() {
    let ts = TestServer::start_with(
        Db::Postgres,
        &config("mode = \"auto\"\nsettle-seconds = 1\nrate-per-source = 100\nfirst-wave = 10\nfailure-budget = 0.2\nwave-timeout-seconds = 3"),
    )
    .await;
    desk_profile(&ts, "desk").await;
    let (stop, stop_rx) = watch::channel(false);
    // The first five phones (by MAC, the campaign's order) never re-fetch.
    let followers = fleet(&ts, 30, "desk", 5, &stop_rx).await;
    set_ntp(&ts, "desk", "broken.example.test").await;
    let id = automatic(&ts).await;
    let c = ended(&ts, id).await;
    assert_eq!(c["state"], "halted", "{c}");
    assert_eq!(
        (
            c["updated"].as_u64(),
            c["failed"].as_u64(),
            c["pending"].as_u64()
        ),
        (Some(5), Some(5), Some(20)),
        "{c}"
    );
    assert!(
        c["reason"].as_str().unwrap().contains("wave 1: 5 of 10"),
        "{c}"
    );
    let failures = c["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 5);
    assert!(
        failures
            .iter()
            .all(|f| f["reason"].as_str().unwrap().contains("did not re-fetch")),
        "{c}"
    );

    let seen = finish(followers, stop).await;
    let reached = seen.iter().filter(|f| !f.notifies.is_empty()).count();
    assert_eq!(reached, 10, "only the first wave was sent check-sync");
    for f in seen.iter().skip(10) {
        assert!(f.notifies.is_empty(), "{} was left alone", f.mac);
    }
    ts.stop().await;
}
