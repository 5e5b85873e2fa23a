//! Roles and elections: Raft §5.2 (leader election), §5.4.1 (election restriction),
//! thesis §9.6 (PreVote) and §4.2.3 (ignoring disruptive candidates).

use crate::message::{Body, Message};
use crate::quorum::VoteResult;
use crate::raft::{Leader, Raft, RoleState};
use crate::types::{Entry, LogId, NodeId, Payload, Term};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

impl Raft {
    /// Raft §5.1: on learning of a higher term (or a leader of this term), revert to follower.
    pub(crate) fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        self.fail_leader_reads();
        /// Raft §7 (issue 21 #7): a snapshot being received from another leader or term is
        /// dropped (its chunks must never splice into the new leader's).
        let same_source = term <= self.term && (leader.is_none() || leader == self.leader);
        if !same_source {
            self.incoming_snapshot = None;
        }
        if term > self.term {
            self.term = term;
            self.voted_for = None;
        }
        self.role = RoleState::Follower;
        self.leader = leader;
        self.reset_election_timer();
    }

    /// thesis §9.6: ask for pre-votes for `term + 1` without adopting it, so that a node that
    /// cannot win (e.g. a partitioned one) never disrupts the cluster with a higher term.
    pub(crate) fn become_pre_candidate(&mut self) {
        self.role = RoleState::PreCandidate {
            granted: BTreeSet::from([self.config.id]),
            rejected: BTreeSet::new(),
        };
        self.leader = None;
        self.reset_election_timer();
        let last_log = self.log.last_id();
        let term = self.term + 1;
        for to in self.other_voters() {
            self.send_msg(Message {
                from: self.config.id,
                to,
                term,
                body: Body::PreVote { last_log },
            });
        }
        self.tally_votes();
    }

    /// Raft §5.2: increment the term, vote for self, and request votes from every other voter
    /// (Raft §6: of both halves of a joint configuration). `transfer` marks an election the
    /// leader asked for (thesis §3.10).
    pub(crate) fn become_candidate(&mut self, transfer: bool) {
        /// Raft §7 (issue 21 #7): a new term drops a snapshot being received.
        let _dropped = self.incoming_snapshot.take();
        self.term += 1;
        self.voted_for = Some(self.config.id);
        self.role = RoleState::Candidate {
            granted: BTreeSet::from([self.config.id]),
            rejected: BTreeSet::new(),
            transfer,
        };
        self.leader = None;
        self.reset_election_timer();
        let last_log = self.log.last_id();
        for to in self.other_voters() {
            self.send(to, Body::Vote { last_log, transfer });
        }
        self.tally_votes();
    }

    /// thesis §3.10 and Raft §5.1 ("servers retry RPCs if they do not receive a response in a
    /// timely manner"): a candidate that campaigns because the leader asked it to sends its
    /// vote request again, at each heartbeat interval, to the voters that have not answered.
    /// The old leader stopped leading for it, so one lost request or answer would otherwise
    /// fail the transfer and leave the cluster to an election timeout that the old leader may
    /// win (issue 16's transfer bug). A voter answers a repeated request of the same term as
    /// it answered the first (Raft §5.2: it voted for this candidate, or for another).
    pub(crate) fn resend_transfer_votes(&mut self) {
        let every = self.config.heartbeat_interval_ticks.max(1);
        if self.election_elapsed % every != 0 {
            return;
        }
        let RoleState::Candidate {
            granted,
            rejected,
            transfer: true,
        } = &self.role
        else {
            return;
        };
        let silent: Vec<NodeId> = self
            .other_voters()
            .into_iter()
            .filter(|v| !granted.contains(v) && !rejected.contains(v))
            .collect();
        let last_log = self.log.last_id();
        for to in silent {
            self.send(
                to,
                Body::Vote {
                    last_log,
                    transfer: true,
                },
            );
        }
    }

    /// Raft §5.2: a candidate with votes from a majority becomes leader.
    pub(crate) fn become_leader(&mut self) {
        let next = self.log.last_index() + 1;
        let peer_answered = match &self.role {
            RoleState::Candidate {
                granted, rejected, ..
            } => granted.len() > 1 || !rejected.is_empty(),
            _ => false,
        };
        self.role = RoleState::Leader(Box::new(Leader {
            progress: BTreeMap::new(),
            ticks: 0,
            transfer: None,
            term_durable: peer_answered,
            heartbeat_elapsed: 0,
            check_quorum_elapsed: 0,
            term_start: next,
            uncommitted_bytes: 0,
            read_seq: 0,
            read_round_pending: false,
            reads_before_commit: Vec::new(),
            reads: VecDeque::new(),
            lease: Default::default(),
            replicate_pending: true,
        }));
        self.leader = Some(self.config.id);
        self.sync_progress();
        /// Raft §8 / thesis §6.4: a new leader appends a no-op so that it commits an entry of its
        /// own term, which commits all earlier entries and fixes its commit index.
        self.log.push(Entry {
            term: self.term,
            index: next,
            payload: Payload::Noop,
        });
        self.maybe_commit();
        self.after_commit();
    }

    /// Counts the votes of the current (pre-)election and acts on a decision. Raft §6: the
    /// configuration in effect decides (both halves of a joint one); thesis §4.2.1: votes of
    /// learners and of nodes outside it do not count.
    fn tally_votes(&mut self) {
        let (granted, rejected, pre) = match &self.role {
            RoleState::PreCandidate { granted, rejected } => (granted, rejected, true),
            RoleState::Candidate {
                granted, rejected, ..
            } => (granted, rejected, false),
            _ => return,
        };
        let result = self.log.membership().vote_result(|id| {
            if granted.contains(&id) {
                Some(true)
            } else if rejected.contains(&id) {
                Some(false)
            } else {
                None
            }
        });
        match (result, pre) {
            (VoteResult::Won, true) => self.become_candidate(false),
            (VoteResult::Won, false) => self.become_leader(),
            /// Raft §5.2: a candidate that lost waits for a new election timeout as a follower.
            (VoteResult::Lost, _) => self.become_follower(self.term, None),
            (VoteResult::Pending, _) => {}
        }
    }

    /// thesis §4.2.3: while a follower hears from a current leader (within the minimum election
    /// timeout), it ignores requests to vote; with CheckQuorum a leader is always in its lease.
    /// thesis §6.4.1: a node restarted with leases on keeps that promise for a minimum
    /// election timeout, not knowing whom it heard from before.
    pub(crate) fn in_lease(&self) -> bool {
        self.config.check_quorum
            && (self.boot_promise_ticks > 0
                || match self.role {
                    RoleState::Leader(_) => true,
                    _ => {
                        self.leader.is_some()
                            && self.election_elapsed < self.config.election_timeout_ticks_min
                    }
                })
    }

    /// Raft §5.4.1: a voter grants only to a candidate whose log is at least as up to date.
    fn log_ok(&self, candidate_last: LogId) -> bool {
        candidate_last >= self.log.last_id()
    }

    /// thesis §9.6: grant a pre-vote for a higher term to an up-to-date candidate, without
    /// changing any state of our own.
    pub(crate) fn handle_pre_vote(&mut self, msg: &Message, last_log: LogId) {
        /// thesis §9.6: refuse while hearing from a leader within the minimum election timeout
        /// (with or without CheckQuorum), so a node that merely lost contact cannot win.
        let heard_from_leader = match self.role {
            RoleState::Leader(_) => true,
            _ => {
                self.leader.is_some()
                    && self.election_elapsed < self.config.election_timeout_ticks_min
            }
        };
        let granted = msg.term > self.term && !heard_from_leader && self.log_ok(last_log);
        let term = if granted { msg.term } else { self.term };
        self.send_msg(Message {
            from: self.config.id,
            to: msg.from,
            term,
            body: Body::PreVoteResponse { granted },
        });
    }

    /// Raft §5.2: vote for at most one candidate per term, first come first served; granting
    /// a vote resets the election timer (Figure 2).
    pub(crate) fn handle_vote(&mut self, msg: &Message, last_log: LogId) {
        let can_vote =
            self.voted_for == Some(msg.from) || (self.voted_for.is_none() && self.leader.is_none());
        let granted = can_vote && self.log_ok(last_log);
        if granted {
            self.voted_for = Some(msg.from);
            self.reset_election_timer();
        }
        self.send(msg.from, Body::VoteResponse { granted });
    }

    /// Records a (pre-)vote response for the election in progress.
    pub(crate) fn handle_vote_response(&mut self, msg: &Message, vote: bool, pre: bool) {
        let term = self.term;
        let (g, r) = match &mut self.role {
            /// thesis §9.6: a grant carries the proposed term (term + 1); a rejection carries the
            /// voter's own term, which is ours when it has not moved on: count it too, so a
            /// pre-candidate that a majority refuses stops instead of waiting out its timeout.
            RoleState::PreCandidate { granted, rejected }
                if pre && (msg.term == term + 1 || (!vote && msg.term == term)) =>
            {
                (granted, rejected)
            }
            RoleState::Candidate {
                granted, rejected, ..
            } if !pre && msg.term == term => (granted, rejected),
            _ => return self.ignore(),
        };
        if vote {
            g.insert(msg.from);
        } else {
            r.insert(msg.from);
        }
        self.tally_votes();
    }
}
