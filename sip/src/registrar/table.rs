//! The in-memory binding table: sharded by AOR so concurrent REGISTERs for different AORs
//! do not contend, with a small device index for check-sync look-ups. A REGISTER's changes to
//! one AOR are computed on a copy and committed under the shard lock, all or nothing
//! (RFC 3261 §10.3 step 7).

use crate::fastmap::{self, FastMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

use super::binding::Binding;
use super::RegistrarError;

const SHARDS: usize = 64;

/// One requested change from a REGISTER (short-lived, so the size difference between
/// variants does not matter).
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)]
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
    shards: Vec<RwLock<FastMap<String, Vec<Arc<Binding>>>>>,
    /// Per shard, no binding in it expires before this (Unix seconds): lets the sweeper skip
    /// shards without walking them.
    earliest: Vec<AtomicU64>,
    devices: Vec<RwLock<FastMap<String, String>>>,
}

impl Default for BindingTable {
    fn default() -> Self {
        BindingTable {
            shards: (0..SHARDS)
                .map(|_| RwLock::new(fastmap::with_capacity(0)))
                .collect(),
            earliest: (0..SHARDS).map(|_| AtomicU64::new(u64::MAX)).collect(),
            devices: (0..SHARDS)
                .map(|_| RwLock::new(fastmap::with_capacity(0)))
                .collect(),
        }
    }
}

