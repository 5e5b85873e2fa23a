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

mod record;
mod recover;
mod segment;
#[cfg(test)]
mod tests;

use record::encode_record;
pub(crate) use record::is_record_op;
pub(crate) use recover::recover;
use segment::{create_segment, preallocate, remove};

use raftkv_raft::{StorageError, WriteOp};
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

pub(crate) fn io_error(context: &str, path: &Path, e: impl std::fmt::Display) -> StorageError {
    StorageError::Io(format!("{context} {}: {e}", path.display()))
}

pub(crate) fn corrupt(path: &Path, detail: String) -> StorageError {
    StorageError::Corrupt {
        index: None,
        detail: format!("WAL {}: {detail}", path.display()),
    }
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
