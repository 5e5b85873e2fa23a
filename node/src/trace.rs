//! The cluster trace: every event of every node of a [`LocalCluster`](crate::cluster::LocalCluster)
//! (through the driver's [`Observer`]) and every fault the cluster injected, in one bounded
//! record ([`TraceRecorder`]), taken out as a [`ClusterTrace`] that reads and writes the JSON
//! format of `docs/trace-json.md`, and that [`crate::replay`] turns into an animated page.
//!
//! Bounded: the recorder keeps the latest [`ClusterTrace::events_max`] of the frequent events
//! (messages sent, received and dropped; entries appended, committed and applied); older ones
//! are dropped and counted in [`ClusterTrace::dropped`], which the replay shows. The rare
//! events that tell the story of a run (starts and stops, roles, votes, snapshots,
//! membership, faults) are kept apart, up to a quarter of `events_max` more (the oldest
//! dropped and counted beyond that), so that a long run's trace still shows every election and
//! fault of the run, with the messages of its last part.
//!
//! The recorder also follows who leads (the leader of the highest term among running nodes)
//! and tells subscribers ([`TraceRecorder::leader_changes`]) each time that changes, from the
//! events themselves: no polling.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use raftkv_raft::driver::observer::{EventKind, Observer, RoleName, TraceEvent};
use raftkv_raft::{NodeId, Term};
use serde::{Deserialize, Serialize};

/// The `format` field of a trace's JSON.
pub const TRACE_FORMAT: &str = "raftkv-trace";
/// The `version` of the JSON format this code writes and reads.
pub const TRACE_VERSION: u32 = 1;
/// A cluster keeps at most this many events unless configured otherwise (about 200 bytes
/// each in memory).
pub const TRACE_EVENTS_MAX_DEFAULT: usize = 200_000;
/// No trace holds more events than this (a bound on what a file may make us load).
pub const TRACE_EVENTS_MAX_LIMIT: usize = 5_000_000;
/// A trace file is at most this large.
pub const TRACE_JSON_BYTES_MAX: usize = 1 << 30;
/// Leader changes not yet taken by a subscriber; beyond it, new ones are not queued.
pub const LEADER_CHANGES_QUEUED_MAX: usize = 1024;

/// A recorded trace: what [`TraceRecorder::snapshot`] returns, and the JSON document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClusterTrace {
    /// Always [`TRACE_FORMAT`].
    pub format: String,
    /// [`TRACE_VERSION`].
    pub version: u32,
    /// Raft ids of every node the cluster started (node index `i` is `nodes[i]`).
    pub nodes: Vec<NodeId>,
    /// The recorder's bound on frequent events (messages, appends, commits, applies); rare
    /// ones (roles, votes, faults, ...) may add up to a quarter of it.
    pub events_max: usize,
    /// How many of the oldest events were dropped to stay within the bounds.
    pub dropped: u64,
    /// Events in the order they were recorded (`t_us` from the cluster's start).
    pub events: Vec<TraceEvent>,
}

/// Why a trace could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TraceError {
    #[error("not a raftkv trace: {0}")]
    Json(#[from] serde_json::Error),
    #[error("not a raftkv trace: its format is {found:?}, not {TRACE_FORMAT:?}")]
    Format { found: String },
    #[error(
        "trace format version {found} is not supported (this raftkv reads version {TRACE_VERSION})"
    )]
    Version { found: u32 },
    #[error("the trace is {bytes} bytes, over the bound of {TRACE_JSON_BYTES_MAX}")]
    TooLarge { bytes: usize },
    #[error("the trace holds {events} events, over the bound of {TRACE_EVENTS_MAX_LIMIT}")]
    TooManyEvents { events: usize },
    #[error("I/O error on the trace file: {0}")]
    Io(#[from] std::io::Error),
}

