//! Every shipped example configuration is valid, and `sipdm config check` says so.

use std::path::Path;

#[test]
fn shipped_examples_validate() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            sipdm::config::Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_sipdm"))
                .args(["config", "check"])
                .arg(&path)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            n += 1;
        }
    }
    assert_eq!(
        n, 5,
        "single site, two multi-site, two business-continuity files"
    );
}

#[test]
fn config_check_names_a_bad_key_and_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[dm]\nfs_url = \"http://fs1:8080/fs\"\nfsurl = \"oops\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sipdm"))
        .args(["config", "check"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("fsurl") && err.contains("line 3"), "{err}");
}
