//! Test harness: the real server on an ephemeral port, over SQLite (a temp file) or over
//! PostgreSQL (127.0.0.1:5432, database `test`, each test in a schema of its own).
#![allow(dead_code)]

pub mod baresip;
pub mod followers;
pub mod kamailio;
pub mod node;
pub mod pair;
pub mod pgaf;
pub mod test_ca;
pub mod trunk;

use std::path::Path;

use sipdm::app::{self, Running};
use sipdm::config::Config;

pub const PG_URL_ENV: &str = "SIPDM_TEST_PG";
pub const PG_DEFAULT: &str = "postgres://postgres@127.0.0.1:5432/test";

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// A store URL for one test, with what must be cleaned up after it.
pub struct TestDb {
    pub url: String,
    schema: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    pub async fn new(db: Db) -> TestDb {
        match db {
            Db::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("sipdm.db").display());
                TestDb {
                    url,
                    schema: None,
                    _dir: Some(dir),
                }
            }
            Db::Postgres => {
                let base = std::env::var(PG_URL_ENV).unwrap_or_else(|_| PG_DEFAULT.into());
                let schema = format!("t_{}", hex_id());
                let pool = sqlx::PgPool::connect(&base)
                    .await
                    .unwrap_or_else(|e| panic!("PostgreSQL at {base} is required for this test ({e}); run testbed/test.sh, which starts it"));
                sqlx::query(&format!("CREATE SCHEMA {schema}"))
                    .execute(&pool)
                    .await
                    .expect("create schema");
                pool.close().await;
                let sep = if base.contains('?') { '&' } else { '?' };
                let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
                TestDb {
                    url,
                    schema: Some(schema),
                    _dir: None,
                }
            }
        }
    }

    /// A store someone else made and will clean up: nothing is dropped with it.
    pub fn borrowed(url: &str) -> TestDb {
        TestDb {
            url: url.to_owned(),
            schema: None,
            _dir: None,
        }
    }

    pub async fn drop_schema(&self) {
        if let Some(schema) = &self.schema {
            let base = std::env::var(PG_URL_ENV).unwrap_or_else(|_| PG_DEFAULT.into());
            if let Ok(pool) = sqlx::PgPool::connect(&base).await {
                let _ = sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
                    .execute(&pool)
                    .await;
                pool.close().await;
            }
        }
    }
}

pub fn hex_id() -> String {
    use rand::Rng;
    let b: [u8; 8] = rand::thread_rng().gen();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A single-site configuration like the guide's: one switch owning 1000–1999.
pub const SINGLE_SITE: &str = r#"
[server]
http = "127.0.0.1:0"
sip = ["127.0.0.1:0"]
admin-token = "test-token"
secret = "test-secret"

[dm]
fs_url = "http://fs1:8080/fs"

[ivr]
number = "8800"

[[sites]]
name = "site1"
fs_url = "http://fs1:8080/fs"
sip-servers = ["sips1.example.test:5060"]

[[switches]]
name = "SIPS1"
site = "site1"
address = "sips1.example.test:5060"
dn-ranges = ["1000-1999"]

[[trunks]]
name = "ivr"
prefix = "88"
contact = "builtin:ivr"
"#;

pub struct TestServer {
    pub running: Option<Running>,
    pub config: Config,
    pub base: String,
    pub token: String,
    pub http: reqwest::Client,
    pub db: TestDb,
}

impl TestServer {
    pub async fn start(db: Db) -> TestServer {
        Self::start_with(db, SINGLE_SITE).await
    }

    pub async fn start_with(db: Db, toml: &str) -> TestServer {
        Self::start_on(TestDb::new(db).await, toml).await
    }

    /// A second instance on this one's store (an active-active pair on one PostgreSQL schema),
    /// with configuration `toml`. Stopping it leaves the store to the first.
    pub async fn start_peer(&self, toml: &str) -> TestServer {
        Self::start_on(TestDb::borrowed(&self.db.url), toml).await
    }

    /// sipdm with configuration `toml` on the store `db`.
    pub async fn start_on(db: TestDb, toml: &str) -> TestServer {
        let mut config = Config::parse(toml, Path::new("test.toml")).expect("test config");
        config.store.url = db.url.clone();
        config.store.max_connections = 4;
        let running = app::start(config.clone()).await.expect("server starts");
        let base = format!("http://{}", running.http_addr);
        let token = running.admin_token.to_string();
        TestServer {
            running: Some(running),
            config,
            base,
            token,
            http: reqwest::Client::new(),
            db,
        }
    }

    /// This instance's id among those sharing the store.
    pub fn instance_id(&self) -> String {
        self.running
            .as_ref()
            .expect("running")
            .instance_id()
            .to_owned()
    }

    /// Stops the server cleanly and starts it again on the same store (on new ports).
    pub async fn restart(mut self) -> TestServer {
        let running = self.running.take().expect("running");
        running.stop().await;
        let running = app::start(self.config.clone())
            .await
            .expect("server restarts");
        self.base = format!("http://{}", running.http_addr);
        self.running = Some(running);
        self
    }

    pub fn sip_addr(&self) -> std::net::SocketAddr {
        self.running.as_ref().expect("running").sip().local_addr()
    }

    pub fn sip(&self) -> &sip::Endpoint {
        self.running.as_ref().expect("running").sip()
    }

    pub fn api(&self, path: &str) -> String {
        format!("{}/fs/dm/api/v1{path}", self.base)
    }

    pub fn prov(&self, file: &str) -> String {
        format!("{}/fs/dm/prov/{file}", self.base)
    }

    pub async fn post(&self, path: &str, body: serde_json::Value) -> reqwest::Response {
        self.http
            .post(self.api(path))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .expect("request")
    }

    pub async fn get_json(&self, path: &str) -> (u16, serde_json::Value) {
        let r = self
            .http
            .get(self.api(path))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// A Yealink phone's own file (`MAC.cfg`, asked with its User-Agent): its ETag and body.
    pub async fn yealink_file(&self, mac: &str) -> (String, String) {
        let ua = format!("Yealink SIP-T46S 66.86.0.15 {mac}");
        let r = self.fetch(&format!("{mac}.cfg"), Some(&ua)).await;
        assert_eq!(r.status(), 200, "{mac}.cfg");
        let etag = r.headers()["etag"].to_str().unwrap().to_owned();
        (etag, r.text().await.unwrap())
    }

    pub async fn fetch(&self, file: &str, user_agent: Option<&str>) -> reqwest::Response {
        let mut req = self.http.get(self.prov(file));
        if let Some(ua) = user_agent {
            req = req.header("User-Agent", ua);
        }
        req.send().await.expect("request")
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
        self.db.drop_schema().await;
    }
}

/// Runs an async test body once per backend.
#[macro_export]
macro_rules! on_both_backends {
    ($name:ident, $body:ident) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                $body(common::Db::Sqlite).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                $body(common::Db::Postgres).await;
            }
        }
    };
}

