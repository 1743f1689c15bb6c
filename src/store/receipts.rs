//! Fetch receipts: which file each device last downloaded (see the migration
//! `0005_receipts.sql`). Written behind the response with the sightings; read by fleet
//! operations to tell which phones are out of date and whether a check-sync was followed by a
//! re-fetch.

use serde::Serialize;

use super::{Result, Store};

/// A device's last download of one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Receipt {
    pub mac: String,
    /// The file name as requested (`001565000001.cfg`).
    pub file: String,
    /// The ETag of what was served.
    pub etag: String,
    /// Unix milliseconds.
    pub fetched_at: i64,
    pub ip: String,
    pub host: Option<String>,
    pub base_url: Option<String>,
    pub user_agent: Option<String>,
    pub firmware: Option<String>,
    /// The configuration that rendered it (`Dm::renderer_tag`).
    pub renderer: String,
}

const COLS: &str =
    "mac, file, etag, fetched_at, ip, host, base_url, user_agent, firmware, renderer";

impl Store {
    /// Records downloads, the newest per (device, file) winning; receipts of devices that
    /// are gone are skipped (the device was deleted while the batch waited).
    pub async fn put_receipts(&self, batch: &[Receipt]) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut tx = self.write_tx().await?;
        for r in batch {
            sqlx::query(&format!(
                "INSERT INTO receipts ({COLS}) \
                 SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10 WHERE EXISTS (SELECT 1 FROM devices WHERE mac = $1) \
                 ON CONFLICT (mac, file) DO UPDATE SET etag = excluded.etag, fetched_at = excluded.fetched_at, \
                 ip = excluded.ip, host = excluded.host, base_url = excluded.base_url, \
                 user_agent = excluded.user_agent, firmware = excluded.firmware, renderer = excluded.renderer \
                 WHERE excluded.fetched_at >= receipts.fetched_at"
            ))
            .bind(&r.mac)
            .bind(&r.file)
            .bind(&r.etag)
            .bind(r.fetched_at)
            .bind(&r.ip)
            .bind(&r.host)
            .bind(&r.base_url)
            .bind(&r.user_agent)
            .bind(&r.firmware)
            .bind(&r.renderer)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The receipts of these devices (all devices when `macs` is `None`), by device.
    pub async fn receipts(&self, macs: Option<&[String]>) -> Result<Vec<Receipt>> {
        match macs {
            None => Ok(
                sqlx::query_as(&format!("SELECT {COLS} FROM receipts ORDER BY mac, file"))
                    .fetch_all(&self.pool())
                    .await?,
            ),
            Some(macs) => {
                let mut out = Vec::new();
                // One query per chunk: placeholders are bounded on both backends.
                for chunk in macs.chunks(500) {
                    let list = (1..=chunk.len())
                        .map(|i| format!("${i}"))
                        .collect::<Vec<_>>()
                        .join(", ");
                    let sql = format!(
                        "SELECT {COLS} FROM receipts WHERE mac IN ({list}) ORDER BY mac, file"
                    );
                    let mut q = sqlx::query_as::<_, Receipt>(&sql);
                    for m in chunk {
                        q = q.bind(m);
                    }
                    out.extend(q.fetch_all(&self.pool()).await?);
                }
                Ok(out)
            }
        }
    }
}
