//! SIP over TLS (`[sip] tls-listen`) on the real server, with real peers: sipp over TCP through
//! a local stunnel client (Debian's sipp is built without OpenSSL), and baresip with its own
//! TLS transport. The test CA and server certificate are made with openssl, like the HTTPS
//! test's. stunnel (Debian package stunnel4), sipp and baresip are installed by
//! testbed/test.sh.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::{sipp, Db, TestServer};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A server registering for itself (no switches), with SIP over TLS on a port of its own.
fn config(dir: &Path) -> String {
    format!(
        r#"
[server]
http = "127.0.0.1:0"
sip = ["127.0.0.1:0"]
admin-token = "test-token"
secret = "test-secret"

[sip]
tls-listen = ["127.0.0.1:0"]
tls-cert = "{}"
tls-key = "{}"

[[trunks]]
name = "ivr"
prefix = "88"
contact = "builtin:ivr"
"#,
        dir.join("server.pem").display(),
        dir.join("server.key").display()
    )
}

async fn start(dir: &Path) -> TestServer {
    let ts = TestServer::start_with(Db::Sqlite, &config(dir)).await;
    for (dn, pw) in [("1000", "pw1000"), ("1001", "pw1001")] {
        let r = ts.post("/dns", json!({"number": dn, "password": pw})).await;
        assert_eq!(r.status(), 201);
    }
    ts
}

fn tls_addr(ts: &TestServer) -> SocketAddr {
    *ts.sip().tls_local_addrs().first().expect("a TLS listener")
}