/// Sends a request line exactly as given (reqwest would normalise `..` and `%2e%2e` away, and a
/// real scanner does not) and returns the status code.
pub async fn raw_get_status(base: &str, raw_path: &[u8]) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut req = b"GET ".to_vec();
    req.extend_from_slice(raw_path);
    req.extend_from_slice(b" HTTP/1.1\r\nHost: fs1\r\nConnection: close\r\n\r\n");
    s.write_all(&req).await.expect("write");
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    let head = String::from_utf8_lossy(&buf);
    head.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// A free port on 127.0.0.1 for UDP and TCP (for a peer such as sipp that needs one named).
pub fn free_port() -> u16 {
    for _ in 0..50 {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let port = udp.local_addr().expect("addr").port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port");
}

/// Runs sipp (the Debian `sip-tester` package; testbed/test.sh installs it) and returns
/// whether every call succeeded, with its output for the failure message.
pub fn sipp(
    target: std::net::SocketAddr,
    scenario: &str,
    transport: &str,
    args: &[&str],
) -> (bool, String) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testbed/sipp");
    let port = free_port().to_string();
    let out = std::process::Command::new("sipp")
        .arg(target.to_string())
        .args(["-sf", dir.join(scenario).to_str().expect("utf-8 path")])
        .args([
            "-t",
            transport,
            "-i",
            "127.0.0.1",
            "-p",
            &port,
            "-m",
            "1",
            "-nostdin",
            "-timeout",
            "20s",
            "-timeout_error",
        ])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("sipp is required (Debian package sip-tester; run testbed/test.sh): {e}")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Polls `probe` every `every` until it yields `Ok`; past `patience` the test fails with the
/// last `Err` it gave. A bound, so that a lost event fails the test instead of hanging it, and
/// never a speed target: how fast things happen is measured in `testbed/bench/`.
pub async fn eventually<T, F, Fut>(
    patience: std::time::Duration,
    every: std::time::Duration,
    mut probe: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let mut last = String::from("never probed");
    let polled = tokio::time::timeout(patience, async {
        loop {
            match probe().await {
                Ok(v) => return v,
                Err(e) => last = e,
            }
            tokio::time::sleep(every).await;
        }
    })
    .await;
    match polled {
        Ok(v) => v,
        Err(_) => panic!("not within {patience:?}: {last}"),
    }
}
