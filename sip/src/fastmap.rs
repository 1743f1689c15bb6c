//! Hash maps for the per-request tables (transactions, bindings, nonce counts).
//!
//! Their keys come from the network (branches, AORs, nonces), so the hasher must be seeded
//! per map against flooding; `foldhash::quality` is, and costs a fraction of std's SipHash,
//! which showed as several per cent of a REGISTER's CPU under load.

pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::quality::RandomState>;

/// An empty map with room for `n` entries.
pub fn with_capacity<K, V>(n: usize) -> FastMap<K, V> {
    FastMap::with_capacity_and_hasher(n, foldhash::quality::RandomState::default())
}
