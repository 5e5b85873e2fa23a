//! [`Writer`]: the LMDB environment and everything done to it. It lives on the writer thread,
//! which is the only thread that ever opens a transaction: so it can resize the map (LMDB
//! requires that no transaction be open in the process) and close the environment on drop.

use crate::codec::WalHead;
use crate::codec::{
    self, LogVerifier, SnapshotMeta, FORMAT_VERSION, KEY_FORMAT, KEY_HARD_STATE, KEY_SNAPSHOT,
    KEY_SNAPSHOT_DATA, KEY_SNAPSHOT_MEMBERSHIP, KEY_WAL_HEAD, KEY_WAL_SEQ,
};
use crate::LmdbOptions;
use heed::byteorder::BigEndian;
use heed::types::{Bytes, Str, U64};
use heed::{Database, Env, EnvOpenOptions, MdbError, RwTxn};
use raftkv_raft::{Entry, HardState, LogId, Persisted, Snapshot, StorageError, WriteOp};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The file in the storage directory that one process at a time holds locked.
pub const LOCK_FILE_NAME: &str = "raftkv-storage.lock";

/// LMDB's data file in the storage directory.
pub const DATA_FILE_NAME: &str = "data.mdb";

/// Why a write transaction did not commit.
enum TxnError {
    /// From LMDB: `MapFull` is retried after growing the map, anything else is fatal.
    Lmdb(heed::Error),
    /// The write itself is invalid (it would store a log that cannot be loaded).
    Rejected(String),
}

impl From<heed::Error> for TxnError {
    fn from(e: heed::Error) -> Self {
        TxnError::Lmdb(e)
    }
}

/// `op` failed; the path is filled in by [`crate::checkpoint::in_store`] (the store's directory)
/// unless the caller names a file.
fn io_error(op: &'static str, e: impl Into<LmdbError>) -> StorageError {
    StorageError::io(op, PathBuf::new(), e.into().0)
}

/// An LMDB or file error as the `std::io::Error` it is (or wraps).
struct LmdbError(std::io::Error);

impl From<heed::Error> for LmdbError {
    fn from(e: heed::Error) -> Self {
        match e {
            heed::Error::Io(e) => LmdbError(e),
            other => LmdbError(std::io::Error::other(other.to_string())),
        }
    }
}

impl From<std::io::Error> for LmdbError {
    fn from(e: std::io::Error) -> Self {
        LmdbError(e)
    }
}

/// The open environment and its three databases.
pub(crate) struct Writer {
    // Field order is drop order: the environment closes before the directory lock is released.
    env: Env,
    /// Key: index as 8 big-endian bytes. Value: see [`codec`].
    entries: Database<U64<BigEndian>, Bytes>,
    /// Keys [`KEY_FORMAT`], [`KEY_HARD_STATE`], [`KEY_SNAPSHOT`].
    meta: Database<Str, Bytes>,
    /// Key [`KEY_SNAPSHOT_DATA`]: the snapshot's data, raw.
    snapshot: Database<Str, Bytes>,
    options: LmdbOptions,
    /// The current map size, shared with [`crate::LmdbStorage::map_size_bytes`].
    /// Invariant: only grows, and only up to `options.map_size_bytes_max` (or the size the
    /// data already had when opened, if larger).
    map_size_bytes: Arc<AtomicUsize>,
    /// Set by the first failed write; every later write and load returns it (fail-stop).
    failed: Option<StorageError>,
    /// Shared with the WAL thread, which deletes WAL segments after this writer is gone: the
    /// directory stays locked until both are done.
    lock: Arc<DirLock>,
}

