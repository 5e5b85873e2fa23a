//! Leader leases (thesis §6.4.1) in the simulator: scenarios built so that a lease longer
//! than the voters' promise serves a stale read, which the simulator's read check catches.
//! They pass only while the clocks keep to the stated drift bound and the voters keep their
//! promise not to vote while they hear from a leader (thesis §4.2.3): each test below fails if
//! that bound is broken (shown by the test itself) or the rule is removed from the core.

use bytes::Bytes;
use raftkv_raft::sim::{Sim, SimOptions};
use raftkv_raft::Role;

/// Three voters with lease reads under a 10% drift bound, election timeouts of 30 to 33
/// ticks (so that the voters' promise ends as early as it can), a reliable network.
fn cluster(seed: u64) -> Sim {
    cluster_with(seed, true)
}

fn cluster_with(seed: u64, pre_vote: bool) -> Sim {
    let mut so = SimOptions::new(3, seed);
    so.config.pre_vote = pre_vote;
    so.config.lease_reads = true;
    so.config.lease_clock_drift_percent = 10;
    so.config.election_timeout_ticks_min = 30;
    so.config.election_timeout_ticks_max = 34;
    let mut sim = Sim::new(so);
    sim.run_for(2_000).expect("a quiet cluster runs");
    sim
}

/// The leader (elected, with a commit of its term and a write of ours).
fn settled_leader(sim: &mut Sim) -> usize {
    let l = sim.leader().expect("a leader within 2 s");
    sim.propose(l, Bytes::from_static(b"before"))
        .expect("the leader takes writes");
    sim.run_for(200).expect("runs");
    l
}

/// Runs `ms` of virtual time in 5 ms steps; at each, a write at whichever other node leads
/// and a read at the old leader `old` while it still leads. Returns the failure the
/// simulator's checks found (a stale read is one), if any, and how many reads `old` took.
fn reads_at_old_leader(sim: &mut Sim, old: usize, ms: u64) -> (Option<String>, u64) {
    let mut reads = 0;
    for step in 0..ms / 5 {
        if let Some(new) =
            (0..3).find(|&i| i != old && sim.raft(i).is_some_and(|r| r.role() == Role::Leader))
        {
            let _ = sim.propose(new, Bytes::from(format!("w{step}")));
        }
        if sim.raft(old).is_some_and(|r| r.role() == Role::Leader) && sim.read(old).is_ok() {
            reads += 1;
        }
        if let Err(f) = sim.run_for(5) {
            return (Some(f.message), reads);
        }
    }
    (None, reads)
}

/// The old leader is cut off; the others elect a new leader once their promise ends (30 of
/// their 10 ms ticks) and commit writes. A leader whose clock is `leader_tick_ms` per tick
/// keeps reading under its lease meanwhile.
fn cut_off_leader(leader_tick_ms: u64) -> (Option<String>, u64) {
    let mut sim = cluster(7);
    let old = settled_leader(&mut sim);
    sim.set_tick_ms(old, leader_tick_ms);
    sim.run_for(100).expect("runs");
    sim.disconnect(old);
    reads_at_old_leader(&mut sim, old, 1_000)
}

#[test]
fn a_lease_within_the_drift_bound_never_reads_stale() {
    // 11 ms against 10 ms: 10% slower, the stated bound.
    let (failure, reads) = cut_off_leader(11);
    assert_eq!(failure, None);
    assert!(reads > 0, "the cut-off leader took reads under its lease");
}

#[test]
fn a_clock_slower_than_the_drift_bound_reads_stale_and_the_check_catches_it() {
    // 20 ms against 10 ms: the lease (25 ticks = 500 ms) outlasts the voters' promise
    // (about 300 ms), so the old leader serves reads after the new one committed writes.
    let (failure, _) = cut_off_leader(20);
    let failure = failure.expect("a stale lease read");
    assert!(failure.contains("ReadIndex"), "{failure}");
}

