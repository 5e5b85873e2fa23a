//! The driver simulation's disk (issue 21, TigerBeetle's VOPR as the model): memory storage
//! whose writes become durable after a simulated latency, with the faults a real disk has.
//!
//! - **fsync errors**: a write fails, leaving what it wrote durable or not (either, at random);
//!   the disk then fails every later write and load (fail-stop) until [`Disk::repair`] (the
//!   process restarted on a disk that works again).
//! - **the unsynced tail at a crash**: the one write in flight (in the page cache, its fsync
//!   not returned) is resolved by [`Disk::crash`]. A killed process leaves it to the page
//!   cache: it lands whole. A power cut loses it, or tears it: a prefix of it reaches the
//!   platter. Each write is a checksummed record, as in the LMDB store's WAL, so recovery
//!   discards a torn record whole.
//! - **corruption of stored data**: [`Disk::corrupt_an_entry`] flips a bit in a stored entry
//!   (bit rot, a misdirected write). Every entry is stored with a CRC32C of its index, term and
//!   payload; a load that finds one that does not match fails with
//!   [`StorageError::Corrupt`], and the node does not start (fail-stop) instead of applying
//!   garbage.
//! - **slow disks**: [`Disk::slow_down`] multiplies the write latency for a while.
//! - **snapshot spools** (issue 20): a snapshot received from a leader is written to a spool on
//!   this disk ([`Disk::spool`]) chunk by chunk; an append fails like a write (the disk then
//!   fails: the node stops), and a crash loses the spool.
//!
//! [`Checks::Off`] turns the checksums off (a torn record's prefix is applied, a corrupted
//! entry is loaded as it is): a test shows the simulation's checks then fail.

use bytes::Bytes;
use raftkv_raft::runtime::sim::SimRuntime;
use raftkv_raft::sim::MemStore;
use raftkv_raft::{
    Entry, Payload, Persisted, Runtime, SnapshotSpool, Storage, StorageError, WriteOp,
};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Whether the disk's records and entries are checksummed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checks {
    /// As a real store does: a torn record is discarded, a corrupted entry refused.
    On,
    /// The detection removed, to show the simulation's checks catch what it would let through.
    Off,
}

/// Faults injected into, and found by, one disk or many (summed).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskCounts {
    /// Writes that failed like an fsync error.
    pub write_errors: u64,
    /// Writes in flight at a process kill, landed whole from the page cache.
    pub unsynced_kept: u64,
    /// Writes in flight at a power cut, lost whole.
    pub unsynced_lost: u64,
    /// Writes in flight at a power cut, torn: only a prefix reached the disk.
    pub torn_writes: u64,
    /// Stored entries corrupted.
    pub corruptions: u64,
    /// Loads that found a corrupted entry by its checksum.
    pub corruptions_detected: u64,
    /// Writes completed while the disk was slow.
    pub slow_writes: u64,
    /// Issue 20: chunks of received snapshots written to a spool, and appends that failed.
    pub spooled_chunks: u64,
    pub spool_errors: u64,
}

impl std::ops::AddAssign for DiskCounts {
    fn add_assign(&mut self, o: Self) {
        self.write_errors += o.write_errors;
        self.unsynced_kept += o.unsynced_kept;
        self.unsynced_lost += o.unsynced_lost;
        self.torn_writes += o.torn_writes;
        self.corruptions += o.corruptions;
        self.corruptions_detected += o.corruptions_detected;
        self.slow_writes += o.slow_writes;
        self.spooled_chunks += o.spooled_chunks;
        self.spool_errors += o.spool_errors;
    }
}

/// One node's disk. Clones share it.
#[derive(Clone)]
pub struct Disk {
    runtime: SimRuntime,
    latency_ms: (u64, u64),
    checks: Checks,
    state: Arc<Mutex<DiskState>>,
}

#[derive(Default)]
struct DiskState {
    /// What is durable.
    store: MemStore,
    /// The CRC32C of each stored entry, as written.
    sums: BTreeMap<u64, u32>,
    /// The write in flight: in the page cache, its fsync not returned.
    unsynced: Option<Vec<WriteOp>>,
    /// The chance that a write fails.
    write_error_chance: f64,
    /// The chance that a spool's append fails.
    spool_error_chance: f64,
    /// The first error, returned again by every later write and load.
    failed: Option<StorageError>,
    /// Until when the disk is slow, and by what factor.
    slow: Option<(Duration, u64)>,
    counts: DiskCounts,
}

