//! Fault injection on the send side: per directed link `(from, to)`, block, drop with a
//! probability, duplicate with a probability, or delay by a random time in a range. One [`FaultFilter`] handle may be shared
//! by every transport of a local cluster (it is keyed by both ends) or kept per transport.
//! Drop and delay decisions draw from one seeded generator.

use raftkv_raft::{Message, NodeId, Rng};
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
    /// Send each message that is not dropped twice with this probability (0.0 ..= 1.0), as a
    /// network that retransmits may: Raft must treat the copy as a stale repeat.
    pub duplicate_probability: f64,
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
    /// Send it now, twice.
    Duplicate,
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
    /// Told of every message lost to a link's drop probability ([`FaultFilter::on_random_drop`]).
    on_random_drop: Option<Hook>,
}

/// What [`FaultFilter::on_random_drop`] calls with each message the filter lost at random.
pub type DropHook = Arc<dyn Fn(&Message) + Send + Sync>;

#[derive(Clone)]
struct Hook(DropHook);

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DropHook")
    }
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
                on_random_drop: None,
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

    /// Sends each message from `from` to `to` twice with probability `p` (clamped to
    /// 0.0 ..= 1.0).
    pub fn set_duplicate_probability(&self, from: NodeId, to: NodeId, p: f64) {
        let p = if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) };
        self.state()
            .links
            .entry((from, to))
            .or_default()
            .duplicate_probability = p;
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

    /// Calls `hook` with every message lost to a link's drop probability (not those lost to a
    /// block or a partition, which whoever set them knows of), so that a cluster's trace can
    /// show random drops. Replaces any earlier hook. The hook runs on the sending task: it must
    /// be quick and must not call back into this filter.
    pub fn on_random_drop(&self, hook: impl Fn(&Message) + Send + Sync + 'static) {
        self.state().on_random_drop = Some(Hook(Arc::new(hook)));
    }

    /// Decides the fate of one message from `from` to `to`.
    pub fn decide(&self, from: NodeId, to: NodeId) -> Verdict {
        self.state().decide(from, to).0
    }

    /// Decides the fate of `msg` (as [`decide`](Self::decide)), telling the
    /// [`on_random_drop`](Self::on_random_drop) hook if it is lost at random.
    pub fn decide_message(&self, msg: &Message) -> Verdict {
        let (verdict, hook) = {
            let mut state = self.state();
            match state.decide(msg.from, msg.to) {
                (v, true) => (v, state.on_random_drop.clone()),
                (v, false) => (v, None),
            }
        };
        if let Some(Hook(hook)) = hook {
            hook(msg);
        }
        verdict
    }
}

impl FilterState {
    /// The verdict, and whether it is a drop drawn at random.
    fn decide(&mut self, from: NodeId, to: NodeId) -> (Verdict, bool) {
        if self.isolated.contains(&from)
            || self.isolated.contains(&to)
            || self.blocked_from.contains(&from)
        {
            return (Verdict::Drop, false);
        }
        let Some(rule) = self.links.get(&(from, to)).cloned() else {
            return (Verdict::Deliver, false);
        };
        if rule.blocked {
            return (Verdict::Drop, false);
        }
        if self.rng.chance(rule.drop_probability) {
            return (Verdict::Drop, true);
        }
        if rule.duplicate_probability > 0.0 && self.rng.chance(rule.duplicate_probability) {
            return (Verdict::Duplicate, false);
        }
        if rule.delay_ms_max == 0 {
            return (Verdict::Deliver, false);
        }
        let delay_ms = self
            .rng
            .range(rule.delay_ms_min, rule.delay_ms_max.saturating_add(1));
        match delay_ms {
            0 => (Verdict::Deliver, false),
            ms => (Verdict::Delay(Duration::from_millis(ms)), false),
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

    #[test]
    fn only_random_drops_reach_the_hook_with_their_message() {
        let f = FaultFilter::new(3);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        f.on_random_drop(move |m| s.lock().unwrap().push((m.from, m.to)));
        let msg = |from, to| Message {
            from,
            to,
            term: 1,
            body: raftkv_raft::Body::TimeoutNow,
        };
        f.block(1, 2);
        assert_eq!(f.decide_message(&msg(1, 2)), Verdict::Drop);
        f.set_drop_probability(2, 3, 1.0);
        assert_eq!(f.decide_message(&msg(2, 3)), Verdict::Drop);
        assert_eq!(f.decide_message(&msg(3, 2)), Verdict::Deliver);
        assert_eq!(
            *seen.lock().unwrap(),
            vec![(2, 3)],
            "the block's drop is not random"
        );
    }

    #[test]
    fn duplicates_are_drawn_with_their_probability_and_never_for_a_blocked_link() {
        let f = FaultFilter::new(5);
        f.set_duplicate_probability(1, 2, 1.0);
        assert_eq!(f.decide(1, 2), Verdict::Duplicate);
        assert_eq!(f.decide(2, 1), Verdict::Deliver);
        f.set_duplicate_probability(1, 2, 0.5);
        let dups = (0..1000)
            .filter(|_| f.decide(1, 2) == Verdict::Duplicate)
            .count();
        assert!((400..600).contains(&dups), "{dups}");
        f.block(1, 2);
        assert_eq!(f.decide(1, 2), Verdict::Drop);
    }
}
