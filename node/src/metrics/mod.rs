//! Prometheus metrics of one node, kept from its driver's events (the same [`Observer`] the
//! cluster trace uses) with the `prometheus-client` crate, and written in the Prometheus text
//! format by [`NodeMetrics::encode`] (`raftkv serve --metrics-addr`, `Node.metrics()`,
//! `LocalCluster.metrics(i)`).
//!
//! Gauges: `raftkv_term`, `raftkv_role` (0 follower, 1 pre-candidate, 2 candidate, 3 leader),
//! `raftkv_leader_id` (0: none known), `raftkv_commit_index`, `raftkv_applied_index`,
//! `raftkv_last_index`, `raftkv_snapshot_index`. Counters: `raftkv_leader_changes_total`,
//! `raftkv_elections_total` (times this node became a candidate), `raftkv_entries_appended_total`,
//! `raftkv_entries_applied_total`, `raftkv_messages_sent_total{kind}`,
//! `raftkv_messages_received_total{kind}`, `raftkv_payload_bytes_sent_total{peer}` (entries
//! and snapshot chunks), `raftkv_votes_total{granted}`, `raftkv_snapshots_total{how}`,
//! `raftkv_restarts_total` (event loop starts after the first).
//!
//! Histograms: `raftkv_storage_write_seconds` and `raftkv_storage_write_ops` (the time and the
//! number of operations of each durable write: entries appended and fsynced together, group
//! commit; [`MeteredStorage`]), `raftkv_client_request_seconds{op}` and the counter
//! `raftkv_client_requests_total{op,result}` (every client request the node answered, by
//! kind and by how it was answered; [`MeteredHandler`]).
//!
//! Every label takes values from a closed set (message kinds, `true`/`false`, `taken`/
//! `installed`) or from the cluster's node ids, so the number of series is bounded.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use raftkv_raft::driver::observer::{
    EventKind, MsgKind, Observer, RoleName, SnapshotHow, TraceEvent,
};

mod client;
mod storage;

pub use client::MeteredHandler;
pub use storage::MeteredStorage;

type Labels = Vec<(&'static str, String)>;

/// Client request latency buckets: 100 µs to ~3.3 s, doubling.
fn request_seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(100e-6, 2.0, 16))
}

/// The metrics of one node. Cheap to clone: every clone counts into the same.
#[derive(Clone)]
pub struct NodeMetrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    term: Gauge,
    role: Gauge,
    leader_id: Gauge,
    commit_index: Gauge,
    applied_index: Gauge,
    last_index: Gauge,
    snapshot_index: Gauge,
    leader_changes: Counter,
    elections: Counter,
    entries_appended: Counter,
    entries_applied: Counter,
    restarts: Counter,
    messages_sent: Family<Labels, Counter>,
    messages_received: Family<Labels, Counter>,
    payload_bytes_sent: Family<Labels, Counter>,
    votes: Family<Labels, Counter>,
    snapshots: Family<Labels, Counter>,
    storage_write_seconds: Histogram,
    storage_write_ops: Histogram,
    client_requests: Family<Labels, Counter>,
    client_request_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    /// The leader last reported (u64::MAX: none yet), to count changes.
    last_leader: AtomicU64,
    starts: AtomicU64,
}

fn kind_name(k: MsgKind) -> &'static str {
    match k {
        MsgKind::PreVote => "pre_vote",
        MsgKind::PreVoteResponse => "pre_vote_response",
        MsgKind::Vote => "vote",
        MsgKind::VoteResponse => "vote_response",
        MsgKind::Append => "append",
        MsgKind::AppendResponse => "append_response",
        MsgKind::Heartbeat => "heartbeat",
        MsgKind::HeartbeatResponse => "heartbeat_response",
        MsgKind::InstallSnapshot => "install_snapshot",
        MsgKind::SnapshotResponse => "snapshot_response",
        MsgKind::TimeoutNow => "timeout_now",
        MsgKind::ReadIndex => "read_index",
        MsgKind::ReadIndexResponse => "read_index_response",
    }
}

