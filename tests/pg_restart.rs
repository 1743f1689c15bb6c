//! PostgreSQL restarted under a running sipdm. A throwaway cluster of its own (initdb in a temp
//! dir, its own port), never the machine's shared one: phones provisioned before, clear errors
//! while the database is down (health 503, provisioning 5xx rather than a wrong file), and
//! after it is back the pool and the check-sync listener reconnect by themselves and IVR
//! provisioning carries on; nothing is assigned twice.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::free_port;
use common::node::Node;
use testbed::phone::{Mac, Phone, PhoneOptions, PhoneSpec, SipTimers, Vendor};

/// A PostgreSQL cluster in a temp dir, run as `postgres` when the tests run as root (initdb
/// refuses root). Stopped (immediate) when dropped.
struct ThrowawayPg {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

impl ThrowawayPg {
    fn new() -> ThrowawayPg {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect(
                "PostgreSQL server binaries in /usr/lib/postgresql (testbed/test.sh installs them)",
            )
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("bin"))
            .find(|p| p.join("initdb").exists())
            .expect("initdb");
        let dir = tempfile::tempdir().expect("temp dir");
        let pg = ThrowawayPg {
            bin,
            dir,
            port: port_outside_ephemeral_range(),
        };
        if is_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(pg.dir.path())
                .status()
                .expect("chown");
            assert!(ok.success());
        }
        let data = pg.data();
        pg.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
            ],
        );
        pg.start();
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let exe = self.bin.join(tool);
        let out = if is_root() {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&exe)
                .args(args)
                .output()
        } else {
            Command::new(&exe).args(args).output()
        }
        .unwrap_or_else(|e| panic!("{tool}: {e}"));
        assert!(
            out.status.success(),
            "{tool} {args:?}:\n{}{}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.dir.path().join("pg.log")).unwrap_or_default()
        );
    }

    fn start(&self) {
        let data = self.data();
        let log = self.dir.path().join("pg.log");
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        self.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-o",
                &opts,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-t",
                "30",
                "start",
            ],
        );
    }

    /// Fast shutdown: PostgreSQL ends every session, as a restart of the service does.
    fn stop(&self) {
        let data = self.data();
        self.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-m",
                "fast",
                "-w",
                "-t",
                "30",
                "stop",
            ],
        );
    }
}

impl Drop for ThrowawayPg {
    fn drop(&mut self) {
        let data = self.data();
        let exe = self.bin.join("pg_ctl");
        let args = ["-D", data.to_str().unwrap_or(""), "-m", "immediate", "stop"];
        let _ = if is_root() {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&exe)
                .args(args)
                .output()
        } else {
            Command::new(&exe).args(args).output()
        };
    }
}

