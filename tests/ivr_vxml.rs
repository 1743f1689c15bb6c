//! IVR provisioning through the VoiceXML endpoint: the test plays the media server (fetches
//! the document, posts the digits) against the real server, on SQLite and PostgreSQL.

mod common;

use common::{Db, TestServer};
use serde_json::json;

const UA: &str = "Yealink SIP-T46S 66.86.0.15 00:15:65:00:00:01";

fn config(allowed: &str) -> String {
    format!(
        "{}\n",
        common::SINGLE_SITE.replace(
            "[ivr]\nnumber = \"8800\"",
            &format!("[ivr]\nnumber = \"8800\"\nvxml-allowed-networks = [{allowed}]")
        )
    )
}

async fn media_server_flow(db: Db) {
    let ts = TestServer::start_with(db, &config("\"127.0.0.0/8\"")).await;
    for n in ["1001", "1002"] {
        ts.post("/dns", json!({"number": n, "password": format!("pw{n}")}))
            .await;
    }
    ts.post("/devices", json!({"mac": "001565000002", "dn": "1002"}))
        .await;
    // An unknown phone boots and gets the default profile.
    let body = ts
        .fetch("001565000001.cfg", Some(UA))
        .await
        .text()
        .await
        .unwrap();
    assert!(body.contains("gcti_provisioning"));

    // The media server fetches the page for the call sipdm routed (device in the URL).
    let page = ts
        .http
        .get(format!("{}/fs/dm/ivr?device=001565000001", ts.base))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let doc = page.text().await.unwrap();
    assert!(
        doc.contains("<vxml") && doc.contains("/fs/dm/ivr/assign"),
        "{doc}"
    );

    let post = |dn: &str, device: &str| {
        ts.http
            .post(format!("{}/fs/dm/ivr/assign", ts.base))
            .form(&[
                ("dn", dn),
                ("caller", "sip:gcti_provisioning@127.0.0.1"),
                ("device", device),
                ("attempt", "1"),
            ])
            .send()
    };
    // Taken, unknown, and non-digits get "not available" (or a retry) and assign nothing.
    for dn in ["1002", "4242"] {
        let doc = post(dn, "001565000001")
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(doc.contains("not_available"), "{dn}: {doc}");
    }
    let doc = post("12ab", "001565000001")
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!doc.contains("assigned\""), "{doc}");
    // No device named: not permitted, nothing assigned.
    let doc = post("1001", "").await.unwrap().text().await.unwrap();
    assert!(!doc.contains("id=\"assigned\""), "{doc}");
    assert_eq!(
        ts.get_json("/devices/001565000001").await.1["state"],
        "unassigned"
    );

    let doc = post("1001", "001565000001")
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(doc.contains("id=\"assigned\""), "{doc}");
    let (_, d) = ts.get_json("/devices/001565000001").await;
    assert_eq!(d["dn"], "1001");
    assert_eq!(d["state"], "assigned");
    let (_, audit) = ts.get_json("/devices/001565000001/audit").await;
    assert_eq!(audit[0]["action"], "assign");
    assert_eq!(audit[0]["actor"], "ivr");
    // The phone's next fetch registers it as 1001.
    let body = ts
        .fetch("001565000001.cfg", Some(UA))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        body.contains("pw1001") && !body.contains("gcti_provisioning"),
        "{body}"
    );
    ts.stop().await;
}
on_both_backends!(voicexml_assignment, media_server_flow);

