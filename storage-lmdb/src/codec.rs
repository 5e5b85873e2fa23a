//! The on-disk encoding of values, and their verification on load. Pure functions over byte
//! slices: no LMDB here, so that every way a value can be corrupt is unit-tested directly.
//!
//! Every value is `crc32c (4 bytes, little-endian) ‖ body`, the CRC taken over the body:
//! - an entry's body is postcard of `(index, term, payload)` ([`EntryRecord`]), under the key
//!   `index` as 8 big-endian bytes (so LMDB's byte order is index order);
//! - a meta value's body is postcard of the value (format version, hard state, snapshot meta).
//!
//! The snapshot's data is stored raw under its own key, its length and CRC in [`SnapshotMeta`];
//! its configuration (a `Membership`) is a CRC-prefixed postcard value beside the data.

use raftkv_raft::{Entry, Index, LogId, Membership, Payload, StorageError, Term};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The layout version stored under [`KEY_FORMAT`]; bumped on any incompatible change.
pub(crate) const FORMAT_VERSION: u32 = 1;

/// Bytes of the CRC that prefixes every value.
pub(crate) const CRC_BYTES: usize = 4;

/// Bound on a meta value (format, hard state, snapshot meta: all a few dozen bytes).
pub(crate) const META_BYTES_MAX: usize = 4096;

/// Key of the format version in the `meta` database.
pub(crate) const KEY_FORMAT: &str = "format";
/// Key of the hard state in the `meta` database.
pub(crate) const KEY_HARD_STATE: &str = "hard_state";
/// Key of the [`SnapshotMeta`] in the `meta` database.
pub(crate) const KEY_SNAPSHOT: &str = "snapshot";
/// Key of the sequence number of the last WAL record the databases hold (see `wal`).
pub(crate) const KEY_WAL_SEQ: &str = "wal_seq";
/// Key of the [`WalHead`] in the `meta` database.
pub(crate) const KEY_WAL_HEAD: &str = "wal_head";
/// Key of the snapshot's data in the `snapshot` database.
pub(crate) const KEY_SNAPSHOT_DATA: &str = "data";
/// Key of the snapshot's configuration in the `snapshot` database. Absent in a store written
/// before configurations were recorded: the snapshot then loads with an empty one, and the
/// core falls back to its initial voters.
pub(crate) const KEY_SNAPSHOT_MEMBERSHIP: &str = "membership";
/// Bound on a stored configuration (every member's id and addresses).
pub(crate) const MEMBERSHIP_BYTES_MAX: usize = 1 << 20;

/// What a checkpoint saw of the WAL, recorded with it: an open refuses a WAL that lost
/// records written by then, or the segment then being written (issue 21 #3: a deleted newest
/// segment silently rolled the node back).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WalHead {
    /// The first sequence number of the segment being written (its name).
    pub first_seq: u64,
    /// The last record whose `fdatasync` had returned.
    pub durable_seq: u64,
}

/// An entry as encoded: borrowed on the way out, so the payload is not copied.
#[derive(Serialize)]
struct EntryRecordRef<'a> {
    index: Index,
    term: Term,
    payload: &'a Payload,
}

/// An entry as decoded.
#[derive(Deserialize)]
struct EntryRecord {
    index: Index,
    term: Term,
    payload: Payload,
}

/// The first two fields of an [`EntryRecord`], decoded without copying the payload.
#[derive(Deserialize)]
struct EntryHeader {
    index: Index,
    term: Term,
}

/// What the `meta` database records about the snapshot; its data lives in its own database.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SnapshotMeta {
    pub last: LogId,
    pub data_bytes: u64,
    pub data_crc32c: u32,
}

fn with_crc(mut value: Vec<u8>) -> Vec<u8> {
    let crc = crc32c::crc32c(&value[CRC_BYTES..]);
    value[..CRC_BYTES].copy_from_slice(&crc.to_le_bytes());
    value
}