impl ClusterTrace {
    /// The JSON document (compact).
    pub fn to_json(&self) -> String {
        // Serializing plain data to a String cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads a trace from its JSON, checking its format, version and bounds.
    pub fn from_json(json: &str) -> Result<Self, TraceError> {
        if json.len() > TRACE_JSON_BYTES_MAX {
            return Err(TraceError::TooLarge { bytes: json.len() });
        }
        let trace: ClusterTrace = serde_json::from_str(json)?;
        if trace.format != TRACE_FORMAT {
            return Err(TraceError::Format {
                found: trace.format,
            });
        }
        if trace.version != TRACE_VERSION {
            return Err(TraceError::Version {
                found: trace.version,
            });
        }
        if trace.events.len() > TRACE_EVENTS_MAX_LIMIT {
            return Err(TraceError::TooManyEvents {
                events: trace.events.len(),
            });
        }
        Ok(trace)
    }

    /// Writes the JSON document to `path`.
    pub fn save(&self, path: &std::path::Path) -> Result<(), TraceError> {
        std::fs::write(path, self.to_json())?;
        Ok(())
    }

    /// Reads a trace written by [`ClusterTrace::save`].
    pub fn load(path: &std::path::Path) -> Result<Self, TraceError> {
        let len = std::fs::metadata(path)?.len();
        if len > TRACE_JSON_BYTES_MAX as u64 {
            return Err(TraceError::TooLarge {
                bytes: len as usize,
            });
        }
        Self::from_json(&std::fs::read_to_string(path)?)
    }
}

/// The cluster's leader changed: `leader` (a Raft id; `None`: no running node leads) in `term`
/// (the leader's, or the highest term seen while none leads).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaderChange {
    pub leader: Option<NodeId>,
    pub term: Term,
}

/// Records events into one bounded trace. Cheap to clone: every clone records into the same.
#[derive(Clone)]
pub struct TraceRecorder {
    inner: Arc<Mutex<Recording>>,
}

struct Recording {
    /// The runtime's clock at the cluster's start, in µs: event times are made relative to it.
    origin_us: u64,
    /// Frequent events, and rare ones, each with its sequence number (their merged order).
    events: VecDeque<(u64, TraceEvent)>,
    rare: VecDeque<(u64, TraceEvent)>,
    events_max: usize,
    next_seq: u64,
    dropped: u64,
    nodes: BTreeSet<NodeId>,
    /// Directed links the cluster blocks: a message sent on one is recorded as dropped.
    blocked: BTreeSet<(NodeId, NodeId)>,
    /// Role and term of every running node, as last reported.
    roles: BTreeMap<NodeId, (RoleName, Term)>,
    /// Event loops started and not yet stopped, per node: a crashed node's loop may report
    /// its stop after the restarted one has started.
    live: BTreeMap<NodeId, i64>,
    /// The leader as last told to subscribers.
    leader: Option<NodeId>,
    leader_term: Term,
    watchers: Vec<mpsc::SyncSender<LeaderChange>>,
}

