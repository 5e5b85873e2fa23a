//! Leader leases (thesis §6.4.1): a leader that a quorum heard from recently serves reads
//! without a heartbeat round of their own.
//!
//! The promise a lease rests on is the voters' (thesis §4.2.3, with CheckQuorum): a voter that
//! heard from the leader refuses vote requests for the minimum election timeout, counted on
//! its own clock. So once a quorum acknowledged a heartbeat round the leader started at its
//! tick `t`, no other leader can be elected before each of them counted that timeout after `t`.
//! The leader counts on its own clock, which may run slower: under the stated drift bound
//! ([`Config::lease_clock_drift_percent`]) its lease ends after [`Config::lease_ticks`] of its
//! ticks, before any of those voters could vote. The core never reads a clock: a tick is the
//! driver's call, and the driver catches up on missed ticks before it handles input.
//!
//! What ends a lease early: stepping down (the lease is leader state), sending TimeoutNow
//! (thesis §3.10: the target's vote requests bypass the voters' promise, so the lease is
//! forfeited for the rest of the term), and a membership change (the lease is recomputed from
//! the acknowledgements of the configuration in effect, so new voters that never acknowledged
//! a round count against it). A voter that restarts has forgotten whom it heard from: with
//! leases on, it refuses votes for the minimum election timeout after it starts.

use crate::config::{Config, ConfigError, InvalidConfig};
use crate::raft::{Raft, RoleState};
use std::collections::VecDeque;

impl Config {
    /// thesis §6.4.1: how many of its own ticks a leader's lease lasts after the start of a
    /// round a quorum acknowledged. A voter may count its first tick right after it heard the
    /// leader, so it refuses votes for at least `election_timeout_ticks_min − 1` of its ticks;
    /// under the drift bound the leader counts at most that many `× 100 / (100 + drift)`, and
    /// one more tick is kept as a margin for the time a read takes to be handled.
    pub fn lease_ticks(&self) -> u64 {
        let promised = self.election_timeout_ticks_min.saturating_sub(1);
        let drift = self.lease_clock_drift_percent.min(10_000);
        (promised * 100 / (100 + drift)).saturating_sub(1)
    }

    /// The bounds of lease settings (with `lease_reads` on).
    pub(crate) fn validate_lease(&self) -> Result<(), ConfigError> {
        let invalid = |e| Err(ConfigError::Invalid(e));
        if !self.check_quorum {
            return invalid(InvalidConfig::LeaseWithoutCheckQuorum);
        }
        if self.lease_ticks() <= self.heartbeat_interval_ticks {
            return invalid(InvalidConfig::LeaseTooShort {
                drift_percent: self.lease_clock_drift_percent,
                lease_ticks: self.lease_ticks(),
                heartbeat_ticks: self.heartbeat_interval_ticks,
            });
        }
        Ok(())
    }
}

/// The leader's record of when it started each heartbeat round (by read sequence), for as long
/// as a lease could rest on it.
#[derive(Clone, Debug, Default)]
pub(crate) struct LeaseRounds {
    /// (first read sequence sent at a tick, that tick), both increasing. Rounds sent at the
    /// same tick share its entry. At most `lease_ticks + 1` entries: older ones are dropped.
    rounds: VecDeque<(u64, u64)>,
    /// thesis §3.10: TimeoutNow was sent in this term: no lease until the term ends.
    forfeited: bool,
}

impl LeaseRounds {
    /// A round with read sequence `seq` goes out at leader tick `tick`.
    pub(crate) fn sent(&mut self, seq: u64, tick: u64) {
        if self.rounds.back().is_none_or(|&(_, t)| t < tick) {
            self.rounds.push_back((seq, tick));
        }
    }

    /// The tick at which round `seq` went out, if it is still recorded.
    fn start_of(&self, seq: u64) -> Option<u64> {
        self.rounds
            .iter()
            .rev()
            .find(|&&(s, _)| s <= seq)
            .map(|&(_, t)| t)
    }

