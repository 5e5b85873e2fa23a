//! [`LmdbState`]: a [`DurableStore`] in LMDB, for the KV state of a node started with
//! `--state lmdb` ([`open_state`]).
//!
//! One environment in its own directory, three databases: two data slots, `data` and `data-b`
//! (key → version and value), of which one holds the state, and `position`: the position
//! record (written by the state machine with every commit) and `live`, which slot holds the
//! state (absent: `data`, so an environment written before there were two opens as it was).
//! Each commit ([`DurableStore::start_commit`]) is one LMDB write transaction, so the data and
//! its position are always consistent.
//!
//! Issue 20: a restore of a leader's snapshot ([`DurableStore::replace`]) fills the other slot
//! in write transactions of bounded size (LMDB keeps a write transaction's dirty pages in
//! memory), then writes the new position and flips `live` in one last transaction: a crash
//! before the flip leaves the old state and its position, after it the new ones; the old slot
//! is emptied after. A snapshot of the state is spooled to a file ([`FileSpool`]). Commits (and the syncs after them) run on a thread of their own,
//! `raftkv-state-commit`, one at a time, so that the node's event loop never waits for the
//! disk. The environment is opened with LMDB's durable defaults except
//! `MDB_NOMETASYNC`: a crash (even a power cut) may lose the last committed transaction, never
//! the database's integrity — the state is then one commit behind, and the node applies the
//! entries after it again from its Raft log. `MDB_NOSYNC`, `MDB_MAPASYNC` and `MDB_WRITEMAP`
//! are never set: with them a power cut can corrupt the database.
//!
//! Keys of up to [`RAW_KEY_BYTES_MAX`] bytes are LMDB keys as they are. A longer key (LMDB
//! keys are at most 511 bytes) is stored under its first [`LONG_KEY_PREFIX_BYTES`] bytes and a
//! 64-bit hash of it, with the whole key in the value; two long keys with the same prefix and
//! hash would collide, and the commit that meets one fails (a clear error, never a lost key).

use bytes::Bytes;
use heed::types::Bytes as Raw;
use heed::{Database, Env, EnvFlags, EnvOpenOptions, RoTxn, WithoutTls};
use raftkv_kv::durable::{
    Changes, CommittedRead, DurableKv, DurableStore, Replacement, Visit,
    COMMIT_CHANGES_BYTES_DEFAULT,
};
use raftkv_kv::state::SessionConfig;
use raftkv_raft::{SnapshotSpool, StorageError};
use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

mod committer;
mod replace;
mod spool;

use committer::Committer;
pub use spool::FileSpool;

/// The most bytes a key is stored as it is; longer keys are stored by prefix and hash.
pub const RAW_KEY_BYTES_MAX: usize = 510;

/// Bytes of a long key kept in its LMDB key (then 8 bytes of hash: 511 in all, a length no
/// raw key has).
pub const LONG_KEY_PREFIX_BYTES: usize = 503;

const POSITION_KEY: &[u8] = b"position";

/// The record of which data slot holds the state (in the `position` database).
const LIVE_KEY: &[u8] = b"live";

/// The names of the two data slots' databases.
const SLOT_NAMES: [&str; 2] = ["data", "data-b"];

/// How the state's environment is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateOptions {
    /// The map's size: the most the state's file may grow to. Address space only until used
    /// (the file grows with the data).
    pub map_size_bytes: usize,
}

impl Default for StateOptions {
    fn default() -> Self {
        Self {
            map_size_bytes: if usize::BITS >= 64 { 1 << 40 } else { 1 << 30 },
        }
    }
}

/// The KV state in an LMDB environment. Dropping it abandons a commit in flight that has not
/// reached its transaction's commit (as a crash would: the batch is lost, never a part of it),
/// and waits for the commit thread to end.
pub struct LmdbState {
    db: Db,
    committer: Committer,
    /// The data slot that holds the state: changed only by a replacement, on this thread.
    live: usize,
    /// A replacement's write transactions hold about this many bytes of keys and values each.
    replace_txn_bytes: u64,
}

/// The environment and its databases (cheap to clone: handles): shared by the state machine's
/// thread, which reads, and the commit thread, which writes.
#[derive(Clone)]
struct Db {
    env: Env<WithoutTls>,
    /// The two data slots ([`SLOT_NAMES`]).
    slots: [Database<Raw, Raw>; 2],
    position: Database<Raw, Raw>,
    dir: PathBuf,
    map_size_bytes: usize,
}

