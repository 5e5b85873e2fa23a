//! Messages between Raft nodes, and the one trace notation used by logs, goldens and panics:
//! `n1@3 → n2 Append base=4@2 [5@3] commit=4`.

use crate::membership::Membership;
use crate::types::{Entry, Index, LogId, NodeId, Term};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A message from one node to another. `term` is the sender's term, except for a pre-vote and a
/// granted pre-vote response, which carry the term the sender would campaign in (thesis §9.6).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Message {
    pub from: NodeId,
    pub to: NodeId,
    pub term: Term,
    pub body: Body,
}

/// Why an append was refused, so that the leader can skip a whole term at a time (the 6.5840
/// "fast backup" hint `XTerm/XIndex/XLen`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ConflictHint {
    /// XTerm: the follower's term at the rejected base index, or `None` if its log is shorter.
    pub term: Option<Term>,
    /// XIndex: the first index the follower holds with `term` (meaningless when `term` is None).
    pub first_index_of_term: Index,
    /// XLen: the follower's last log index.
    pub last_index: Index,
}

/// The message kinds. Plain names: a request and its response.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Body {
    /// thesis §9.6: would you vote for me in `term` (not yet adopted by the sender)?
    PreVote {
        last_log: LogId,
    },
    PreVoteResponse {
        granted: bool,
    },
    /// Raft §5.2: RequestVote. `transfer` marks the election a leader asked for (thesis
    /// §3.10): voters answer it even while they hear from that leader (§4.2.3's lease).
    Vote {
        last_log: LogId,
        transfer: bool,
    },
    VoteResponse {
        granted: bool,
    },
    /// Raft §5.3: AppendEntries, `entries` following `base` (prevLogIndex/prevLogTerm).
    Append {
        base: LogId,
        entries: Vec<Entry>,
        commit: Index,
    },
    /// The follower's answer to an Append with base `base_index`.
    AppendResponse {
        base_index: Index,
        result: AppendResult,
    },
    /// A leader's heartbeat: asserts leadership, carries a safe commit index and the leader's
    /// read sequence (thesis §6.4: a quorum of responses confirms pending reads).
    Heartbeat {
        commit: Index,
        read_seq: u64,
    },
    HeartbeatResponse {
        read_seq: u64,
    },
    /// Raft §7: one chunk of the leader's snapshot covering the log up to `last`, with the
    /// configuration in effect at `last` (thesis §4.1).
    ///
    /// The configuration is boxed: held inline it made every [`Message`] (and every event the
    /// driver moves per request) 216 bytes, for a message sent once per snapshot chunk.
    InstallSnapshot {
        last: LogId,
        membership: Box<Membership>,
        offset: u64,
        data: Bytes,
        done: bool,
        /// Raft §7 (issue 21 #7): the whole snapshot's length in bytes, checked by the
        /// follower before it installs the snapshot.
        len: u64,
        /// Raft §7 (issue 21 #7): CRC32C of the whole snapshot, checked by the follower
        /// before it installs (and so persists) the snapshot.
        crc32c: u32,
    },
    /// The byte offset the follower expects next for snapshot `last` (0 to restart).
    SnapshotResponse {
        last: LogId,
        next_offset: u64,
    },
    /// thesis §3.10: the leader hands leadership over: start an election now, without a
    /// pre-vote.
    TimeoutNow,
    /// thesis §6.4: a follower asks the leader for a read index for its read `id`.
    ReadIndex {
        id: u64,
    },
    /// The leader's answer: the read index (its commit index once its leadership is confirmed,
    /// thesis §6.4), or `None` if it cannot serve (not the leader, busy): retry.
    ReadIndexResponse {
        id: u64,
        index: Option<Index>,
    },
}

/// The outcome of an Append at the follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AppendResult {
    /// The follower's log matches the leader's up to `match_index` (and that prefix is durable).
    Accepted { match_index: Index },
    /// The follower's log does not contain `base`.
    Rejected { hint: ConflictHint },
}

/// No term, index or byte offset on the wire may reach this (2^62): it leaves room for `+ 1`
/// arithmetic everywhere without overflow. A real cluster never comes near it.
pub const WIRE_VALUE_MAX: u64 = 1 << 62;

