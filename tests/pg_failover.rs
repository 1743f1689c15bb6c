//! The business-continuity pair on a PostgreSQL formation with automatic failover
//! (pg_auto_failover: a monitor, a primary on site 1, its synchronous standby on site 2; see
//! `common::pgaf`). Two `sipdm` processes, one per site, both with the multi-host `store.url`.
//!
//! * The primary is killed with SIGKILL during a 500-phone IVR run: the monitor promotes the
//!   standby, both nodes move to it without a restart, and every phone ends provisioned and
//!   registered: no assignment lost, none made twice.
//! * Site 1 is cut off (its sipdm, its PostgreSQL and the monitor, which lives there, stopped):
//!   no failover can happen, so site 2's node runs degraded on the standby, and starts again
//!   degraded when it is restarted. Known phones are served and registered meanwhile; once the
//!   primary is back, every binding accepted while degraded is in the store.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::node::Node;
use common::pair::{addr, config};
use common::pgaf::Formation;
use common::{eventually, free_port};
use testbed::phone::{Mac, Phone, PhoneOptions, PhoneSpec, SipTimers, Vendor};

/// Short SIP timers (a dead server costs 3.2 s), and patience for a failover: a phone refused
/// with 503 waits its Retry-After and tries the whole flow again.
fn options() -> PhoneOptions {
    PhoneOptions {
        timers: SipTimers {
            t1: Duration::from_millis(50),
            ..SipTimers::default()
        },
        prompt_timeout: Duration::from_secs(20),
        bye_timeout: Duration::from_secs(4),
        notify_timeout: Duration::from_secs(8),
        overall_timeout: Duration::from_secs(120),
        flow_attempts: 8,
        http_timeout: Duration::from_secs(5),
        ..PhoneOptions::default()
    }
}

/// Two sipdm nodes, one per site, on the formation's multi-host URL.
async fn pair(f: &Formation) -> (Node, Node) {
    let url = f.url(&f.dbname);
    let (http_a, sip_a) = (addr(free_port()), addr(free_port()));
    let (http_b, sip_b) = (addr(free_port()), addr(free_port()));
    let a = Node::start("A", &config(&url, http_a, sip_a, sip_b), http_a, sip_a).await;
    let b = Node::start("B", &config(&url, http_b, sip_b, sip_a), http_b, sip_b).await;
    (a, b)
}

async fn post_csv(node: &Node, path: &str, body: String) {
    let r = reqwest::Client::new()
        .post(node.api(path))
        .bearer_auth(&node.token)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    assert_eq!(
        status,
        200,
        "{path}: {}",
        r.text().await.unwrap_or_default()
    );
}

