//! The write-ahead log in front of LMDB: each [`Storage::write`](raftkv_raft::Storage::write)
//! is one record appended to a preallocated segment file and one `fdatasync`, instead of an
//! LMDB commit's two. LMDB receives the same ops later, many writes per transaction
//! (a checkpoint), and records the sequence number of the last record it holds; segments
//! whose records LMDB holds are deleted.
//!
//! # File I/O
//! Every file operation goes through [`fs::WalFs`] and [`fs::WalFile`]: [`fs::StdFs`]
//! (`std::fs`, static dispatch) in the store, a simulated disk in the power-loss tests.
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
//!
//! # Missing data is not a torn tail
//! A segment the WAL moves on from (at a rotation, or the newest one from before an open) is
//! sealed with a record naming the next segment, once that one exists. Each checkpoint records
//! in LMDB the segment being written and the last durable record
//! ([`check_head`](recover::check_head)). A clean close leaves one empty segment named after
//! the next record. So a WAL missing its newest segment (or records a checkpoint saw) is
//! refused ([`missing`]) instead of opening on an older log.
//! Snapshot and compaction ops never enter the WAL ([`is_record_op`]): they go to LMDB with
//! the checkpoints, in order with every record before them (see `lib.rs`).

pub(crate) mod fs;
#[cfg(test)]
mod full_disk_tests;
#[cfg(test)]
mod power_loss_tests;
mod record;
mod recover;
mod segment;
#[cfg(test)]
mod sim_fs;
#[cfg(test)]
mod tests;

pub(crate) use record::is_record_op;
use record::{encode_record, encode_seal, SEAL_BYTES_MAX};
pub(crate) use recover::{recover_checked, Recovered, Tail};
use segment::{create_segment, preallocate, remove, segment_name, SEGMENT_BYTES_SHORT_MIN};

use fs::{StdFs, WalFile, WalFs};
use raftkv_raft::{StorageError, WriteOp};
use std::path::{Path, PathBuf};

pub(crate) fn io_error(op: &'static str, path: &Path, e: std::io::Error) -> StorageError {
    StorageError::io(op, path, e)
}

pub(crate) fn corrupt(path: &Path, detail: String) -> StorageError {
    StorageError::Corrupt {
        index: None,
        detail: format!("WAL {}: {detail}", path.display()),
    }
}

/// The refusal to open a store whose WAL lost data it had made durable (a deleted or
/// truncated segment, not a torn last write): the node may have acknowledged writes it no
/// longer holds, so starting it could break a majority's promise.
pub(crate) fn missing(dir: &Path, what: String) -> StorageError {
    StorageError::Corrupt {
        index: None,
        detail: format!(
            "missing WAL data in {}: {what}. This node may have acknowledged writes it no longer \
             holds; it must not rejoin with this data. To recover: wipe this node's data \
             directory and rejoin the cluster as a new, empty member that catches up from the \
             others",
            dir.display()
        ),
    }
}

/// The open WAL: the segment being appended to, and the older ones LMDB does not hold yet.
/// All its file I/O goes through `F` ([`fs`]).
pub(crate) struct Wal<F: WalFs = StdFs> {
    fs: F,
    dir: PathBuf,
    segment_bytes: u64,
    file: F::File,
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
    /// While a closed segment holding records up to this sequence number is kept (segments
    /// from before a resume), new segments are short ones: see [`resumed_segment_bytes`].
    short_while_kept: u64,
}

/// The size a WAL resumed beside segments from before its open preallocates its segments to
/// until those are released: a sixteenth of a whole one (at least [`SEGMENT_BYTES_SHORT_MIN`], at most
/// `segment_bytes`). The old segments keep their room until a checkpoint has put their records
/// in LMDB, and that checkpoint needs room of its own: a whole new segment beside them could
/// take it (a node restarted on a 40 MiB disk after filling it failed so, with two 16 MiB
/// segments and LMDB short of 1 MiB). Once they are released, rotation asks for whole
/// segments again.
fn resumed_segment_bytes(segment_bytes: u64) -> u64 {
    (segment_bytes / 16)
        .max(SEGMENT_BYTES_SHORT_MIN)
        .min(segment_bytes)
}

impl<F: WalFs> Wal<F> {
    /// Starts a new segment for the records after `last_seq`.
    pub(crate) fn create(
        fs: F,
        dir: &Path,
        last_seq: u64,
        segment_bytes: u64,
    ) -> Result<Self, StorageError> {
        let (file, path, len) = create_segment(
            &fs,
            dir,
            last_seq + 1,
            segment_bytes,
            SEGMENT_BYTES_SHORT_MIN,
        )?;
        Ok(Self {
            fs,
            dir: dir.to_path_buf(),
            segment_bytes,
            file,
            path,
            first_seq: last_seq + 1,
            len,
            offset: 0,
            last_seq,
            closed: Default::default(),
            buf: Vec::new(),
            short_while_kept: 0,
        })
    }

