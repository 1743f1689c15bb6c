//! Store behaviour that matters under concurrency and restarts, on SQLite and PostgreSQL.

mod common;

use common::{Db, TestDb};
use sipdm::store::model::{Dn, NewDevice};
use sipdm::store::{Store, StoreError, StoredBinding};

async fn open(db: &TestDb) -> Store {
    Store::open(&db.url, 4)
        .await
        .expect("store opens and migrates")
}

fn dn(n: &str) -> Dn {
    Dn {
        number: n.into(),
        password: format!("pw{n}"),
        switch: None,
        authenticate_requests: "register,invite".into(),
        display_name: None,
    }
}

fn device(mac: &str) -> NewDevice {
    NewDevice {
        mac: mac.into(),
        ..Default::default()
    }
}

/// Two devices race for one DN, many times: exactly one wins each race, and the audit log
/// records only the winners.
async fn racing_assignments(db: Db) {
    let tdb = TestDb::new(db).await;
    let store = open(&tdb).await;
    let rounds = 20;
    for i in 0..rounds {
        store
            .create_dn(&dn(&format!("{}", 1000 + i)))
            .await
            .unwrap();
        store
            .create_device(&device(&format!("0004f2{:06x}", 2 * i)), "test")
            .await
            .unwrap();
        store
            .create_device(&device(&format!("0004f2{:06x}", 2 * i + 1)), "test")
            .await
            .unwrap();
    }
    let mut wins = 0;
    for i in 0..rounds {
        let n = format!("{}", 1000 + i);
        let (a, b) = (
            format!("0004f2{:06x}", 2 * i),
            format!("0004f2{:06x}", 2 * i + 1),
        );
        let (s1, s2) = (store.clone(), store.clone());
        let (n1, n2) = (n.clone(), n.clone());
        let (r1, r2) = tokio::join!(
            tokio::spawn(async move { s1.assign(&a, &n1, "race").await }),
            tokio::spawn(async move { s2.assign(&b, &n2, "race").await }),
        );
        let results = [r1.unwrap(), r2.unwrap()];
        let ok = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(ok, 1, "round {i}: {results:?}");
        for r in &results {
            if let Err(e) = r {
                assert!(
                    matches!(e, StoreError::Conflict { .. }),
                    "loser sees a conflict, not {e:?}"
                );
            }
        }
        wins += ok;
        let holder = store
            .device_by_dn(&n)
            .await
            .unwrap()
            .expect("someone holds it");
        assert_eq!(holder.state, "assigned");
    }
    assert_eq!(wins, rounds as usize);
    let assigns = store
        .audit_log(None, 10_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|a| a.action == "assign")
        .count();
    assert_eq!(assigns, rounds as usize, "no half assignment is audited");
    store.close().await;
    tdb.drop_schema().await;
}
on_both_backends!(racing_assignments_have_one_winner, racing_assignments);