impl Default for NodeMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl NodeMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("raftkv");
        let gauge = |r: &mut Registry, name: &str, help: &str| {
            let g = Gauge::default();
            r.register(name, help, g.clone());
            g
        };
        let counter = |r: &mut Registry, name: &str, help: &str| {
            let c = Counter::default();
            r.register(name, help, c.clone());
            c
        };
        let family = |r: &mut Registry, name: &str, help: &str| {
            let f = Family::<Labels, Counter>::default();
            r.register(name, help, f.clone());
            f
        };
        let r = &mut registry;
        let inner = Inner {
            term: gauge(r, "term", "The node's current term"),
            role: gauge(
                r,
                "role",
                "0 follower, 1 pre-candidate, 2 candidate, 3 leader",
            ),
            leader_id: gauge(
                r,
                "leader_id",
                "The Raft id of the leader this node knows (0: none)",
            ),
            commit_index: gauge(r, "commit_index", "The highest log index known committed"),
            applied_index: gauge(r, "applied_index", "The highest log index applied"),
            last_index: gauge(r, "last_index", "The last log index handed to storage"),
            snapshot_index: gauge(r, "snapshot_index", "The last index of the latest snapshot"),
            leader_changes: counter(r, "leader_changes", "Changes of the leader this node knows"),
            elections: counter(r, "elections", "Times this node became a candidate"),
            entries_appended: counter(r, "entries_appended", "Log entries handed to storage"),
            entries_applied: counter(r, "entries_applied", "Log entries applied"),
            restarts: counter(
                r,
                "restarts",
                "Starts of the node's event loop after the first",
            ),
            messages_sent: family(r, "messages_sent", "Raft messages sent, by kind"),
            messages_received: family(r, "messages_received", "Raft messages received, by kind"),
            payload_bytes_sent: family(
                r,
                "payload_bytes_sent",
                "Entry and snapshot bytes sent, by peer",
            ),
            votes: family(r, "votes", "Vote and pre-vote answers given, by outcome"),
            snapshots: family(
                r,
                "snapshots",
                "Snapshots taken, installed or read on demand for a follower",
            ),
            storage_write_seconds: {
                // 20 µs to ~0.66 s, doubling: an fsync on fast flash to a stalled disk.
                let h = Histogram::new(exponential_buckets(20e-6, 2.0, 16));
                r.register(
                    "storage_write_seconds",
                    "Time of each durable write (log append + fsync, group commit)",
                    h.clone(),
                );
                h
            },
            storage_write_ops: {
                let h = Histogram::new(exponential_buckets(1.0, 4.0, 8));
                r.register(
                    "storage_write_ops",
                    "Operations (entries, hard state, snapshots) per durable write",
                    h.clone(),
                );
                h
            },
            client_requests: family(
                r,
                "client_requests",
                "Client requests answered, by kind and result",
            ),
            client_request_seconds: {
                let f = Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(
                    request_seconds_histogram,
                );
                r.register(
                    "client_request_seconds",
                    "Time from a client request's arrival to its answer, by kind",
                    f.clone(),
                );
                f
            },
            registry,
            last_leader: AtomicU64::new(u64::MAX),
            starts: AtomicU64::new(0),
        };
        Self {
            inner: Arc::new(inner),
        }
    }

    /// Counts one durable write of `ops` operations that took `seconds`.
    pub fn storage_write(&self, ops: usize, seconds: f64) {
        self.inner.storage_write_seconds.observe(seconds);
        self.inner.storage_write_ops.observe(ops as f64);
    }

    /// Counts one answered client request of kind `op` (a closed set of names) that ended in
    /// `result` after `seconds`.
    pub fn client_request(&self, op: &'static str, result: &'static str, seconds: f64) {
        let m = &self.inner;
        m.client_requests
            .get_or_create(&vec![
                ("op", op.to_string()),
                ("result", result.to_string()),
            ])
            .inc();
        m.client_request_seconds
            .get_or_create(&vec![("op", op.to_string())])
            .observe(seconds);
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.inner.registry);
        out
    }
}

