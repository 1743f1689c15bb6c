//! Change events: what a write altered, typed, and how they travel between instances.
//!
//! Every write that can alter a rendered file commits a [`Change`] in its own transaction
//! ([`Store::commit_changes`]): on PostgreSQL a `NOTIFY` on [`CHANGES`], which every other
//! instance's [`ChangeFeed`] (one `LISTEN` connection) receives; on SQLite a row of the
//! `changes` outbox, which the other process sharing the file (the server, the CLI) polls.
//! This process's [`ChangeBus`] subscribers (the render cache) hear it as the write returns.
//!
//! Events carry the schema they concern (`current_schema()`), so deployments or test schemas
//! sharing one database ignore each other, and the store they came from, so an instance does
//! not re-apply its own.

use serde::{Deserialize, Serialize};

use super::{Backend, Result, Store, StoreError};

/// The channel change events travel on.
pub const CHANGES: &str = "sipdm_changes";

/// PostgreSQL refuses NOTIFY payloads of 8000 bytes or more; a batch that large is sent as
/// [`Change::All`] instead.
const MAX_PAYLOAD: usize = 7000;

/// What a write changed, as far as rendered files care.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "key", rename_all = "lowercase")]
pub enum Change {
    /// A device's row (profile, vendor, model, DN, existence), by canonical MAC.
    Device(String),
    /// A DN's row (password, display name, switch), by number: the device holding it.
    Dn(String),
    /// A profile, by name: every device using it.
    Profile(String),
    /// A site (fs_url, SIP servers), by name.
    Site(String),
    /// A switch (address, peer), by name.
    Switch(String),
    /// The templates or vendor table.
    Template,
    /// Anything: every rendered file (also what a listener that lost its connection, and so
    /// perhaps some events, reports).
    All,
}

/// One published batch, as sent on [`CHANGES`].
#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    /// The schema written to.
    scope: String,
    /// The store (process) that wrote: its own events are not delivered back to it.
    origin: String,
    changes: Vec<Change>,
}

/// A notification on one of the channels a [`Listener`] listens to.
#[derive(Debug, Clone)]
pub struct Notification {
    pub channel: String,
    pub payload: String,
}

/// A dedicated `LISTEN` connection (PostgreSQL only). It reconnects and re-subscribes by
/// itself, to the host the store uses now (after a failover, the new primary); a `recv` error
/// means the connection was lost, and a notification on the empty channel that it is back:
/// notifications sent in between may be gone.
pub struct Listener {
    inner: Option<(sqlx::postgres::PgListener, sqlx::PgPool)>,
    store: Store,
    application_name: String,
    channels: Vec<String>,
}

impl Listener {
    pub async fn recv(&mut self) -> Result<Notification> {
        let (inner, _) = match &mut self.inner {
            Some(i) => i,
            None => {
                let connected = self
                    .store
                    .connect_listener(&self.application_name, &self.channels)
                    .await?;
                self.inner = Some(connected);
                return Ok(Notification {
                    channel: String::new(),
                    payload: String::new(),
                });
            }
        };
        match inner.try_recv().await {
            Ok(Some(n)) => Ok(Notification {
                channel: n.channel().to_owned(),
                payload: n.payload().to_owned(),
            }),
            // Lost: the next call connects again, to wherever the store points then.
            Ok(None) => {
                self.drop_connection();
                Err(StoreError::Db(sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::ConnectionAborted,
                    "listener connection lost",
                ))))
            }
            Err(e) => {
                self.drop_connection();
                Err(e.into())
            }
        }
    }

    fn drop_connection(&mut self) {
        if let Some((inner, pool)) = self.inner.take() {
            drop(inner);
            tokio::spawn(async move { pool.close().await });
        }
    }

    pub async fn close(mut self) {
        if let Some((inner, pool)) = self.inner.take() {
            drop(inner);
            pool.close().await;
        }
    }
}

/// Other instances' change events, from [`Store::change_feed`].
pub struct ChangeFeed {
    listener: Listener,
    /// The connection was lost and not yet back (logged once).
    lost: bool,
    scope: String,
    origin: String,
}

