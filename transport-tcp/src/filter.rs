//! Fault injection on the send side: per directed link `(from, to)`, block, drop with a
//! probability, or delay by a random time in a range. One [`FaultFilter`] handle may be shared
//! by every transport of a local cluster (it is keyed by both ends) or kept per transport.
//! Drop and delay decisions draw from one seeded generator.

use raftkv_raft::{NodeId, Rng};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// The faults on one directed link. The default is a perfect link.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LinkRule {
    /// Drop every message.
    pub blocked: bool,
    /// Drop each message with this probability (0.0 ..= 1.0).
    pub drop_probability: f64,
    /// Delay each delivered message by a uniform time in `delay_ms_min ..= delay_ms_max`
    /// (no delay when both are 0). Delayed messages may be reordered.
    pub delay_ms_min: u64,
    /// See `delay_ms_min`.
    pub delay_ms_max: u64,
}

/// What to do with one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Send it now.
    Deliver,
    /// Lose it.
    Drop,
    /// Deliver after this long.
    Delay(Duration),
}

/// A cloneable handle on a set of link faults; clones share the same rules and generator.
#[derive(Clone, Debug)]
pub struct FaultFilter {
    inner: Arc<Mutex<FilterState>>,
}

#[derive(Debug)]
struct FilterState {
    links: BTreeMap<(NodeId, NodeId), LinkRule>,
    /// Nodes whose every outgoing message is dropped.
    blocked_from: BTreeSet<NodeId>,
    /// Nodes whose every incoming and outgoing message is dropped.
    isolated: BTreeSet<NodeId>,
    rng: Rng,
}

impl Default for FaultFilter {
    fn default() -> Self {
        Self::new(0)
    }
}

impl FaultFilter {
    /// A filter with no faults whose random choices are drawn from `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            inner: Arc::new(Mutex::new(FilterState {
                links: BTreeMap::new(),
                blocked_from: BTreeSet::new(),
                isolated: BTreeSet::new(),
                rng: Rng::new(seed),
            })),
        }
    }

    fn state(&self) -> MutexGuard<'_, FilterState> {
        // A panic elsewhere cannot leave the rules inconsistent: every update is one assignment.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops every message from `from` to `to` (one direction only).
    pub fn block(&self, from: NodeId, to: NodeId) {
        self.state().links.entry((from, to)).or_default().blocked = true;
    }

    /// Undoes [`block`](Self::block) for that direction (not `isolate` or `block_all_from`).
    pub fn unblock(&self, from: NodeId, to: NodeId) {
        if let Some(rule) = self.state().links.get_mut(&(from, to)) {
            rule.blocked = false;
        }
    }

    /// Drops each message from `from` to `to` with probability `p` (clamped to 0.0 ..= 1.0).
    pub fn set_drop_probability(&self, from: NodeId, to: NodeId, p: f64) {
        let p = if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) };
        self.state()
            .links
            .entry((from, to))
            .or_default()
            .drop_probability = p;
    }

    /// Delays each message from `from` to `to` by a uniform time in `min_ms ..= max_ms`
    /// (`max_ms` is raised to `min_ms` if below it; `0, 0` removes the delay).
    pub fn set_delay_ms(&self, from: NodeId, to: NodeId, min_ms: u64, max_ms: u64) {
        let mut state = self.state();
        let rule = state.links.entry((from, to)).or_default();
        rule.delay_ms_min = min_ms;
        rule.delay_ms_max = max_ms.max(min_ms);
    }

    /// Replaces the whole rule of one directed link.
    pub fn set_link(&self, from: NodeId, to: NodeId, rule: LinkRule) {
        self.state().links.insert((from, to), rule);
    }

    /// The rule of one directed link (a perfect link if none was set).
    pub fn link(&self, from: NodeId, to: NodeId) -> LinkRule {
        self.state()
            .links
            .get(&(from, to))
            .cloned()
            .unwrap_or_default()
    }

    /// Drops every message `node` sends (it still receives).
    pub fn block_all_from(&self, node: NodeId) {
        self.state().blocked_from.insert(node);
    }

    /// Drops every message to and from `node`.
    pub fn isolate(&self, node: NodeId) {
        self.state().isolated.insert(node);
    }

    /// Removes every fault: links, `block_all_from` and `isolate`. The generator continues.
    pub fn heal(&self) {
        let mut state = self.state();
        state.links.clear();
        state.blocked_from.clear();
        state.isolated.clear();
    }

    /// Decides the fate of one message from `from` to `to`.
    pub fn decide(&self, from: NodeId, to: NodeId) -> Verdict {
        let mut state = self.state();
        if state.isolated.contains(&from)
            || state.isolated.contains(&to)
            || state.blocked_from.contains(&from)
        {
            return Verdict::Drop;
        }
        let Some(rule) = state.links.get(&(from, to)).cloned() else {
            return Verdict::Deliver;
        };
        if rule.blocked || state.rng.chance(rule.drop_probability) {
            return Verdict::Drop;
        }
        if rule.delay_ms_max == 0 {
            return Verdict::Deliver;
        }
        let delay_ms = state
            .rng
            .range(rule.delay_ms_min, rule.delay_ms_max.saturating_add(1));
        if delay_ms == 0 {
            Verdict::Deliver
        } else {
            Verdict::Delay(Duration::from_millis(delay_ms))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_apply_per_direction_and_heal_clears_them() {
        let f = FaultFilter::new(1);
        f.block(1, 2);
        assert_eq!(f.decide(1, 2), Verdict::Drop);
        assert_eq!(f.decide(2, 1), Verdict::Deliver);
        f.unblock(1, 2);
        assert_eq!(f.decide(1, 2), Verdict::Deliver);
        f.isolate(3);
        assert_eq!(f.decide(1, 3), Verdict::Drop);
        assert_eq!(f.decide(3, 1), Verdict::Drop);
        f.block_all_from(1);
        assert_eq!(f.decide(1, 2), Verdict::Drop);
        assert_eq!(f.decide(2, 1), Verdict::Deliver);
        f.set_delay_ms(2, 1, 5, 5);
        assert_eq!(f.decide(2, 1), Verdict::Delay(Duration::from_millis(5)));
        f.heal();
        for (a, b) in [(1, 2), (2, 1), (1, 3), (3, 1)] {
            assert_eq!(f.decide(a, b), Verdict::Deliver);
        }
    }

    #[test]
    fn drop_probability_is_seeded() {
        let run = |seed| {
            let f = FaultFilter::new(seed);
            f.set_drop_probability(1, 2, 0.5);
            (0..64)
                .map(|_| f.decide(1, 2) == Verdict::Drop)
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        let drops = run(7).iter().filter(|d| **d).count();
        assert!((10..54).contains(&drops), "{drops} drops of 64");
    }
}