/// Splits a value into its body, if the CRC in front of it matches.
fn checked_body(value: &[u8]) -> Result<&[u8], String> {
    let Some((crc, body)) = value.split_first_chunk::<CRC_BYTES>() else {
        return Err(format!("value of {} bytes has no CRC", value.len()));
    };
    let stored = u32::from_le_bytes(*crc);
    let actual = crc32c::crc32c(body);
    if stored != actual {
        return Err(format!(
            "CRC mismatch: stored {stored:#010x}, computed {actual:#010x}"
        ));
    }
    Ok(body)
}

/// Decodes all of `body` as a `T`: trailing bytes are an error too.
fn decode_all<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    match postcard::take_from_bytes::<T>(body) {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(format!("{} trailing bytes", rest.len())),
        Err(e) => Err(format!("undecodable: {e}")),
    }
}

/// The stored value of `entry`; fails if it would exceed `entry_bytes_max`.
pub(crate) fn encode_entry(entry: &Entry, entry_bytes_max: usize) -> Result<Vec<u8>, String> {
    let record = EntryRecordRef {
        index: entry.index,
        term: entry.term,
        payload: &entry.payload,
    };
    let value = postcard::to_extend(&record, vec![0; CRC_BYTES])
        .map_err(|e| format!("entry {}: cannot encode: {e}", entry.id()))?;
    if value.len() > entry_bytes_max {
        return Err(format!(
            "entry {} encodes to {} bytes, over entry_bytes_max ({entry_bytes_max})",
            entry.id(),
            value.len()
        ));
    }
    Ok(with_crc(value))
}

/// The index and term of a stored entry, read without checking its CRC or copying its
/// payload (for a write's checks against the entry before it; `load` verifies everything).
pub(crate) fn entry_header(value: &[u8]) -> Option<LogId> {
    let body = value.get(CRC_BYTES..)?;
    let (header, _) = postcard::take_from_bytes::<EntryHeader>(body).ok()?;
    Some(LogId::new(header.index, header.term))
}

/// A stored meta value for `value`.
pub(crate) fn encode_meta<T: Serialize>(name: &str, value: &T) -> Result<Vec<u8>, String> {
    let value = postcard::to_extend(value, vec![0; CRC_BYTES])
        .map_err(|e| format!("{name}: cannot encode: {e}"))?;
    Ok(with_crc(value))
}

/// Decodes and verifies the meta value `name`.
pub(crate) fn decode_meta<T: DeserializeOwned>(
    name: &str,
    value: &[u8],
) -> Result<T, StorageError> {
    decode_bounded(name, value, META_BYTES_MAX)
}

/// Decodes and verifies a stored snapshot configuration.
pub(crate) fn decode_membership(value: &[u8]) -> Result<Membership, StorageError> {
    decode_bounded("snapshot membership", value, MEMBERSHIP_BYTES_MAX)
}

fn decode_bounded<T: DeserializeOwned>(
    name: &str,
    value: &[u8],
    bytes_max: usize,
) -> Result<T, StorageError> {
    let corrupt = |detail: String| StorageError::Corrupt {
        index: None,
        detail: format!("meta value {name}: {detail}"),
    };
    if value.len() > bytes_max {
        return Err(corrupt(format!(
            "{} bytes, over the bound of {bytes_max}",
            value.len()
        )));
    }
    checked_body(value).and_then(decode_all).map_err(corrupt)
}

/// Verifies the stored log one entry at a time, in key order, as `load` reads it.
///
/// Checks each entry's key, size, CRC and encoding, that its index is its key, that indexes are
/// contiguous and that terms never decrease. The first failure is reported as
/// [`StorageError::Corrupt`] naming the index it hit.
#[derive(Debug)]
pub(crate) struct LogVerifier {
    entry_bytes_max: usize,
    /// The last entry accepted.
    last: Option<LogId>,
}

impl LogVerifier {
    pub(crate) fn new(entry_bytes_max: usize) -> Self {
        Self {
            entry_bytes_max,
            last: None,
        }
    }