    /// Resumes writing after an open's recovery: a new segment after the last record
    /// recovered, the newest segment from before sealed to point at it, and the recovered
    /// segments kept until LMDB holds their records. While segments from before are kept, new
    /// segments are short ones ([`resumed_segment_bytes`]).
    pub(crate) fn resume(
        fs: F,
        dir: &Path,
        recovered: &Recovered,
        segment_bytes: u64,
    ) -> Result<Self, StorageError> {
        let first_bytes = if recovered.segments.is_empty() {
            segment_bytes
        } else {
            resumed_segment_bytes(segment_bytes)
        };
        let mut wal = Self::create(fs, dir, recovered.last_seq, first_bytes)?;
        wal.segment_bytes = segment_bytes;
        wal.short_while_kept = recovered.last_seq;
        if let Some(tail) = &recovered.tail {
            wal.seal_previous(tail)?;
        }
        for path in &recovered.segments {
            wal.keep_until(path, recovered.last_seq);
        }
        Ok(wal)
    }

    /// The sequence number of the last record written.
    pub(crate) fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// The first sequence number of the segment being written (its name).
    pub(crate) fn first_seq(&self) -> u64 {
        self.first_seq
    }

    /// Seals `tail`, the newest segment from before this open, now that this WAL's first
    /// segment exists: recovery then knows a segment follows it. Skipped (nothing can follow
    /// it unnoticed) when it is this WAL's own segment, when its records are not the ones just
    /// before this WAL's, or when it has no room left.
    pub(crate) fn seal_previous(&self, tail: &Tail) -> Result<(), StorageError> {
        if tail.path == self.path || tail.next_seq != self.first_seq {
            return Ok(());
        }
        let seal = encode_seal(self.first_seq);
        if tail.end + seal.len() as u64 > tail.len {
            tracing::warn!(wal = %tail.path.display(), "no room to seal the WAL segment");
            return Ok(());
        }
        let file = self
            .fs
            .open_write(&tail.path)
            .map_err(|e| io_error("open", &tail.path, e))?;
        file.write_all_at(&seal, tail.end)
            .and_then(|()| file.sync_data())
            .map_err(|e| io_error("seal", &tail.path, e))
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
            .map_err(|reason| StorageError::Rejected {
                path: self.dir.clone(),
                reason,
            })
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
        // Room is kept after every record for the seal that ends the segment.
        let need = len + SEAL_BYTES_MAX as u64;
        if self.offset + need > self.len {
            self.rotate(need)?;
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

    /// Closes the current segment and starts the next, large enough for `need` bytes (a whole
    /// segment unless the disk is short of space: see [`create_segment`]). An
    /// empty current segment is enlarged instead (its name is already the next record's).
    /// The closed segment is sealed once the next one exists (a crash in between leaves it
    /// unsealed and followed by an empty segment: nothing lost).
    fn rotate(&mut self, need: u64) -> Result<(), StorageError> {
        let whole = if self
            .closed
            .front()
            .is_some_and(|c| c.1 <= self.short_while_kept)
        {
            resumed_segment_bytes(self.segment_bytes)
        } else {
            self.segment_bytes
        };
        let bytes = whole.max(need);
        let min_bytes = need.max(SEGMENT_BYTES_SHORT_MIN);
        if self.last_seq < self.first_seq {
            let len = preallocate(&self.file, &self.path, bytes, min_bytes.max(self.len))?;
            self.file
                .sync_all()
                .map_err(|e| io_error("enlarge", &self.path, e))?;
            self.len = len;
            return Ok(());
        }
        let (file, path, bytes) =
            create_segment(&self.fs, &self.dir, self.last_seq + 1, bytes, min_bytes)?;
        self.file
            .write_all_at(&encode_seal(self.last_seq + 1), self.offset)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| io_error("seal", &self.path, e))?;
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
        // A deletion lost in a crash is harmless (recovery skips what LMDB holds), but
        // `remove` makes it durable all the same: each file created or removed is.
        remove(&self.fs, &self.dir, &done)
    }

    /// Deletes every segment with records: LMDB holds every record (a clean close). An empty
    /// segment named after the next record stays (created first, unallocated), so that the
    /// segment LMDB last saw being written, or a later one, is always there (see
    /// [`check_head`](recover::check_head)); the next open writes into it.
    pub(crate) fn remove_all(self) -> Result<(), StorageError> {
        let next = self.dir.join(segment_name(self.last_seq + 1));
        let mut paths: Vec<PathBuf> = self.closed.into_iter().map(|c| c.0).collect();
        if self.path == next {
            self.file
                .set_len(0)
                .and_then(|()| self.file.sync_all())
                .map_err(|e| io_error("empty", &self.path, e))?;
        } else {
            create_segment(&self.fs, &self.dir, self.last_seq + 1, 0, 0)?;
            paths.push(self.path);
        }
        // Oldest first: a crash part way leaves a chain that still links up.
        remove(&self.fs, &self.dir, &paths)
    }
}