/// thesis §4.2.3: the leader still reaches one voter; the other, cut off from the leader only,
/// campaigns. The voter that hears the leader must refuse it: if it voted, the candidate
/// would lead and commit while the old leader's lease (resting on that voter's
/// acknowledgements) still holds, and a lease read there would be stale. (Without PreVote, so
/// that the vote request itself reaches the voter.)
#[test]
fn a_voter_that_hears_the_leader_refuses_votes_so_the_lease_holds() {
    for seed in 0..20 {
        let mut sim = cluster_with(seed, false);
        let old = settled_leader(&mut sim);
        let cut = (old + 1) % 3;
        sim.block_one_way(old, cut);
        let (failure, reads) = reads_at_old_leader(&mut sim, old, 1_500);
        assert_eq!(failure, None, "seed {seed}");
        assert!(reads > 0, "seed {seed}: no lease reads");
        assert!(
            sim.raft(old).is_some_and(|r| r.role() == Role::Leader),
            "seed {seed}: the leader kept its lease and its leadership"
        );
    }
}

/// thesis §3.10 and §6.4.1: a leader that sent TimeoutNow no longer serves lease reads (the
/// target's votes bypass the voters' promise). The target's messages to the old leader are
/// lost, so the old leader learns of the new term only through the third voter, up to a
/// heartbeat interval after the target leads and commits.
#[test]
fn a_leadership_transfer_ends_the_lease() {
    let mut sim = cluster(3);
    let old = settled_leader(&mut sim);
    let target = (old + 1) % 3;
    sim.block_one_way(target, old);
    sim.transfer(old, target).expect("transfer starts");
    let (failure, _) = reads_at_old_leader(&mut sim, old, 500);
    assert_eq!(failure, None);
    assert_eq!(sim.leader(), Some(target));
}

/// thesis §6.4: a follower with `follower_reads` asks the leader for a read index and serves
/// the read itself once it applied that index; cut off from the leader, its reads fail
/// (aborted, for the caller to retry) instead of answering from its own state.
#[test]
fn a_follower_serves_reads_with_the_leaders_read_index_and_fails_them_when_cut_off() {
    let mut so = SimOptions::new(3, 11);
    so.config.follower_reads = true;
    let mut sim = Sim::new(so);
    sim.run_for(2_000).expect("runs");
    let l = settled_leader(&mut sim);
    let f = (l + 1) % 3;
    let id = sim.read(f).expect("a follower takes the read");
    sim.run_for(50).expect("runs");
    let done = &sim.nodes[f].reads_done;
    assert!(done.iter().any(|&(r, _)| r == id), "served: {done:?}");
    sim.disconnect(f);
    let id = sim.read(f).expect("still asks the leader it knows");
    sim.run_for(1_000).expect("runs");
    assert!(
        sim.nodes[f].reads_aborted.contains(&id),
        "the cut-off read failed"
    );
    assert!(!sim.nodes[f].reads_done.iter().any(|&(r, _)| r == id));
}

/// thesis §6.4.1: an operator's forced election (`Raft::campaign`) on a voter that hears the
/// leader is refused while leases are on. That voter's acknowledgements hold up the leader's
/// lease, so its vote for itself would break its own promise: with the third voter cut off
/// from the leader (its promise has lapsed, it grants), the forced candidate would win and
/// commit while the old leader still reads under its lease (regression: a stale read here
/// before `campaign` kept the promise).
#[test]
fn a_forced_election_on_a_voter_that_hears_the_leader_waits_for_the_lease() {
    for seed in 0..10 {
        let mut sim = cluster(seed);
        let old = settled_leader(&mut sim);
        let forced = (old + 1) % 3;
        let cut = (old + 2) % 3;
        sim.block_one_way(old, cut);
        sim.block_one_way(cut, old);
        sim.run_for(500).expect("runs");
        // The old leader would step down at the forced candidate's first message: lose them.
        sim.block_one_way(forced, old);
        sim.campaign(forced);
        let (failure, reads) = reads_at_old_leader(&mut sim, old, 1_000);
        assert_eq!(failure, None, "seed {seed}");
        assert!(reads > 0, "seed {seed}: no lease reads");
    }
}
