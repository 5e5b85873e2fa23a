//! The write-ahead log in front of LMDB: each [`Storage::write`](raftkv_raft::Storage::write)
//! is one record appended to a preallocated segment file and one `fdatasync`, instead of an
//! LMDB commit's two. LMDB receives the same ops later, many writes per transaction
//! (a checkpoint), and records the sequence number of the last record it holds; segments
//! whose records LMDB holds are deleted.
//!
//! # Files
//! `wal-<first seq, 20 digits>.log` in the storage directory, preallocated to
//! [`LmdbOptions::wal_segment_bytes`](crate::LmdbOptions::wal_segment_bytes) (larger if one
//! record needs it), so that an append changes no file size and `fdatasync` writes only data.
//!
//! # Record
//! `len (u32 LE) ‖ crc32c of body (u32 LE) ‖ body`, body = postcard of `(seq, ops)`. Records
//! follow each other with no gap; sequence numbers rise by one across all segments. The
//! rest of a segment after its last record is zeros (never written).
//!
//! # Recovery
//! Records after LMDB's sequence number are read back in order. A record that does not verify
//! ends a segment only where a crash can leave one: at the tail of the last segment, as the
//! remains of the one write whose `fdatasync` had not returned (each write waits for its
//! sync before the next starts), or at the tail of a segment followed by one that starts with
//! exactly the record that write would have been (the open after that crash started it). If
//! a verifiable record follows it, or the sequence numbers skip, the WAL is reported
//! [`StorageError::Corrupt`]. Segments stay until LMDB holds their records, so an open after
//! a crash keeps the segments it recovered from.
//! Snapshot and compaction ops never enter the WAL ([`is_record_op`]): they go to LMDB with
//! the checkpoints, in order with every record before them (see `lib.rs`).

use raftkv_raft::{Entry, HardState, StorageError, WriteOp};
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Bytes before a record's body: its length and its CRC.
const HEADER_BYTES: usize = 8;

/// The largest record body, in bytes. A write that encodes larger is refused.
pub(crate) const RECORD_BYTES_MAX: usize = 1 << 30;

const SEGMENT_PREFIX: &str = "wal-";
const SEGMENT_SUFFIX: &str = ".log";