/// A free TCP port below the kernel's ephemeral range. While the cluster is down, sipdm keeps
/// reconnecting to its port; were that port an ephemeral one, a reconnect could be given it
/// as its own source port and connect to itself (TCP simultaneous open), holding the port so
/// that PostgreSQL cannot bind it again on restart.
fn port_outside_ephemeral_range() -> u16 {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let span = low.saturating_sub(20_000).max(1) as u32;
    let seed = std::process::id()
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
    for i in 0..200u32 {
        let port = 20_000 + (seed.wrapping_add(i.wrapping_mul(7_919)) % span) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port below {low}");
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn config(store: &str, http: SocketAddr, sip: SocketAddr) -> String {
    format!(
        r#"
[server]
http = "{http}"
sip = ["{sip}"]
admin-token = "test-token"
secret = "test-secret"

[store]
url = "{store}"
max-connections = 4

[ivr]
number = "8800"

[[trunks]]
name = "ivr"
prefix = "88"
contact = "builtin:ivr"
group = "gcti_provisioning"
"#
    )
}

/// IVR-provisions phones `from..to` (one DN each, 1000 + i) through `node`.
async fn provision(node: &Node, from: u32, to: u32) -> Vec<String> {
    let mut set = tokio::task::JoinSet::new();
    for i in from..to {
        let vendor = Vendor::ALL[i as usize % Vendor::ALL.len()];
        let spec = PhoneSpec {
            mac: Mac::generated(vendor, i + 1),
            vendor,
            prov_url: node.prov_url(),
            fallback_prov_urls: Vec::new(),
            local_ip: [127, 0, 0, 1].into(),
        };
        let options = PhoneOptions {
            timers: SipTimers {
                t1: Duration::from_millis(100),
                ..SipTimers::default()
            },
            notify_timeout: Duration::from_secs(8),
            overall_timeout: Duration::from_secs(40),
            flow_attempts: 3,
            ..PhoneOptions::default()
        };
        let dn = (1000 + i).to_string();
        set.spawn(async move {
            let mut phone = Phone::with_options(spec, options).await.expect("phone");
            let r = phone.run_ivr_provisioning(&dn).await;
            phone.shutdown();
            r.map(|p| p.config.user)
                .map_err(|e| format!("{vendor} {dn}: {e}"))
        });
    }
    let mut failures = Vec::new();
    while let Some(j) = set.join_next().await {
        if let Err(e) = j.expect("phone task") {
            failures.push(e);
        }
    }
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_under_a_running_instance() {
    let t0 = std::time::Instant::now();
    let pg = ThrowawayPg::new();
    eprintln!("{:.1?} PostgreSQL up", t0.elapsed());
    let (http, sip) = (addr(free_port()), addr(free_port()));
    let node = Node::start("sipdm", &config(&pg.url(), http, sip), http, sip).await;
    let client = reqwest::Client::new();
    let csv: String = (0..20).map(|i| format!("{},pw-{i}\n", 1000 + i)).collect();
    let r = client
        .post(node.api("/dns/import"))
        .bearer_auth(&node.token)
        .body(csv)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let failures = provision(&node, 0, 10).await;
    assert!(failures.is_empty(), "before the restart:\n{failures:?}");

    eprintln!("{:.1?} provisioned 10", t0.elapsed());
    pg.stop();
    eprintln!("{:.1?} stopped", t0.elapsed());
    // Down: the health check says so, an unknown phone gets an error rather than a file, and
    // the node itself keeps running.
    let health = client
        .get(format!("http://{http}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 503, "health while the database is down");
    eprintln!("{:.1?} health answered", t0.elapsed());
    let file = client
        .get(format!("{}/0004f2777777.cfg", node.prov_url()))
        .header("User-Agent", "PolycomVVX-VVX_450-UA/6.3.0.14929")
        .send()
        .await
        .unwrap();
    assert_eq!(
        file.status(),
        503,
        "a file while the database is down: try again later"
    );
    eprintln!("{:.1?} file answered", t0.elapsed());
    pg.start();

    // Back: the pool reconnects (bounded wait on the health check) …
    let mut healthy = false;
    for _ in 0..100 {
        if let Ok(r) = client.get(format!("http://{http}/healthz")).send().await {
            if r.status().is_success() {
                healthy = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(healthy, "healthy again:\n{}", node.log_tail(30));
    // … and so does the check-sync listener, which is how a peer tells this node is alive.
    let pool = sqlx::PgPool::connect(&pg.url()).await.unwrap();
    let mut listening = false;
    for _ in 0..100 {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'sipdm-%'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if n > 0 {
            listening = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        listening,
        "the hand-over listener reconnected:\n{}",
        node.log_tail(30)
    );

    eprintln!("{:.1?} listening again", t0.elapsed());
    let failures = provision(&node, 10, 20).await;
    eprintln!("{:.1?} provisioned 20", t0.elapsed());
    assert!(
        failures.is_empty(),
        "after the restart:\n{failures:?}\n{}",
        node.log_tail(30)
    );
    let twice: Vec<(String, i64)> = sqlx::query_as(
        "SELECT dn, count(*) FROM devices WHERE dn IS NOT NULL GROUP BY dn HAVING count(*) > 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(twice.is_empty(), "{twice:?}");
    let assigned: i64 = sqlx::query_scalar("SELECT count(*) FROM devices WHERE dn IS NOT NULL")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(assigned, 20);
    let assigns: i64 = sqlx::query_scalar("SELECT count(*) FROM audit WHERE action = 'assign'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(assigns, 20, "one assignment each");
    pool.close().await;
    drop(node);
}