const IVR_PHONES: u32 = 500;
const IN_FLIGHT: usize = 80;
/// Phones finished before the primary is killed.
const KILL_AFTER: usize = 150;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_killed_during_an_ivr_run_fails_over_and_every_phone_ends_registered() {
    let mut f = Formation::start().await;
    let (a, b) = pair(&f).await;
    let csv: String = (0..IVR_PHONES)
        .map(|i| format!("{},pw-{}\n", 1000 + i, 1000 + i))
        .collect();
    post_csv(&a, "/dns/import", csv).await;

    let started = Instant::now();
    let finished = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let mut set = tokio::task::JoinSet::new();
    for i in 0..IVR_PHONES {
        let spec = common::pair::phone_spec(i, &a, &b);
        let dn = (1000 + i).to_string();
        let (finished, gate) = (finished.clone(), gate.clone());
        set.spawn(async move {
            let _permit = gate.acquire_owned().await;
            let mut phone = Phone::with_options(spec.clone(), options())
                .await
                .expect("phone starts");
            let result = phone.run_ivr_provisioning(&dn).await;
            phone.shutdown();
            finished.fetch_add(1, Ordering::SeqCst);
            (
                spec,
                dn,
                result.map(|p| p.config).map_err(|e| e.to_string()),
            )
        });
    }

    eventually(Duration::from_secs(180), Duration::from_millis(50), || {
        let n = finished.load(Ordering::SeqCst);
        async move {
            if n >= KILL_AFTER {
                Ok(())
            } else {
                Err(format!("{n} phones finished"))
            }
        }
    })
    .await;
    let old = f.primary().await;
    let assigned_before = assignments(&f.node_url(old)).await;
    let at_kill = finished.load(Ordering::SeqCst);
    assert!(at_kill < IVR_PHONES as usize, "the kill lands midway");
    f.kill_node(old);
    let killed = Instant::now();
    eprintln!(
        "{:?}: primary (node {old}) killed after {at_kill} phones, {assigned_before} assignments",
        std::time::SystemTime::now()
    );

    // The failover, as the database sees it: the standby promoted, and the first IVR
    // assignment committed there.
    let new = f.wait_primary(Duration::from_secs(60)).await;
    assert_ne!(new, old, "the standby took over");
    let no_primary_for = killed.elapsed();
    eprintln!(
        "{:?}: node {new} is the primary",
        std::time::SystemTime::now()
    );
    let new_url = f.node_url(new);
    let mut assigned_after = assigned_before;
    for _ in 0..1200 {
        assigned_after = assignments(&new_url).await;
        if assigned_after > assigned_before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        assigned_after > assigned_before,
        "no assignment on the new primary within 120 s ({assigned_before} before the kill)\n--- A:\n{}\n--- B:\n{}\n--- A health {:?}, B health {:?}",
        a.log_tail(40),
        b.log_tail(40),
        a.health().await,
        b.health().await
    );
    let first_assignment_after = killed.elapsed();

    let mut failures = Vec::new();
    let mut outcomes = HashMap::new();
    let all = tokio::time::timeout(Duration::from_secs(400), async {
        while let Some(j) = set.join_next().await {
            let (spec, dn, result) = j.expect("phone task");
            match result {
                Ok(config) if config.user == dn => {
                    outcomes.insert(spec.mac.plain(), dn);
                }
                Ok(config) => failures.push(format!("{} {dn}: ended as {}", spec.mac, config.user)),
                Err(e) => failures.push(format!("{:?} {} {dn}: {e}", spec.vendor, spec.mac)),
            }
        }
    })
    .await;
    assert!(all.is_ok(), "phones still running after 400 s");
    assert!(
        failures.is_empty(),
        "{} of {IVR_PHONES} phones failed:\n{}\n--- A:\n{}\n--- B:\n{}",
        failures.len(),
        failures.join("\n"),
        a.log_tail(30),
        b.log_tail(30)
    );
    let provisioned_at = started.elapsed();

    // In the new primary: each phone its own DN, each DN one phone, one IVR assignment each,
    // and a binding of every DN (the registrar writes behind its answers: bounded wait).
    let pool = sqlx::PgPool::connect(&new_url).await.unwrap();
    let rows: Vec<(String, Option<String>)> = sqlx::query_as("SELECT mac, dn FROM devices")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(rows.len(), IVR_PHONES as usize, "one device row per phone");
    for (mac, dn) in &rows {
        assert_eq!(dn.as_ref(), outcomes.get(mac), "device {mac}");
    }
    let assigns: Vec<(String, i64)> = sqlx::query_as(
        "SELECT mac, count(*) FROM audit WHERE action = 'assign' AND actor = 'ivr' GROUP BY mac",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(assigns.len(), IVR_PHONES as usize, "every phone assigned");
    let repeated: Vec<_> = assigns.iter().filter(|(_, n)| *n != 1).collect();
    assert!(repeated.is_empty(), "assigned more than once: {repeated:?}");
    let dns: HashSet<String> = outcomes.values().cloned().collect();
    let pool_ref = &pool;
    eventually(Duration::from_secs(30), Duration::from_millis(200), || {
        let dns = dns.clone();
        async move {
            let bound: Vec<String> =
                sqlx::query_scalar("SELECT DISTINCT aor FROM bindings WHERE device = aor")
                    .fetch_all(pool_ref)
                    .await
                    .map_err(|e| e.to_string())?;
            let bound: HashSet<String> = bound.into_iter().collect();
            let missing = dns.difference(&bound).count();
            if missing == 0 {
                Ok(())
            } else {
                Err(format!("{missing} DNs without a stored binding"))
            }
        }
    })
    .await;
    pool.close().await;
    let switches = a.metric("sipdm_store_host_switches_total").await
        + b.metric("sipdm_store_host_switches_total").await;
    assert!(switches >= 2.0, "both nodes moved to the new primary");
    eprintln!(
        "failover: primary killed after {at_kill} of {IVR_PHONES} phones; no writable primary for {no_primary_for:.1?}; \
         first assignment on the new primary {first_assignment_after:.1?} after the kill; all provisioned at {provisioned_at:.1?}"
    );
}

/// IVR assignments committed on one node.
async fn assignments(url: &str) -> i64 {
    match sqlx::PgPool::connect(url).await {
        Ok(pool) => {
            let n = sqlx::query_scalar(
                "SELECT count(*) FROM audit WHERE action = 'assign' AND actor = 'ivr'",
            )
            .fetch_one(&pool)
            .await
            .unwrap_or(0);
            pool.close().await;
            n
        }
        Err(_) => 0,
    }
}

/// The latest expiry of each DN's own bindings (registered as itself) in the store.
async fn expiries(pool: &sqlx::PgPool) -> Result<HashMap<String, i64>, String> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT aor, max(expires_at) FROM bindings WHERE device = aor GROUP BY aor")
            .fetch_all(pool)
            .await
            .map_err(|e| e.to_string())?;
    Ok(rows.into_iter().collect())
}

