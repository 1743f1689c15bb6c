//! The render cache: per-phone files as last rendered, by MAC, dropped by change events.
//!
//! Each phone's entry remembers the DN and profile its files were rendered with, so a change
//! drops exactly the files it can alter: a device's own files for [`Change::Device`], the
//! holder's for [`Change::Dn`], the profile's users' for [`Change::Profile`]. Sites, switches
//! and templates reach files through lookups that are not remembered (switch of a DN, peer
//! switch, the only site), so those changes drop everything.
//!
//! A render that raced with a change must not be cached: every change moves the
//! [`RenderCache::generation`] before dropping entries, and [`RenderCache::insert`] keeps a
//! render only if the generation is still the one read before the render's first query.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::RwLock;

use crate::provisioning::mac::Mac;
use crate::store::Change;

/// A rendered file, ready to serve.
#[derive(Debug, Clone)]
pub struct Served {
    /// Shared, so a cache hit answers without copying the file.
    pub body: bytes::Bytes,
    pub content_type: String,
    /// Strong ETag (quoted), from the body's hash.
    pub etag: String,
}

/// One file of a phone, as requested: the same file name may render differently per vendor
/// named by the User-Agent and per address the phone used to reach us.
#[derive(Hash, PartialEq, Eq, Clone)]
pub struct FileKey {
    pub kind: String,
    pub ua_vendor: Option<String>,
    pub host: Option<String>,
    pub base_url: Option<String>,
}

pub struct CachedFile {
    pub served: Served,
    /// When a sighting of this file's phone was last queued (ms); sightings are debounced.
    pub last_noted: AtomicI64,
}

/// What a phone's files were rendered from, besides its own row.
struct PhoneFiles {
    dn: Option<String>,
    profile: String,
    files: HashMap<FileKey, CachedFile>,
}

/// Most files held before the cache is simply cleared (2000-phone sites use a fraction).
const FILE_LIMIT: usize = 100_000;

pub struct RenderCache {
    generation: AtomicU64,
    phones: RwLock<HashMap<Mac, PhoneFiles>>,
    files: AtomicU64,
    renders: AtomicU64,
}

impl Default for RenderCache {
    fn default() -> Self {
        RenderCache {
            generation: AtomicU64::new(1),
            phones: RwLock::new(HashMap::new()),
            files: AtomicU64::new(0),
            renders: AtomicU64::new(0),
        }
    }
}

impl RenderCache {
    /// Moves on every change; read it before the queries of a render.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Looks a file up and lets `f` look at it under the read lock.
    pub fn with<R>(&self, mac: &Mac, key: &FileKey, f: impl FnOnce(&CachedFile) -> R) -> Option<R> {
        let phones = self.phones.read().ok()?;
        phones.get(mac)?.files.get(key).map(f)
    }

    /// Keeps a render made from data read at `generation`, unless something changed since.
    pub fn insert(
        &self,
        generation: u64,
        mac: Mac,
        dn: Option<String>,
        profile: String,
        key: FileKey,
        file: CachedFile,
    ) {
        let Ok(mut phones) = self.phones.write() else {
            return;
        };
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        if self.files.load(Ordering::Relaxed) as usize >= FILE_LIMIT {
            phones.clear();
            self.files.store(0, Ordering::Relaxed);
        }
        let phone = phones.entry(mac).or_insert_with(|| PhoneFiles {
            dn: None,
            profile: String::new(),
            files: HashMap::new(),
        });
        if phone.dn != dn || phone.profile != profile {
            // Rendered from another assignment than the files kept: those are stale.
            self.files
                .fetch_sub(phone.files.len() as u64, Ordering::Relaxed);
            phone.files.clear();
            phone.dn = dn;
            phone.profile = profile;
        }
        if phone.files.insert(key, file).is_none() {
            self.files.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Drops what `changes` can alter.
    pub fn apply(&self, changes: &[Change]) {
        if changes.is_empty() {
            return;
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
        let Ok(mut phones) = self.phones.write() else {
            return;
        };
        for change in changes {
            match change {
                Change::Device(mac) => match Mac::parse(mac) {
                    Ok(mac) => {
                        phones.remove(&mac);
                    }
                    Err(_) => phones.clear(),
                },
                Change::Dn(number) => phones.retain(|_, p| p.dn.as_deref() != Some(number)),
                Change::Profile(name) => phones.retain(|_, p| p.profile != *name),
                Change::Site(_) | Change::Switch(_) | Change::Template | Change::All => {
                    phones.clear()
                }
            }
        }
        let n = phones.values().map(|p| p.files.len() as u64).sum();
        self.files.store(n, Ordering::Relaxed);
    }

    /// Counts a render (a cache miss, a common file, a preview).
    pub fn note_render(&self) {
        self.renders.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("sipdm_renders_total").increment(1);
    }

    /// Renders made by this instance since it started.
    pub fn renders(&self) -> u64 {
        self.renders.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(body: &'static str) -> CachedFile {
        CachedFile {
            served: Served {
                body: bytes::Bytes::from_static(body.as_bytes()),
                content_type: "text/plain".into(),
                etag: "\"x\"".into(),
            },
            last_noted: AtomicI64::new(0),
        }
    }

    fn key() -> FileKey {
        FileKey {
            kind: "phone".into(),
            ua_vendor: None,
            host: None,
            base_url: None,
        }
    }

    #[test]
    fn changes_drop_exactly_what_they_alter() {
        let c = RenderCache::default();
        let a = Mac::parse("0004f2000001").unwrap();
        let b = Mac::parse("0004f2000002").unwrap();
        let fill = |c: &RenderCache| {
            let g = c.generation();
            c.insert(g, a, Some("1000".into()), "p1".into(), key(), file("a"));
            c.insert(g, b, Some("1001".into()), "p2".into(), key(), file("b"));
        };
        let has = |c: &RenderCache, m: &Mac| c.with(m, &key(), |_| ()).is_some();
        fill(&c);
        c.apply(&[Change::Device("00:04:f2:00:00:01".into())]);
        assert!(!has(&c, &a) && has(&c, &b));
        fill(&c);
        c.apply(&[Change::Dn("1001".into())]);
        assert!(has(&c, &a) && !has(&c, &b));
        fill(&c);
        c.apply(&[Change::Profile("p1".into())]);
        assert!(!has(&c, &a) && has(&c, &b));
        fill(&c);
        c.apply(&[Change::Switch("SIPS1".into())]);
        assert!(!has(&c, &a) && !has(&c, &b));
    }

    #[test]
    fn a_render_that_raced_with_a_change_is_not_kept() {
        let c = RenderCache::default();
        let a = Mac::parse("0004f2000001").unwrap();
        let before = c.generation();
        c.apply(&[Change::Device("0004f2000099".into())]);
        c.insert(before, a, None, "default".into(), key(), file("old"));
        assert!(c.with(&a, &key(), |_| ()).is_none());
    }
}