fn lock(m: &Mutex<Recording>) -> MutexGuard<'_, Recording> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl TraceRecorder {
    /// A recorder keeping at most `events_max` events (at least 1, at most
    /// [`TRACE_EVENTS_MAX_LIMIT`]); `origin` is the runtime's clock now.
    pub fn new(origin: Duration, events_max: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Recording {
                origin_us: origin.as_micros() as u64,
                events: VecDeque::new(),
                rare: VecDeque::new(),
                events_max: events_max.clamp(1, TRACE_EVENTS_MAX_LIMIT),
                next_seq: 0,
                dropped: 0,
                nodes: BTreeSet::new(),
                blocked: BTreeSet::new(),
                roles: BTreeMap::new(),
                live: BTreeMap::new(),
                leader: None,
                leader_term: 0,
                watchers: Vec::new(),
            })),
        }
    }

    /// Records an event of the cluster itself about `node` at `now` (the runtime's clock).
    pub fn record(&self, now: Duration, node: NodeId, kind: EventKind) {
        self.observe(TraceEvent {
            t_us: now.as_micros() as u64,
            node,
            kind,
        });
    }

    /// Node `id` is part of the cluster (named in the trace's `nodes`).
    pub fn add_node(&self, id: NodeId) {
        lock(&self.inner).nodes.insert(id);
    }

    /// The directed links now blocked (messages sent on them are recorded as dropped).
    pub fn set_blocked(&self, blocked: BTreeSet<(NodeId, NodeId)>) {
        lock(&self.inner).blocked = blocked;
    }

    /// A copy of everything recorded so far.
    pub fn snapshot(&self) -> ClusterTrace {
        let r = lock(&self.inner);
        ClusterTrace {
            format: TRACE_FORMAT.to_string(),
            version: TRACE_VERSION,
            nodes: r.nodes.iter().copied().collect(),
            events_max: r.events_max,
            dropped: r.dropped,
            events: merge(&r.events, &r.rare),
        }
    }

    /// A new subscription to leader changes; the first message is the leader now. Changes
    /// beyond [`LEADER_CHANGES_QUEUED_MAX`] not yet taken are not queued. The channel closes
    /// once [`TraceRecorder::close_subscriptions`] is called.
    pub fn leader_changes(&self) -> mpsc::Receiver<LeaderChange> {
        let (tx, rx) = mpsc::sync_channel(LEADER_CHANGES_QUEUED_MAX);
        let mut r = lock(&self.inner);
        let _ = tx.try_send(LeaderChange {
            leader: r.leader,
            term: r.leader_term,
        });
        r.watchers.push(tx);
        rx
    }

    /// Ends every subscription (their receivers see the channel closed).
    pub fn close_subscriptions(&self) {
        lock(&self.inner).watchers.clear();
    }
}

impl Recording {
    fn push(&mut self, event: TraceEvent) {
        let frequent = matches!(
            event.kind,
            EventKind::Send { .. }
                | EventKind::Recv { .. }
                | EventKind::Drop { .. }
                | EventKind::Append { .. }
                | EventKind::Commit { .. }
                | EventKind::Apply { .. }
        );
        let (queue, max) = match frequent {
            true => (&mut self.events, self.events_max),
            false => (&mut self.rare, (self.events_max / 4).max(1)),
        };
        if queue.len() >= max {
            queue.pop_front();
            self.dropped += 1;
        }
        queue.push_back((self.next_seq, event));
        self.next_seq += 1;
    }

    /// Follows roles; tells subscribers when the leader of the highest term changes.
    fn follow_leader(&mut self, event: &TraceEvent) {
        match &event.kind {
            EventKind::Role { role, term, .. } => {
                self.roles.insert(event.node, (*role, *term));
            }
            EventKind::Start { .. } => {
                *self.live.entry(event.node).or_default() += 1;
                return;
            }
            EventKind::Stop { .. } => {
                let live = self.live.entry(event.node).or_default();
                *live -= 1;
                if *live > 0 {
                    return; // the loop of an earlier run: the node runs again
                }
                self.roles.remove(&event.node);
            }
            EventKind::Crash | EventKind::NodeRemoved => {
                self.roles.remove(&event.node);
            }
            _ => return,
        }
        let leader = self
            .roles
            .iter()
            .filter(|(_, (role, _))| *role == RoleName::Leader)
            .max_by_key(|(_, (_, term))| *term)
            .map(|(id, (_, term))| (*id, *term));
        let top = self.roles.values().map(|(_, t)| *t).max().unwrap_or(0);
        let (now, term) = match leader {
            Some((id, t)) => (Some(id), t),
            None => (None, top.max(self.leader_term)),
        };
        let changed = now != self.leader || (now.is_some() && term != self.leader_term);
        if !changed {
            return;
        }
        self.leader = now;
        self.leader_term = term;
        let change = LeaderChange { leader: now, term };
        // A subscriber that stopped listening is forgotten; a full queue skips this change.
        self.watchers
            .retain(|w| !matches!(w.try_send(change), Err(mpsc::TrySendError::Disconnected(_))));
    }
}