/// The KV state machine over the LMDB state in `dir` (made if missing), with the node's
/// session settings and data bound.
pub fn open_state(
    dir: &Path,
    options: StateOptions,
    sessions: SessionConfig,
    data_bytes_max: u64,
) -> Result<DurableKv<LmdbState>, StorageError> {
    DurableKv::open(LmdbState::open(dir, options)?, sessions, data_bytes_max)
}

impl LmdbState {
    /// Opens (creating if needed) the environment in `dir`. The caller keeps other processes
    /// out of `dir` (a node holds its data directory locked).
    pub fn open(dir: &Path, options: StateOptions) -> Result<Self, StorageError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StorageError::io("create state directory", dir, e))?;
        let mut env_options = EnvOpenOptions::new().read_txn_without_tls();
        env_options.map_size(options.map_size_bytes).max_dbs(3);
        // Safety: NO_META_SYNC keeps the database intact on a crash (it may lose the last
        // transaction only); the files are changed only through this environment (the node's
        // directory lock keeps other processes out, heed's registry this one from opening it
        // twice).
        unsafe {
            env_options.flags(EnvFlags::NO_META_SYNC);
        }
        let env = unsafe { env_options.open(dir) }.map_err(|e| lmdb("open LMDB state", dir, e))?;
        let mut txn = env.write_txn().map_err(|e| lmdb("begin", dir, e))?;
        let mut slots = Vec::with_capacity(2);
        for name in SLOT_NAMES {
            let slot = env
                .create_database(&mut txn, Some(name))
                .map_err(|e| lmdb("open databases", dir, e))?;
            slots.push(slot);
        }
        let position = env
            .create_database(&mut txn, Some("position"))
            .map_err(|e| lmdb("open databases", dir, e))?;
        txn.commit().map_err(|e| lmdb("commit", dir, e))?;
        let db = Db {
            env,
            slots: [slots[0], slots[1]],
            position,
            dir: dir.to_path_buf(),
            map_size_bytes: options.map_size_bytes,
        };
        let live = {
            let txn = db.env.read_txn().map_err(|e| db.error("begin read", e))?;
            db.live(&txn)?
        };
        // What a replacement that never finished left in the other slot.
        db.clear_slot(1 - live);
        spool::remove_stale(dir)?;
        let committer = Committer::spawn(db.clone())?;
        Ok(Self {
            db,
            committer,
            live,
            replace_txn_bytes: COMMIT_CHANGES_BYTES_DEFAULT,
        })
    }

    /// Bounds each write transaction of a replacement ([`DurableStore::replace`]) to about
    /// `bytes` bytes of keys and values (at least one key each; by default
    /// [`COMMIT_CHANGES_BYTES_DEFAULT`], a commit's bound).
    pub fn with_replace_txn_bytes(mut self, bytes: u64) -> Self {
        self.replace_txn_bytes = bytes.max(1);
        self
    }

    /// Which data slot holds the state: 0 (`data`) or 1 (`data-b`); a finished replacement
    /// moves it to the other.
    pub fn live_slot(&self) -> usize {
        self.live
    }

    /// The environment's directory.
    pub fn dir(&self) -> &Path {
        &self.db.dir
    }
}

impl Db {
    /// Commits `changes` and `position` in one write transaction; abandoned (the transaction
    /// aborted, nothing written) once `abandon` is set before its commit.
    fn commit(
        &self,
        changes: &Changes,
        position: &[u8],
        abandon: &AtomicBool,
    ) -> Result<(), StorageError> {
        let mut txn = self
            .env
            .write_txn()
            .map_err(|e| self.error("begin write", e))?;
        let data = self.slots[self.live(&txn)?];
        for (key, change) in changes {
            if abandon.load(Ordering::Relaxed) {
                return Err(committer::abandoned(&self.dir));
            }
            let k = stored_key(key);
            if k.len() > RAW_KEY_BYTES_MAX {
                // A long key: another long key may hold its slot (same prefix and hash).
                if let Some(stored) = data.get(&txn, &k).map_err(|e| self.error("read", e))? {
                    decode_same(&k, stored, key)?;
                }
            }
            match change {
                Some((value, version)) => data
                    .put(&mut txn, &k, &encode_value(key, value, *version))
                    .map_err(|e| self.error("write", e))?,
                None => {
                    data.delete(&mut txn, &k)
                        .map_err(|e| self.error("delete", e))?;
                }
            }
        }
        self.position
            .put(&mut txn, POSITION_KEY, position)
            .map_err(|e| self.error("write position", e))?;
        if abandon.load(Ordering::Relaxed) {
            return Err(committer::abandoned(&self.dir));
        }
        txn.commit().map_err(|e| self.error("commit", e))
    }