    /// Verifies and decodes the next stored `(key, value)`.
    pub(crate) fn next(&mut self, key: &[u8], value: &[u8]) -> Result<Entry, StorageError> {
        let Ok(key) = <[u8; 8]>::try_from(key) else {
            return Err(StorageError::Corrupt {
                index: None,
                detail: format!(
                    "entry key of {} bytes (not 8) after entry {:?}",
                    key.len(),
                    self.last.map(|l| l.index)
                ),
            });
        };
        let index = Index::from_be_bytes(key);
        let entry = self
            .check(index, value)
            .map_err(|detail| StorageError::Corrupt {
                index: Some(index),
                detail: format!("entry {index}: {detail}"),
            })?;
        self.last = Some(entry.id());
        Ok(entry)
    }

    fn check(&self, index: Index, value: &[u8]) -> Result<Entry, String> {
        // Bound the value before looking inside it: nothing below allocates more than this.
        if value.len() > self.entry_bytes_max {
            return Err(format!(
                "value of {} bytes, over entry_bytes_max ({})",
                value.len(),
                self.entry_bytes_max
            ));
        }
        let record: EntryRecord = checked_body(value).and_then(decode_all)?;
        if record.index != index {
            return Err(format!(
                "stored under key {index} but has index {}",
                record.index
            ));
        }
        if let Some(last) = self.last {
            if index != last.index + 1 {
                return Err(format!("gap: follows entry {}", last.index));
            }
            if record.term < last.term {
                return Err(format!(
                    "term {} is below term {} of the entry before",
                    record.term, last.term
                ));
            }
        }
        Ok(Entry {
            index: record.index,
            term: record.term,
            payload: record.payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use raftkv_raft::HardState;

    const MAX: usize = 1 << 20;

    /// The key of the entry at `index`, as the `entries` database stores it.
    fn entry_key(index: Index) -> [u8; 8] {
        index.to_be_bytes()
    }

    fn entry(index: Index, term: Term) -> Entry {
        Entry {
            index,
            term,
            payload: Payload::Command(Bytes::from(format!("payload {index}"))),
        }
    }

    fn stored(e: &Entry) -> ([u8; 8], Vec<u8>) {
        (entry_key(e.index), encode_entry(e, MAX).unwrap())
    }

    /// Runs the verifier over `log`, returning the decoded entries or the first error.
    fn verify(log: &[([u8; 8], Vec<u8>)]) -> Result<Vec<Entry>, StorageError> {
        let mut v = LogVerifier::new(MAX);
        log.iter().map(|(k, val)| v.next(k, val)).collect()
    }

    fn corrupt_index(r: Result<Vec<Entry>, StorageError>) -> Option<Index> {
        match r {
            Err(StorageError::Corrupt { index, .. }) => index,
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn entries_round_trip() {
        let log = [entry(1, 1), entry(2, 1), entry(3, 4)];
        let stored: Vec<_> = log.iter().map(stored).collect();
        assert_eq!(verify(&stored).unwrap(), log.to_vec());
        let noop = Entry {
            index: 9,
            term: 2,
            payload: Payload::Noop,
        };
        assert_eq!(verify(&[self::stored(&noop)]).unwrap(), vec![noop.clone()]);
        assert_eq!(entry_header(&self::stored(&noop).1), Some(LogId::new(9, 2)));
    }

    #[test]
    fn a_flipped_bit_anywhere_in_an_entry_is_reported_at_its_index() {
        let log: Vec<_> = [entry(1, 1), entry(2, 1), entry(3, 1)]
            .iter()
            .map(stored)
            .collect();
        for byte in 0..log[1].1.len() {
            let mut bad = log.clone();
            bad[1].1[byte] ^= 0x10;
            assert_eq!(corrupt_index(verify(&bad)), Some(2), "byte {byte}");
        }
    }

    #[test]
    fn a_gap_in_indexes_is_corrupt() {
        let log: Vec<_> = [entry(1, 1), entry(2, 1), entry(4, 1)]
            .iter()
            .map(stored)
            .collect();
        assert_eq!(corrupt_index(verify(&log)), Some(4));
    }

    #[test]
    fn an_entry_under_another_key_is_corrupt() {
        let mut log: Vec<_> = [entry(1, 1), entry(2, 1)].iter().map(stored).collect();
        log[1].0 = entry_key(3);
        let r = verify(&log);
        assert_eq!(corrupt_index(r), Some(3));
    }

    #[test]
    fn a_decreasing_term_is_corrupt() {
        let log: Vec<_> = [entry(1, 2), entry(2, 3), entry(3, 2)]
            .iter()
            .map(stored)
            .collect();
        assert_eq!(corrupt_index(verify(&log)), Some(3));
    }

    #[test]
    fn a_value_that_is_too_short_undecodable_or_too_long_is_corrupt() {
        let good = stored(&entry(5, 1));
        let short = (good.0, good.1[..3].to_vec());
        assert_eq!(corrupt_index(verify(&[short])), Some(5));
        // Valid CRC over a body that is not an entry.
        let junk = (good.0, with_crc(vec![0, 0, 0, 0, 0xff, 0xff, 0xff]));
        assert_eq!(corrupt_index(verify(&[junk])), Some(5));
        // Valid CRC and entry, with trailing bytes.
        let mut trailing = good.1.clone();
        trailing.push(0);
        let trailing = (good.0, with_crc(trailing));
        assert_eq!(corrupt_index(verify(&[trailing])), Some(5));
        // Over the bound: refused before decoding.
        let mut v = LogVerifier::new(8);
        assert!(matches!(
            v.next(&good.0, &good.1),
            Err(StorageError::Corrupt { index: Some(5), .. })
        ));
    }

    #[test]
    fn an_absurd_decoded_length_is_an_error_not_an_allocation() {
        // A command whose length prefix claims u64::MAX / 2 bytes: postcard reads from the
        // slice, so this fails to decode without allocating.
        let mut body = vec![0; CRC_BYTES];
        body.extend_from_slice(&[7, 1, 1]); // index 7, term 1, Payload::Command
        body.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]);
        let value = with_crc(body);
        assert_eq!(corrupt_index(verify(&[(entry_key(7), value)])), Some(7));
    }

    #[test]
    fn a_key_of_the_wrong_length_is_corrupt() {
        let mut v = LogVerifier::new(MAX);
        let good = stored(&entry(1, 1));
        assert!(matches!(
            v.next(&[0, 1], &good.1),
            Err(StorageError::Corrupt { index: None, .. })
        ));
    }

    #[test]
    fn an_entry_over_the_bound_is_refused_on_write() {
        let big = Entry {
            index: 1,
            term: 1,
            payload: Payload::Command(Bytes::from(vec![0; 100])),
        };
        assert!(encode_entry(&big, 64).is_err());
        assert!(encode_entry(&big, 200).is_ok());
    }

    #[test]
    fn meta_values_round_trip_and_corruption_is_reported() {
        let hs = HardState {
            term: 3,
            voted_for: Some(2),
            commit: 9,
        };
        let value = encode_meta("hard state", &hs).unwrap();
        assert_eq!(decode_meta::<HardState>("hard state", &value), Ok(hs));
        for byte in 0..value.len() {
            let mut bad = value.clone();
            bad[byte] ^= 0x01;
            assert!(matches!(
                decode_meta::<HardState>("hard state", &bad),
                Err(StorageError::Corrupt { index: None, .. })
            ));
        }
        let huge = with_crc(vec![0; META_BYTES_MAX + 1]);
        assert!(decode_meta::<HardState>("hard state", &huge).is_err());
        let meta = SnapshotMeta {
            last: LogId::new(5, 2),
            data_bytes: 10,
            data_crc32c: 0xdead_beef,
        };
        let value = encode_meta("snapshot", &meta).unwrap();
        assert_eq!(decode_meta::<SnapshotMeta>("snapshot", &value), Ok(meta));
    }
}
