//! Log replication (Raft §5.3), commitment (§5.4.2), snapshots (§7), CheckQuorum (thesis §6.2)
//! and ReadIndex (thesis §6.4).

use crate::membership::Membership;
use crate::message::{AppendResult, Body, ConflictHint};
use crate::progress::{Progress, ReplicationState};
use crate::quorum::VoteResult;
use crate::raft::{IncomingSnapshot, Raft, RoleState};
use crate::ready::ReceivedChunk;
use crate::types::{Entry, Index, LogId, NodeId, Payload, Snapshot, Term};
use bytes::Bytes;

/// One InstallSnapshot chunk, as received.
pub(crate) struct SnapshotChunk<'a> {
    pub last: LogId,
    pub membership: &'a Membership,
    pub offset: u64,
    pub data: Bytes,
    pub done: bool,
    pub len: u64,
    pub crc32c: u32,
}

impl Raft {
    // ---- leader: time ----

    pub(crate) fn tick_leader(&mut self) {
        let heartbeat_ticks = self.config.heartbeat_interval_ticks;
        let quorum_ticks = self.config.election_timeout_ticks_min;
        let check_quorum = self.config.check_quorum;
        let id = self.config.id;
        let membership = self.log.membership();
        let RoleState::Leader(l) = &mut self.role else {
            return;
        };
        l.ticks += 1;
        l.heartbeat_elapsed += 1;
        l.check_quorum_elapsed += 1;
        if l.check_quorum_elapsed >= quorum_ticks {
            l.check_quorum_elapsed = 0;
            /// thesis §6.2: a leader that has not heard from a quorum within an election
            /// timeout steps down, so that clients can find the real leader. Raft §6, thesis
            /// §4.2.1: a quorum of the configuration in effect; learners do not count.
            let active = membership.vote_result(|v| {
                Some(v == id || l.progress.get(&v).is_some_and(|p| p.recent_active))
            });
            for p in l.progress.values_mut() {
                p.recent_active = false;
            }
            if check_quorum && active != VoteResult::Won {
                return self.become_follower(self.term, None);
            }
        }
        /// thesis §3.10: a transfer that has not completed within an election timeout is
        /// abandoned, and the leader takes proposals again.
        if let Some(t) = &mut l.transfer {
            t.elapsed_ticks += 1;
            if t.elapsed_ticks >= quorum_ticks {
                l.transfer = None;
            }
        }
        if l.heartbeat_elapsed >= heartbeat_ticks {
            l.heartbeat_elapsed = 0;
            let mut resend_snapshot = Vec::new();
            for (id, p) in l.progress.iter_mut() {
                match p.state {
                    /// Probe: one Append per heartbeat interval while the follower is silent.
                    ReplicationState::Probe { .. } => {
                        p.state = ReplicationState::Probe { paused: false }
                    }
                    /// A stalled pipeline (Appends lost): resend from the last match.
                    ReplicationState::Replicate if !p.recent_ack && !p.inflight.is_empty() => {
                        p.become_probe(p.match_index + 1)
                    }
                    /// Snapshot transfer is stop-and-wait: resend an unanswered chunk.
                    ReplicationState::Snapshot { .. } if !p.recent_ack => resend_snapshot.push(*id),
                    _ => {}
                }
                p.recent_ack = false;
            }
            l.replicate_pending = true;
            self.lease_round();
            self.broadcast_heartbeat();
            for to in resend_snapshot {
                self.send_snapshot_chunk(to);
            }
            self.maybe_send_timeout_now();
            self.maybe_auto_promote();
        }
    }

    /// Raft §5.2: a leader sends periodic heartbeats to maintain its authority. Each carries
    /// the current read sequence (thesis §6.4) and a commit index the follower is known to hold.
    pub(crate) fn broadcast_heartbeat(&mut self) {
        let commit = self.commit;
        let RoleState::Leader(l) = &mut self.role else {
            return;
        };
        l.read_round_pending = false;
        let read_seq = l.read_seq;
        l.lease.sent(read_seq, l.ticks);
        let beats: Vec<(NodeId, Index)> = l
            .progress
            .iter()
            .map(|(id, p)| (*id, p.match_index.min(commit)))
            .collect();
        for (to, commit) in beats {
            self.send(to, Body::Heartbeat { commit, read_seq });
        }
    }

