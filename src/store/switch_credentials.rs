//! The credentials the site's SIP switch authenticates phones with: the read-only view
//! `switch_subscriber (username, domain, ha1, ha1b)`, in the shape Kamailio's `auth_db` reads
//! with `calculate_ha1 = 0` (see `migrations/*/0003_switch_subscriber.sql` and
//! `config/switch/kamailio/README.md`).
//!
//! Rows: every DN and every known device's `dm-<mac>` auth user, once per switch realm
//! (`switch_realms`). On PostgreSQL the DN rows are computed by the view from `dns` (md5()), so
//! they follow every DN write by themselves; the device rows, whose password derives from the
//! server secret, are written here. SQLite has no md5(), so there both kinds are written here,
//! and a DN's password change or deletion drops its rows by trigger until the next sync.

use std::collections::{HashMap, HashSet};

use sip::auth::Algorithm;

use super::{Backend, Result, Store};
use crate::credentials::DeviceCredentials;

/// Rows per multi-row INSERT (5 binds each, well under either backend's parameter limit).
const CHUNK: usize = 100;

/// One row of `switch_subscriber`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SwitchSubscriber {
    pub username: String,
    pub domain: String,
    pub ha1: String,
    pub ha1b: String,
}

impl SwitchSubscriber {
    /// The row for `username` with `password` at `realm`.
    pub fn compute(username: &str, realm: &str, password: &str) -> SwitchSubscriber {
        SwitchSubscriber {
            username: username.to_owned(),
            domain: realm.to_owned(),
            ha1: Algorithm::Md5.hash(&[username, realm, password]),
            ha1b: Algorithm::Md5.hash(&[&format!("{username}@{realm}"), realm, password]),
        }
    }
}

/// What a full sync changed, for the start-up log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SwitchSync {
    pub realms: usize,
    pub written: usize,
    pub removed: u64,
}

