//! The SQL contract with the site's switch: the view `switch_subscriber (username, domain, ha1,
//! ha1b)` carries every DN and every device's `dm-<mac>` for every switch realm, as HA1s and
//! never a plain password, on SQLite and PostgreSQL.

mod common;

use common::{Db, TestDb};
use sipdm::credentials::DeviceCredentials;
use sipdm::store::model::{Dn, NewDevice};
use sipdm::store::{Store, SwitchSubscriber};

fn md5_hex(s: &str) -> String {
    sip::auth::Algorithm::Md5.hash(&[s])
}

fn dn(n: &str, password: &str) -> Dn {
    Dn {
        number: n.into(),
        password: password.into(),
        switch: None,
        authenticate_requests: "register,invite".into(),
        display_name: None,
    }
}

/// The view's column names, read from the database's own catalogue.
async fn view_columns(store_url: &str, db: Db) -> Vec<String> {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(store_url).await.expect("connect");
    let rows: Vec<String> = match db {
        Db::Sqlite => sqlx::query_scalar("SELECT name FROM pragma_table_info('switch_subscriber')")
            .fetch_all(&pool)
            .await
            .expect("columns"),
        Db::Postgres => sqlx::query_scalar(
            "SELECT CAST(column_name AS TEXT) FROM information_schema.columns \
             WHERE table_name = 'switch_subscriber' AND table_schema = current_schema() \
             ORDER BY ordinal_position",
        )
        .fetch_all(&pool)
        .await
        .expect("columns"),
    };
    pool.close().await;
    rows
}

async fn view_returns_ha1_for_dns_and_devices(db: Db) {
    let tdb = TestDb::new(db).await;
    let store = Store::open(&tdb.url, 4).await.expect("store opens");
    for (name, site) in [("SIPS1", "site1"), ("SIPS2", "site1")] {
        store
            .upsert_site(&sipdm::store::model::Site {
                name: site.into(),
                fs_url: None,
                sip_servers: String::new(),
            })
            .await
            .unwrap();
        store
            .upsert_switch(&sipdm::store::model::Switch {
                name: name.into(),
                site: site.into(),
                address: format!("{}.example.test:5060", name.to_lowercase()),
                dn_ranges: String::new(),
                peer: None,
            })
            .await
            .unwrap();
    }
    let creds = DeviceCredentials::new(b"the-secret");
    let mac = "0004f2000abc";
    store.create_dn(&dn("1000", "pw1000")).await.unwrap();
    store
        .create_device(
            &NewDevice {
                mac: mac.into(),
                ..Default::default()
            },
            "test",
        )
        .await
        .unwrap();
    let realms = [
        ("SIPS1".to_owned(), "sips1.example.test".to_owned()),
        ("SIPS2".to_owned(), "corp.example".to_owned()),
    ];
    let sync = store
        .sync_switch_credentials(&realms, &creds)
        .await
        .unwrap();
    assert_eq!(sync.realms, 2);

    // A DN, at each realm.
    for realm in ["sips1.example.test", "corp.example"] {
        let row = store.switch_subscriber("1000", realm).await.unwrap();
        assert_eq!(
            row,
            Some(SwitchSubscriber {
                username: "1000".into(),
                domain: realm.into(),
                ha1: md5_hex(&format!("1000:{realm}:pw1000")),
                ha1b: md5_hex(&format!("1000@{realm}:{realm}:pw1000")),
            })
        );
    }
    // A device, as dm-<mac> with its derived password.
    let user = format!("dm-{mac}");
    let password = creds.password(mac);
    let row = store
        .switch_subscriber(&user, "corp.example")
        .await
        .unwrap()
        .expect("device row");
    assert_eq!(row.ha1, md5_hex(&format!("{user}:corp.example:{password}")));
    assert_eq!(
        row.ha1b,
        md5_hex(&format!("{user}@corp.example:corp.example:{password}"))
    );
    assert_eq!(store.switch_subscriber(&user, "other").await.unwrap(), None);

    // A device seen later gets its rows from the one call the service makes.
    let later = "0004f2000def";
    store
        .create_device(
            &NewDevice {
                mac: later.into(),
                ..Default::default()
            },
            "test",
        )
        .await
        .unwrap();
    store
        .put_device_switch_credentials(&[later.to_owned()], &creds)
        .await
        .unwrap();
    let row = store
        .switch_subscriber(&format!("dm-{later}"), "sips1.example.test")
        .await
        .unwrap()
        .expect("later device row");
    assert_eq!(
        row.ha1,
        md5_hex(&format!(
            "dm-{later}:sips1.example.test:{}",
            creds.password(later)
        ))
    );

    // A DN's new password: never the old HA1 (PostgreSQL computes it live; SQLite drops the
    // row by trigger), the new one after a sync at the latest.
    store.update_dn(&dn("1000", "newpw")).await.unwrap();
    let old = md5_hex("1000:corp.example:pw1000");
    let now = store
        .switch_subscriber("1000", "corp.example")
        .await
        .unwrap();
    assert!(now.as_ref().is_none_or(|r| r.ha1 != old), "{now:?}");
    if db == Db::Postgres {
        assert_eq!(now.map(|r| r.ha1), Some(md5_hex("1000:corp.example:newpw")));
    }
    store
        .sync_switch_credentials(&realms, &creds)
        .await
        .unwrap();
    assert_eq!(
        store
            .switch_subscriber("1000", "corp.example")
            .await
            .unwrap()
            .map(|r| r.ha1),
        Some(md5_hex("1000:corp.example:newpw"))
    );

    // A deleted device loses its rows.
    store.delete_device(later, "test").await.unwrap();
    assert_eq!(
        store
            .switch_subscriber(&format!("dm-{later}"), "sips1.example.test")
            .await
            .unwrap(),
        None
    );

    // The contract's columns, and no password among them.
    let cols = view_columns(&tdb.url, db).await;
    assert_eq!(cols, ["username", "domain", "ha1", "ha1b"]);
    store.close().await;
    tdb.drop_schema().await;
}
on_both_backends!(view_returns_ha1, view_returns_ha1_for_dns_and_devices);

/// A DN made through the service's doors (the API, its CSV import) is on the switch at once,
/// on both backends (on SQLite sipdm writes its row; PostgreSQL's view computes it).
async fn dns_made_through_the_api_reach_the_switch(db: Db) {
    let ts = common::TestServer::start(db).await;
    let r = ts
        .post(
            "/dns",
            serde_json::json!({"number": "1500", "password": "pw1500"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let r = ts
        .http
        .post(ts.api("/dns/import"))
        .bearer_auth(&ts.token)
        .body("1501,pw1501\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let store = Store::open(&ts.db.url, 2).await.expect("store opens");
    // SINGLE_SITE's switch SIPS1 at sips1.example.test: its realm is that host.
    for (dn, pw) in [("1500", "pw1500"), ("1501", "pw1501")] {
        let row = store
            .switch_subscriber(dn, "sips1.example.test")
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{dn} is not in switch_subscriber"));
        assert_eq!(row, SwitchSubscriber::compute(dn, "sips1.example.test", pw));
    }
    store.close().await;
    ts.stop().await;
}

on_both_backends!(
    dns_through_the_api,
    dns_made_through_the_api_reach_the_switch
);
