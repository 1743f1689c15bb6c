//! The guide's multi-site walkthrough with two real switches: SIPS1 (site 1, DNs 1000–1999)
//! and SIPS2 (site 2, DNs 2000–2999) are Kamailio instances with the shipped configuration;
//! FS1 and FS2 are sipdm nodes of site 1 and site 2 on one PostgreSQL. An unknown phone boots
//! from site 1's node, registers to SIPS1, keys 2000 into the IVR (reached through SIPS1's
//! trunk) and ends registered on SIPS2, re-fetching from site 2's node as its new file says.
//! A phone assigned 1000 beforehand ends on SIPS1 by zero-touch.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::kamailio::{Kamailio, KamailioParams, SwitchDb};
use common::TestServer;
use serde_json::json;
use testbed::phone::{Mac, Phone, PhoneOptions, PhoneSpec, Vendor};

fn loopback(port: u16) -> SocketAddr {
    ([127, 0, 0, 1], port).into()
}

/// How the two switches relate: two sites each with its own switch and DNs (multi-site), or
/// a business-continuity pair with the DNs on both.
#[derive(Clone, Copy, PartialEq)]
enum Topology {
    MultiSite,
    Continuity,
}

/// Where one node listens and what it knows: both switches and both sites are known to every
/// node. Multi-site: the node's own switch takes its unassigned phones; business continuity:
/// they register to both.
struct Node {
    sip: SocketAddr,
    http: SocketAddr,
    own_switch: SocketAddr,
}

fn node_config(
    topology: Topology,
    node: Node,
    sips1: SocketAddr,
    sips2: SocketAddr,
    fs1: SocketAddr,
    fs2: SocketAddr,
) -> String {
    let Node {
        sip,
        http,
        own_switch,
    } = node;
    let (dm_servers, site1_servers, site2_servers, ranges, peers) = match topology {
        Topology::MultiSite => (
            format!("\"{own_switch}\""),
            format!("\"{sips1}\""),
            format!("\"{sips2}\""),
            ("1000-1999", "2000-2999"),
            ("", ""),
        ),
        Topology::Continuity => (
            format!("\"{sips1}\", \"{sips2}\""),
            format!("\"{sips1}\", \"{sips2}\""),
            format!("\"{sips2}\", \"{sips1}\""),
            ("1000-2999", "1000-2999"),
            ("peer = \"SIPS2\"", "peer = \"SIPS1\""),
        ),
    };
    format!(
        r#"
[server]
http = "{http}"
sip = ["{sip}"]
admin-token = "test-token"
secret = "test-secret"

[sip]
trusted-peers = ["127.0.0.1/32"]

[dm]
sip-servers = [{dm_servers}]

[ivr]
number = "8800"

[[sites]]
name = "site1"
fs_url = "http://{fs1}/fs"
sip-servers = [{site1_servers}]

[[sites]]
name = "site2"
fs_url = "http://{fs2}/fs"
sip-servers = [{site2_servers}]

[[switches]]
name = "SIPS1"
site = "site1"
address = "{sips1}"
realm = "sips1.test"
dn-ranges = ["{range1}"]
check-sync = "via-switch"
{peer1}

[[switches]]
name = "SIPS2"
site = "site2"
address = "{sips2}"
realm = "sips2.test"
dn-ranges = ["{range2}"]
check-sync = "via-switch"
{peer2}

[[trunks]]
name = "ivr"
prefix = "88"
contact = "builtin:ivr"
group = "gcti_provisioning"
"#,
        range1 = ranges.0,
        range2 = ranges.1,
        peer1 = peers.0,
        peer2 = peers.1,
    )
}

/// `(username, socket)` of Kamailio's location rows: the socket names the switch that took
/// the registration.
async fn where_registered(db: &SwitchDb, user: &str) -> Vec<String> {
    let pool = sqlx::PgPool::connect(&db.url).await.expect("connect");
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT socket FROM location WHERE username = $1 ORDER BY socket")
            .bind(user)
            .fetch_all(&pool)
            .await
            .expect("read location");
    pool.close().await;
    rows.into_iter().map(|(s,)| s).collect()
}

