//! Sites, switches, profiles and DNs: the catalogue devices are provisioned from.

use super::model::{Dn, Profile, Site, Switch};
use super::{classify, Change, Result, Store, StoreError};
use crate::domain::ProfileKind;

impl Store {
    pub async fn sites(&self) -> Result<Vec<Site>> {
        Ok(
            sqlx::query_as("SELECT name, fs_url, sip_servers FROM sites ORDER BY name")
                .fetch_all(&self.pool())
                .await?,
        )
    }

    pub async fn site(&self, name: &str) -> Result<Site> {
        sqlx::query_as("SELECT name, fs_url, sip_servers FROM sites WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool())
            .await?
            .ok_or_else(|| StoreError::NotFound {
                what: "site",
                key: name.to_owned(),
            })
    }

    pub async fn create_site(&self, s: &Site) -> Result<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query("INSERT INTO sites (name, fs_url, sip_servers) VALUES ($1, $2, $3)")
            .bind(&s.name)
            .bind(&s.fs_url)
            .bind(&s.sip_servers)
            .execute(&mut *tx)
            .await
            .map_err(|e| classify(e, "site", &s.name))?;
        self.commit_changes(tx, &[Change::Site(s.name.clone())])
            .await
    }

    /// Creates or replaces: the configuration file is the source of truth for topology.
    pub async fn upsert_site(&self, s: &Site) -> Result<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO sites (name, fs_url, sip_servers) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET fs_url = excluded.fs_url, sip_servers = excluded.sip_servers",
        )
        .bind(&s.name)
        .bind(&s.fs_url)
        .bind(&s.sip_servers)
        .execute(&mut *tx)
        .await?;
        self.commit_changes(tx, &[Change::Site(s.name.clone())])
            .await
    }

    pub async fn update_site(&self, s: &Site) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let done = sqlx::query("UPDATE sites SET fs_url = $2, sip_servers = $3 WHERE name = $1")
            .bind(&s.name)
            .bind(&s.fs_url)
            .bind(&s.sip_servers)
            .execute(&mut *tx)
            .await?;
        self.commit_if_found(
            tx,
            done.rows_affected(),
            "site",
            Change::Site(s.name.clone()),
        )
        .await
    }

    pub async fn delete_site(&self, name: &str) -> Result<()> {
        self.delete_row(
            "DELETE FROM sites WHERE name = $1",
            name,
            "site",
            "site in use by a switch",
            Change::Site(name.to_owned()),
        )
        .await
    }

    pub async fn switches(&self) -> Result<Vec<Switch>> {
        Ok(sqlx::query_as(
            "SELECT name, site, address, dn_ranges, peer FROM switches ORDER BY name",
        )
        .fetch_all(&self.pool())
        .await?)
    }

    pub async fn switch(&self, name: &str) -> Result<Switch> {
        sqlx::query_as("SELECT name, site, address, dn_ranges, peer FROM switches WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool())
            .await?
            .ok_or_else(|| StoreError::NotFound {
                what: "switch",
                key: name.to_owned(),
            })
    }

    pub async fn upsert_switch(&self, s: &Switch) -> Result<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO switches (name, site, address, dn_ranges, peer) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (name) DO UPDATE SET site = excluded.site, address = excluded.address, \
             dn_ranges = excluded.dn_ranges, peer = excluded.peer",
        )
        .bind(&s.name)
        .bind(&s.site)
        .bind(&s.address)
        .bind(&s.dn_ranges)
        .bind(&s.peer)
        .execute(&mut *tx)
        .await
        .map_err(|e| classify(e, "switch", &s.name))?;
        self.commit_changes(tx, &[Change::Switch(s.name.clone())])
            .await
    }

    pub async fn profiles(&self) -> Result<Vec<Profile>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {PROFILE_COLS} FROM profiles ORDER BY name"
        ))
        .fetch_all(&self.pool())
        .await?)
    }

    pub async fn profile(&self, name: &str) -> Result<Profile> {
        sqlx::query_as(&format!(
            "SELECT {PROFILE_COLS} FROM profiles WHERE name = $1"
        ))
        .bind(name)
        .fetch_optional(&self.pool())
        .await?
        .ok_or_else(|| StoreError::NotFound {
            what: "profile",
            key: name.to_owned(),
        })
    }

    pub async fn create_profile(&self, p: &Profile) -> Result<()> {
        check_profile(p)?;
        let mut tx = self.write_tx().await?;
        sqlx::query(&format!(
            "INSERT INTO profiles ({PROFILE_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        ))
        .bind(&p.name)
        .bind(&p.kind)
        .bind(&p.template)
        .bind(&p.preferred_server)
        .bind(&p.peer_server)
        .bind(&p.params)
        .bind(p.allow_reassign)
        .bind(&p.check_sync_event)
        .execute(&mut *tx)
        .await
        .map_err(|e| classify(e, "profile", &p.name))?;
        self.commit_changes(tx, &[Change::Profile(p.name.clone())])
            .await
    }

    /// Creates the profile unless one of that name exists (shipped defaults at start).
    pub async fn ensure_profile(&self, p: &Profile) -> Result<()> {
        match self.create_profile(p).await {
            Err(StoreError::Conflict { .. }) => Ok(()),
            other => other,
        }
    }

    pub async fn update_profile(&self, p: &Profile) -> Result<()> {
        check_profile(p)?;
        let mut tx = self.write_tx().await?;
        let done = sqlx::query(
            "UPDATE profiles SET kind = $2, template = $3, preferred_server = $4, peer_server = $5, \
             params = $6, allow_reassign = $7, check_sync_event = $8 WHERE name = $1",
        )
        .bind(&p.name)
        .bind(&p.kind)
        .bind(&p.template)
        .bind(&p.preferred_server)
        .bind(&p.peer_server)
        .bind(&p.params)
        .bind(p.allow_reassign)
        .bind(&p.check_sync_event)
        .execute(&mut *tx)
        .await?;
        self.commit_if_found(
            tx,
            done.rows_affected(),
            "profile",
            Change::Profile(p.name.clone()),
        )
        .await
    }

    pub async fn delete_profile(&self, name: &str) -> Result<()> {
        self.delete_row(
            "DELETE FROM profiles WHERE name = $1",
            name,
            "profile",
            "profile in use by a device",
            Change::Profile(name.to_owned()),
        )
        .await
    }

    pub async fn dns(&self) -> Result<Vec<Dn>> {
        Ok(
            sqlx::query_as(&format!("SELECT {DN_COLS} FROM dns ORDER BY number"))
                .fetch_all(&self.pool())
                .await?,
        )
    }

    pub async fn dn(&self, number: &str) -> Result<Dn> {
        sqlx::query_as(&format!("SELECT {DN_COLS} FROM dns WHERE number = $1"))
            .bind(number)
            .fetch_optional(&self.pool())
            .await?
            .ok_or_else(|| StoreError::NotFound {
                what: "DN",
                key: number.to_owned(),
            })
    }

    pub async fn create_dn(&self, d: &Dn) -> Result<()> {
        check_dn(d)?;
        let mut tx = self.write_tx().await?;
        insert_dn(&mut tx, d).await?;
        self.commit_changes(tx, &[Change::Dn(d.number.clone())])
            .await
    }

    pub async fn update_dn(&self, d: &Dn) -> Result<()> {
        check_dn(d)?;
        let mut tx = self.write_tx().await?;
        let done = sqlx::query(
            "UPDATE dns SET password = $2, switch = $3, authenticate_requests = $4, display_name = $5 WHERE number = $1",
        )
        .bind(&d.number)
        .bind(&d.password)
        .bind(&d.switch)
        .bind(&d.authenticate_requests)
        .bind(&d.display_name)
        .execute(&mut *tx)
        .await?;
        self.commit_if_found(tx, done.rows_affected(), "DN", Change::Dn(d.number.clone()))
            .await
    }

    pub async fn delete_dn(&self, number: &str) -> Result<()> {
        self.delete_row(
            "DELETE FROM dns WHERE number = $1",
            number,
            "DN",
            "DN assigned to a device",
            Change::Dn(number.to_owned()),
        )
        .await
    }
}

impl Store {
    /// Creates many DNs in one transaction: all or nothing. `lines` pairs each DN with its
    /// line in the source file, so a refusal names the line.
    pub async fn import_dns(&self, lines: &[(usize, Dn)]) -> Result<super::ImportReport> {
        let mut errors = Vec::new();
        let mut seen = std::collections::HashMap::new();
        for (line, d) in lines {
            if let Err(e) = check_dn(d) {
                errors.push((*line, e.to_string()));
            } else if let Some(first) = seen.insert(d.number.clone(), *line) {
                errors.push((*line, format!("DN {} repeats line {first}", d.number)));
            }
        }
        if !errors.is_empty() {
            return Ok(super::ImportReport {
                imported: 0,
                errors,
            });
        }
        let mut tx = self.write_tx().await?;
        for (line, d) in lines {
            let exists: Option<String> =
                sqlx::query_scalar("SELECT number FROM dns WHERE number = $1")
                    .bind(&d.number)
                    .fetch_optional(&mut *tx)
                    .await?;
            if exists.is_some() {
                errors.push((*line, format!("DN {} already exists", d.number)));
            } else if errors.is_empty() {
                insert_dn(&mut tx, d).await?;
            }
        }
        if !errors.is_empty() {
            tx.rollback().await?;
            return Ok(super::ImportReport {
                imported: 0,
                errors,
            });
        }
        let changes: Vec<Change> = lines
            .iter()
            .map(|(_, d)| Change::Dn(d.number.clone()))
            .collect();
        self.commit_changes(tx, &changes).await?;
        Ok(super::ImportReport {
            imported: lines.len(),
            errors,
        })
    }

    /// Deletes one row by key: `NotFound` when there is none, `Conflict` when something still
    /// refers to it (a foreign key), so the API can answer 404 or 409.
    async fn delete_row(
        &self,
        sql: &str,
        key: &str,
        what: &'static str,
        in_use: &'static str,
        change: Change,
    ) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let done =
            sqlx::query(sql)
                .bind(key)
                .execute(&mut *tx)
                .await
                .map_err(|e| match classify(e, what, key) {
                    StoreError::Invalid(_) => StoreError::Conflict {
                        what: in_use,
                        key: key.to_owned(),
                    },
                    other => other,
                })?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                what,
                key: key.to_owned(),
            });
        }
        self.commit_changes(tx, &[change]).await
    }

    /// Commits an update that touched `rows` rows with its change; none touched means the key
    /// named nothing (`NotFound`, and the transaction rolls back on drop).
    async fn commit_if_found(
        &self,
        tx: sqlx::Transaction<'static, sqlx::Any>,
        rows: u64,
        what: &'static str,
        change: Change,
    ) -> Result<()> {
        if rows == 0 {
            let key = match &change {
                Change::Device(k)
                | Change::Dn(k)
                | Change::Profile(k)
                | Change::Site(k)
                | Change::Switch(k) => k.clone(),
                Change::Template | Change::All => String::new(),
            };
            return Err(StoreError::NotFound { what, key });
        }
        self.commit_changes(tx, &[change]).await
    }
}

