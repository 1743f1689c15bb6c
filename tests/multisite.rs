//! Multi-site rendering (the guide's walkthrough): each site has its own SIP server and
//! fs_url; a DN of site 2 assigned anywhere renders a file that points the phone at SIPS2 and
//! at site 2's fs_url. A business-continuity pair's DR profile registers to both. And the
//! walkthrough with phones: DN 1000 ends registered on SIPS1, DN 2000 on SIPS2.

mod common;

use std::net::SocketAddr;

use common::{Db, TestServer};
use serde_json::json;
use testbed::phone::{Mac, Phone, PhoneSpec, Vendor};

const MULTI_SITE: &str = r#"
[server]
http = "127.0.0.1:0"
sip = ["127.0.0.1:0"]
admin-token = "test-token"
secret = "test-secret"

[dm]
fs_url = "http://fs1:8080/fs"

[[sites]]
name = "site1"
fs_url = "http://fs2:8080/fs"
sip-servers = ["sips1.example.test:5060"]

[[sites]]
name = "site2"
fs_url = "http://fs3:8080/fs"
sip-servers = ["sips2.example.test:5060"]

[[switches]]
name = "SIPS1"
site = "site1"
address = "sips1.example.test:5060"
dn-ranges = ["1000-1999"]

[[switches]]
name = "SIPS2"
site = "site2"
address = "sips2.example.test:5060"
dn-ranges = ["2000-2999"]
"#;