    /// Sends what the next `Ready` owes: new entries to every follower, a read round.
    pub(crate) fn flush_leader_sends(&mut self) {
        let RoleState::Leader(l) = &mut self.role else {
            return;
        };
        let replicate = std::mem::take(&mut l.replicate_pending);
        let read_round = l.read_round_pending;
        if replicate {
            for to in l.progress.keys().copied().collect::<Vec<_>>() {
                self.send_appends(to);
            }
        }
        if read_round {
            self.broadcast_heartbeat();
        }
    }

    // ---- leader: sending ----

    /// Sends as many Appends to `to` as its replication state allows.
    pub(crate) fn send_appends(&mut self, to: NodeId) {
        let mut allow_empty = true;
        while self.send_append(to, allow_empty) {
            allow_empty = false;
        }
    }

    /// Raft §5.3: one Append of the entries from `next_index`, with the entry before them as
    /// base. Returns true if something was sent.
    fn send_append(&mut self, to: NodeId, allow_empty: bool) -> bool {
        let (entries_max, bytes_max, inflight_max, partial_inflight_max) = (
            self.config.append_entries_max,
            self.config.append_bytes_max,
            self.config.inflight_appends_max,
            self.config.partial_appends_inflight_max,
        );
        let to_send = self.snapshot_to_send().map(|s| s.last);
        let RoleState::Leader(l) = &mut self.role else {
            return false;
        };
        let Some(pr) = l.progress.get_mut(&to) else {
            return false;
        };
        if !pr.can_send(inflight_max) {
            return false;
        }
        let base_index = pr.next_index - 1;
        let Some(base_term) = self.log.term_at(base_index) else {
            /// Raft §7: the entries the follower needs were compacted: send the snapshot.
            match to_send {
                Some(last) => pr.become_snapshot(last),
                /// Issue 20: a state machine that keeps its own state is read on demand.
                None if self.snapshot_on_demand => pr.become_snapshot(self.log.snapshot()),
                None => return false,
            }
            self.send_snapshot_chunk(to);
            return false;
        };
        // Counted first, cloned only once the Append is sure to go: a response to a busy
        // leader finds a partial batch that must wait far more often than one it sends.
        let n = self.log.slice_len(pr.next_index, entries_max, bytes_max);
        let is_probe = matches!(pr.state, ReplicationState::Probe { .. });
        if n == 0 && !(allow_empty && is_probe) {
            return false;
        }
        /// thesis §10.2.2: batch while pipelining. With `partial_inflight_max` Appends
        /// unanswered, the next goes only if it is full; a partial batch waits for an answer
        /// and gathers what arrives meanwhile, so a busy follower gets large writes, not many
        /// small ones.
        let full = n >= entries_max || pr.next_index + n as Index <= self.log.last_index();
        if pr.inflight.len() >= partial_inflight_max && !full {
            return false;
        }
        let entries = self.log.slice(pr.next_index, n, usize::MAX);
        pr.sent(base_index + n as Index);
        let body = Body::Append {
            base: LogId::new(base_index, base_term),
            entries,
            commit: self.commit,
        };
        self.send(to, body);
        true
    }

    /// Raft §7: the next chunk of the snapshot to a follower in snapshot state.
    pub(crate) fn send_snapshot_chunk(&mut self, to: NodeId) {
        let chunk_max = self.config.snapshot_chunk_bytes_max as u64;
        let Some(snapshot) = self.snapshot_to_send().cloned() else {
            /// Issue 20: no data held: ask the driver to read the state machine (again, on
            /// every resend, until it has).
            if self.snapshot_on_demand {
                self.out.snapshot_request = true;
            }
            return;
        };
        let RoleState::Leader(l) = &mut self.role else {
            return;
        };
        let Some(pr) = l.progress.get_mut(&to) else {
            return;
        };
        let ReplicationState::Snapshot { last, offset } = pr.state else {
            return;
        };
        if last != snapshot.last {
            // A newer snapshot replaced the one being sent: start over with it.
            pr.become_snapshot(snapshot.last);
            return self.send_snapshot_chunk(to);
        }
        let len = snapshot.data.len() as u64;
        /// Raft §7 (issue 21 #7): every chunk carries the whole snapshot's length and CRC32C,
        /// so the follower can check what it assembled before installing it.
        let crc32c = match self.snapshot_crc32c {
            Some((id, n, crc)) if id == last && n == len => crc,
            _ => {
                let crc = crc32c::crc32c(&snapshot.data);
                self.snapshot_crc32c = Some((last, len, crc));
                crc
            }
        };
        let start = offset.min(len);
        let end = (start + chunk_max).min(len);
        let data = snapshot.data.slice(start as usize..end as usize);
        let body = Body::InstallSnapshot {
            last,
            membership: Box::new(snapshot.membership),
            offset: start,
            data,
            done: end == len,
            len,
            crc32c,
        };
        self.send(to, body);
    }

