//! Durable [`Storage`] for raftkv: a write-ahead log in front of LMDB (through `heed`).
//!
//! # Tour
//! - [`LmdbStorage`] (this file): the handle and its two threads. The WAL thread takes each
//!   `write`, checks it, appends it to the WAL with one `fdatasync`, answers, and holds its
//!   ops until about a checkpoint's worth has gathered; it then hands them to the checkpoint
//!   thread, which applies them to LMDB in one transaction. Requests
//!   are answered over `futures` oneshots, so `write` and `load` never block the caller's
//!   executor. No async runtime is used.
//! - `checkpoint`: the checkpoint thread's side: batches of writes into LMDB, and loads.
//! - `wal`: segment files, the record format, and recovery after a crash. Its file I/O goes
//!   through a seam, `wal::fs` (`std::fs` by static dispatch), so that tests run the same WAL
//!   code on a simulated disk that loses what was not synced when the power goes.
//! - `shape`: the index and term of every stored entry, so that a write is checked (gaps,
//!   falling terms, sizes) before it enters the WAL, as LMDB's transaction would check it.
//! - `writer`: the LMDB environment, owned by the checkpoint thread alone. Each checkpoint is
//!   one write transaction and one durable commit that also records the last WAL record it
//!   holds; a full map is grown and the transaction retried; any other error fails the store
//!   for good (fail-stop).
//! - `codec`: the encoding of LMDB values and their verification on load.
//! - `dir`: directory fsyncs, so that new and removed files' names survive a power cut.
//!
//! # Why a WAL
//! An LMDB commit fsyncs twice (data pages, then the meta page) and writes whole pages; a WAL
//! append is one `fdatasync` of the bytes written, into a preallocated file. Each Raft write
//! waits for its sync, so this halves the disk latency of every commit. LMDB keeps what it is
//! good at: a compact, verified, instantly readable image of the log and the snapshot.
//!
//! # Layout
//! A directory with LMDB's `data.mdb` and `lock.mdb`, `raftkv-storage.lock`, which one
//! process at a time holds locked (`flock`), and WAL segments `wal-<first seq>.log` (see
//! `wal`). Three LMDB databases:
//! - `entries`: key = index as 8 big-endian bytes (LMDB's byte order is then index order),
//!   value = CRC32C ‖ postcard of `(index, term, payload)`;
//! - `meta`: `format` (layout version), `hard_state`, `snapshot` (its last log id, length and
//!   CRC32C), `wal_seq` (the last WAL record LMDB holds), `wal_head` (what the WAL held at the
//!   last checkpoint, or at the open before the first one: its newest segment and last durable
//!   record), each CRC32C ‖ postcard;
//! - `snapshot`: `data`, the snapshot's data, raw.
//!
//! # Guarantees
//! - A `write` that returned `Ok` is durable: its entries and hard state are in a WAL record
//!   that was `fdatasync`ed, or (a write with a snapshot from the leader, which never enters
//!   the WAL) LMDB committed it with its default, durable flags together with every write
//!   before it. After a crash a write is visible whole or not at all: `open` reads back the
//!   WAL's records past LMDB's `wal_seq` (`load` merges them, the first checkpoint writes
//!   them), ignoring only the remains of the last, unanswered write at the WAL's very end.
//! - Except for the relaxation the [`Storage`] contract allows: a snapshot the node took of
//!   itself (`SaveSnapshot`) and compaction (`CompactTo`) are not WAL records; they reach LMDB
//!   with the next checkpoint, in order with everything else, so that taking a snapshot never
//!   holds up the writes behind it. A crash before that checkpoint loses them, and only them:
//!   the entries they would have dropped are still stored. (A compaction in the WAL could be
//!   replayed after its snapshot was lost: that is why neither goes there.)
//! - A clean close (dropping the handle) moves everything into LMDB and deletes the WAL (but
//!   for one empty segment named after the next record).
//! - Directory entries are durable too (`dir`): the directory is fsynced after every file
//!   created or removed in it (LMDB's files, WAL segments), and a store directory that did not
//!   exist has its parent fsynced as well.
//! - Power loss, not just a killed process: the WAL's tests (`wal::power_loss_tests`) cut the
//!   power between any two of its file operations on a simulated disk that drops everything
//!   unsynced (file data, new names, removals) and tears the last write, then check that the
//!   next open reads back every acknowledged record exactly and nothing past a torn tail.
//!   The same sweep fails if the WAL's `fdatasync`, or the directory fsync that makes a new
//!   segment's name durable, is removed.
//! - `load` verifies every entry (CRC, encoding, key = index, contiguous indexes,
//!   non-decreasing terms) and the meta values, and reports the first problem as
//!   [`StorageError::Corrupt`] naming the entry's index; it never drops an entry silently.
//!   A damaged WAL record anywhere but at the very end is reported by `open` as `Corrupt`. A
//!   data file shorter than its last commit needs is reported when opening.
//! - Missing WAL data is not a torn tail: a WAL that ends before the last durable record a
//!   checkpoint saw, that lacks the segment being written then (or a later one), or whose
//!   newest segment is sealed (the WAL moved on from it) is refused by `open` with a
//!   `Corrupt` error that says what is missing and how to recover (wipe the node's data
//!   directory and rejoin): the node may have acknowledged writes it no longer holds.
//! - Fail-stop: after any error from a write or a checkpoint, every later `write` (and `load`)
//!   returns that same error. A failed fsync is never retried. A checkpoint that LMDB cannot
//!   take (its map at `map_size_bytes_max`) leaves the writes in the WAL: opening again with a
//!   larger map recovers them.
//!
//! # Bounds
//! - One stored entry: [`LmdbOptions::entry_bytes_max`] (default 64 MiB), checked on write and
//!   before decoding on load. One WAL record (one write): 1 GiB.
//! - The snapshot: [`LmdbOptions::snapshot_bytes_max`] (default 1 GiB). It is one LMDB value,
//!   rewritten whole by each snapshot op and copied whole into memory by `load`.
//! - The map: starts at [`LmdbOptions::map_size_bytes`], doubles when full up to
//!   [`LmdbOptions::map_size_bytes_max`]; a checkpoint that does not fit then fails with
//!   [`StorageError::MapFull`].
//! - The WAL: writes not yet in LMDB are at most about 6 ×
//!   [`LmdbOptions::wal_checkpoint_bytes`] (default 1 MiB): the batch the WAL thread holds,
//!   up to 4 queued for the checkpoint thread (past that the WAL thread waits), and the one
//!   it is committing. Segments are
//!   [`LmdbOptions::wal_segment_bytes`] (default 16 MiB) and deleted once LMDB holds them.
//! - The request queue is unbounded, but the driver has at most one write in flight per node.
//!
//! # Not done
//! - LMDB does not go through the file I/O seam: heed opens, maps and syncs its files
//!   itself, so the power-loss tests run the WAL with a model of LMDB (commits durable when
//!   they return, as LMDB's are with its default flags). What they establish is the WAL's
//!   guarantee, and that is the one that acknowledges: a `write` returns `Ok` only after its
//!   record's `fdatasync`, and a checkpoint deletes segments only after LMDB's commit
//!   returned. They do not test LMDB's own durability (its two fsyncs per commit), nor the
//!   snapshot from the leader, which LMDB alone makes durable, nor `SaveSnapshot` and
//!   `CompactTo` (never in the WAL). A power cut in the directory creation and LMDB's files
//!   (`dir`, `writer`) is covered only by a test that records which directories are synced.
//! - The power-loss sweep cannot see the fsyncs that guard no acknowledged record: the sync
//!   of a seal (it serves only to detect a deleted newest segment), of a new segment's
//!   preallocated length (`fdatasync` makes a grown length durable anyway), and of the
//!   directory after deletions (a deletion undone by a power cut is harmless). Removing one of
//!   those passes it.
//! - LMDB's own pages (branch pages, free lists) carry no checksum: corruption there is caught
//!   only if LMDB detects it, or if it changes a value (then its CRC fails).
//! - A data file truncated to zero bytes cannot be told from a new store: LMDB starts afresh.
//! - A bit flipped inside the WAL's last record cannot be told from that write being torn by
//!   a crash; the record is dropped with a warning (it is the one write that may not have been
//!   answered).
//! - Writes are not merged here: the driver already merges queued work into one `write`.
//! - Missing WAL data goes unnoticed in one case: the newest segment deleted when no checkpoint
//!   has recorded the WAL's head yet (a new store, before its first checkpoint) and no sealed
//!   segment precedes it.