impl Message {
    /// True if every number in the message is below [`WIRE_VALUE_MAX`]. The core refuses other
    /// messages before looking at them.
    pub fn is_well_formed(&self) -> bool {
        let ok = |v: u64| v < WIRE_VALUE_MAX;
        let id_ok = |id: &LogId| ok(id.index) && ok(id.term);
        ok(self.term)
            && match &self.body {
                Body::PreVote { last_log } | Body::Vote { last_log, .. } => id_ok(last_log),
                Body::PreVoteResponse { .. } | Body::VoteResponse { .. } => true,
                Body::Append {
                    base,
                    entries,
                    commit,
                } => id_ok(base) && ok(*commit) && entries.iter().all(|e| id_ok(&e.id())),
                Body::AppendResponse { base_index, result } => {
                    ok(*base_index)
                        && match result {
                            AppendResult::Accepted { match_index } => ok(*match_index),
                            AppendResult::Rejected { hint } => {
                                hint.term.is_none_or(ok)
                                    && ok(hint.first_index_of_term)
                                    && ok(hint.last_index)
                            }
                        }
                }
                Body::Heartbeat { commit, read_seq } => ok(*commit) && ok(*read_seq),
                Body::HeartbeatResponse { read_seq } => ok(*read_seq),
                Body::InstallSnapshot { last, offset, .. } => id_ok(last) && ok(*offset),
                Body::SnapshotResponse { last, next_offset } => id_ok(last) && ok(*next_offset),
                Body::TimeoutNow | Body::ReadIndex { .. } => true,
                Body::ReadIndexResponse { index, .. } => index.is_none_or(ok),
            }
    }
}

impl Body {
    /// True for messages only a leader sends (used for the §10.2.1 "send before persist" split).
    pub fn is_from_leader(&self) -> bool {
        matches!(
            self,
            Body::Append { .. }
                | Body::Heartbeat { .. }
                | Body::InstallSnapshot { .. }
                | Body::TimeoutNow
        )
    }

    /// A short name for counters and traces.
    pub fn kind(&self) -> &'static str {
        match self {
            Body::PreVote { .. } => "PreVote",
            Body::PreVoteResponse { .. } => "PreVoteResponse",
            Body::Vote { .. } => "Vote",
            Body::VoteResponse { .. } => "VoteResponse",
            Body::Append { .. } => "Append",
            Body::AppendResponse { .. } => "AppendResponse",
            Body::Heartbeat { .. } => "Heartbeat",
            Body::HeartbeatResponse { .. } => "HeartbeatResponse",
            Body::InstallSnapshot { .. } => "InstallSnapshot",
            Body::SnapshotResponse { .. } => "SnapshotResponse",
            Body::TimeoutNow => "TimeoutNow",
            Body::ReadIndex { .. } => "ReadIndex",
            Body::ReadIndexResponse { .. } => "ReadIndexResponse",
        }
    }

    /// True for the answers to requests (the 6.5840 lab drops "replies" separately).
    pub fn is_response(&self) -> bool {
        matches!(
            self,
            Body::PreVoteResponse { .. }
                | Body::VoteResponse { .. }
                | Body::AppendResponse { .. }
                | Body::HeartbeatResponse { .. }
                | Body::SnapshotResponse { .. }
                | Body::ReadIndexResponse { .. }
        )
    }
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "n{}@{} → n{} {}",
            self.from, self.term, self.to, self.body
        )
    }
}

impl fmt::Display for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Body::PreVote { last_log } => write!(f, "PreVote last={last_log}"),
            Body::PreVoteResponse { granted } => write!(f, "PreVoteResponse granted={granted}"),
            Body::Vote { last_log, transfer } => {
                write!(f, "Vote last={last_log}")?;
                if *transfer {
                    f.write_str(" transfer")?;
                }
                Ok(())
            }
            Body::VoteResponse { granted } => write!(f, "VoteResponse granted={granted}"),
            Body::Append {
                base,
                entries,
                commit,
            } => {
                write!(f, "Append base={base} [")?;
                for (i, e) in entries.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" ")?;
                    }
                    write!(f, "{}", e.id())?;
                }
                write!(f, "] commit={commit}")
            }
            Body::AppendResponse { base_index, result } => match result {
                AppendResult::Accepted { match_index } => {
                    write!(f, "AppendResponse base={base_index} match={match_index}")
                }
                AppendResult::Rejected { hint } => {
                    write!(
                        f,
                        "AppendResponse base={base_index} reject last={}",
                        hint.last_index
                    )?;
                    if let Some(term) = hint.term {
                        write!(f, " xterm={term} xindex={}", hint.first_index_of_term)?;
                    }
                    Ok(())
                }
            },
            Body::Heartbeat { commit, read_seq } => {
                write!(f, "Heartbeat commit={commit} read_seq={read_seq}")
            }
            Body::HeartbeatResponse { read_seq } => {
                write!(f, "HeartbeatResponse read_seq={read_seq}")
            }
            Body::InstallSnapshot {
                last,
                offset,
                data,
                done,
                ..
            } => write!(
                f,
                "InstallSnapshot last={last} offset={offset} len={} done={done}",
                data.len()
            ),
            Body::SnapshotResponse { last, next_offset } => {
                write!(f, "SnapshotResponse last={last} next_offset={next_offset}")
            }
            Body::TimeoutNow => f.write_str("TimeoutNow"),
            Body::ReadIndex { id } => write!(f, "ReadIndex id={id}"),
            Body::ReadIndexResponse { id, index } => match index {
                Some(index) => write!(f, "ReadIndexResponse id={id} index={index}"),
                None => write!(f, "ReadIndexResponse id={id} refused"),
            },
        }
    }
}