impl ChangeFeed {
    /// The next batch another writer published on this schema. Once connected again after a
    /// lost connection it reports `[Change::All]`, since events may have been missed meanwhile.
    pub async fn recv(&mut self) -> Vec<Change> {
        loop {
            match self.listener.recv().await {
                Ok(n) if n.channel == CHANGES => {
                    match serde_json::from_str::<Envelope>(&n.payload) {
                        Ok(e) if e.scope == self.scope && e.origin != self.origin => {
                            return e.changes
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "unreadable change event: treated as a change of everything");
                            return vec![Change::All];
                        }
                    }
                }
                // Connected again: what others published meanwhile is unknown.
                Ok(n) if n.channel.is_empty() => {
                    tracing::info!("change listener connected again");
                    self.lost = false;
                    return vec![Change::All];
                }
                Ok(_) => {}
                // Once per outage, not per attempt: while no database answers, a node serves
                // from its render cache, which a change of everything would empty.
                Err(e) => {
                    if !self.lost {
                        tracing::warn!(error = %e, "change listener lost its connection; reconnecting");
                        self.lost = true;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
            }
        }
    }

    pub async fn close(self) {
        self.listener.close().await;
    }
}

impl Store {
    /// Connects a dedicated listener, named `application_name` in `pg_stat_activity`, and
    /// listens on `channels`. `None` on SQLite.
    pub async fn listener(
        &self,
        application_name: &str,
        channels: &[&str],
    ) -> Result<Option<Listener>> {
        if self.backend != Backend::Postgres {
            return Ok(None);
        }
        let channels: Vec<String> = channels.iter().map(|c| (*c).to_owned()).collect();
        let inner = match self.connect_listener(application_name, &channels).await {
            Ok(inner) => Some(inner),
            // A standby takes no LISTEN: a node starting degraded listens once a primary is
            // back (its first `recv` connects, and reports the gap as a lost connection).
            Err(e) if self.access() != super::Access::Writable => {
                tracing::warn!(error = %e, application_name, "no writable database: listening once a primary is back");
                None
            }
            Err(e) => return Err(e),
        };
        Ok(Some(Listener {
            inner,
            store: self.clone(),
            application_name: application_name.to_owned(),
            channels,
        }))
    }

