//! Business continuity, end to end: SIPS1 and SIPS2 are a BC pair (the DNs exist on both:
//! peered switches over one range), stood in for by sipdm registrars on the deployment's shared
//! PostgreSQL store, each carrying the IVR number to its built-in IVR (the media server). An
//! unknown phone's default file names both servers: it registers to both as
//! `gcti_provisioning` and its IVR call goes via the preferred SIPS1, via the peer SIPS2 when
//! SIPS1 does not answer or answers 503. Its new file registers DN 2000… to both.
//!
//! One family, AudioCodes, fails over to its redundant proxy rather than registering to both
//! (shared/VENDORS.md): it ends registered to the first server that accepts.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Db, TestServer};
use testbed::phone::{Mac, Phone, PhoneConfig, PhoneOptions, PhoneSpec, SipTimers, Vendor};

/// Where the phones fetch their files: the one provisioning node of these tests, on a fixed
/// port so that the `fs_url` written into the files (which the phones follow) reaches it.
struct Fs {
    http: SocketAddr,
}

impl Fs {
    fn new() -> Fs {
        Fs { http: addr() }
    }

    fn url(&self) -> String {
        format!("http://{}/fs", self.http)
    }
}

/// The guide's BC configuration with the stand-ins' addresses; `http` and `sip` are where
/// this instance listens, every `fs_url` (the deployment's and both sites') is `fs`'s
/// address, `extra` is appended (a stand-in's own trunk or timers).
fn bc_config(
    http: &str,
    sip: &str,
    fs: &Fs,
    sips1: SocketAddr,
    sips2: SocketAddr,
    extra: &str,
) -> String {
    let fs_url = fs.url();
    format!(
        r#"
[server]
http = "{http}"
sip = ["{sip}"]
admin-token = "test-token"
secret = "test-secret"

[dm]
fs_url = "{fs_url}"
sip-servers = ["{sips1}", "{sips2}"]

[ivr]
number = "8800"

[[sites]]
name = "site1"
fs_url = "{fs_url}"
sip-servers = ["{sips1}", "{sips2}"]

[[sites]]
name = "site2"
fs_url = "{fs_url}"
sip-servers = ["{sips2}", "{sips1}"]

[[switches]]
name = "SIPS1"
site = "site1"
address = "{sips1}"
dn-ranges = ["1000-2999"]
peer = "SIPS2"

[[switches]]
name = "SIPS2"
site = "site2"
address = "{sips2}"
dn-ranges = ["1000-2999"]
peer = "SIPS1"
{extra}
"#
    )
}

const BUILTIN_IVR: &str = r#"
[[trunks]]
name = "ivr"
prefix = "88"
contact = "builtin:ivr"
group = "gcti_provisioning"
"#;

/// A phone's patience shortened: a silent server costs 64·T1 = 3.2 s.
fn options() -> PhoneOptions {
    PhoneOptions {
        timers: SipTimers {
            t1: Duration::from_millis(50),
            ..SipTimers::default()
        },
        overall_timeout: Duration::from_secs(45),
        ..PhoneOptions::default()
    }
}

/// An instance's address left to the system (its HTTP when phones do not fetch from it).
const ANY: &str = "127.0.0.1:0";

fn addr() -> SocketAddr {
    ([127, 0, 0, 1], common::free_port()).into()
}

/// Six unknown phones (one per vendor) provisioned by IVR, keying 2000…; returns them with
/// their final configuration.
async fn provision(fs: &TestServer) -> Vec<(Phone, PhoneConfig)> {
    for i in 0..Vendor::ALL.len() {
        let n = 2000 + i;
        let r = fs
            .post(
                "/dns",
                serde_json::json!({"number": n.to_string(), "password": format!("pw{n}")}),
            )
            .await;
        assert_eq!(r.status(), 201);
    }
    let mut set = tokio::task::JoinSet::new();
    for (i, vendor) in Vendor::ALL.into_iter().enumerate() {
        let spec = PhoneSpec {
            mac: Mac::generated(vendor, 300 + i as u32),
            vendor,
            prov_url: format!("{}/fs/dm/prov", fs.base),
            fallback_prov_urls: Vec::new(),
            local_ip: [127, 0, 0, 1].into(),
        };
        let dn = (2000 + i).to_string();
        set.spawn(async move {
            let mut phone = Phone::with_options(spec, options()).await.expect("phone");
            let r = phone.run_ivr_provisioning(&dn).await;
            (vendor, dn, phone, r)
        });
    }
    let mut out = Vec::new();
    while let Some(j) = set.join_next().await {
        let (vendor, dn, phone, r) = j.unwrap();
        let p = r.unwrap_or_else(|e| panic!("{vendor} {dn}: {e}"));
        assert_eq!(p.config.user, dn);
        let servers: Vec<u16> = p.config.registrars.iter().map(|r| r.port).collect();
        assert_eq!(
            servers.len(),
            2,
            "{vendor}: the DN's file names both servers"
        );
        assert_eq!(phone.check_sync_count(), 1, "{vendor}: one check-sync");
        out.push((phone, p.config));
    }
    out
}

