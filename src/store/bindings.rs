//! Registrar bindings, persisted so that a restart loses none and another instance can find
//! them. The registrar keeps the hot copy in memory; this is its write-behind target. The
//! binding's own fields travel as an opaque JSON document so that this module does not need to
//! change whenever the registrar learns a new contact parameter.

use super::{now_ms, Result, Store};

#[derive(Debug, Clone, PartialEq)]
pub struct StoredBinding {
    pub aor: String,
    pub contact: String,
    pub expires_at: i64,
    pub data: String,
    /// The digest user that registered it (a DN, or a `dm-<mac>` device user): indexed, so
    /// that any instance can find a device's binding without reading every document.
    pub device: Option<String>,
    /// The id of the instance whose registrar holds the binding's flow (see `crate::cluster`).
    pub holder: Option<String>,
}

type Row = (String, String, i64, String, Option<String>, Option<String>);
const COLUMNS: &str = "aor, contact, expires_at, data, device, holder";

impl StoredBinding {
    fn from_row((aor, contact, expires_at, data, device, holder): Row) -> Self {
        StoredBinding {
            aor,
            contact,
            expires_at,
            data,
            device,
            holder,
        }
    }
}

impl Store {
    /// Every binding that has not yet expired.
    pub async fn load_bindings(&self) -> Result<Vec<StoredBinding>> {
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM bindings WHERE expires_at > $1"
        ))
        .bind(now_ms())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(StoredBinding::from_row).collect())
    }

    pub async fn bindings_of(&self, aor: &str) -> Result<Vec<StoredBinding>> {
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM bindings WHERE aor = $1 AND expires_at > $2"
        ))
        .bind(aor)
        .bind(now_ms())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(StoredBinding::from_row).collect())
    }

    /// The live binding registered by digest user `device` that expires last (the newest
    /// registration), whichever instance holds it.
    pub async fn binding_of_device(&self, device: &str) -> Result<Option<StoredBinding>> {
        let row: Option<Row> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM bindings WHERE device = $1 AND expires_at > $2 ORDER BY expires_at DESC LIMIT 1"
        ))
        .bind(device)
        .bind(now_ms())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(StoredBinding::from_row))
    }

    /// Applies one write-behind batch atomically: upserts, then removals.
    pub async fn write_bindings(
        &self,
        upserts: &[StoredBinding],
        removals: &[(String, String)],
    ) -> Result<()> {
        if upserts.is_empty() && removals.is_empty() {
            return Ok(());
        }
        let mut tx = self.write_tx().await?;
        for b in upserts {
            sqlx::query(
                "INSERT INTO bindings (aor, contact, expires_at, data, device, holder) VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (aor, contact) DO UPDATE SET expires_at = excluded.expires_at, data = excluded.data, \
                 device = excluded.device, holder = excluded.holder",
            )
            .bind(&b.aor)
            .bind(&b.contact)
            .bind(b.expires_at)
            .bind(&b.data)
            .bind(&b.device)
            .bind(&b.holder)
            .execute(&mut *tx)
            .await?;
        }
        for (aor, contact) in removals {
            sqlx::query("DELETE FROM bindings WHERE aor = $1 AND contact = $2")
                .bind(aor)
                .bind(contact)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Drops bindings whose expiry passed (housekeeping; the registrar expires its own copy).
    pub async fn purge_expired_bindings(&self) -> Result<u64> {
        Ok(sqlx::query("DELETE FROM bindings WHERE expires_at <= $1")
            .bind(now_ms())
            .execute(&self.pool)
            .await?
            .rows_affected())
    }
}
