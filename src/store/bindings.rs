//! Registrar bindings, persisted so that a restart loses none and another instance can find
//! them. The registrar keeps the hot copy in memory; this is its write-behind target. The
//! binding's own fields travel as an opaque JSON document so that this module does not need to
//! change whenever the registrar learns a new contact parameter.

use super::{now_ms, Backend, Result, Store};

#[derive(Debug, Clone, PartialEq)]
pub struct StoredBinding {
    pub aor: String,
    pub contact: String,
    pub expires_at: i64,
    pub data: String,
    /// The digest user that registered it (a DN, or a `dm-<mac>` device user): indexed, so
    /// that any instance can find a device's binding without reading every document.
    pub device: Option<String>,
    /// The id of the instance whose registrar holds the binding's flow (see `crate::sipside::checksync::handover`).
    pub holder: Option<String>,
}

type Row = (String, String, i64, String, Option<String>, Option<String>);
const COLUMNS: &str = "aor, contact, expires_at, data, device, holder";

/// Rows per multi-row statement: 6 parameters each stays far below SQLite's 32 766 and
/// PostgreSQL's 65 535 bind parameters.
const ROWS_PER_STATEMENT: usize = 500;

/// `($1, $2, $3), ($4, $5, $6), …` for `rows` rows of `cols` columns; `(?, ?, ?), …` on
/// SQLite, whose look-up of a parameter's name is a linear scan of every named parameter of
/// the statement (quadratic in a multi-row statement; anonymous ones are not scanned).
fn placeholders(backend: Backend, rows: usize, cols: usize) -> String {
    let mut out = String::with_capacity(rows * cols * 5);
    for r in 0..rows {
        if r > 0 {
            out.push_str(", ");
        }
        out.push('(');
        for c in 0..cols {
            if c > 0 {
                out.push_str(", ");
            }
            out.push_str(&param(backend, r * cols + c + 1));
        }
        out.push(')');
    }
    out
}

/// The `n`th (1-based) bind parameter in `backend`'s syntax.
fn param(backend: Backend, n: usize) -> String {
    match backend {
        Backend::Sqlite => "?".to_owned(),
        Backend::Postgres => format!("${n}"),
    }
}

/// The last change of each (AOR, contact), in first-seen order.
fn last_per_key(rows: &[StoredBinding]) -> Vec<&StoredBinding> {
    let mut index: std::collections::HashMap<(&str, &str), usize> =
        std::collections::HashMap::with_capacity(rows.len());
    let mut out: Vec<&StoredBinding> = Vec::with_capacity(rows.len());
    for b in rows {
        match index.entry((b.aor.as_str(), b.contact.as_str())) {
            std::collections::hash_map::Entry::Occupied(e) => out[*e.get()] = b,
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(out.len());
                out.push(b);
            }
        }
    }
    out
}

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
        .fetch_all(&self.pool())
        .await?;
        Ok(rows.into_iter().map(StoredBinding::from_row).collect())
    }

    pub async fn bindings_of(&self, aor: &str) -> Result<Vec<StoredBinding>> {
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM bindings WHERE aor = $1 AND expires_at > $2"
        ))
        .bind(aor)
        .bind(now_ms())
        .fetch_all(&self.pool())
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
        .fetch_optional(&self.pool())
        .await?;
        Ok(row.map(StoredBinding::from_row))
    }

    /// Applies one write-behind batch atomically: upserts, then removals.
    ///
    /// Rows go in multi-row statements of [`ROWS_PER_STATEMENT`]: with SQLite every statement
    /// is a round trip to sqlx's database thread (a channel send and a thread wake-up), which
    /// under a registration storm cost more than the SQL itself. PostgreSQL refuses an
    /// `ON CONFLICT DO UPDATE` that touches one row twice, so a batch keeps the last change
    /// per binding (the registrar already coalesces; this makes it a guarantee here).
    pub async fn write_bindings(
        &self,
        upserts: &[StoredBinding],
        removals: &[(String, String)],
    ) -> Result<()> {
        if upserts.is_empty() && removals.is_empty() {
            return Ok(());
        }
        let upserts = last_per_key(upserts);
        let mut tx = self.write_tx().await?;
        for chunk in upserts.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO bindings ({COLUMNS}) VALUES {} \
                 ON CONFLICT (aor, contact) DO UPDATE SET expires_at = excluded.expires_at, data = excluded.data, \
                 device = excluded.device, holder = excluded.holder",
                placeholders(self.backend(), chunk.len(), 6)
            );
            let mut q = sqlx::query(&sql);
            // Borrowed: binding a `&String` copies it into the arguments, a `&str` does not.
            for b in chunk {
                q = q
                    .bind(b.aor.as_str())
                    .bind(b.contact.as_str())
                    .bind(b.expires_at)
                    .bind(b.data.as_str())
                    .bind(b.device.as_deref())
                    .bind(b.holder.as_deref());
            }
            q.execute(&mut *tx).await?;
        }
        for chunk in removals.chunks(ROWS_PER_STATEMENT) {
            let matches: Vec<String> = (0..chunk.len())
                .map(|i| {
                    let b = self.backend();
                    format!(
                        "(aor = {} AND contact = {})",
                        param(b, 2 * i + 1),
                        param(b, 2 * i + 2)
                    )
                })
                .collect();
            let sql = format!("DELETE FROM bindings WHERE {}", matches.join(" OR "));
            let mut q = sqlx::query(&sql);
            for (aor, contact) in chunk {
                q = q.bind(aor.as_str()).bind(contact.as_str());
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Deletes every stored binding of `aor`, whichever instance wrote it, and returns them
    /// (the AOR, a DN, changed hands: no instance may restore or use them).
    pub async fn take_bindings_of(&self, aor: &str) -> Result<Vec<StoredBinding>> {
        let mut tx = self.write_tx().await?;
        let rows: Vec<Row> =
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM bindings WHERE aor = $1"))
                .bind(aor)
                .fetch_all(&mut *tx)
                .await?;
        sqlx::query("DELETE FROM bindings WHERE aor = $1")
            .bind(aor)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(rows.into_iter().map(StoredBinding::from_row).collect())
    }

    /// Drops bindings whose expiry passed (housekeeping; the registrar expires its own copy).
    pub async fn purge_expired_bindings(&self) -> Result<u64> {
        Ok(sqlx::query("DELETE FROM bindings WHERE expires_at <= $1")
            .bind(now_ms())
            .execute(&self.pool())
            .await?
            .rows_affected())
    }
}
