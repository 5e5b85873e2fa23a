//! Restarting over a state machine that kept its state across the restart (a durable one, such
//! as the KV store's LMDB state): the entries it already holds are not handed out again.

use crate::raft::{Error, Raft};
use crate::types::Index;

impl Raft {
    /// The state machine already holds the effects of every entry through `index` (it kept
    /// them across a restart): they are not handed out again, and the first `Ready`s carry only
    /// the committed entries after it. Call it right after [`Raft::restore`], before the first
    /// `Ready`. `index` must lie between the snapshot and the end of the log, and the driver
    /// must have checked that the state machine's entry at `index` has the log's term there
    /// (else the state is a snapshot: store it as one instead).
    pub fn resume_applied(&mut self, index: Index) -> Result<(), Error> {
        if index < self.log.snapshot().index || index > self.log.last_index() {
            return Err(Error::SnapshotIndex {
                index,
                reason: "the state machine's applied entry is not in the log",
            });
        }
        self.applied = self.applied.max(index);
        /// Raft §5.4.1: only committed entries are applied, so an entry a state machine holds
        /// is committed.
        let commit = self.commit.max(index);
        self.commit = commit;
        self.debug_check();
        Ok(())
    }
}
