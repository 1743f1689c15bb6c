//! Multi-site rendering (the guide's walkthrough): each site has its own SIP server and
//! fs_url; a DN of site 2 assigned anywhere renders a file that points the phone at SIPS2 and
//! at site 2's fs_url. A business-continuity pair's DR profile registers to both.

mod common;

use common::{Db, TestServer};
use serde_json::json;

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
