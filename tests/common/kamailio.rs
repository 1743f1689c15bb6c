//! Kamailio as the site's switch, for tests: the shipped `config/switch/kamailio/kamailio.cfg`
//! on a free loopback UDP port, over a PostgreSQL database of its own (`kam_<hex>`) that sipdm
//! uses as its store too, so Kamailio's `auth_db` reads sipdm's `switch_subscriber` view and
//! the test reads Kamailio's `location` table.
//!
//! Kamailio's `db_url` cannot set a search_path, hence a database per test rather than the
//! schema the other tests use. The database goes when the [`SwitchDb`] is dropped, Kamailio
//! (by its PID, SIGTERM then SIGKILL of its process group) when the [`Kamailio`] is.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{TestDb, TestServer, PG_DEFAULT, PG_URL_ENV};

const KAMAILIO: &str = "/usr/sbin/kamailio";
const KAMAILIO_SQL: &str = "/usr/share/kamailio/postgres";

/// A fresh PostgreSQL database with Kamailio's `version` and usrloc tables.
pub struct SwitchDb {
    /// `postgres://…/kam_<hex>`: Kamailio's DBURL and sipdm's `store.url`.
    pub url: String,
    name: String,
    admin_url: String,
}

impl SwitchDb {
    pub async fn create() -> SwitchDb {
        let admin_url = std::env::var(PG_URL_ENV).unwrap_or_else(|_| PG_DEFAULT.into());
        let name = format!("kam_{}", super::hex_id());
        let admin = sqlx::PgPool::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {admin_url} is required for this test ({e}); run testbed/test.sh, which starts it"));
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .expect("create database");
        admin.close().await;
        let url = database_url(&admin_url, &name);
        let pool = sqlx::PgPool::connect(&url).await.expect("connect kam db");
        for file in ["standard-create.sql", "usrloc-create.sql"] {
            let path = Path::new(KAMAILIO_SQL).join(file);
            let sql = std::fs::read_to_string(&path).unwrap_or_else(|e| {
                panic!(
                    "{} is required (Debian package kamailio-postgres-modules; run testbed/test.sh): {e}",
                    path.display()
                )
            });
            sqlx::raw_sql(&sql)
                .execute(&pool)
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
        pool.close().await;
        SwitchDb {
            url,
            name,
            admin_url,
        }
    }

    /// sipdm on this database (its store migrates into it), with configuration `toml`.
    pub async fn start_sipdm(&self, toml: &str) -> TestServer {
        // The database is this SwitchDb's to drop.
        TestServer::start_on(TestDb::borrowed(&self.url), toml).await
    }

    /// `(username, contact)` of every row of Kamailio's `location` table.
    pub async fn locations(&self) -> Vec<(String, String)> {
        let pool = sqlx::PgPool::connect(&self.url).await.expect("connect");
        let rows = sqlx::query_as("SELECT username, contact FROM location ORDER BY username")
            .fetch_all(&pool)
            .await
            .expect("read location");
        pool.close().await;
        rows
    }

    /// Waits up to `timeout` for a `location` row of `username`; its contacts.
    pub async fn wait_location(&self, username: &str, timeout: Duration) -> Vec<String> {
        let until = Instant::now() + timeout;
        loop {
            let found: Vec<String> = self
                .locations()
                .await
                .into_iter()
                .filter(|(u, _)| u == username)
                .map(|(_, c)| c)
                .collect();
            if !found.is_empty() || Instant::now() >= until {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for SwitchDb {
    fn drop(&mut self) {
        // Drop may run inside the test's runtime: a psql child, not another pool.
        let _ = Command::new("psql")
            .arg(&self.admin_url)
            .args(["-q", "-c"])
            .arg(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// `base` (any PostgreSQL URL) naming database `name` instead, without its query.
fn database_url(base: &str, name: &str) -> String {
    let base = base.split('?').next().unwrap_or(base);
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    match base[scheme_end..].find('/') {
        Some(i) => format!("{}/{name}", &base[..scheme_end + i]),
        None => format!("{base}/{name}"),
    }
}

/// The parameters the shipped configuration takes (its `-A` defines).
#[derive(Debug, Clone)]
pub struct KamailioParams {
    pub realm: String,
    /// sipdm's SIP address: trusted, and where IVR calls go.
    pub sipdm: SocketAddr,
    pub ivr_prefix: String,
    /// UDP port on 127.0.0.1 (`super::free_port()` when the test needs it before start).
    pub port: u16,
}

/// A running Kamailio with the shipped configuration.
pub struct Kamailio {
    child: Child,
    pub addr: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Kamailio {
    /// The shipped configuration file.
    pub fn config_path() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/switch/kamailio/kamailio.cfg")
    }

    /// Starts Kamailio on `db` and waits until it answers OPTIONS; panics with its log when
    /// it does not.
    pub fn start(db: &SwitchDb, p: &KamailioParams) -> Kamailio {
        Self::start_with(db, p, &[])
    }

    /// [`Kamailio::start`] with more `-A` defines (`SIPDM_PEERS=…`, `LOCDBURL="…"`).
    pub fn start_with(db: &SwitchDb, p: &KamailioParams, defines: &[String]) -> Kamailio {
        use std::os::unix::process::CommandExt;
        assert!(
            Path::new(KAMAILIO).exists(),
            "{KAMAILIO} is required (Debian packages kamailio, kamailio-postgres-modules; run testbed/test.sh)"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("kamailio.log");
        let log_file = std::fs::File::create(&log).expect("log file");
        let addr: SocketAddr = ([127, 0, 0, 1], p.port).into();
        let child = Command::new(KAMAILIO)
            .arg("-f")
            .arg(Self::config_path())
            // Foreground, the main process is ours; it ends its children on SIGTERM.
            .args(["-DD", "-E", "-m", "64", "-M", "8"])
            .arg("-w")
            .arg(dir.path())
            .arg("-Y")
            .arg(dir.path())
            .arg("-P")
            .arg(dir.path().join("kamailio.pid"))
            .args(["-A", &format!("LISTEN=udp:{addr}")])
            .args(["-A", &format!("DBURL=\"{}\"", db.url)])
            .args(["-A", &format!("REALM={}", p.realm)])
            .args(["-A", &format!("SIPDM={}", p.sipdm)])
            .args(["-A", &format!("IVR_PREFIX={}", p.ivr_prefix)])
            .args(["-A", "WITH_DEBUG"])
            .args(defines.iter().flat_map(|d| ["-A", d.as_str()]))
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log file"))
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {KAMAILIO}: {e}"));
        let mut k = Kamailio {
            child,
            addr,
            log,
            _dir: dir,
        };
        k.wait_ready();
        k
    }

    /// What Kamailio has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `lines` lines of its log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn wait_ready(&mut self) {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let until = Instant::now() + Duration::from_secs(15);
        let mut n = 0;
        while Instant::now() < until {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "Kamailio exited ({status}) before answering OPTIONS; its log:\n{}",
                    self.log()
                );
            }
            n += 1;
            let local = sock.local_addr().expect("addr");
            let msg = format!(
                "OPTIONS sip:{addr} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-ready{n};rport\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:probe@{local}>;tag=ready\r\nTo: <sip:{addr}>\r\n\
                 Call-ID: ready-{n}@test\r\nCSeq: {n} OPTIONS\r\nContent-Length: 0\r\n\r\n",
                addr = self.addr
            );
            let _ = sock.send_to(msg.as_bytes(), self.addr);
            let mut buf = [0u8; 4096];
            if let Ok((len, _)) = sock.recv_from(&mut buf) {
                if buf[..len].starts_with(b"SIP/2.0 200") {
                    return;
                }
            }
        }
        panic!(
            "Kamailio did not answer OPTIONS on {} within 15 s; its log:\n{}",
            self.addr,
            self.log()
        );
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        let pid = self.child.id() as i32;
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Whatever is left of its process group (children of a main process that did not
        // end them).
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pid}")])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
    }
}

/// Sends one request from `sock` to `to` and returns the first final response (status and
/// whole text), or `None` after `timeout`.
pub fn request(
    sock: &UdpSocket,
    to: SocketAddr,
    text: &str,
    timeout: Duration,
) -> Option<(u16, String)> {
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    sock.send_to(text.as_bytes(), to).expect("send");
    let until = Instant::now() + timeout;
    let mut buf = vec![0u8; 65536];
    let mut last_send = Instant::now();
    while Instant::now() < until {
        match sock.recv_from(&mut buf) {
            Ok((len, _)) => {
                let msg = String::from_utf8_lossy(&buf[..len]).into_owned();
                let code = msg
                    .strip_prefix("SIP/2.0 ")
                    .and_then(|r| r.get(..3))
                    .and_then(|c| c.parse::<u16>().ok());
                if let Some(code) = code.filter(|c| *c >= 200) {
                    return Some((code, msg));
                }
            }
            Err(_) => {
                // UDP: retransmit like a client transaction would (T1 = 500 ms).
                if last_send.elapsed() >= Duration::from_millis(500) {
                    let _ = sock.send_to(text.as_bytes(), to);
                    last_send = Instant::now();
                }
            }
        }
    }
    None
}