#![deny(missing_docs)]

mod checkpoint;
mod codec;
mod dir;
mod shape;
mod wal;
mod writer;

use checkpoint::{in_store, Batch, Checkpoint, Checkpointer, SharedHead, CHECKPOINT_QUEUE_LEN_MAX};
use codec::WalHead;
use futures::channel::oneshot;
use raftkv_raft::{Persisted, Storage, StorageError, WriteOp};
use shape::LogShape;
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::{self, JoinHandle};
use wal::fs::StdFs;
use wal::Wal;
use writer::Writer;

pub use writer::{DATA_FILE_NAME, LOCK_FILE_NAME};

const MIB: usize = 1 << 20;

/// Sizes and bounds of an [`LmdbStorage`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LmdbOptions {
    /// The initial size of LMDB's memory map (the most the data file can hold before the map
    /// grows). Rounded up to a whole MiB. Reserving address space costs nothing: the file grows
    /// only as pages are written. If the data already needs more, the map starts larger.
    pub map_size_bytes: usize,
    /// The largest the map may grow to; a write that does not fit in it fails. Rounded up to a
    /// whole MiB, and at least `map_size_bytes`.
    pub map_size_bytes_max: usize,
    /// The largest stored entry (its payload plus about 25 bytes of encoding).
    pub entry_bytes_max: usize,
    /// The largest snapshot data.
    pub snapshot_bytes_max: usize,
    /// The size each WAL segment file is preallocated to (a larger write gets a larger one).
    pub wal_segment_bytes: usize,
    /// Writes are moved from the WAL into LMDB once this many bytes of them are waiting (and
    /// at a snapshot from the leader, `load` and close). More means fewer, larger LMDB
    /// transactions, and more to move into LMDB (and apply) when opening after a crash: at the
    /// default 1 MiB, about 7,000 small entries, tens of milliseconds.
    pub wal_checkpoint_bytes: usize,
}

