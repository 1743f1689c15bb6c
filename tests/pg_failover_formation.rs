//! PostgreSQL failover with pg_auto_failover, the business-continuity deployment's store: a
//! monitor and one node per site with synchronous replication (tests/common/pgaf.rs). A row
//! written through the multi-host URL sipdm is given (`target_session_attrs=read-write`) is on
//! the new primary after the old one is killed with SIGKILL (nothing lost: the commit waited
//! for the standby), and the old node, started again, rejoins as the secondary.
//!
//! How long there was no writable primary, and how long until a write through the multi-host
//! URL succeeded again, are printed (eprintln; `--nocapture` shows them), never asserted: the
//! bounds below only keep a broken failover from hanging the test.
//!
//! Needs the Debian packages pg-auto-failover-cli and postgresql-15-auto-failover (testbed/
//! test.sh installs them) and root (the formation runs as user postgres).

mod common;

use std::time::{Duration, Instant};

use common::pgaf::{psql, Formation};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_primary_fails_over_without_losing_a_commit_and_rejoins_as_secondary() {
    let started = Instant::now();
    let mut f = Formation::start().await;
    eprintln!("formation healthy after {:?}", started.elapsed());
    let url = f.url(&f.dbname);
    let old = f.primary().await;

    // Through the multi-host URL: libpq lands on the writable node.
    let port = psql(
        &url,
        "CREATE TABLE ledger (id serial PRIMARY KEY, note text NOT NULL); \
         INSERT INTO ledger (note) VALUES ('before the failover'); \
         SELECT inet_server_port()",
    )
    .await
    .unwrap_or_else(|e| panic!("write through {url}: {e}"));
    assert_eq!(
        port,
        f.port(old).to_string(),
        "the write went to the primary"
    );

    f.kill_node(old);
    let killed = Instant::now();

    // Both clocks run from the kill: the monitor's verdict (a node named primary and out of
    // recovery), and a client writing through the multi-host URL every 100 ms.
    let no_primary = async {
        let new = f.wait_primary(Duration::from_secs(90)).await;
        (new, killed.elapsed())
    };
    let first_write = async {
        let mut attempts = 0u32;
        let polled = tokio::time::timeout(Duration::from_secs(90), async {
            loop {
                attempts += 1;
                match psql(
                    &url,
                    "INSERT INTO ledger (note) VALUES ('after the failover'); \
                     SELECT inet_server_port()",
                )
                .await
                {
                    Ok(port) => return port,
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        })
        .await;
        let port = polled.unwrap_or_else(|_| panic!("no write through {url} within 90 s"));
        (port, killed.elapsed(), attempts)
    };
    let ((new, unwritable), (write_port, write_after, attempts)) =
        tokio::join!(no_primary, first_write);
    eprintln!(
        "no writable primary for {unwritable:?} after SIGKILL of {} (monitor: {} primary, out of recovery)",
        common::pgaf::NODE_NAMES[old],
        common::pgaf::NODE_NAMES[new]
    );
    eprintln!(
        "first write through the multi-host URL {write_after:?} after the kill ({attempts} attempts)"
    );
    assert_ne!(new, old, "the other node was promoted");
    assert_eq!(
        write_port,
        f.port(new).to_string(),
        "libpq chose the new primary"
    );

    // Synchronous replication: the row committed before the kill is on the new primary.
    let notes = psql(&f.node_url(new), "SELECT note FROM ledger ORDER BY id")
        .await
        .expect("read the new primary");
    assert_eq!(
        notes.lines().collect::<Vec<_>>(),
        ["before the failover", "after the failover"],
        "the ledger on the new primary"
    );

    // The old node comes back as the secondary, with what was written while it was away.
    let back = Instant::now();
    f.start_node(old);
    let primary = f.wait_healthy(Duration::from_secs(90)).await;
    eprintln!(
        "{} back as secondary {:?} after it was started again",
        common::pgaf::NODE_NAMES[old],
        back.elapsed()
    );
    assert_eq!(primary, new, "the new primary stays primary");
    let standby = psql(
        &f.node_url(old),
        "SELECT pg_is_in_recovery(), count(*) FROM ledger",
    )
    .await
    .expect("read the old node");
    assert_eq!(standby, "t|2", "the old node is a standby with both rows");
    // And libpq still chooses the primary, though the old node is listed first or second.
    let port = psql(&url, "SELECT inet_server_port()")
        .await
        .expect("multi-host URL");
    assert_eq!(port, f.port(new).to_string());
}
