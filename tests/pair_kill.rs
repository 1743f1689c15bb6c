//! An active-active pair loses a node: two `sipdm` processes on one PostgreSQL schema, 200
//! unknown phones provisioned through the IVR, half starting on each node; node B is killed
//! with SIGKILL while phones are in the middle of their flows (IVR calls in progress among
//! them). Phones whose node died carry on against A, as real phones do: the next provisioning
//! URL when a fetch is refused, the next SIP server of the file when an INVITE or REGISTER
//! times out, and the whole flow again (re-fetch first) when a step fails. Every phone ends
//! provisioned and registered on A; no DN is assigned twice, no device gets two DNs, and the
//! audit log holds exactly one assignment per phone. The same with B stopped (SIGSTOP) instead:
//! a node that stops answering while its sockets and database sessions stay open.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::node::Node;
use common::pair::{addr, config};
use common::{free_port, Db, TestDb};
use testbed::phone::{Phone, PhoneOptions, SipTimers};

const PHONES: u32 = 200;
/// Phones in flight at once: enough that the kill lands on flows at every step.
const IN_FLIGHT: usize = 80;
/// Phones finished before B is killed.
const KILL_AFTER: usize = 80;

/// A phone's patience, shortened so that a dead node costs seconds rather than a minute:
/// transactions time out after 64·T1 = 3.2 s.
fn options() -> PhoneOptions {
    PhoneOptions {
        timers: SipTimers {
            t1: Duration::from_millis(50),
            ..SipTimers::default()
        },
        prompt_timeout: Duration::from_secs(5),
        bye_timeout: Duration::from_secs(4),
        notify_timeout: Duration::from_secs(6),
        overall_timeout: Duration::from_secs(60),
        flow_attempts: 4,
        // A node that accepts connections but never answers costs this much per fetch.
        http_timeout: Duration::from_secs(3),
        ..PhoneOptions::default()
    }
}

