//! Change events: what a write altered, typed, and how they travel between instances.
//!
//! The service emits a [`Change`] for every write that can alter a rendered file; the render
//! cache of this instance reacts to it at once. On PostgreSQL the store also publishes it with
//! `NOTIFY` on [`CHANGES`] and every instance's [`ChangeFeed`] (one `LISTEN` connection) hands
//! the others' events to its service. On SQLite there is one process per file (and the CLI),
//! nothing listens, and `crate::app` keeps polling `meta.version` instead.
//!
//! Events carry the schema they concern (`current_schema()`), so deployments or test schemas
//! sharing one database ignore each other, and the store they came from, so an instance does
//! not re-apply its own.

use serde::{Deserialize, Serialize};

use super::{Backend, Result, Store};

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
/// itself; a `recv` error means the connection was lost and notifications sent meanwhile may
/// be gone.
pub struct Listener {
    inner: sqlx::postgres::PgListener,
    pool: sqlx::PgPool,
}

impl Listener {
    pub async fn recv(&mut self) -> Result<Notification> {
        let n = self.inner.recv().await?;
        Ok(Notification {
            channel: n.channel().to_owned(),
            payload: n.payload().to_owned(),
        })
    }

    pub async fn close(self) {
        drop(self.inner);
        self.pool.close().await;
    }
}

/// Other instances' change events, from [`Store::change_feed`].
pub struct ChangeFeed {
    listener: Listener,
    scope: String,
    origin: String,
}

impl ChangeFeed {
    /// The next batch another writer published on this schema. After a lost connection it
    /// reports `[Change::All]`, since events may have been missed meanwhile.
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
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "change listener lost its connection; reconnecting");
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    return vec![Change::All];
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
        use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
        let options = self
            .url
            .parse::<PgConnectOptions>()?
            .application_name(application_name);
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .max_lifetime(None)
            .idle_timeout(None)
            .connect_with(options)
            .await?;
        let mut inner = PgListener::connect_with(&pool).await?;
        inner.listen_all(channels.iter().copied()).await?;
        Ok(Some(Listener { inner, pool }))
    }

    /// Other writers' change events on this schema (PostgreSQL only; `None` on SQLite). Once
    /// this returns, no event published afterwards is missed.
    pub async fn change_feed(&self) -> Result<Option<ChangeFeed>> {
        let Some(listener) = self.listener("sipdm-changes", &[CHANGES]).await? else {
            return Ok(None);
        };
        Ok(Some(ChangeFeed {
            listener,
            scope: self.scope.clone(),
            origin: self.origin.clone(),
        }))
    }

    /// Tells the other instances what a committed write changed (PostgreSQL; nothing on
    /// SQLite). Sent right after the commit: an instance that dies in between leaves the
    /// others stale until their next change of the same files or a listener reconnect.
    pub async fn publish(&self, changes: &[Change]) -> Result<()> {
        if self.backend != Backend::Postgres || changes.is_empty() {
            return Ok(());
        }
        let mut envelope = Envelope {
            scope: self.scope.clone(),
            origin: self.origin.clone(),
            changes: changes.to_vec(),
        };
        let mut payload = serde_json::to_string(&envelope).unwrap_or_default();
        if payload.len() > MAX_PAYLOAD || payload.is_empty() {
            envelope.changes = vec![Change::All];
            payload = serde_json::to_string(&envelope).unwrap_or_default();
        }
        self.notify(CHANGES, &payload).await
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
