//! A pg_auto_failover formation on loopback, for tests of PostgreSQL failover: a monitor and
//! two data nodes (node 0 `site1`, node 1 `site2`, the business-continuity pair) with
//! synchronous replication, each a `pg_autoctl run` child process of this test run as user
//! `postgres` (PostgreSQL refuses root), in a temporary directory. Nothing is left behind:
//! dropping the [`Formation`] kills every process it started (the `pg_autoctl` process groups,
//! the postmasters and their children) and removes the directory.
//!
//! The monitor fails over in seconds instead of the default half a minute ([`FAST_FAILOVER`]).
//! Clients reach the nodes as `postgres` with trust authentication (initdb's
//! `host all all 127.0.0.1/32 trust`, which pg_autoctl keeps with `--auth trust`, and which a
//! secondary inherits with its base backup).
//!
//! Needs the Debian packages pg-auto-failover-cli and postgresql-15-auto-failover
//! (testbed/test.sh installs them), and root to start processes as `postgres`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sqlx::postgres::PgConnection;
use sqlx::Connection;

use super::{eventually, free_port};

pub const PG_AUTOCTL: &str = "/usr/bin/pg_autoctl";
pub const PG_CTL: &str = "/usr/lib/postgresql/15/bin/pg_ctl";
const EXTENSION: &str = "/usr/lib/postgresql/15/lib/pgautofailover.so";
const PACKAGES: &str =
    "Debian packages pg-auto-failover-cli and postgresql-15-auto-failover; run testbed/test.sh";

/// The data nodes' names (`pg_autoctl create postgres --name`): one node per site.
pub const NODE_NAMES: [&str; 2] = ["site1", "site2"];

/// The monitor's settings for tests (`ALTER SYSTEM`, then `pg_reload_conf()`), in ms: a dead
/// primary is noticed in about two seconds and the standby promoted about three seconds
/// later, instead of about 20 s + 30 s with the defaults (5000, 5000, 2, 2000, 20000, 30000,
/// 10000).
pub const FAST_FAILOVER: &[(&str, u32)] = &[
    // A health check (a connection to each node's Postgres) every second, given up after one
    // second, retried once half a second later.
    ("pgautofailover.health_check_period", 1000),
    ("pgautofailover.health_check_timeout", 1000),
    ("pgautofailover.health_check_max_retries", 1),
    ("pgautofailover.health_check_retry_delay", 500),
    // A node that failed its health check and has not reported for 2 s is unhealthy: the
    // failover starts.
    ("pgautofailover.node_considered_unhealthy_timeout", 2000),
    // How long the standby waits for the old primary to demote itself before it is promoted.
    // Kept above the keepers' network_partition_timeout (NETWORK_PARTITION_TIMEOUT_S), after
    // which a primary cut off from the monitor and its standby stops taking writes: so there
    // is never a moment with two primaries.
    ("pgautofailover.primary_demote_timeout", 3000),
    // No failover decision in the first 2 s after the monitor starts (start_monitor).
    ("pgautofailover.startup_grace_period", 2000),
];

/// Each keeper's `timeout.network_partition_timeout` (s; default 20): below the monitor's
/// primary_demote_timeout.
pub const NETWORK_PARTITION_TIMEOUT_S: u32 = 2;

/// One Postgres instance and the `pg_autoctl run` that keeps it.
struct Instance {
    name: String,
    pgdata: PathBuf,
    port: u16,
    keeper: Option<Child>,
    log: PathBuf,
}

/// One node's row in the monitor's `pgautofailover.node`.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeState {
    pub name: String,
    pub reported: String,
    pub goal: String,
    /// The monitor's health check: 1 good, 0 bad, -1 unknown.
    pub health: i32,
}

/// A monitor and two data nodes of one formation (`default`, group 0).
pub struct Formation {
    /// The database every node serves (created by the first node, replicated to the other).
    pub dbname: String,
    monitor: Instance,
    nodes: Vec<Instance>,
    uid: u32,
    gid: u32,
    /// Dropped after [`Drop::drop`] has killed everything: removes the files.
    dir: tempfile::TempDir,
}