const KNOWN: u32 = 60;

/// Known phone `i`: a Yealink with DN 2000+i on a desk profile.
fn known_phone(i: u32, prov_url: &str) -> PhoneSpec {
    PhoneSpec {
        mac: Mac::generated(Vendor::Yealink, 5000 + i),
        vendor: Vendor::Yealink,
        prov_url: prov_url.to_owned(),
        fallback_prov_urls: Vec::new(),
        local_ip: [127, 0, 0, 1].into(),
    }
}

/// Boots phones `range` on their node: a fresh phone each time (no cached ETag), so the file
/// is fetched whole and the registration is a new one. Returns the failures.
async fn boot(specs: Vec<(PhoneSpec, String)>) -> Vec<String> {
    let mut set = tokio::task::JoinSet::new();
    let gate = Arc::new(tokio::sync::Semaphore::new(20));
    for (spec, dn) in specs {
        let gate = gate.clone();
        set.spawn(async move {
            let _p = gate.acquire_owned().await;
            let mut phone = Phone::with_options(spec.clone(), options()).await.unwrap();
            let r = phone.run_zero_touch().await;
            phone.shutdown();
            match r {
                Ok(p) if p.config.user == dn && !p.registered.is_empty() => Ok(()),
                Ok(p) => Err(format!("{}: registered as {}", spec.mac, p.config.user)),
                Err(e) => Err(format!("{}: {e}", spec.mac)),
            }
        });
    }
    let mut failures = Vec::new();
    while let Some(j) = set.join_next().await {
        if let Err(e) = j.unwrap() {
            failures.push(e);
        }
    }
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn site_cut_off_runs_degraded_on_the_standby_and_loses_no_binding() {
    let mut f = Formation::start().await;
    let (mut a, mut b) = pair(&f).await;
    let r = reqwest::Client::new()
        .post(a.api("/profiles"))
        .bearer_auth(&a.token)
        .json(&serde_json::json!({"name": "desk", "kind": "device-management"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    post_csv(
        &a,
        "/dns/import",
        (0..KNOWN)
            .map(|i| format!("{},pw-{}\n", 2000 + i, 2000 + i))
            .collect(),
    )
    .await;
    post_csv(
        &a,
        "/import",
        (0..KNOWN)
            .map(|i| {
                format!(
                    "{},T46S,desk,{}\n",
                    known_phone(i, "").mac.plain(),
                    2000 + i
                )
            })
            .collect(),
    )
    .await;
    let half = KNOWN / 2;
    // Site 2's node: the restarted one keeps the address.
    let prov_url = b.prov_url();
    let phones = |range: std::ops::Range<u32>| -> Vec<(PhoneSpec, String)> {
        range
            .map(|i| (known_phone(i, &prov_url), (2000 + i).to_string()))
            .collect()
    };

    // Before: the first half boots on site 2's node and registers.
    let failures = boot(phones(0..half)).await;
    assert!(failures.is_empty(), "before the cut: {failures:?}");
    let primary = f.primary().await;
    assert_eq!(primary, 0, "site 1 holds the primary");
    let site1 = f.node_url(0);
    let pool = sqlx::PgPool::connect(&site1).await.unwrap();
    let pool_ref = &pool;
    let before: HashMap<String, i64> = eventually(
        Duration::from_secs(20),
        Duration::from_millis(100),
        || async move {
            let stored = expiries(pool_ref).await?;
            if stored.len() == half as usize {
                Ok(stored)
            } else {
                Err(format!("{} bindings stored", stored.len()))
            }
        },
    )
    .await;
    pool.close().await;

    // Site 1 is cut off: its sipdm, its PostgreSQL (the primary) and the monitor.
    // The monitor first: with it gone, nobody can promote the standby.
    f.kill_monitor();
    a.kill();
    f.stop_node(0);
    let cut = Instant::now();
    let (status, body) = eventually(
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            // Unreachable (503) until the watcher has moved to the standby, then degraded (200).
            let (status, body) = b.health().await;
            if status == 200 && body.starts_with("degraded") {
                Ok((status, body))
            } else {
                Err(format!("{status} {body}"))
            }
        },
    )
    .await;
    assert_eq!(
        status, 200,
        "degraded on a standby is still serving: {body}"
    );
    let degraded_after = cut.elapsed();
    assert_eq!(b.metric("sipdm_degraded").await, 1.0);
    assert_eq!(b.metric("sipdm_store_writable").await, 0.0);

    // Restarted while degraded (SIGKILL, then the same configuration): it starts on the
    // standby, from what earlier starts wrote, and says so.
    let (b_http, b_sip, a_sip) = (b.http, b.sip, a.sip);
    b.kill();
    drop(b);
    let b = Node::start(
        "B-restarted",
        &config(&f.url(&f.dbname), b_http, b_sip, a_sip),
        b_http,
        b_sip,
    )
    .await;
    let (status, body) = b.health().await;
    assert!(
        status == 200 && body.starts_with("degraded"),
        "restarted while degraded: {status} {body}"
    );

    // Degraded: every known phone boots (the first half again, the second half for the
    // first time): files from the standby, registrations accepted and kept in memory.
    let failures = boot(phones(0..KNOWN)).await;
    assert!(
        failures.is_empty(),
        "while degraded: {failures:?}\n{}",
        b.log_tail(30)
    );
    // A phone nobody knows needs a write to be recorded: refused for now, with Retry-After.
    let unknown = reqwest::Client::new()
        .get(format!("{}/001565999999.cfg", b.prov_url()))
        .header("User-Agent", "Yealink SIP-T46S 66.86.0.15")
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 503, "an unknown phone while degraded");
    assert!(unknown.headers().get("retry-after").is_some());

    // The primary's site returns: its PostgreSQL and the monitor. The node leaves degraded
    // mode and writes what it accepted.
    f.start_monitor().await;
    f.start_node(0);
    let back = f.wait_primary(Duration::from_secs(90)).await;
    eventually(
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            let (status, body) = b.health().await;
            if status == 200 && body == "ok\n" {
                Ok(())
            } else {
                Err(format!("{status} {body}"))
            }
        },
    )
    .await;
    let pool = sqlx::PgPool::connect(&f.node_url(back)).await.unwrap();
    let pool_ref = &pool;
    let before_ref = &before;
    eventually(
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async move {
            let after = expiries(pool_ref).await?;
            let missing: Vec<u32> = (0..KNOWN)
                .filter(|i| {
                    let dn = (2000 + i).to_string();
                    match (after.get(&dn), before_ref.get(&dn)) {
                        (None, _) => true,
                        // Refreshed while degraded: a later expiry than before the cut.
                        (Some(now), Some(then)) => now <= then,
                        (Some(_), None) => false,
                    }
                })
                .collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(format!("registrations of {missing:?} not in the store"))
            }
        },
    )
    .await;
    pool.close().await;
    eprintln!(
        "site cut off: degraded {degraded_after:.1?} after the cut; {KNOWN} known phones served and registered meanwhile; \
         primary back on node {back}, every binding stored"
    );
    drop(b);
}