impl Default for LmdbOptions {
    fn default() -> Self {
        Self {
            map_size_bytes: 1 << 30,
            // 64 GiB of address space on 64-bit targets, 1 GiB on 32-bit ones.
            map_size_bytes_max: if usize::BITS >= 64 {
                (1u64 << 36) as usize
            } else {
                1 << 30
            },
            entry_bytes_max: 64 * MIB,
            snapshot_bytes_max: 1 << 30,
            wal_segment_bytes: 16 * MIB,
            wal_checkpoint_bytes: MIB,
        }
    }
}

impl LmdbOptions {
    /// The options as used: map sizes in whole MiB (a multiple of any OS page size LMDB runs
    /// on), the maximum at least the initial size.
    fn normalized(self) -> Self {
        let round_up = |bytes: usize| bytes.max(1).div_ceil(MIB).saturating_mul(MIB);
        let map_size_bytes = round_up(self.map_size_bytes);
        Self {
            map_size_bytes,
            map_size_bytes_max: round_up(self.map_size_bytes_max).max(map_size_bytes),
            wal_segment_bytes: self.wal_segment_bytes.max(4096),
            wal_checkpoint_bytes: self.wal_checkpoint_bytes.max(1),
            ..self
        }
    }
}

/// A request to the WAL thread.
enum Request {
    Write {
        ops: Vec<WriteOp>,
        reply: oneshot::Sender<Result<(), StorageError>>,
    },
    Load {
        reply: oneshot::Sender<Result<Persisted, StorageError>>,
    },
}

/// [`Storage`] on a WAL and LMDB, in one directory. See the crate documentation for the
/// layout and the guarantees.
///
/// Requests are applied in the order `write` and `load` are *called* (the request is queued
/// by the call, before the future is first polled). Dropping a `write` future does not cancel
/// the write.
///
/// Dropping the handle waits for queued requests to finish, moves everything in the WAL into
/// LMDB, stops both threads and closes the environment, so the same directory can be opened
/// again at once, in this process or another.
pub struct LmdbStorage {
    dir: PathBuf,
    /// `None` only while dropping.
    requests: Option<mpsc::Sender<Request>>,
    /// The WAL thread. `None` only while dropping.
    thread: Option<JoinHandle<()>>,
    map_size_bytes: Arc<AtomicUsize>,
}

