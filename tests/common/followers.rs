//! Simulated phones that obey their files and follow every check-sync (re-fetch, register
//! again), as the fleet-operation tests (campaigns, the console, the CLI) need them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use testbed::phone::{Mac, Phone, PhoneOptions, PhoneSpec, Vendor};
use tokio::sync::{watch, Semaphore};

use super::TestServer;

/// What a follower saw: its phone, and when each check-sync arrived.
pub struct Followed {
    pub mac: String,
    pub dn: String,
    pub notifies: Vec<Instant>,
    /// The phone's registration after its last re-fetch succeeded (digest and all).
    pub reregistered: usize,
    pub last_error: Option<String>,
}

/// A registered phone that, like a real one, answers every check-sync by re-fetching its
/// files and registering again with what they say, until `stop`. A `deaf` phone answers the
/// NOTIFY but never re-fetches (a phone stuck in a call, a firmware that ignores the event).
pub async fn follow(
    mut phone: Phone,
    dn: String,
    deaf: bool,
    mut stop: watch::Receiver<bool>,
) -> Followed {
    let mut out = Followed {
        mac: phone.spec().mac.plain(),
        dn,
        notifies: Vec::new(),
        reregistered: 0,
        last_error: None,
    };
    loop {
        let next = out.notifies.len() + 1;
        let got = tokio::select! {
            got = phone.wait_check_sync(next, Duration::from_secs(3600)) => Some(got),
            _ = stopped(&mut stop) => None,
        };
        let n = match got {
            None => break,
            Some(Ok(n)) => n,
            Some(Err(e)) => {
                out.last_error = Some(e.to_string());
                break;
            }
        };
        out.notifies.push(n.at);
        if deaf {
            continue;
        }
        match phone.fetch_config().await {
            Ok(Some(cfg)) => match phone.register(&cfg).await {
                Ok(_) => out.reregistered += 1,
                Err(e) => out.last_error = Some(format!("register: {e}")),
            },
            Ok(None) => out.last_error = Some("re-fetch: nothing changed".into()),
            Err(e) => out.last_error = Some(format!("re-fetch: {e}")),
        }
    }
    phone.shutdown();
    out
}

/// Resolves once `stop` is set (the guard `wait_for` returns is not `Send`).
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await.map(|_| ());
}

/// `count` Yealink phones with DNs 1000.., on `profile`: created through the CSV import,
/// booted (fetch, register as their DN) and following check-syncs. The first `deaf` of them
/// (by MAC) never re-fetch.
pub async fn fleet(
    ts: &TestServer,
    count: u32,
    profile: &str,
    deaf: u32,
    stop: &watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<Followed>> {
    let dns: String = (0..count)
        .map(|i| format!("{},pw-{}\n", 1000 + i, 1000 + i))
        .collect();
    let r = ts
        .http
        .post(ts.api("/dns/import"))
        .bearer_auth(&ts.token)
        .body(dns)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let devices: String = (0..count)
        .map(|i| {
            format!(
                "{},T46S,{profile},{}\n",
                Mac::generated(Vendor::Yealink, i + 1).plain(),
                1000 + i
            )
        })
        .collect();
    let r = ts
        .http
        .post(ts.api("/import"))
        .bearer_auth(&ts.token)
        .body(devices)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    let prov_url = format!("{}/fs/dm/prov", ts.base);
    let booting = Arc::new(Semaphore::new(50));
    let mut boots = Vec::new();
    for i in 0..count {
        let spec = PhoneSpec {
            mac: Mac::generated(Vendor::Yealink, i + 1),
            vendor: Vendor::Yealink,
            prov_url: prov_url.clone(),
            fallback_prov_urls: Vec::new(),
            local_ip: [127, 0, 0, 1].into(),
        };
        let booting = booting.clone();
        boots.push(tokio::spawn(async move {
            let _slot = booting.acquire().await.unwrap();
            let mut phone = Phone::with_options(spec, PhoneOptions::default())
                .await
                .expect("phone starts");
            let p = phone.run_zero_touch().await.expect("phone boots");
            assert_eq!(p.config.user, (1000 + i).to_string());
            phone
        }));
    }
    let mut followers = Vec::new();
    for (i, boot) in boots.into_iter().enumerate() {
        let phone = boot.await.unwrap();
        let dn = (1000 + i).to_string();
        followers.push(tokio::spawn(follow(
            phone,
            dn,
            (i as u32) < deaf,
            stop.clone(),
        )));
    }
    // Every phone's receipt is written (behind the response, within a second).
    super::eventually(
        Duration::from_secs(10),
        Duration::from_millis(100),
        || async {
            let (status, fleet) = ts.get_json("/fleet").await;
            assert_eq!(status, 200, "{fleet}");
            if fleet["with_receipts"] != count {
                return Err(format!("receipts: {fleet}"));
            }
            assert_eq!(fleet["out_of_date"], 0, "{fleet}");
            Ok(())
        },
    )
    .await;
    followers
}

/// Creates profile `name` (device management), for a fleet of its phones.
pub async fn desk_profile(ts: &TestServer, name: &str) {
    let r = ts
        .post(
            "/profiles",
            serde_json::json!({"name": name, "kind": "device-management"}),
        )
        .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
}

/// The change a fleet test makes: profile `name`'s `ntp_server` set to `ntp` (it is in every
/// per-phone file, so each of its phones is out of date).
pub async fn set_ntp(ts: &TestServer, name: &str, ntp: &str) {
    let params = serde_json::json!({ "ntp_server": ntp }).to_string();
    let r = ts
        .http
        .put(ts.api(&format!("/profiles/{name}")))
        .bearer_auth(&ts.token)
        .json(&serde_json::json!({"name": name, "kind": "device-management", "params": params}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}
