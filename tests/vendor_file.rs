//! `[server] vendor-file`: an operator's vendor table, the shape of `config/vendors.toml`, merged
//! over the shipped one at start (replace by name, add the rest), its added vendors' templates
//! loaded from `[server] template-dir`; a file that cannot be used stops the start, naming it.

mod common;

use std::path::Path;

use common::{Db, TestServer, SINGLE_SITE};

/// A vendor sipdm does not ship, with a per-phone file `acme{mac}.cfg` and one template.
const ACME: &str = r#"
[[vendor]]
name = "acme"
display_name = "Acme desk phones"
content_type = "text/x-acme"
check_sync_event = "acme-resync"
reboot_event = "acme-reboot"
user_agents = ["AcmePhone"]
phone_files = [{ pattern = "acme{mac}.cfg", kind = "phone" }]
templates.phone = { file = "phone.cfg", format = "kv" }
"#;

const MAC: &str = "00aabb000001";

/// The shipped Yealink entry with another check-sync event and content type.
fn yealink_replaced() -> String {
    let shipped = include_str!("../config/vendors.toml");
    let start = shipped
        .find("[[vendor]]\nname = \"yealink\"")
        .expect("yealink in the shipped table");
    let end = shipped[start + 1..]
        .find("[[vendor]]")
        .map(|i| start + 1 + i)
        .unwrap_or(shipped.len());
    let entry = &shipped[start..end];
    assert!(entry.contains("check_sync_event = \"check-sync;reboot=false\""));
    entry
        .replace(
            "check_sync_event = \"check-sync;reboot=false\"",
            "check_sync_event = \"check-sync\"",
        )
        .replace(
            "content_type = \"text/plain\"",
            "content_type = \"text/x-yealink\"",
        )
}

fn config_with(vendor_file: &Path, template_dir: &Path) -> String {
    SINGLE_SITE.replacen(
        "[server]\n",
        &format!(
            "[server]\nvendor-file = {:?}\ntemplate-dir = {:?}\n",
            vendor_file.display().to_string(),
            template_dir.display().to_string()
        ),
        1,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_vendor_file_adds_and_replaces_vendors() {
    let dir = tempfile::tempdir().unwrap();
    let templates = dir.path().join("templates");
    std::fs::create_dir_all(templates.join("acme")).unwrap();
    std::fs::write(
        templates.join("acme/phone.cfg"),
        "acme.mac = {{ device.mac }}\n",
    )
    .unwrap();
    let vendors = dir.path().join("vendors.toml");
    std::fs::write(&vendors, format!("{ACME}\n{}", yealink_replaced())).unwrap();

    let ts = TestServer::start_with(Db::Sqlite, &config_with(&vendors, &templates)).await;

    // The added vendor: its file name is recognised and its template comes from template-dir.
    let r = ts
        .fetch(&format!("acme{MAC}.cfg"), Some("AcmePhone 1.0"))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/x-acme");
    let body = r.text().await.unwrap();
    assert!(body.contains("acme.mac = "), "{body}");
    assert!(
        body.to_ascii_lowercase().contains(MAC),
        "rendered for the phone: {body}"
    );

    // The replaced vendor: the running service has the operator's entry, not the shipped one.
    let dm = &ts.running.as_ref().unwrap().dm;
    assert_eq!(
        dm.vendors.get("acme").unwrap().check_sync_event,
        "acme-resync"
    );
    let yealink = dm.vendors.get("yealink").unwrap();
    assert_eq!(yealink.check_sync_event, "check-sync");
    assert_eq!(yealink.reboot_event, "check-sync;reboot=true");
    let r = ts
        .fetch(
            "0015650000aa.cfg",
            Some("Yealink SIP-T46S 66.86.0.15 00:15:65:00:00:aa"),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/x-yealink");
    // Vendors the file does not name are the shipped ones.
    assert_eq!(dm.vendors.get("cisco").unwrap().check_sync_event, "resync");
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_vendor_file_stops_the_start_naming_file_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let templates = dir.path().join("templates");
    std::fs::create_dir_all(&templates).unwrap();
    let db = common::TestDb::new(Db::Sqlite).await;
    let cases = [
        ("missing.toml", None, "missing.toml"),
        (
            "syntax.toml",
            Some("[[vendor]\nname = ".to_owned()),
            "syntax.toml",
        ),
        (
            "badname.toml",
            Some(ACME.replace("name = \"acme\"", "name = \"Acme Corp\"")),
            "name must be lowercase",
        ),
        (
            // A kind whose template is in neither template-dir nor the shipped templates.
            "notemplate.toml",
            Some(ACME.to_owned()),
            "acme/phone.cfg",
        ),
        (
            // A file name that a shipped vendor serves as another kind (Polycom's settings).
            "clash.toml",
            Some(ACME.replace("acme{mac}.cfg", "{mac}-phone.cfg")),
            "in vendor \"polycom\"",
        ),
    ];
    for (name, text, expect) in cases {
        let path = dir.path().join(name);
        if let Some(t) = text {
            std::fs::write(&path, t).unwrap();
        }
        let mut config =
            sipdm::config::Config::parse(&config_with(&path, &templates), Path::new("test.toml"))
                .expect("valid configuration");
        config.store.url = db.url.clone();
        let err = match sipdm::app::start(config).await {
            Ok(running) => {
                running.stop().await;
                panic!("started with {name}");
            }
            Err(e) => format!("{e:#}"),
        };
        assert!(err.contains(expect), "{name}: {err}");
        if expect != "acme/phone.cfg" {
            assert!(err.contains(name), "{name} is named: {err}");
        }
    }
}