impl Formation {
    /// Creates the monitor, sets [`FAST_FAILOVER`], creates `site1` (the primary) and `site2`
    /// (its synchronous standby), database `test`, and returns once the monitor reports them
    /// primary and secondary and the primary has a synchronous standby (bounded; a failure
    /// panics with the logs). Takes about ten seconds.
    pub async fn start() -> Formation {
        for (path, what) in [
            (PG_AUTOCTL, "pg_autoctl"),
            (PG_CTL, "PostgreSQL 15's pg_ctl"),
            (EXTENSION, "the pgautofailover extension for PostgreSQL 15"),
        ] {
            assert!(
                Path::new(path).exists(),
                "{what} ({path}) is required for the failover formation ({PACKAGES})"
            );
        }
        let (uid, gid) = postgres_user();
        let dir = tempfile::tempdir().expect("temp dir");
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown the temp dir");
        // Compared with the processes' working directories: no symbolic link on the way.
        let root = dir.path().canonicalize().expect("temp dir");
        // pg_autoctl's files: configuration, state, and pid files (in the runtime dir when it
        // exists, else in /tmp/pg_autoctl).
        for sub in ["xdg/config", "xdg/data", "xdg/run"] {
            let p = root.join(sub);
            std::fs::create_dir_all(&p).expect("xdg dir");
            for q in [root.join("xdg"), p] {
                std::os::unix::fs::chown(&q, Some(uid), Some(gid)).expect("chown xdg dir");
            }
        }
        let mut ports = Vec::new();
        while ports.len() < 3 {
            let p = free_port();
            if !ports.contains(&p) {
                ports.push(p);
            }
        }
        let instance = |name: &str, port: u16| Instance {
            name: name.to_owned(),
            pgdata: root.join(name),
            port,
            keeper: None,
            log: root.join(format!("{name}.log")),
        };
        let monitor = instance("monitor", ports[0]);
        let nodes = vec![
            instance(NODE_NAMES[0], ports[1]),
            instance(NODE_NAMES[1], ports[2]),
        ];
        // Built first, so that a panic from here on kills what was started.
        let mut f = Formation {
            dbname: "test".into(),
            monitor,
            nodes,
            uid,
            gid,
            dir,
        };
        f.create_monitor().await;
        f.create_node(0).await;
        f.wait_reported(0, "single", Duration::from_secs(30)).await;
        f.create_node(1).await;
        f.wait_healthy(Duration::from_secs(60)).await;
        f
    }

