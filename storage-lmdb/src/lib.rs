//! Durable [`Storage`] for raftkv on LMDB (through `heed`).
//!
//! # Tour
//! - [`LmdbStorage`] (this file): the handle. It owns a dedicated writer thread and talks to it
//!   over a channel; each request is answered over a `futures` oneshot, so `write` and `load`
//!   never block the caller's executor (LMDB's commit blocks on fsync). No async runtime is used.
//! - `writer`: the LMDB environment, owned by that thread alone. Each `write` is one write
//!   transaction and one durable commit; a full map is grown and the write retried; any other
//!   error fails the store for good (fail-stop).
//! - `codec`: the encoding of values and their verification on load.
//!
//! # Layout
//! A directory with LMDB's `data.mdb` and `lock.mdb`, and `raftkv-storage.lock`, which one
//! process at a time holds locked (`flock`). Three LMDB databases:
//! - `entries`: key = index as 8 big-endian bytes (LMDB's byte order is then index order),
//!   value = CRC32C ‖ postcard of `(index, term, payload)`;
//! - `meta`: `format` (layout version), `hard_state`, `snapshot` (its last log id, length and
//!   CRC32C), each CRC32C ‖ postcard;
//! - `snapshot`: `data`, the snapshot's data, raw.
//!
//! # Guarantees
//! - A `write` that returned `Ok` was committed with LMDB's default, durable flags: data pages
//!   and then the meta page are fsynced. After a crash a write is visible whole or not at all.
//! - `load` verifies every entry (CRC, encoding, key = index, contiguous indexes,
//!   non-decreasing terms) and the meta values, and reports the first problem as
//!   [`StorageError::Corrupt`] naming the entry's index; it never drops an entry silently.
//!   A data file shorter than its last commit needs is reported when opening.
//! - Fail-stop: after any error from a write, every later `write` (and `load`) returns that same
//!   error. A failed fsync is never retried.
//!
//! # Bounds
//! - One stored entry: [`LmdbOptions::entry_bytes_max`] (default 64 MiB), checked on write and
//!   before decoding on load.
//! - The snapshot: [`LmdbOptions::snapshot_bytes_max`] (default 1 GiB). It is one LMDB value,
//!   rewritten whole by each snapshot op and copied whole into memory by `load`.
//! - The map: starts at [`LmdbOptions::map_size_bytes`], doubles when full up to
//!   [`LmdbOptions::map_size_bytes_max`]; a write that does not fit then fails with
//!   [`StorageError::Io`].
//! - The request queue is unbounded, but the driver has at most one write in flight per node.
//!
//! # Not done
//! - LMDB's own pages (branch pages, free lists) carry no checksum: corruption there is caught
//!   only if LMDB detects it, or if it changes a value (then its CRC fails).
//! - A data file truncated to zero bytes cannot be told from a new store: LMDB starts afresh.
//! - Writes are not merged here: the driver already merges queued work into one `write`.

#![deny(missing_docs)]

mod codec;
mod writer;

use futures::channel::oneshot;
use raftkv_raft::{Persisted, Storage, StorageError, WriteOp};
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
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
            ..self
        }
    }
}

/// A request to the writer thread.
enum Request {
    Write {
        ops: Vec<WriteOp>,
        reply: oneshot::Sender<Result<(), StorageError>>,
    },
    Load {
        reply: oneshot::Sender<Result<Persisted, StorageError>>,
    },
}

/// [`Storage`] on LMDB, in one directory. See the crate documentation for the layout and the
/// guarantees.
///
/// Requests are applied by a writer thread in the order `write` and `load` are *called* (the
/// request is queued by the call, before the future is first polled). Dropping a `write`
/// future does not cancel the write.
///
/// Dropping the handle waits for queued requests to finish, stops the writer thread and closes
/// the environment, so the same directory can be opened again at once, in this process or
/// another.
pub struct LmdbStorage {
    dir: PathBuf,
    /// `None` only while dropping.
    requests: Option<mpsc::Sender<Request>>,
    /// `None` only while dropping.
    writer: Option<JoinHandle<()>>,
    map_size_bytes: Arc<AtomicUsize>,
}

impl LmdbStorage {
    /// Opens the store in `dir`, creating the directory and an empty store if needed.
    ///
    /// Fails with [`StorageError::Io`] if LMDB cannot open it or it is already open (in this
    /// process or another), and with [`StorageError::Corrupt`] if the data file is truncated or
    /// of an unknown format. Entries are verified by [`Storage::load`], not here.
    pub fn open(dir: &Path, options: LmdbOptions) -> Result<Self, StorageError> {
        let writer = Writer::open(dir, options.normalized())?;
        let map_size_bytes = writer.map_size_bytes();
        let (requests, inbox) = mpsc::channel();
        let writer = thread::Builder::new()
            .name("raftkv-lmdb-writer".into())
            .spawn(move || serve(writer, inbox))
            .map_err(|e| StorageError::Io(format!("spawn LMDB writer thread: {e}")))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            requests: Some(requests),
            writer: Some(writer),
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
            // A dropped reply means the writer thread is gone.
            answer.await.unwrap_or(Err(StorageError::Closed))
        }
    }
}

/// The writer thread: answers requests in order until every handle is dropped, then drops the
/// writer, which closes the environment.
fn serve(mut writer: Writer, inbox: mpsc::Receiver<Request>) {
    while let Ok(request) = inbox.recv() {
        // A caller that stopped waiting is not an error: its write is done all the same.
        match request {
            Request::Write { ops, reply } => {
                let _ = reply.send(writer.write(&ops));
            }
            Request::Load { reply } => {
                let _ = reply.send(writer.load());
            }
        }
    }
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
        if let Some(writer) = self.writer.take() {
            if writer.join().is_err() {
                tracing::error!(dir = %self.dir.display(), "LMDB writer thread panicked");
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
