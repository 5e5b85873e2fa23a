//! Hashing, the linearized-set bitset and the visited set of (linearized set, state) pairs.

use std::hash::Hasher;

/// FxHash (the `rustc-hash` crate): fast on short keys, not DoS-resistant (the keys are ours).
pub(crate) use rustc_hash::{FxBuildHasher, FxHasher};

/// An odd constant with well-spread bits (FxHash's): spreads a state id before it is mixed
/// with the linearized set's hash.
const STATE_SPREAD: u64 = 0x51_7c_c1_b7_27_22_0a_95;

/// FxHash of a string.
pub(crate) fn hash_str(s: &str) -> u64 {
    let mut h = FxHasher::default();
    h.write(s.as_bytes());
    h.finish()
}

/// The MurmurHash3 64-bit finalizer: spreads every input bit over the output.
#[inline]
pub(crate) fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// A fixed pseudo-random 64-bit key for operation `i` (splitmix64), for Zobrist hashing.
pub(crate) fn zobrist_key(i: usize) -> u64 {
    mix((i as u64)
        .wrapping_add(1)
        .wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// The set of linearized operations, with a Zobrist hash (XOR of one key per member) kept up
/// to date in O(1) per change.
pub(crate) struct Linearized {
    words: Vec<u64>,
    keys: Vec<u64>,
    hash: u64,
}

impl Linearized {
    /// An empty set over operations `0..n`.
    pub(crate) fn new(n: usize) -> Self {
        Linearized {
            words: vec![0; n.div_ceil(64)],
            keys: (0..n).map(zobrist_key).collect(),
            hash: 0,
        }
    }

    /// Adds `i`. Invariant: `i` is not a member.
    #[inline]
    pub(crate) fn insert(&mut self, i: usize) {
        self.words[i / 64] |= 1 << (i % 64);
        self.hash ^= self.keys[i];
    }

    /// Removes `i`. Invariant: `i` is a member.
    #[inline]
    pub(crate) fn remove(&mut self, i: usize) {
        self.words[i / 64] &= !(1 << (i % 64));
        self.hash ^= self.keys[i];
    }

    /// The words of the bitset.
    #[inline]
    pub(crate) fn words(&self) -> &[u64] {
        &self.words
    }

    /// The Zobrist hash of the set.
    #[inline]
    pub(crate) fn hash(&self) -> u64 {
        self.hash
    }
}

/// Outcome of [`Visited::insert`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Insert {
    /// The pair was new and is now recorded.
    New,
    /// The pair had been recorded before.
    Seen,
    /// The pair is new but the set is at its bound.
    Full,
}

/// The visited set: (linearized set, state id) pairs, in an open-addressing table (linear
/// probing, load ≤ 1/2) over an arena of words.
///
/// Entry layout in `arena`: `[key hash, state id, bitset words...]`, `stride` words per entry.
pub(crate) struct Visited {
    stride: usize,
    arena: Vec<u64>,
    /// Entry number + 1; 0 is empty.
    slots: Vec<u32>,
    len: usize,
    len_max: usize,
}

impl Visited {
    /// An empty set for bitsets of `words` words, holding at most `len_max` entries.
    pub(crate) fn new(words: usize, len_max: usize) -> Self {
        Visited {
            stride: words + 2,
            arena: Vec::new(),
            slots: vec![0; 1024],
            len: 0,
            // Entry numbers + 1 must fit in a u32 slot.
            len_max: len_max.min(u32::MAX as usize - 1),
        }
    }

    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Records (`set`, `state`) unless already recorded.
    pub(crate) fn insert(&mut self, set: &Linearized, state: u32) -> Insert {
        let key = mix(set.hash() ^ u64::from(state).wrapping_mul(STATE_SPREAD));
        let words = set.words();
        let mask = self.slots.len() - 1;
        let mut i = key as usize & mask;
        loop {
            let slot = self.slots[i];
            if slot == 0 {
                break;
            }
            let e = (slot as usize - 1) * self.stride;
            if self.arena[e] == key
                && self.arena[e + 1] == u64::from(state)
                && self.arena[e + 2..e + self.stride] == *words
            {
                return Insert::Seen;
            }
            i = (i + 1) & mask;
        }
        if self.len >= self.len_max {
            return Insert::Full;
        }
        self.len += 1;
        self.slots[i] = self.len as u32;
        self.arena.push(key);
        self.arena.push(u64::from(state));
        self.arena.extend_from_slice(words);
        if self.len * 2 > self.slots.len() {
            self.grow();
        }
        Insert::New
    }

    fn grow(&mut self) {
        let mut slots = vec![0u32; self.slots.len() * 2];
        let mask = slots.len() - 1;
        for n in 0..self.len {
            let mut i = self.arena[n * self.stride] as usize & mask;
            while slots[i] != 0 {
                i = (i + 1) & mask;
            }
            slots[i] = n as u32 + 1;
        }
        self.slots = slots;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visited_set_tells_new_from_seen_across_growth() {
        let mut set = Linearized::new(130);
        let mut visited = Visited::new(3, usize::MAX);
        for i in 0..130 {
            set.insert(i);
            assert_eq!(visited.insert(&set, 7), Insert::New);
            assert_eq!(visited.insert(&set, 8), Insert::New);
        }
        for i in (0..130).rev() {
            assert_eq!(visited.insert(&set, 7), Insert::Seen);
            assert_eq!(visited.insert(&set, 8), Insert::Seen);
            set.remove(i);
        }
        assert_eq!(visited.len(), 260);
        assert_eq!(set.hash(), 0);
    }

    #[test]
    fn visited_set_reports_full_at_its_bound() {
        let mut set = Linearized::new(4);
        let mut visited = Visited::new(1, 2);
        assert_eq!(visited.insert(&set, 0), Insert::New);
        set.insert(1);
        assert_eq!(visited.insert(&set, 0), Insert::New);
        set.insert(2);
        assert_eq!(visited.insert(&set, 0), Insert::Full);
        set.remove(2);
        assert_eq!(visited.insert(&set, 0), Insert::Seen);
    }
}