    // ---- leader: answers ----

    /// The leader's progress for `from`, marked as heard from (thesis §6.2: CheckQuorum);
    /// `None` (and the message counted as ignored) if this node does not lead or `from` is
    /// not a follower.
    fn heard_from(&mut self, from: NodeId) -> Option<&mut Progress> {
        let (progress, now_tick) = match &mut self.role {
            RoleState::Leader(l) => (l.progress.get_mut(&from), l.ticks),
            _ => (None, 0),
        };
        match progress {
            Some(pr) => {
                pr.recent_active = true;
                pr.heard_tick = Some(now_tick);
                Some(pr)
            }
            None => {
                self.stats.ignored_messages += 1;
                None
            }
        }
    }

    pub(crate) fn handle_append_response(
        &mut self,
        from: NodeId,
        base_index: Index,
        result: AppendResult,
    ) {
        let last_index = self.log.last_index();
        /// 6.5840 fast backup: skip the follower's whole conflicting term at once — to after
        /// our last entry of XTerm if we have that term, else to XIndex; to XLen + 1 if the
        /// follower's log is too short.
        let backup_to = match result {
            AppendResult::Rejected { hint } => match hint.term {
                None => hint.last_index + 1,
                Some(xterm) => match self.log.last_index_of_term(xterm) {
                    Some(i) => i + 1,
                    None => hint.first_index_of_term,
                },
            },
            AppendResult::Accepted { .. } => 0,
        };
        let Some(pr) = self.heard_from(from) else {
            return;
        };
        pr.recent_ack = true;
        match result {
            AppendResult::Accepted { match_index } => {
                if match_index > last_index {
                    return self.violation();
                }
                let news = pr.matched(match_index);
                match pr.state {
                    ReplicationState::Probe { .. } => pr.become_replicate(),
                    ReplicationState::Snapshot { last, .. } if match_index >= last.index => {
                        pr.become_replicate()
                    }
                    _ => {}
                }
                if news {
                    self.maybe_commit();
                    self.maybe_send_timeout_now();
                }
            }
            AppendResult::Rejected { hint } => {
                let stale = match pr.state {
                    // We never sent a base at or past next_index: such a reply is forged or stale.
                    ReplicationState::Replicate => {
                        base_index < pr.match_index || base_index >= pr.next_index
                    }
                    ReplicationState::Probe { .. } => base_index + 1 != pr.next_index,
                    ReplicationState::Snapshot { .. } => true,
                };
                if stale || base_index == 0 || hint.last_index >= base_index && hint.term.is_none()
                {
                    return self.ignore();
                }
                pr.become_probe(backup_to.min(base_index).min(last_index + 1));
            }
        }
        self.send_appends(from);
    }

    pub(crate) fn handle_heartbeat_response(&mut self, from: NodeId, read_seq: u64) {
        let last_index = self.log.last_index();
        let leader_read_seq = match &self.role {
            RoleState::Leader(l) => l.read_seq,
            _ => 0,
        };
        let Some(pr) = self.heard_from(from) else {
            return;
        };
        if read_seq > leader_read_seq {
            return self.violation();
        }
        pr.read_seq = pr.read_seq.max(read_seq);
        let behind = pr.match_index < last_index;
        self.confirm_reads();
        if behind {
            self.send_appends(from);
        }
    }

    pub(crate) fn handle_snapshot_response(&mut self, from: NodeId, last: LogId, next_offset: u64) {
        let len = self.snapshot_to_send().map_or(0, |s| s.data.len() as u64);
        let Some(pr) = self.heard_from(from) else {
            return;
        };
        pr.recent_ack = true;
        match pr.state {
            /// Raft §7: the follower says which offset it expects next, and the leader goes
            /// on from there, back as well as forward: an answer sent before the follower
            /// crashed can arrive after its restart and move the leader past what it holds
            /// (chaos seed 35116). An answer for the chunk already being sent changes nothing
            /// (a duplicate; a lost chunk is resent on the heartbeat).
            ReplicationState::Snapshot {
                last: sending,
                offset,
            } if sending == last && next_offset <= len && next_offset != offset => {
                pr.state = ReplicationState::Snapshot {
                    last,
                    offset: next_offset,
                };
                self.send_snapshot_chunk(from);
            }
            _ => self.ignore(),
        }
    }