    /// The libpq multi-host URL of database `db`: both nodes, the writable one chosen by the
    /// client (what sipdm's `store.url` carries).
    pub fn url(&self, db: &str) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!(
            "postgres://postgres@{}/{db}?target_session_attrs=read-write",
            hosts.join(",")
        )
    }

    /// Node `i`'s own URL, to the formation's database.
    pub fn node_url(&self, i: usize) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{}",
            self.nodes[i].port, self.dbname
        )
    }

    /// The monitor's database, as its superuser.
    pub fn monitor_url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/pg_auto_failover",
            self.monitor.port
        )
    }

    pub fn port(&self, i: usize) -> u16 {
        self.nodes[i].port
    }

    /// Which node the monitor names as the group's writable node now (panics when it names
    /// none, or does not answer: see [`Formation::wait_primary`] for a bounded wait).
    pub async fn primary(&self) -> usize {
        match self.monitor_primary().await {
            Ok(i) => i,
            Err(e) => panic!("no primary: {e}; {}", self.describe().await),
        }
    }

    /// The monitor's view of the nodes, by node id.
    pub async fn states(&self) -> Result<Vec<NodeState>, String> {
        let mut c = self.monitor_conn().await?;
        let rows: Vec<(String, String, String, i32)> = sqlx::query_as(
            "SELECT nodename, reportedstate::text, goalstate::text, health \
             FROM pgautofailover.node ORDER BY nodeid",
        )
        .fetch_all(&mut c)
        .await
        .map_err(|e| format!("monitor: {e}"))?;
        let _ = c.close().await;
        Ok(rows
            .into_iter()
            .map(|(name, reported, goal, health)| NodeState {
                name,
                reported,
                goal,
                health,
            })
            .collect())
    }

    /// Waits (bounded) until some node is the writable primary: the one the monitor names,
    /// out of recovery (`pg_is_in_recovery()` false). When the monitor itself is down, any
    /// node out of recovery. Returns its index.
    pub async fn wait_primary(&self, patience: Duration) -> usize {
        eventually(patience, Duration::from_millis(100), || async move {
            let candidates = match self.monitor_primary().await {
                Ok(i) => vec![i],
                Err(e) if e.starts_with("monitor unreachable") => vec![0, 1],
                Err(e) => return Err(e),
            };
            let mut why = Vec::new();
            for i in candidates {
                match self.in_recovery(i).await {
                    Ok(false) => return Ok(i),
                    Ok(true) => why.push(format!("{} is in recovery", self.nodes[i].name)),
                    Err(e) => why.push(e),
                }
            }
            Err(why.join("; "))
        })
        .await
    }

    /// Waits (bounded) until the formation is whole again: one node primary, the other
    /// secondary (reported and assigned), both passing the monitor's health check, and the
    /// primary with a synchronous standby (`synchronous_standby_names` set). Returns the
    /// primary's index.
    pub async fn wait_healthy(&self, patience: Duration) -> usize {
        let polled = tokio::time::timeout(patience, async {
            loop {
                if let Ok(i) = self.healthy().await {
                    return i;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await;
        match polled {
            Ok(i) => i,
            Err(_) => panic!(
                "the formation is not primary + secondary within {patience:?}: {}",
                self.describe().await
            ),
        }
    }

    /// SIGKILL to node `i`'s keeper process group and to its postmaster and the postmaster's
    /// children: the whole node dies at once, as with a power cut.
    pub fn kill_node(&mut self, i: usize) {
        kill_instance(&mut self.nodes[i]);
    }

    /// Stops node `i` cleanly (SIGTERM to its keeper, which stops its Postgres with a fast
    /// shutdown), as a site's orderly power-down; bounded, then killed.
    pub fn stop_node(&mut self, i: usize) {
        stop_instance(&mut self.nodes[i]);
    }

    /// Starts node `i`'s keeper again (`pg_autoctl run`): it restarts Postgres and rejoins
    /// the formation (pg_rewind when it was the primary). Returns at once; see
    /// [`Formation::wait_healthy`].
    pub fn start_node(&mut self, i: usize) {
        let n = &self.nodes[i];
        assert!(n.keeper.is_none(), "{} already runs", n.name);
        let child = self.run_keeper(&self.nodes[i]);
        self.nodes[i].keeper = Some(child);
    }

    /// SIGKILL to the monitor (keeper and Postgres). The nodes carry on as they are; no
    /// failover happens while it is away.
    pub fn kill_monitor(&mut self) {
        kill_instance(&mut self.monitor);
    }

    /// Starts the monitor again and waits (bounded) until it answers.
    pub async fn start_monitor(&mut self) {
        assert!(self.monitor.keeper.is_none(), "the monitor already runs");
        let child = self.run_keeper(&self.monitor);
        self.monitor.keeper = Some(child);
        self.wait_monitor().await;
    }

    /// The last `lines` lines of node `i`'s log (pg_autoctl's, Postgres's own log lives in its
    /// data directory), for failure messages.
    pub fn log_tail(&self, i: usize, lines: usize) -> String {
        tail(&self.nodes[i].log, lines)
    }

    /// The monitor's view and the logs' tails, for a failure message.
    pub async fn describe(&self) -> String {
        let mut s = format!("monitor says {:?}", self.states().await);
        for inst in std::iter::once(&self.monitor).chain(&self.nodes) {
            s += &format!(
                "\n---- {} (port {}) ----\n{}",
                inst.name,
                inst.port,
                tail(&inst.log, 15)
            );
        }
        s
    }

    // ---- set-up -------------------------------------------------------------------------------

    /// `pg_autoctl` as user postgres, with its configuration and state files in our dir.
    fn autoctl(&self) -> Command {
        use std::os::unix::process::CommandExt;
        let d = self.dir.path();
        let mut c = Command::new(PG_AUTOCTL);
        c.uid(self.uid)
            .gid(self.gid)
            .current_dir(d)
            .env("HOME", d)
            .env("XDG_CONFIG_HOME", d.join("xdg/config"))
            .env("XDG_DATA_HOME", d.join("xdg/data"))
            .env("XDG_RUNTIME_DIR", d.join("xdg/run"))
            .stdin(Stdio::null());
        for v in [
            "PGDATA",
            "PGHOST",
            "PGPORT",
            "PGUSER",
            "PGDATABASE",
            "PGOPTIONS",
        ] {
            c.env_remove(v);
        }
        c
    }

    /// Runs one `pg_autoctl` command to its end (bounded), its output appended to `inst`'s
    /// log; panics with the log when it fails.
    async fn autoctl_step(&self, inst: &Instance, args: &[&str]) {
        use std::os::unix::process::CommandExt;
        let log = open_log(&inst.log);
        let mut cmd = self.autoctl();
        cmd.args(args)
            .process_group(0)
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        let mut child = tokio::process::Command::from(cmd)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("{PG_AUTOCTL} starts ({PACKAGES}): {e}"));
        let pid = child.id().expect("pid");
        match tokio::time::timeout(Duration::from_secs(60), child.wait()).await {
            Ok(Ok(s)) if s.success() => {}
            Ok(status) => panic!(
                "pg_autoctl {} ({}): {status:?}\n{}",
                args.join(" "),
                inst.name,
                tail(&inst.log, 30)
            ),
            Err(_) => {
                signal_group(pid, "KILL");
                panic!(
                    "pg_autoctl {} ({}) did not end within 60 s\n{}",
                    args.join(" "),
                    inst.name,
                    tail(&inst.log, 30)
                )
            }
        }
    }

    /// `pg_autoctl run` for `inst`, in a process group of its own.
    fn run_keeper(&self, inst: &Instance) -> Child {
        use std::os::unix::process::CommandExt;
        let log = open_log(&inst.log);
        let pgdata = inst.pgdata.to_str().expect("utf-8 path");
        self.autoctl()
            .args(["run", "--pgdata", pgdata])
            .process_group(0)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{PG_AUTOCTL} run starts ({PACKAGES}): {e}"))
    }

    /// Postgres instances of their own: pg_autoctl sizes shared_buffers to a quarter of the
    /// machine's memory; a test's formation needs little. `postgresql.auto.conf` wins over
    /// pg_autoctl's include file, and a standby's base backup copies it.
    fn small_memory(&self, inst: &Instance) {
        use std::io::Write;
        let path = inst.pgdata.join("postgresql.auto.conf");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        writeln!(f, "shared_buffers = '128MB'").expect("write postgresql.auto.conf");
    }

    async fn create_monitor(&mut self) {
        let m = &self.monitor;
        let pgdata = m.pgdata.to_str().expect("utf-8 path").to_owned();
        let port = m.port.to_string();
        self.autoctl_step(
            m,
            &[
                "create",
                "monitor",
                "--pgdata",
                &pgdata,
                "--pgport",
                &port,
                "--hostname",
                "127.0.0.1",
                "--auth",
                "trust",
                "--no-ssl",
                "--pgctl",
                PG_CTL,
            ],
        )
        .await;
        // `create monitor` has no --listen; pg_autoctl passes its setting to postgres -h.
        self.autoctl_step(
            m,
            &[
                "config",
                "set",
                "--pgdata",
                &pgdata,
                "postgresql.listen_addresses",
                "127.0.0.1",
            ],
        )
        .await;
        self.small_memory(m);
        let child = self.run_keeper(&self.monitor);
        self.monitor.keeper = Some(child);
        self.wait_monitor().await;
        let mut c = self.monitor_conn().await.expect("the monitor answers");
        for (name, value) in FAST_FAILOVER {
            sqlx::query(&format!("ALTER SYSTEM SET {name} = {value}"))
                .execute(&mut c)
                .await
                .unwrap_or_else(|e| panic!("ALTER SYSTEM SET {name}: {e}"));
        }
        sqlx::query("SELECT pg_reload_conf()")
            .execute(&mut c)
            .await
            .expect("pg_reload_conf");
        let _ = c.close().await;
    }

    async fn create_node(&mut self, i: usize) {
        let n = &self.nodes[i];
        let pgdata = n.pgdata.to_str().expect("utf-8 path").to_owned();
        let port = n.port.to_string();
        let monitor = format!(
            "postgres://autoctl_node@127.0.0.1:{}/pg_auto_failover?sslmode=disable",
            self.monitor.port
        );
        let timeout = NETWORK_PARTITION_TIMEOUT_S.to_string();
        self.autoctl_step(
            n,
            &[
                "create",
                "postgres",
                "--pgdata",
                &pgdata,
                "--pgport",
                &port,
                "--pghost",
                "127.0.0.1",
                "--listen",
                "127.0.0.1",
                "--hostname",
                "127.0.0.1",
                "--name",
                &n.name,
                "--monitor",
                &monitor,
                "--auth",
                "trust",
                "--no-ssl",
                "--pgctl",
                PG_CTL,
                "--username",
                "postgres",
                "--dbname",
                &self.dbname,
                "--replication-quorum",
                "true",
                "--candidate-priority",
                "50",
            ],
        )
        .await;
        self.autoctl_step(
            n,
            &[
                "config",
                "set",
                "--pgdata",
                &pgdata,
                "timeout.network_partition_timeout",
                &timeout,
            ],
        )
        .await;
        if i == 0 {
            // The standby copies it with its base backup.
            self.small_memory(n);
        }
        self.start_node(i);
    }

    async fn wait_monitor(&self) {
        eventually(
            Duration::from_secs(30),
            Duration::from_millis(100),
            || async move { self.monitor_conn().await.map(|_| ()) },
        )
        .await;
    }

    async fn wait_reported(&self, i: usize, state: &str, patience: Duration) {
        let name = &self.nodes[i].name;
        eventually(patience, Duration::from_millis(100), || async move {
            let states = self.states().await?;
            match states.iter().find(|s| &s.name == name) {
                Some(s) if s.reported == state && s.goal == state => Ok(()),
                other => Err(format!("{name} is {other:?}")),
            }
        })
        .await;
    }

    // ---- questions --------------------------------------------------------------------------

    async fn monitor_conn(&self) -> Result<PgConnection, String> {
        connect(&self.monitor_url())
            .await
            .map_err(|e| format!("monitor unreachable: {e}"))
    }

    /// The node the monitor's `get_primary` names (the group's writable node).
    async fn monitor_primary(&self) -> Result<usize, String> {
        let mut c = self.monitor_conn().await?;
        let port: Result<i32, _> =
            sqlx::query_scalar("SELECT primary_port FROM pgautofailover.get_primary('default', 0)")
                .fetch_one(&mut c)
                .await;
        let _ = c.close().await;
        let port = port.map_err(|e| format!("monitor names no primary: {e}"))?;
        self.nodes
            .iter()
            .position(|n| i32::from(n.port) == port)
            .ok_or_else(|| format!("monitor names port {port}, not a node of ours"))
    }

    async fn in_recovery(&self, i: usize) -> Result<bool, String> {
        let name = &self.nodes[i].name;
        let mut c = connect(&self.node_url(i))
            .await
            .map_err(|e| format!("{name}: {e}"))?;
        let r: Result<bool, _> = sqlx::query_scalar("SELECT pg_is_in_recovery()")
            .fetch_one(&mut c)
            .await;
        let _ = c.close().await;
        r.map_err(|e| format!("{name}: {e}"))
    }

    /// The primary's index when the formation is whole, else why not.
    async fn healthy(&self) -> Result<usize, String> {
        let states = self.states().await?;
        let is =
            |s: &NodeState, state: &str| s.reported == state && s.goal == state && s.health == 1;
        let primary = states.iter().position(|s| is(s, "primary"));
        let secondary = states.iter().position(|s| is(s, "secondary"));
        let (Some(p), Some(_)) = (primary, secondary) else {
            return Err(format!("{states:?}"));
        };
        let p = self
            .nodes
            .iter()
            .position(|n| n.name == states[p].name)
            .ok_or("unknown node")?;
        let mut c = connect(&self.node_url(p))
            .await
            .map_err(|e| e.to_string())?;
        let sync: String = sqlx::query_scalar("SHOW synchronous_standby_names")
            .fetch_one(&mut c)
            .await
            .map_err(|e| e.to_string())?;
        let _ = c.close().await;
        if sync.is_empty() {
            return Err(format!("{} has no synchronous standby", self.nodes[p].name));
        }
        Ok(p)
    }
}

impl Drop for Formation {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            kill_instance(n);
        }
        kill_instance(&mut self.monitor);
    }
}