/// The checksum of an entry: its index, term and payload.
fn entry_sum(e: &Entry) -> u32 {
    let mut head = [0u8; 17];
    head[..8].copy_from_slice(&e.index.to_le_bytes());
    head[8..16].copy_from_slice(&e.term.to_le_bytes());
    let body = match &e.payload {
        Payload::Noop => Vec::new(),
        Payload::Command(b) => {
            head[16] = 1;
            b.to_vec()
        }
        Payload::Membership(m) => {
            head[16] = 2;
            format!("{m:?}").into_bytes()
        }
    };
    crc32c::crc32c_append(crc32c::crc32c(&head), &body)
}

impl DiskState {
    /// Makes `ops` durable, with the checksums of the entries they store.
    fn apply(&mut self, ops: Vec<WriteOp>) {
        for op in &ops {
            if let WriteOp::Append(entries) = op {
                for e in entries {
                    self.sums.insert(e.index, entry_sum(e));
                }
            }
        }
        self.store.apply(ops);
    }
}

impl Disk {
    pub fn new(runtime: &SimRuntime, latency_ms: (u64, u64), checks: Checks) -> Self {
        Self {
            runtime: runtime.clone(),
            latency_ms,
            checks,
            state: Arc::default(),
        }
    }

    fn state(&self) -> MutexGuard<'_, DiskState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes each later write fail with chance `p` (0: never).
    pub fn set_write_error_chance(&self, p: f64) {
        self.state().write_error_chance = p;
    }

    /// Makes each later spool append fail with chance `p` (0: never).
    pub fn set_spool_error_chance(&self, p: f64) {
        self.state().spool_error_chance = p;
    }

    /// Whether the disk failed (a write or a load) and has not been repaired since.
    pub fn has_failed(&self) -> bool {
        self.state().failed.is_some()
    }

    /// Whether a load found a corrupted entry: this node's data is lost for good.
    pub fn found_corruption(&self) -> bool {
        matches!(self.state().failed, Some(StorageError::Corrupt { .. }))
    }

    /// Whether a write is in flight (in the page cache, its fsync not returned).
    pub fn has_unsynced(&self) -> bool {
        self.state().unsynced.is_some()
    }

    /// Issue 20: a new spool on this disk for a snapshot being received.
    pub fn spool(&self) -> DiskSpool {
        DiskSpool {
            disk: self.clone(),
            data: Vec::new(),
        }
    }

    /// The injected fault, if a write (or a spool's append) fails now: the disk then fails.
    fn inject_write_error(
        &self,
        s: &mut DiskState,
        chance: f64,
        op: &'static str,
    ) -> Option<StorageError> {
        let fails = chance > 0.0 && self.runtime.chance(chance);
        if !fails {
            return None;
        }
        let e = StorageError::io(op, "", std::io::Error::other("injected disk fault"));
        s.failed = Some(e.clone());
        Some(e)
    }

    /// The faults so far.
    pub fn counts(&self) -> DiskCounts {
        self.state().counts
    }

    /// Clears a failed write: the process restarted on a disk that works again (what became
    /// durable stays). A corruption found stays found.
    pub fn repair(&self) {
        let mut s = self.state();
        if !matches!(s.failed, Some(StorageError::Corrupt { .. })) {
            s.failed = None;
        }
    }

    /// The process died: resolves the write in flight. `power_cut`: the page cache is gone
    /// too, so the write is lost or torn; otherwise it lands whole.
    pub fn crash(&self, power_cut: bool) {
        let mut s = self.state();
        let Some(ops) = s.unsynced.take() else { return };
        if !power_cut {
            s.counts.unsynced_kept += 1;
            s.apply(ops);
        } else if self.runtime.chance(0.5) {
            s.counts.unsynced_lost += 1;
        } else {
            s.counts.torn_writes += 1;
            // A prefix reached the disk; the record's checksum does not match, and recovery
            // discards it whole. Without the checksum the prefix is taken for the record.
            if self.checks == Checks::Off {
                let prefix = self.torn_prefix(ops);
                s.apply(prefix);
            }
        }
    }

    /// A prefix of `ops`: whole ops, then maybe part of an append.
    fn torn_prefix(&self, mut ops: Vec<WriteOp>) -> Vec<WriteOp> {
        let keep = self.runtime.random(0, ops.len() as u64 + 1) as usize;
        ops.truncate(keep);
        if let Some(WriteOp::Append(entries)) = ops.last_mut() {
            let keep = self.runtime.random(0, entries.len() as u64 + 1) as usize;
            entries.truncate(keep.max(1));
        }
        ops
    }

