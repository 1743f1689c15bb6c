//! The CLI over the same service layer, against a SQLite file.

use std::process::Command;

fn sipdm(config: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sipdm"))
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn device_lifecycle_and_import() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sipdm.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\nurl = \"sqlite://{}\"\n",
            dir.path().join("s.db").display()
        ),
    )
    .unwrap();

    assert!(sipdm(&config, &["dn", "add", "1000", "--password", "pw1000"]).0);
    assert!(sipdm(&config, &["dn", "add", "1001", "--password", "pw1001"]).0);
    let (ok, _, err) = sipdm(&config, &["dn", "add", "1000", "--password", "again"]);
    assert!(!ok && err.contains("already exists"), "{err}");

    let dns = dir.path().join("dns.csv");
    std::fs::write(&dns, "number,password\n2000,pw2000\n2001,pw2001\n").unwrap();
    let (ok, out, err) = sipdm(&config, &["dn", "import", dns.to_str().unwrap()]);
    assert!(ok && out.contains("imported 2"), "{out}{err}");
    std::fs::write(&dns, "2002,pw\n2000,dup\n").unwrap();
    let (ok, _, err) = sipdm(&config, &["dn", "import", dns.to_str().unwrap()]);
    assert!(!ok && err.contains("dns.csv:2"), "{err}");

    let (ok, out, err) = sipdm(
        &config,
        &["device", "add", "00:04:F2:00:00:01", "--model", "VVX 450"],
    );
    assert!(ok, "{err}");
    assert!(out.contains("0004f2000001"), "{out}");
    let (ok, _, err) = sipdm(&config, &["device", "add", "garbage"]);
    assert!(!ok && err.contains("not a MAC"), "{err}");

    assert!(sipdm(&config, &["device", "assign", "0004f2000001", "1000"]).0);
    let (_, out, _) = sipdm(&config, &["device", "list"]);
    let line = out.lines().find(|l| l.starts_with("0004f2000001")).unwrap();
    assert!(
        line.contains("1000") && line.contains("assigned") && line.contains("polycom"),
        "{line}"
    );
    assert!(sipdm(&config, &["device", "unassign", "0004f2000001"]).0);
    let (_, out, _) = sipdm(&config, &["device", "list", "--search", "0004f2000001"]);
    assert!(out.contains("unassigned"), "{out}");

    let bad = dir.path().join("bad.csv");
    std::fs::write(
        &bad,
        "mac,model,profile,dn\n0004f2000002,VVX 450,,1001\nnot-a-mac,VVX 450,,\n",
    )
    .unwrap();
    let (ok, _, err) = sipdm(&config, &["import", bad.to_str().unwrap()]);
    assert!(!ok, "a bad line fails the import");
    assert!(err.contains("bad.csv:3"), "names the line: {err}");
    let (_, out, _) = sipdm(&config, &["device", "list"]);
    assert!(!out.contains("0004f2000002"), "nothing imported:\n{out}");

    let good = dir.path().join("good.csv");
    std::fs::write(&good, "0004f2000002,VVX 450,,1001\n0004f2000003,T46S,,\n").unwrap();
    let (ok, out, err) = sipdm(&config, &["import", good.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("imported 2"), "{out}");
}

/// `sipdm dn add` without `--authenticate-requests` gives the DN `[auth]
/// authenticate-requests`; an explicit value is checked, and a wrong one is an error that
/// names the valid values and writes nothing.
#[test]
fn dn_add_takes_the_configured_authenticate_requests() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sipdm.toml");
    let db = dir.path().join("s.db");
    std::fs::write(
        &config,
        format!(
            "[store]\nurl = \"sqlite://{}\"\n[auth]\nauthenticate-requests = \"invite\"\n",
            db.display()
        ),
    )
    .unwrap();
    let (ok, _, err) = sipdm(&config, &["dn", "add", "1000", "--password", "pw"]);
    assert!(ok, "{err}");
    let (ok, _, err) = sipdm(
        &config,
        &[
            "dn",
            "add",
            "1001",
            "--password",
            "pw",
            "--authenticate-requests",
            "register",
        ],
    );
    assert!(ok, "{err}");
    let (ok, _, err) = sipdm(
        &config,
        &[
            "dn",
            "add",
            "1002",
            "--password",
            "pw",
            "--authenticate-requests",
            "",
        ],
    );
    assert!(ok, "{err}");
    let (ok, _, err) = sipdm(
        &config,
        &[
            "dn",
            "add",
            "1003",
            "--password",
            "pw",
            "--authenticate-requests",
            "options",
        ],
    );
    assert!(!ok, "options accepted");
    assert!(
        err.contains("authenticate-requests") && err.contains("options"),
        "{err}"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let got: Vec<(String, String)> = rt.block_on(async {
        let store = sipdm::store::Store::open(&format!("sqlite://{}", db.display()), 1)
            .await
            .unwrap();
        store
            .dns()
            .await
            .unwrap()
            .into_iter()
            .map(|d| (d.number, d.authenticate_requests))
            .collect()
    });
    assert_eq!(
        got,
        [
            ("1000".to_owned(), "invite".to_owned()),
            ("1001".to_owned(), "register".to_owned()),
            ("1002".to_owned(), String::new()),
        ]
    );
}