impl Store {
    /// At start: records each switch's realm (`(switch name, realm)`), then brings every row
    /// sipdm owns up to date for every realm: `dm-<mac>` for each device (and, on SQLite,
    /// each DN), removing rows of devices, DNs and realms that are gone. Only rows that differ
    /// are written, so a restart of a large fleet costs one read.
    pub async fn sync_switch_credentials(
        &self,
        switches: &[(String, String)],
        creds: &DeviceCredentials,
    ) -> Result<SwitchSync> {
        let mut tx = self.write_tx().await?;
        for (switch, realm) in switches {
            sqlx::query(
                "INSERT INTO switch_realms (switch, realm) VALUES ($1, $2) \
                 ON CONFLICT (switch) DO UPDATE SET realm = excluded.realm",
            )
            .bind(switch)
            .bind(realm)
            .execute(&mut *tx)
            .await?;
        }
        // Realms of switches no longer in the `switches` table (the configuration upserts
        // those) go with their rows.
        let mut removed = sqlx::query(
            "DELETE FROM switch_realms WHERE switch NOT IN (SELECT name FROM switches)",
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        removed += sqlx::query(
            "DELETE FROM switch_credentials WHERE domain NOT IN (SELECT realm FROM switch_realms) \
             OR (kind = 'device' AND username NOT IN (SELECT 'dm-' || mac FROM devices)) \
             OR (kind = 'dn' AND username NOT IN (SELECT number FROM dns))",
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let realms = realms(&mut tx).await?;
        let macs: Vec<String> = sqlx::query_scalar("SELECT mac FROM devices")
            .fetch_all(&mut *tx)
            .await?;
        let mut wanted = Vec::new();
        for mac in &macs {
            let (user, password) = (creds.auth_user(mac), creds.password(mac));
            for realm in &realms {
                wanted.push(("device", SwitchSubscriber::compute(&user, realm, &password)));
            }
        }
        if self.backend == Backend::Sqlite {
            let dns: Vec<(String, String)> = sqlx::query_as("SELECT number, password FROM dns")
                .fetch_all(&mut *tx)
                .await?;
            for (number, password) in &dns {
                for realm in &realms {
                    wanted.push(("dn", SwitchSubscriber::compute(number, realm, password)));
                }
            }
        }
        let have: Vec<(String, String, String, String)> =
            sqlx::query_as("SELECT username, domain, ha1, ha1b FROM switch_credentials")
                .fetch_all(&mut *tx)
                .await?;
        let have: HashSet<(String, String, String, String)> = have.into_iter().collect();
        let stale: Vec<_> = wanted
            .into_iter()
            .filter(|(_, r)| {
                !have.contains(&(
                    r.username.clone(),
                    r.domain.clone(),
                    r.ha1.clone(),
                    r.ha1b.clone(),
                ))
            })
            .collect();
        upsert(&mut tx, &stale).await?;
        tx.commit().await?;
        Ok(SwitchSync {
            realms: realms.len(),
            written: stale.len(),
            removed,
        })
    }

    /// Writes the `dm-<mac>` rows of these devices for every realm (a device first seen, added
    /// or imported), so the switch accepts it before its first file is served.
    pub async fn put_device_switch_credentials(
        &self,
        macs: &[String],
        creds: &DeviceCredentials,
    ) -> Result<()> {
        if macs.is_empty() {
            return Ok(());
        }
        let mut tx = self.write_tx().await?;
        let realms = realms(&mut tx).await?;
        let mut rows = Vec::with_capacity(macs.len() * realms.len());
        for mac in macs {
            let (user, password) = (creds.auth_user(mac), creds.password(mac));
            for realm in &realms {
                rows.push(("device", SwitchSubscriber::compute(&user, realm, &password)));
            }
        }
        upsert(&mut tx, &rows).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Writes the rows of these DNs (`(number, password)`) for every realm where sipdm owns
    /// them (SQLite, which has no `md5()` for the view to compute them with); nothing to do on
    /// PostgreSQL.
    pub async fn put_dn_switch_credentials(&self, dns: &[(String, String)]) -> Result<()> {
        if dns.is_empty() || self.backend != Backend::Sqlite {
            return Ok(());
        }
        let mut tx = self.write_tx().await?;
        let realms = realms(&mut tx).await?;
        let mut rows = Vec::with_capacity(dns.len() * realms.len());
        for (number, password) in dns {
            for realm in &realms {
                rows.push(("dn", SwitchSubscriber::compute(number, realm, password)));
            }
        }
        upsert(&mut tx, &rows).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The switch's row for `username` at `realm`, read through the view as the switch reads
    /// it.
    pub async fn switch_subscriber(
        &self,
        username: &str,
        realm: &str,
    ) -> Result<Option<SwitchSubscriber>> {
        Ok(sqlx::query_as(
            "SELECT username, domain, ha1, ha1b FROM switch_subscriber \
             WHERE username = $1 AND domain = $2",
        )
        .bind(username)
        .bind(realm)
        .fetch_optional(&self.pool())
        .await?)
    }

    /// The distinct realms rows are kept for.
    pub async fn switch_realms(&self) -> Result<Vec<String>> {
        Ok(
            sqlx::query_scalar("SELECT DISTINCT realm FROM switch_realms ORDER BY realm")
                .fetch_all(&self.pool())
                .await?,
        )
    }
}

async fn realms(tx: &mut sqlx::Transaction<'_, sqlx::Any>) -> Result<Vec<String>> {
    Ok(
        sqlx::query_scalar("SELECT DISTINCT realm FROM switch_realms ORDER BY realm")
            .fetch_all(&mut **tx)
            .await?,
    )
}

async fn upsert(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    rows: &[(&'static str, SwitchSubscriber)],
) -> Result<()> {
    // One row per key: a multi-row upsert may not touch a key twice.
    let rows: HashMap<(&str, &str), &(&str, SwitchSubscriber)> = rows
        .iter()
        .map(|r| ((r.1.username.as_str(), r.1.domain.as_str()), r))
        .collect();
    let rows: Vec<_> = rows.into_values().collect();
    for chunk in rows.chunks(CHUNK) {
        let values: Vec<String> = (0..chunk.len())
            .map(|i| {
                let b = i * 5;
                format!(
                    "(${}, ${}, ${}, ${}, ${})",
                    b + 1,
                    b + 2,
                    b + 3,
                    b + 4,
                    b + 5
                )
            })
            .collect();
        let sql = format!(
            "INSERT INTO switch_credentials (username, domain, ha1, ha1b, kind) VALUES {} \
             ON CONFLICT (username, domain) DO UPDATE SET ha1 = excluded.ha1, \
             ha1b = excluded.ha1b, kind = excluded.kind",
            values.join(", ")
        );
        let mut q = sqlx::query(&sql);
        for (kind, r) in chunk {
            q = q
                .bind(&r.username)
                .bind(&r.domain)
                .bind(&r.ha1)
                .bind(&r.ha1b)
                .bind(*kind);
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}