/// Whether `dn` is bound on `ts`, authenticated as itself.
fn bound(ts: &TestServer, dn: &str) -> bool {
    ts.sip()
        .registrar()
        .bindings(dn)
        .iter()
        .any(|b| b.device.as_deref() == Some(dn))
}

/// SIPS1 is down while the phones are provisioned: registrations and the IVR call go to SIPS2.
/// SIPS1 comes back; at their next registration the phones are registered to both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preferred_server_down_ivr_through_the_peer_then_registered_to_both() {
    let (sips1, sips2) = (addr(), addr());
    let node = Fs::new();
    let fs = TestServer::start_with(
        Db::Postgres,
        &bc_config(
            &node.http.to_string(),
            ANY,
            &node,
            sips1,
            sips2,
            BUILTIN_IVR,
        ),
    )
    .await;
    let s2 = fs
        .start_peer(&bc_config(
            ANY,
            &sips2.to_string(),
            &node,
            sips1,
            sips2,
            BUILTIN_IVR,
        ))
        .await;
    // SIPS1: its address is in every file, nothing answers there.
    let phones = provision(&fs).await;
    for (_, cfg) in &phones {
        assert!(bound(&s2, &cfg.user), "{} on SIPS2", cfg.user);
    }
    let (_, audit) = fs.get_json("/audit?limit=100").await;
    let ivr = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == "assign" && a["actor"] == "ivr")
        .count();
    assert_eq!(ivr, phones.len(), "assigned by the IVR behind SIPS2");

    // SIPS1 recovers; each phone's registration refresh reaches it.
    let s1 = fs
        .start_peer(&bc_config(
            ANY,
            &sips1.to_string(),
            &node,
            sips1,
            sips2,
            BUILTIN_IVR,
        ))
        .await;
    for (mut phone, cfg) in phones {
        let r = phone.register(&cfg).await.expect("refresh");
        let at: Vec<SocketAddr> = r.iter().map(|r| r.registrar).collect();
        if phone.spec().vendor == Vendor::AudioCodes {
            assert_eq!(at, vec![sips1], "AudioCodes: the preferred again");
            assert!(bound(&s1, &cfg.user));
        } else {
            assert_eq!(at, vec![sips1, sips2], "{:?}", phone.spec().vendor);
            assert!(bound(&s1, &cfg.user), "{} on SIPS1", cfg.user);
            assert!(bound(&s2, &cfg.user), "{} on SIPS2", cfg.user);
        }
        phone.shutdown();
    }
    s1.stop().await;
    s2.stop().await;
    fs.stop().await;
}