/// Both sites: the shared database (sipdm's store, SIPS1's location table), SIPS2's own
/// location table (each switch loads its whole table at start, so two must not share one),
/// the two switches and the two nodes.
struct Sites {
    db: SwitchDb,
    sips2_locations: SwitchDb,
    sips1: Kamailio,
    /// How SIPS1 was started, to start it again after stopping it.
    sips1_params: KamailioParams,
    sips2: Kamailio,
    fs1: TestServer,
    fs2: TestServer,
}

/// Each switch takes check-syncs from either site's node (both on 127.0.0.1 here).
const SIPDM_PEERS: &str = r"SIPDM_PEERS=^127\.0\.0\.1:";

async fn bring_up(topology: Topology) -> Sites {
    let db = SwitchDb::create().await;
    let sips2_locations = SwitchDb::create().await;
    let (fs1_sip, fs2_sip) = (loopback(common::free_port()), loopback(common::free_port()));
    let (fs1_http, fs2_http) = (loopback(common::free_port()), loopback(common::free_port()));
    let sips1_params = KamailioParams {
        realm: "sips1.test".into(),
        sipdm: fs1_sip,
        ivr_prefix: "88".into(),
        port: common::free_port(),
    };
    let sips1 = Kamailio::start_with(&db, &sips1_params, &[SIPDM_PEERS.to_owned()]);
    let sips2 = Kamailio::start_with(
        &db,
        &KamailioParams {
            realm: "sips2.test".into(),
            sipdm: fs2_sip,
            ivr_prefix: "88".into(),
            port: common::free_port(),
        },
        &[
            SIPDM_PEERS.to_owned(),
            format!("LOCDBURL=\"{}\"", sips2_locations.url),
        ],
    );
    let node = |sip, http, own_switch| {
        node_config(
            topology,
            Node {
                sip,
                http,
                own_switch,
            },
            sips1.addr,
            sips2.addr,
            fs1_http,
            fs2_http,
        )
    };
    let fs1 = db.start_sipdm(&node(fs1_sip, fs1_http, sips1.addr)).await;
    let fs2 = db.start_sipdm(&node(fs2_sip, fs2_http, sips2.addr)).await;
    Sites {
        db,
        sips2_locations,
        sips1,
        sips1_params,
        sips2,
        fs1,
        fs2,
    }
}

