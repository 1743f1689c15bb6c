//! Single site behind a real switch (Kamailio with the shipped configuration, on PostgreSQL):
//! phone simulators of each of the six vendors, unknown to sipdm, follow only their files.
//! Each fetches its default file, registers to Kamailio as its `dm-<mac>` user, lifts the
//! handset (the hotline dials the IVR number); Kamailio routes the call over its IVR trunk to
//! sipdm, asserting the caller's identity; the keyed DN is assigned; the check-sync NOTIFY
//! goes to Kamailio, which delivers it to the phone; the phone re-fetches from the URL in its
//! file and registers to Kamailio as its DN. Checked in Kamailio's `location` table and in
//! sipdm's audit log.

mod common;

use std::time::Duration;

use common::kamailio::{Kamailio, KamailioParams, SwitchDb};
use serde_json::json;
use testbed::phone::{Mac, Phone, PhoneOptions, PhoneSpec, Vendor};

const REALM: &str = "sips1.test";

fn sipdm_config(sipdm_port: u16, switch: std::net::SocketAddr) -> String {
    format!(
        r#"
[server]
http = "127.0.0.1:0"
sip = ["127.0.0.1:{sipdm_port}"]
admin-token = "test-token"
secret = "test-secret"

[sip]
# Kamailio (and sipdm itself); the phones live on 127.0.0.2.
trusted-peers = ["127.0.0.1/32"]

[dm]
sip-servers = ["{switch}"]

[ivr]
number = "8800"

[[sites]]
name = "site1"
sip-servers = ["{switch}"]

[[switches]]
name = "SIPS1"
site = "site1"
address = "{switch}"
realm = "{REALM}"
dn-ranges = ["1000-1999"]
check-sync = "via-switch"

[[trunks]]
name = "ivr"
prefix = "88"
contact = "builtin:ivr"
group = "gcti_provisioning"
"#
    )
}