/// SIPS1 is up but its route to the IVR is out of service (its trunk points at a media
/// server that does not answer OPTIONS or INVITE): it answers the phones' INVITE 503 and they
/// call through SIPS2; both servers hold every DN's registration at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preferred_ivr_route_out_of_service_503_then_peer() {
    let (sips1, sips2) = (addr(), addr());
    let dead_media = addr();
    let node = Fs::new();
    let fs = TestServer::start_with(
        Db::Postgres,
        &bc_config(
            &node.http.to_string(),
            ANY,
            &node,
            sips1,
            sips2,
            BUILTIN_IVR,
        ),
    )
    .await;
    let s2 = fs
        .start_peer(&bc_config(
            ANY,
            &sips2.to_string(),
            &node,
            sips1,
            sips2,
            BUILTIN_IVR,
        ))
        .await;
    let oos = format!(
        r#"
[sip]
t1-ms = 20
trunk-options-interval-ms = 200

[[trunks]]
name = "media-server"
prefix = "88"
contact = "sip:{dead_media}"
group = "gcti_provisioning"
"#
    );
    let s1 = fs
        .start_peer(&bc_config(
            ANY,
            &sips1.to_string(),
            &node,
            sips1,
            sips2,
            &oos,
        ))
        .await;
    // SIPS1's OPTIONS probes find its media server silent (bounded wait).
    let mut oos = false;
    for _ in 0..100 {
        let (_, trunks) = s1.get_json("/trunks").await;
        if trunks[0]["in_service"] == false {
            oos = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(oos, "SIPS1's IVR trunk is out of service");
    let phones = provision(&fs).await;
    for (phone, cfg) in phones {
        assert!(bound(&s1, &cfg.user), "{} on SIPS1", cfg.user);
        if phone.spec().vendor != Vendor::AudioCodes {
            assert!(bound(&s2, &cfg.user), "{} on SIPS2", cfg.user);
        }
        phone.shutdown();
    }
    s1.stop().await;
    s2.stop().await;
    fs.stop().await;
}

/// A disaster-recovery profile names the preferred and the peer server itself (here site 2's
/// view: SIPS2 preferred): phones on it register to both, the preferred first, by zero touch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dr_profile_registers_to_preferred_and_peer() {
    let (sips1, sips2) = (addr(), addr());
    let node = Fs::new();
    let fs = TestServer::start_with(
        Db::Postgres,
        &bc_config(
            &node.http.to_string(),
            ANY,
            &node,
            sips1,
            sips2,
            BUILTIN_IVR,
        ),
    )
    .await;
    let s1 = fs
        .start_peer(&bc_config(
            ANY,
            &sips1.to_string(),
            &node,
            sips1,
            sips2,
            BUILTIN_IVR,
        ))
        .await;
    let s2 = fs
        .start_peer(&bc_config(
            ANY,
            &sips2.to_string(),
            &node,
            sips1,
            sips2,
            BUILTIN_IVR,
        ))
        .await;
    let dr = serde_json::json!({"name": "dr-site2", "kind": "disaster-recovery",
        "preferred_server": sips2.to_string(), "peer_server": sips1.to_string(), "params": "{}"});
    assert_eq!(fs.post("/profiles", dr).await.status(), 201);
    let mut set = tokio::task::JoinSet::new();
    for (i, vendor) in Vendor::ALL.into_iter().enumerate() {
        let dn = (2100 + i).to_string();
        let r = fs
            .post(
                "/dns",
                serde_json::json!({"number": dn, "password": format!("pw{dn}")}),
            )
            .await;
        assert_eq!(r.status(), 201);
        let mac = Mac::generated(vendor, 400 + i as u32);
        let r = fs
            .post(
                "/devices",
                serde_json::json!({"mac": mac.plain(), "vendor": vendor.to_string(),
                                   "profile": "dr-site2", "dn": dn}),
            )
            .await;
        assert_eq!(r.status(), 201);
        let spec = PhoneSpec {
            mac,
            vendor,
            prov_url: format!("{}/fs/dm/prov", fs.base),
            fallback_prov_urls: Vec::new(),
            local_ip: [127, 0, 0, 1].into(),
        };
        set.spawn(async move {
            let mut phone = Phone::with_options(spec, options()).await.expect("phone");
            let r = phone.run_zero_touch().await;
            phone.shutdown();
            (vendor, dn, r.map_err(|e| e.to_string()))
        });
    }
    while let Some(j) = set.join_next().await {
        let (vendor, dn, r) = j.unwrap();
        let p = r.unwrap_or_else(|e| panic!("{vendor} {dn}: {e}"));
        let named: Vec<u16> = p.config.registrars.iter().map(|r| r.port).collect();
        assert_eq!(
            named,
            vec![sips2.port(), sips1.port()],
            "{vendor}: preferred, then peer"
        );
        let at: Vec<SocketAddr> = p.registered.iter().map(|r| r.registrar).collect();
        if vendor == Vendor::AudioCodes {
            assert_eq!(at, vec![sips2], "AudioCodes: the preferred");
        } else {
            assert_eq!(at, vec![sips2, sips1], "{vendor}");
            assert!(bound(&s1, &dn) && bound(&s2, &dn), "{vendor} {dn} on both");
        }
    }
    s1.stop().await;
    s2.stop().await;
    fs.stop().await;
}
