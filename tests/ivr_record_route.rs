//! The IVR behind a record-routing proxy (a Kamailio in front of sipdm): its 200 OK copies the
//! INVITE's Record-Route headers in order (RFC 3261 §12.1.1), so the phone's ACK comes back
//! through the proxy, and its BYE carries the route set as Route headers and goes to the first
//! route (§12.2.1.1) — not straight to the phone, which a switch would refuse (404).
//!
//! sipp is the phone; a UDP socket of this test is the nearer proxy: it checks the BYE that
//! reaches it and passes it on to sipp, which answers it.

mod common;

use std::time::Duration;

use common::{Db, TestServer};
use serde_json::json;
use tokio::net::UdpSocket;

const CONFIG: &str = r#"
[server]
http = "127.0.0.1:0"
sip = ["127.0.0.1:0"]
admin-token = "test-token"
secret = "test-secret"

[ivr]
number = "8800"

[[trunks]]
name = "ivr"
prefix = "88"
contact = "builtin:ivr"
group = "gcti_provisioning"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ivr_dialog_follows_the_record_route() {
    let ts = TestServer::start_with(Db::Sqlite, CONFIG).await;
    ts.post("/dns", json!({"number": "1001", "password": "pw1001"}))
        .await;
    let (user, password) = device_credentials(&ts).await;
    let proxy = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let proxy_port = proxy.local_addr().unwrap().port().to_string();
    let first_route = format!("<sip:127.0.0.1:{proxy_port};lr;rr=first>");
    let sipp_port = common::free_port();

    // The proxy: the first datagram it gets should be the IVR's BYE; it is passed on to sipp.
    let relay = tokio::spawn(async move {
        let mut buf = vec![0u8; 65535];
        let (n, from) = tokio::time::timeout(Duration::from_secs(40), proxy.recv_from(&mut buf))
            .await
            .expect("a request reaches the first route within 40 s")
            .unwrap();
        proxy
            .send_to(&buf[..n], ("127.0.0.1", sipp_port))
            .await
            .unwrap();
        (String::from_utf8_lossy(&buf[..n]).into_owned(), from)
    });

    let target = ts.sip_addr();
    let media = common::free_port().to_string();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testbed/sipp");
    let scenario = dir.join("ivr_record_route.xml");
    let (ok, out) = tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new("sipp")
            .arg(target.to_string())
            .args(["-sf", scenario.to_str().unwrap()])
            .args(["-t", "u1", "-i", "127.0.0.1", "-p", &sipp_port.to_string()])
            .args(["-m", "1", "-nostdin", "-timeout", "40s", "-timeout_error"])
            .args(["-s", "8800", "-au", &user, "-ap", &password, "-mp", &media])
            .args(["-key", "proxy_port", &proxy_port])
            .args(["-key", "dn1", "1", "-key", "dn2", "0", "-key", "dn3", "0"])
            .args(["-key", "dn4", "1"])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap_or_else(|e| {
                panic!("sipp is required (Debian package sip-tester; run testbed/test.sh): {e}")
            });
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    })
    .await
    .unwrap();
    assert!(
        ok,
        "sipp phone (checks the 200 OK's Record-Route and the BYE's Route):\n{out}"
    );

    let (bye, from) = relay.await.unwrap();
    assert!(bye.starts_with("BYE "), "the first route got:\n{bye}");
    assert_eq!(from, ts.sip_addr(), "sent by sipdm");
    // Request-URI: the phone's Contact (loose routing: the route set goes in Route headers).
    let request_line = bye.lines().next().unwrap();
    assert!(
        request_line.starts_with("BYE sip:gcti_provisioning@127.0.0.1:"),
        "{request_line}"
    );
    let routes: Vec<&str> = bye
        .lines()
        .filter_map(|l| l.strip_prefix("Route: "))
        .collect();
    assert_eq!(
        routes,
        [first_route.as_str(), "<sip:10.255.255.1:5099;lr;rr=second>"],
        "BYE:\n{bye}"
    );
    // The call was a real one: the keyed DN was assigned to the calling device.
    let (_, d) = ts
        .get_json(&format!("/devices/{}", common::trunk::MAC))
        .await;
    assert_eq!(d["dn"], "1001", "{d}");
    ts.stop().await;
}

/// The digest user and password the unassigned phone finds in its default file (a Polycom:
/// `{mac}.cfg`, or the `{mac}-phone.cfg` a master file names).
async fn device_credentials(ts: &TestServer) -> (String, String) {
    let mac = common::trunk::MAC;
    for name in [format!("{mac}.cfg"), format!("{mac}-phone.cfg")] {
        let file = ts
            .fetch(&name, Some("PolycomVVX-VVX_450-UA/6.3.0.14929"))
            .await
            .text()
            .await
            .unwrap();
        let attr = |name: &str| {
            let at = file.find(&format!("{name}=\""))?;
            let rest = &file[at + name.len() + 2..];
            Some(rest[..rest.find('"')?].to_owned())
        };
        if let (Some(u), Some(p)) = (attr("reg.1.auth.userId"), attr("reg.1.auth.password")) {
            return (u, p);
        }
    }
    panic!("no credentials in the default file of {mac}");
}
