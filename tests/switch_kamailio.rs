//! Kamailio as the site's switch, with the shipped configuration
//! (`config/switch/kamailio/kamailio.cfg`), authenticating phones from sipdm's store through
//! the `switch_subscriber` view: a DN registers with its password; an unassigned phone
//! registers as `gcti_provisioning` with its own `dm-<mac>` credentials and gets an AOR of its
//! own, which a NOTIFY from sipdm's address reaches; its call to the IVR reaches sipdm with
//! its authenticated identity asserted and a forged one removed.
//!
//! sipdm's trusted address is, here, a UDP socket of the test's own standing in for sipdm's SIP
//! side, so that the test writes the NOTIFY and reads the answers itself.

mod common;

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::kamailio::{request, Kamailio, KamailioParams, SwitchDb};
use common::trunk::MAC;
use common::{free_port, hex_id, sipp, TestServer};
use serde_json::json;

const REALM: &str = "sips1.test";

fn config(switch_port: u16) -> String {
    format!(
        r#"
[server]
http = "127.0.0.1:0"
sip = ["127.0.0.1:0"]
admin-token = "test-token"
secret = "test-secret"

[ivr]
number = "8800"

[[sites]]
name = "site1"
fs_url = "http://fs1:8080/fs"
sip-servers = ["127.0.0.1:{switch_port}"]

[[switches]]
name = "SIPS1"
site = "site1"
address = "127.0.0.1:{switch_port}"
realm = "{REALM}"
dn-ranges = ["1000-1999"]

[[trunks]]
name = "ivr"
prefix = "88"
contact = "builtin:ivr"
"#
    )
}

/// The `dm-<mac>` credentials phone [`MAC`] finds in its default files, fetched as a Polycom
/// would: its `{mac}.cfg` first (which makes it a known device), then the settings file that
/// names them when that is a separate file.
async fn device_credentials(ts: &TestServer) -> (String, String) {
    const UA: &str = "PolycomVVX-VVX_450-UA/6.3.0.14929";
    let attr = |file: &str, name: &str| {
        let at = file.find(&format!("{name}=\""))?;
        let rest = &file[at + name.len() + 2..];
        Some(rest[..rest.find('"')?].to_owned())
    };
    let mut seen = String::new();
    for file in [format!("{MAC}.cfg"), format!("{MAC}-phone.cfg")] {
        let r = ts.fetch(&file, Some(UA)).await;
        if !r.status().is_success() {
            continue;
        }
        let text = r.text().await.unwrap();
        if let (Some(user), Some(pw)) = (
            attr(&text, "reg.1.auth.userId"),
            attr(&text, "reg.1.auth.password"),
        ) {
            return (user, pw);
        }
        seen.push_str(&text);
    }
    panic!("no reg.1.auth.userId/password in the default files:\n{seen}");
}

/// sipdm and Kamailio on one fresh database; `sipdm` is the address Kamailio trusts.
struct Site {
    kamailio: Kamailio,
    ts: TestServer,
    sipdm: UdpSocket,
    db: SwitchDb,
}

impl Site {
    async fn start() -> Site {
        let db = SwitchDb::create().await;
        let port = free_port();
        let ts = db.start_sipdm(&config(port)).await;
        let sipdm = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let kamailio = Kamailio::start(
            &db,
            &KamailioParams {
                realm: REALM.into(),
                sipdm: sipdm.local_addr().expect("addr"),
                ivr_prefix: "88".into(),
                port,
            },
        );
        Site {
            kamailio,
            ts,
            sipdm,
            db,
        }
    }

    /// A scenario of testbed/sipp.
    fn scenario(&self, name: &str) -> String {
        let p: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testbed/sipp")
            .join(name);
        p.to_str().expect("utf-8").to_owned()
    }