impl Writer {
    /// Opens (creating if needed) the store in `dir`. `options` are already normalised.
    pub(crate) fn open(dir: &Path, options: LmdbOptions) -> Result<Self, StorageError> {
        crate::dir::create_dir_all_synced(dir)?;
        let lock = DirLock::acquire(dir)?;
        let mut env_options = EnvOpenOptions::new();
        env_options.map_size(options.map_size_bytes).max_dbs(3);
        // Safety: LMDB's files are changed only through this environment: the directory lock
        // keeps other processes out, heed's registry keeps this process from opening it twice,
        // and no unsafe flag (NO_SYNC, NO_LOCK, ...) is set.
        let env = unsafe { env_options.open(dir) }.map_err(|e| io_error("open LMDB", e))?;
        cover_data_file_length(&env, dir)?;

        let mut txn = env.write_txn().map_err(|e| io_error("begin", e))?;
        let open_error = |e| io_error("open databases", e);
        let entries = env
            .create_database(&mut txn, Some("entries"))
            .map_err(open_error)?;
        let meta: Database<Str, Bytes> = env
            .create_database(&mut txn, Some("meta"))
            .map_err(open_error)?;
        let snapshot = env
            .create_database(&mut txn, Some("snapshot"))
            .map_err(open_error)?;
        let format = meta
            .get(&txn, KEY_FORMAT)
            .map_err(|e| io_error("read format", e))?;
        match format {
            Some(value) => {
                let version: u32 = codec::decode_meta("format", value)?;
                if version != FORMAT_VERSION {
                    return Err(StorageError::Corrupt {
                        index: None,
                        detail: format!(
                            "format version {version}, this build reads {FORMAT_VERSION}"
                        ),
                    });
                }
            }
            None => {
                let is_new = entries.is_empty(&txn).map_err(open_error)?
                    && meta.is_empty(&txn).map_err(open_error)?;
                if !is_new {
                    return Err(StorageError::Corrupt {
                        index: None,
                        detail: "data present but no format version".into(),
                    });
                }
                let value = codec::encode_meta("format", &FORMAT_VERSION).map_err(|reason| {
                    StorageError::Rejected {
                        path: dir.to_path_buf(),
                        reason,
                    }
                })?;
                meta.put(&mut txn, KEY_FORMAT, &value)
                    .map_err(|e| io_error("write format", e))?;
            }
        }
        txn.commit().map_err(|e| io_error("commit", e))?;
        // LMDB's files and the lock file may have just been created: their names too must
        // survive a power cut.
        crate::dir::sync_dir(dir)?;

        let map_size_bytes = Arc::new(AtomicUsize::new(env.info().map_size));
        Ok(Self {
            env,
            entries,
            meta,
            snapshot,
            options,
            map_size_bytes,
            failed: None,
            lock: Arc::new(lock),
        })
    }

    /// The directory lock, for a thread that must keep the directory locked after the writer
    /// is gone (the WAL thread, which deletes segments last).
    pub(crate) fn dir_lock(&self) -> Arc<DirLock> {
        Arc::clone(&self.lock)
    }

    /// The map size, as updated by this writer.
    pub(crate) fn map_size_bytes(&self) -> Arc<AtomicUsize> {
        self.map_size_bytes.clone()
    }

