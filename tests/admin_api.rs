//! The admin API through HTTP: authentication, conflicts, CSV import, CRUD, OpenAPI.

mod common;

use common::{Db, TestServer};
use serde_json::json;

async fn token_required(db: Db) {
    let ts = TestServer::start(db).await;
    let r = ts.http.get(ts.api("/devices")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let r = ts
        .http
        .get(ts.api("/devices"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = ts
        .http
        .post(ts.api("/devices"))
        .bearer_auth("test-tokeN")
        .json(&json!({"mac": "0004f2000001"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        ts.get_json("/devices").await.1,
        json!([]),
        "nothing was written"
    );
    let r = ts.http.get(ts.api("/openapi.json")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let doc: serde_json::Value = r.json().await.unwrap();
    assert!(doc["paths"]["/devices/{mac}/assign"].is_object());
    ts.stop().await;
}
on_both_backends!(missing_or_wrong_token_is_401, token_required);

async fn duplicates(db: Db) {
    let ts = TestServer::start(db).await;
    assert_eq!(
        ts.post("/dns", json!({"number": "1000", "password": "a"}))
            .await
            .status(),
        201
    );
    assert_eq!(
        ts.post("/dns", json!({"number": "1000", "password": "b"}))
            .await
            .status(),
        409
    );
    assert_eq!(
        ts.post("/devices", json!({"mac": "0004f2000001", "dn": "1000"}))
            .await
            .status(),
        201
    );
    // Same MAC in another spelling.
    assert_eq!(
        ts.post("/devices", json!({"mac": "00:04:F2:00:00:01"}))
            .await
            .status(),
        409
    );
    // Same DN on another device.
    assert_eq!(
        ts.post("/devices", json!({"mac": "0004f2000002", "dn": "1000"}))
            .await
            .status(),
        409
    );
    assert_eq!(
        ts.post("/devices", json!({"mac": "0004f2000003"}))
            .await
            .status(),
        201
    );
    assert_eq!(
        ts.post("/devices/0004f2000003/assign", json!({"dn": "1000"}))
            .await
            .status(),
        409
    );
    // Bad input: not a MAC, unknown DN, unknown fields, broken JSON.
    assert_eq!(
        ts.post("/devices", json!({"mac": "not-a-mac"}))
            .await
            .status(),
        422
    );
    assert_eq!(
        ts.post("/devices/0004f2000003/assign", json!({"dn": "4242"}))
            .await
            .status(),
        404
    );
    assert_eq!(
        ts.post("/devices", json!({"mac": "0004f2000004", "colour": "red"}))
            .await
            .status(),
        422
    );
    let r = ts
        .http
        .post(ts.api("/devices"))
        .bearer_auth(&ts.token)
        .header("content-type", "application/json")
        .body("{\"mac\":")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let (_, devices) = ts.get_json("/devices").await;
    assert_eq!(devices.as_array().unwrap().len(), 2);
    ts.stop().await;
}
on_both_backends!(duplicate_mac_or_dn_is_409, duplicates);

async fn csv_import(db: Db) {
    let ts = TestServer::start(db).await;
    for n in 1000..1004 {
        ts.post(
            "/dns",
            json!({"number": n.to_string(), "password": format!("pw{n}")}),
        )
        .await;
    }
    let bad = "mac,model,profile,dn\n0004f2000001,VVX 450,,1000\n0004f2zz0002,VVX 450,,1001\n0004f2000003,T46S,,1002\n";
    let r = ts
        .http
        .post(ts.api("/import"))
        .bearer_auth(&ts.token)
        .body(bad)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let report: serde_json::Value = r.json().await.unwrap();
    assert_eq!(report["imported"], 0);
    assert_eq!(report["errors"][0]["line"], 3, "{report}");
    assert_eq!(
        ts.get_json("/devices").await.1,
        json!([]),
        "one bad line imports nothing"
    );

    // A line that is well-formed but conflicts with the store also rolls everything back.
    let conflict = "0004f2000001,VVX 450,,1000\n0004f2000002,VVX 450,,9999\n";
    let r = ts
        .http
        .post(ts.api("/import"))
        .bearer_auth(&ts.token)
        .body(conflict)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let report: serde_json::Value = r.json().await.unwrap();
    assert_eq!(report["errors"][0]["line"], 2, "{report}");
    assert_eq!(ts.get_json("/devices").await.1, json!([]));

    let good = "mac,model,profile,dn\n0004f2000001,VVX 450,,1000\n00:15:65:00:00:02,T46S,device-management,1001\n0004f2000003,VVX 450,,\n";
    let r = ts
        .http
        .post(ts.api("/import"))
        .bearer_auth(&ts.token)
        .body(good)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let report: serde_json::Value = r.json().await.unwrap();
    assert_eq!(report["imported"], 3);
    let (_, d) = ts.get_json("/devices/001565000002").await;
    assert_eq!(d["dn"], "1001");
    assert_eq!(d["vendor"], "yealink");
    let (_, d) = ts.get_json("/devices/0004f2000003").await;
    assert_eq!(d["state"], "unassigned");
    // Importing the same file again conflicts on every line and changes nothing.
    let r = ts
        .http
        .post(ts.api("/import"))
        .bearer_auth(&ts.token)
        .body(good)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    ts.stop().await;
}
on_both_backends!(csv_import_is_all_or_nothing, csv_import);

async fn crud(db: Db) {
    let ts = TestServer::start(db).await;
    // Sites from the config are there.
    let (_, sites) = ts.get_json("/sites").await;
    assert_eq!(sites[0]["name"], "site1");
    assert_eq!(
        ts.post(
            "/sites",
            json!({"name": "site2", "fs_url": "http://fs3:8080/fs", "sip_servers": "sips2:5060"})
        )
        .await
        .status(),
        201
    );
    let r = ts
        .http
        .put(ts.api("/sites/site2"))
        .bearer_auth(&ts.token)
        .json(
            &json!({"name": "site2", "fs_url": "http://fs3:8081/fs", "sip_servers": "sips2:5060"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        ts.get_json("/sites/site2").await.1["fs_url"],
        "http://fs3:8081/fs"
    );
    let r = ts
        .http
        .delete(ts.api("/sites/site2"))
        .bearer_auth(&ts.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(ts.get_json("/sites/site2").await.0, 404);

    let dr = json!({"name": "dr", "kind": "disaster-recovery", "preferred_server": "sips1:5060", "peer_server": "sips2:5060", "params": "{}"});
    assert_eq!(ts.post("/profiles", dr).await.status(), 201);
    assert_eq!(
        ts.post("/profiles", json!({"name": "x", "kind": "nonsense"}))
            .await
            .status(),
        422
    );
    assert_eq!(
        ts.post(
            "/profiles",
            json!({"name": "dr2", "kind": "disaster-recovery"})
        )
        .await
        .status(),
        422
    );

    ts.post("/dns", json!({"number": "1000", "password": "pw"}))
        .await;
    assert_eq!(
        ts.get_json("/dns/1000").await.1["switch"],
        "SIPS1",
        "switch from the configured range"
    );
    ts.post(
        "/devices",
        json!({"mac": "0004f2000001", "profile": "dr", "dn": "1000"}),
    )
    .await;
    let body = ts
        .fetch(
            "0004f2000001-phone.cfg",
            Some("PolycomVVX-VVX_450-UA/6.3.0"),
        )
        .await
        .text()
        .await
        .unwrap();
    assert!(
        body.contains("sips1") && body.contains("sips2"),
        "a DR profile registers to both:\n{body}"
    );

    // The console's preview: the device's own file, or another vendor's, recording nothing.
    // For a Polycom phone that is the settings file its master names (the master itself
    // carries nothing an operator checks): the DR profile's two servers.
    let file = ts
        .http
        .get(ts.api("/devices/0004f2000001/file"))
        .bearer_auth(&ts.token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        file.contains("polycomConfig") && file.contains("sips1") && file.contains("sips2"),
        "{file}"
    );
    // And it is the file the phone gets from the name its master gives.
    let master = ts
        .fetch("0004f2000001.cfg", Some("PolycomVVX-VVX_450-UA/6.3.0"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        master.contains("CONFIG_FILES=\"0004f2000001-phone.cfg\""),
        "{master}"
    );
    let named = ts
        .fetch(
            "0004f2000001-phone.cfg",
            Some("PolycomVVX-VVX_450-UA/6.3.0"),
        )
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(named, file, "the preview is the settings file as served");
    let yl = ts
        .http
        .get(ts.api("/devices/0004f2000001/file?vendor=yealink"))
        .bearer_auth(&ts.token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(yl.starts_with("#!version:1.0.0.1"), "{yl}");
    let bad = ts
        .http
        .get(ts.api("/devices/0004f2000001/file?vendor=acme"))
        .bearer_auth(&ts.token)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 422);
    let r = ts
        .http
        .patch(ts.api("/devices/0004f2000001"))
        .bearer_auth(&ts.token)
        .json(&json!({"model": "VVX 601"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = ts
        .http
        .delete(ts.api("/dns/1000"))
        .bearer_auth(&ts.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409, "an assigned DN cannot be deleted");
    let r = ts.post("/devices/0004f2000001/unassign", json!({})).await;
    assert_eq!(r.status(), 200);
    let (_, audit) = ts.get_json("/devices/0004f2000001/audit").await;
    let actions: Vec<_> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(actions, ["unassign", "assign"]);
    let r = ts
        .http
        .delete(ts.api("/devices/0004f2000001"))
        .bearer_auth(&ts.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(ts.get_json("/devices/0004f2000001").await.0, 404);
    assert_eq!(
        ts.http
            .get(format!("{}/healthz", ts.base))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let (_, trunks) = ts.get_json("/trunks").await;
    assert_eq!(trunks[0]["name"], "ivr");
    assert_eq!(
        trunks[0]["in_service"], true,
        "the built-in IVR is always in service"
    );
    let metrics = ts
        .http
        .get(format!("{}/metrics", ts.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("sipdm_prov_requests_total"), "{metrics}");
    ts.stop().await;
}
on_both_backends!(crud_and_audit, crud);

/// A DN made through the API without `authenticate_requests` takes `[auth]
/// authenticate-requests`; an explicit value is one of `register,invite`, `register`,
/// `invite` or empty, and anything else is 422 naming it.
async fn dn_auth_policy(db: Db) {
    let toml = format!(
        "{}\n[auth]\nauthenticate-requests = \"register\"\n",
        common::SINGLE_SITE
    );
    let ts = TestServer::start_with(db, &toml).await;
    let r = ts
        .post("/dns", json!({"number": "1000", "password": "pw"}))
        .await;
    assert_eq!(r.status(), 201);
    let created: serde_json::Value = r.json().await.unwrap();
    assert_eq!(created["authenticate_requests"], "register");
    assert_eq!(
        ts.get_json("/dns/1000").await.1["authenticate_requests"],
        "register",
        "the configured default, not a built-in one"
    );
    for (n, given, stored) in [
        ("1001", "register,invite", "register,invite"),
        ("1002", "invite", "invite"),
        ("1003", "", ""),
        ("1004", "INVITE, Register", "register,invite"),
    ] {
        let r = ts
            .post(
                "/dns",
                json!({"number": n, "password": "pw", "authenticate_requests": given}),
            )
            .await;
        assert_eq!(r.status(), 201, "{given:?}");
        assert_eq!(
            ts.get_json(&format!("/dns/{n}")).await.1["authenticate_requests"],
            stored,
            "{given:?}"
        );
    }
    for bad in ["subscribe", "register;invite", "register,register"] {
        let r = ts
            .post(
                "/dns",
                json!({"number": "1010", "password": "pw", "authenticate_requests": bad}),
            )
            .await;
        assert_eq!(r.status(), 422, "{bad:?}");
        let err = r.json::<serde_json::Value>().await.unwrap()["error"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            err.contains("authenticate-requests") && err.contains("register,invite"),
            "{bad:?}: {err}"
        );
    }
    assert_eq!(ts.get_json("/dns/1010").await.0, 404);
    ts.stop().await;
}
on_both_backends!(
    dn_authenticate_requests_default_and_validation,
    dn_auth_policy
);

/// `GET /devices` pages in MAC order with `limit`/`offset`, and `X-Total-Count` counts every
/// device matching `q`, past the default page of 500.
async fn device_pages(db: Db) {
    let ts = TestServer::start(db).await;
    let mut csv = String::new();
    for i in 0..620 {
        let model = if i % 2 == 0 { "VVX 450" } else { "VVX 411" };
        csv.push_str(&format!("0004f2{i:06x},{model},,\n"));
    }
    let r = ts
        .http
        .post(ts.api("/import"))
        .bearer_auth(&ts.token)
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let page = |query: &'static str| {
        let ts = &ts;
        async move {
            let r = ts
                .http
                .get(ts.api(&format!("/devices{query}")))
                .bearer_auth(&ts.token)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{query}");
            let total: i64 = r.headers()["x-total-count"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            let macs: Vec<String> = r
                .json::<Vec<serde_json::Value>>()
                .await
                .unwrap()
                .iter()
                .map(|d| d["mac"].as_str().unwrap().to_owned())
                .collect();
            (total, macs)
        }
    };
    let (total, macs) = page("").await;
    assert_eq!((total, macs.len()), (620, 500), "the default page of 500");
    let (total, macs) = page("?limit=100&offset=500").await;
    assert_eq!((total, macs.len()), (620, 100));
    assert_eq!(macs[0], "0004f20001f4");
    let (total, macs) = page("?limit=100&offset=600").await;
    assert_eq!((total, macs.len()), (620, 20));
    assert_eq!(macs.last().unwrap(), "0004f200026b");
    let (total, macs) = page("?limit=100&offset=700").await;
    assert_eq!(
        (total, macs.len()),
        (620, 0),
        "past the end: empty, still counted"
    );
    let (total, macs) = page("?q=VVX%20411&limit=250&offset=250").await;
    assert_eq!(
        (total, macs.len()),
        (310, 60),
        "the search counts across pages"
    );
    assert_eq!(macs[0], "0004f20001f5");
    let (total, _) = page("?q=nothing-like-it").await;
    assert_eq!(total, 0);
    let (_, doc) = ts.get_json("/openapi.json").await;
    assert!(
        doc["paths"]["/devices"]["get"]["responses"]["200"]["headers"]["X-Total-Count"].is_object(),
        "the header is documented"
    );
    ts.stop().await;
}
on_both_backends!(device_list_pages_and_counts, device_pages);