    /// sipp registers `to_user` with auth user `au` and password `pw`: whether it got a 200.
    async fn register(&self, to_user: &str, au: &str, pw: &str) -> (bool, String) {
        let (target, scenario) = (self.kamailio.addr, self.scenario("register_once.xml"));
        let args: Vec<String> = ["-s", to_user, "-au", au, "-ap", pw]
            .iter()
            .map(|s| s.to_string())
            .collect();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            sipp(target, &scenario, "u1", &args)
        })
        .await
        .unwrap()
    }

    /// The NOTIFY (check-sync) sipdm sends through the switch to `user`'s AOR: the final
    /// status.
    fn notify(&self, user: &str) -> Option<u16> {
        let me = self.sipdm.local_addr().expect("addr");
        let id = hex_id();
        let text = format!(
            "NOTIFY sip:{user}@{kam} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {me};branch=z9hG4bK{id};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:sipdm@{me}>;tag={id}\r\n\
             To: <sip:{user}@{kam}>\r\n\
             Call-ID: {id}@sipdm\r\n\
             CSeq: 1 NOTIFY\r\n\
             Event: check-sync\r\n\
             Subscription-State: terminated\r\n\
             Content-Length: 0\r\n\r\n",
            kam = self.kamailio.addr
        );
        request(
            &self.sipdm,
            self.kamailio.addr,
            &text,
            Duration::from_secs(8),
        )
        .map(|(c, _)| c)
    }

    async fn stop(self) {
        drop(self.kamailio);
        self.ts.stop().await;
        drop(self.db);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dn_registers_to_kamailio_with_its_password() {
    let site = Site::start().await;
    let r = site
        .ts
        .post("/dns", json!({"number": "1000", "password": "pw1000"}))
        .await;
    assert!(r.status().is_success(), "create DN: {}", r.status());

    // A wrong password: challenged again, never bound.
    let (ok, out) = site.register("1000", "1000", "wrong").await;
    assert!(!ok, "a wrong password registered:\n{out}");
    assert!(
        site.db.locations().await.iter().all(|(u, _)| u != "1000"),
        "a binding after a wrong password"
    );

    // The DN's password: bound, in Kamailio's location table.
    let (ok, out) = site.register("1000", "1000", "pw1000").await;
    assert!(
        ok,
        "DN 1000 did not register:\n{out}\n{}",
        site.kamailio.log()
    );
    let contacts = site.db.wait_location("1000", Duration::from_secs(3)).await;
    assert_eq!(contacts.len(), 1, "{:?}", site.db.locations().await);

    // Another DN's auth user cannot register 1000.
    let r = site
        .ts
        .post("/dns", json!({"number": "1001", "password": "pw1001"}))
        .await;
    assert!(r.status().is_success());
    let (ok, out) = site.register("1000", "1001", "pw1001").await;
    assert!(!ok, "1001's credentials registered 1000:\n{out}");
    assert!(out.contains("403"), "{out}");
    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unassigned_phone_registers_as_its_own_aor_and_gets_check_sync() {
    let site = Site::start().await;
    // Its default file first: that is what puts its dm-<mac> row in the view.
    let (user, password) = device_credentials(&site.ts).await;
    assert_eq!(user, format!("dm-{MAC}"));

    // Not registered yet: a NOTIFY from sipdm is 404.
    assert_eq!(site.notify(&user), Some(404));

    // A provisioning phone must name a device.
    let r = site
        .ts
        .post("/dns", json!({"number": "1000", "password": "pw1000"}))
        .await;
    assert!(r.status().is_success());
    let (ok, out) = site.register("gcti_provisioning", "1000", "pw1000").await;
    assert!(!ok, "a DN registered as gcti_provisioning:\n{out}");
    assert!(out.contains("403"), "{out}");

    // Registers as gcti_provisioning with its own credentials, and waits for a NOTIFY.
    let (target, scenario) = (site.kamailio.addr, site.scenario("register_wait.xml"));
    let ooc = site.scenario("switch_notify_ooc.xml");
    let (u, p) = (user.clone(), password.clone());
    let phone = tokio::task::spawn_blocking(move || {
        sipp(
            target,
            &scenario,
            "u1",
            &[
                "-s",
                "gcti_provisioning",
                "-au",
                &u,
                "-ap",
                &p,
                "-oocsf",
                &ooc,
            ],
        )
    });
    let contacts = site.db.wait_location(&user, Duration::from_secs(10)).await;
    assert_eq!(
        contacts.len(),
        1,
        "no binding for {user}: {:?}\n{}",
        site.db.locations().await,
        site.kamailio.log()
    );
    assert!(
        site.db
            .locations()
            .await
            .iter()
            .all(|(u, _)| u != "gcti_provisioning"),
        "bound under the shared user"
    );

    // The check-sync from sipdm's address reaches the phone, whose 200 comes back.
    assert_eq!(site.notify(&user), Some(200), "{}", site.kamailio.log());
    let (ok, out) = phone.await.unwrap();
    assert!(ok, "the phone's registration failed:\n{out}");
    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ivr_call_reaches_sipdm_with_the_authenticated_identity_asserted() {
    let site = Site::start().await;
    let (user, password) = device_credentials(&site.ts).await;
    // The phone calls 8800 as gcti_provisioning with its own credentials, and a forged
    // P-Asserted-Identity of its own.
    let (target, scenario) = (site.kamailio.addr, site.scenario("switch_ivr_call.xml"));
    let caller = tokio::task::spawn_blocking(move || {
        sipp(
            target,
            &scenario,
            "u1",
            &["-s", "8800", "-au", &user, "-ap", &password],
        )
    });
    // sipdm's side: the relayed INVITE, answered 480.
    let mut buf = vec![0u8; 65536];
    site.sipdm
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let (len, from) = site
        .sipdm
        .recv_from(&mut buf)
        .unwrap_or_else(|e| panic!("no INVITE at sipdm ({e}):\n{}", site.kamailio.log()));
    let invite = String::from_utf8_lossy(&buf[..len]).into_owned();
    assert!(invite.starts_with("INVITE sip:8800@"), "{invite}");
    let pai: Vec<&str> = invite
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("p-asserted-identity:"))
        .collect();
    assert_eq!(
        pai,
        [format!("P-Asserted-Identity: <sip:dm-{MAC}@{REALM}>").as_str()],
        "{invite}"
    );
    assert!(
        invite.lines().any(|l| l.starts_with("Record-Route:")),
        "{invite}"
    );
    let copy =
        |name: &str| -> Vec<&str> { invite.lines().filter(|l| l.starts_with(name)).collect() };
    let mut reply = String::from("SIP/2.0 480 Temporarily Unavailable\r\n");
    for l in copy("Via:")
        .into_iter()
        .chain(copy("From:"))
        .chain(copy("Call-ID:"))
        .chain(copy("CSeq:"))
    {
        reply.push_str(l.trim_end());
        reply.push_str("\r\n");
    }
    for l in copy("To:") {
        reply.push_str(&format!("{};tag=ivr\r\n", l.trim_end()));
    }
    reply.push_str("Content-Length: 0\r\n\r\n");
    site.sipdm.send_to(reply.as_bytes(), from).expect("send");
    let (ok, out) = caller.await.unwrap();
    assert!(
        ok,
        "the caller did not get sipdm's 480:\n{out}\n{}",
        site.kamailio.log()
    );
    site.stop().await;
}
