//! Trunk contacts that name a host, resolved per RFC 3263 against a test DNS server
//! (testbed's `dns_zone`, on loopback): `sip:ivr.example.test` with no port goes through
//! NAPTR and SRV to two media servers (sipp, testbed/sipp/trunk_uas*.xml); the B2BUA tries
//! the SRV records in order and moves to the next one when the first stops answering. A name
//! that does not resolve takes its trunk out of service with one clear log line per probe
//! interval, and the other trunks carry the calls.

mod common;

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use common::trunk::{call_through, raw_invite, wait_for_trunk, SippUas};
use common::{Db, TestServer};
use sipdm::sipside::trunks::TrunkState;
use testbed::dns_zone::{Zone, ZoneServer};

fn config(dns: SocketAddr, interval_ms: u64, trunks: &[(&str, &str, String)]) -> String {
    // T1 = 100 ms: Timer B (64·T1) fires after 6.4 s, well inside sipp's call timeout.
    let mut c = format!(
        r#"
[server]
http = "127.0.0.1:0"
sip = ["127.0.0.1:0"]
admin-token = "test-token"
secret = "test-secret"

[sip]
t1-ms = 100
trunk-options-interval-ms = {interval_ms}
dns-servers = ["{dns}"]

[ivr]
number = "8800"
"#
    );
    for (name, prefix, contact) in trunks {
        c.push_str(&format!(
            "\n[[trunks]]\nname = \"{name}\"\nprefix = \"{prefix}\"\ncontact = \"{contact}\"\noos-options-max-forwards = 1\n"
        ));
    }
    c
}

/// `ivr.example.test`: NAPTR → `_sip._udp.ivr` → ms1 (priority 10) and ms2 (priority 20).
fn ivr_zone(port1: u16, port2: u16) -> Zone {
    let lo = Ipv4Addr::LOCALHOST;
    Zone::new("example.test")
        .unwrap()
        .naptr("ivr", 60, 10, 10, "s", "SIP+D2U", "_sip._udp.ivr")
        .srv("_sip._udp.ivr", 60, 10, 0, port1, "ms1")
        .srv("_sip._udp.ivr", 60, 20, 0, port2, "ms2")
        .a("ms1", 60, lo)
        .a("ms2", 60, lo)
}

async fn dns(zone: Zone) -> ZoneServer {
    ZoneServer::start(zone, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("test DNS server")
}

fn both_records_answer(s: &TrunkState) -> bool {
    s.records.len() == 2 && s.records.iter().all(|r| r.in_service)
}

/// Acceptance: the trunk `sip:ivr.example.test` has two SRV records; calls go to the first;
/// when it stops answering (its sipp is killed) the IVR call still gets through, via the
/// second record, and the trunk stays in service on that record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_to_the_second_srv_record_when_the_first_stops_answering() {
    let (port1, port2) = (common::free_port(), common::free_port());
    let ms1 = SippUas::start(port1);
    let ms2 = SippUas::start(port2);
    let zone = dns(ivr_zone(port1, port2)).await;
    let ts = TestServer::start_with(
        Db::Sqlite,
        &config(
            zone.addr(),
            200,
            &[("ivr", "88", "sip:ivr.example.test".into())],
        ),
    )
    .await;
    wait_for_trunk(&ts, "ivr", both_records_answer).await;
    let state = &ts.running.as_ref().unwrap().trunks.states()[0];
    assert_eq!(
        state
            .records
            .iter()
            .map(|r| r.address.as_str())
            .collect::<Vec<_>>(),
        [
            format!("127.0.0.1:{port1}/UDP"),
            format!("127.0.0.1:{port2}/UDP")
        ],
        "SRV priority order"
    );

    let (ok, out) = call_through(&ts).await;
    assert!(ok, "phone:\n{out}\nms1 saw:\n{}", ms1.messages());
    assert!(ms1.saw_invite(), "ms1 saw:\n{}", ms1.messages());
    assert!(!ms2.saw_invite(), "ms2 saw:\n{}", ms2.messages());
    let invite = ms1.messages();
    assert!(
        invite.contains("INVITE sip:8800@ivr.example.test SIP/2.0"),
        "the Request-URI keeps the name: {invite}"
    );

    // The first record stops answering. Whether or not a probe has noticed by the time the
    // call comes (skipped at once, or given up on at Timer B), the call reaches the second.
    ms1.stop();
    let (ok, out) = call_through(&ts).await;
    assert!(ok, "phone:\n{out}\nms2 saw:\n{}", ms2.messages());
    assert!(ms2.saw_invite(), "ms2 saw:\n{}", ms2.messages());
    wait_for_trunk(&ts, "ivr", |s| {
        s.in_service && s.records.len() == 2 && !s.records[0].in_service && s.records[1].in_service
    })
    .await;
    ts.stop().await;
    drop(zone);
}

