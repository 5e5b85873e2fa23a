//! Linearizable reads (thesis §6.4): ReadIndex at the leader (a heartbeat round, or a lease,
//! thesis §6.4.1) and reads a follower serves itself with a read index asked of the leader.

use crate::message::Body;
use crate::quorum::VoteResult;
use crate::raft::{BusyReason, Error, PendingRead, Raft, RoleState};
use crate::types::{Index, NodeId, ReadState, Term};
use std::collections::BTreeMap;

/// Reads a follower forwarded to the leader (thesis §6.4), waiting for their read index.
#[derive(Clone, Debug, Default)]
pub(crate) struct ForwardedReads {
    /// The leader asked, and its term: an answer from any other is ignored.
    leader: NodeId,
    term: Term,
    /// Read id → the follower tick it was sent at.
    by_id: BTreeMap<u64, u64>,
    ticks: u64,
}

impl Raft {
    /// thesis §6.4: a linearizable read. Once confirmed, `ReadState { id, index }` comes out of a
    /// `Ready`; the read may be served once `index` is applied. `id` is the caller's. A follower
    /// with `follower_reads` asks the leader for the read index (a failure comes out as an
    /// aborted read); otherwise only the leader takes reads.
    pub fn read_index(&mut self, id: u64) -> Result<(), Error> {
        if matches!(self.role, RoleState::Leader(_)) {
            return self.leader_read(id, None);
        }
        let leader_hint = self.leader;
        let Some(leader) = self.leader.filter(|_| self.config.follower_reads) else {
            return Err(Error::NotLeader { leader_hint });
        };
        let fw = &mut self.forwarded;
        if fw.leader != leader || fw.term != self.term {
            let stale = std::mem::take(&mut fw.by_id);
            self.out.aborted_reads.extend(stale.into_keys());
            let fw = &mut self.forwarded;
            fw.leader = leader;
            fw.term = self.term;
        }
        let fw = &mut self.forwarded;
        if fw.by_id.len() >= self.config.pending_reads_max {
            return Err(Error::Busy(BusyReason::PendingReads));
        }
        fw.by_id.insert(id, fw.ticks);
        self.send(leader, Body::ReadIndex { id });
        Ok(())
    }

    /// thesis §6.4 at the leader, for itself (`origin` None) or for a follower.
    fn leader_read(&mut self, id: u64, origin: Option<NodeId>) -> Result<(), Error> {
        let leader_hint = self.leader;
        let me = self.config.id;
        let alone = self.log.membership().vote_result(|v| Some(v == me)) == VoteResult::Won;
        let pending_max = self.config.pending_reads_max;
        let commit = self.commit;
        let term_committed = self.log.term_at(commit) == Some(self.term);
        /// thesis §6.4.1: under a lease the leader skips the heartbeat round.
        let leased = term_committed && self.lease_valid();
        let RoleState::Leader(leader) = &mut self.role else {
            return Err(Error::NotLeader { leader_hint });
        };
        if leader.reads.len() + leader.reads_before_commit.len() >= pending_max {
            return Err(Error::Busy(BusyReason::PendingReads));
        }
        if !term_committed {
            /// thesis §6.4: the leader must have committed an entry in its term before its
            /// commit index is known to be the latest.
            leader.reads_before_commit.push((id, origin));
        } else if alone || leased {
            self.confirm_read(id, commit, origin);
        } else {
            if !leader.read_round_pending {
                leader.read_seq += 1;
                leader.read_round_pending = true;
            }
            let seq = leader.read_seq;
            leader.reads.push_back(PendingRead {
                id,
                index: commit,
                seq,
                origin,
            });
        }
        self.debug_check();
        Ok(())
    }

    /// A read is confirmed at `index`: served here, or its index sent to the follower that
    /// asked.
    fn confirm_read(&mut self, id: u64, index: Index, origin: Option<NodeId>) {
        match origin {
            None => self.confirmed_reads.push_back(ReadState { id, index }),
            Some(to) => self.send(
                to,
                Body::ReadIndexResponse {
                    id,
                    index: Some(index),
                },
            ),
        }
    }