    /// Drops rounds no lease can rest on any more at tick `now`.
    fn expire(&mut self, now: u64, lease_ticks: u64) {
        while self
            .rounds
            .front()
            .is_some_and(|&(_, t)| t + lease_ticks <= now)
        {
            self.rounds.pop_front();
        }
    }
}

impl Raft {
    /// thesis §6.4.1: whether this node leads under a lease now: lease reads are on, the lease
    /// is not forfeited, and a quorum of the configuration in effect (Raft §6: of each half of
    /// a joint one; thesis §4.2.1: learners do not count) acknowledged a round started less
    /// than `lease_ticks` ago.
    pub(crate) fn lease_valid(&self) -> bool {
        let RoleState::Leader(l) = &self.role else {
            return false;
        };
        if !self.config.lease_reads || l.lease.forfeited {
            return false;
        }
        let seq = self.quorum_read_seq();
        l.lease
            .start_of(seq)
            .is_some_and(|start| l.ticks < start + self.config.lease_ticks())
    }

    /// thesis §6.4.1: a new heartbeat round starts at this tick; with leases on, every round
    /// gets its own read sequence, so that its acknowledgements date the lease.
    pub(crate) fn lease_round(&mut self) {
        let lease_reads = self.config.lease_reads;
        if let RoleState::Leader(l) = &mut self.role {
            if lease_reads && !l.read_round_pending {
                l.read_seq += 1;
            }
        }
    }

    /// Time passes for the lease: rounds too old to date one are dropped.
    pub(crate) fn tick_lease(&mut self) {
        let lease_ticks = self.config.lease_ticks();
        if let RoleState::Leader(l) = &mut self.role {
            l.lease.expire(l.ticks, lease_ticks);
        }
    }

    /// thesis §3.10: a leader that sends TimeoutNow lets its target collect votes that the
    /// voters' promise would refuse: its lease ends for the rest of the term.
    pub(crate) fn forfeit_lease(&mut self) {
        if let RoleState::Leader(l) = &mut self.role {
            l.lease.forfeited = true;
        }
    }

    /// thesis §6.4.1: a voter that restarts does not know whom it heard from before: with
    /// leases on, it keeps the voters' promise for one minimum election timeout after start.
    pub(crate) fn boot_promise_ticks(config: &Config) -> u64 {
        match config.lease_reads {
            true => config.election_timeout_ticks_min,
            false => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_is_shortened_by_the_drift_bound() {
        let mut c = Config::new(1, [1, 2, 3]);
        c.lease_clock_drift_percent = 0;
        assert_eq!(c.lease_ticks(), 28, "29 promised ticks, one of margin");
        c.lease_clock_drift_percent = 10;
        assert_eq!(c.lease_ticks(), 25);
        c.lease_clock_drift_percent = 50;
        assert_eq!(c.lease_ticks(), 18);
        c.lease_reads = true;
        c.lease_clock_drift_percent = 300;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::Invalid(InvalidConfig::LeaseTooShort { .. }))
        ));
        c.lease_clock_drift_percent = 10;
        c.check_quorum = false;
        assert_eq!(
            c.validate(),
            Err(ConfigError::Invalid(InvalidConfig::LeaseWithoutCheckQuorum))
        );
    }

    #[test]
    fn rounds_date_sequences_and_expire() {
        let mut r = LeaseRounds::default();
        r.sent(1, 0);
        r.sent(2, 0);
        r.sent(3, 10);
        assert_eq!(r.start_of(2), Some(0));
        assert_eq!(r.start_of(3), Some(10));
        assert_eq!(r.start_of(0), None, "no round acknowledged");
        r.expire(25, 25);
        assert_eq!(r.start_of(2), None, "expired rounds date nothing");
        assert_eq!(r.start_of(3), Some(10));
    }
}