#[tokio::test]
async fn voicexml_only_from_media_server_networks() {
    let ts = TestServer::start_with(Db::Sqlite, &config("\"127.0.0.2/32\"")).await;
    let r = ts
        .http
        .get(format!("{}/fs/dm/ivr", ts.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = ts
        .http
        .post(format!("{}/fs/dm/ivr/assign", ts.base))
        .form(&[("dn", "1001"), ("device", "001565000001")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let from_media_server = reqwest::Client::builder()
        .local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap();
    let r = from_media_server
        .get(format!("{}/fs/dm/ivr", ts.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    ts.stop().await;
}

/// `[ivr] initial-page-url` and `alternatevoicexml` are the application the pages link to:
/// the `<submit>`/`<goto>` targets are the application that served the page (by its Host),
/// and a target that cannot be fetched (`error.badfetch`) goes once to the other one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_urls_are_the_pages_targets_and_fallback() {
    let toml = config("\"127.0.0.0/8\"").replace(
        "[ivr]\nnumber = \"8800\"",
        "[ivr]\nnumber = \"8800\"\ninitial-page-url = \"http://FS-DM:8080/fs/dm/ivr\"\n\
         alternatevoicexml = \"http://FS-VM:8080/fs/dm/ivr\"",
    );
    let ts = TestServer::start_with(Db::Sqlite, &toml).await;
    let page = |host: &'static str, path: &'static str| {
        let ts = &ts;
        async move {
            let r = ts
                .http
                .get(format!("{}{path}", ts.base))
                .header("host", host)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r.text().await.unwrap()
        }
    };
    let doc = page("FS-DM:8080", "/fs/dm/ivr").await;
    assert!(
        doc.contains(r#"<submit next="http://FS-DM:8080/fs/dm/ivr/assign" namelist="dn caller device attempt" method="post"/>"#),
        "{doc}"
    );
    assert!(
        doc.contains(r#"<catch event="error.badfetch">"#)
            && doc.contains(r#"<submit next="http://FS-VM:8080/fs/dm/ivr/assign""#),
        "{doc}"
    );
    // The page as the alternate served it links to the alternate, falls back to the initial.
    let doc = page("fs-vm:8080", "/fs/dm/ivr").await;
    assert!(
        doc.contains(r#"<submit next="http://FS-VM:8080/fs/dm/ivr/assign" namelist"#)
            && doc.contains(r#"<submit next="http://FS-DM:8080/fs/dm/ivr/assign" namelist"#),
        "{doc}"
    );
    // A wrong entry: the next attempt's page, in this application, else in the other.
    let r = ts
        .http
        .post(format!("{}/fs/dm/ivr/assign", ts.base))
        .header("host", "FS-DM:8080")
        .form(&[("dn", "12ab"), ("attempt", "1")])
        .send()
        .await
        .unwrap();
    let doc = r.text().await.unwrap();
    assert!(
        doc.contains(r#"<goto next="http://FS-DM:8080/fs/dm/ivr?attempt=2"/>"#)
            && doc.contains(r#"<goto next="http://FS-VM:8080/fs/dm/ivr?attempt=2"/>"#),
        "{doc}"
    );
    ts.stop().await;

    // Not a URL: refused at start, naming the key.
    let bad = config("\"127.0.0.0/8\"").replace(
        "[ivr]\nnumber = \"8800\"",
        "[ivr]\nnumber = \"8800\"\ninitial-page-url = \"FS-DM/fs/dm/ivr\"",
    );
    let err = sipdm::config::Config::parse(&bad, std::path::Path::new("t.toml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("initial-page-url"), "{err}");
}

/// `[ivr]` timeouts reach the dialogue the server runs: the page a media server fetches waits
/// as long as the configuration says, and nonsense values stop the configuration.
#[tokio::test]
async fn ivr_timeouts_come_from_the_configuration() {
    let short = common::SINGLE_SITE.replace(
        "[ivr]\nnumber = \"8800\"",
        "[ivr]\nnumber = \"8800\"\nfirst-digit-timeout-ms = 1500\ninter-digit-timeout-ms = 700\nmax-digits = 6",
    );
    let ts = TestServer::start_with(Db::Sqlite, &short).await;
    let doc = ts
        .http
        .get(format!("{}/fs/dm/ivr", ts.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        doc.contains(r#"<property name="timeout" value="1500ms"/>"#),
        "{doc}"
    );
    assert!(
        doc.contains(r#"<property name="interdigittimeout" value="700ms"/>"#),
        "{doc}"
    );
    assert!(doc.contains("maxlength=6\""), "{doc}");
    ts.stop().await;

    for (bad, why) in [
        ("first-digit-timeout-ms = 0", "first-digit-timeout-ms"),
        ("inter-digit-timeout-ms = 999999", "inter-digit-timeout-ms"),
        ("max-digits = 0", "max-digits"),
        ("max-attempts = 0", "max-attempts"),
    ] {
        let toml = common::SINGLE_SITE.replace(
            "[ivr]\nnumber = \"8800\"",
            &format!("[ivr]\nnumber = \"8800\"\n{bad}"),
        );
        let err = sipdm::config::Config::parse(&toml, std::path::Path::new("test.toml"))
            .expect_err(bad)
            .to_string();
        assert!(err.contains(why), "{bad}: {err}");
    }
}