async fn walkthrough(db: Db) {
    let ts = TestServer::start_with(db, MULTI_SITE).await;
    for n in ["1000", "2000"] {
        assert_eq!(
            ts.post("/dns", json!({"number": n, "password": format!("pw{n}")}))
                .await
                .status(),
            201
        );
    }
    assert_eq!(ts.get_json("/dns/2000").await.1["switch"], "SIPS2");
    ts.post("/devices", json!({"mac": "001565000001", "dn": "1000"}))
        .await;
    ts.post("/devices", json!({"mac": "001565000002"})).await;
    // The IVR (or an administrator) assigns 2000 through this instance.
    assert_eq!(
        ts.post("/devices/001565000002/assign", json!({"dn": "2000"}))
            .await
            .status(),
        200
    );
    let ua = "Yealink SIP-T46S 66.86.0.15";
    let one = ts
        .fetch("001565000001.cfg", Some(ua))
        .await
        .text()
        .await
        .unwrap();
    let two = ts
        .fetch("001565000002.cfg", Some(ua))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        one.contains("sips1.example.test") && !one.contains("sips2"),
        "{one}"
    );
    assert!(
        one.contains("http://fs2:8080/fs/dm/prov"),
        "site 1's fs_url:\n{one}"
    );
    assert!(
        two.contains("sips2.example.test") && !two.contains("sips1"),
        "{two}"
    );
    assert!(
        two.contains("http://fs3:8080/fs/dm/prov"),
        "site 2's fs_url:\n{two}"
    );
    // An unassigned phone keeps the deployment's fs_url (DHCP's fs1).
    let fresh = ts
        .fetch("001565000003.cfg", Some(ua))
        .await
        .text()
        .await
        .unwrap();
    assert!(fresh.contains("http://fs1:8080/fs/dm/prov"), "{fresh}");

    // Business continuity: a DR profile names the preferred and the peer server.
    let dr = json!({"name": "dr-site2", "kind": "disaster-recovery", "preferred_server": "sips2.example.test:5060",
                    "peer_server": "sips1.example.test:5060", "params": "{}"});
    assert_eq!(ts.post("/profiles", dr).await.status(), 201);
    let r = ts
        .http
        .patch(ts.api("/devices/001565000002"))
        .bearer_auth(&ts.token)
        .json(&json!({"profile": "dr-site2"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let bc = ts
        .fetch("001565000002.cfg", Some(ua))
        .await
        .text()
        .await
        .unwrap();
    let first = bc.find("sips2.example.test").expect("preferred");
    let second = bc.find("sips1.example.test").expect("peer");
    assert!(first < second, "preferred first:\n{bc}");
    ts.stop().await;
}
on_both_backends!(dn_2000_points_at_site_2, walkthrough);

/// The guide's multi-site walkthrough with real registrations: SIPS1 and SIPS2 are stand-ins
/// (sipdm instances acting as the sites' registrars, on the deployment's shared store so that
/// the DNs' passwords are theirs too), FS1 and FS2 the sites' provisioning nodes (site 1's
/// `fs_url` is FS1's address, site 2's is FS2's). A phone assigned DN 1000 fetches its first
/// file from any node (here site 2's), registers on SIPS1 and is sent to site 1's node for
/// later fetches; unknown phones go through FS1's IVR, key 2000…, end registered on SIPS2 and
/// are sent to site 2's node. `http` is where this instance listens for HTTP, `fs_url` its
/// `[dm] fs_url` (what an unassigned phone's file names).
fn sites_config(
    http: &str,
    sip: &str,
    sips1: SocketAddr,
    sips2: SocketAddr,
    fs_url: &str,
    site_urls: (&str, &str),
) -> String {
    let (site1_url, site2_url) = site_urls;
    format!(
        r#"
[server]
http = "{http}"
sip = ["{sip}"]
admin-token = "test-token"
secret = "test-secret"

[dm]
fs_url = "{fs_url}"

[ivr]
number = "8800"

[[sites]]
name = "site1"
fs_url = "{site1_url}"
sip-servers = ["{sips1}"]

[[sites]]
name = "site2"
fs_url = "{site2_url}"
sip-servers = ["{sips2}"]

[[switches]]
name = "SIPS1"
site = "site1"
address = "{sips1}"
dn-ranges = ["1000-1999"]

[[switches]]
name = "SIPS2"
site = "site2"
address = "{sips2}"
dn-ranges = ["2000-2999"]

[[trunks]]
name = "ivr"
prefix = "88"
contact = "builtin:ivr"
group = "gcti_provisioning"
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dn_1000_registers_on_sips1_and_dn_2000_on_sips2() {
    let sips1: SocketAddr = ([127, 0, 0, 1], common::free_port()).into();
    let sips2: SocketAddr = ([127, 0, 0, 1], common::free_port()).into();
    // The provisioning nodes on fixed ports, so that the sites' fs_url (written into the
    // files, which the phones follow) are addresses they can reach.
    let (fs1_http, fs2_http) = (common::free_port(), common::free_port());
    let fs1_url = format!("http://127.0.0.1:{fs1_http}/fs");
    let fs2_url = format!("http://127.0.0.1:{fs2_http}/fs");
    let sites = (fs1_url.as_str(), fs2_url.as_str());
    let any = "127.0.0.1:0";
    let fs1 = TestServer::start_with(
        Db::Postgres,
        &sites_config(
            &format!("127.0.0.1:{fs1_http}"),
            any,
            sips1,
            sips2,
            &fs1_url,
            sites,
        ),
    )
    .await;
    let fs2 = fs1
        .start_peer(&sites_config(
            &format!("127.0.0.1:{fs2_http}"),
            any,
            sips1,
            sips2,
            &fs2_url,
            sites,
        ))
        .await;
    let s1 = fs1
        .start_peer(&sites_config(
            any,
            &sips1.to_string(),
            sips1,
            sips2,
            &fs1_url,
            sites,
        ))
        .await;
    let s2 = fs1
        .start_peer(&sites_config(
            any,
            &sips2.to_string(),
            sips1,
            sips2,
            &fs2_url,
            sites,
        ))
        .await;
    let vendors = Vendor::ALL;
    for i in 0..vendors.len() {
        for n in [1000 + i, 2000 + i] {
            let r = fs1
                .post(
                    "/dns",
                    json!({"number": n.to_string(), "password": format!("pw{n}")}),
                )
                .await;
            assert_eq!(r.status(), 201);
        }
    }
    // Zero touch: phones assigned 1000… by the administrator, fetching from site 2's node.
    let mut set = tokio::task::JoinSet::new();
    for (i, vendor) in vendors.into_iter().enumerate() {
        let mac = Mac::generated(vendor, 100 + i as u32);
        let dn = (1000 + i).to_string();
        let r = fs1
            .post(
                "/devices",
                json!({"mac": mac.plain(), "vendor": vendor.to_string(), "dn": dn}),
            )
            .await;
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
        let spec = PhoneSpec {
            mac,
            vendor,
            prov_url: format!("{}/fs/dm/prov", fs2.base),
            fallback_prov_urls: Vec::new(),
            local_ip: [127, 0, 0, 1].into(),
        };
        set.spawn(async move {
            let mut phone = Phone::new(spec).await.expect("phone");
            let r = phone.run_zero_touch().await.map_err(|e| e.to_string());
            phone.shutdown();
            (
                vendor,
                dn,
                r.map(|p| {
                    let at = p.registered.iter().map(|r| r.registrar).collect::<Vec<_>>();
                    (at, p.config.prov_url)
                }),
            )
        });
    }
    // IVR: unknown phones through FS1's IVR, keying 2000…
    for (i, vendor) in vendors.into_iter().enumerate() {
        let spec = PhoneSpec {
            mac: Mac::generated(vendor, 200 + i as u32),
            vendor,
            prov_url: format!("{}/fs/dm/prov", fs1.base),
            fallback_prov_urls: Vec::new(),
            local_ip: [127, 0, 0, 1].into(),
        };
        let dn = (2000 + i).to_string();
        set.spawn(async move {
            let mut phone = Phone::new(spec).await.expect("phone");
            let r = phone
                .run_ivr_provisioning(&dn)
                .await
                .map_err(|e| e.to_string());
            phone.shutdown();
            (
                vendor,
                dn,
                r.map(|p| {
                    let at = p.registered.iter().map(|r| r.registrar).collect::<Vec<_>>();
                    (at, p.config.prov_url)
                }),
            )
        });
    }
    while let Some(j) = set.join_next().await {
        let (vendor, dn, r) = j.unwrap();
        let (at, prov_url) = r.unwrap_or_else(|e| panic!("{vendor} {dn}: {e}"));
        let (expected, site_url) = if dn.starts_with('1') {
            (sips1, &fs1_url)
        } else {
            (sips2, &fs2_url)
        };
        assert_eq!(at, vec![expected], "{vendor} {dn} registered at");
        // The file the phone ended on sends it to its site's node.
        assert!(
            prov_url.starts_with(&format!("{site_url}/dm/prov")),
            "{vendor} {dn}: site's fs_url {site_url} expected, the file says {prov_url}"
        );
    }
    for i in 0..vendors.len() {
        let (one, two) = ((1000 + i).to_string(), (2000 + i).to_string());
        let b = s1.sip().registrar().bindings(&one);
        assert_eq!(b.len(), 1, "{one} on SIPS1: {b:?}");
        assert_eq!(
            b[0].device.as_deref(),
            Some(one.as_str()),
            "authenticated as {one}"
        );
        assert!(
            s2.sip().registrar().bindings(&one).is_empty(),
            "{one} not on SIPS2"
        );
        let b = s2.sip().registrar().bindings(&two);
        assert_eq!(b.len(), 1, "{two} on SIPS2: {b:?}");
        assert_eq!(
            b[0].device.as_deref(),
            Some(two.as_str()),
            "authenticated as {two}"
        );
        assert!(
            s1.sip().registrar().bindings(&two).is_empty(),
            "{two} not on SIPS1"
        );
    }
    for ts in [s2, s1, fs2] {
        ts.stop().await;
    }
    fs1.stop().await;
}
