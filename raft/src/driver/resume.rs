//! Where a node resumes applying when it starts: from its stored snapshot (an in-memory state
//! machine, or a durable one behind it), or from the state a durable state machine kept.

use super::error::NodeError;
use crate::config::ConfigError;
use crate::io::{StateMachine, Storage, WriteOp};
use crate::types::{HardState, Index, Persisted, Snapshot};
use bytes::Bytes;

/// Brings `sm` and `persisted` to one state before the core starts: returns what the core
/// restores from, and the last entry `sm` already holds if the core must not hand out the
/// entries through it again ([`crate::Raft::resume_applied`]).
///
/// - `sm` keeps no state, or is behind the stored snapshot: it is restored from the snapshot.
/// - `sm` is at the snapshot or at an entry of the log: nothing is restored, and only the
///   entries after it are applied again.
/// - `sm` is at an entry the log does not hold (it installed a leader's snapshot, then the node
///   stopped before its storage recorded it): its state is that snapshot.
pub(super) async fn resume<M: StateMachine, S: Storage>(
    sm: &mut M,
    storage: &S,
    mut persisted: Persisted,
) -> Result<(Persisted, Option<Index>), NodeError> {
    let stored = persisted.snapshot.as_ref().map(|s| s.last);
    let held = sm.applied().map_err(NodeError::Storage)?;
    let Some((at, membership)) = held
        .clone()
        .filter(|(at, _)| at.index >= stored.unwrap_or_default().index && at.index > 0)
    else {
        if let Some(s) = &persisted.snapshot {
            sm.restore_snapshot(s).map_err(|reason| {
                // Issue 20: a node whose state machine kept its own state stored only the
                // snapshot's metadata; a state behind it was lost or replaced.
                let reason = match s.data.is_empty() {
                    true => format!(
                        "{reason} (the stored snapshot holds no data: the state machine that \
                         took it keeps its own state, and this one is behind it, at {})",
                        held.as_ref().map_or(0, |(at, _)| at.index)
                    ),
                    false => reason,
                };
                NodeError::Config(ConfigError::Snapshot {
                    last: s.last,
                    reason,
                })
            })?;
        }
        return Ok((persisted, None));
    };
    let in_log = Some(at) == stored
        || persisted
            .entries
            .binary_search_by_key(&at.index, |e| e.index)
            .is_ok_and(|i| persisted.entries[i].term == at.term);
    if in_log {
        return Ok((persisted, Some(at.index)));
    }
    /// Raft §7: a snapshot replaces the log it covers. The state machine's state is one at `at`
    /// that the storage did not record: recorded now, as a snapshot received from the leader
    /// would have been, and the log, which does not hold `at`, is discarded. Issue 20: only
    /// its metadata, for a state machine that keeps its own state (durable at `at`).
    let data = match sm.make_durable().map_err(NodeError::Storage)? {
        Some(_) => Bytes::new(),
        None => sm.try_snapshot().map_err(NodeError::Storage)?,
    };
    let snapshot = Snapshot {
        last: at,
        data,
        membership,
    };
    let hard_state = HardState {
        term: persisted.hard_state.term.max(at.term),
        voted_for: match at.term > persisted.hard_state.term {
            true => None,
            false => persisted.hard_state.voted_for,
        },
        commit: persisted.hard_state.commit.max(at.index),
    };
    storage
        .write(vec![
            WriteOp::InstallSnapshot(snapshot.clone()),
            WriteOp::HardState(hard_state),
        ])
        .await
        .map_err(NodeError::Storage)?;
    persisted.entries.clear();
    persisted.snapshot = Some(snapshot);
    persisted.hard_state = hard_state;
    Ok((persisted, None))
}
