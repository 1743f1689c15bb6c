//! `testbed/deploy pair` brings the sample pair up on loopback (two nodes, Kamailio as SIPS1
//! with the shipped recipe, the DNS zone, a database of its own), drives its phone fleets to
//! the end, and `--down` stops every process it started. Where the phones ended registered is
//! read from Kamailio's `location` table. Uses 127.0.0.2, .11, .12 and .31 (ports 5353, 28080,
//! 25060: not the guide's 8080/5060, which other tests' sipp may hold on 0.0.0.0) and the
//! shared PostgreSQL's database `sipdm_deploy_pair`, so no other run of the script may overlap
//! it. Needs Kamailio (packages kamailio, kamailio-postgres-modules; the script installs them
//! when missing and it may).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The phone simulator and the DNS zone server of this workspace (another package's
/// binaries: built here, which is a no-op when the workspace's tests already built them).
fn testbed_bins() -> (PathBuf, PathBuf) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "-q",
            "-p",
            "testbed",
            "--bin",
            "phone-sim",
            "--bin",
            "dns-zone",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building phone-sim and dns-zone");
    let dir = Path::new(env!("CARGO_BIN_EXE_sipdm"));
    (
        dir.with_file_name("phone-sim"),
        dir.with_file_name("dns-zone"),
    )
}

/// Runs the script with `args`, bounded by `limit`; returns (success, output).
fn deploy(
    args: &[&str],
    state: &Path,
    bins: &(PathBuf, PathBuf),
    limit: Duration,
) -> (bool, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("testbed/deploy");
    let out_path = state.join("deploy.out");
    let out = std::fs::File::create(&out_path).expect("output file");
    let mut child = Command::new("bash")
        .arg(&script)
        .args(args)
        .env("DEPLOY_STATE", state)
        .env("DEPLOY_ZT", "10")
        .env("DEPLOY_IVR", "20")
        .env("SIPDM_BIN", env!("CARGO_BIN_EXE_sipdm"))
        .env("PHONE_SIM_BIN", &bins.0)
        .env("DNS_ZONE_BIN", &bins.1)
        .env("DEPLOY_HTTP_PORT", "28080")
        .env("DEPLOY_SIP_PORT", "25060")
        .env("DEPLOY_PG", PG)
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("output"))
        .stderr(out)
        .spawn()
        .expect("bash runs");
    let mut status = None;
    for _ in 0..(limit.as_millis() / 100) {
        if let Ok(Some(s)) = child.try_wait() {
            status = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let text = std::fs::read_to_string(&out_path).unwrap_or_default();
    (status.is_some_and(|s| s.success()), text)
}

/// The shared PostgreSQL server the script uses (its `DEPLOY_PG`).
const PG: &str = "postgres://postgres@127.0.0.1:5432";

/// `username` of every row of Kamailio's `location` table in database `db`, sorted.
fn locations(db: &str) -> Vec<String> {
    let out = Command::new("psql")
        .arg(format!("{PG}/{db}"))
        .args([
            "-qtA",
            "-c",
            "SELECT username FROM location ORDER BY username",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "reading {db}'s location table: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn alive(pid: &str) -> bool {
    Path::new("/proc").join(pid.trim()).exists()
}

#[test]
fn deploy_pair_up_and_down() {
    let bins = testbed_bins();
    let state = tempfile::tempdir().expect("state dir");
    let (ok, out) = deploy(&["pair"], state.path(), &bins, Duration::from_secs(120));
    // Whatever happened, collect what it started, then stop it.
    let pids: Vec<(String, String)> = std::fs::read_dir(state.path())
        .expect("state dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "pid"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read_to_string(e.path()).unwrap_or_default(),
            )
        })
        .collect();
    let (down_ok, down_out) = deploy(&["--down"], state.path(), &bins, Duration::from_secs(30));
    assert!(ok, "testbed/deploy pair:\n{out}");
    assert!(
        out.contains("fs1 = 127.0.0.11 127.0.0.12"),
        "the zone names both nodes:\n{out}"
    );
    let mut names: Vec<&str> = pids.iter().map(|(n, _)| n.as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        ["FS-DM.pid", "FS-VM.pid", "SIPS1.pid", "dns-zone.pid"],
        "what it started:\n{out}"
    );
    assert!(
        out.contains("phones: 10  provisioned: 10  failed: 0"),
        "zero touch:\n{out}"
    );
    assert!(
        out.contains("phones: 20  provisioned: 20  failed: 0"),
        "IVR:\n{out}"
    );
    assert!(out.contains("summary (pair): 30 devices assigned"), "{out}");
    assert!(
        out.contains("SIPS1 (127.0.0.31, Kamailio): 30 DN registrations"),
        "{out}"
    );
    // Kamailio's location table: the 10 zero-touch DNs and the 20 keyed through the IVR, each
    // registered once, and no provisioning identity (dm-<mac>) left behind.
    let expected: Vec<String> = (1000..1010)
        .chain(1500..1520)
        .map(|d| d.to_string())
        .collect();
    assert_eq!(
        locations("sipdm_deploy_pair"),
        expected,
        "Kamailio's location table:\n{out}"
    );
    assert!(down_ok, "--down:\n{down_out}");
    for (name, pid) in &pids {
        assert!(!alive(pid), "{name} ({pid}) still runs after --down");
    }
}