    /// Flips one bit of a stored command, keeping its checksum as written. Returns false if
    /// there is none.
    pub fn corrupt_an_entry(&self) -> bool {
        let mut s = self.state();
        let commands: Vec<u64> = s
            .store
            .entries
            .values()
            .filter(|e| matches!(&e.payload, Payload::Command(b) if !b.is_empty()))
            .map(|e| e.index)
            .collect();
        if commands.is_empty() {
            return false;
        }
        let index = commands[self.runtime.random(0, commands.len() as u64) as usize];
        let entry = s.store.entries.get_mut(&index).expect("listed");
        let Payload::Command(b) = &entry.payload else {
            unreachable!("listed as a command")
        };
        let mut bytes = b.to_vec();
        let at = self.runtime.random(0, bytes.len() as u64) as usize;
        bytes[at] ^= 1 << self.runtime.random(0, 8);
        entry.payload = Payload::Command(bytes.into());
        s.counts.corruptions += 1;
        true
    }

    /// Makes writes `factor` times slower for `for_`.
    pub fn slow_down(&self, for_: Duration, factor: u64) {
        self.state().slow = Some((self.runtime.now() + for_, factor));
    }
}

impl Storage for Disk {
    async fn load(&self) -> Result<Persisted, StorageError> {
        let mut s = self.state();
        if let Some(e) = &s.failed {
            return Err(e.clone());
        }
        if self.checks == Checks::On {
            let bad = s
                .store
                .entries
                .values()
                .find(|e| s.sums.get(&e.index) != Some(&entry_sum(e)))
                .map(|e| e.index);
            if let Some(index) = bad {
                let e = StorageError::Corrupt {
                    index: Some(index),
                    detail: format!("entry {index}: CRC32C mismatch (simulated disk)"),
                };
                s.counts.corruptions_detected += 1;
                s.failed = Some(e.clone());
                return Err(e);
            }
        }
        Ok(s.store.persisted())
    }

    async fn write(&self, ops: Vec<WriteOp>) -> Result<(), StorageError> {
        let delay = {
            let mut s = self.state();
            if let Some(e) = &s.failed {
                return Err(e.clone());
            }
            s.unsynced = Some(ops);
            let (lo, hi) = self.latency_ms;
            let base = self.runtime.random(lo, hi + 1);
            match s.slow {
                Some((until, factor)) if self.runtime.now() < until => {
                    s.counts.slow_writes += 1;
                    Duration::from_millis(base.max(1) * factor)
                }
                _ => Duration::from_millis(base),
            }
        };
        self.runtime.sleep(delay).await;
        let mut s = self.state();
        let ops = s.unsynced.take().expect("one write at a time");
        if let Some(e) = &s.failed {
            return Err(e.clone());
        }
        let chance = s.write_error_chance;
        let failed = self.inject_write_error(&mut s, chance, "fsync (simulated)");
        // A failed fsync leaves the write durable or not: the caller cannot know which.
        if failed.is_none() || self.runtime.chance(0.5) {
            s.apply(ops);
        }
        if let Some(e) = failed {
            s.counts.write_errors += 1;
            return Err(e);
        }
        Ok(())
    }
}

/// Issue 20: a snapshot being received, spooled on a [`Disk`]: its appends fail as the disk's
/// writes do (and then the node stops); the data is in memory, lost with the process.
pub struct DiskSpool {
    disk: Disk,
    data: Vec<u8>,
}

impl SnapshotSpool for DiskSpool {
    fn append(&mut self, data: &[u8]) -> Result<(), StorageError> {
        let mut s = self.disk.state();
        if let Some(e) = &s.failed {
            return Err(e.clone());
        }
        let chance = s.spool_error_chance;
        if let Some(e) = self
            .disk
            .inject_write_error(&mut s, chance, "snapshot spool (simulated)")
        {
            s.counts.spool_errors += 1;
            return Err(e);
        }
        s.counts.spooled_chunks += 1;
        self.data.extend_from_slice(data);
        Ok(())
    }

    fn len(&self) -> u64 {
        self.data.len() as u64
    }

    fn finish(self: Box<Self>) -> Result<Bytes, StorageError> {
        Ok(Bytes::from(self.data))
    }
}