/// The events of both queues in the order they were recorded.
fn merge(a: &VecDeque<(u64, TraceEvent)>, b: &VecDeque<(u64, TraceEvent)>) -> Vec<TraceEvent> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (a.iter().peekable(), b.iter().peekable());
    loop {
        let next = match (i.peek(), j.peek()) {
            (Some(x), Some(y)) if x.0 < y.0 => i.next(),
            (Some(_), Some(_)) => j.next(),
            (Some(_), None) => i.next(),
            (None, Some(_)) => j.next(),
            (None, None) => break,
        };
        if let Some((_, e)) = next {
            out.push(e.clone());
        }
    }
    out
}

impl Observer for TraceRecorder {
    fn observe(&self, mut event: TraceEvent) {
        let mut r = lock(&self.inner);
        event.t_us = event.t_us.saturating_sub(r.origin_us);
        r.follow_leader(&event);
        let dropped = match &event.kind {
            EventKind::Send { to, msg } if r.blocked.contains(&(event.node, *to)) => {
                Some(TraceEvent {
                    t_us: event.t_us,
                    node: event.node,
                    kind: EventKind::Drop {
                        to: *to,
                        msg: msg.clone(),
                        reason: "partition".to_string(),
                    },
                })
            }
            _ => None,
        };
        r.push(event);
        if let Some(d) = dropped {
            r.push(d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftkv_raft::driver::observer::{MsgInfo, MsgKind};

    fn role(node: NodeId, role: RoleName, term: Term) -> TraceEvent {
        TraceEvent {
            t_us: 0,
            node,
            kind: EventKind::Role {
                role,
                term,
                leader: None,
                election_timeout_ms: 300,
            },
        }
    }

    #[test]
    fn trace_keeps_the_latest_events_and_counts_the_dropped() {
        let r = TraceRecorder::new(Duration::ZERO, 3);
        for i in 0..5 {
            r.record(Duration::from_micros(i), 1, EventKind::Commit { index: i });
        }
        let t = r.snapshot();
        assert_eq!(t.events.len(), 3);
        assert_eq!(t.dropped, 2);
        assert_eq!(t.events[0].t_us, 2);
    }

    #[test]
    fn rare_events_outlive_the_frequent_ones_and_keep_their_order() {
        let r = TraceRecorder::new(Duration::ZERO, 8);
        r.record(Duration::from_micros(1), 1, EventKind::Crash);
        for i in 0..20 {
            r.record(
                Duration::from_micros(2 + i),
                1,
                EventKind::Commit { index: i },
            );
        }
        r.record(Duration::from_micros(30), 0, EventKind::Heal);
        r.record(
            Duration::from_micros(31),
            1,
            EventKind::Commit { index: 99 },
        );
        let t = r.snapshot();
        assert_eq!(t.events.first().map(|e| &e.kind), Some(&EventKind::Crash));
        assert_eq!(t.events.len(), 10, "8 frequent, 2 rare");
        assert_eq!(t.dropped, 13);
        assert!(t.events.windows(2).all(|w| w[0].t_us <= w[1].t_us));
        // Rare events are bounded too: a quarter of events_max.
        for i in 0..5 {
            r.record(Duration::from_micros(40 + i), 0, EventKind::Heal);
        }
        let t = r.snapshot();
        assert_eq!(
            t.events
                .iter()
                .filter(|e| e.kind == EventKind::Heal)
                .count(),
            2
        );
        assert!(!t.events.iter().any(|e| e.kind == EventKind::Crash));
    }

    #[test]
    fn trace_json_round_trips_and_bad_json_is_a_typed_error() {
        let r = TraceRecorder::new(Duration::from_micros(100), 10);
        r.add_node(1);
        r.observe(role(1, RoleName::Leader, 2));
        let msg = MsgInfo {
            kind: MsgKind::Heartbeat,
            term: 2,
            index: None,
            log_term: None,
            entries: None,
            commit: Some(4),
            ok: None,
            match_index: None,
            offset: None,
            bytes: None,
        };
        r.record(
            Duration::from_micros(150),
            1,
            EventKind::Send { to: 2, msg },
        );
        let t = r.snapshot();
        let json = t.to_json();
        assert!(json.contains(r#""type":"send""#), "{json}");
        assert!(json.contains(r#""kind":"heartbeat""#), "{json}");
        assert_eq!(ClusterTrace::from_json(&json).unwrap(), t);
        assert_eq!(t.events[1].t_us, 50, "relative to the origin");
        assert!(matches!(
            ClusterTrace::from_json("{\"format\": 1}"),
            Err(TraceError::Json(_))
        ));
        let other = json.replace(TRACE_FORMAT, "something-else");
        assert!(matches!(
            ClusterTrace::from_json(&other),
            Err(TraceError::Format { .. })
        ));
        let v2 = json.replace("\"version\":1", "\"version\":2");
        assert!(matches!(
            ClusterTrace::from_json(&v2),
            Err(TraceError::Version { found: 2 })
        ));
    }

    #[test]
    fn a_message_on_a_blocked_link_is_recorded_as_dropped() {
        let r = TraceRecorder::new(Duration::ZERO, 10);
        r.set_blocked(BTreeSet::from([(1, 2)]));
        let msg = MsgInfo::of(&raftkv_raft::Message {
            from: 1,
            to: 2,
            term: 1,
            body: raftkv_raft::Body::TimeoutNow,
        });
        r.record(
            Duration::ZERO,
            1,
            EventKind::Send {
                to: 2,
                msg: msg.clone(),
            },
        );
        r.record(Duration::ZERO, 1, EventKind::Send { to: 3, msg });
        let kinds: Vec<_> = r.snapshot().events.into_iter().map(|e| e.kind).collect();
        assert!(
            matches!(&kinds[1], EventKind::Drop { to: 2, reason, .. } if reason == "partition")
        );
        assert_eq!(kinds.len(), 3);
    }

    #[test]
    fn leader_changes_follow_role_events_and_crashes() {
        let r = TraceRecorder::new(Duration::ZERO, 100);
        let rx = r.leader_changes();
        assert_eq!(
            rx.try_recv().unwrap(),
            LeaderChange {
                leader: None,
                term: 0
            }
        );
        r.observe(role(1, RoleName::Candidate, 1));
        r.observe(role(2, RoleName::Follower, 1));
        assert!(rx.try_recv().is_err(), "no leader yet: nothing to tell");
        r.observe(role(1, RoleName::Leader, 1));
        assert_eq!(
            rx.try_recv().unwrap(),
            LeaderChange {
                leader: Some(1),
                term: 1
            }
        );
        r.record(Duration::ZERO, 1, EventKind::Crash);
        assert_eq!(
            rx.try_recv().unwrap(),
            LeaderChange {
                leader: None,
                term: 1
            }
        );
        r.observe(role(2, RoleName::Leader, 2));
        assert_eq!(
            rx.try_recv().unwrap(),
            LeaderChange {
                leader: Some(2),
                term: 2
            }
        );
        r.close_subscriptions();
        assert!(matches!(rx.recv(), Err(mpsc::RecvError)));
    }

    #[test]
    fn a_late_stop_of_a_crashed_run_does_not_unseat_the_restarted_leader() {
        let r = TraceRecorder::new(Duration::ZERO, 100);
        let start = EventKind::Start {
            term: 1,
            commit: 0,
            last_index: 0,
            last_term: 0,
            snapshot_index: 0,
            election_timeout_ms_min: 300,
            election_timeout_ms_max: 600,
            heartbeat_ms: 100,
        };
        r.record(Duration::ZERO, 1, start.clone());
        r.record(Duration::ZERO, 1, EventKind::Crash);
        r.record(Duration::ZERO, 1, EventKind::Restart);
        r.record(Duration::ZERO, 1, start);
        r.observe(role(1, RoleName::Leader, 2));
        let rx = r.leader_changes();
        assert_eq!(rx.try_recv().unwrap().leader, Some(1));
        r.record(
            Duration::ZERO,
            1,
            EventKind::Stop {
                reason: "shutdown".into(),
            },
        );
        assert!(rx.try_recv().is_err(), "still leads");
    }
}