/// The first record answers probes but not INVITEs: the call gives up on it at Timer B and
/// goes to the second record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invite_unanswered_by_the_first_record_goes_to_the_second() {
    let (port1, port2) = (common::free_port(), common::free_port());
    let ms1 = SippUas::start_scenario(port1, "trunk_uas_silent.xml");
    let ms2 = SippUas::start(port2);
    let zone = dns(ivr_zone(port1, port2)).await;
    let ts = TestServer::start_with(
        Db::Sqlite,
        &config(
            zone.addr(),
            200,
            &[("ivr", "88", "sip:ivr.example.test".into())],
        ),
    )
    .await;
    wait_for_trunk(&ts, "ivr", both_records_answer).await;
    let (ok, out) = call_through(&ts).await;
    assert!(
        ok,
        "phone:\n{out}\nms1 saw:\n{}\nms2 saw:\n{}",
        ms1.messages(),
        ms2.messages()
    );
    assert!(ms1.saw_invite(), "ms1 saw:\n{}", ms1.messages());
    assert!(ms2.saw_invite(), "ms2 saw:\n{}", ms2.messages());
    ts.stop().await;
}

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

/// Fault: a trunk whose name does not resolve. Its trunk goes out of service with the DNS
/// error as its state, logged once for the probe interval however many calls come; the
/// other trunk of the prefix carries the IVR call; a prefix whose only trunk does not
/// resolve answers 503 (a transport failure, RFC 3261 §8.1.3.1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_does_not_resolve() {
    let capture = Capture::default();
    let writer = capture.clone();
    let _ = tracing_subscriber::fmt()
        .with_env_filter("sipdm=debug")
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .try_init();

    let port = common::free_port();
    let ms = SippUas::start(port);
    let zone = dns(Zone::new("example.test").unwrap()).await;
    // One probe window for the whole test: the first probe runs at start, the next in 60 s.
    let ts = TestServer::start_with(
        Db::Sqlite,
        &config(
            zone.addr(),
            60_000,
            &[
                ("broken", "88", "sip:nowhere.example.test".into()),
                ("ms", "88", format!("sip:127.0.0.1:{port}")),
                ("lonely", "77", "sip:gone.example.test".into()),
            ],
        ),
    )
    .await;
    wait_for_trunk(&ts, "broken", |s| {
        !s.in_service
            && s.last_probe.as_deref().is_some_and(|p| {
                p.contains("`nowhere.example.test` resolves to no SIP target")
                    && p.contains("NXDOMAIN")
            })
    })
    .await;
    wait_for_trunk(&ts, "ms", |s| s.last_probe.as_deref() == Some("200")).await;

    for _ in 0..2 {
        let (ok, out) = call_through(&ts).await;
        assert!(ok, "phone:\n{out}\nms saw:\n{}", ms.messages());
    }
    wait_for_trunk(&ts, "lonely", |s| !s.in_service).await;
    // A DN that registers with a password but places calls without one.
    let r = ts
        .post(
            "/dns",
            serde_json::json!({"number": "1000", "password": "pw", "authenticate_requests": "register"}),
        )
        .await;
    assert!(r.status().is_success(), "{:?}", r.text().await);
    for _ in 0..3 {
        assert_eq!(raw_invite(&ts, "1000", "7700").await, "503");
    }

    let logs = String::from_utf8_lossy(&capture.0.lock().unwrap()).into_owned();
    // The first failure is told by the "trunk out of service" line, later ones (one per
    // probe interval) by "trunk contact does not resolve": one warning here.
    let warned = |trunk: &str| {
        logs.lines()
            .filter(|l| {
                l.contains(" WARN ")
                    && l.contains("resolves to no SIP target")
                    && l.contains(&format!("trunk={trunk}"))
            })
            .count()
    };
    assert_eq!(warned("broken"), 1, "logs:\n{logs}");
    assert_eq!(warned("lonely"), 1, "logs:\n{logs}");
    ts.stop().await;
}
