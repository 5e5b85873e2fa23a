//! The stable map from a key to its shard.
//!
//! **Part of the format; it must never change.** A key's shard is FNV-1a (32-bit: offset basis
//! `0x811c9dc5`, prime `0x01000193`) over the key's bytes, modulo the number of shards. Every
//! client, replica group and stored shard agrees on it, so changing it would send keys to
//! groups that do not hold them. The fixed vectors in the tests below guard it.

use thiserror::Error;

/// The number of shards is zero: no key has a shard.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
#[error("the number of shards must be at least 1")]
pub struct ZeroShards;

const FNV_OFFSET_BASIS: u32 = 0x811c_9dc5;
const FNV_PRIME: u32 = 0x0100_0193;

/// FNV-1a, 32-bit, over `key`.
pub fn key_hash(key: &[u8]) -> u32 {
    key.iter().fold(FNV_OFFSET_BASIS, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(FNV_PRIME)
    })
}

/// The shard of `key` among `shards` shards: `key_hash(key) % shards`.
pub fn key_to_shard(key: &[u8], shards: u32) -> Result<u32, ZeroShards> {
    if shards == 0 {
        return Err(ZeroShards);
    }
    Ok(key_hash(key) % shards)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The published FNV-1a 32-bit test vectors (Fowler/Noll/Vo).
    #[test]
    fn key_hash_matches_published_fnv1a_vectors() {
        assert_eq!(key_hash(b""), 0x811c_9dc5);
        assert_eq!(key_hash(b"a"), 0xe40c_292c);
        assert_eq!(key_hash(b"foobar"), 0xbf9c_f968);
    }

    /// Fixed vectors of the format (computed independently): these shards must never change.
    #[test]
    fn key_to_shard_is_stable() {
        let vectors: [(&[u8], u32, u32); 9] = [
            (b"", 256, 197),
            (b"a", 10, 0),
            (b"foobar", 256, 104),
            (b"foobar", 1, 0),
            (b"k", 256, 234),
            (b"user:42", 256, 130),
            (&[0xff, 0x00, 0x7f], 16, 15),
            (b"foobar", u32::MAX, 3_214_735_720),
            (b"key-000123", 64, 15),
        ];
        for (key, shards, want) in vectors {
            assert_eq!(key_to_shard(key, shards), Ok(want), "key {key:?}");
        }
    }

    #[test]
    fn zero_shards_is_an_error() {
        assert_eq!(key_to_shard(b"k", 0), Err(ZeroShards));
    }
}