/// An op as written: borrowed, so entries are encoded without a copy first. Its variants and
/// their order must match [`RecordOp`].
#[derive(Serialize)]
enum RecordOpRef<'a> {
    HardState(&'a HardState),
    Append(&'a [Entry]),
}

/// An op as read back.
#[derive(Deserialize)]
enum RecordOp {
    HardState(HardState),
    Append(Vec<Entry>),
}

impl From<RecordOp> for WriteOp {
    fn from(op: RecordOp) -> Self {
        match op {
            RecordOp::HardState(hs) => WriteOp::HardState(hs),
            RecordOp::Append(entries) => WriteOp::Append(entries),
        }
    }
}

fn io_error(context: &str, path: &Path, e: impl std::fmt::Display) -> StorageError {
    StorageError::Io(format!("{context} {}: {e}", path.display()))
}

fn corrupt(path: &Path, detail: String) -> StorageError {
    StorageError::Corrupt {
        index: None,
        detail: format!("WAL {}: {detail}", path.display()),
    }
}

/// The name of the segment whose first record is `seq`.
fn segment_name(seq: u64) -> String {
    format!("{SEGMENT_PREFIX}{seq:020}{SEGMENT_SUFFIX}")
}

/// The first sequence number of a segment, from its file name.
fn segment_seq(name: &str) -> Option<u64> {
    let digits = name
        .strip_prefix(SEGMENT_PREFIX)?
        .strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The segments in `dir`, oldest first.
pub(crate) fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StorageError> {
    let mut found = Vec::new();
    let listing = fs::read_dir(dir).map_err(|e| io_error("list", dir, e))?;
    for item in listing {
        let item = item.map_err(|e| io_error("list", dir, e))?;
        let name = item.file_name();
        if let Some(seq) = name.to_str().and_then(segment_seq) {
            found.push((seq, item.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// Whether `op` goes into a WAL record: entries and hard state do. Snapshots go to LMDB
/// directly, and so does compaction (replayed from the WAL, a compaction could outlive a
/// snapshot the crash lost).
pub(crate) fn is_record_op(op: &WriteOp) -> bool {
    matches!(op, WriteOp::Append(_) | WriteOp::HardState(_))
}

/// Encodes the record `(seq, ops)` into `buf` (cleared first); every op must pass
/// [`is_record_op`].
pub(crate) fn encode_record<'a>(
    seq: u64,
    ops: impl IntoIterator<Item = &'a WriteOp>,
    buf: &mut Vec<u8>,
) -> Result<(), String> {
    let refs: Vec<RecordOpRef> = ops
        .into_iter()
        .map(|op| match op {
            WriteOp::HardState(hs) => Ok(RecordOpRef::HardState(hs)),
            WriteOp::Append(entries) => Ok(RecordOpRef::Append(entries)),
            WriteOp::CompactTo(_) | WriteOp::InstallSnapshot(_) | WriteOp::SaveSnapshot(_) => {
                Err("only entries and hard state are WAL records".to_string())
            }
        })
        .collect::<Result<_, _>>()?;
    buf.clear();
    buf.resize(HEADER_BYTES, 0);
    let mut body = postcard::to_extend(&(seq, refs), std::mem::take(buf))
        .map_err(|e| format!("cannot encode WAL record {seq}: {e}"))?;
    let len = body.len() - HEADER_BYTES;
    if len > RECORD_BYTES_MAX {
        return Err(format!(
            "WAL record {seq} of {len} bytes, over the bound of {RECORD_BYTES_MAX}"
        ));
    }
    let crc = crc32c::crc32c(&body[HEADER_BYTES..]);
    body[..4].copy_from_slice(&(len as u32).to_le_bytes());
    body[4..HEADER_BYTES].copy_from_slice(&crc.to_le_bytes());
    *buf = body;
    Ok(())
}

/// What one position of a segment holds.
enum Slot {
    /// A verified record and the offset after it.
    Record {
        seq: u64,
        ops: Vec<RecordOp>,
        end: usize,
    },
    /// Zeros, or too few bytes for a header: no record starts here.
    Empty,
    /// Bytes that are not a verifiable record.
    Invalid(String),
}

fn read_slot(bytes: &[u8], offset: usize) -> Slot {
    let Some(header) = bytes.get(offset..offset + HEADER_BYTES) else {
        return Slot::Empty;
    };
    let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
    if len == 0 && crc == 0 {
        return Slot::Empty;
    }
    if len > RECORD_BYTES_MAX {
        return Slot::Invalid(format!("record length {len} over the bound"));
    }
    let Some(body) = bytes.get(offset + HEADER_BYTES..offset + HEADER_BYTES + len) else {
        return Slot::Invalid(format!(
            "record of {len} bytes runs past the end of the file"
        ));
    };
    let actual = crc32c::crc32c(body);
    if actual != crc {
        return Slot::Invalid(format!(
            "CRC mismatch: stored {crc:#010x}, computed {actual:#010x}"
        ));
    }
    match postcard::take_from_bytes::<(u64, Vec<RecordOp>)>(body) {
        Ok(((seq, ops), [])) => Slot::Record {
            seq,
            ops,
            end: offset + HEADER_BYTES + len,
        },
        Ok((_, rest)) => Slot::Invalid(format!("{} trailing bytes in a record", rest.len())),
        Err(e) => Slot::Invalid(format!("undecodable record: {e}")),
    }
}

/// True if a verifiable record with a sequence number of at least `seq` starts anywhere in
/// `bytes` (a scan at every offset, run only on a WAL that ends in an invalid record).
fn any_record_from(bytes: &[u8], seq: u64) -> bool {
    (0..bytes.len())
        .any(|offset| matches!(read_slot(bytes, offset), Slot::Record { seq: s, .. } if s >= seq))
}

/// What a WAL holds beyond LMDB.
#[derive(Debug, Default)]
pub(crate) struct Recovered {
    /// Ops of the records after LMDB's sequence number, in order.
    pub ops: Vec<WriteOp>,
    /// The last sequence number in the WAL or in LMDB: the next record is this plus one.
    pub last_seq: u64,
    /// Every segment file found; all of them can go once `ops` is in LMDB.
    pub segments: Vec<PathBuf>,
}

/// Reads every segment in `dir`, keeping the records after `applied_seq` (LMDB's).
pub(crate) fn recover(dir: &Path, applied_seq: u64) -> Result<Recovered, StorageError> {
    let found = segments(dir)?;
    let mut recovered = Recovered {
        last_seq: applied_seq,
        ..Recovered::default()
    };
    let next_firsts: Vec<Option<u64>> = found
        .iter()
        .skip(1)
        .map(|(seq, _)| Some(*seq))
        .chain([None])
        .collect();
    for ((first_seq, path), next_first) in found.into_iter().zip(next_firsts) {
        let bytes = fs::read(&path).map_err(|e| io_error("read", &path, e))?;
        let mut offset = 0;
        // The sequence number the next record of this segment must have.
        let mut expected = first_seq;
        // An unfinished write may end this segment: it is the last one, or the next one starts
        // with the record the unfinished write would have been (an open after the crash
        // started it there), so nothing acknowledged is missing.
        let may_end_unfinished = |expected: u64| next_first.is_none_or(|next| next == expected);
        loop {
            match read_slot(&bytes, offset) {
                Slot::Record { seq, ops, end } => {
                    let want = expected;
                    if seq != want {
                        return Err(corrupt(
                            &path,
                            format!(
                                "record at offset {offset} has sequence {seq}, expected {want}"
                            ),
                        ));
                    }
                    if seq > applied_seq {
                        if seq != recovered.last_seq + 1 {
                            return Err(corrupt(
                                &path,
                                format!(
                                    "record {seq} follows {} (LMDB holds up to {applied_seq}): \
                                     records are missing",
                                    recovered.last_seq
                                ),
                            ));
                        }
                        recovered.ops.extend(ops.into_iter().map(WriteOp::from));
                        recovered.last_seq = seq;
                    }
                    expected = seq + 1;
                    offset = end;
                }
                Slot::Empty => {
                    if let Some(at) = bytes[offset..].iter().position(|&b| b != 0) {
                        let at = offset + at;
                        if !may_end_unfinished(expected) || any_record_from(&bytes[at..], expected)
                        {
                            return Err(corrupt(
                                &path,
                                format!("non-zero bytes at offset {at} after the last record"),
                            ));
                        }
                        tracing::warn!(wal = %path.display(), offset = at, "ignoring the remains of an unfinished write at the end of the WAL");
                    }
                    break;
                }
                Slot::Invalid(why) => {
                    let later = any_record_from(&bytes[offset + 1..], expected);
                    if !may_end_unfinished(expected) || later {
                        return Err(corrupt(&path, format!("offset {offset}: {why}")));
                    }
                    tracing::warn!(wal = %path.display(), offset, "ignoring an unfinished write at the end of the WAL: {why}");
                    break;
                }
            }
        }
        recovered.segments.push(path);
    }
    Ok(recovered)
}

/// Deletes `paths` and makes the deletions durable.
pub(crate) fn remove(dir: &Path, paths: &[PathBuf]) -> Result<(), StorageError> {
    for path in paths {
        fs::remove_file(path).map_err(|e| io_error("delete", path, e))?;
    }
    if !paths.is_empty() {
        sync_dir(dir)?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error("sync directory", dir, e))
}

/// Reserves `bytes` of disk for `file` (its length becomes `bytes`), so that writes within
/// them change no metadata that `fdatasync` would have to write.
fn preallocate(file: &File, bytes: u64) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::io::AsRawFd;
        let len = libc::off_t::try_from(bytes).map_err(std::io::Error::other)?;
        // Safety: a system call on a descriptor we own; no memory is passed.
        let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
        match rc {
            0 => return Ok(()),
            // Not supported by this file system: a plain length below does.
            libc::EOPNOTSUPP | libc::EINVAL => {}
            _ => return Err(std::io::Error::from_raw_os_error(rc)),
        }
    }
    file.set_len(bytes)
}

/// The open WAL: the segment being appended to, and the older ones LMDB does not hold yet.
pub(crate) struct Wal {
    dir: PathBuf,
    segment_bytes: u64,
    file: File,
    path: PathBuf,
    /// The sequence number the current segment starts at (its name).
    first_seq: u64,
    /// The current segment's preallocated length.
    len: u64,
    /// Where the next record goes in the current segment.
    offset: u64,
    /// The sequence number of the last record written (or LMDB's, before any).
    last_seq: u64,
    /// Older segments, oldest first, each with the last sequence number it holds.
    closed: std::collections::VecDeque<(PathBuf, u64)>,
    buf: Vec<u8>,
}

impl Wal {
    /// Starts a new segment for the records after `last_seq`.
    pub(crate) fn create(
        dir: &Path,
        last_seq: u64,
        segment_bytes: u64,
    ) -> Result<Self, StorageError> {
        let (file, path) = create_segment(dir, last_seq + 1, segment_bytes)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            segment_bytes,
            file,
            path,
            first_seq: last_seq + 1,
            len: segment_bytes,
            offset: 0,
            last_seq,
            closed: Default::default(),
            buf: Vec::new(),
        })
    }

    /// The sequence number of the last record written.
    pub(crate) fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Appends `ops` as the next record and syncs it; returns its sequence number.
    pub(crate) fn append<'a>(
        &mut self,
        ops: impl IntoIterator<Item = &'a WriteOp>,
    ) -> Result<u64, StorageError> {
        let seq = self.last_seq + 1;
        let mut buf = std::mem::take(&mut self.buf);
        let encoded = encode_record(seq, ops, &mut buf);
        let result = encoded
            .map_err(|why| StorageError::Io(format!("write rejected: {why}")))
            .and_then(|()| self.write_synced(&buf));
        // Keep the buffer for the next record, unless one huge record made it huge.
        if buf.capacity() <= 1 << 20 {
            self.buf = buf;
        }
        result?;
        self.last_seq = seq;
        Ok(seq)
    }

    fn write_synced(&mut self, record: &[u8]) -> Result<(), StorageError> {
        let len = record.len() as u64;
        if self.offset + len > self.len {
            self.rotate(len)?;
        }
        self.file
            .write_all_at(record, self.offset)
            .map_err(|e| io_error("write", &self.path, e))?;
        self.file
            .sync_data()
            .map_err(|e| io_error("sync", &self.path, e))?;
        self.offset += len;
        Ok(())
    }

    /// Closes the current segment and starts the next, large enough for `need` bytes. An
    /// empty current segment is enlarged instead (its name is already the next record's).
    fn rotate(&mut self, need: u64) -> Result<(), StorageError> {
        let bytes = self.segment_bytes.max(need);
        if self.last_seq < self.first_seq {
            preallocate(&self.file, bytes)
                .and_then(|()| self.file.sync_all())
                .map_err(|e| io_error("enlarge", &self.path, e))?;
            self.len = bytes;
            return Ok(());
        }
        let (file, path) = create_segment(&self.dir, self.last_seq + 1, bytes)?;
        let old = std::mem::replace(&mut self.path, path);
        self.first_seq = self.last_seq + 1;
        self.file = file;
        self.len = bytes;
        self.offset = 0;
        self.closed.push_back((old, self.last_seq));
        Ok(())
    }

    /// Keeps the segment at `path` (from before this open) until LMDB holds `last_seq`.
    pub(crate) fn keep_until(&mut self, path: &Path, last_seq: u64) {
        // An empty segment from before may carry the name the new one was created under.
        if path != self.path {
            self.closed.push_back((path.to_path_buf(), last_seq));
        }
    }

    /// Deletes the closed segments whose records LMDB holds (up to `applied_seq`).
    pub(crate) fn release(&mut self, applied_seq: u64) -> Result<(), StorageError> {
        let mut done = Vec::new();
        while self.closed.front().is_some_and(|c| c.1 <= applied_seq) {
            done.extend(self.closed.pop_front().map(|c| c.0));
        }
        // A deletion lost in a crash is harmless: recovery skips what LMDB holds.
        for path in &done {
            fs::remove_file(path).map_err(|e| io_error("delete", path, e))?;
        }
        Ok(())
    }

    /// Deletes every segment, the current one too: LMDB holds every record (a clean close).
    pub(crate) fn remove_all(self) -> Result<(), StorageError> {
        let mut paths: Vec<PathBuf> = self.closed.into_iter().map(|c| c.0).collect();
        paths.push(self.path);
        remove(&self.dir, &paths)
    }
}

fn create_segment(dir: &Path, first_seq: u64, bytes: u64) -> Result<(File, PathBuf), StorageError> {
    let path = dir.join(segment_name(first_seq));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .map_err(|e| io_error("create", &path, e))?;
    preallocate(&file, bytes).map_err(|e| io_error("preallocate", &path, e))?;
    file.sync_all().map_err(|e| io_error("sync", &path, e))?;
    sync_dir(dir)?;
    Ok((file, path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftkv_raft::LogId;
    use raftkv_raft::Payload;

    fn entry(index: u64, term: u64, payload: &str) -> Entry {
        Entry {
            index,
            term,
            payload: Payload::Command(bytes::Bytes::copy_from_slice(payload.as_bytes())),
        }
    }

    fn ops_of(seq: u64) -> Vec<WriteOp> {
        vec![
            WriteOp::Append(vec![entry(seq, 1, "payload"), entry(seq + 1, 1, "more")]),
            WriteOp::HardState(HardState {
                term: 1,
                voted_for: Some(2),
                commit: seq,
            }),
        ]
    }

    fn wal_with(records: u64, segment_bytes: u64) -> (tempfile::TempDir, Wal) {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::create(dir.path(), 0, segment_bytes).unwrap();
        for seq in 1..=records {
            assert_eq!(wal.append(&ops_of(seq)).unwrap(), seq);
        }
        (dir, wal)
    }

    fn ops_count(r: &Recovered) -> usize {
        r.ops.len()
    }

    #[test]
    fn records_round_trip_across_segments() {
        let (dir, wal) = wal_with(100, 1024);
        assert!(
            wal.closed.len() >= 3,
            "{} closed segments",
            wal.closed.len()
        );
        drop(wal);
        let r = recover(dir.path(), 0).unwrap();
        assert_eq!(r.last_seq, 100);
        let expected: Vec<WriteOp> = (1..=100).flat_map(ops_of).collect();
        assert_eq!(r.ops, expected);
        // What LMDB holds is skipped.
        let r = recover(dir.path(), 60).unwrap();
        assert_eq!(r.last_seq, 100);
        assert_eq!(r.ops, (61..=100).flat_map(ops_of).collect::<Vec<_>>());
        let r = recover(dir.path(), 100).unwrap();
        assert_eq!((ops_count(&r), r.last_seq), (0, 100));
    }

    #[test]
    fn snapshot_and_compaction_ops_are_refused_as_records() {
        let mut buf = Vec::new();
        let snapshot = raftkv_raft::Snapshot {
            last: LogId::new(1, 1),
            data: bytes::Bytes::new(),
            membership: Default::default(),
        };
        assert!(encode_record(1, &[WriteOp::SaveSnapshot(snapshot)], &mut buf).is_err());
        let compaction = WriteOp::CompactTo(LogId::new(1, 1));
        assert!(!is_record_op(&compaction));
        assert!(encode_record(1, &[compaction], &mut buf).is_err());
    }

    #[test]
    fn released_segments_are_deleted_and_the_rest_recovers() {
        let (dir, mut wal) = wal_with(100, 1024);
        let before = segments(dir.path()).unwrap().len();
        wal.release(50).unwrap();
        let after = segments(dir.path()).unwrap();
        assert!(after.len() < before);
        // Only segments wholly at or below 50 went: the first left starts after 1.
        let first_left = after[0].0;
        assert!((2..=51).contains(&first_left), "{first_left}");
        drop(wal);
        let r = recover(dir.path(), 50).unwrap();
        assert_eq!(r.ops, (51..=100).flat_map(ops_of).collect::<Vec<_>>());
        // LMDB one record short of the first segment left: that record is missing, not
        // silently skipped.
        let err = recover(dir.path(), first_left - 2).unwrap_err();
        assert!(matches!(err, StorageError::Corrupt { .. }), "{err:?}");
    }

    /// The bytes of the last segment and where its records end.
    fn last_segment(dir: &Path) -> (PathBuf, Vec<u8>, usize) {
        let (_, path) = segments(dir).unwrap().pop().unwrap();
        let bytes = fs::read(&path).unwrap();
        let end = bytes.iter().rposition(|&b| b != 0).unwrap() + 1;
        (path, bytes, end)
    }

    #[test]
    fn a_torn_last_write_is_ignored_wherever_it_was_cut() {
        let (dir, wal) = wal_with(10, 1 << 20);
        drop(wal);
        let (path, bytes, end) = last_segment(dir.path());
        // Find where the last record starts: recover up to 9 by cutting it entirely.
        let mut start = end;
        while !matches!(read_slot(&bytes, start), Slot::Record { seq: 10, .. }) {
            start -= 1;
        }
        for cut in start + 1..end {
            let mut torn = bytes.clone();
            torn[cut..end].fill(0);
            fs::write(&path, &torn).unwrap();
            let r = recover(dir.path(), 0).unwrap();
            assert_eq!(r.last_seq, 9, "cut at {cut}");
        }
        // Only the header lost (written out of order): the body's bytes are remains too.
        let mut torn = bytes.clone();
        torn[start..start + HEADER_BYTES].fill(0);
        fs::write(&path, &torn).unwrap();
        assert_eq!(recover(dir.path(), 0).unwrap().last_seq, 9);
    }

    #[test]
    fn a_torn_write_ends_an_older_segment_when_the_next_starts_where_it_would_have_been() {
        // A crash tore record 10; the open after it started a new segment at 10 and kept the
        // old one (LMDB did not hold its records yet); then the node crashed again.
        let (dir, wal) = wal_with(10, 1 << 20);
        drop(wal);
        let (path, bytes, end) = last_segment(dir.path());
        let mut torn = bytes.clone();
        torn[end - 5..end].fill(0);
        fs::write(&path, &torn).unwrap();
        let r = recover(dir.path(), 0).unwrap();
        assert_eq!(r.last_seq, 9);
        let mut wal = Wal::create(dir.path(), r.last_seq, 1 << 20).unwrap();
        for p in &r.segments {
            wal.keep_until(p, r.last_seq);
        }
        wal.append(&ops_of(10)).unwrap();
        wal.append(&ops_of(11)).unwrap();
        drop(wal);
        let r = recover(dir.path(), 0).unwrap();
        assert_eq!(r.last_seq, 11);
        assert_eq!(r.ops, (1..=11).flat_map(ops_of).collect::<Vec<_>>());
        // A segment whose records do not start where its name says is corrupt.
        let (_, newer) = segments(dir.path()).unwrap().pop().unwrap();
        fs::rename(&newer, dir.path().join(segment_name(12))).unwrap();
        assert!(matches!(
            recover(dir.path(), 0),
            Err(StorageError::Corrupt { .. })
        ));
    }

    #[test]
    fn a_flipped_bit_before_the_last_record_is_corruption() {
        let (dir, wal) = wal_with(10, 1 << 20);
        drop(wal);
        let (path, bytes, end) = last_segment(dir.path());
        for at in (0..end).step_by(7) {
            let mut bad = bytes.clone();
            bad[at] ^= 0x10;
            fs::write(&path, &bad).unwrap();
            match recover(dir.path(), 0) {
                // A flip inside the last record is indistinguishable from its torn write.
                Ok(r) => assert_eq!(r.last_seq, 9, "flip at {at}"),
                Err(e) => assert!(matches!(e, StorageError::Corrupt { .. }), "{e:?}"),
            }
        }
        // A flip in the first record, with nine good ones after it.
        let mut bad = bytes.clone();
        bad[HEADER_BYTES + 3] ^= 1;
        assert_recovery_finds_corruption(dir.path(), &path, &bad);
    }

    /// Writes `bytes` to the segment at `path` and expects recovery to report corruption.
    fn assert_recovery_finds_corruption(dir: &Path, path: &Path, bytes: &[u8]) {
        fs::write(path, bytes).unwrap();
        let result = recover(dir, 0);
        assert!(
            matches!(result, Err(StorageError::Corrupt { .. })),
            "{result:?}"
        );
    }

    #[test]
    fn an_invalid_record_in_an_older_segment_is_corruption() {
        let (dir, wal) = wal_with(100, 1024);
        drop(wal);
        let (_, first) = segments(dir.path()).unwrap().remove(0);
        let mut bytes = fs::read(&first).unwrap();
        let end = bytes.iter().rposition(|&b| b != 0).unwrap();
        bytes[end] ^= 0xff;
        assert_recovery_finds_corruption(dir.path(), &first, &bytes);
    }

    #[test]
    fn a_record_larger_than_a_segment_gets_a_segment_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::create(dir.path(), 0, 1024).unwrap();
        let big = "x".repeat(10_000);
        wal.append(&[WriteOp::Append(vec![entry(1, 1, &big)])])
            .unwrap();
        wal.append(&ops_of(2)).unwrap();
        drop(wal);
        let r = recover(dir.path(), 0).unwrap();
        assert_eq!(r.last_seq, 2);
        assert_eq!(r.ops[0], WriteOp::Append(vec![entry(1, 1, &big)]));
    }

    #[test]
    fn segment_names_parse_back_and_other_files_are_ignored() {
        assert_eq!(segment_seq(&segment_name(42)), Some(42));
        assert_eq!(segment_seq("wal-42.log"), None);
        assert_eq!(segment_seq("wal-0000000000000000004x.log"), None);
        assert_eq!(segment_seq("data.mdb"), None);
    }
}
