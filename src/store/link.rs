//! The store's connection pool and the host it points at, kept on the writable PostgreSQL
//! server by a watcher (see [`super::primary`]).
//!
//! Every query takes the current pool ([`Link::pool`]); the watcher swaps it for a pool on
//! another host when the current one stops being the primary. Queries in flight on the old
//! pool finish or fail there (a failure of a write is reported to its caller as unavailable,
//! never hidden); the old pool goes with the last of them.

use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::RwLock;
use sqlx::AnyPool;
use tokio::sync::watch;

use super::primary::{self, Access, HostList, SessionAttrs};

/// How often the watcher asks the current host whether it is still the primary.
pub const CHECK_PERIOD: Duration = Duration::from_secs(1);
/// How often while there is no writable host: a promotion is noticed this fast.
pub const DEGRADED_CHECK_PERIOD: Duration = Duration::from_millis(250);

/// Builds a pool on one host (the store's connection settings).
pub type PoolMaker = Box<dyn Fn(&str) -> Result<AnyPool, sqlx::Error> + Send + Sync>;

struct Current {
    pool: AnyPool,
    /// Index into the host list.
    host: usize,
}

pub struct Link {
    current: RwLock<Current>,
    hosts: HostList,
    access: watch::Sender<Access>,
    /// When `access` last changed.
    since: parking_lot::Mutex<std::time::Instant>,
    make_pool: PoolMaker,
}

impl Link {
    /// A link on `pool`, connected to host `host` of `hosts`, which answered with `access`.
    pub fn new(
        pool: AnyPool,
        host: usize,
        access: Access,
        hosts: HostList,
        make_pool: PoolMaker,
    ) -> Arc<Link> {
        publish(access);
        Arc::new(Link {
            current: RwLock::new(Current { pool, host }),
            hosts,
            access: watch::channel(access).0,
            since: parking_lot::Mutex::new(std::time::Instant::now()),
            make_pool,
        })
    }

    pub fn pool(&self) -> AnyPool {
        self.current.read().pool.clone()
    }

    /// The single-host URL of the server in use.
    pub fn url(&self) -> String {
        self.hosts.urls[self.current.read().host].clone()
    }

    pub fn access(&self) -> Access {
        *self.access.borrow()
    }

    pub fn watch_access(&self) -> watch::Receiver<Access> {
        self.access.subscribe()
    }

    /// How long the access has been what it is.
    pub fn unchanged_for(&self) -> Duration {
        self.since.lock().elapsed()
    }

    /// Keeps the link on the best host until the link is dropped (PostgreSQL only).
    pub fn spawn_watcher(self: &Arc<Self>) {
        tokio::spawn(watch_hosts(Arc::downgrade(self)));
    }

    fn set_access(&self, now: Access) {
        let before = self.access.send_replace(now);
        if before != now {
            *self.since.lock() = std::time::Instant::now();
            let host = primary::host_of(&self.hosts.urls[self.current.read().host]).to_owned();
            match now {
                Access::Writable => {
                    tracing::info!(%host, was = before.as_str(), "database writable again: leaving degraded mode")
                }
                Access::ReadOnly => {
                    tracing::warn!(%host, "no writable database: degraded mode, serving reads from a standby")
                }
                Access::Unreachable => {
                    tracing::error!(%host, "no database reachable: degraded mode, serving from memory")
                }
            }
        }
        publish(now);
    }

    /// Moves the pool to host `to`; queries in flight on the old one finish there.
    fn switch_to(&self, to: usize) -> Result<(), sqlx::Error> {
        let pool = (self.make_pool)(&self.hosts.urls[to])?;
        let old = {
            let mut cur = self.current.write();
            let from = cur.host;
            let old = std::mem::replace(&mut cur.pool, pool);
            cur.host = to;
            tracing::warn!(
                from = primary::host_of(&self.hosts.urls[from]),
                to = primary::host_of(&self.hosts.urls[to]),
                "database moved to another host"
            );
            old
        };
        metrics::counter!("sipdm_store_host_switches_total").increment(1);
        // Not closed: a query that took the old pool just before the switch would fail on a
        // closed pool. Its connections go as the last of those queries drops it.
        drop(old);
        Ok(())
    }
}

/// The store's state as Prometheus gauges: `sipdm_store_writable` and `sipdm_degraded`.
fn publish(access: Access) {
    let writable = access == Access::Writable;
    metrics::gauge!("sipdm_store_writable").set(f64::from(u8::from(writable)));
    metrics::gauge!("sipdm_degraded").set(f64::from(u8::from(!writable)));
}

/// Asks the current pool's host whether it is a primary.
async fn check(pool: &AnyPool, timeout: Duration) -> Access {
    let asked = sqlx::query_scalar::<_, bool>("SELECT pg_is_in_recovery()").fetch_one(pool);
    match tokio::time::timeout(timeout, asked).await {
        Ok(Ok(false)) => Access::Writable,
        Ok(Ok(true)) => Access::ReadOnly,
        _ => Access::Unreachable,
    }
}

async fn watch_hosts(link: Weak<Link>) {
    loop {
        let period = match link.upgrade() {
            Some(l) if l.access() == Access::Writable => CHECK_PERIOD,
            Some(_) => DEGRADED_CHECK_PERIOD,
            None => return,
        };
        tokio::time::sleep(period).await;
        let Some(link) = link.upgrade() else { return };
        let here = check(&link.pool(), link.hosts.connect_timeout).await;
        let settled = match link.hosts.attrs {
            SessionAttrs::ReadWrite => here == Access::Writable,
            SessionAttrs::Any => here != Access::Unreachable,
        };
        if settled || !link.hosts.is_multi() {
            link.set_access(here);
            continue;
        }
        let now = match primary::choose(&link.hosts).await {
            Some((to, there)) if there > here && to != link.current.read().host => {
                match link.switch_to(to) {
                    Ok(()) => there,
                    Err(e) => {
                        tracing::error!(error = %e, "could not open a pool on the new database host");
                        here
                    }
                }
            }
            _ => here,
        };
        link.set_access(now);
    }
}