    /// Raft §5.3/§5.4.2: commit the highest index a majority holds durably — but only if that
    /// entry is from the current term; earlier entries then commit with it. Raft §6: a
    /// majority of each half of a joint configuration; thesis §4.2.1: learners do not count;
    /// thesis §4.2.2: a leader outside C_new does not count itself in it.
    pub(crate) fn maybe_commit(&mut self) {
        let own = self.log.persisted();
        let id = self.config.id;
        let RoleState::Leader(l) = &mut self.role else {
            return;
        };
        let index = self.log.membership().committed_index(|v| {
            if v == id {
                own
            } else {
                l.progress.get(&v).map_or(0, |p| p.match_index)
            }
        });
        if index <= self.commit
            || index > self.log.last_index()
            || self.log.term_at(index) != Some(self.term)
        {
            return;
        }
        let released: usize = self
            .log
            .range(self.commit.max(l.term_start - 1) + 1, index)
            .map(|e| e.payload.len_bytes())
            .sum();
        l.uncommitted_bytes = l.uncommitted_bytes.saturating_sub(released);
        let first_commit_in_term = self.commit < l.term_start;
        self.commit = index;
        // First what the commit means for the configuration (a removed leader steps down
        // here, failing the reads that wait), then the reads.
        self.after_commit();
        if first_commit_in_term {
            self.reads_after_first_commit();
        }
    }

    // ---- follower ----

    /// Raft §5.3: the AppendEntries receiver.
    pub(crate) fn handle_append(
        &mut self,
        from: NodeId,
        term: Term,
        base: LogId,
        entries: &[Entry],
        commit: Index,
    ) {
        // Well-formedness: consecutive indexes after base, terms in order and not past `term`.
        let mut prev = base;
        for e in entries {
            if e.index != prev.index + 1 || e.term < prev.term || e.term > term {
                return self.violation();
            }
            if let Payload::Membership(m) = &e.payload {
                if m.validate().is_err() {
                    return self.violation();
                }
            }
            prev = e.id();
        }
        let respond = |this: &mut Self, result| {
            this.send(
                from,
                Body::AppendResponse {
                    base_index: base.index,
                    result,
                },
            )
        };
        /// Entries up to our commit index match the leader's (Leader Completeness): report
        /// them as matched instead of re-checking a base we may have compacted.
        if base.index < self.commit {
            let match_index = self.commit;
            return respond(self, AppendResult::Accepted { match_index });
        }
        /// Raft §5.3: "reply false if log doesn't contain an entry at prevLogIndex whose term
        /// matches prevLogTerm", with the 6.5840 conflict hint.
        if !self.log.has(base) {
            let last_index = self.log.last_index();
            let term = self
                .log
                .term_at(base.index)
                .filter(|_| base.index <= last_index);
            let first_index_of_term = term.map_or(0, |t| self.log.first_index_of_term(t));
            let hint = ConflictHint {
                term,
                first_index_of_term,
                last_index,
            };
            return respond(self, AppendResult::Rejected { hint });
        }
        /// Raft §5.3: "if an existing entry conflicts with a new one (same index but different
        /// terms), delete the existing entry and all that follow it; append any new entries not
        /// already in the log".
        for e in entries {
            match self.log.term_at(e.index) {
                Some(t) if t == e.term => continue,
                // Never a committed entry: `base.index >= commit` was checked above.
                Some(_) => {
                    self.log.truncate_from(e.index);
                    self.log.push(e.clone());
                }
                None => self.log.push(e.clone()),
            }
        }
        let last_new = base.index + entries.len() as Index;
        /// Raft §5.3: "if leaderCommit > commitIndex, set commitIndex = min(leaderCommit, index
        /// of last new entry)".
        if commit > self.commit {
            self.commit = self.commit.max(commit.min(last_new));
        }
        respond(
            self,
            AppendResult::Accepted {
                match_index: last_new,
            },
        );
    }