pub(super) async fn insert_dn(tx: &mut sqlx::Transaction<'_, sqlx::Any>, d: &Dn) -> Result<()> {
    sqlx::query(&format!(
        "INSERT INTO dns ({DN_COLS}) VALUES ($1, $2, $3, $4, $5)"
    ))
    .bind(&d.number)
    .bind(&d.password)
    .bind(&d.switch)
    .bind(&d.authenticate_requests)
    .bind(&d.display_name)
    .execute(&mut **tx)
    .await
    .map_err(|e| classify(e, "DN", &d.number))?;
    Ok(())
}

const PROFILE_COLS: &str =
    "name, kind, template, preferred_server, peer_server, params, allow_reassign, check_sync_event";
const DN_COLS: &str = "number, password, switch, authenticate_requests, display_name";

fn check_profile(p: &Profile) -> Result<()> {
    if p.name.trim().is_empty() {
        return Err(StoreError::Invalid("profile name is empty".into()));
    }
    let kind = p.kind().map_err(|e| StoreError::Invalid(e.to_string()))?;
    if serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&p.params).is_err() {
        return Err(StoreError::Invalid(format!(
            "profile `{}`: params must be a JSON object",
            p.name
        )));
    }
    if kind == ProfileKind::DisasterRecovery
        && (p.preferred_server.is_none() || p.peer_server.is_none())
    {
        return Err(StoreError::Invalid(format!(
            "profile `{}`: a disaster-recovery profile names a preferred and a peer SIP server",
            p.name
        )));
    }
    Ok(())
}

/// A DN is dial digits: it becomes a SIP user part and a file name component.
pub(super) fn check_dn(d: &Dn) -> Result<()> {
    if d.number.is_empty()
        || d.number.len() > 32
        || !d.number.bytes().all(|b| b.is_ascii_digit() || b == b'+')
    {
        return Err(StoreError::Invalid(format!(
            "DN `{}` must be 1 to 32 digits",
            d.number
        )));
    }
    if d.password.is_empty() {
        return Err(StoreError::Invalid(format!(
            "DN `{}` needs a password",
            d.number
        )));
    }
    d.auth_policy()
        .map_err(|e| StoreError::Invalid(format!("DN `{}`: {e}", d.number)))?;
    Ok(())
}
