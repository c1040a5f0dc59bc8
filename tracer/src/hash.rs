//! Tables of the data path. Their keys (connection and exchange ids, threads, addresses) are
//! hashed several times per record: SipHash took a visible share of the agent's CPU, so they use
//! foldhash, keeping a random seed per process.

use std::{hash::Hash, num::NonZeroUsize};

pub type FastState = foldhash::fast::RandomState;
pub type FastMap<K, V> = std::collections::HashMap<K, V, FastState>;
pub type FastSet<K> = std::collections::HashSet<K, FastState>;
pub type FastLru<K, V> = lru::LruCache<K, V, FastState>;

/// An LRU table of at most `cap` entries (at least one).
pub fn lru<K: Hash + Eq, V>(cap: usize) -> FastLru<K, V> {
    lru::LruCache::with_hasher(
        NonZeroUsize::new(cap.max(1)).unwrap_or(NonZeroUsize::MIN),
        FastState::default(),
    )
}
