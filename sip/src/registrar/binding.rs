//! A binding (RFC 3261 §10): one contact of an address-of-record, with what routing and
//! check-sync need later — the flow it arrived on and the device (digest user) behind it.

use std::sync::Arc;

use crate::transport::Flow;

#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    /// The AOR key (the To user, or `user@host` when the registrar is multi-domain).
    pub aor: String,
    /// Contact URI (without angle brackets and without header parameters).
    pub contact: String,
    /// The contact's other header parameters as received (`;+sip.instance=…;reg-id=1;…`),
    /// minus `expires` and `q`, echoed in 200 OK.
    pub contact_params: String,
    /// q-value in thousandths (RFC 3261 §20.10), if given.
    pub q: Option<u16>,
    /// Absolute expiry, Unix seconds (durable across restarts).
    pub expires_at: u64,
    pub call_id: String,
    pub cseq: u32,
    /// RFC 5626 `+sip.instance` (with its `<urn:…>` brackets).
    pub instance: Option<String>,
    /// RFC 5626 `reg-id`.
    pub reg_id: Option<u32>,
    /// RFC 3327 Path header values, in order.
    pub path: Vec<String>,
    pub user_agent: Option<String>,
    /// The digest user that authenticated this binding (per-device credentials for the shared
    /// `gcti_provisioning` AOR), if the REGISTER was authenticated.
    pub device: Option<String>,
    /// The flow the REGISTER arrived on; requests to this contact go down it while it lives.
    pub flow: Option<Flow>,
    /// Unix seconds of the last REGISTER that touched it.
    pub updated_at: u64,
}

impl Binding {
    /// The identity of a binding within its AOR (RFC 5626 §6: instance + reg-id when present,
    /// otherwise the contact URI). Also the store's key together with the AOR.
    pub fn id(&self) -> String {
        match (&self.instance, self.reg_id) {
            (Some(i), Some(r)) => format!("{i};reg-id={r}"),
            (Some(i), None) => i.clone(),
            _ => self.contact.clone(),
        }
    }

    /// Whether `other` is the same binding ([`Binding::id`] equality, without allocating).
    pub fn same_id(&self, other: &Binding) -> bool {
        match (&self.instance, &other.instance) {
            (Some(a), Some(b)) => a == b && self.reg_id == other.reg_id,
            (None, None) => self.contact == other.contact,
            _ => false,
        }
    }

    pub fn remaining(&self, now: u64) -> u64 {
        self.expires_at.saturating_sub(now)
    }

    pub fn is_expired(&self, now: u64) -> bool {
        self.expires_at <= now
    }

    /// The Contact header value for a 200 OK listing.
    pub fn contact_header(&self, now: u64) -> String {
        let mut s = format!("<{}>", self.contact);
        s.push_str(&self.contact_params);
        if let Some(q) = self.q {
            s.push_str(&format!(";q={}", format_q(q)));
        }
        s.push_str(&format!(";expires={}", self.remaining(now)));
        s
    }
}

pub fn format_q(q: u16) -> String {
    let s = format!("{}.{:03}", q / 1000, q % 1000);
    let s = s.trim_end_matches('0');
    s.strip_suffix('.')
        .map(|x| format!("{x}.0"))
        .unwrap_or_else(|| s.to_string())
}

/// A change of the binding table, published on a broadcast channel (the Kamailio usrloc
/// callback set: insert, refresh, remove, expire).
#[derive(Debug, Clone)]
pub enum BindingEvent {
    Inserted(Arc<Binding>),
    Refreshed(Arc<Binding>),
    Removed(Arc<Binding>),
    Expired(Arc<Binding>),
}

impl BindingEvent {
    pub fn binding(&self) -> &Arc<Binding> {
        match self {
            BindingEvent::Inserted(b)
            | BindingEvent::Refreshed(b)
            | BindingEvent::Removed(b)
            | BindingEvent::Expired(b) => b,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q_formatting() {
        assert_eq!(format_q(1000), "1.0");
        assert_eq!(format_q(500), "0.5");
        assert_eq!(format_q(125), "0.125");
        assert_eq!(format_q(0), "0.0");
    }
}