impl LmdbStorage {
    /// Opens the store in `dir`, creating the directory and an empty store if needed. Records
    /// a crash left in the WAL are read back; they reach LMDB with the first checkpoint.
    ///
    /// Fails with [`StorageError::Io`] if LMDB cannot open it or it is already open (in this
    /// process or another), and with [`StorageError::Corrupt`] if the data file is truncated,
    /// of an unknown format, or the WAL is damaged anywhere but in its last, unfinished write.
    /// Entries are verified by [`Storage::load`], not here.
    pub fn open(dir: &Path, options: LmdbOptions) -> Result<Self, StorageError> {
        let options = options.normalized();
        let located = in_store(dir);
        let mut writer = Writer::open(dir, options).map_err(&located)?;
        let lmdb_seq = writer.wal_seq().map_err(&located)?;
        let head = writer.wal_head().map_err(&located)?;
        let recovered = wal::recover_checked(&StdFs, dir, lmdb_seq, head)?;
        // The records LMDB lacks are not written into it here (a synchronous transaction,
        // and an fsync that would also flush whatever the dead process left dirty): they
        // become the checkpoint thread's first pending writes, `load` merges them in memory,
        // and their segments stay until a checkpoint holds them.
        let mut shape =
            LogShape::from_ids(&writer.log_ids().map_err(&located)?).map_err(&located)?;
        shape
            .apply(&recovered.ops, options.entry_bytes_max)
            .map_err(|why| StorageError::Corrupt {
                index: None,
                detail: format!(
                    "the WAL records in {} do not follow the log stored in {}: {why}",
                    dir.display(),
                    dir.join(DATA_FILE_NAME).display()
                ),
            })?;
        let wal = Wal::resume(StdFs, dir, &recovered, options.wal_segment_bytes as u64)?;
        if head.is_none() {
            // Issue 21 #3: until its first checkpoint a store kept no trace of its WAL in
            // LMDB, so a deleted WAL read as a new store (log and vote gone). Record the head
            // now, before this open acknowledges any write.
            let head = WalHead {
                first_seq: wal.first_seq(),
                durable_seq: wal.last_seq(),
            };
            writer.write(&[], None, head).map_err(&located)?;
        }
        let head = Arc::new(SharedHead {
            first_seq: AtomicU64::new(wal.first_seq()),
            durable_seq: AtomicU64::new(wal.last_seq()),
        });
        if !recovered.ops.is_empty() {
            tracing::info!(dir = %dir.display(), from = lmdb_seq + 1, to = recovered.last_seq, "WAL records after LMDB's: pending for the next checkpoint");
        }
        let map_size_bytes = writer.map_size_bytes();
        let dir_lock = writer.dir_lock();

        let applied_seq = Arc::new(AtomicU64::new(lmdb_seq));
        let failed = Arc::new(Mutex::new(None));
        let (to_checkpointer, checkpoints) = mpsc::sync_channel(CHECKPOINT_QUEUE_LEN_MAX);
        let mut pending = Batch::default();
        let seq = (!recovered.ops.is_empty()).then_some(recovered.last_seq);
        pending.add(seq, recovered.ops);
        let checkpointer = Checkpointer {
            dir: dir.to_path_buf(),
            writer,
            pending,
            checkpoint_bytes: options.wal_checkpoint_bytes,
            applied_seq: Arc::clone(&applied_seq),
            failed: Arc::clone(&failed),
            head: Arc::clone(&head),
        };
        let checkpointer = thread::Builder::new()
            .name("raftkv-lmdb-checkpoint".into())
            .spawn(move || checkpointer.run(checkpoints))
            .map_err(|e| StorageError::io("spawn LMDB checkpoint thread", dir, e))?;
        let front = Front {
            dir: dir.to_path_buf(),
            wal: Some(wal),
            shape,
            entry_bytes_max: options.entry_bytes_max,
            to_checkpointer: Some(to_checkpointer),
            held: Batch::default(),
            checkpoint_bytes: options.wal_checkpoint_bytes,
            checkpointer: Some(checkpointer),
            applied_seq,
            head,
            checkpoint_failed: failed,
            failed: None,
            _lock: dir_lock,
        };
        let (requests, inbox) = mpsc::channel();
        let thread = thread::Builder::new()
            .name("raftkv-lmdb-wal".into())
            .spawn(move || front.serve(inbox))
            .map_err(|e| StorageError::io("spawn WAL thread", dir, e))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            requests: Some(requests),
            thread: Some(thread),
            map_size_bytes,
        })
    }

    /// The directory of the store.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The current size of LMDB's memory map: the most the data file can hold before it grows.
    pub fn map_size_bytes(&self) -> usize {
        self.map_size_bytes.load(Ordering::Relaxed)
    }

    /// Queues a request now; the future waits for its answer.
    fn request<T: Send + 'static>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StorageError>>) -> Request,
    ) -> impl Future<Output = Result<T, StorageError>> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        let queued = self
            .requests
            .as_ref()
            .is_some_and(|requests| requests.send(make(reply)).is_ok());
        async move {
            if !queued {
                return Err(StorageError::Closed);
            }
            // A dropped reply means the WAL thread is gone.
            answer.await.unwrap_or(Err(StorageError::Closed))
        }
    }
}

