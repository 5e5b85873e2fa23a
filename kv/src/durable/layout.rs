//! Issue 20: a [`KvStateMachine`](crate::state::KvStateMachine)'s snapshot layout (postcard:
//! the number of keys, each key, value and version, then the sessions) written and read one
//! key at a time, so that a durable state's snapshot is never whole in memory as a map:
//! [`SnapshotWriter`] writes it into a [`SnapshotSpool`] in one pass over the keys, their
//! count known up front; [`SnapshotLayout`] checks a snapshot's bytes and reads its keys
//! without building anything of them.

use super::corrupt;
use super::store::CommittedSink;
use crate::session::SessionTable;
use crate::state::Cached;
use bytes::Bytes;
use raftkv_raft::{SnapshotSpool, StorageError};

/// What [`SnapshotWriter`] gathers before it hands it to its spool: one append per this many
/// bytes, not per key.
const WRITE_BUFFER_BYTES: usize = 64 << 10;

/// The most bytes a `u64` takes as a varint.
const VARINT_BYTES_MAX: usize = 10;

/// The fewest bytes a key takes in the layout (an empty key and value, a one-byte version):
/// a count of keys past the bytes left over this is refused before anything is read.
const ENTRY_BYTES_MIN: u64 = 3;

/// A postcard varint (LEB128).
fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// One key, its value and version, as the layout has them.
pub(super) fn put_entry(out: &mut Vec<u8>, key: &[u8], value: &[u8], version: u64) {
    put_varint(out, key.len() as u64);
    out.extend_from_slice(key);
    put_varint(out, value.len() as u64);
    out.extend_from_slice(value);
    put_varint(out, version);
}

/// A snapshot in the layout, written front to back into a spool: the count of keys first
/// (known before the keys are read: a store counts its keys in the read itself), then each
/// key, then the sessions. A count that does not match the keys written is an error, never a
/// snapshot.
pub(super) struct SnapshotWriter {
    spool: Box<dyn SnapshotSpool>,
    buf: Vec<u8>,
    /// The count written ahead of the keys, once it is.
    count: Option<u64>,
    written: u64,
}

impl SnapshotWriter {
    /// A writer into `spool`, whose count of keys is given next ([`CommittedSink::keys`]).
    pub(super) fn new(spool: Box<dyn SnapshotSpool>) -> Self {
        Self {
            spool,
            buf: Vec::with_capacity(WRITE_BUFFER_BYTES + VARINT_BYTES_MAX),
            count: None,
            written: 0,
        }
    }

    /// `count` keys already in the layout (`entries`: [`put_entry`]'s bytes), after the count.
    pub(super) fn encoded(&mut self, count: u64, entries: &[u8]) -> Result<(), StorageError> {
        self.keys(count)?;
        self.flush()?;
        self.spool.append(entries)?;
        self.written += count;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StorageError> {
        if !self.buf.is_empty() {
            self.spool.append(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }

    /// The snapshot, with `sessions` after the keys.
    pub(super) fn finish(mut self, sessions: &SessionTable<Cached>) -> Result<Bytes, StorageError> {
        if self.count.is_none() {
            self.keys(0)?;
        }
        if self.count != Some(self.written) {
            return Err(corrupt(format!(
                "the KV state counts {} keys but {} were read",
                self.count.unwrap_or(0),
                self.written
            )));
        }
        let buf = std::mem::take(&mut self.buf);
        self.buf = postcard::to_extend(sessions, buf)
            .map_err(|e| corrupt(format!("cannot encode the sessions: {e}")))?;
        self.flush()?;
        self.spool.finish()
    }
}

impl CommittedSink for SnapshotWriter {
    fn keys(&mut self, count: u64) -> Result<(), StorageError> {
        if self.count.is_some() {
            return Err(corrupt("the KV state's keys were counted twice".into()));
        }
        self.count = Some(count);
        put_varint(&mut self.buf, count);
        Ok(())
    }

    fn entry(&mut self, key: &[u8], value: &[u8], version: u64) -> Result<(), StorageError> {
        if self.count.is_none() {
            return Err(corrupt(
                "a key read before the KV state's keys were counted".into(),
            ));
        }
        if key.len() + value.len() >= WRITE_BUFFER_BYTES {
            // A large entry goes to the spool as it is, not through the buffer.
            self.flush()?;
            let mut head = Vec::with_capacity(VARINT_BYTES_MAX);
            put_varint(&mut head, key.len() as u64);
            self.spool.append(&head)?;
            self.spool.append(key)?;
            head.clear();
            put_varint(&mut head, value.len() as u64);
            self.spool.append(&head)?;
            self.spool.append(value)?;
            head.clear();
            put_varint(&mut head, version);
            self.spool.append(&head)?;
        } else {
            put_entry(&mut self.buf, key, value, version);
            if self.buf.len() >= WRITE_BUFFER_BYTES {
                self.flush()?;
            }
        }
        self.written += 1;
        Ok(())
    }
}

/// A snapshot's bytes, checked: the count of keys, where the keys are, and the sessions after
/// them. Every key's lengths are checked against the bytes (the keys are skipped, not read),
/// so that [`SnapshotLayout::entries`] cannot fail once this is made.
pub(super) struct SnapshotLayout<'a> {
    keys: &'a [u8],
    pub(super) sessions: SessionTable<Cached>,
}

/// A malformed snapshot: what is wrong, for the error a restore gives.
pub(super) type Malformed = String;

impl<'a> SnapshotLayout<'a> {
    /// Reads `data`'s layout, or says what is malformed in it (nothing is trusted: every
    /// length is checked against the bytes left, and nothing follows the sessions).
    pub(super) fn parse(data: &'a [u8]) -> Result<Self, Malformed> {
        let mut rest = data;
        let count = take_varint(&mut rest).ok_or("no count of keys")?;
        if count > rest.len() as u64 / ENTRY_BYTES_MIN {
            return Err(format!(
                "{count} keys do not fit in the {} bytes after their count",
                rest.len()
            ));
        }
        let start = rest;
        for i in 0..count {
            take_entry(&mut rest).ok_or_else(|| format!("key {i} of {count} is cut short"))?;
        }
        let keys = &start[..start.len() - rest.len()];
        let (sessions, left) = postcard::take_from_bytes::<SessionTable<Cached>>(rest)
            .map_err(|e| format!("bad sessions after the keys: {e}"))?;
        if !left.is_empty() {
            return Err(format!("{} bytes after the sessions", left.len()));
        }
        Ok(Self { keys, sessions })
    }

    /// Each key, value and version, in the snapshot's order.
    pub(super) fn entries(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8], u64)> {
        let mut rest = self.keys;
        // Checked by `parse`: every entry is whole, and there are `count` of them.
        std::iter::from_fn(move || take_entry(&mut rest))
    }
}

/// Takes a varint off the front of `input` (`None`: cut short, or past 64 bits).
fn take_varint(input: &mut &[u8]) -> Option<u64> {
    let mut n = 0u64;
    for i in 0..VARINT_BYTES_MAX {
        let (&b, rest) = input.split_first()?;
        *input = rest;
        if i == VARINT_BYTES_MAX - 1 && b > 1 {
            return None;
        }
        n |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(n);
        }
    }
    None
}

