//! Issue 20: snapshots too large to hold in the process's memory, on their way in and out.
//! A [`SnapshotSpool`] holds one while it is built (a leader's read for a follower) or
//! received (a follower's chunks); a [`SnapshotReceiver`] is a driver's side of receiving one:
//! the core hands out the chunks as they arrive ([`Ready::snapshot_chunks`]) and keeps none.

use crate::io::StorageError;
use crate::raft::Raft;
use crate::ready::Ready;
use crate::types::LogId;
use bytes::Bytes;

/// Issue 20: where a snapshot too large to hold in the process's memory is put while it is
/// built (a leader's read for a follower) or received (a follower's chunks): written once,
/// front to back, then read back whole as [`Bytes`]. A state machine that keeps its state on
/// disk offers one in a file ([`crate::StateMachine::snapshot_spool`]), mapped back read-only: page
/// cache, which the kernel can drop, not the process's own memory. The default, a `Vec<u8>`,
/// keeps it in memory.
pub trait SnapshotSpool: Send {
    /// Appends `data` after what was appended before.
    fn append(&mut self, data: &[u8]) -> Result<(), StorageError>;

    /// The bytes appended so far.
    fn len(&self) -> u64;

    /// True if nothing was appended.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Everything appended, as one buffer.
    fn finish(self: Box<Self>) -> Result<Bytes, StorageError>;
}

/// A spool in memory.
impl SnapshotSpool for Vec<u8> {
    fn append(&mut self, data: &[u8]) -> Result<(), StorageError> {
        self.extend_from_slice(data);
        Ok(())
    }

    fn len(&self) -> u64 {
        Vec::len(self) as u64
    }

    fn finish(self: Box<Self>) -> Result<Bytes, StorageError> {
        Ok(Bytes::from(*self))
    }
}

/// Any spool, behind a box.
impl SnapshotSpool for Box<dyn SnapshotSpool> {
    fn append(&mut self, data: &[u8]) -> Result<(), StorageError> {
        (**self).append(data)
    }

    fn len(&self) -> u64 {
        (**self).len()
    }

    fn finish(self: Box<Self>) -> Result<Bytes, StorageError> {
        (*self).finish()
    }
}

/// Issue 20: a driver's side of receiving a snapshot from the leader (Raft §7): the chunks a
/// [`Ready`] hands out go to a spool, in order, and the data of the snapshot to install is
/// filled in from it. One transfer at a time: a chunk at offset 0 starts a new spool, and the
/// spool of a transfer the core dropped (a new leader or term, a bad checksum) is dropped.
/// A driver's spools are of any kind (`Box<dyn SnapshotSpool>`); a simulator's are `Vec<u8>`.
#[derive(Clone, Debug)]
pub struct SnapshotReceiver<S = Box<dyn SnapshotSpool>> {
    spool: Option<(LogId, S)>,
}

impl<S> Default for SnapshotReceiver<S> {
    fn default() -> Self {
        Self { spool: None }
    }
}

impl<S: SnapshotSpool> SnapshotReceiver<S> {
    /// Step 0 of the [`Ready`] contract: writes `ready`'s chunks to the spool (a new one from
    /// `new_spool` for each transfer) and, if `ready` has a snapshot to install, fills in its
    /// data and hands it back to the core ([`Raft::snapshot_received`]). An error (the spool's
    /// disk) must stop the node: nothing of this `Ready` was sent or written.
    pub fn receive(
        &mut self,
        raft: &mut Raft,
        ready: &mut Ready,
        mut new_spool: impl FnMut() -> Result<S, StorageError>,
    ) -> Result<(), StorageError> {
        for chunk in ready.snapshot_chunks.drain(..) {
            if chunk.offset == 0 {
                self.spool = None;
                self.spool = Some((chunk.last, new_spool()?));
            }
            match &mut self.spool {
                Some((last, spool)) if *last == chunk.last && spool.len() == chunk.offset => {
                    spool.append(&chunk.data)?
                }
                _ => return Err(out_of_order(chunk.last, chunk.offset)),
            }
        }
        if let Some(snapshot) = &mut ready.snapshot {
            let spool = match self.spool.take() {
                Some((last, spool)) if last == snapshot.last => spool,
                _ => return Err(out_of_order(snapshot.last, 0)),
            };
            snapshot.data = Box::new(spool).finish()?;
            raft.snapshot_received(snapshot.last, snapshot.data.clone());
        }
        if raft.snapshot_being_received().is_none() {
            self.spool = None;
        }
        Ok(())
    }

    /// The bytes spooled of the transfer under way (0 if none).
    pub fn spooled(&self) -> u64 {
        self.spool.as_ref().map_or(0, |(_, s)| s.len())
    }
}

