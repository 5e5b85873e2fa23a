//! The leader's view of one follower's log (etcd's `Progress`): probe, replicate, snapshot.

use crate::types::{Index, LogId};
use std::collections::VecDeque;

/// How the leader is currently sending to a follower.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplicationState {
    /// The follower's log position is unknown: send one Append at a time and wait for the answer
    /// (or the next heartbeat interval) before sending another.
    Probe { paused: bool },
    /// The follower is known to match: pipeline Appends, at most `inflight_appends_max` unanswered.
    Replicate,
    /// The follower needs a snapshot (the entries it lacks are compacted away): stream `last` in
    /// chunks, stop-and-wait, from byte `offset`.
    Snapshot { last: LogId, offset: u64 },
}

/// What the leader knows of one follower.
#[derive(Clone, Debug)]
pub struct Progress {
    /// Raft Figure 2: highest index known to be replicated (and durable) on the follower.
    /// Invariant: `match_index < next_index`.
    pub match_index: Index,
    /// Raft Figure 2: index of the next entry to send.
    pub next_index: Index,
    pub state: ReplicationState,
    /// Last index of each unanswered Append, oldest first (Replicate only).
    /// Invariant: `inflight.len() <= inflight_appends_max`.
    pub inflight: VecDeque<Index>,
    /// thesis §6.2: heard from this follower since the last CheckQuorum round.
    pub recent_active: bool,
    /// The leader's tick count when it last heard from this follower (`None`: never).
    pub heard_tick: Option<u64>,
    /// Highest read sequence this follower acknowledged (thesis §6.4).
    pub read_seq: u64,
    /// An Append or snapshot answer arrived since the last heartbeat tick (stall detection).
    pub recent_ack: bool,
}

impl Progress {
    pub fn new(next_index: Index) -> Self {
        Self {
            match_index: 0,
            next_index,
            state: ReplicationState::Probe { paused: false },
            inflight: VecDeque::new(),
            recent_active: false,
            heard_tick: None,
            read_seq: 0,
            recent_ack: false,
        }
    }

    /// Heard from within the last `window_ticks` ticks of the leader's clock `now_tick`.
    pub fn active(&self, now_tick: u64, window_ticks: u64) -> bool {
        self.heard_tick
            .is_some_and(|t| now_tick.saturating_sub(t) < window_ticks)
    }

    /// Move to probing from `next_index` (after a rejection or a lost snapshot).
    pub fn become_probe(&mut self, next_index: Index) {
        self.state = ReplicationState::Probe { paused: false };
        self.next_index = next_index.max(self.match_index + 1);
        self.inflight.clear();
    }

    pub fn become_replicate(&mut self) {
        self.state = ReplicationState::Replicate;
        self.next_index = self.match_index + 1;
        self.inflight.clear();
    }

    pub fn become_snapshot(&mut self, last: LogId) {
        self.state = ReplicationState::Snapshot { last, offset: 0 };
        self.inflight.clear();
    }

    /// May an Append be sent now?
    pub fn can_send(&self, inflight_appends_max: usize) -> bool {
        match self.state {
            ReplicationState::Probe { paused } => !paused,
            ReplicationState::Replicate => self.inflight.len() < inflight_appends_max,
            ReplicationState::Snapshot { .. } => false,
        }
    }

    /// An Append ending at `last_index` was sent.
    pub fn sent(&mut self, last_index: Index) {
        match &mut self.state {
            ReplicationState::Probe { paused } => *paused = true,
            ReplicationState::Replicate => {
                self.next_index = last_index + 1;
                self.inflight.push_back(last_index);
            }
            ReplicationState::Snapshot { .. } => {}
        }
    }

    /// The follower holds the leader's log up to `index`. Returns true if that is news.
    pub fn matched(&mut self, index: Index) -> bool {
        while self.inflight.front().is_some_and(|&i| i <= index) {
            self.inflight.pop_front();
        }
        if index <= self.match_index {
            return false;
        }
        self.match_index = index;
        self.next_index = self.next_index.max(index + 1);
        true
    }
}