/// A stunnel client: plain TCP in on `addr`, TLS out to sipdm, the server's certificate
/// verified against the test CA. Killed when dropped.
struct Stunnel {
    child: std::process::Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Stunnel {
    async fn start(dir: &Path, to: SocketAddr) -> Stunnel {
        let port = common::free_port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let log = dir.join(format!("stunnel-{port}.log"));
        let conf = dir.join(format!("stunnel-{port}.conf"));
        std::fs::write(
            &conf,
            format!(
                "foreground = yes\npid =\ndebug = 6\noutput = {}\n\n[sip]\nclient = yes\n\
                 accept = {addr}\nconnect = {to}\nCAfile = {}\nverifyChain = yes\n\
                 checkHost = localhost\n",
                log.display(),
                dir.join("ca.pem").display()
            ),
        )
        .unwrap();
        let child = Command::new("stunnel")
            .arg(&conf)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("stunnel is required (Debian package stunnel4; run testbed/test.sh)");
        let s = Stunnel { child, addr, log };
        for _ in 0..100 {
            if s.log_text().contains("Accepting new connections") {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("stunnel did not start listening:\n{}", s.log_text());
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Stunnel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn sipp_via(
    target: SocketAddr,
    scenario: &'static str,
    args: Vec<String>,
) -> tokio::task::JoinHandle<(bool, String)> {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        sipp(target, scenario, "t1", &args)
    })
}

fn strings(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// sipp's REGISTER walk (401 → digest → 200, refresh, unregister) over TLS; then a phone that
/// stays registered is listed with a TLS flow on the TLS port, and an administrator's
/// check-sync reaches it down that TLS connection (its NOTIFY's Via says TLS).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_registers_over_tls_through_stunnel() {
    let dir = tempfile::tempdir().unwrap();
    common::test_ca::make(dir.path());
    let ts = start(dir.path()).await;
    let tls = tls_addr(&ts);
    let tunnel = Stunnel::start(dir.path(), tls).await;

    let (ok, out) = sipp_via(
        tunnel.addr,
        "register_digest.xml",
        strings(&["-s", "1000", "-au", "1000", "-ap", "pw1000"]),
    )
    .await
    .await
    .unwrap();
    assert!(
        ok,
        "REGISTER → 401 → digest → 200 over TLS:\n{out}\nstunnel:\n{}",
        tunnel.log_text()
    );
    assert!(ts.sip().registrar().bindings("1000").is_empty());
    let log = tunnel.log_text();
    assert!(
        log.contains("Certificate accepted") || log.contains("verify ok"),
        "stunnel verified sipdm's certificate against the test CA:\n{log}"
    );

    // A Cisco phone on DN 1001 that stays registered and answers check-sync.
    let r = ts
        .post(
            "/devices",
            json!({"mac": "000e08000001", "vendor": "cisco", "dn": "1001"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let ooc = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testbed/sipp/notify_tls_ooc.xml")
        .display()
        .to_string();
    let phone = sipp_via(
        tunnel.addr,
        "register_wait.xml",
        strings(&["-s", "1001", "-au", "1001", "-ap", "pw1001", "-oocsf", &ooc]),
    )
    .await;
    let mut listed = serde_json::Value::Null;
    for _ in 0..100 {
        let (status, body) = ts.get_json("/bindings?aor=1001").await;
        assert_eq!(status, 200);
        if body.as_array().is_some_and(|a| !a.is_empty()) {
            listed = body[0].clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let flow = listed["flow"].as_str().unwrap_or_default().to_owned();
    assert!(
        flow.starts_with(&format!("tls:{tls};")),
        "the binding's flow is the TLS connection on {tls}: {listed}"
    );
    let bound = ts.sip().registrar().bindings("1001");
    assert_eq!(
        bound[0].flow.map(|f| f.protocol),
        Some(sip::transport::Protocol::Tls)
    );

    let r = ts
        .http
        .post(ts.api("/devices/000e08000001/check-sync"))
        .bearer_auth(&ts.token)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["status"], 200,
        "the phone got the NOTIFY with a TLS Via (488 otherwise): {body}"
    );
    let (ok, out) = phone.await.unwrap();
    assert!(ok, "{out}");
    ts.stop().await;
}

/// baresip registers with `;transport=tls` and its TLS transport, given the test CA.
///
/// Debian bookworm's baresip 1.0.0 (libre 1.1.0, built with OpenSSL) loads `sip_cafile` but
/// has no setting to verify the server's certificate (`sip_verify_server` came in later
/// versions), and it registers just the same when `sip_cafile` lacks the test CA (tried by
/// hand). So this shows that it speaks SIP over TLS to sipdm, not that it checks the
/// certificate; stunnel does that in the test above.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_registers_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    common::test_ca::make(dir.path());
    let ts = start(dir.path()).await;
    let tls = tls_addr(&ts);
    let port = common::free_port();
    let phone = common::baresip::Baresip::start(
        dir.path(),
        &format!(
            "<sip:1000@{}:{};transport=tls>;auth_pass=pw1000;regint=600",
            tls.ip(),
            tls.port()
        ),
        port,
        &format!("sip_cafile {}\n", dir.path().join("ca.pem").display()),
    );
    let bound = phone.wait_bound(&ts, "1000").await;
    let (_, listed) = ts.get_json("/bindings?aor=1000").await;
    let log = phone.stop().await;
    assert_eq!(
        bound.len(),
        1,
        "baresip bound as 1000; baresip said:\n{log}"
    );
    let flow = bound[0].flow.expect("flow");
    assert_eq!(flow.protocol, sip::transport::Protocol::Tls, "{log}");
    assert_eq!(flow.local, tls);
    assert!(
        bound[0].contact.contains("transport=tls"),
        "{}",
        bound[0].contact
    );
    assert_eq!(bound[0].device.as_deref(), Some("1000"));
    assert!(
        listed[0]["flow"]
            .as_str()
            .is_some_and(|f| f.starts_with("tls:")),
        "{listed}"
    );
    ts.stop().await;
}

/// Plain SIP and junk sent to the TLS port: the connection is closed, the failed handshake
/// counted (and exported), and the listener goes on serving TLS clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_tls_port_is_closed_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    common::test_ca::make(dir.path());
    let ts = start(dir.path()).await;
    let tls = tls_addr(&ts);
    let junk: [&[u8]; 2] = [
        b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bKx\r\n\r\n",
        &[0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 3, 4, 5, 6, 7],
    ];
    for bytes in junk {
        let mut s = tokio::net::TcpStream::connect(tls).await.unwrap();
        s.write_all(bytes).await.unwrap();
        let mut buf = [0u8; 512];
        let mut closed = false;
        for _ in 0..20 {
            match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    closed = true;
                    break;
                }
                Ok(Ok(_)) => {} // a TLS alert
                Err(_) => break,
            }
        }
        assert!(closed, "closed after {bytes:?}");
    }
    let mut failed = 0;
    for _ in 0..200 {
        failed = ts.sip().stats().snapshot().tls_handshake_failed;
        if failed >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(failed, 2);
    let metrics = ts
        .http
        .get(format!("{}/metrics", ts.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("sipdm_sip_tls_handshake_failed_total"),
        "exported"
    );

    // Still serving: a TLS client verifying against the test CA gets OPTIONS answered.
    let pem = std::fs::read(dir.path().join("ca.pem")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(tls).await.unwrap();
    let local = tcp.local_addr().unwrap();
    let mut s = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .expect("TLS handshake verified against the test CA");
    s.write_all(
        format!(
            "OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TLS {local};branch=z9hG4bKok;rport\r\n\
             From: <sip:probe@127.0.0.1>;tag=p\r\nTo: <sip:127.0.0.1>\r\nCall-ID: probe-tls\r\n\
             CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    for _ in 0..20 {
        if got.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        assert!(n > 0, "closed");
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("SIP/2.0 200 "), "{text}");
    assert!(text.contains("SIP/2.0/TLS"), "{text}");
    ts.stop().await;
}

/// A certificate or key that cannot be used stops the start, naming the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_certificate_is_a_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    common::test_ca::make(dir.path());
    let db = common::TestDb::new(Db::Sqlite).await;
    let bad_cert = dir.path().join("not-a-cert.pem");
    std::fs::write(&bad_cert, "this is no certificate\n").unwrap();
    let base = config(dir.path());
    let cases = [
        (
            base.replace(
                &dir.path().join("server.pem").display().to_string(),
                &bad_cert.display().to_string(),
            ),
            "not-a-cert.pem: no certificate found",
        ),
        (
            base.replace(
                &dir.path().join("server.key").display().to_string(),
                &dir.path().join("missing.key").display().to_string(),
            ),
            "missing.key",
        ),
        (
            // The CA's key does not belong to the server's certificate.
            base.replace(
                &dir.path().join("server.key").display().to_string(),
                &dir.path().join("ca.key").display().to_string(),
            ),
            "SIP over TLS certificate",
        ),
    ];
    for (toml, expect) in cases {
        let mut config =
            sipdm::config::Config::parse(&toml, Path::new("test.toml")).expect("valid toml");
        config.store.url = db.url.clone();
        let err = match sipdm::app::start(config).await {
            Ok(running) => {
                running.stop().await;
                panic!("started with an unusable certificate ({expect})");
            }
            Err(e) => format!("{e:#}"),
        };
        assert!(
            err.contains(expect) && err.contains("TLS"),
            "{expect}: {err}"
        );
    }
}