/// The WAL thread's state: appends each write to the WAL, then hands it to the checkpointer.
struct Front {
    /// The store's directory, for errors.
    dir: PathBuf,
    /// Held until this thread has closed (deleted the WAL): a new open of the directory must
    /// not recover segments this thread is about to delete (a crash-and-restart in one process
    /// lost them: "delete wal-…1.log: No such file or directory", then fail-stop).
    _lock: Arc<writer::DirLock>,
    /// `None` only after the thread's last request.
    wal: Option<Wal>,
    shape: LogShape,
    entry_bytes_max: usize,
    /// `None` only after the thread's last request.
    to_checkpointer: Option<mpsc::SyncSender<Checkpoint>>,
    /// Writes not yet handed to the checkpoint thread: they go as one message once they reach
    /// `checkpoint_bytes` (when it would commit anyway), or before a load, a direct write or
    /// the close. One message per write woke that thread for every write.
    held: Batch,
    checkpoint_bytes: usize,
    checkpointer: Option<JoinHandle<()>>,
    /// The last WAL record LMDB holds.
    applied_seq: Arc<AtomicU64>,
    /// What the WAL holds, for the checkpoint thread to record.
    head: Arc<SharedHead>,
    /// Set by the checkpoint thread when LMDB fails.
    checkpoint_failed: Arc<Mutex<Option<StorageError>>>,
    /// Set by the first failed write; every later request returns it (fail-stop).
    failed: Option<StorageError>,
}

impl Front {
    /// Answers requests in order until every handle is dropped, then closes the store.
    fn serve(mut self, inbox: mpsc::Receiver<Request>) {
        while let Ok(request) = inbox.recv() {
            // A caller that stopped waiting is not an error: its write is done all the same.
            match request {
                Request::Write { ops, reply } => {
                    let _ = reply.send(self.write(ops));
                }
                Request::Load { reply } => self.load(reply),
            }
        }
        self.close();
    }

    fn check_failed(&mut self) -> Result<(), StorageError> {
        if self.failed.is_none() {
            self.failed = lock(&self.checkpoint_failed).clone();
        }
        self.failed.clone().map_or(Ok(()), Err)
    }

    fn write(&mut self, ops: Vec<WriteOp>) -> Result<(), StorageError> {
        self.check_failed()?;
        let result = self.write_unchecked(ops);
        if let Err(e) = &result {
            tracing::error!(error = %e, "storage failed: every later write will fail");
            self.failed = Some(e.clone());
        }
        result
    }

