//! A boot storm on an active-active pair that loses a node: two `sipdm` processes on one
//! PostgreSQL schema, 10 000 assigned phones of six vendors power on at once (at most
//! `IN_FLIGHT` booting at a time), each fetching its files over HTTP and registering its DN
//! with digest; half start on each node, and every file names both nodes as SIP servers, its
//! own first. Node B is killed with SIGKILL once `KILL_AFTER` phones are up. Phones carry on
//! as real ones do: the other provisioning URL when a fetch is refused, the next SIP server
//! when a REGISTER times out, a 503's Retry-After waited out, a failed boot step tried again,
//! and the registration refreshed at a random point of its 60 s expiry. Every phone ends
//! registered on A, with its DN: none lost.
//!
//! Times are printed, not asserted (benchmarks measure speed: testbed/bench/boot_storm.sh).

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::node::Node;
use common::{free_port, Db, TestDb};
use testbed::phone::{Mac, Phone, PhoneOptions, SipTimers, Vendor};

const PHONES: u32 = 10_000;
/// Phones booting at once (each holds its SIP socket for the whole test).
const IN_FLIGHT: usize = 2_000;
/// Phones up before B is killed.
const KILL_AFTER: usize = 3_000;
const FIRST_DN: u32 = 100_000;

fn config(store: &str, http: SocketAddr, me: SocketAddr, other: SocketAddr) -> String {
    format!(
        r#"
[server]
http = "{http}"
sip = ["{me}"]
admin-token = "test-token"
secret = "test-secret"

[store]
url = "{store}"
max-connections = 8

[dm]
fs_url = "http://{http}/fs"
sip-servers = ["{me}", "{other}"]

[sip]
# The phones register for 60 s, so that one registered only on B before it died moves to A
# within the test.
min-expires = 10
# Short waits for a debug build's storm; the default is [5, 15].
overload-retry-after = [1, 3]
"#
    )
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A phone's patience, shortened so that a dead node costs seconds: transactions time out
/// after 64·T1 = 6.4 s; a failed boot step is tried again a second later (jittered).
fn options() -> PhoneOptions {
    PhoneOptions {
        timers: SipTimers {
            t1: Duration::from_millis(100),
            ..SipTimers::default()
        },
        http_timeout: Duration::from_secs(10),
        overall_timeout: Duration::from_secs(150),
        flow_attempts: 6,
        retry_interval: Duration::from_secs(1),
        max_retry_after: Duration::from_secs(5),
        // Refreshed at 30-42 s: a phone whose file names B first waits out B's silence (6.4 s)
        // before reaching A, still within the 60 s its binding on A lasts.
        register_expires: 60,
        refresh_percent: 50..=70,
        ..PhoneOptions::default()
    }
}

/// Each phone holds a socket for the whole test: lift the soft open-file limit to the hard
/// one when it is lower than that needs (`prlimit`, util-linux).
fn enough_open_files(needed: u64) {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let (soft, hard) = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| {
            let mut f = l.split_whitespace().skip(3);
            let parse = |v: Option<&str>| match v {
                Some("unlimited") => Some(u64::MAX),
                v => v?.parse().ok(),
            };
            Some((parse(f.next())?, parse(f.next())?))
        })
        .unwrap_or((u64::MAX, u64::MAX));
    if soft >= needed {
        return;
    }
    assert!(
        hard >= needed,
        "this test needs {needed} open files; the hard limit is {hard}"
    );
    let ok = std::process::Command::new("prlimit")
        .arg(format!("--pid={}", std::process::id()))
        .arg(format!("--nofile={hard}:{hard}"))
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "prlimit could not raise the open-file limit to {hard}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boot_storm_on_a_pair_survives_sigkill_of_a_node() {
    enough_open_files(u64::from(PHONES) + 2 * IN_FLIGHT as u64 + 1_000);
    let db = TestDb::new(Db::Postgres).await;
    let (http_a, sip_a) = (addr(free_port()), addr(free_port()));
    let (http_b, sip_b) = (addr(free_port()), addr(free_port()));
    // A first: it creates the schema's tables; B finds them.
    let a = Node::start("A", &config(&db.url, http_a, sip_a, sip_b), http_a, sip_a).await;
    let mut b = Node::start("B", &config(&db.url, http_b, sip_b, sip_a), http_b, sip_b).await;

    let setup = Instant::now();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let dns: String = (0..PHONES)
        .map(|i| format!("{},pw-{}\n", FIRST_DN + i, FIRST_DN + i))
        .collect();
    let devices: String = std::iter::once("mac,model,profile,dn\n".to_string())
        .chain((0..PHONES).map(|i| {
            let vendor = Vendor::ALL[i as usize % Vendor::ALL.len()];
            format!(
                "{},,,{}\n",
                Mac::generated(vendor, i + 1).plain(),
                FIRST_DN + i
            )
        }))
        .collect();
    for (path, body) in [("/dns/import", dns), ("/import", devices)] {
        let r = client
            .post(a.api(path))
            .bearer_auth(&a.token)
            .header("Content-Type", "text/csv")
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
    let setup = setup.elapsed();

    let started = Instant::now();
    let up = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let (booted_tx, mut booted_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut phones = tokio::task::JoinSet::new();
    // Bound of the phones' life: they refresh their registrations until then (or until the
    // test ends and aborts them).
    let until = Instant::now() + Duration::from_secs(240);
    for i in 0..PHONES {
        let spec = common::pair::phone_spec(i, &a, &b);
        let dn = (FIRST_DN + i).to_string();
        let (up, gate, booted) = (up.clone(), gate.clone(), booted_tx.clone());
        phones.spawn(async move {
            let permit = gate.acquire_owned().await;
            let mut phone = match Phone::with_options(spec.clone(), options()).await {
                Ok(p) => p,
                Err(e) => {
                    let _ = booted.send((
                        dn,
                        Err(format!("phone did not start: {e}")),
                        0,
                        0,
                        [Duration::ZERO; 2],
                    ));
                    return;
                }
            };
            let result = phone.run_zero_touch().await;
            drop(permit);
            up.fetch_add(1, Ordering::SeqCst);
            let mut steps = [Duration::ZERO; 2];
            if let Ok(p) = &result {
                for (k, t) in p.timings.iter().take(2).enumerate() {
                    steps[k] = t.elapsed;
                }
            }
            let result = match result {
                Ok(p) if p.config.user == dn => Ok(()),
                Ok(p) => Err(format!(
                    "{} {dn}: registered as {}",
                    spec.mac, p.config.user
                )),
                Err(e) => Err(format!("{:?} {} {dn}: {e}", spec.vendor, spec.mac)),
            };
            let ok = result.is_ok();
            let _ = booted.send((
                dn,
                result,
                phone.retry_after_waits(),
                phone.retries().values().sum::<u32>(),
                steps,
            ));
            if ok {
                // Up: refresh when due, as a phone does, until the test is done with it.
                testbed::fleet::follow(&mut phone, until).await;
            }
            phone.shutdown();
        });
    }
    drop(booted_tx);

    // During the storm: B dies with its transactions, HTTP connections and database
    // sessions in flight.
    let mut waited = 0;
    while up.load(Ordering::SeqCst) < KILL_AFTER && waited < 3_000 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += 1;
    }
    let at_kill = up.load(Ordering::SeqCst);
    assert!(
        at_kill >= KILL_AFTER && at_kill < PHONES as usize,
        "the kill lands during the storm ({at_kill} phones up)"
    );
    b.kill();
    let killed_at = started.elapsed();

    let mut failures = Vec::new();
    let mut dns = HashSet::new();
    let (mut waits, mut retries) = (0u64, 0u64);
    let (mut fetches, mut registers) = (Vec::new(), Vec::new());
    let all = tokio::time::timeout(Duration::from_secs(170), async {
        while let Some((dn, result, w, r, steps)) = booted_rx.recv().await {
            waits += u64::from(w);
            retries += u64::from(r);
            fetches.push(steps[0]);
            registers.push(steps[1]);
            match result {
                Ok(()) => {
                    dns.insert(dn);
                }
                Err(e) => failures.push(e),
            }
            if dns.len() + failures.len() == PHONES as usize {
                break;
            }
        }
    })
    .await;
    assert!(
        all.is_ok(),
        "phones still booting after 170 s: {} up",
        dns.len()
    );
    let booted_at = started.elapsed();
    assert!(
        failures.is_empty(),
        "{} of {PHONES} phones did not come up (B killed after {at_kill}):\n{}\n--- A's log:\n{}",
        failures.len(),
        failures
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n"),
        a.log_tail(40)
    );

    // Registered through A, every one: a phone that was registered only on B moves to A at
    // its next refresh (B does not answer it).
    let bound = common::eventually(Duration::from_secs(90), Duration::from_secs(1), || {
        let a = &a;
        let dns = &dns;
        async move {
            let bindings = a.get_json("/bindings").await;
            let bound: HashSet<String> = bindings
                .as_array()
                .map(|v| v.as_slice())
                .unwrap_or_default()
                .iter()
                .filter(|b| b["device"] == b["aor"])
                .filter_map(|b| b["aor"].as_str().map(String::from))
                .collect();
            let missing: Vec<&String> = dns.iter().filter(|dn| !bound.contains(*dn)).collect();
            if missing.is_empty() {
                return Ok(bound.len());
            }
            let mut by_vendor = std::collections::BTreeMap::new();
            for dn in &missing {
                let i = dn.parse::<u32>().unwrap_or(FIRST_DN) - FIRST_DN;
                *by_vendor
                    .entry(format!("{:?}", Vendor::ALL[i as usize % Vendor::ALL.len()]))
                    .or_insert(0) += 1;
            }
            Err(format!(
                "{} of {PHONES} DNs not registered on A, by vendor {by_vendor:?}; e.g. {:?}",
                missing.len(),
                &missing[..missing.len().min(5)]
            ))
        }
    })
    .await;
    let registered_at = started.elapsed();
    assert_eq!(bound, PHONES as usize, "one binding per DN on A");
    assert!(b.exited(), "B stays dead");

    let metrics = reqwest::get(format!("http://{}/metrics", a.http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap_or_default();
    let metric = |name: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0) as u64
    };
    fetches.sort();
    registers.sort();
    let pct = |v: &[Duration], p: usize| v.get(v.len() * p / 100).copied().unwrap_or_default();
    eprintln!(
        "boot steps: fetch p50 {:.1?} p95 {:.1?} max {:.1?}; register p50 {:.1?} p95 {:.1?} max {:.1?}",
        pct(&fetches, 50),
        pct(&fetches, 95),
        fetches.last().copied().unwrap_or_default(),
        pct(&registers, 50),
        pct(&registers, 95),
        registers.last().copied().unwrap_or_default(),
    );
    eprintln!(
        "boot storm: {PHONES} phones ({IN_FLIGHT} booting at once); set-up {setup:.1?}; B killed at {killed_at:.1?} \
         after {at_kill} were up; all up at {booted_at:.1?}, all registered on A at {registered_at:.1?}; \
         A sent {} 503s (Retry-After waited out {waits} times by the phones), the kernel dropped {} datagrams; \
         {retries} boot steps or refreshes tried again",
        metric("sipdm_sip_overload_rejected_total"),
        metric("sipdm_sip_udp_kernel_drops_total"),
    );
    phones.abort_all();
    while phones.join_next().await.is_some() {}
    drop(a);
    drop(b);
    db.drop_schema().await;
}