    /// Everything stored, verified.
    pub(crate) fn load(&self) -> Result<Persisted, StorageError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let read_error = |e| io_error("read", e);
        let txn = self.env.read_txn().map_err(read_error)?;
        let hard_state = match self.meta.get(&txn, KEY_HARD_STATE).map_err(read_error)? {
            Some(value) => codec::decode_meta::<HardState>("hard state", value)?,
            None => HardState::default(),
        };
        let snapshot = match self.meta.get(&txn, KEY_SNAPSHOT).map_err(read_error)? {
            Some(value) => {
                let meta = codec::decode_meta::<SnapshotMeta>("snapshot", value)?;
                let data = self
                    .snapshot
                    .get(&txn, KEY_SNAPSHOT_DATA)
                    .map_err(read_error)?;
                let mut snapshot = self.verify_snapshot(meta, data)?;
                let membership = self
                    .snapshot
                    .get(&txn, KEY_SNAPSHOT_MEMBERSHIP)
                    .map_err(read_error)?;
                if let Some(value) = membership {
                    snapshot.membership = codec::decode_membership(value)?;
                }
                Some(snapshot)
            }
            None => None,
        };
        let mut verifier = LogVerifier::new(self.options.entry_bytes_max);
        let mut entries = Vec::new();
        let stored = self.entries.remap_key_type::<Bytes>();
        for item in stored.iter(&txn).map_err(read_error)? {
            let (key, value) = item.map_err(read_error)?;
            entries.push(verifier.next(key, value)?);
        }
        Ok(Persisted {
            hard_state,
            snapshot,
            entries,
        })
    }

    fn verify_snapshot(
        &self,
        meta: SnapshotMeta,
        data: Option<&[u8]>,
    ) -> Result<Snapshot, StorageError> {
        let corrupt = |detail: String| StorageError::Corrupt {
            index: None,
            detail: format!("snapshot at {}: {detail}", meta.last),
        };
        let Some(data) = data else {
            return Err(corrupt("data missing".into()));
        };
        // Bound before copying: `data_bytes` and the stored length must agree.
        let len = data.len() as u64;
        if len != meta.data_bytes || data.len() > self.options.snapshot_bytes_max {
            return Err(corrupt(format!(
                "{len} bytes stored, {} recorded, bound {}",
                meta.data_bytes, self.options.snapshot_bytes_max
            )));
        }
        let crc = crc32c::crc32c(data);
        if crc != meta.data_crc32c {
            return Err(corrupt(format!(
                "CRC mismatch: recorded {:#010x}, computed {crc:#010x}",
                meta.data_crc32c
            )));
        }
        Ok(Snapshot {
            last: meta.last,
            data: bytes::Bytes::copy_from_slice(data),
            membership: Default::default(),
        })
    }

    /// The error that failed this writer, if one did.
    pub(crate) fn failed(&self) -> Option<StorageError> {
        self.failed.clone()
    }

    /// The sequence number of the last WAL record the databases hold (0: none).
    pub(crate) fn wal_seq(&self) -> Result<u64, StorageError> {
        let txn = self.env.read_txn().map_err(|e| io_error("read", e))?;
        match self.meta.get(&txn, KEY_WAL_SEQ) {
            Ok(Some(value)) => codec::decode_meta("WAL sequence", value),
            Ok(None) => Ok(0),
            Err(e) => Err(io_error("read WAL sequence", e)),
        }
    }

    /// What the last checkpoint saw of the WAL (`None`: no checkpoint recorded it yet).
    pub(crate) fn wal_head(&self) -> Result<Option<WalHead>, StorageError> {
        let txn = self.env.read_txn().map_err(|e| io_error("read", e))?;
        match self.meta.get(&txn, KEY_WAL_HEAD) {
            Ok(Some(value)) => codec::decode_meta("WAL head", value).map(Some),
            Ok(None) => Ok(None),
            Err(e) => Err(io_error("read WAL head", e)),
        }
    }

    /// The index and term of every stored entry, in order (headers only: `load` verifies).
    pub(crate) fn log_ids(&self) -> Result<Vec<LogId>, StorageError> {
        let read_error = |e| io_error("read", e);
        let txn = self.env.read_txn().map_err(read_error)?;
        let mut ids = Vec::new();
        for item in self.entries.iter(&txn).map_err(read_error)? {
            let (index, value) = item.map_err(read_error)?;
            let id = codec::entry_header(value).ok_or_else(|| StorageError::Corrupt {
                index: Some(index),
                detail: format!("entry {index}: undecodable header"),
            })?;
            ids.push(id);
        }
        Ok(ids)
    }

    /// Applies `ops` in one transaction and one durable commit, growing the map as needed;
    /// `wal_seq`, if given, is recorded in the same transaction as the last WAL record the
    /// databases now hold, and `head` as what the WAL held then. After any failure the writer
    /// is failed for good (fail-stop).
    pub(crate) fn write(
        &mut self,
        ops: &[WriteOp],
        wal_seq: Option<u64>,
        head: WalHead,
    ) -> Result<(), StorageError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let result = self.write_growing(ops, wal_seq, head);
        if let Err(e) = &result {
            tracing::error!(error = %e, "LMDB storage failed: every later write will fail");
            self.failed = Some(e.clone());
        }
        result
    }

    fn write_growing(
        &mut self,
        ops: &[WriteOp],
        wal_seq: Option<u64>,
        head: WalHead,
    ) -> Result<(), StorageError> {
        loop {
            match self.write_once(ops, wal_seq, head) {
                Ok(()) => return Ok(()),
                // The aborted transaction wrote nothing: grow and run the whole write again.
                Err(TxnError::Lmdb(heed::Error::Mdb(MdbError::MapFull))) => self.grow()?,
                Err(TxnError::Lmdb(e)) => return Err(io_error("LMDB write", e)),
                Err(TxnError::Rejected(reason)) => {
                    return Err(StorageError::Rejected {
                        path: PathBuf::new(),
                        reason,
                    })
                }
            }
        }
    }

    fn write_once(
        &self,
        ops: &[WriteOp],
        wal_seq: Option<u64>,
        head: WalHead,
    ) -> Result<(), TxnError> {
        // Dropping `txn` on an error aborts it.
        let mut txn = self.env.write_txn()?;
        for op in ops {
            self.apply(&mut txn, op)?;
        }
        if let Some(seq) = wal_seq {
            let value = codec::encode_meta("WAL sequence", &seq).map_err(TxnError::Rejected)?;
            self.meta.put(&mut txn, KEY_WAL_SEQ, &value)?;
        }
        let value = codec::encode_meta("WAL head", &head).map_err(TxnError::Rejected)?;
        self.meta.put(&mut txn, KEY_WAL_HEAD, &value)?;
        // With LMDB's default flags, commit returns once data and meta pages are fsynced.
        txn.commit()?;
        Ok(())
    }

    /// Doubles the map, up to `map_size_bytes_max`.
    fn grow(&mut self) -> Result<(), StorageError> {
        let max = self.options.map_size_bytes_max;
        let current = self.map_size_bytes.load(Ordering::Relaxed);
        if current >= max {
            return Err(StorageError::MapFull {
                path: PathBuf::new(),
                map_bytes: current,
                map_bytes_max: max,
            });
        }
        let grown = current.saturating_mul(2).min(max);
        // Safety: no transaction is open. Only this thread opens transactions, and each one
        // (load's read, write_once's write) has ended before its function returned.
        unsafe { self.env.resize(grown) }.map_err(|e| io_error("grow LMDB map", e))?;
        let grown = grown.max(self.env.info().map_size);
        self.map_size_bytes.store(grown, Ordering::Relaxed);
        tracing::info!(from = current, to = grown, "LMDB map grown");
        Ok(())
    }

    fn apply(&self, txn: &mut RwTxn, op: &WriteOp) -> Result<(), TxnError> {
        match op {
            WriteOp::HardState(hs) => {
                let value = codec::encode_meta("hard state", hs).map_err(TxnError::Rejected)?;
                self.meta.put(txn, KEY_HARD_STATE, &value)?;
            }
            WriteOp::Append(entries) => self.append(txn, entries)?,
            WriteOp::InstallSnapshot(s) => {
                // Same as MemStore: keep the suffix only if the entry at `last` matches.
                let at_last = self.entries.get(txn, &s.last.index)?;
                let keep = at_last.and_then(codec::entry_header) == Some(s.last);
                if keep {
                    self.entries.delete_range(txn, &(..=s.last.index))?;
                } else {
                    self.entries.clear(txn)?;
                }
                self.put_snapshot(txn, s)?;
            }
            WriteOp::SaveSnapshot(s) => self.put_snapshot(txn, s)?,
            WriteOp::CompactTo(c) => {
                self.entries.delete_range(txn, &(..=c.index))?;
            }
        }
        Ok(())
    }

    /// Deletes stored entries from the first one's index on, then stores `entries`. Refuses an
    /// append that would leave a log `load` reports as corrupt (a gap, a decreasing term).
    fn append(&self, txn: &mut RwTxn, entries: &[Entry]) -> Result<(), TxnError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        check_append(entries).map_err(TxnError::Rejected)?;
        self.entries.delete_range(txn, &(first.index..))?;
        if let Some((last_index, value)) = self.entries.last(txn)? {
            if last_index + 1 != first.index {
                return Err(TxnError::Rejected(format!(
                    "append at {} leaves a gap after stored entry {last_index}",
                    first.id()
                )));
            }
            let last_term = codec::entry_header(value).map_or(0, |id| id.term);
            if last_term > first.term {
                return Err(TxnError::Rejected(format!(
                    "append at {} has a term below {last_term} of the entry before",
                    first.id()
                )));
            }
        }
        for entry in entries {
            let value = codec::encode_entry(entry, self.options.entry_bytes_max)
                .map_err(TxnError::Rejected)?;
            self.entries.put(txn, &entry.index, &value)?;
        }
        Ok(())
    }

    fn put_snapshot(&self, txn: &mut RwTxn, s: &Snapshot) -> Result<(), TxnError> {
        if s.data.len() > self.options.snapshot_bytes_max {
            return Err(TxnError::Rejected(format!(
                "snapshot at {} of {} bytes, over snapshot_bytes_max ({})",
                s.last,
                s.data.len(),
                self.options.snapshot_bytes_max
            )));
        }
        let meta = SnapshotMeta {
            last: s.last,
            data_bytes: s.data.len() as u64,
            data_crc32c: crc32c::crc32c(&s.data),
        };
        let value = codec::encode_meta("snapshot", &meta).map_err(TxnError::Rejected)?;
        self.meta.put(txn, KEY_SNAPSHOT, &value)?;
        self.snapshot.put(txn, KEY_SNAPSHOT_DATA, &s.data)?;
        let membership =
            codec::encode_meta("snapshot membership", &s.membership).map_err(TxnError::Rejected)?;
        self.snapshot
            .put(txn, KEY_SNAPSHOT_MEMBERSHIP, &membership)?;
        Ok(())
    }
}

