//! The registrar's bindings in SQL, so a restart loses none and another instance can find
//! them. The registrar keeps the hot copy in memory and writes here behind its responses.
//!
//! A binding travels as a JSON document (the `bindings.data` column) keyed by its AOR and its
//! RFC 5626 identity, so the store needs no schema change when the registrar learns a field.

use std::sync::Arc;

use serde_json::Value;
use sip::registrar::{Binding, BindingChange, BindingStore, StoreError};
use sip::transport::Flow;
use sip::BoxFuture;

use crate::store::{Store, StoredBinding};

pub struct SqlBindings {
    store: Store,
    /// This instance's id, written with every binding so that another instance sharing the
    /// database knows whom to hand a check-sync down this binding's flow (`crate::sipside::checksync::handover`).
    holder: String,
}

impl SqlBindings {
    pub fn new(store: Store, holder: String) -> Self {
        SqlBindings { store, holder }
    }
}

impl BindingStore for SqlBindings {
    fn load_all(&self) -> BoxFuture<'_, Result<Vec<Binding>, StoreError>> {
        Box::pin(async move {
            let rows = self
                .store
                .load_bindings()
                .await
                .map_err(|e| StoreError(e.to_string()))?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                match from_row(&row) {
                    Some(b) => out.push(b),
                    None => {
                        tracing::warn!(aor = %row.aor, contact = %row.contact, "unreadable stored binding skipped")
                    }
                }
            }
            Ok(out)
        })
    }

    fn apply(&self, batch: Vec<BindingChange>) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let mut upserts = Vec::new();
            let mut removals = Vec::new();
            for change in batch {
                match change {
                    BindingChange::Upsert(b) => upserts.push(to_row(&b, Some(&self.holder))),
                    BindingChange::Remove { aor, id } => removals.push((aor, id)),
                }
            }
            self.store
                .write_bindings(&upserts, &removals)
                .await
                .map_err(|e| StoreError(e.to_string()))
        })
    }
}

/// The stored document of a binding: the same field names [`from_row`] reads, serialised
/// straight from borrowed fields (a `json!` tree allocated a map and every key per binding,
/// a visible cost under a registration storm).
#[derive(serde::Serialize)]
struct Document<'a> {
    contact: &'a str,
    contact_params: &'a str,
    q: Option<u16>,
    expires_at: u64,
    call_id: &'a str,
    cseq: u32,
    instance: Option<&'a str>,
    reg_id: Option<u32>,
    path: &'a [String],
    user_agent: Option<&'a str>,
    device: Option<&'a str>,
    flow: Option<String>,
    updated_at: u64,
}

/// The row of a binding held by instance `holder`.
pub fn to_row(b: &Arc<Binding>, holder: Option<&str>) -> StoredBinding {
    let doc = Document {
        contact: &b.contact,
        contact_params: &b.contact_params,
        q: b.q,
        expires_at: b.expires_at,
        call_id: &b.call_id,
        cseq: b.cseq,
        instance: b.instance.as_deref(),
        reg_id: b.reg_id,
        path: &b.path,
        user_agent: b.user_agent.as_deref(),
        device: b.device.as_deref(),
        flow: b.flow.map(|f| f.token()),
        updated_at: b.updated_at,
    };
    StoredBinding {
        aor: b.aor.clone(),
        contact: b.id(),
        expires_at: (b.expires_at as i64).saturating_mul(1000),
        // Serialising plain strings and numbers cannot fail.
        data: serde_json::to_string(&doc).unwrap_or_default(),
        device: b.device.clone(),
        holder: holder.map(str::to_owned),
    }
}

pub fn from_row(row: &StoredBinding) -> Option<Binding> {
    let v: Value = serde_json::from_str(&row.data).ok()?;
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(String::from);
    let u = |k: &str| v.get(k).and_then(Value::as_u64);
    Some(Binding {
        aor: row.aor.clone(),
        contact: s("contact")?,
        contact_params: s("contact_params").unwrap_or_default(),
        q: u("q").and_then(|q| u16::try_from(q).ok()),
        expires_at: u("expires_at")?,
        call_id: s("call_id").unwrap_or_default(),
        cseq: u("cseq").and_then(|c| u32::try_from(c).ok()).unwrap_or(0),
        instance: s("instance"),
        reg_id: u("reg_id").and_then(|r| u32::try_from(r).ok()),
        path: v
            .get("path")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|p| p.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default(),
        user_agent: s("user_agent"),
        device: s("device"),
        flow: s("flow").and_then(|t| Flow::from_token(&t)),
        updated_at: u("updated_at").unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binding_round_trips_through_a_row() {
        let b = Arc::new(Binding {
            aor: "gcti_provisioning".into(),
            contact: "sip:gcti_provisioning@10.0.0.7:5062;transport=tcp".into(),
            contact_params: ";+sip.instance=\"<urn:uuid:1>\";reg-id=1".into(),
            q: Some(500),
            expires_at: 1_900_000_000,
            call_id: "abc@10.0.0.7".into(),
            cseq: 42,
            instance: Some("<urn:uuid:1>".into()),
            reg_id: Some(1),
            path: vec!["<sip:edge.example;lr>".into()],
            user_agent: Some("Yealink SIP-T46S".into()),
            device: Some("dm-001565000001".into()),
            flow: Flow::from_token("tcp:127.0.0.1:5060;10.0.0.7:40000;7"),
            updated_at: 1_899_999_000,
        });
        let row = to_row(&b, Some("i-1"));
        assert_eq!(row.device.as_deref(), Some("dm-001565000001"));
        assert_eq!(row.holder.as_deref(), Some("i-1"));
        assert_eq!(row.contact, b.id());
        assert_eq!(row.expires_at, 1_900_000_000_000);
        assert_eq!(from_row(&row).as_ref(), Some(&*b));
        assert!(from_row(&StoredBinding {
            data: "{".into(),
            ..row
        })
        .is_none());
    }
}