    /// `mdb_env_sync(force)`: flushes the meta page `MDB_NOMETASYNC` leaves unsynced, so the
    /// last commit survives a power cut as well.
    fn sync(&self) -> Result<(), StorageError> {
        self.env.force_sync().map_err(|e| self.error("sync", e))
    }

    /// Calls `f` on every key, value and version `txn` sees in `slot`, in key order.
    fn scan_in(
        &self,
        txn: &RoTxn<'_, WithoutTls>,
        slot: usize,
        f: &mut Visit<'_>,
    ) -> Result<(), StorageError> {
        for pair in self.slots[slot]
            .iter(txn)
            .map_err(|e| self.error("iterate", e))?
        {
            let (k, stored) = pair.map_err(|e| self.error("iterate", e))?;
            let (key, value, version) = decode(k, stored)?;
            f(key, value, version)?;
        }
        Ok(())
    }

    /// The data slot that holds the state as `txn` sees it.
    fn live(&self, txn: &RoTxn<'_, WithoutTls>) -> Result<usize, StorageError> {
        let live = self
            .position
            .get(txn, LIVE_KEY)
            .map_err(|e| self.error("read live slot", e))?;
        match live {
            None | Some([0]) => Ok(0),
            Some([1]) => Ok(1),
            Some(other) => Err(corrupt(format!("bad live slot record {other:?}"))),
        }
    }

    /// Empties `slot` if it holds anything, in a transaction of its own (LMDB frees a
    /// database's pages without reading its leaves). Best effort: a slot left full is
    /// emptied before it is filled again, so a failure is logged, not returned.
    fn clear_slot(&self, slot: usize) {
        let cleared = (|| {
            let mut txn = self
                .env
                .write_txn()
                .map_err(|e| self.error("begin write", e))?;
            let data = self.slots[slot];
            if data.len(&txn).map_err(|e| self.error("count", e))? == 0 {
                return Ok(());
            }
            data.clear(&mut txn)
                .map_err(|e| self.error("clear data slot", e))?;
            txn.commit().map_err(|e| self.error("commit", e))
        })();
        if let Err(e) = cleared {
            let name = SLOT_NAMES[slot];
            tracing::warn!(
                slot = name,
                "cannot empty the unused LMDB state data slot: {e}"
            );
        }
    }

    fn error(&self, op: &'static str, e: heed::Error) -> StorageError {
        match e {
            heed::Error::Mdb(heed::MdbError::MapFull) => StorageError::MapFull {
                path: self.dir.clone(),
                map_bytes: self.map_size_bytes,
                map_bytes_max: self.map_size_bytes,
            },
            e => lmdb(op, &self.dir, e),
        }
    }
}

fn lmdb(op: &'static str, dir: &Path, e: heed::Error) -> StorageError {
    let io = match e {
        heed::Error::Io(e) => e,
        other => std::io::Error::other(other.to_string()),
    };
    StorageError::io(op, dir, io)
}

fn corrupt(detail: String) -> StorageError {
    StorageError::Corrupt {
        index: None,
        detail,
    }
}

/// The LMDB key of `key`.
fn stored_key(key: &[u8]) -> Cow<'_, [u8]> {
    if key.len() <= RAW_KEY_BYTES_MAX {
        return Cow::Borrowed(key);
    }
    let mut k = key[..LONG_KEY_PREFIX_BYTES].to_vec();
    k.extend_from_slice(&fnv1a(key).to_be_bytes());
    Cow::Owned(k)
}

/// FNV-1a, 64 bits: a long key's hash (stable across builds and platforms).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The stored value: the version (8 bytes, big-endian), for a long key the key's length
/// (4 bytes) and the key, then the value.
fn encode_value(key: &[u8], value: &[u8], version: u64) -> Vec<u8> {
    let long = key.len() > RAW_KEY_BYTES_MAX;
    let mut out = Vec::with_capacity(8 + value.len() + if long { 4 + key.len() } else { 0 });
    out.extend_from_slice(&version.to_be_bytes());
    if long {
        out.extend_from_slice(&(key.len() as u32).to_be_bytes());
        out.extend_from_slice(key);
    }
    out.extend_from_slice(value);
    out
}

