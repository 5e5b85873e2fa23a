//! The simulated network (latency, loss, duplication, reordering, partitions) and faults.

use super::{Event, Sim, TestSm};
use crate::io::WriteOp;
use crate::message::Message;
use crate::raft::Raft;
use crate::types::{LogId, Role};
use crate::SnapshotReceiver;

impl Sim {
    pub(super) fn link_ok(&self, from: usize, to: usize) -> bool {
        self.connected[from] && self.connected[to] && !self.blocked[from][to]
    }

    pub(super) fn send(&mut self, msg: Message) {
        let (from, to) = (msg.from as usize - 1, msg.to as usize - 1);
        let reply = msg.body.is_response();
        if !reply {
            self.stats.requests_sent[from] += 1;
        }
        if let crate::Body::Append { entries, .. } = &msg.body {
            self.stats.append_payload_bytes += entries
                .iter()
                .map(|e| e.payload.len_bytes() as u64)
                .sum::<u64>();
        }
        if !self.link_ok(from, to) {
            self.stats.dropped += 1;
            return;
        }
        let net = &self.opts.net;
        if net.unreliable {
            let p = if reply {
                net.drop_reply
            } else {
                net.drop_request
            };
            if self.rng.chance(p) {
                self.stats.dropped += 1;
                return;
            }
        }
        let copies = if self.rng.chance(self.opts.net.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let net = &self.opts.net;
            let (lo, hi, unreliable, delay_max, long) = (
                net.latency_ms_min,
                net.latency_ms_max,
                net.unreliable,
                net.delay_ms_max,
                net.long_reordering,
            );
            let mut delay = self.rng.range(lo, hi + 1);
            if unreliable {
                delay += self.rng.range(0, delay_max + 1);
            }
            if long && reply && self.rng.range(0, 900) < 600 {
                let extra = self.rng.range(0, 2001);
                delay = 200 + self.rng.range(0, 1 + extra);
            }
            self.schedule(delay, Event::Deliver { msg: msg.clone() });
        }
    }

    // ---- faults ----

    /// Stops node `i` abruptly: everything not yet durable is lost.
    pub fn crash(&mut self, i: usize) {
        self.note(format!("crash n{}", i + 1));
        let node = &mut self.nodes[i];
        node.raft = None;
        for w in node.disk.drain(..) {
            for op in &w.write {
                if let WriteOp::Append(entries) = op {
                    self.checker.forget_lost(entries);
                }
            }
        }
        node.life += 1;
        node.reads.clear();
        node.receiving = SnapshotReceiver::default();
        // A stopped process can be killed; it comes back (restarts) unpaused.
        self.paused_until[i] = 0;
    }

    /// Starts node `i` again from its durable state.
    pub fn restart(&mut self, i: usize) {
        if self.nodes[i].raft.is_some() {
            return;
        }
        self.note(format!("restart n{}", i + 1));
        let config = self.node_config(i);
        let node = &mut self.nodes[i];
        let persisted = node.store.persisted();
        node.sm = match &persisted.snapshot {
            Some(s) => TestSm::decode(&s.data).unwrap_or_default(),
            None => TestSm::default(),
        };
        let raft = Raft::restore(config, persisted).expect("persisted state is valid");
        node.last_membership = (LogId::default(), raft.membership().clone());
        node.raft = Some(raft);
        node.last_commit = 0;
        node.last_role_term = (Role::Follower, 0);
        let life = node.life;
        let phase = self.rng.range(0, self.opts.tick_ms);
        self.next_tick_ms[i] = self.now_ms + phase;
        self.schedule(phase, Event::Tick { node: i, life });
    }

    /// Pauses node `i` for `ms` virtual milliseconds, as SIGSTOP does a process: it keeps its
    /// state and its place in the network, but handles nothing (messages, ticks, disk
    /// completions) until then; then it handles them all, late, in the order they came.
    pub fn pause(&mut self, i: usize, ms: u64) {
        self.note(format!("pause n{} for {ms} ms", i + 1));
        self.paused_until[i] = self.paused_until[i].max(self.now_ms + ms);
    }

    /// Whether node `i` is paused now.
    pub fn is_paused(&self, i: usize) -> bool {
        self.paused_until[i] > self.now_ms
    }

    /// Sets node `i`'s tick period to `ms` virtual milliseconds (at least 1): its clock runs
    /// at `opts.tick_ms / ms` of the others' rate (clock-rate skew). Takes effect from its
    /// next tick.
    pub fn set_tick_ms(&mut self, i: usize, ms: u64) {
        self.note(format!("n{} ticks every {ms} ms", i + 1));
        self.tick_ms[i] = ms.max(1);
    }

    /// Cuts node `i` off from everyone, both ways (the 6.5840 `disconnect`).
    pub fn disconnect(&mut self, i: usize) {
        self.note(format!("disconnect n{}", i + 1));
        self.connected[i] = false;
    }

    pub fn connect(&mut self, i: usize) {
        self.note(format!("connect n{}", i + 1));
        self.connected[i] = true;
    }

    /// Splits the cluster: nodes talk only within their group.
    pub fn partition(&mut self, groups: &[Vec<usize>]) {
        self.note(format!("partition {groups:?}"));
        let n = self.n();
        let group_of = |i: usize| groups.iter().position(|g| g.contains(&i));
        for a in 0..n {
            for b in 0..n {
                self.blocked[a][b] = group_of(a) != group_of(b);
            }
        }
    }

    /// Drops every message from `from` to `to` (one way).
    pub fn block_one_way(&mut self, from: usize, to: usize) {
        self.note(format!("block n{} → n{}", from + 1, to + 1));
        self.blocked[from][to] = true;
    }

    /// Full connectivity again (partitions and disconnections).
    pub fn heal(&mut self) {
        self.note("heal".into());
        for row in &mut self.blocked {
            row.fill(false);
        }
        self.connected.fill(true);
    }

    pub fn set_unreliable(&mut self, on: bool) {
        self.note(format!("unreliable={on}"));
        self.opts.net.unreliable = on;
    }

    pub fn set_long_reordering(&mut self, on: bool) {
        self.note(format!("long_reordering={on}"));
        self.opts.net.long_reordering = on;
    }
}