    /// thesis §6.4: reads that waited for the term's first commit take the commit index now.
    pub(crate) fn reads_after_first_commit(&mut self) {
        let RoleState::Leader(l) = &mut self.role else {
            return;
        };
        for (id, origin) in std::mem::take(&mut l.reads_before_commit) {
            // Re-enter through the normal path: the term has a commit now.
            if self.leader_read(id, origin).is_err() {
                self.fail_read(id, origin);
            }
        }
    }

    /// A read that cannot be confirmed: aborted here, or refused to the follower that asked.
    fn fail_read(&mut self, id: u64, origin: Option<NodeId>) {
        match origin {
            None => self.out.aborted_reads.push(id),
            Some(to) => self.send(to, Body::ReadIndexResponse { id, index: None }),
        }
    }

    /// thesis §6.4: unconfirmed reads fail when leadership is lost; confirmed ones stay valid
    /// (their index was the latest commit when a quorum confirmed it).
    pub(crate) fn fail_leader_reads(&mut self) {
        let RoleState::Leader(l) = &mut self.role else {
            return;
        };
        let failed: Vec<(u64, Option<NodeId>)> = l
            .reads_before_commit
            .drain(..)
            .chain(l.reads.drain(..).map(|r| (r.id, r.origin)))
            .collect();
        for (id, origin) in failed {
            self.fail_read(id, origin);
        }
    }

    /// The highest read sequence a quorum acknowledged. Raft §6, thesis §4.2.1: a quorum of
    /// the configuration in effect (of each half of a joint one), learners not counted.
    pub(crate) fn quorum_read_seq(&self) -> u64 {
        let id = self.config.id;
        let RoleState::Leader(l) = &self.role else {
            return 0;
        };
        self.log.membership().committed_index(|v| {
            if v == id {
                l.read_seq
            } else {
                l.progress.get(&v).map_or(0, |p| p.read_seq)
            }
        })
    }

    /// thesis §6.4: reads whose heartbeat round a quorum acknowledged are confirmed.
    pub(crate) fn confirm_reads(&mut self) {
        let quorum_seq = self.quorum_read_seq();
        let RoleState::Leader(l) = &mut self.role else {
            return;
        };
        let mut confirmed = Vec::new();
        while l.reads.front().is_some_and(|r| r.seq <= quorum_seq) {
            confirmed.extend(l.reads.pop_front());
        }
        for r in confirmed {
            self.confirm_read(r.id, r.index, r.origin);
        }
    }

    /// thesis §6.4 ("followers can serve read-only queries"): a follower asks for a read index.
    /// The leader confirms its leadership as for its own reads and answers its commit index;
    /// anyone else refuses at once, so the follower can retry elsewhere.
    pub(crate) fn handle_read_index(&mut self, from: NodeId, id: u64) {
        if self.leader_read(id, Some(from)).is_err() {
            self.fail_read(id, Some(from));
        }
    }

    /// The leader's answer to a forwarded read: confirmed at `index` (served once applied) or
    /// refused (aborted: the caller retries). Only the leader asked, in the term asked, answers.
    pub(crate) fn handle_read_index_response(
        &mut self,
        from: NodeId,
        term: Term,
        id: u64,
        index: Option<Index>,
    ) {
        let fw = &mut self.forwarded;
        if fw.leader != from || fw.term != term || fw.by_id.remove(&id).is_none() {
            return self.ignore();
        }
        match index {
            Some(index) => self.confirmed_reads.push_back(ReadState { id, index }),
            None => self.out.aborted_reads.push(id),
        }
    }

    /// Time passes for forwarded reads: they fail once the leader asked is no longer this
    /// node's leader in the same term, or has not answered within an election timeout.
    pub(crate) fn tick_forwarded_reads(&mut self) {
        let timeout = self.config.election_timeout_ticks_max;
        let same_leader = self.leader == Some(self.forwarded.leader)
            && self.term == self.forwarded.term
            && !matches!(self.role, RoleState::Leader(_));
        let fw = &mut self.forwarded;
        fw.ticks += 1;
        if fw.by_id.is_empty() {
            return;
        }
        let now = fw.ticks;
        let expired: Vec<u64> = fw
            .by_id
            .iter()
            .filter(|&(_, &sent)| !same_leader || sent + timeout <= now)
            .map(|(&id, _)| id)
            .collect();
        for id in &expired {
            fw.by_id.remove(id);
        }
        self.out.aborted_reads.extend(expired);
    }
}