/// The entries of one append are contiguous, start after index 0 and never decrease in term.
pub(crate) fn check_append(entries: &[Entry]) -> Result<(), String> {
    if entries.first().is_some_and(|e| e.index == 0) {
        return Err("an entry at index 0".into());
    }
    for pair in entries.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if b.index != a.index + 1 || b.term < a.term {
            return Err(format!("entry {} follows {}", b.id(), a.id()));
        }
    }
    Ok(())
}

/// Before any transaction touches the map: the data file must cover every page number the last
/// commit counts, or a read through the map past its end would be SIGBUS, not an error.
///
/// A shorter file is not by itself damage: LMDB does not write pages that a transaction
/// allocated and freed again (its "loose" pages), yet counts them, so a commit that ends with
/// such pages leaves the file shorter than its page count. The file is therefore extended
/// with zeros to cover them. If the missing pages were live (the file really was truncated),
/// LMDB reports the zeroed pages it reaches as corrupt, and values read from them fail their
/// CRC: `load` fails with an error, never a crash.
fn cover_data_file_length(env: &Env, dir: &Path) -> Result<(), StorageError> {
    let path = dir.join(DATA_FILE_NAME);
    let file = OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(|e| io_error("open data file", e))?;
    let len = file
        .metadata()
        .map_err(|e| io_error("stat data file", e))?
        .len();
    let page_bytes = u64::from(env.stat().page_size);
    let pages = env.info().last_page_number as u64 + 1;
    let needed = pages.saturating_mul(page_bytes);
    if len < needed {
        tracing::warn!(
            file = %path.display(), len, needed,
            "data file shorter than its last commit's page count: extending it with zeros"
        );
        // Not synced: if the extension is lost, the next open extends the file again.
        file.set_len(needed)
            .map_err(|e| io_error("extend data file", e))?;
    }
    Ok(())
}

/// An exclusive advisory lock on a file in the storage directory, held while the store is open:
/// a second process (or a second open in this one) fails instead of sharing the log.
pub(crate) struct DirLock {
    _file: File,
}

impl DirLock {
    fn acquire(dir: &Path) -> Result<Self, StorageError> {
        let path = dir.join(LOCK_FILE_NAME);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| StorageError::io("open lock file", &path, e))?;
        #[cfg(unix)]
        {
            use std::os::unix::io::AsRawFd;
            // Safety: flock on a file descriptor we own; no memory is involved.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc != 0 {
                return Err(StorageError::io(
                    "lock (is the store open elsewhere?)",
                    &path,
                    std::io::Error::last_os_error(),
                ));
            }
        }
        Ok(Self { _file: file })
    }
}
