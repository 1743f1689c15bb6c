//! Provisioning security: a MAC scan is locked out after the configured number of files, and
//! only the configured networks are served.

mod common;

use common::{Db, TestServer};

fn config(extra: &str) -> String {
    format!("{}\n[prov-security]\n{extra}\n", common::SINGLE_SITE)
}

fn client_from(ip: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(std::net::IpAddr::from(ip))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mac_scan_is_locked_out() {
    let ts = TestServer::start_with(
        Db::Sqlite,
        &config("max-files-per-source = 20\nlockout-seconds = 600"),
    )
    .await;
    let mut served = 0;
    let mut locked = 0;
    let mut retry_after = None;
    for _ in 0..1000 {
        let mac: [u8; 6] = rand::random();
        let mac = format!("0004f2{:02x}{:02x}{:02x}", mac[0], mac[1], mac[2]);
        let r = ts.fetch(&format!("{mac}.cfg"), Some("scanner")).await;
        match r.status().as_u16() {
            200 => served += 1,
            429 => {
                locked += 1;
                retry_after = r
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(String::from);
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(served, 20, "the threshold's worth of files, then nothing");
    assert_eq!(locked, 980);
    assert!(retry_after.is_some_and(|s| s.parse::<u64>().unwrap() > 0));
    let (_, devices) = ts.get_json("/devices").await;
    assert_eq!(
        devices.as_array().unwrap().len(),
        20,
        "the locked-out scan recorded nothing more"
    );
    // Another source is not affected.
    let r = client_from([127, 0, 0, 2])
        .get(ts.prov("0004f2000001.cfg"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let metrics = ts
        .http
        .get(format!("{}/metrics", ts.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("sipdm_prov_lockouts_total"), "{metrics}");
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_allowed_networks_are_served() {
    let ts =
        TestServer::start_with(Db::Sqlite, &config("allowed-networks = [\"127.0.0.2/32\"]")).await;
    assert_eq!(
        client_from([127, 0, 0, 1])
            .get(ts.prov("0004f2000001.cfg"))
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        client_from([127, 0, 0, 2])
            .get(ts.prov("0004f2000001.cfg"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let (_, devices) = ts.get_json("/devices").await;
    assert_eq!(
        devices.as_array().unwrap().len(),
        1,
        "the refused request recorded nothing"
    );
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_need_the_phones_credentials_when_auth_is_on() {
    let ts = TestServer::start_with(
        Db::Sqlite,
        &config("http-auth = \"basic\"\nmax-auth-failures = 5"),
    )
    .await;
    let url = ts.prov("0004f2000001.cfg");
    let r = ts.http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Basic"));
    let (_, creds) = ts.get_json("/devices/0004f2000001/http-credentials").await;
    let (user, password) = (
        creds["user"].as_str().unwrap().to_owned(),
        creds["password"].as_str().unwrap().to_owned(),
    );
    // Another phone's credentials do not open this phone's file.
    let (_, other) = ts.get_json("/devices/0004f2000002/http-credentials").await;
    let r = ts
        .http
        .get(&url)
        .basic_auth(other["user"].as_str().unwrap(), other["password"].as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = ts
        .http
        .get(&url)
        .basic_auth(&user, Some(&password))
        .header("User-Agent", "PolycomVVX-VVX_450-UA/6.3.0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // {mac}.cfg is the phone's master: it names the settings file, protected the same way.
    let master = r.text().await.unwrap();
    assert!(
        master.contains("CONFIG_FILES=\"0004f2000001-phone.cfg\""),
        "{master}"
    );
    let settings = ts.prov("0004f2000001-phone.cfg");
    let r = ts.http.get(&settings).send().await.unwrap();
    assert_eq!(r.status(), 401, "the settings file without credentials");
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Basic"));
    let r = ts
        .http
        .get(&settings)
        .basic_auth(other["user"].as_str().unwrap(), other["password"].as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "the settings file with another phone's");
    let r = ts
        .http
        .get(&settings)
        .basic_auth(&user, Some(&password))
        .header("User-Agent", "PolycomVVX-VVX_450-UA/6.3.0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    assert!(body.contains("gcti_provisioning"), "{body}");
    // Common files carry no secrets and need none.
    assert_eq!(
        ts.http
            .get(ts.prov("000000000000.cfg"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // Guessing passwords locks the source out.
    let mut statuses = Vec::new();
    for i in 0..8 {
        let r = ts
            .http
            .get(&url)
            .basic_auth(&user, Some(format!("guess{i}")))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    let r = ts
        .http
        .get(&url)
        .basic_auth(&user, Some(&password))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        429,
        "locked out even with the right password now"
    );
    ts.stop().await;
}

/// Wrong credentials count per (source, MAC): the phone guessed at is refused from that
/// address, its neighbours behind the same NAT are not; many MACs guessed from one address
/// lock the address out; a trusted network never is as a whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_lock_out_the_phone_not_its_neighbours() {
    async fn status(ts: &TestServer, mac: &str, user: &str, password: &str) -> u16 {
        ts.http
            .get(ts.prov(&format!("{mac}.cfg")))
            .basic_auth(user, Some(password))
            .header("User-Agent", "PolycomVVX-VVX_450-UA/6.3.0")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
    async fn own(ts: &TestServer, mac: &str) -> (String, String) {
        let (_, c) = ts
            .get_json(&format!("/devices/{mac}/http-credentials"))
            .await;
        (
            c["user"].as_str().unwrap().to_owned(),
            c["password"].as_str().unwrap().to_owned(),
        )
    }
    for trusted in [false, true] {
        let extra =
            format!(
            "http-auth = \"basic\"\nmax-auth-failures = 3\nmax-auth-failures-per-source = 6\n{}",
            if trusted { "trusted-networks = [\"127.0.0.0/8\"]\n" } else { "" }
        );
        let ts = TestServer::start_with(Db::Sqlite, &config(&extra)).await;
        let (u1, _) = own(&ts, "0004f2000001").await;
        for i in 0..3 {
            assert_eq!(
                status(&ts, "0004f2000001", &u1, &format!("guess{i}")).await,
                401
            );
        }
        let (u1, p1) = own(&ts, "0004f2000001").await;
        assert_eq!(
            status(&ts, "0004f2000001", &u1, &p1).await,
            429,
            "the guessed phone"
        );
        let (u2, p2) = own(&ts, "0004f2000002").await;
        assert_eq!(
            status(&ts, "0004f2000002", &u2, &p2).await,
            200,
            "its neighbour"
        );
        // Three more phones guessed at once each: six failures from this address in all.
        for n in 3..6 {
            let mac = format!("0004f200000{n}");
            let (u, _) = own(&ts, &mac).await;
            status(&ts, &mac, &u, "guess").await;
        }
        let expected = if trusted { 200 } else { 429 };
        assert_eq!(
            status(&ts, "0004f2000002", &u2, &p2).await,
            expected,
            "after failures for many phones (trusted network: {trusted})"
        );
        ts.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_key_hides_the_files() {
    let ts = TestServer::start_with(Db::Sqlite, &config("url-key = \"k3y\"")).await;
    assert_eq!(ts.fetch("0004f2000001.cfg", None).await.status(), 404);
    assert_eq!(ts.fetch("wrong/0004f2000001.cfg", None).await.status(), 404);
    assert_eq!(ts.fetch("k3y/0004f2000001.cfg", None).await.status(), 200);
    let (_, devices) = ts.get_json("/devices").await;
    assert_eq!(
        devices.as_array().unwrap().len(),
        1,
        "only the keyed request reached the store"
    );
    ts.stop().await;
}