/// How node B fails midway.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    /// SIGKILL: its sockets and database sessions close at once.
    Kill,
    /// SIGSTOP: it stops answering but its sockets and database sessions stay open (a hung
    /// process, or a node cut off from the phones), so phones time out on it and the other
    /// node must not wait on it either.
    Stop,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pair_survives_sigkill_of_a_node_during_ivr_provisioning() {
    pair_loses_b(Fault::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pair_carries_on_when_a_node_stops_answering() {
    pair_loses_b(Fault::Stop).await;
}

async fn pair_loses_b(fault: Fault) {
    let db = TestDb::new(Db::Postgres).await;
    let (http_a, sip_a) = (addr(free_port()), addr(free_port()));
    let (http_b, sip_b) = (addr(free_port()), addr(free_port()));
    // A first: it creates the schema's tables; B finds them.
    let a = Node::start("A", &config(&db.url, http_a, sip_a, sip_b), http_a, sip_a).await;
    let mut b = Node::start("B", &config(&db.url, http_b, sip_b, sip_a), http_b, sip_b).await;

    let csv: String = (0..PHONES)
        .map(|i| format!("{},pw-{}\n", 1000 + i, 1000 + i))
        .collect();
    let r = reqwest::Client::new()
        .post(a.api("/dns/import"))
        .bearer_auth(&a.token)
        .body(csv)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let started = std::time::Instant::now();
    let finished = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let mut set = tokio::task::JoinSet::new();
    for i in 0..PHONES {
        let spec = common::pair::phone_spec(i, &a, &b);
        let dn = (1000 + i).to_string();
        let (finished, gate) = (finished.clone(), gate.clone());
        set.spawn(async move {
            let _permit = gate.acquire_owned().await;
            let mut phone = Phone::with_options(spec.clone(), options())
                .await
                .expect("phone starts");
            let result = phone.run_ivr_provisioning(&dn).await;
            finished.fetch_add(1, Ordering::SeqCst);
            let result = result
                .map(|p| (p.config, p.total, p.call.is_none()))
                .map_err(|e| e.to_string());
            (phone, spec, dn, result)
        });
    }

    // Midway: B dies with its IVR calls, transactions and database sessions in flight.
    let mut waited = 0;
    while finished.load(Ordering::SeqCst) < KILL_AFTER && waited < 1200 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += 1;
    }
    let at_kill = finished.load(Ordering::SeqCst);
    assert!(
        at_kill >= KILL_AFTER && at_kill < PHONES as usize,
        "the kill lands midway ({at_kill} finished)"
    );
    let calls_on_b = b.metric("sipdm_ivr_calls_active").await as u64;
    match fault {
        Fault::Kill => b.kill(),
        Fault::Stop => b.signal("STOP"),
    }

    let killed_at = started.elapsed();
    let mut failures = Vec::new();
    let mut outcomes = HashMap::new();
    let mut phones = Vec::new();
    let mut slowest = Duration::ZERO;
    let mut recovered_by_refetch = 0;
    let all = tokio::time::timeout(Duration::from_secs(240), async {
        while let Some(j) = set.join_next().await {
            let (phone, spec, dn, result) = j.expect("phone task");
            match result {
                Ok((config, took, no_call)) if config.user == dn => {
                    slowest = slowest.max(took);
                    // Its last attempt found the DN already assigned (its check-sync was
                    // lost with B).
                    recovered_by_refetch += usize::from(no_call);
                    outcomes.insert(spec.mac.plain(), dn);
                    phones.push((phone, config));
                }
                Ok((config, _, _)) => {
                    failures.push(format!("{} {dn}: ended as {}", spec.mac, config.user))
                }
                Err(e) => failures.push(format!("{:?} {} {dn}: {e}", spec.vendor, spec.mac)),
            }
        }
    })
    .await;
    assert!(all.is_ok(), "phones still running after 240 s");
    let provisioned_at = started.elapsed();
    assert!(
        failures.is_empty(),
        "{} of {PHONES} phones failed (B {fault:?} after {at_kill}, {calls_on_b} IVR calls on it):\n{}\n--- A's log:\n{}",
        failures.len(),
        failures.join("\n"),
        a.log_tail(40)
    );
    assert_eq!(outcomes.len(), PHONES as usize);

    // The registration refresh: a phone registered only to B (a family that fails over
    // rather than registering to both) finds B silent and moves to A.
    let mut refresh = tokio::task::JoinSet::new();
    for (mut phone, config) in phones {
        refresh.spawn(async move {
            let r = phone.register(&config).await.map_err(|e| e.to_string());
            phone.shutdown();
            (config.user, r)
        });
    }
    while let Some(j) = refresh.join_next().await {
        let (dn, r) = j.expect("refresh task");
        assert!(r.is_ok(), "{dn} re-registers: {r:?}");
    }

    // Registered: the survivor holds a binding of every DN, authenticated as that DN.
    let bindings = a.get_json("/bindings").await;
    let bound: HashSet<String> = bindings
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["device"] == b["aor"])
        .filter_map(|b| b["aor"].as_str().map(String::from))
        .collect();
    let unbound: Vec<&String> = outcomes
        .values()
        .filter(|dn| !bound.contains(*dn))
        .collect();
    assert!(unbound.is_empty(), "DNs not registered on A: {unbound:?}");

    // Nothing lost, nothing twice: in SQL, each phone has its own DN, each DN one phone, and
    // the audit log one assignment per phone, made by an IVR.
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let rows: Vec<(String, Option<String>)> = sqlx::query_as("SELECT mac, dn FROM devices")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(rows.len(), PHONES as usize, "one device row per phone");
    for (mac, dn) in &rows {
        let expected = outcomes.get(mac).expect("a phone of the test");
        assert_eq!(dn.as_ref(), Some(expected), "device {mac}");
    }
    let twice: Vec<(String, i64)> = sqlx::query_as(
        "SELECT dn, count(*) FROM devices WHERE dn IS NOT NULL GROUP BY dn HAVING count(*) > 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(twice.is_empty(), "DNs assigned twice: {twice:?}");
    let assigns: Vec<(String, i64)> = sqlx::query_as(
        "SELECT mac, count(*) FROM audit WHERE action = 'assign' AND actor = 'ivr' GROUP BY mac",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        assigns.len(),
        PHONES as usize,
        "every phone assigned by the IVR"
    );
    let repeated: Vec<_> = assigns.iter().filter(|(_, n)| *n != 1).collect();
    assert!(repeated.is_empty(), "assigned more than once: {repeated:?}");
    let others: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit WHERE action IN ('assign', 'unassign') AND actor <> 'ivr'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(others, 0, "no assignment other than the IVR's");
    // How the check-syncs left: from the instance that ran the IVR call, handed to the
    // holder of the phone's flow, or straight to the contact when the holder was gone.
    let routes: Vec<(String, i64)> = sqlx::query_as(
        "SELECT CASE WHEN actor LIKE '%direct%' THEN 'direct' WHEN actor LIKE '% via %' THEN 'handed over' \
         ELSE 'local' END AS route, count(*) FROM audit WHERE action = 'check-sync' GROUP BY route ORDER BY route",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    eprintln!(
        "pair ({fault:?}): B failed at {killed_at:.1?} after {at_kill} of {PHONES} phones, with {calls_on_b} IVR calls in progress on it; \
         all {PHONES} provisioned at {provisioned_at:.1?} (slowest phone {slowest:.1?}); \
         {recovered_by_refetch} found their DN on a re-fetch; check-syncs {routes:?}"
    );
    drop(a);
    if fault == Fault::Stop {
        b.signal("CONT");
    }
    drop(b);
    db.drop_schema().await;
}

/// B stops answering in the middle of a write transaction (a long CSV import, frozen with
/// SIGSTOP): its session stays open, idle in transaction, holding the rows it wrote. A phone
/// of that import boots on A, which records it: A must not wait on B for ever. PostgreSQL ends
/// B's stalled session (sipdm sets `idle_in_transaction_session_timeout` on its sessions), A
/// records the phone, and B's import, when B wakes, fails whole: nothing is half-imported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_frozen_mid_transaction_does_not_block_the_other() {
    let db = TestDb::new(Db::Postgres).await;
    let (http_a, sip_a) = (addr(free_port()), addr(free_port()));
    let (http_b, sip_b) = (addr(free_port()), addr(free_port()));
    let a = Node::start("A", &config(&db.url, http_a, sip_a, sip_b), http_a, sip_a).await;
    // B's sessions carry a name of their own, so that the database's view of them is B's
    // alone (other tests share the database).
    let b_name = format!("frozen_b_{}", common::hex_id());
    let b_url = format!("{}&application_name={b_name}", db.url);
    let mut b = Node::start("B", &config(&b_url, http_b, sip_b, sip_a), http_b, sip_b).await;
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();

    let first = "0004f2e00000";
    let csv: String = std::iter::once("mac,model,profile,dn\n".to_string())
        .chain((0..100_000u32).map(|i| format!("0004f2{:06x},,,\n", 0xe00000 + i)))
        .collect();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let import = {
        let (client, url, token) = (client.clone(), b.api("/import"), b.token.clone());
        tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(token)
                .body(csv)
                .send()
                .await
                .map(|r| r.status().as_u16())
        })
    };
    // B's import transaction has written a while (bounded wait), then B freezes.
    let in_tx = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = '{b_name}' \
         AND xact_start IS NOT NULL AND query ILIKE '%devices%'"
    );
    let mut seen = false;
    for _ in 0..200 {
        let n: i64 = sqlx::query_scalar(&in_tx).fetch_one(&pool).await.unwrap();
        if n > 0 {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(seen, "B's import started");
    tokio::time::sleep(Duration::from_millis(100)).await;
    b.signal("STOP");
    // Frozen inside it: its session waits, idle in transaction.
    let idle = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = '{b_name}' \
         AND state = 'idle in transaction'"
    );
    let mut frozen_in_tx = false;
    for _ in 0..50 {
        let n: i64 = sqlx::query_scalar(&idle).fetch_one(&pool).await.unwrap();
        if n > 0 {
            frozen_in_tx = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(frozen_in_tx, "B froze inside its import transaction");

    // A phone of the import boots on A: A records it (its insert waits on B's row until
    // PostgreSQL ends B's session).
    let r = client
        .get(format!("{}/{first}.cfg", a.prov_url()))
        .header("User-Agent", "PolycomVVX-VVX_450-UA/6.3.0.14929")
        .send()
        .await;
    let status = r.as_ref().map(|r| r.status().as_u16());
    b.signal("CONT");
    assert_eq!(
        status.as_ref().ok(),
        Some(&200),
        "A served the phone while B was frozen: {status:?}\n{}",
        a.log_tail(20)
    );
    let imported = import.await.unwrap();
    assert!(
        imported.as_ref().is_ok_and(|s| *s >= 500) || imported.is_err(),
        "B's import cannot have succeeded after losing its session: {imported:?}"
    );
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM devices")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 1, "only the phone A recorded; nothing of the import");
    pool.close().await;
    drop(a);
    b.kill();
    db.drop_schema().await;
}
