//! Devices, their assignments and the audit log.

use serde::Serialize;

use super::model::{AuditEntry, Device, DevicePatch, NewDevice, Sighting};
use super::{classify, now_ms, Change, Result, Store, StoreError};

const DEVICE_COLS: &str = "mac, vendor, model, profile, dn, state, first_seen_ip, last_seen_ip, \
     first_seen_at, last_seen_at, user_agent, firmware, created_at, updated_at";

/// The result of an assignment, for the caller's log and the IVR's prompt.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AssignOutcome {
    pub mac: String,
    pub dn: String,
    /// The device that held the DN before, when the profile allowed taking it over.
    pub taken_from: Option<String>,
    /// The DN this device held before, if any.
    pub previous_dn: Option<String>,
    /// The DNs devices lost in this write (the former holder's, this device's previous one),
    /// for the SIP side to clear; not part of the API's answer.
    #[serde(skip)]
    pub freed: Vec<FreedDn>,
}

/// A DN a device lost in a write (unassigned, taken over by another device, replaced by
/// another DN, or deleted with its device): the SIP side removes the DN's bindings and tells
/// the device to re-fetch its file (`crate::sipside::deprovision`).
#[derive(Debug, Clone, PartialEq)]
pub struct FreedDn {
    pub dn: String,
    /// The device as it was before the write, its DN still set (a deleted device's row is
    /// gone; this is what its check-sync is sent with).
    pub device: Device,
    /// The device row was deleted.
    pub deleted: bool,
    /// `Some(old)`: the DN got a new random password in the same write, and `old` is the one
    /// the device's file gave it (what it answers a challenge to its check-sync with).
    pub rotated_from: Option<String>,
}

impl FreedDn {
    pub fn mac(&self) -> &str {
        &self.device.mac
    }
}

/// One line of a device import, already parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportLine {
    pub line: usize,
    pub device: NewDevice,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImportReport {
    pub imported: usize,
    /// `(line, message)` for every line that was refused; empty when the import committed.
    pub errors: Vec<(usize, String)>,
}

/// The filter of `devices` and `count_devices`: `$1` the search (empty for all), `$2` the same
/// as a LIKE pattern.
const DEVICE_SEARCH: &str =
    "($1 = '' OR mac LIKE $2 OR dn LIKE $2 OR model LIKE $2 OR vendor LIKE $2)";