    /// A heartbeat: the leader's commit index is one we are known to hold.
    pub(crate) fn handle_heartbeat(&mut self, from: NodeId, commit: Index, read_seq: u64) {
        let commit = commit.min(self.log.last_index());
        if commit > self.commit {
            self.commit = commit;
        }
        self.send(from, Body::HeartbeatResponse { read_seq });
    }

    /// Raft §7: the InstallSnapshot receiver, one chunk at a time.
    pub(crate) fn handle_snapshot_chunk(&mut self, from: NodeId, term: Term, chunk: SnapshotChunk) {
        let SnapshotChunk {
            last,
            membership,
            offset,
            data,
            done,
            len,
            crc32c,
        } = chunk;
        if last.term > term
            || len > self.config.snapshot_bytes_max
            || offset.saturating_add(data.len() as u64) > len
            || (done && offset + data.len() as u64 != len)
            || membership.validate().is_err()
        {
            return self.violation();
        }
        /// Raft §7: a snapshot we already cover adds nothing; report our commit as matched.
        if last.index <= self.commit {
            self.incoming_snapshot = None;
            let match_index = self.commit;
            let result = AppendResult::Accepted { match_index };
            let base_index = last.index;
            return self.send(from, Body::AppendResponse { base_index, result });
        }
        /// Raft §7 (issue 21 #7): a buffer of another leader, term, snapshot, length or
        /// checksum is dropped, never spliced into: the transfer restarts at offset 0.
        let same_transfer = |inc: &IncomingSnapshot| {
            (inc.leader, inc.term, inc.last, inc.len, inc.crc32c) == (from, term, last, len, crc32c)
        };
        if !self.incoming_snapshot.as_ref().is_some_and(same_transfer) {
            self.incoming_snapshot = None;
        }
        let expected = self
            .incoming_snapshot
            .as_ref()
            .map_or(0, |inc| inc.received);
        /// Raft §7: chunks are written in order at their offset; a stale or duplicate chunk is
        /// ignored and answered with the offset we expect next.
        if offset != expected {
            self.ignore();
            let next_offset = expected;
            return self.send(from, Body::SnapshotResponse { last, next_offset });
        }
        let inc = self.incoming_snapshot.get_or_insert(IncomingSnapshot {
            leader: from,
            term,
            last,
            len,
            crc32c,
            received: 0,
            crc32c_received: 0,
        });
        // Issue 20: the core keeps no snapshot data: each chunk goes to the driver, which
        // writes it to a spool (on disk for a state larger than memory) before it sends the
        // answer below; the CRC32C is kept as the chunks pass.
        inc.received += data.len() as u64;
        inc.crc32c_received = crc32c::crc32c_append(inc.crc32c_received, &data);
        let (received, crc32c_received) = (inc.received, inc.crc32c_received);
        self.out
            .snapshot_chunks
            .push(ReceivedChunk { last, offset, data });
        if !done {
            let next_offset = received;
            return self.send(from, Body::SnapshotResponse { last, next_offset });
        }
        self.incoming_snapshot = None;
        /// Raft §7 (issue 21 #7): validate before installing (the install is what gets
        /// persisted): a snapshot whose length or CRC32C differs from the leader's is refused
        /// and the transfer restarts at offset 0.
        if received != len || crc32c_received != crc32c {
            self.violation();
            let next_offset = 0;
            return self.send(from, Body::SnapshotResponse { last, next_offset });
        }
        /// thesis §4.1: the snapshot's configuration is the one in effect at its last entry
        /// (one that records none falls back to the initial voters, as on restart).
        let membership = match membership.voters().is_empty() {
            false => membership.clone(),
            true => Membership::from_voters(self.config.voters.iter().copied()),
        };
        // Issue 20: the data is the chunks handed out; the driver fills it in
        // (`SnapshotReceiver`) before it persists or restores the snapshot.
        let snapshot = Snapshot {
            last,
            data: Bytes::new(),
            membership: membership.clone(),
        };
        self.log.install_snapshot(last, membership);
        self.commit = last.index;
        self.applied = last.index;
        // Issue 20: the driver hands the data back (`Raft::snapshot_received`) to a node that
        // keeps a copy; one whose state machine keeps its own state keeps the metadata only.
        let kept = snapshot.clone();
        self.out.snapshot = Some(snapshot);
        self.snapshot = Some(kept);
        let result = AppendResult::Accepted {
            match_index: last.index,
        };
        let base_index = last.index;
        self.send(from, Body::AppendResponse { base_index, result });
    }
}