/// Takes `len` bytes, a varint, off the front of `input`.
fn take_bytes<'a>(input: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = usize::try_from(take_varint(input)?).ok()?;
    if len > input.len() {
        return None;
    }
    let (bytes, rest) = input.split_at(len);
    *input = rest;
    Some(bytes)
}

/// Takes one key, value and version off the front of `input`.
fn take_entry<'a>(input: &mut &'a [u8]) -> Option<(&'a [u8], &'a [u8], u64)> {
    let key = take_bytes(input)?;
    let value = take_bytes(input)?;
    let version = take_varint(input)?;
    Some((key, value, version))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_and_overlong_ones_are_refused() {
        for n in [0, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, n);
            let mut input = &out[..];
            assert_eq!(take_varint(&mut input), Some(n));
            assert!(input.is_empty());
        }
        let mut too_long: &[u8] = &[0xff; 11];
        assert_eq!(take_varint(&mut too_long), None);
        let mut past_64_bits: &[u8] = &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2];
        assert_eq!(take_varint(&mut past_64_bits), None);
        let mut cut: &[u8] = &[0x80];
        assert_eq!(take_varint(&mut cut), None);
    }

    #[test]
    fn a_written_snapshot_parses_back_to_its_keys_and_sessions() {
        let mut w = SnapshotWriter::new(Box::new(Vec::new()));
        w.keys(3).unwrap();
        let big = vec![9u8; WRITE_BUFFER_BYTES];
        w.entry(b"a", b"1", 1).unwrap();
        w.entry(b"b", &big, 300).unwrap();
        w.entry(b"", b"", u64::MAX).unwrap();
        let bytes = w.finish(&SessionTable::default()).unwrap();
        let layout = SnapshotLayout::parse(&bytes).unwrap();
        let entries: Vec<_> = layout.entries().collect();
        assert_eq!(
            entries,
            vec![
                (&b"a"[..], &b"1"[..], 1),
                (&b"b"[..], &big[..], 300),
                (&b""[..], &b""[..], u64::MAX)
            ]
        );
    }

    #[test]
    fn a_count_that_does_not_match_the_keys_written_is_an_error() {
        let mut w = SnapshotWriter::new(Box::new(Vec::new()));
        w.keys(2).unwrap();
        w.entry(b"a", b"1", 1).unwrap();
        assert!(w.finish(&SessionTable::default()).is_err());
        let mut w = SnapshotWriter::new(Box::new(Vec::new()));
        assert!(w.entry(b"a", b"1", 1).is_err());
    }

    /// A spool whose disk fills after `room` bytes.
    struct Full {
        room: u64,
        len: u64,
    }

    impl SnapshotSpool for Full {
        fn append(&mut self, data: &[u8]) -> Result<(), StorageError> {
            if self.len + data.len() as u64 > self.room {
                let e = std::io::Error::other("no space left");
                return Err(StorageError::io("write snapshot spool", "/spool", e));
            }
            self.len += data.len() as u64;
            Ok(())
        }
        fn len(&self) -> u64 {
            self.len
        }
        fn finish(self: Box<Self>) -> Result<Bytes, StorageError> {
            Ok(Bytes::new())
        }
    }

    #[test]
    fn a_spool_that_fails_fails_the_snapshot_never_a_part_of_it() {
        for room in [0, 100, 200_000] {
            let mut w = SnapshotWriter::new(Box::new(Full { room, len: 0 }));
            let written = w.keys(10_000).and_then(|()| {
                (0..10_000u32).try_for_each(|i| w.entry(&i.to_be_bytes(), &[7; 50], 1))
            });
            let result = written.and_then(|()| w.finish(&SessionTable::default()));
            let err = result.expect_err("the spool is full").to_string();
            assert!(err.contains("/spool"), "{err}");
        }
    }
}