/// One connection, bounded: a node that does not answer is an error, not a hang.
async fn connect(url: &str) -> Result<PgConnection, String> {
    match tokio::time::timeout(Duration::from_secs(3), PgConnection::connect(url)).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!("{url}: no answer within 3 s")),
    }
}

/// Runs `sql` through a libpq URL with `psql` (libpq's own multi-host and
/// target_session_attrs handling, as a client of the formation sees it); returns its output.
pub async fn psql(url: &str, sql: &str) -> Result<String, String> {
    let sep = if url.contains('?') { '&' } else { '?' };
    let out = tokio::process::Command::new("psql")
        .arg(format!("{url}{sep}connect_timeout=2"))
        .args(["-X", "-qtA", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .env_remove("PGOPTIONS")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .unwrap_or_else(|e| panic!("psql is required (Debian package postgresql-client): {e}"));
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// The uid and gid of user `postgres` (/etc/passwd).
fn postgres_user() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").expect("/etc/passwd");
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 3 && f[0] == "postgres").then(|| (f[2].parse().ok(), f[3].parse().ok()))
        })
        .and_then(|(u, g)| Some((u?, g?)))
        .unwrap_or_else(|| panic!("no user postgres (Debian package postgresql; {PACKAGES})"))
}

fn open_log(path: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

fn signal_group(pgid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([format!("-{sig}"), "--".into(), format!("-{pgid}")])
        .stderr(Stdio::null())
        .status();
}

/// The processes working in `pgdata`: a postmaster and all its children change into their
/// data directory, and each child is a process group of its own (so the keeper's group does
/// not hold them).
fn processes_in(pgdata: &Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd == pgdata))
        .collect()
}

/// SIGKILL to the keeper's process group and to every process in the data directory, until
/// none is left (bounded); reaps the keeper.
fn kill_instance(inst: &mut Instance) {
    let keeper = inst.keeper.take();
    // The postmaster and its children first looked up, then all killed at once.
    let pids = processes_in(&inst.pgdata);
    if let Some(k) = &keeper {
        signal_group(k.id(), "KILL");
    }
    for pid in pids {
        signal(pid, "KILL");
    }
    if let Some(mut k) = keeper {
        let _ = k.wait();
    }
    for _ in 0..100 {
        let left = processes_in(&inst.pgdata);
        if left.is_empty() {
            return;
        }
        for pid in left {
            signal(pid, "KILL");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGTERM to the keeper (a clean stop of it and of its Postgres); after 20 s, SIGKILL.
fn stop_instance(inst: &mut Instance) {
    if let Some(k) = &mut inst.keeper {
        signal(k.id(), "TERM");
        for _ in 0..200 {
            if matches!(k.try_wait(), Ok(Some(_))) && processes_in(&inst.pgdata).is_empty() {
                inst.keeper = None;
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    kill_instance(inst);
}
