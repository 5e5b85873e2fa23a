//! Issue 20: [`LmdbReplacement`], an [`LmdbState`](crate::LmdbState)'s whole state replaced
//! (a leader's snapshot restored) without one write transaction the size of the state: LMDB
//! keeps a write transaction's dirty pages in the process's memory (up to 512 MiB of them
//! without `MDB_WRITEMAP`), so the new keys go into the data slot that does not hold the state,
//! in transactions of about a commit's size each. A last transaction writes the new position
//! and flips the `live` record to that slot: before it commits, the old state and position
//! are the state (after a crash too, the other slot is then emptied when the state is
//! opened); after, the new ones. The old slot is emptied after the flip.

use crate::{decode_same, encode_value, stored_key, Db, LIVE_KEY, POSITION_KEY, SLOT_NAMES};
use heed::RwTxn;
use raftkv_kv::durable::{Replacement, CHANGE_OVERHEAD_BYTES};
use raftkv_raft::StorageError;

/// A replacement under way: the slot it fills and its open transaction. Dropped before
/// [`Replacement::finish`], it aborts that transaction, and the state stays the old one.
pub(crate) struct LmdbReplacement<'a> {
    db: &'a Db,
    /// The state's live slot, moved to `slot` when the replacement is finished.
    live: &'a mut usize,
    /// The slot being filled: the one that is not live.
    slot: usize,
    txn: Option<RwTxn<'a>>,
    /// Bytes of keys and values (and [`CHANGE_OVERHEAD_BYTES`] per key) in `txn`.
    txn_bytes: u64,
    txn_bytes_max: u64,
}

impl<'a> LmdbReplacement<'a> {
    /// Starts filling the slot that is not `live` (emptied first) in transactions of about
    /// `txn_bytes_max` bytes.
    pub(crate) fn start(
        db: &'a Db,
        live: &'a mut usize,
        txn_bytes_max: u64,
    ) -> Result<Self, StorageError> {
        let slot = 1 - *live;
        let mut txn = db.env.write_txn().map_err(|e| db.error("begin write", e))?;
        db.slots[slot]
            .clear(&mut txn)
            .map_err(|e| db.error("clear data slot", e))?;
        txn.commit().map_err(|e| db.error("commit", e))?;
        Ok(Self {
            db,
            live,
            slot,
            txn: None,
            txn_bytes: 0,
            txn_bytes_max,
        })
    }

    /// The open transaction, begun if none is.
    fn txn(&mut self) -> Result<&mut RwTxn<'a>, StorageError> {
        if self.txn.is_none() {
            let txn = self
                .db
                .env
                .write_txn()
                .map_err(|e| self.db.error("begin write", e))?;
            self.txn = Some(txn);
        }
        Ok(self.txn.as_mut().expect("begun above"))
    }

    /// Commits the open transaction, if any.
    fn commit(&mut self) -> Result<(), StorageError> {
        self.txn_bytes = 0;
        match self.txn.take() {
            Some(txn) => txn.commit().map_err(|e| self.db.error("commit", e)),
            None => Ok(()),
        }
    }
}

impl Replacement for LmdbReplacement<'_> {
    fn put(
        &mut self,
        key: &[u8],
        value: &[u8],
        version: u64,
    ) -> Result<Option<usize>, StorageError> {
        let (db, data) = (self.db, self.db.slots[self.slot]);
        let k = stored_key(key);
        let stored = encode_value(key, value, version);
        let txn = self.txn()?;
        // Put unless the stored key is there: a key the snapshot repeats (or another long
        // key with its prefix and hash, an error) is met only then.
        let old = match data
            .get_or_put(txn, &k, &stored)
            .map_err(|e| db.error("write", e))?
        {
            Some(existing) => Some(decode_same(&k, existing, key)?.0.len()),
            None => None,
        };
        if old.is_some() {
            data.put(txn, &k, &stored)
                .map_err(|e| db.error("write", e))?;
        }
        self.txn_bytes += (key.len() + value.len()) as u64 + CHANGE_OVERHEAD_BYTES;
        if self.txn_bytes >= self.txn_bytes_max {
            self.commit()?;
        }
        Ok(old)
    }

    fn finish(mut self: Box<Self>, position: &[u8]) -> Result<(), StorageError> {
        let db = self.db;
        let slot = self.slot;
        let txn = self.txn()?;
        db.position
            .put(txn, POSITION_KEY, position)
            .map_err(|e| db.error("write position", e))?;
        db.position
            .put(txn, LIVE_KEY, &[slot as u8])
            .map_err(|e| db.error("write live slot", e))?;
        // The flip: the new state and its position, at once.
        self.commit()?;
        *self.live = slot;
        let old = 1 - slot;
        tracing::debug!(
            slot = SLOT_NAMES[slot],
            "LMDB state replaced; emptying the old slot"
        );
        db.clear_slot(old);
        Ok(())
    }
}