    fn write_unchecked(&mut self, ops: Vec<WriteOp>) -> Result<(), StorageError> {
        self.shape
            .apply(&ops, self.entry_bytes_max)
            .map_err(|reason| StorageError::Rejected {
                path: self.dir.clone(),
                reason,
            })?;
        // A snapshot from the leader replaces the log: LMDB takes it at once, durably, with
        // everything before it.
        if ops
            .iter()
            .any(|op| matches!(op, WriteOp::InstallSnapshot(_)))
        {
            let (reply, answer) = mpsc::sync_channel(1);
            self.pass_held()?;
            let Some(to_checkpointer) = &self.to_checkpointer else {
                return Err(StorageError::Closed);
            };
            to_checkpointer
                .send(Checkpoint::Direct { ops, reply })
                .map_err(|_| StorageError::Closed)?;
            return answer.recv().unwrap_or(Err(StorageError::Closed));
        }
        let Some(wal) = self.wal.as_mut() else {
            return Err(StorageError::Closed);
        };
        // Entries and hard state go into the WAL record. A snapshot the node took of itself,
        // and compaction, reach LMDB with the next checkpoint, in order with the rest, and
        // never through the WAL: replayed from it, a compaction could drop entries whose
        // snapshot was lost in the crash. A crash before the checkpoint loses only them, and
        // the log they would have replaced is still there.
        let seq = if ops.iter().any(wal::is_record_op) {
            let seq = wal.append(ops.iter().filter(|op| wal::is_record_op(op)))?;
            // The segment first: a checkpoint that sees the new durable number must not
            // record an older segment than the one holding it.
            self.head
                .first_seq
                .store(wal.first_seq(), Ordering::Release);
            self.head.durable_seq.store(seq, Ordering::Release);
            Some(seq)
        } else {
            None
        };
        let applied_seq = self.applied_seq.load(Ordering::Acquire);
        wal.release(applied_seq)?;
        if !ops.is_empty() {
            self.held.add(seq, ops);
            if self.held.bytes >= self.checkpoint_bytes {
                self.pass_held()?;
            }
        }
        Ok(())
    }

    /// Hands the held writes to the checkpoint thread.
    fn pass_held(&mut self) -> Result<(), StorageError> {
        if self.held.ops.is_empty() {
            return Ok(());
        }
        let Some(to_checkpointer) = &self.to_checkpointer else {
            return Err(StorageError::Closed);
        };
        to_checkpointer
            .send(Checkpoint::Record(std::mem::take(&mut self.held)))
            .map_err(|_| StorageError::Closed)
    }

    fn load(&mut self, reply: oneshot::Sender<Result<Persisted, StorageError>>) {
        if let Err(e) = self.check_failed() {
            let _ = reply.send(Err(e));
            return;
        }
        // A send fails only if the checkpoint thread is gone; the reply then drops.
        if self.pass_held().is_err() {
            return;
        }
        if let Some(to_checkpointer) = &self.to_checkpointer {
            let _ = to_checkpointer.send(Checkpoint::Load { reply });
        }
    }

    /// Lets the checkpoint thread move everything into LMDB and stop, then deletes the WAL.
    fn close(&mut self) {
        if self.check_failed().is_ok() {
            // Fails only if the checkpoint thread is gone: the WAL then stays for the next open.
            let _ = self.pass_held();
        }
        drop(self.to_checkpointer.take());
        if let Some(checkpointer) = self.checkpointer.take() {
            if checkpointer.join().is_err() {
                tracing::error!("LMDB checkpoint thread panicked");
            }
        }
        let Some(wal) = self.wal.take() else {
            return;
        };
        let clean = self.check_failed().is_ok()
            && self.applied_seq.load(Ordering::Acquire) >= wal.last_seq();
        if clean {
            if let Err(e) = wal.remove_all() {
                tracing::warn!(error = %e, "cannot delete the WAL after closing; it is replayed (harmlessly) at the next open");
            }
        }
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Storage for LmdbStorage {
    fn load(&self) -> impl Future<Output = Result<Persisted, StorageError>> + Send {
        self.request(|reply| Request::Load { reply })
    }

    fn write(&self, ops: Vec<WriteOp>) -> impl Future<Output = Result<(), StorageError>> + Send {
        self.request(|reply| Request::Write { ops, reply })
    }
}

impl Drop for LmdbStorage {
    fn drop(&mut self) {
        // Closing the channel ends `serve` once the queue is empty.
        drop(self.requests.take());
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!(dir = %self.dir.display(), "WAL thread panicked");
            }
        }
    }
}

impl fmt::Debug for LmdbStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LmdbStorage")
            .field("dir", &self.dir)
            .field("map_size_bytes", &self.map_size_bytes())
            .finish_non_exhaustive()
    }
}