impl Observer for NodeMetrics {
    fn observe(&self, event: TraceEvent) {
        let m = &self.inner;
        let set = |g: &Gauge, v: u64| {
            g.set(v.min(i64::MAX as u64) as i64);
        };
        match event.kind {
            EventKind::Start {
                term,
                commit,
                last_index,
                snapshot_index,
                ..
            } => {
                if m.starts.fetch_add(1, Ordering::Relaxed) > 0 {
                    m.restarts.inc();
                }
                set(&m.term, term);
                set(&m.commit_index, commit);
                set(&m.last_index, last_index);
                set(&m.snapshot_index, snapshot_index);
            }
            EventKind::Role {
                role, term, leader, ..
            } => {
                set(&m.term, term);
                m.role.set(match role {
                    RoleName::Follower => 0,
                    RoleName::PreCandidate => 1,
                    RoleName::Candidate => 2,
                    RoleName::Leader => 3,
                });
                if role == RoleName::Candidate {
                    m.elections.inc();
                }
                let id = leader.unwrap_or(0);
                set(&m.leader_id, id);
                let before = m.last_leader.swap(id, Ordering::Relaxed);
                if before != id && id != 0 {
                    m.leader_changes.inc();
                }
            }
            EventKind::Vote { granted, .. } => {
                m.votes
                    .get_or_create(&vec![("granted", granted.to_string())])
                    .inc();
            }
            EventKind::Append { first, terms, .. } => {
                m.entries_appended.inc_by(terms.len() as u64);
                set(&m.last_index, first + terms.len() as u64 - 1);
            }
            EventKind::Commit { index } => set(&m.commit_index, index),
            EventKind::Apply { first, last } => {
                m.entries_applied.inc_by(last + 1 - first.min(last + 1));
                set(&m.applied_index, last);
            }
            EventKind::Snapshot { index, how, .. } => {
                let label = match how {
                    SnapshotHow::Taken => "taken",
                    SnapshotHow::Installed => "installed",
                    SnapshotHow::OnDemand => "on_demand",
                };
                m.snapshots
                    .get_or_create(&vec![("how", label.to_string())])
                    .inc();
                if how != SnapshotHow::OnDemand {
                    set(&m.snapshot_index, index);
                }
            }
            EventKind::Send { to, msg } => {
                m.messages_sent
                    .get_or_create(&vec![("kind", kind_name(msg.kind).to_string())])
                    .inc();
                if let Some(b) = msg.bytes.filter(|b| *b > 0) {
                    m.payload_bytes_sent
                        .get_or_create(&vec![("peer", to.to_string())])
                        .inc_by(b);
                }
            }
            EventKind::Recv { msg, .. } => {
                m.messages_received
                    .get_or_create(&vec![("kind", kind_name(msg.kind).to_string())])
                    .inc();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftkv_raft::driver::observer::MsgInfo;

    fn ev(kind: EventKind) -> TraceEvent {
        TraceEvent {
            t_us: 0,
            node: 1,
            kind,
        }
    }

    #[test]
    fn metrics_follow_the_events_in_the_text_format() {
        let m = NodeMetrics::new();
        m.observe(ev(EventKind::Role {
            role: RoleName::Leader,
            term: 3,
            leader: Some(1),
            election_timeout_ms: 300,
        }));
        m.observe(ev(EventKind::Append {
            first: 5,
            terms: vec![3, 3],
            kinds: "cc".into(),
        }));
        m.observe(ev(EventKind::Commit { index: 6 }));
        m.observe(ev(EventKind::Apply { first: 5, last: 6 }));
        let mut msg = MsgInfo::of(&raftkv_raft::Message {
            from: 1,
            to: 2,
            term: 3,
            body: raftkv_raft::Body::TimeoutNow,
        });
        msg.kind = MsgKind::Append;
        msg.bytes = Some(40);
        m.observe(ev(EventKind::Send { to: 2, msg }));
        let text = m.encode();
        for line in [
            "raftkv_term 3",
            "raftkv_role 3",
            "raftkv_leader_id 1",
            "raftkv_last_index 6",
            "raftkv_commit_index 6",
            "raftkv_applied_index 6",
            "raftkv_entries_applied_total 2",
            "raftkv_leader_changes_total 1",
            "raftkv_messages_sent_total{kind=\"append\"} 1",
            "raftkv_payload_bytes_sent_total{peer=\"2\"} 40",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn client_requests_and_storage_writes_are_counted_with_their_latency() {
        let m = NodeMetrics::new();
        m.client_request("put", "ok", 0.000_150);
        m.client_request("put", "ok", 0.002);
        m.client_request("get", "no_key", 0.000_050);
        m.storage_write(3, 0.000_300);
        let text = m.encode();
        for line in [
            "raftkv_client_requests_total{op=\"put\",result=\"ok\"} 2",
            "raftkv_client_requests_total{op=\"get\",result=\"no_key\"} 1",
            "raftkv_client_request_seconds_count{op=\"put\"} 2",
            // 150 µs falls in the bucket up to 200 µs, 2 ms in the one up to 3.2 ms.
            "raftkv_client_request_seconds_bucket{le=\"0.0002\",op=\"put\"} 1",
            "raftkv_storage_write_seconds_count 1",
            "raftkv_storage_write_ops_sum 3.0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }
}