/// The value and version of a stored pair whose key is `key`, or an error if another long key
/// holds its stored key (the same prefix and hash).
fn decode_same<'a>(
    stored_key: &'a [u8],
    stored: &'a [u8],
    key: &[u8],
) -> Result<(&'a [u8], u64), StorageError> {
    let (full, value, version) = decode(stored_key, stored)?;
    if full != key {
        return Err(corrupt(format!(
            "two keys of {} and {} bytes share a stored key (prefix and hash)",
            full.len(),
            key.len()
        )));
    }
    Ok((value, version))
}

/// (key, value, version) of a stored pair.
fn decode<'a>(
    stored_key: &'a [u8],
    stored: &'a [u8],
) -> Result<(&'a [u8], &'a [u8], u64), StorageError> {
    let bad = || {
        corrupt(format!(
            "bad stored value for a key of {} bytes",
            stored_key.len()
        ))
    };
    let (version, rest) = stored.split_first_chunk::<8>().ok_or_else(bad)?;
    let version = u64::from_be_bytes(*version);
    if stored_key.len() <= RAW_KEY_BYTES_MAX {
        return Ok((stored_key, rest, version));
    }
    let (len, rest) = rest.split_first_chunk::<4>().ok_or_else(bad)?;
    let len = u32::from_be_bytes(*len) as usize;
    if rest.len() < len {
        return Err(bad());
    }
    let (key, value) = rest.split_at(len);
    Ok((key, value, version))
}

impl DurableStore for LmdbState {
    fn get(&self, key: &[u8]) -> Result<Option<(Bytes, u64)>, StorageError> {
        let txn = self
            .db
            .env
            .read_txn()
            .map_err(|e| self.db.error("begin read", e))?;
        let k = stored_key(key);
        let Some(stored) = self.db.slots[self.live]
            .get(&txn, &k)
            .map_err(|e| self.db.error("read", e))?
        else {
            return Ok(None);
        };
        let (full, value, version) = decode(&k, stored)?;
        Ok((full == key).then(|| (Bytes::copy_from_slice(value), version)))
    }

    fn position(&self) -> Result<Option<Vec<u8>>, StorageError> {
        let txn = self
            .db
            .env
            .read_txn()
            .map_err(|e| self.db.error("begin read", e))?;
        let p = self.db.position.get(&txn, POSITION_KEY);
        Ok(p.map_err(|e| self.db.error("read position", e))?
            .map(<[u8]>::to_vec))
    }

    fn start_commit(
        &mut self,
        changes: Arc<Changes>,
        position: Vec<u8>,
        sync: bool,
    ) -> Result<(), StorageError> {
        self.committer.start(changes, position, sync)
    }

    fn commit_done(&mut self) -> Result<bool, StorageError> {
        self.committer.done()
    }

    fn wait_commit(&mut self) -> Result<(), StorageError> {
        self.committer.wait()
    }

    /// Issue 20: into the other data slot, in bounded transactions, flipped to at the end
    /// (see the module's documentation).
    fn replace(&mut self) -> Result<Box<dyn Replacement + '_>, StorageError> {
        self.committer.wait()?;
        let replacement =
            replace::LmdbReplacement::start(&self.db, &mut self.live, self.replace_txn_bytes)?;
        Ok(Box::new(replacement))
    }

    fn scan(&self, f: &mut Visit<'_>) -> Result<(), StorageError> {
        let txn = self
            .db
            .env
            .read_txn()
            .map_err(|e| self.db.error("begin read", e))?;
        self.db.scan_in(&txn, self.live, f)
    }

    /// Issue 20: one read transaction, when the read runs: the live slot, its count of keys
    /// (`mdb_stat`'s, kept by LMDB: no count pass), the position record and every key of the
    /// same commit.
    fn committed_read(&self) -> CommittedRead {
        let reader = self.db.clone();
        Box::new(move |sink| {
            let txn = reader
                .env
                .read_txn()
                .map_err(|e| reader.error("begin read", e))?;
            let live = reader.live(&txn)?;
            let keys = reader.slots[live]
                .len(&txn)
                .map_err(|e| reader.error("count", e))?;
            sink.keys(keys)?;
            let position = reader
                .position
                .get(&txn, POSITION_KEY)
                .map_err(|e| reader.error("read position", e))?
                .map(<[u8]>::to_vec);
            reader.scan_in(&txn, live, &mut |k, v, version| sink.entry(k, v, version))?;
            Ok(position)
        })
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        self.db.sync()
    }

    /// Issue 20: a file in the state's directory, mapped back ([`FileSpool`]).
    fn snapshot_spool(&self) -> Result<Box<dyn SnapshotSpool>, StorageError> {
        Ok(Box::new(FileSpool::create(&self.db.dir)?))
    }
}