/// The database both share, Kamailio as SIPS1, and sipdm next to it.
async fn single_site() -> (SwitchDb, Kamailio, common::TestServer) {
    let db = SwitchDb::create().await;
    let sipdm_port = common::free_port();
    let kamailio = Kamailio::start(
        &db,
        &KamailioParams {
            realm: REALM.into(),
            sipdm: ([127, 0, 0, 1], sipdm_port).into(),
            ivr_prefix: "88".into(),
            port: common::free_port(),
        },
    );
    let ts = db
        .start_sipdm(&sipdm_config(sipdm_port, kamailio.addr))
        .await;
    (db, kamailio, ts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_vendors_provisioned_through_kamailio() {
    let (db, kamailio, ts) = single_site().await;
    let dns: Vec<String> = (0..Vendor::ALL.len())
        .map(|i| (1001 + i).to_string())
        .collect();
    for dn in &dns {
        let r = ts
            .post(
                "/dns",
                json!({"number": dn, "password": format!("pw-{dn}")}),
            )
            .await;
        assert_eq!(r.status(), 201);
    }
    // What DHCP option 66 gives the phones: sipdm's own address as they reach it.
    let prov_url = format!("{}/fs/dm/prov", ts.base);
    let mut set = tokio::task::JoinSet::new();
    for (i, vendor) in Vendor::ALL.into_iter().enumerate() {
        let spec = PhoneSpec {
            mac: Mac::generated(vendor, 0x51 + i as u32),
            vendor,
            prov_url: prov_url.clone(),
            fallback_prov_urls: Vec::new(),
            local_ip: [127, 0, 0, 2].into(),
        };
        let dn = dns[i].clone();
        set.spawn(async move {
            let options = PhoneOptions {
                overall_timeout: Duration::from_secs(90),
                notify_timeout: Duration::from_secs(40),
                ..PhoneOptions::default()
            };
            let mut phone = Phone::with_options(spec.clone(), options)
                .await
                .expect("phone starts");
            let result = phone.run_ivr_provisioning(&dn).await;
            phone.shutdown();
            (spec, dn, result.map_err(|e| e.to_string()))
        });
    }
    let mut failures = Vec::new();
    let mut provisioned = Vec::new();
    while let Some(done) = set.join_next().await {
        let (spec, dn, result) = done.expect("phone task");
        match result {
            Ok(p) => provisioned.push((spec, dn, p)),
            Err(e) => failures.push(format!("{} {} → {dn}: {e}", spec.vendor.name(), spec.mac)),
        }
    }
    assert!(
        failures.is_empty(),
        "phones that did not make it:\n{}\n--- Kamailio's log (tail) ---\n{}",
        failures.join("\n"),
        kamailio.log_tail(60)
    );
    for (spec, dn, p) in &provisioned {
        // The phone registered where its new file told it: Kamailio, as the DN.
        assert_eq!(p.config.user, *dn, "{}", spec.vendor.name());
        let contacts = db.wait_location(dn, Duration::from_secs(5)).await;
        assert!(
            !contacts.is_empty(),
            "{} {}: DN {dn} is not in Kamailio's location table: {:?}",
            spec.vendor.name(),
            spec.mac,
            db.locations().await
        );
        let mac = spec.mac.plain();
        let (_, device) = ts.get_json(&format!("/devices/{mac}")).await;
        assert_eq!(device["dn"], dn.as_str(), "{device}");
        let (_, audit) = ts.get_json(&format!("/devices/{mac}/audit")).await;
        let audit = audit.to_string();
        assert!(
            audit.contains("\"assign"),
            "{mac}: no assignment audited: {audit}"
        );
        assert!(
            audit.contains("via switch SIPS1"),
            "{mac}: the check-sync did not go through the switch: {audit}"
        );
    }
    // The provisioning identities are gone from the switch: every phone unregistered them.
    let left: Vec<_> = db
        .locations()
        .await
        .into_iter()
        .filter(|(u, _)| u.starts_with("dm-"))
        .collect();
    assert!(left.is_empty(), "provisioning registrations left: {left:?}");
    ts.stop().await;
    drop(kamailio);
}

/// A real softphone configured only from values read out of a rendered file (the keys a
/// Yealink reads) registers to Kamailio with its DN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_from_a_rendered_file_registers_to_kamailio() {
    let (db, kamailio, ts) = single_site().await;
    let r = ts
        .post("/dns", json!({"number": "1010", "password": "pw-1010"}))
        .await;
    assert_eq!(r.status(), 201);
    let mac = "001565000101";
    let r = ts
        .post(
            "/devices",
            json!({"mac": mac, "model": "T46S", "dn": "1010"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let file = ts
        .fetch(
            &format!("{mac}.cfg"),
            Some("Yealink SIP-T46S 66.86.0.15 00:15:65:00:01:01"),
        )
        .await
        .text()
        .await
        .unwrap();
    let cfg = testbed::phone::config_parse::parse(Vendor::Yealink, &file)
        .unwrap_or_else(|e| panic!("the rendered file does not configure a phone: {e}\n{file}"));
    let server = &cfg.registrars[0];
    assert_eq!(
        format!("{}:{}", server.host, server.port),
        kamailio.addr.to_string(),
        "the file's SIP server is not the switch:\n{file}"
    );
    let dir = tempfile::tempdir().unwrap();
    let account = format!(
        "<sip:{user}@{host}:{port}>;auth_user={auth};auth_pass={password};regint=600",
        user = cfg.user,
        host = server.host,
        port = server.port,
        auth = cfg.auth_user,
        password = cfg.password,
    );
    let baresip = common::baresip::Baresip::start(dir.path(), &account, common::free_port(), "");
    let contacts = db.wait_location("1010", Duration::from_secs(10)).await;
    let out = if contacts.is_empty() {
        baresip.stop().await
    } else {
        drop(baresip);
        String::new()
    };
    assert!(
        !contacts.is_empty(),
        "baresip did not register 1010 to Kamailio; baresip said:\n{out}\n--- Kamailio ---\n{}",
        kamailio.log_tail(30)
    );
    ts.stop().await;
    drop(kamailio);
}