fn phone_options() -> PhoneOptions {
    PhoneOptions {
        overall_timeout: Duration::from_secs(60),
        notify_timeout: Duration::from_secs(30),
        ..PhoneOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dn_2000_keyed_on_site_1_ends_registered_on_sips2() {
    let s = bring_up(Topology::MultiSite).await;
    for (dn, pw) in [("1000", "pw-1000"), ("2000", "pw-2000")] {
        let r = s
            .fs1
            .post("/dns", json!({"number": dn, "password": pw}))
            .await;
        assert_eq!(r.status(), 201);
    }
    // Zero-touch: a phone the operator assigned 1000.
    let zt = Mac::generated(Vendor::Yealink, 0x71);
    let r = s
        .fs1
        .post(
            "/devices",
            json!({"mac": zt.plain(), "model": "T46S", "dn": "1000"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let spec = |mac: Mac, vendor: Vendor| PhoneSpec {
        mac,
        vendor,
        // DHCP's option 66: site 1's node.
        prov_url: format!("{}/fs/dm/prov", s.fs1.base),
        fallback_prov_urls: Vec::new(),
        local_ip: [127, 0, 0, 2].into(),
    };
    let mut zt_phone = Phone::with_options(spec(zt, Vendor::Yealink), phone_options())
        .await
        .unwrap();
    let p = zt_phone
        .run_zero_touch()
        .await
        .unwrap_or_else(|e| panic!("zero-touch 1000: {e}\n{}", s.sips1.log()));
    assert_eq!(p.config.user, "1000");
    // IVR: an unknown phone keys 2000.
    let ivr = Mac::generated(Vendor::Snom, 0x72);
    let mut ivr_phone = Phone::with_options(spec(ivr, Vendor::Snom), phone_options())
        .await
        .unwrap();
    let p = ivr_phone
        .run_ivr_provisioning("2000")
        .await
        .unwrap_or_else(|e| {
            panic!(
                "IVR to 2000: {e}\n--- SIPS1 ---\n{}\n--- SIPS2 ---\n{}",
                s.sips1.log(),
                s.sips2.log()
            )
        });
    assert_eq!(p.config.user, "2000");
    assert_eq!(
        p.config.registrars[0].port,
        s.sips2.addr.port(),
        "DN 2000's file names SIPS2"
    );
    let sips1 = format!("udp:{}", s.sips1.addr);
    let sips2 = format!("udp:{}", s.sips2.addr);
    assert_eq!(where_registered(&s.db, "1000").await, vec![sips1.clone()]);
    assert_eq!(
        where_registered(&s.sips2_locations, "2000").await,
        vec![sips2.clone()]
    );
    // Its file now sends it to site 2's node for every re-fetch.
    assert!(
        p.config.prov_url.starts_with(&s.fs2.base),
        "DN 2000's file re-fetches from {}, not site 2's node {}",
        p.config.prov_url,
        s.fs2.base
    );
    zt_phone.shutdown();
    ivr_phone.shutdown();
    s.fs1.stop().await;
    s.fs2.stop().await;
    drop(s.sips1);
    drop(s.sips2);
}

/// Business continuity: SIPS1 and SIPS2 are a BC pair (the DNs on both); unassigned phones and
/// DN 2000 register to both. With SIPS1 stopped, an unknown phone registers to SIPS2 only,
/// its IVR call goes through SIPS2 to site 2's node, the check-sync reaches it through SIPS2,
/// and DN 2000 registers to SIPS2; when SIPS1 is back, the phone's next registration puts
/// 2000 on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_sips1_down_ivr_provisioning_completes_through_the_peer() {
    let Sites {
        db,
        sips2_locations,
        sips1,
        sips1_params,
        sips2,
        fs1,
        fs2,
    } = bring_up(Topology::Continuity).await;
    let sips1_addr = sips1.addr;
    let r = fs1
        .post("/dns", json!({"number": "2000", "password": "pw-2000"}))
        .await;
    assert_eq!(r.status(), 201);
    // Site 1's switch goes down.
    drop(sips1);
    let mac = Mac::generated(Vendor::Yealink, 0x81);
    let spec = PhoneSpec {
        mac,
        vendor: Vendor::Yealink,
        prov_url: format!("{}/fs/dm/prov", fs1.base),
        fallback_prov_urls: Vec::new(),
        local_ip: [127, 0, 0, 2].into(),
    };
    let options = PhoneOptions {
        // A silent server costs the phone 64·T1 = 3.2 s per request.
        timers: testbed::phone::SipTimers {
            t1: Duration::from_millis(50),
            ..testbed::phone::SipTimers::default()
        },
        ..phone_options()
    };
    let mut phone = Phone::with_options(spec, options).await.unwrap();
    let p = phone
        .run_ivr_provisioning("2000")
        .await
        .unwrap_or_else(|e| {
            panic!(
                "IVR to 2000 with SIPS1 down: {e}\n--- SIPS2 ---\n{}",
                sips2.log_tail(40)
            )
        });
    assert_eq!(p.config.user, "2000");
    let ports: Vec<u16> = p.config.registrars.iter().map(|r| r.port).collect();
    assert_eq!(
        ports,
        vec![sips1_addr.port(), sips2.addr.port()],
        "DN 2000's file names the preferred switch and its peer"
    );
    let on_sips2 = format!("udp:{}", sips2.addr);
    assert_eq!(
        where_registered(&sips2_locations, "2000").await,
        vec![on_sips2.clone()]
    );
    assert!(where_registered(&db, "2000").await.is_empty());
    let (_, audit) = fs2
        .get_json(&format!("/devices/{}/audit", mac.plain()))
        .await;
    assert!(
        audit.to_string().contains("via switch SIPS2"),
        "the check-sync did not go through the peer: {audit}"
    );
    // SIPS1 is back: the phone's next registration (its refresh) reaches both.
    let sips1 = Kamailio::start_with(&db, &sips1_params, &[SIPDM_PEERS.to_owned()]);
    phone.register(&p.config).await.expect("re-registration");
    assert_eq!(
        where_registered(&db, "2000").await,
        vec![format!("udp:{}", sips1.addr)]
    );
    assert_eq!(
        where_registered(&sips2_locations, "2000").await,
        vec![on_sips2]
    );
    phone.shutdown();
    fs1.stop().await;
    fs2.stop().await;
    drop(sips1);
    drop(sips2);
}
