//! The models histories are checked against, and the cheap shared state they are built from.
//!
//! - [`kv`]: our versioned key/value service (get / put, optionally conditional on a version /
//!   append / delete), partitioned by key.
//! - [`register`]: one register with read / write / compare-and-set, as in Jepsen's etcd test.
//! - [`porcupine_kv`]: the unversioned get / put / append key/value store of Porcupine's tests.

pub mod kv;
pub mod porcupine_kv;
pub mod register;

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use super::cache::{hash_str, FxHasher};

pub use kv::{KvErr, KvInput, KvModel, KvOp, KvOutput};
pub use porcupine_kv::{PorcupineKvInput, PorcupineKvModel, PorcupineKvOp, PorcupineKvOutput};
pub use register::{RegisterInput, RegisterModel, RegisterOutput};

/// An immutable shared string that carries its hash: cloning is one reference-count increment,
/// hashing is one word, and equal strings usually share their buffer.
#[derive(Clone)]
pub struct SharedStr {
    hash: u64,
    text: Arc<str>,
}

impl SharedStr {
    /// The text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// `self` followed by `suffix`.
    pub fn concat(&self, suffix: &str) -> SharedStr {
        let mut s = String::with_capacity(self.text.len() + suffix.len());
        s.push_str(&self.text);
        s.push_str(suffix);
        SharedStr::from(s.as_str())
    }
}

impl From<&str> for SharedStr {
    fn from(s: &str) -> Self {
        SharedStr {
            hash: hash_str(s),
            text: Arc::from(s),
        }
    }
}

impl PartialEq for SharedStr {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && (Arc::ptr_eq(&self.text, &other.text) || self.text == other.text)
    }
}

impl Eq for SharedStr {}

impl Hash for SharedStr {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl fmt::Debug for SharedStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.text, f)
    }
}

/// A small persistent map from keys to values, sorted by key, shared on clone and copied on
/// write, with an order-independent hash kept up to date (so hashing a state is O(1)).
#[derive(Clone)]
pub struct KeyMap<V> {
    entries: Arc<Vec<(SharedStr, V)>>,
    hash: u64,
}

impl<V: Clone + Hash + Eq> KeyMap<V> {
    /// The empty map.
    pub fn new() -> Self {
        KeyMap {
            entries: Arc::new(Vec::new()),
            hash: 0,
        }
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&V> {
        let i = self
            .entries
            .binary_search_by(|(k, _)| k.as_str().cmp(key))
            .ok()?;
        Some(&self.entries[i].1)
    }

    /// A copy of the map with `key` set to `value` (`None` removes it).
    pub fn with(&self, key: &str, value: Option<V>) -> Self {
        let mut entries = (*self.entries).clone();
        let mut hash = self.hash;
        match (
            entries.binary_search_by(|(k, _)| k.as_str().cmp(key)),
            value,
        ) {
            (Ok(i), Some(v)) => {
                hash = hash.wrapping_sub(entry_hash(&entries[i].0, &entries[i].1));
                hash = hash.wrapping_add(entry_hash(&entries[i].0, &v));
                entries[i].1 = v;
            }
            (Ok(i), None) => {
                let (k, v) = entries.remove(i);
                hash = hash.wrapping_sub(entry_hash(&k, &v));
            }
            (Err(i), Some(v)) => {
                let k = SharedStr::from(key);
                hash = hash.wrapping_add(entry_hash(&k, &v));
                entries.insert(i, (k, v));
            }
            (Err(_), None) => {}
        }
        KeyMap {
            entries: Arc::new(entries),
            hash,
        }
    }

    /// The entries, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &V)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }
}

impl<V: Clone + Hash + Eq> Default for KeyMap<V> {
    fn default() -> Self {
        Self::new()
    }
}

fn entry_hash<V: Hash>(key: &SharedStr, value: &V) -> u64 {
    let mut h = FxHasher::default();
    key.hash(&mut h);
    value.hash(&mut h);
    // Spread the bits before summing, so that sums of entries rarely collide.
    super::cache::mix(h.finish())
}

impl<V: PartialEq> PartialEq for KeyMap<V> {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash
            && (Arc::ptr_eq(&self.entries, &other.entries) || self.entries == other.entries)
    }
}

impl<V: Eq> Eq for KeyMap<V> {}

impl<V> Hash for KeyMap<V> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl<V: fmt::Debug> fmt::Debug for KeyMap<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.entries.iter().map(|(k, v)| (k, v)))
            .finish()
    }
}

/// `s` quoted and escaped as a JSON string, for descriptions.
pub(crate) fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_map_hash_does_not_depend_on_history() {
        let a = KeyMap::new()
            .with("x", Some(1u64))
            .with("y", Some(2))
            .with("z", Some(3));
        let b = KeyMap::new()
            .with("z", Some(3u64))
            .with("y", Some(5))
            .with("x", Some(1))
            .with("y", Some(2));
        assert_eq!(a, b);
        assert_eq!(a.hash, b.hash);
        let c = b.with("z", None);
        assert_ne!(a, c);
        assert_eq!(c.get("z"), None);
        assert_eq!(c.get("y"), Some(&2));
        assert_eq!(c.with("z", Some(3)), a);
    }

    #[test]
    fn shared_str_equality_is_by_content() {
        let a = SharedStr::from("ab");
        assert_eq!(a, SharedStr::from("a").concat("b"));
        assert_ne!(a, SharedStr::from("ba"));
    }
}