impl Store {
    /// One page of the devices matching `search` (a substring of the MAC, DN, model or vendor),
    /// in MAC order.
    pub async fn devices(
        &self,
        search: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<Device>> {
        let q = format!(
            "SELECT {DEVICE_COLS} FROM devices WHERE {DEVICE_SEARCH} ORDER BY mac LIMIT $3 OFFSET $4"
        );
        let s = search.unwrap_or("");
        Ok(sqlx::query_as(&q)
            .bind(s)
            .bind(format!("%{s}%"))
            .bind(limit)
            .bind(offset)
            .fetch_all(&self.pool())
            .await?)
    }

    /// How many devices match `search`, the same filter as `devices` without its page.
    pub async fn count_devices(&self, search: Option<&str>) -> Result<i64> {
        let q = format!("SELECT COUNT(*) FROM devices WHERE {DEVICE_SEARCH}");
        let s = search.unwrap_or("");
        Ok(sqlx::query_scalar(&q)
            .bind(s)
            .bind(format!("%{s}%"))
            .fetch_one(&self.pool())
            .await?)
    }

    pub async fn device(&self, mac: &str) -> Result<Device> {
        self.find_device(mac)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                what: "device",
                key: mac.to_owned(),
            })
    }

    pub async fn find_device(&self, mac: &str) -> Result<Option<Device>> {
        Ok(
            sqlx::query_as(&format!("SELECT {DEVICE_COLS} FROM devices WHERE mac = $1"))
                .bind(mac)
                .fetch_optional(&self.pool())
                .await?,
        )
    }

    pub async fn device_by_dn(&self, dn: &str) -> Result<Option<Device>> {
        Ok(
            sqlx::query_as(&format!("SELECT {DEVICE_COLS} FROM devices WHERE dn = $1"))
                .bind(dn)
                .fetch_optional(&self.pool())
                .await?,
        )
    }

    /// Creates a device; `mac` must already be normalised by the caller.
    pub async fn create_device(&self, d: &NewDevice, actor: &str) -> Result<Device> {
        let mut tx = self.write_tx().await?;
        insert_device(&mut tx, d, actor).await?;
        self.commit_changes(tx, &[Change::Device(d.mac.clone())])
            .await?;
        self.device(&d.mac).await
    }

    pub async fn update_device(&self, mac: &str, p: &DevicePatch) -> Result<Device> {
        let mut tx = self.write_tx().await?;
        let done = sqlx::query(
            "UPDATE devices SET vendor = COALESCE($2, vendor), model = COALESCE($3, model), \
             profile = COALESCE($4, profile), updated_at = $5 WHERE mac = $1",
        )
        .bind(mac)
        .bind(&p.vendor)
        .bind(&p.model)
        .bind(&p.profile)
        .bind(now_ms())
        .execute(&mut *tx)
        .await
        .map_err(|e| classify(e, "device", mac))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                what: "device",
                key: mac.to_owned(),
            });
        }
        self.commit_changes(tx, &[Change::Device(mac.to_owned())])
            .await?;
        self.device(mac).await
    }

    pub async fn delete_device(&self, mac: &str, actor: &str) -> Result<()> {
        self.delete_device_freeing(mac, actor, false).await?;
        Ok(())
    }

    /// Deletes a device and returns the DN it held, if any, freed with it (and given a new
    /// password in the same transaction when `rotate`); the audit line names it.
    pub async fn delete_device_freeing(
        &self,
        mac: &str,
        actor: &str,
        rotate: bool,
    ) -> Result<Option<FreedDn>> {
        let mut tx = self.write_tx().await?;
        let device: Option<Device> =
            sqlx::query_as(&format!("SELECT {DEVICE_COLS} FROM devices WHERE mac = $1"))
                .bind(mac)
                .fetch_optional(&mut *tx)
                .await?;
        let done = sqlx::query("DELETE FROM devices WHERE mac = $1")
            .bind(mac)
            .execute(&mut *tx)
            .await?;
        let device = match device {
            Some(d) if done.rows_affected() > 0 => d,
            _ => {
                return Err(StoreError::NotFound {
                    what: "device",
                    key: mac.to_owned(),
                })
            }
        };
        let dn = device.dn.clone();
        let detail = dn.as_deref().map(|dn| format!("freed {dn}"));
        audit(
            &mut tx,
            mac,
            dn.as_deref(),
            "delete",
            actor,
            detail.as_deref(),
        )
        .await?;
        let mut changes = vec![Change::Device(mac.to_owned())];
        let freed = match dn {
            Some(dn) => Some(free(&mut tx, device, dn, true, rotate, actor, &mut changes).await?),
            None => None,
        };
        self.commit_changes(tx, &changes).await?;
        Ok(freed)
    }

    /// Records a provisioning fetch. An unknown MAC becomes an unassigned device (first seen
    /// here); a known one gets its last-seen fields refreshed. Returns whether it was new.
    pub async fn record_sighting(&self, s: &Sighting) -> Result<bool> {
        let inserted = sqlx::query(
            "INSERT INTO devices (mac, vendor, model, state, first_seen_ip, last_seen_ip, first_seen_at, \
             last_seen_at, user_agent, firmware, created_at, updated_at) \
             VALUES ($1, $2, $3, 'unassigned', $4, $4, $5, $5, $6, $7, $5, $5) ON CONFLICT (mac) DO NOTHING",
        )
        .bind(&s.mac)
        .bind(&s.vendor)
        .bind(&s.model)
        .bind(&s.ip)
        .bind(s.at)
        .bind(&s.user_agent)
        .bind(&s.firmware)
        .execute(&self.pool())
        .await?
        .rows_affected()
            == 1;
        if inserted {
            let mut tx = self.write_tx().await?;
            audit(
                &mut tx,
                &s.mac,
                None,
                "first-seen",
                "provisioning",
                Some(&s.ip),
            )
            .await?;
            tx.commit().await?;
        }
        Ok(inserted)
    }

    /// Writes a batch of sightings of known devices in one transaction (write-behind from the
    /// provisioning hot path). These do not bump the version: nothing served depends on them.
    pub async fn touch_devices(&self, batch: &[Sighting]) -> Result<()> {
        let mut tx = self.write_tx().await?;
        for s in batch {
            sqlx::query(
                "UPDATE devices SET last_seen_ip = $2, last_seen_at = $3, \
                 first_seen_ip = COALESCE(first_seen_ip, $2), first_seen_at = COALESCE(first_seen_at, $3), \
                 user_agent = COALESCE($4, user_agent), vendor = COALESCE(vendor, $5), \
                 model = COALESCE(model, $6), firmware = COALESCE($7, firmware) WHERE mac = $1",
            )
            .bind(&s.mac)
            .bind(&s.ip)
            .bind(s.at)
            .bind(&s.user_agent)
            .bind(&s.vendor)
            .bind(&s.model)
            .bind(&s.firmware)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Assigns `dn` to the device, committed (with its audit line) before this returns.
    ///
    /// A DN held by another device is refused with `Conflict` unless the device's profile
    /// allows reassignment, in which case the other device is unassigned in the same
    /// transaction. The unique index on `devices.dn` keeps two racing instances from both
    /// winning.
    pub async fn assign(&self, mac: &str, dn: &str, actor: &str) -> Result<AssignOutcome> {
        self.assign_rotating(mac, dn, actor, false).await
    }

    /// [`Store::assign`]; with `rotate`, each DN that leaves a device here (the one taken
    /// over, the one this device held before) gets a new random password in the same
    /// transaction. [`AssignOutcome::freed`] names them.
    pub async fn assign_rotating(
        &self,
        mac: &str,
        dn: &str,
        actor: &str,
        rotate: bool,
    ) -> Result<AssignOutcome> {
        let mut tx = self.write_tx().await?;
        let device: Option<Device> =
            sqlx::query_as(&format!("SELECT {DEVICE_COLS} FROM devices WHERE mac = $1"))
                .bind(mac)
                .fetch_optional(&mut *tx)
                .await?;
        let device = device.ok_or_else(|| StoreError::NotFound {
            what: "device",
            key: mac.to_owned(),
        })?;
        let exists: Option<String> = sqlx::query_scalar("SELECT number FROM dns WHERE number = $1")
            .bind(dn)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Err(StoreError::NotFound {
                what: "DN",
                key: dn.to_owned(),
            });
        }
        if device.dn.as_deref() == Some(dn) {
            return Ok(AssignOutcome {
                mac: mac.into(),
                dn: dn.into(),
                taken_from: None,
                previous_dn: None,
                freed: Vec::new(),
            });
        }
        let holder: Option<Device> =
            sqlx::query_as(&format!("SELECT {DEVICE_COLS} FROM devices WHERE dn = $1"))
                .bind(dn)
                .fetch_optional(&mut *tx)
                .await?;
        let mut taken_from = None;
        let mut taken = None;
        if let Some(holder) = holder {
            let allow: Option<i64> = match &device.profile {
                Some(p) => {
                    sqlx::query_scalar("SELECT allow_reassign FROM profiles WHERE name = $1")
                        .bind(p)
                        .fetch_optional(&mut *tx)
                        .await?
                }
                None => None,
            };
            if allow.unwrap_or(0) == 0 {
                return Err(StoreError::Conflict {
                    what: "DN assigned to another device",
                    key: dn.to_owned(),
                });
            }
            sqlx::query("UPDATE devices SET dn = NULL, state = 'unassigned', updated_at = $2 WHERE mac = $1")
                .bind(&holder.mac)
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
            audit(
                &mut tx,
                &holder.mac,
                Some(dn),
                "unassign",
                actor,
                Some(&format!("freed {dn}, taken over by {mac}")),
            )
            .await?;
            taken_from = Some(holder.mac.clone());
            taken = Some(holder);
        }
        sqlx::query(
            "UPDATE devices SET dn = $2, state = 'assigned', updated_at = $3 WHERE mac = $1",
        )
        .bind(mac)
        .bind(dn)
        .bind(now_ms())
        .execute(&mut *tx)
        .await
        .map_err(|e| match classify(e, "DN", dn) {
            StoreError::Conflict { key, .. } => StoreError::Conflict {
                what: "DN assigned to another device",
                key,
            },
            other => other,
        })?;
        audit(
            &mut tx,
            mac,
            Some(dn),
            "assign",
            actor,
            device
                .dn
                .as_deref()
                .map(|p| format!("was {p}, freed {p}"))
                .as_deref(),
        )
        .await?;
        // The DN's former holder (a take-over) loses its line too.
        let mut changes = vec![Change::Device(mac.to_owned())];
        changes.extend(taken_from.iter().cloned().map(Change::Device));
        let mut freed = Vec::new();
        if let Some(holder) = taken {
            freed.push(
                free(
                    &mut tx,
                    holder,
                    dn.to_owned(),
                    false,
                    rotate,
                    actor,
                    &mut changes,
                )
                .await?,
            );
        }
        let previous_dn = device.dn.clone();
        if let Some(previous) = previous_dn.clone() {
            freed.push(
                free(
                    &mut tx,
                    device,
                    previous,
                    false,
                    rotate,
                    actor,
                    &mut changes,
                )
                .await?,
            );
        }
        self.commit_changes(tx, &changes).await?;
        Ok(AssignOutcome {
            mac: mac.into(),
            dn: dn.into(),
            taken_from,
            previous_dn,
            freed,
        })
    }

    pub async fn unassign(&self, mac: &str, actor: &str) -> Result<Option<String>> {
        Ok(self
            .unassign_freeing(mac, actor, false)
            .await?
            .map(|f| f.dn))
    }

    /// Unassigns the device and returns the DN it freed, if any (given a new password in the
    /// same transaction when `rotate`); the audit line names it.
    pub async fn unassign_freeing(
        &self,
        mac: &str,
        actor: &str,
        rotate: bool,
    ) -> Result<Option<FreedDn>> {
        let mut tx = self.write_tx().await?;
        let device: Option<Device> =
            sqlx::query_as(&format!("SELECT {DEVICE_COLS} FROM devices WHERE mac = $1"))
                .bind(mac)
                .fetch_optional(&mut *tx)
                .await?;
        let device = device.ok_or_else(|| StoreError::NotFound {
            what: "device",
            key: mac.to_owned(),
        })?;
        let dn = device.dn.clone();
        sqlx::query(
            "UPDATE devices SET dn = NULL, state = 'unassigned', updated_at = $2 WHERE mac = $1",
        )
        .bind(mac)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        let detail = dn.as_deref().map(|dn| format!("freed {dn}"));
        audit(
            &mut tx,
            mac,
            dn.as_deref(),
            "unassign",
            actor,
            detail.as_deref(),
        )
        .await?;
        let mut changes = vec![Change::Device(mac.to_owned())];
        let freed = match dn {
            Some(dn) => Some(free(&mut tx, device, dn, false, rotate, actor, &mut changes).await?),
            None => None,
        };
        self.commit_changes(tx, &changes).await?;
        Ok(freed)
    }

    /// Imports devices all or nothing: every line is checked inside the transaction, and one
    /// bad line rolls the whole file back with a report naming each bad line.
    pub async fn import_devices(&self, lines: &[ImportLine], actor: &str) -> Result<ImportReport> {
        let mut tx = self.write_tx().await?;
        let mut errors = Vec::new();
        let mut seen_mac = std::collections::HashMap::new();
        let mut seen_dn = std::collections::HashMap::new();
        for l in lines {
            let d = &l.device;
            if let Some(first) = seen_mac.insert(d.mac.clone(), l.line) {
                errors.push((l.line, format!("MAC {} repeats line {first}", d.mac)));
                continue;
            }
            let exists: Option<String> =
                sqlx::query_scalar("SELECT mac FROM devices WHERE mac = $1")
                    .bind(&d.mac)
                    .fetch_optional(&mut *tx)
                    .await?;
            if exists.is_some() {
                errors.push((l.line, format!("device {} already exists", d.mac)));
                continue;
            }
            if let Some(p) = &d.profile {
                let found: Option<String> =
                    sqlx::query_scalar("SELECT name FROM profiles WHERE name = $1")
                        .bind(p)
                        .fetch_optional(&mut *tx)
                        .await?;
                if found.is_none() {
                    errors.push((l.line, format!("profile `{p}` does not exist")));
                    continue;
                }
            }
            if let Some(dn) = &d.dn {
                if let Some(first) = seen_dn.insert(dn.clone(), l.line) {
                    errors.push((l.line, format!("DN {dn} repeats line {first}")));
                    continue;
                }
                let found: Option<String> =
                    sqlx::query_scalar("SELECT number FROM dns WHERE number = $1")
                        .bind(dn)
                        .fetch_optional(&mut *tx)
                        .await?;
                if found.is_none() {
                    errors.push((l.line, format!("DN {dn} does not exist")));
                    continue;
                }
                let holder: Option<String> =
                    sqlx::query_scalar("SELECT mac FROM devices WHERE dn = $1")
                        .bind(dn)
                        .fetch_optional(&mut *tx)
                        .await?;
                if let Some(h) = holder {
                    errors.push((l.line, format!("DN {dn} is assigned to {h}")));
                    continue;
                }
            }
            if errors.is_empty() {
                insert_device(&mut tx, d, actor)
                    .await
                    .map_err(|e| match e {
                        StoreError::Db(_) => e,
                        other => StoreError::Invalid(format!("line {}: {other}", l.line)),
                    })?;
            }
        }
        if !errors.is_empty() {
            tx.rollback().await?;
            return Ok(ImportReport {
                imported: 0,
                errors,
            });
        }
        let changes: Vec<Change> = lines
            .iter()
            .map(|l| Change::Device(l.device.mac.clone()))
            .collect();
        self.commit_changes(tx, &changes).await?;
        Ok(ImportReport {
            imported: lines.len(),
            errors,
        })
    }

    /// Records an event about a device that changes no assignment (a check-sync sent, say).
    pub async fn add_audit(
        &self,
        mac: &str,
        dn: Option<&str>,
        action: &str,
        actor: &str,
        detail: Option<&str>,
    ) -> Result<()> {
        let mut tx = self.write_tx().await?;
        audit(&mut tx, mac, dn, action, actor, detail).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn audit_log(&self, mac: Option<&str>, limit: i64) -> Result<Vec<AuditEntry>> {
        Ok(sqlx::query_as(
            "SELECT id, at, mac, dn, action, actor, detail FROM audit WHERE ($1 = '' OR mac = $1) \
             ORDER BY id DESC LIMIT $2",
        )
        .bind(mac.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.pool())
        .await?)
    }
}

async fn insert_device(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    d: &NewDevice,
    actor: &str,
) -> Result<()> {
    let now = now_ms();
    let state = if d.dn.is_some() {
        "assigned"
    } else {
        "unassigned"
    };
    sqlx::query(
        "INSERT INTO devices (mac, vendor, model, profile, dn, state, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
    )
    .bind(&d.mac)
    .bind(&d.vendor)
    .bind(&d.model)
    .bind(&d.profile)
    .bind(&d.dn)
    .bind(state)
    .bind(now)
    .execute(&mut **tx)
    .await
    .map_err(|e| match classify(e, "device", &d.mac) {
        StoreError::Conflict { key, .. } if d.dn.is_some() && key == d.mac => {
            // The unique index that fired may be the DN's; say which one.
            StoreError::Conflict {
                what: "device or its DN",
                key,
            }
        }
        other => other,
    })?;
    if let Some(dn) = &d.dn {
        audit(tx, &d.mac, Some(dn), "assign", actor, None).await?;
    }
    Ok(())
}

/// Characters of a rotated DN password: letters and digits, 20 of them (about 119 bits).
const ROTATED_PASSWORD_LEN: usize = 20;

/// Records that `device` (as it was) lost `dn` in the write of `tx`; with `rotate`, the DN's
/// password is replaced by a new random one in the same transaction (its change queued with
/// the write's), so the phone's cached credentials stop working.
async fn free(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    device: Device,
    dn: String,
    deleted: bool,
    rotate: bool,
    actor: &str,
    changes: &mut Vec<Change>,
) -> Result<FreedDn> {
    let mut rotated_from = None;
    if rotate {
        let old: Option<String> = sqlx::query_scalar("SELECT password FROM dns WHERE number = $1")
            .bind(&dn)
            .fetch_optional(&mut **tx)
            .await?;
        if let Some(old) = old {
            use rand::Rng;
            let fresh: String = rand::thread_rng()
                .sample_iter(&rand::distributions::Alphanumeric)
                .take(ROTATED_PASSWORD_LEN)
                .map(char::from)
                .collect();
            sqlx::query("UPDATE dns SET password = $2 WHERE number = $1")
                .bind(&dn)
                .bind(&fresh)
                .execute(&mut **tx)
                .await?;
            audit(
                tx,
                &device.mac,
                Some(&dn),
                "rotate-password",
                actor,
                Some(&format!("freed {dn}: new password")),
            )
            .await?;
            changes.push(Change::Dn(dn.clone()));
            rotated_from = Some(old);
        }
    }
    Ok(FreedDn {
        dn,
        device,
        deleted,
        rotated_from,
    })
}

async fn audit(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    mac: &str,
    dn: Option<&str>,
    action: &str,
    actor: &str,
    detail: Option<&str>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO audit (at, mac, dn, action, actor, detail) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(now_ms())
    .bind(mac)
    .bind(dn)
    .bind(action)
    .bind(actor)
    .bind(detail)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
