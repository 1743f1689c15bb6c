//! A phone follows its file: with no `fs_url` configured, the provisioning URL written into
//! every vendor's default file is the one the phone used (scheme, host, port, URL key), and
//! the SIP server is the host it used — not a loopback default that a phone on the LAN could
//! never reach.

mod common;

use common::{Db, TestServer};

/// No `[dm]` section at all: what a new user runs.
const BARE: &str = r#"
[server]
http = "127.0.0.1:0"
sip = ["127.0.0.1:0"]
admin-token = "test-token"
secret = "test-secret"
"#;

/// The address a phone on the LAN used (its DHCP option 66), sent as the Host header.
const AUTHORITY: &str = "10.1.2.3:8081";

/// (file name, User-Agent) of an unknown phone of each vendor.
const PHONES: &[(&str, &str)] = &[
    (
        "0004f2a1b2c3-phone.cfg",
        "FileTransport PolycomVVX-VVX_450-UA/6.3.0.14929",
    ),
    (
        "001565a1b2c3.cfg",
        "Yealink SIP-T46S 66.86.0.15 00:15:65:a1:b2:c3",
    ),
    (
        "spa0014bfa1b2c3.xml",
        "Cisco/SPA504G-7.6.2 (0014BFA1B2C3)(CCQ00000000)",
    ),
    (
        "cfg000b82a1b2c3.xml",
        "Grandstream Model HW GXP2170 SW 1.0.11.3",
    ),
    (
        "000413a1b2c3.xml",
        "Mozilla/4.0 (compatible; snom760-SIP 10.1.39.11)",
    ),
    (
        "00908fa1b2c3.cfg",
        "AUDC-IPPhone/3.4.4.1000 (445HD; 00908FA1B2C3)",
    ),
];

async fn fetch_as_lan_phone(ts: &TestServer, path: &str, ua: &str) -> String {
    let r = ts
        .http
        .get(format!("{}/fs/dm/prov/{path}", ts.base))
        .header("Host", AUTHORITY)
        .header("User-Agent", ua)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200, "{path} as {ua}");
    r.text().await.expect("body")
}

/// The URL as the vendor writes it: Grandstream's P237 has no scheme.
fn mentions(body: &str, url: &str) -> bool {
    body.contains(url) || body.contains(url.trim_start_matches("http://"))
}

#[tokio::test]
async fn default_files_point_back_at_the_url_the_phone_used() {
    let ts = TestServer::start_with(Db::Sqlite, BARE).await;
    for (file, ua) in PHONES {
        let body = fetch_as_lan_phone(&ts, file, ua).await;
        assert!(
            mentions(&body, "http://10.1.2.3:8081/fs/dm/prov"),
            "{file}: the provisioning URL is not the one the phone used:\n{body}"
        );
        assert!(
            !body.contains("127.0.0.1"),
            "{file}: a loopback address in a LAN phone's file:\n{body}"
        );
        assert!(
            body.contains("10.1.2.3"),
            "{file}: the SIP server is not the host the phone used:\n{body}"
        );
    }
    ts.stop().await;
}

#[tokio::test]
async fn the_url_key_stays_in_the_url_written_back() {
    let config = format!("{BARE}\n[prov-security]\nurl-key = \"k3y-9\"\n");
    let ts = TestServer::start_with(Db::Sqlite, &config).await;
    for (file, ua) in PHONES {
        let body = fetch_as_lan_phone(&ts, &format!("k3y-9/{file}"), ua).await;
        assert!(
            mentions(&body, "http://10.1.2.3:8081/fs/dm/prov/k3y-9"),
            "{file}: the URL key is missing from the provisioning URL:\n{body}"
        );
    }
    ts.stop().await;
}

#[tokio::test]
async fn a_configured_fs_url_wins_over_the_request() {
    let config = format!("{BARE}\n[dm]\nfs_url = \"http://fs1:8080/fs\"\n");
    let ts = TestServer::start_with(Db::Sqlite, &config).await;
    let (file, ua) = PHONES[1];
    let body = fetch_as_lan_phone(&ts, file, ua).await;
    assert!(body.contains("http://fs1:8080/fs/dm/prov"), "{body}");
    assert!(!body.contains("10.1.2.3:8081"), "{body}");
    ts.stop().await;
}

#[tokio::test]
async fn a_host_header_that_is_not_an_authority_is_not_written_into_files() {
    let ts = TestServer::start_with(Db::Sqlite, BARE).await;
    let r = ts
        .http
        .get(format!("{}/fs/dm/prov/001565a1b2c4.cfg", ts.base))
        .header("Host", "evil\"><x")
        .header("User-Agent", "Yealink SIP-T46S 66.86.0.15")
        .send()
        .await
        .expect("request");
    // hyper may refuse such a Host outright; if it is served, the value is not in the file.
    if r.status() == 200 {
        let body = r.text().await.unwrap();
        assert!(!body.contains("evil"), "{body}");
    }
    ts.stop().await;
}
