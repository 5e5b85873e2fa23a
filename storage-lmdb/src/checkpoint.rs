//! The checkpoint thread: owns LMDB ([`Writer`]) and applies the writes the WAL thread hands it,
//! many per transaction, recording with each the last WAL record LMDB now holds and what the
//! WAL held ([`SharedHead`]); and answers loads from LMDB with the pending writes on top.

use crate::codec;
use crate::lock;
use crate::writer::{Writer, DATA_FILE_NAME};
use futures::channel::oneshot;
use raftkv_raft::sim::store::MemStore;
use raftkv_raft::{Persisted, StorageError, WriteOp};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};

/// Batches waiting for the checkpoint thread (each about `wal_checkpoint_bytes`); past this
/// many the WAL thread waits, which bounds what an open after a crash replays.
pub(crate) const CHECKPOINT_QUEUE_LEN_MAX: usize = 4;

/// Bytes a write op is counted as towards a checkpoint, beyond its payloads.
const OP_OVERHEAD_BYTES: usize = 32;

/// A message to the checkpoint thread.
pub(crate) enum Checkpoint {
    /// Consecutive writes for LMDB at the next checkpoint.
    Record(Batch),
    /// A write with a snapshot from the leader, which is not a WAL record: LMDB takes it at
    /// once, with everything pending before it, in one transaction.
    Direct {
        ops: Vec<WriteOp>,
        reply: mpsc::SyncSender<Result<(), StorageError>>,
    },
    /// Everything stored: LMDB's contents with the pending writes applied in memory.
    Load {
        reply: oneshot::Sender<Result<Persisted, StorageError>>,
    },
}

/// The checkpoint thread's state: owns LMDB, and applies WAL records to it in batches.
pub(crate) struct Checkpointer {
    /// The store's directory, to say where an error is.
    pub(crate) dir: PathBuf,
    pub(crate) writer: Writer,
    /// The writes for the next transaction.
    pub(crate) pending: Batch,
    pub(crate) checkpoint_bytes: usize,
    pub(crate) applied_seq: Arc<AtomicU64>,
    pub(crate) failed: Arc<Mutex<Option<StorageError>>>,
    /// What the WAL holds, recorded with each checkpoint.
    pub(crate) head: Arc<SharedHead>,
}

/// What the WAL holds, shared by the WAL thread (which writes it after each record) with the
/// checkpoint thread (which records it in LMDB with each checkpoint: see `wal::check_head`).
pub(crate) struct SharedHead {
    /// The first sequence number of the segment being written.
    pub(crate) first_seq: AtomicU64,
    /// The last record whose `fdatasync` returned.
    pub(crate) durable_seq: AtomicU64,
}

impl Checkpointer {
    pub(crate) fn run(mut self, inbox: mpsc::Receiver<Checkpoint>) {
        while let Ok(message) = inbox.recv() {
            match message {
                Checkpoint::Record(batch) => {
                    self.pending.merge(batch);
                    if self.pending.bytes >= self.checkpoint_bytes {
                        // A failure is recorded for the WAL thread, which stops the store.
                        let _ = self.commit();
                    }
                }
                Checkpoint::Direct { ops, reply } => {
                    self.pending.add(None, ops);
                    let _ = reply.send(self.commit());
                }
                Checkpoint::Load { reply } => {
                    let _ = reply.send(self.load());
                }
            }
        }
        // Every handle is gone: what the WAL holds goes into LMDB, so a clean close leaves
        // no WAL to replay.
        let _ = self.commit();
    }

    /// What LMDB holds with the pending writes applied on top, in memory: no transaction, so
    /// loading right after a crash does not wait for one.
    fn load(&self) -> Result<Persisted, StorageError> {
        let stored = self.writer.load().map_err(in_store(&self.dir))?;
        if self.pending.ops.is_empty() {
            return Ok(stored);
        }
        let mut merged = MemStore {
            hard_state: stored.hard_state,
            snapshot: stored.snapshot,
            entries: stored.entries.into_iter().map(|e| (e.index, e)).collect(),
        };
        merged.apply(self.pending.ops.iter().cloned());
        Ok(merged.persisted())
    }

    /// Applies everything pending in one LMDB transaction.
    fn commit(&mut self) -> Result<(), StorageError> {
        if self.pending.ops.is_empty() {
            return self
                .writer
                .failed()
                .map(in_store(&self.dir))
                .map_or(Ok(()), Err);
        }
        let ops = std::mem::take(&mut self.pending.ops);
        self.pending.bytes = 0;
        // Durable first: then the segment read is at least the one holding that record.
        let durable_seq = self.head.durable_seq.load(Ordering::Acquire);
        let head = codec::WalHead {
            first_seq: self.head.first_seq.load(Ordering::Acquire),
            durable_seq,
        };
        let written = self.writer.write(&ops, self.pending.seq, head);
        match written.map_err(in_store(&self.dir)) {
            Ok(()) => {
                if let Some(seq) = self.pending.seq.take() {
                    self.applied_seq.store(seq, Ordering::Release);
                }
                Ok(())
            }
            Err(e) => {
                lock(&self.failed).get_or_insert_with(|| e.clone());
                Err(e)
            }
        }
    }
}

/// Consecutive writes not yet in LMDB: the WAL thread holds one until it is about a
/// checkpoint's worth, and the checkpoint thread keeps one for its next transaction.
#[derive(Default)]
pub(crate) struct Batch {
    /// The last WAL record among them: own snapshots and compactions are not WAL records.
    pub(crate) seq: Option<u64>,
    pub(crate) ops: Vec<WriteOp>,
    /// What the ops count towards a checkpoint ([`op_bytes`]).
    pub(crate) bytes: usize,
}

impl Batch {
    /// Adds one write's ops, made WAL record `seq` if any.
    pub(crate) fn add(&mut self, seq: Option<u64>, ops: Vec<WriteOp>) {
        let bytes = ops.iter().map(op_bytes).sum::<usize>();
        self.merge(Batch { seq, ops, bytes });
    }

    /// Adds the writes of `later`. An own snapshot that a later snapshot op replaces is
    /// dropped: LMDB would copy its data into pages only to free them again before the commit.
    pub(crate) fn merge(&mut self, later: Batch) {
        let snapshot =
            |op: &WriteOp| matches!(op, WriteOp::SaveSnapshot(_) | WriteOp::InstallSnapshot(_));
        if later.ops.iter().any(snapshot) {
            self.ops
                .retain(|op| !matches!(op, WriteOp::SaveSnapshot(_)));
        }
        self.ops.extend(later.ops);
        self.seq = later.seq.or(self.seq);
        self.bytes += later.bytes;
    }
}

/// The bytes `op` counts towards a checkpoint.
pub(crate) fn op_bytes(op: &WriteOp) -> usize {
    match op {
        WriteOp::Append(entries) => entries
            .iter()
            .map(|e| e.payload.len_bytes() + OP_OVERHEAD_BYTES)
            .sum(),
        _ => OP_OVERHEAD_BYTES,
    }
}

/// Says where an error from LMDB is (issue 21 #6: "storage corruption at index None" said
/// neither what nor where): a corruption names the data file, an I/O error the store.
pub(crate) fn in_store(dir: &Path) -> impl Fn(StorageError) -> StorageError + '_ {
    move |e| match e {
        StorageError::Corrupt { index, detail } => StorageError::Corrupt {
            index,
            detail: format!(
                "LMDB data file {}: {detail}",
                dir.join(DATA_FILE_NAME).display()
            ),
        },
        other => other.in_dir(dir),
    }
}