/// The core handed out a chunk that does not follow the spool's (a bug, never the network's
/// doing: the core drops chunks out of order before they get here).
fn out_of_order(last: LogId, offset: u64) -> StorageError {
    StorageError::Corrupt {
        index: Some(last.index),
        detail: format!("snapshot chunk at offset {offset} of {last} does not follow the spool"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::membership::Membership;
    use crate::message::{Body, Message};
    use crate::ready::ReceivedChunk;
    use crate::types::Snapshot;

    fn chunk(last: LogId, offset: u64, data: &'static [u8]) -> ReceivedChunk {
        ReceivedChunk {
            last,
            offset,
            data: Bytes::from_static(data),
        }
    }

    fn snapshot(last: LogId) -> Snapshot {
        Snapshot {
            last,
            data: Bytes::new(),
            membership: Membership::from_voters([1, 2, 3]),
        }
    }

    /// A leader's chunk of the snapshot `whole` at `last`, from `offset` (`len` bytes).
    fn install(last: LogId, whole: &'static [u8], offset: usize, len: usize) -> Message {
        Message {
            from: 2,
            to: 1,
            term: 1,
            body: Body::InstallSnapshot {
                last,
                membership: Box::new(Membership::from_voters([1, 2, 3])),
                offset: offset as u64,
                data: Bytes::from_static(&whole[offset..offset + len]),
                done: offset + len == whole.len(),
                len: whole.len() as u64,
                crc32c: crc32c::crc32c(whole),
            },
        }
    }

    #[test]
    fn chunks_are_spooled_in_order_and_fill_in_the_snapshot() {
        // The core hands each chunk out as it comes and keeps none; the receiver's spool
        // holds them, and the snapshot to install gets its data from it.
        let mut raft = Raft::new(Config::new(1, [1, 2, 3])).unwrap();
        let mut rx = SnapshotReceiver::<Vec<u8>>::default();
        let last = LogId::new(5, 1);
        raft.step(install(last, b"abcdef", 0, 3));
        let mut ready = raft.take_ready();
        assert_eq!(ready.snapshot_chunks.len(), 1);
        rx.receive(&mut raft, &mut ready, || Ok(Vec::new()))
            .unwrap();
        assert!(ready.snapshot_chunks.is_empty());
        assert_eq!(rx.spooled(), 3);
        raft.step(install(last, b"abcdef", 3, 3));
        let mut ready = raft.take_ready();
        assert_eq!(ready.snapshot.as_ref().map(|s| s.data.len()), Some(0));
        rx.receive(&mut raft, &mut ready, || Ok(Vec::new()))
            .unwrap();
        assert_eq!(ready.snapshot.unwrap().data, Bytes::from_static(b"abcdef"));
        assert_eq!(rx.spooled(), 0);
        // Raft §7: the node keeps its copy, to send on if it leads.
        assert_eq!(
            raft.snapshot().map(|s| s.data.clone()),
            Some(Bytes::from_static(b"abcdef"))
        );
    }

    #[test]
    fn a_chunk_that_does_not_follow_the_spool_is_an_error_not_a_splice() {
        let mut raft = Raft::new(Config::new(1, [1, 2, 3])).unwrap();
        let mut rx = SnapshotReceiver::<Vec<u8>>::default();
        let (last, other) = (LogId::new(5, 1), LogId::new(6, 1));
        for chunks in [
            vec![chunk(last, 3, b"de")],
            vec![chunk(last, 0, b"abc"), chunk(last, 4, b"e")],
            vec![chunk(last, 0, b"abc"), chunk(other, 3, b"d")],
        ] {
            let mut ready = Ready {
                snapshot_chunks: chunks,
                ..Ready::default()
            };
            let e = rx.receive(&mut raft, &mut ready, || Ok(Vec::new()));
            assert!(matches!(e, Err(StorageError::Corrupt { .. })), "{e:?}");
        }
        // A snapshot to install with no spool of its own.
        let mut ready = Ready {
            snapshot: Some(snapshot(other)),
            ..Ready::default()
        };
        let e = rx.receive(&mut raft, &mut ready, || Ok(Vec::new()));
        assert!(matches!(e, Err(StorageError::Corrupt { .. })), "{e:?}");
    }

    #[test]
    fn a_spool_the_core_no_longer_receives_into_is_dropped() {
        // The core is receiving nothing (it dropped the transfer, or never started one): the
        // spool of chunks handed out before is let go at once.
        let mut raft = Raft::new(Config::new(1, [1, 2, 3])).unwrap();
        let mut rx = SnapshotReceiver::<Vec<u8>>::default();
        let mut ready = Ready {
            snapshot_chunks: vec![chunk(LogId::new(5, 1), 0, b"abc")],
            ..Ready::default()
        };
        rx.receive(&mut raft, &mut ready, || Ok(Vec::new()))
            .unwrap();
        assert_eq!(rx.spooled(), 0);
    }
}