impl BindingTable {
    /// Shard of a key: FNV-1a (cheap; the maps inside keep a seeded, flood-resistant hasher).
    fn idx(&self, key: &str) -> usize {
        let h = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        });
        (h as usize) % SHARDS
    }

    fn note_expiry(&self, shard: usize, at: u64) {
        self.earliest[shard].fetch_min(at, Ordering::Relaxed);
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
            let i = self.idx(&b.aor);
            self.note_expiry(i, b.expires_at);
            let mut shard = self.shards[i].write();
            let v = shard.entry(b.aor.clone()).or_default();
            v.retain(|x| !x.same_id(&b));
            v.push(Arc::new(b));
            n += 1;
        }
        n
    }

    /// Applies a REGISTER's operations to `aor` atomically.
    pub fn apply(
        &self,
        aor: &str,
        ops: Vec<Op>,
        now: u64,
        max_contacts: usize,
    ) -> Result<Outcome, RegistrarError> {
        let mut out = Outcome::default();
        let si = self.idx(aor);
        {
            let mut shard = self.shards[si].write();
            let existing = shard.get(aor).map(|v| v.as_slice()).unwrap_or(&[]);
            // Work on a copy; expired bindings are dropped silently here (the sweeper emits
            // their events, so leave them to it if not touched).
            let mut next: Vec<Arc<Binding>> = existing.to_vec();
            for op in ops {
                match op {
                    Op::RemoveAll { call_id, cseq } => {
                        // §10.3 step 6: same Call-ID needs a higher CSeq.
                        if next.iter().any(|b| b.call_id == call_id && cseq <= b.cseq) {
                            return Err(RegistrarError::OutOfOrder {
                                aor: aor.to_string(),
                            });
                        }
                        out.removed.append(&mut next);
                    }
                    Op::Upsert { binding, remove } => {
                        let pos = next.iter().position(|b| b.same_id(&binding));
                        if let Some(p) = pos {
                            let old = &next[p];
                            if old.call_id == binding.call_id && binding.cseq <= old.cseq {
                                return Err(RegistrarError::OutOfOrder {
                                    aor: aor.to_string(),
                                });
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
                return Err(RegistrarError::TooManyContacts {
                    aor: aor.to_string(),
                    max: max_contacts,
                });
            }
            for b in out.inserted.iter().chain(out.refreshed.iter()) {
                self.note_expiry(si, b.expires_at);
            }
            out.current = next
                .iter()
                .filter(|b| !b.is_expired(now))
                .cloned()
                .collect();
            if next.is_empty() {
                shard.remove(aor);
            } else if let Some(slot) = shard.get_mut(aor) {
                *slot = next;
            } else {
                shard.insert(aor.to_string(), next);
            }
        }
        for b in out.inserted.iter().chain(out.refreshed.iter()) {
            self.index_device(b);
        }
        for b in &out.removed {
            self.unindex_device(b);
        }
        Ok(out)
    }

    /// Removes every binding of `aor`, expired or not, returning them (the AOR changed hands
    /// outside REGISTER: its old contacts must not be reached through it any more).
    pub fn remove_aor(&self, aor: &str) -> Vec<Arc<Binding>> {
        let gone = self.shards[self.idx(aor)]
            .write()
            .remove(aor)
            .unwrap_or_default();
        for b in &gone {
            self.unindex_device(b);
        }
        gone
    }

    /// Removes expired bindings, returning them.
    pub fn sweep(&self, now: u64) -> Vec<Arc<Binding>> {
        let mut gone = Vec::new();
        for (i, shard) in self.shards.iter().enumerate() {
            if self.earliest[i].load(Ordering::Relaxed) > now {
                continue;
            }
            let mut s = shard.write();
            let mut earliest = u64::MAX;
            s.retain(|_, v| {
                v.retain(|b| {
                    if b.is_expired(now) {
                        gone.push(b.clone());
                        false
                    } else {
                        earliest = earliest.min(b.expires_at);
                        true
                    }
                });
                !v.is_empty()
            });
            // Under the write lock no apply can lower it concurrently.
            self.earliest[i].store(earliest, Ordering::Relaxed);
        }
        for b in &gone {
            self.unindex_device(b);
        }
        gone
    }

    /// Number of bindings (including not yet swept expired ones).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().values().map(Vec::len).sum::<usize>())
            .sum()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn b(
        aor: &str,
        contact: &str,
        call_id: &str,
        cseq: u32,
        expires_at: u64,
        device: Option<&str>,
    ) -> Binding {
        Binding {
            aor: aor.into(),
            contact: contact.into(),
            contact_params: String::new(),
            q: None,
            expires_at,
            call_id: call_id.into(),
            cseq,
            instance: None,
            reg_id: None,
            path: vec![],
            user_agent: None,
            device: device.map(Into::into),
            flow: None,
            updated_at: 0,
        }
    }

    fn up(x: Binding) -> Op {
        Op::Upsert {
            binding: x,
            remove: false,
        }
    }

    #[test]
    fn insert_refresh_order_remove_sweep() {
        let t = BindingTable::default();
        let o = t
            .apply(
                "1000",
                vec![
                    up(b("1000", "sip:a@1", "c", 1, 200, Some("dev1"))),
                    up(b("1000", "sip:b@1", "c", 1, 150, None)),
                ],
                100,
                10,
            )
            .unwrap();
        assert_eq!((o.inserted.len(), o.current.len()), (2, 2));
        assert_eq!(t.by_device("dev1", 100).unwrap().contact, "sip:a@1");
        // Same Call-ID, same CSeq: out of order, nothing changes.
        assert!(matches!(
            t.apply(
                "1000",
                vec![up(b("1000", "sip:a@1", "c", 1, 300, None))],
                100,
                10
            ),
            Err(RegistrarError::OutOfOrder { .. })
        ));
        // A new Call-ID (phone rebooted) refreshes regardless of CSeq.
        let o = t
            .apply(
                "1000",
                vec![up(b("1000", "sip:a@1", "d", 1, 300, Some("dev1")))],
                100,
                10,
            )
            .unwrap();
        assert_eq!(o.refreshed.len(), 1);
        // Too many contacts: all or nothing.
        assert!(t
            .apply(
                "1000",
                vec![up(b("1000", "sip:c@1", "c", 9, 300, None))],
                100,
                2
            )
            .is_err());
        assert_eq!(t.get("1000", 100).len(), 2);
        // Sweep at 160: the binding expiring at 150 goes.
        let gone = t.sweep(160);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].contact, "sip:b@1");
        assert!(t.sweep(160).is_empty());
        let o = t
            .apply(
                "1000",
                vec![Op::Upsert {
                    binding: b("1000", "sip:a@1", "d", 2, 0, None),
                    remove: true,
                }],
                160,
                10,
            )
            .unwrap();
        assert_eq!(o.removed.len(), 1);
        assert!(t.is_empty());
        assert!(t.by_device("dev1", 160).is_none());
    }

    #[test]
    fn remove_aor_takes_every_binding_of_that_aor_only() {
        let t = BindingTable::default();
        t.apply(
            "1001",
            vec![
                up(b("1001", "sip:a@1", "c", 1, 500, Some("1001"))),
                up(b("1001", "sip:b@1", "d", 1, 150, None)),
            ],
            100,
            10,
        )
        .unwrap();
        t.apply(
            "1002",
            vec![up(b("1002", "sip:c@1", "e", 1, 500, Some("1002")))],
            100,
            10,
        )
        .unwrap();
        let mut gone: Vec<String> = t
            .remove_aor("1001")
            .iter()
            .map(|b| b.contact.clone())
            .collect();
        gone.sort();
        assert_eq!(gone, ["sip:a@1", "sip:b@1"]);
        assert!(t.get("1001", 100).is_empty());
        assert!(
            t.by_device("1001", 100).is_none(),
            "the device index forgets them"
        );
        assert_eq!(t.get("1002", 100).len(), 1, "other AORs keep theirs");
        assert!(t.remove_aor("1001").is_empty());
    }

    #[test]
    fn remove_all_respects_cseq() {
        let t = BindingTable::default();
        t.apply("1", vec![up(b("1", "sip:a@1", "c", 5, 500, None))], 100, 10)
            .unwrap();
        assert!(t
            .apply(
                "1",
                vec![Op::RemoveAll {
                    call_id: "c".into(),
                    cseq: 5
                }],
                100,
                10
            )
            .is_err());
        let o = t
            .apply(
                "1",
                vec![Op::RemoveAll {
                    call_id: "c".into(),
                    cseq: 6,
                }],
                100,
                10,
            )
            .unwrap();
        assert_eq!(o.removed.len(), 1);
    }
}
