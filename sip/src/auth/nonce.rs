//! Stateless nonces and `nc` replay memory.
//!
//! A nonce is `hex(issued_at_secs) ‖ hex(salt) ‖ hex(HMAC-SHA256(secret, issued_at ‖ salt ‖
//! realm)[..12])` with 8 random salt bytes: any instance holding the same secret can check it
//! without shared state, its age tells when to answer `stale=true`, and the salt makes every
//! challenge's nonce unique (two phones challenged in the same second must not share a nonce,
//! or the second one's `nc=1` would look like a replay).
//!
//! Replay: the highest `nc` seen per nonce is kept in two rotating generations of bounded
//! size, so memory is bounded whatever peers send. A nonce forgotten under pressure only loses
//! replay protection for that nonce, never accepts a forged one. Instances do not share `nc`
//! memory, so a replay sent to another instance of a pair is not detected (documented limit).

use crate::fastmap::{self, FastMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use sha2::Sha256;

const SHARDS: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceCheck {
    Valid,
    /// Genuine but older than the lifetime: challenge again with `stale=true`.
    Stale,
    /// Not ours (wrong secret, realm, or garbage).
    Invalid,
}

/// Length of a nonce in hex characters (8 + 8 + 12 bytes).
pub const NONCE_LEN: usize = 56;

pub struct NonceFactory {
    /// HMAC keyed with the secret, cloned for each nonce: keying hashes the padded key twice,
    /// which was half of the hashing a nonce cost.
    keyed: Hmac<Sha256>,
    lifetime: Duration,
}

impl NonceFactory {
    pub fn new(secret: &[u8], lifetime: Duration) -> Self {
        // HMAC accepts keys of any length, so new_from_slice cannot fail; fall back to a
        // fixed key rather than panic if that ever changes.
        let keyed = <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| {
            <Hmac<Sha256> as Mac>::new_from_slice(b"sipdm").expect("static key")
        });
        NonceFactory { keyed, lifetime }
    }

    fn mac(&self, ts: u64, salt: &[u8], realm: &str) -> [u8; 12] {
        let mut mac = self.keyed.clone();
        mac.update(&ts.to_be_bytes());
        mac.update(salt);
        mac.update(realm.as_bytes());
        let out = mac.finalize().into_bytes();
        let mut t = [0u8; 12];
        t.copy_from_slice(&out[..12]);
        t
    }

    pub fn issue(&self, realm: &str) -> String {
        self.issue_at(realm, now_secs())
    }

    pub fn issue_at(&self, realm: &str, ts: u64) -> String {
        let salt: [u8; 8] = rand::random();
        let mac = self.mac(ts, &salt, realm);
        let mut s = String::with_capacity(2 * (8 + salt.len() + mac.len()));
        super::push_hex(&mut s, &ts.to_be_bytes());
        super::push_hex(&mut s, &salt);
        super::push_hex(&mut s, &mac);
        s
    }

    pub fn check(&self, nonce: &str, realm: &str) -> NonceCheck {
        self.check_at(nonce, realm, now_secs())
    }

    pub fn check_at(&self, nonce: &str, realm: &str, now: u64) -> NonceCheck {
        if nonce.len() != NONCE_LEN || !nonce.is_ascii() {
            return NonceCheck::Invalid;
        }
        let Ok(ts_bytes) = hex::decode(&nonce[..16]) else {
            return NonceCheck::Invalid;
        };
        let Ok(salt) = hex::decode(&nonce[16..32]) else {
            return NonceCheck::Invalid;
        };
        let Ok(tag) = hex::decode(&nonce[32..]) else {
            return NonceCheck::Invalid;
        };
        let mut b = [0u8; 8];
        b.copy_from_slice(&ts_bytes);
        let ts = u64::from_be_bytes(b);
        let expect = self.mac(ts, &salt, realm);
        if tag.len() != 12
            || tag
                .iter()
                .zip(expect.iter())
                .fold(0u8, |a, (x, y)| a | (x ^ y))
                != 0
        {
            return NonceCheck::Invalid;
        }
        // A nonce from the future (clock skew between instances) is accepted within a minute.
        if ts > now + 60 {
            return NonceCheck::Invalid;
        }
        if now - ts.min(now) > self.lifetime.as_secs() {
            return NonceCheck::Stale;
        }
        NonceCheck::Valid
    }
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Nonces are remembered by a per-tracker seeded 128-bit digest rather than as strings: one
/// entry per registration for the nonce's lifetime, so its size is what a storm costs.
struct Generations {
    current: FastMap<u128, u32>,
    previous: FastMap<u128, u32>,
}

/// Remembers the highest `nc` per nonce, bounded.
pub struct NcTracker {
    shards: Vec<Mutex<Generations>>,
    per_shard: usize,
    seeds: (
        foldhash::quality::RandomState,
        foldhash::quality::RandomState,
    ),
}

impl NcTracker {
    pub fn new(capacity: usize) -> Self {
        let per_shard = (capacity / SHARDS).max(16);
        NcTracker {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Generations {
                        current: fastmap::with_capacity(0),
                        previous: fastmap::with_capacity(0),
                    })
                })
                .collect(),
            per_shard,
            seeds: Default::default(),
        }
    }

    /// Records `nc` for `nonce`; false if it is not higher than one already seen (a replay).
    pub fn accept(&self, nonce: &str, nc: u32) -> bool {
        use std::hash::BuildHasher;
        let key =
            ((self.seeds.0.hash_one(nonce) as u128) << 64) | self.seeds.1.hash_one(nonce) as u128;
        let mut g = self.shards[(key as usize) % SHARDS].lock();
        let seen = g
            .current
            .get(&key)
            .or_else(|| g.previous.get(&key))
            .copied();
        if seen.is_some_and(|s| nc <= s) {
            return false;
        }
        if g.current.len() >= self.per_shard && !g.current.contains_key(&key) {
            let cur = std::mem::take(&mut g.current);
            g.previous = cur;
        }
        g.current.insert(key, nc);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_secret_instances_agree() {
        let a = NonceFactory::new(b"secret", Duration::from_secs(300));
        let b = NonceFactory::new(b"secret", Duration::from_secs(300));
        let c = NonceFactory::new(b"other", Duration::from_secs(300));
        let n = a.issue_at("r", 1000);
        assert_eq!(b.check_at(&n, "r", 1100), NonceCheck::Valid);
        assert_eq!(c.check_at(&n, "r", 1100), NonceCheck::Invalid);
        assert_eq!(b.check_at(&n, "other-realm", 1100), NonceCheck::Invalid);
        assert_eq!(b.check_at(&n, "r", 1301), NonceCheck::Stale);
        assert_eq!(b.check_at("zz", "r", 1000), NonceCheck::Invalid);
        assert_eq!(b.check_at(&"é".repeat(28), "r", 1000), NonceCheck::Invalid);
        assert_ne!(
            a.issue_at("r", 1000),
            a.issue_at("r", 1000),
            "unique within one second"
        );
        let mut tampered = n.clone().into_bytes();
        tampered[20] = if tampered[20] == b'0' { b'1' } else { b'0' };
        assert_eq!(
            b.check_at(std::str::from_utf8(&tampered).unwrap(), "r", 1100),
            NonceCheck::Invalid
        );
    }

    #[test]
    fn nc_replay_refused_and_bounded() {
        let t = NcTracker::new(16 * 16);
        assert!(t.accept("n1", 1));
        assert!(!t.accept("n1", 1));
        assert!(t.accept("n1", 2));
        for i in 0..10_000 {
            t.accept(&format!("x{i}"), 1);
        }
        let total: usize = t
            .shards
            .iter()
            .map(|s| {
                let g = s.lock();
                g.current.len() + g.previous.len()
            })
            .sum();
        assert!(total <= 2 * 16 * 16 + 16);
    }
}