/// Reassignment is refused unless the device's profile allows it.
async fn reassignment(db: Db) {
    let tdb = TestDb::new(db).await;
    let store = open(&tdb).await;
    store.create_dn(&dn("1000")).await.unwrap();
    store
        .create_device(
            &NewDevice {
                dn: Some("1000".into()),
                ..device("0004f2000001")
            },
            "t",
        )
        .await
        .unwrap();
    store
        .create_device(&device("0004f2000002"), "t")
        .await
        .unwrap();
    assert!(matches!(
        store.assign("0004f2000002", "1000", "t").await,
        Err(StoreError::Conflict { .. })
    ));
    let mut p = sipdm::store::model::Profile {
        name: "hotdesk".into(),
        kind: "device-management".into(),
        template: None,
        preferred_server: None,
        peer_server: None,
        params: "{}".into(),
        allow_reassign: 1,
        check_sync_event: None,
    };
    store.create_profile(&p).await.unwrap();
    store
        .update_device(
            "0004f2000002",
            &sipdm::store::model::DevicePatch {
                profile: Some("hotdesk".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let out = store.assign("0004f2000002", "1000", "t").await.unwrap();
    assert_eq!(out.taken_from.as_deref(), Some("0004f2000001"));
    assert_eq!(
        store.device("0004f2000001").await.unwrap().state,
        "unassigned"
    );
    p.allow_reassign = 0;
    store.update_profile(&p).await.unwrap();
    assert!(matches!(
        store.assign("0004f2000001", "1000", "t").await,
        Err(StoreError::Conflict { .. })
    ));
    assert!(matches!(
        store.assign("0004f2000001", "4242", "t").await,
        Err(StoreError::NotFound { .. })
    ));
    store.close().await;
    tdb.drop_schema().await;
}
on_both_backends!(reassignment_follows_the_profile, reassignment);

/// Bindings written by one store handle are there after a reopen (a restart).
async fn bindings_survive_reopen(db: Db) {
    let tdb = TestDb::new(db).await;
    let store = open(&tdb).await;
    let far = sipdm::store::now_ms() + 3_600_000;
    let b = |c: &str, exp: i64| StoredBinding {
        aor: "sip:1000@sipdm".into(),
        contact: c.into(),
        expires_at: exp,
        data: "{}".into(),
        device: None,
        holder: None,
    };
    store
        .write_bindings(
            &[
                b("sip:1000@10.0.0.1:5060", far),
                b("sip:1000@10.0.0.2:5060", far),
                b("sip:1000@10.0.0.3:5060", 1),
            ],
            &[],
        )
        .await
        .unwrap();
    store
        .write_bindings(
            &[],
            &[("sip:1000@sipdm".into(), "sip:1000@10.0.0.2:5060".into())],
        )
        .await
        .unwrap();
    store.close().await;
    let store = open(&tdb).await;
    let live = store.load_bindings().await.unwrap();
    assert_eq!(live.len(), 1, "{live:?}");
    assert_eq!(live[0].contact, "sip:1000@10.0.0.1:5060");
    assert_eq!(store.purge_expired_bindings().await.unwrap(), 1);
    store.close().await;
    tdb.drop_schema().await;
}
on_both_backends!(bindings_survive_a_reopen, bindings_survive_reopen);

/// A registration storm's batch: more rows than one statement carries, the same binding
/// changed twice in one batch (the last change wins, and PostgreSQL does not refuse it), and
/// removals spanning several statements.
async fn big_batches(db: Db) {
    let tdb = TestDb::new(db).await;
    let store = open(&tdb).await;
    let far = sipdm::store::now_ms() + 3_600_000;
    let b = |i: usize, data: &str| StoredBinding {
        aor: format!("sip:{}@sipdm", 100_000 + i),
        contact: format!("sip:{}@10.0.{}.{}:5060", 100_000 + i, i / 250, i % 250),
        expires_at: far,
        data: data.into(),
        device: Some(format!("{}", 100_000 + i)),
        holder: Some("i-1".into()),
    };
    let mut batch: Vec<StoredBinding> = (0..1_700).map(|i| b(i, "{\"v\":1}")).collect();
    batch.push(b(3, "{\"v\":2}"));
    batch.push(b(1_600, "{\"v\":2}"));
    store.write_bindings(&batch, &[]).await.unwrap();
    let live = store.load_bindings().await.unwrap();
    assert_eq!(live.len(), 1_700);
    let data_of = |i: usize| {
        let want = b(i, "");
        live.iter()
            .find(|r| r.aor == want.aor && r.contact == want.contact)
            .map(|r| r.data.clone())
    };
    assert_eq!(data_of(3).as_deref(), Some("{\"v\":2}"), "last change wins");
    assert_eq!(data_of(1_600).as_deref(), Some("{\"v\":2}"));
    assert_eq!(data_of(4).as_deref(), Some("{\"v\":1}"));
    let gone: Vec<(String, String)> = (0..1_200)
        .map(|i| {
            let r = b(i, "");
            (r.aor, r.contact)
        })
        .collect();
    store
        .write_bindings(&[b(1_650, "{\"v\":3}")], &gone)
        .await
        .unwrap();
    let live = store.load_bindings().await.unwrap();
    assert_eq!(live.len(), 500);
    assert!(live.iter().all(|r| r.aor.as_str() >= "sip:101200@sipdm"));
    store.close().await;
    tdb.drop_schema().await;
}
on_both_backends!(big_binding_batches_keep_the_last_change, big_batches);

/// Two instances starting at once agree on one generated secret.
async fn shared_secret(db: Db) {
    let tdb = TestDb::new(db).await;
    let (a, b) = tokio::join!(open(&tdb), open(&tdb));
    let (x, y) = tokio::join!(
        a.meta_get_or_insert("secret", "from-a"),
        b.meta_get_or_insert("secret", "from-b")
    );
    assert_eq!(x.unwrap(), y.unwrap());
    a.close().await;
    b.close().await;
    tdb.drop_schema().await;
}
on_both_backends!(instances_agree_on_the_secret, shared_secret);

/// SQLite: two processes on one file (the server and the CLI) see each other's changes
/// through the outbox, exactly, and never their own; a reader that slept through the pruning
/// window is told everything changed.
#[tokio::test]
async fn sqlite_outbox_tells_the_other_process_exactly() {
    use sipdm::store::Change;
    let tdb = TestDb::new(Db::Sqlite).await;
    let (server, cli) = (open(&tdb).await, open(&tdb).await);
    let from = server.outbox_position().await.unwrap();
    cli.create_dn(&dn("1000")).await.unwrap();
    cli.create_device(&device("001565000001"), "cli")
        .await
        .unwrap();
    server.create_dn(&dn("1001")).await.unwrap();
    // A refused write commits nothing, so it tells nothing.
    assert!(matches!(
        cli.create_dn(&dn("1000")).await,
        Err(StoreError::Conflict { .. })
    ));
    let (seen, next) = server.outbox_after(from).await.unwrap();
    assert_eq!(
        seen,
        vec![
            Change::Dn("1000".into()),
            Change::Device("001565000001".into())
        ]
    );
    assert_eq!(next, from + 3, "three writes committed, each one row");
    let (again, _) = server.outbox_after(next).await.unwrap();
    assert!(again.is_empty());
    let (cli_sees, _) = cli.outbox_after(from).await.unwrap();
    assert_eq!(cli_sees, vec![Change::Dn("1001".into())]);

    // Rows pruned before they were read: everything, not silence.
    let writes = sipdm::store::events::OUTBOX_KEEP + 1_000;
    for i in 0..writes {
        cli.create_dn(&dn(&format!("{}", 10_000 + i)))
            .await
            .unwrap();
    }
    let (late, _) = server.outbox_after(next).await.unwrap();
    assert_eq!(late, vec![Change::All]);
    server.close().await;
    cli.close().await;
}

/// PostgreSQL: a write's change event is part of its transaction: a refused write sends
/// none, and a committed one is heard by another store's feed.
#[tokio::test]
async fn postgres_change_events_commit_with_the_write() {
    use sipdm::store::Change;
    let tdb = TestDb::new(Db::Postgres).await;
    let (writer, reader) = (open(&tdb).await, open(&tdb).await);
    let mut feed = reader
        .change_feed()
        .await
        .unwrap()
        .expect("a feed on PostgreSQL");
    writer.create_dn(&dn("1000")).await.unwrap();
    assert!(matches!(
        writer.create_dn(&dn("1000")).await,
        Err(StoreError::Conflict { .. })
    ));
    writer.create_dn(&dn("1001")).await.unwrap();
    let wait = std::time::Duration::from_secs(10);
    let first = tokio::time::timeout(wait, feed.recv())
        .await
        .expect("an event");
    let second = tokio::time::timeout(wait, feed.recv())
        .await
        .expect("an event");
    assert_eq!(first, vec![Change::Dn("1000".into())]);
    assert_eq!(
        second,
        vec![Change::Dn("1001".into())],
        "the refused write told nothing"
    );
    feed.close().await;
    writer.close().await;
    reader.close().await;
}
