//! [`Raft::step`]: one inbound message. Term rules first (Raft §5.1, thesis §9.6, §4.2.3),
//! then the message kind's own handler.

use crate::message::{Body, Message};
use crate::raft::{Raft, RoleState};
use crate::replication::SnapshotChunk;

impl Raft {
    /// Feeds one message from the network. Input from outside never panics the node: a
    /// message to another node, a stale term, indexes out of range, a duplicate or a
    /// reordered reply is ignored (counted in [`crate::Stats`]) or answered.
    ///
    /// thesis §4.1: a node processes requests without consulting its configuration: a new
    /// member's vote request can arrive before the configuration that adds it, and a joining
    /// node hears from a leader it has no configuration for yet. Only answers need a sender
    /// the leader tracks.
    pub fn step(&mut self, msg: Message) {
        self.step_inner(msg);
        if cfg!(debug_assertions) {
            self.check_invariants();
        }
    }

    fn step_inner(&mut self, msg: Message) {
        if msg.to != self.config.id || msg.from == self.config.id || msg.from == 0 {
            return self.ignore();
        }
        if !msg.is_well_formed() {
            return self.violation();
        }
        let is_vote_request = matches!(
            msg.body,
            Body::PreVote { .. }
                | Body::Vote {
                    transfer: false,
                    ..
                }
        );
        if msg.term > self.term {
            /// thesis §4.2.3: a node that hears from a current leader ignores vote requests, so
            /// that a removed or partitioned server cannot depose a working leader. thesis
            /// §3.10: except in the election that leader asked for.
            if is_vote_request && self.in_lease() {
                return self.ignore();
            }
            match &msg.body {
                /// thesis §9.6: a pre-vote (and a granted answer to one) carries a term the
                /// sender has not adopted: it must not change ours.
                Body::PreVote { .. } | Body::PreVoteResponse { granted: true } => {}
                /// Raft §5.1: a message from a leader of a higher term makes us its follower.
                body if body.is_from_leader() => self.become_follower(msg.term, Some(msg.from)),
                /// Raft §5.1: "if RPC request or response contains term T > currentTerm: set
                /// currentTerm = T, convert to follower".
                _ => self.become_follower(msg.term, None),
            }
        } else if msg.term < self.term {
            return self.step_stale(msg);
        }
        match msg.body {
            Body::PreVote { last_log } => self.handle_pre_vote(&msg, last_log),
            Body::Vote { last_log, .. } => self.handle_vote(&msg, last_log),
            Body::PreVoteResponse { granted } => self.handle_vote_response(&msg, granted, true),
            Body::VoteResponse { granted } => self.handle_vote_response(&msg, granted, false),
            Body::Append {
                base,
                ref entries,
                commit,
            } => {
                if self.accept_leader(&msg) {
                    self.handle_append(msg.from, msg.term, base, entries, commit);
                }
            }
            Body::Heartbeat { commit, read_seq } => {
                if self.accept_leader(&msg) {
                    self.handle_heartbeat(msg.from, commit, read_seq);
                }
            }
            Body::InstallSnapshot {
                last,
                ref membership,
                offset,
                ref data,
                done,
                len,
                crc32c,
            } => {
                if self.accept_leader(&msg) {
                    let chunk = SnapshotChunk {
                        last,
                        membership,
                        offset,
                        data: data.clone(),
                        done,
                        len,
                        crc32c,
                    };
                    self.handle_snapshot_chunk(msg.from, msg.term, chunk);
                }
            }
            Body::TimeoutNow => {
                if self.accept_leader(&msg) {
                    self.handle_timeout_now(msg.from);
                }
            }
            Body::AppendResponse { base_index, result } => {
                self.handle_append_response(msg.from, base_index, result)
            }
            Body::HeartbeatResponse { read_seq } => {
                self.handle_heartbeat_response(msg.from, read_seq)
            }
            Body::SnapshotResponse { last, next_offset } => {
                self.handle_snapshot_response(msg.from, last, next_offset)
            }
            Body::ReadIndex { id } => self.handle_read_index(msg.from, id),
            Body::ReadIndexResponse { id, index } => {
                self.handle_read_index_response(msg.from, msg.term, id, index)
            }
        }
    }

    /// A message from an older term.
    fn step_stale(&mut self, msg: Message) {
        match msg.body {
            /// Raft §5.1: tell a stale leader our term so that it steps down (with PreVote and
            /// CheckQuorum this is what lets a deposed leader learn of the new term).
            body if body.is_from_leader() => {
                self.send(msg.from, Body::HeartbeatResponse { read_seq: 0 })
            }
            /// Raft §5.2 / thesis §9.6: reject a (pre-)vote for an old term, with our term.
            Body::PreVote { .. } => self.send(msg.from, Body::PreVoteResponse { granted: false }),
            Body::Vote { .. } => self.send(msg.from, Body::VoteResponse { granted: false }),
            _ => self.ignore(),
        }
    }

    /// A message from the leader of the current term: adopt it as leader. Returns false (and
    /// counts a violation) if this node is itself the leader of this term (Election Safety
    /// would be broken by the sender).
    fn accept_leader(&mut self, msg: &Message) -> bool {
        match self.role {
            RoleState::Leader(_) => {
                self.violation();
                false
            }
            /// Raft §5.2: a candidate that hears from a leader of its term returns to follower.
            RoleState::PreCandidate { .. } | RoleState::Candidate { .. } => {
                self.become_follower(msg.term, Some(msg.from));
                true
            }
            RoleState::Follower => {
                self.leader = Some(msg.from);
                self.election_elapsed = 0;
                true
            }
        }
    }
}