    async fn connect_listener(
        &self,
        application_name: &str,
        channels: &[String],
    ) -> Result<(sqlx::postgres::PgListener, sqlx::PgPool)> {
        use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
        let options = self
            .link
            .url()
            .parse::<PgConnectOptions>()?
            .application_name(application_name);
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .max_lifetime(None)
            .idle_timeout(None)
            .acquire_timeout(super::ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await?;
        let mut inner = PgListener::connect_with(&pool).await?;
        inner
            .listen_all(channels.iter().map(String::as_str))
            .await?;
        Ok((inner, pool))
    }

    /// Other writers' change events on this schema (PostgreSQL only; `None` on SQLite). Once
    /// this returns, no event published afterwards is missed.
    pub async fn change_feed(&self) -> Result<Option<ChangeFeed>> {
        let Some(listener) = self.listener("sipdm-changes", &[CHANGES]).await? else {
            return Ok(None);
        };
        Ok(Some(ChangeFeed {
            listener,
            lost: false,
            scope: self.scope.clone(),
            origin: self.origin.clone(),
        }))
    }

    /// This process's change bus: subscribers hear every committed change, this process's
    /// at once and other writers' as the feed or the outbox poll delivers them.
    pub fn changes(&self) -> &ChangeBus {
        &self.bus
    }

    /// Commits a write together with what it changed. The event is part of the transaction:
    /// on PostgreSQL a `pg_notify`, which PostgreSQL delivers at commit and never without it;
    /// on SQLite a row of the `changes` outbox, which the other process sharing the file reads.
    /// An instance that dies right after its commit therefore leaves nobody stale. Then this
    /// process's subscribers hear it, before the write returns: whoever wrote reads their
    /// write.
    pub(super) async fn commit_changes(
        &self,
        mut tx: sqlx::Transaction<'static, sqlx::Any>,
        changes: &[Change],
    ) -> Result<()> {
        super::bump_version(&mut tx).await?;
        if !changes.is_empty() {
            let payload = self.envelope(changes);
            match self.backend {
                Backend::Postgres => {
                    sqlx::query("SELECT 1 FROM (SELECT pg_notify($1, $2)) AS n")
                        .bind(CHANGES)
                        .bind(&payload)
                        .execute(&mut *tx)
                        .await?;
                }
                Backend::Sqlite => {
                    let id: i64 = sqlx::query_scalar(
                        "INSERT INTO changes (origin, payload) VALUES ($1, $2) RETURNING id",
                    )
                    .bind(&self.origin)
                    .bind(&payload)
                    .fetch_one(&mut *tx)
                    .await?;
                    if id % OUTBOX_PRUNE_EVERY == 0 {
                        sqlx::query("DELETE FROM changes WHERE id <= $1")
                            .bind(id - OUTBOX_KEEP)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
            }
        }
        tx.commit().await?;
        self.bus.deliver(changes, Source::Here);
        Ok(())
    }

    /// Changes no row records (the templates were reloaded): told like any write's.
    pub async fn announce(&self, changes: &[Change]) -> Result<()> {
        let tx = self.write_tx().await?;
        self.commit_changes(tx, changes).await
    }

    /// SQLite: where the outbox stands now (a process starting reads from here on).
    pub async fn outbox_position(&self) -> Result<i64> {
        Ok(
            sqlx::query_scalar::<_, i64>("SELECT COALESCE(MAX(id), 0) FROM changes")
                .fetch_one(&self.pool())
                .await?,
        )
    }

    /// SQLite: what the other processes sharing the file changed after outbox row `after`,
    /// and the row to read from next time. Rows pruned before they were read (a process that
    /// slept through [`OUTBOX_KEEP`] writes) come back as [`Change::All`].
    pub async fn outbox_after(&self, after: i64) -> Result<(Vec<Change>, i64)> {
        let oldest: i64 = sqlx::query_scalar("SELECT COALESCE(MIN(id), 0) FROM changes")
            .fetch_one(&self.pool())
            .await?;
        let rows: Vec<(i64, String, String)> = sqlx::query_as(
            "SELECT id, origin, payload FROM changes WHERE id > $1 ORDER BY id LIMIT 1000",
        )
        .bind(after)
        .fetch_all(&self.pool())
        .await?;
        let Some(last) = rows.last().map(|r| r.0) else {
            return Ok((Vec::new(), after));
        };
        if oldest > after + 1 {
            return Ok((vec![Change::All], last));
        }
        let mut out = Vec::new();
        for (_, origin, payload) in rows {
            if origin == self.origin {
                continue;
            }
            match serde_json::from_str::<Envelope>(&payload) {
                Ok(e) => out.extend(e.changes),
                Err(e) => {
                    tracing::warn!(error = %e, "unreadable change event: treated as a change of everything");
                    return Ok((vec![Change::All], last));
                }
            }
        }
        Ok((out, last))
    }

    /// The wire form of `changes`; a batch too large for one NOTIFY is [`Change::All`].
    fn envelope(&self, changes: &[Change]) -> String {
        let mut envelope = Envelope {
            scope: self.scope.clone(),
            origin: self.origin.clone(),
            changes: changes.to_vec(),
        };
        let payload = serde_json::to_string(&envelope).unwrap_or_default();
        if payload.len() <= MAX_PAYLOAD && !payload.is_empty() {
            return payload;
        }
        envelope.changes = vec![Change::All];
        serde_json::to_string(&envelope).unwrap_or_default()
    }
}

/// SQLite outbox rows kept for a process that is slow to read them.
pub const OUTBOX_KEEP: i64 = 10_000;
/// How often (in rows written) the writers prune the outbox.
const OUTBOX_PRUNE_EVERY: i64 = 1_000;

/// Who hears committed changes in this process: the render cache, and later fleet
/// operations. Subscribers are called synchronously, in order, and must be quick (drop a
/// cache entry, queue work); they are registered while the services are built, before
/// anything is served.
#[derive(Default)]
pub struct ChangeBus {
    subscribers: parking_lot::RwLock<Vec<Subscriber>>,
}

pub type Subscriber = std::sync::Arc<dyn Fn(&[Change], Source) + Send + Sync>;

/// Who made a change a subscriber hears of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A write of this process.
    Here,
    /// Another instance sharing the PostgreSQL schema (which acts on its own writes).
    Peer,
    /// Another process writing the same SQLite file: the CLI, which runs no SIP.
    Cli,
}

impl ChangeBus {
    pub fn subscribe(&self, subscriber: Subscriber) {
        self.subscribers.write().push(subscriber);
    }

    /// Hands `changes` to every subscriber (also what the feed and the outbox poll call with
    /// other writers' changes).
    pub fn deliver(&self, changes: &[Change], source: Source) {
        if changes.is_empty() {
            return;
        }
        let subscribers = self.subscribers.read().clone();
        for s in subscribers {
            s(changes, source);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form() {
        let e = Envelope {
            scope: "s".into(),
            origin: "o".into(),
            changes: vec![Change::Device("0004f2000001".into()), Change::All],
        };
        let text = serde_json::to_string(&e).unwrap();
        assert_eq!(
            text,
            r#"{"scope":"s","origin":"o","changes":[{"kind":"device","key":"0004f2000001"},{"kind":"all"}]}"#
        );
        let back: Envelope = serde_json::from_str(&text).unwrap();
        assert_eq!(back.changes, e.changes);
    }
}
