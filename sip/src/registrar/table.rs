//! The in-memory binding table: sharded by AOR so concurrent REGISTERs for different AORs
//! do not contend, with a small device index for check-sync look-ups. A REGISTER's changes to
//! one AOR are computed on a copy and committed under the shard lock, all or nothing
//! (RFC 3261 §10.3 step 7).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;

use parking_lot::RwLock;

use super::binding::Binding;
use super::RegistrarError;

const SHARDS: usize = 64;

/// One requested change from a REGISTER.
#[derive(Debug, Clone)]
pub enum Op {
    /// Add or refresh (`expires_at` in the binding), or remove when `remove` is set.
    Upsert { binding: Binding, remove: bool },
    /// `Contact: *` with Expires 0.
    RemoveAll { call_id: String, cseq: u32 },
}

/// What a committed REGISTER did.
#[derive(Debug, Default)]
pub struct Outcome {
    pub inserted: Vec<Arc<Binding>>,
    pub refreshed: Vec<Arc<Binding>>,
    pub removed: Vec<Arc<Binding>>,
    /// Every binding of the AOR after the change (for the 200 OK).
    pub current: Vec<Arc<Binding>>,
}

pub struct BindingTable {
    shards: Vec<RwLock<HashMap<String, Vec<Arc<Binding>>>>>,
    devices: Vec<RwLock<HashMap<String, String>>>,
    hasher: std::collections::hash_map::RandomState,
}

impl Default for BindingTable {
    fn default() -> Self {
        BindingTable {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            devices: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            hasher: Default::default(),
        }
    }
}

impl BindingTable {
    fn idx(&self, key: &str) -> usize {
        let mut h = self.hasher.build_hasher();
        key.hash(&mut h);
        (h.finish() as usize) % SHARDS
    }

    /// Current (unexpired) bindings of an AOR.
    pub fn get(&self, aor: &str, now: u64) -> Vec<Arc<Binding>> {
        self.shards[self.idx(aor)]
            .read()
            .get(aor)
            .map(|v| v.iter().filter(|b| !b.is_expired(now)).cloned().collect())
            .unwrap_or_default()
    }

    /// The newest unexpired binding authenticated by `device`.
    pub fn by_device(&self, device: &str, now: u64) -> Option<Arc<Binding>> {
        let aor = self.devices[self.idx(device)].read().get(device).cloned()?;
        self.get(&aor, now)
            .into_iter()
            .filter(|b| b.device.as_deref() == Some(device))
            .max_by_key(|b| b.updated_at)
    }

    fn index_device(&self, b: &Binding) {
        if let Some(d) = &b.device {
            let mut m = self.devices[self.idx(d)].write();
            if m.get(d) != Some(&b.aor) {
                m.insert(d.clone(), b.aor.clone());
            }
        }
    }

    fn unindex_device(&self, b: &Binding) {
        if let Some(d) = &b.device {
            let mut m = self.devices[self.idx(d)].write();
            if m.get(d) == Some(&b.aor) {
                m.remove(d);
            }
        }
    }

    /// Inserts loaded bindings (start-up); no events, no store writes.
    pub fn load(&self, bindings: Vec<Binding>, now: u64) -> usize {
        let mut n = 0;
        for b in bindings {
            if b.is_expired(now) {
                continue;
            }
            self.index_device(&b);
            let mut shard = self.shards[self.idx(&b.aor)].write();
            let v = shard.entry(b.aor.clone()).or_default();
            let id = b.id();
            v.retain(|x| x.id() != id);
            v.push(Arc::new(b));
            n += 1;
        }
        n
    }

    /// Applies a REGISTER's operations to `aor` atomically.
    pub fn apply(&self, aor: &str, ops: Vec<Op>, now: u64, max_contacts: usize) -> Result<Outcome, RegistrarError> {
        let mut out = Outcome::default();
        {
            let mut shard = self.shards[self.idx(aor)].write();
            let existing = shard.get(aor).map(|v| v.as_slice()).unwrap_or(&[]);
            // Work on a copy; expired bindings are dropped silently here (the sweeper emits
            // their events, so leave them to it if not touched).
            let mut next: Vec<Arc<Binding>> = existing.to_vec();
            for op in ops {
                match op {
                    Op::RemoveAll { call_id, cseq } => {
                        // §10.3 step 6: same Call-ID needs a higher CSeq.
                        if next.iter().any(|b| b.call_id == call_id && cseq <= b.cseq) {
                            return Err(RegistrarError::OutOfOrder { aor: aor.to_string() });
                        }
                        out.removed.append(&mut next);
                    }
                    Op::Upsert { binding, remove } => {
                        let id = binding.id();
                        let pos = next.iter().position(|b| b.id() == id);
                        if let Some(p) = pos {
                            let old = &next[p];
                            if old.call_id == binding.call_id && binding.cseq <= old.cseq {
                                return Err(RegistrarError::OutOfOrder { aor: aor.to_string() });
                            }
                            if remove {
                                out.removed.push(next.remove(p));
                            } else {
                                let b = Arc::new(binding);
                                next[p] = b.clone();
                                out.refreshed.push(b);
                            }
                        } else if !remove {
                            let b = Arc::new(binding);
                            next.push(b.clone());
                            out.inserted.push(b);
                        }
                    }
                }
            }
            let live = next.iter().filter(|b| !b.is_expired(now)).count();
            if live > max_contacts && !out.inserted.is_empty() {
                return Err(RegistrarError::TooManyContacts { aor: aor.to_string(), max: max_contacts });
            }
            if next.is_empty() {
                shard.remove(aor);
            } else {
                shard.insert(aor.to_string(), next.clone());
            }
            out.current = next.into_iter().filter(|b| !b.is_expired(now)).collect();
        }
        for b in out.inserted.iter().chain(out.refreshed.iter()) {
            self.index_device(b);
        }
        for b in &out.removed {
            self.unindex_device(b);
        }
        Ok(out)
    }

    /// Removes expired bindings, returning them.
    pub fn sweep(&self, now: u64) -> Vec<Arc<Binding>> {
        let mut gone = Vec::new();
        for shard in &self.shards {
            // Look first under the read lock: most sweeps find nothing in most shards.
            if !shard.read().values().any(|v| v.iter().any(|b| b.is_expired(now))) {
                continue;
            }
            let mut s = shard.write();
            s.retain(|_, v| {
                v.retain(|b| {
                    if b.is_expired(now) {
                        gone.push(b.clone());
                        false
                    } else {
                        true
                    }
                });
                !v.is_empty()
            });
        }
        for b in &gone {
            self.unindex_device(b);
        }
        gone
    }

    /// Number of bindings (including not yet swept expired ones).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().values().map(Vec::len).sum::<usize>()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every unexpired binding (for admin views; walks all shards).
    pub fn all(&self, now: u64) -> Vec<Arc<Binding>> {
        let mut out = Vec::new();
        for s in &self.shards {
            for v in s.read().values() {
                out.extend(v.iter().filter(|b| !b.is_expired(now)).cloned());
            }
        }
        out
    }
}
