//! Cluster reconfiguration, one rule per test, named as sentences: joint consensus (Raft §6,
//! thesis §4.3), learners (thesis §4.2.1), removed servers (thesis §4.2.2, §4.2.3), leadership
//! transfer (thesis §3.10). Ports of etcd-raft's and the thesis' cases, on a hand-driven
//! cluster.

use bytes::Bytes;
use raftkv_raft::sim::manual::ManualCluster;
use raftkv_raft::{
    Body, Config, Entry, Error, HardState, LogId, MemberAddrs, MemberChange, Membership,
    MembershipError, Message, NodeId, Payload, Persisted, Raft, Role,
};
use std::collections::BTreeSet;

fn template() -> Config {
    let mut c = Config::new(1, [1]);
    c.promote_lag_entries_max = 0;
    c
}

/// `n` nodes, node 1 elected and its no-op committed everywhere.
fn cluster(n: u64) -> ManualCluster {
    let mut c = ManualCluster::new(n, template()).unwrap();
    c.campaign(1).unwrap();
    c.stabilize(100).unwrap();
    assert_eq!(c.raft(1).unwrap().role(), Role::Leader);
    c
}

/// Every live node ticks once, then every message is delivered; `ticks` times.
fn run(c: &mut ManualCluster, ticks: u64) {
    for _ in 0..ticks {
        for id in c.ids() {
            if c.raft(id).is_some() {
                c.tick(id, 1).unwrap();
            }
        }
        c.stabilize(1_000).unwrap();
    }
}

fn addrs(id: NodeId) -> MemberAddrs {
    MemberAddrs::new(format!("10.0.0.{id}:7000"), format!("10.0.0.{id}:8000"))
}

fn add_voter(id: NodeId) -> MemberChange {
    MemberChange::AddVoter {
        id,
        addrs: addrs(id),
    }
}

fn add_learner(id: NodeId) -> MemberChange {
    MemberChange::AddLearner {
        id,
        addrs: addrs(id),
        auto_promote: false,
    }
}

fn remove(id: NodeId) -> MemberChange {
    MemberChange::Remove { id }
}

fn change(c: &mut ManualCluster, id: NodeId, changes: &[MemberChange]) -> u64 {
    c.change(id, changes).unwrap().expect("change accepted")
}

fn voters(c: &ManualCluster, id: NodeId) -> Vec<NodeId> {
    c.raft(id)
        .unwrap()
        .membership()
        .voters()
        .iter()
        .copied()
        .collect()
}

fn propose(c: &mut ManualCluster, id: NodeId, data: &'static str) -> Result<u64, Error> {
    c.propose(id, Bytes::from_static(data.as_bytes())).unwrap()
}

fn commit(c: &ManualCluster, id: NodeId) -> u64 {
    c.raft(id).unwrap().commit_index()
}

#[test]
fn a_learner_receives_the_log_but_never_counts_toward_commit() {
    // thesis §4.2.1: learners do not count: with voters 1, 2 and learner 3, an entry held by
    // 1 and 3 but not 2 is not committed.
    let mut c = cluster(2);
    c.add_node(3).unwrap();
    change(&mut c, 1, &[add_learner(3)]);
    run(&mut c, 12);
    assert_eq!(c.raft(3).unwrap().commit_index(), commit(&c, 1));
    c.partition(&[vec![1, 3], vec![2]]);
    let index = propose(&mut c, 1, "x").unwrap();
    c.stabilize(100).unwrap();
    assert_eq!(c.raft(3).unwrap().last_log_id().index, index);
    assert!(commit(&c, 1) < index, "the learner's copy must not count");
    c.heal();
    run(&mut c, 10);
    assert_eq!(commit(&c, 1), index);
}

#[test]
fn a_learner_never_campaigns_and_a_vote_it_grants_does_not_count() {
    // thesis §4.2.1: learners never campaign. A learner still answers a vote request (the
    // candidate may already know it as a voter), but a candidate counts only its voters.
    let mut c = cluster(2);
    c.add_node(3).unwrap();
    change(&mut c, 1, &[add_learner(3)]);
    c.stabilize(100).unwrap();
    c.crash(1).unwrap();
    c.tick(3, 200).unwrap();
    assert_eq!(
        c.raft(3).unwrap().role(),
        Role::Follower,
        "a learner never campaigns"
    );
    c.campaign(3).unwrap();
    assert_eq!(c.raft(3).unwrap().role(), Role::Follower);
    assert!(c.queue.is_empty(), "a learner sends no vote requests");
    // Node 2 campaigns: 1 is down, 3's vote does not count, so 2 cannot win alone.
    c.campaign(2).unwrap();
    c.stabilize(100).unwrap();
    assert_ne!(c.raft(2).unwrap().role(), Role::Leader);
}

#[test]
fn a_learner_ignores_timeout_now() {
    let mut c = cluster(2);
    c.add_node(3).unwrap();
    change(&mut c, 1, &[add_learner(3)]);
    c.stabilize(100).unwrap();
    let term = c.raft(3).unwrap().term();
    c.queue.push_back(Message {
        from: 1,
        to: 3,
        term,
        body: Body::TimeoutNow,
    });
    c.stabilize(100).unwrap();
    assert_eq!(c.raft(3).unwrap().role(), Role::Follower);
    assert_eq!(c.raft(3).unwrap().term(), term);
}

#[test]
fn adding_a_voter_goes_through_the_joint_configuration_and_then_c_new() {
    // Raft §6: C_old,new first; once it commits the leader appends C_new by itself.
    let mut c = cluster(3);
    c.add_node(4).unwrap();
    let joint = change(&mut c, 1, &[add_voter(4)]);
    assert!(
        c.raft(1).unwrap().membership().is_joint(),
        "in effect once appended"
    );
    c.stabilize(100).unwrap();
    for id in 1..=4 {
        let r = c.raft(id).unwrap();
        assert!(
            !r.membership().is_joint(),
            "n{id} left the joint configuration"
        );
        assert_eq!(voters(&c, id), vec![1, 2, 3, 4]);
        assert_eq!(r.membership_index(), joint + 1, "C_new follows C_old,new");
        assert_eq!(r.membership().addrs().get(&4), Some(&addrs(4)));
    }
    assert!(commit(&c, 1) > joint, "C_new commits too");
}

#[test]
fn a_joint_configuration_commits_only_with_a_majority_of_each_half() {
    // Raft §6: replacing 2 and 3 by 4 and 5: C_old = {1,2,3}, C_new = {1,4,5}. With 4 and 5
    // cut off, C_old's majority alone commits nothing.
    let mut c = cluster(3);
    c.add_node(4).unwrap();
    c.add_node(5).unwrap();
    change(&mut c, 1, &[add_learner(4), add_learner(5)]);
    c.stabilize(100).unwrap();
    let joint = change(
        &mut c,
        1,
        &[
            MemberChange::Promote { id: 4 },
            MemberChange::Promote { id: 5 },
            remove(2),
            remove(3),
        ],
    );
    c.partition(&[vec![1, 2, 3], vec![4, 5]]);
    c.stabilize(100).unwrap();
    assert!(commit(&c, 1) < joint, "C_new's half has no majority");
    c.heal();
    // The leader notices the pipeline stalled at the second heartbeat after the heal.
    run(&mut c, 25);
    assert!(commit(&c, 1) > joint, "C_new commits too");
    assert_eq!(voters(&c, 1), vec![1, 4, 5]);
    for id in [2, 3] {
        assert!(
            c.raft(id).unwrap().is_removed(),
            "n{id} learned it was removed"
        );
    }
}

#[test]
fn an_entry_commits_after_the_node_holding_it_back_is_removed() {
    // etcd TestCommitAfterRemoveNode: in a 2-node cluster with node 2 down, nothing commits;
    // once node 2 is removed, pending entries commit with node 1 alone.
    let mut c = cluster(2);
    c.crash(2).unwrap();
    let index = propose(&mut c, 1, "waits").unwrap();
    assert!(commit(&c, 1) < index);
    // The change is accepted (node 1 alone is a quorum of C_new = {1}), but C_old,new =
    // {1}&{1,2} cannot commit while node 2 is down: C_old needs it.
    let joint = change(&mut c, 1, &[remove(2)]);
    assert!(commit(&c, 1) < joint);
    c.restart(2).unwrap();
    run(&mut c, 15);
    assert!(commit(&c, 1) > joint, "C_new commits");
    c.crash(2).unwrap();
    let later = propose(&mut c, 1, "alone").unwrap();
    assert_eq!(
        commit(&c, 1),
        later,
        "node 1 commits alone once node 2 is removed"
    );
}

#[test]
fn a_leader_that_removes_itself_leads_until_c_new_commits_then_steps_down() {
    // thesis §4.2.2: the leader keeps replicating but does not count itself in C_new; once
    // C_new commits it steps down, handing leadership to an up-to-date voter (thesis §3.10).
    let mut c = cluster(3);
    let joint = change(&mut c, 1, &[remove(1)]);
    c.partition(&[vec![1], vec![2, 3]]);
    c.stabilize(100).unwrap();
    assert_eq!(c.raft(1).unwrap().role(), Role::Leader);
    c.heal();
    run(&mut c, 25);
    let r1 = c.raft(1).unwrap();
    assert_eq!(r1.role(), Role::Follower);
    assert!(r1.is_removed() && r1.status().removed);
    assert!(r1.commit_index() > joint);
    let leader = [2, 3]
        .into_iter()
        .find(|id| c.raft(*id).unwrap().role() == Role::Leader)
        .expect("2 or 3 leads, at once: the old leader handed over");
    assert_eq!(voters(&c, leader), vec![2, 3]);
    // The removed node never campaigns.
    let term = c.raft(1).unwrap().term();
    c.tick(1, 500).unwrap();
    assert_eq!(c.raft(1).unwrap().term(), term);
    assert_eq!(c.raft(1).unwrap().role(), Role::Follower);
}

#[test]
fn a_removed_node_that_missed_its_removal_does_not_disturb_the_cluster() {
    // thesis §4.2.3: a removed server that did not learn of its removal times out and
    // campaigns; PreVote and the leader's lease keep it from deposing the leader.
    let mut c = cluster(3);
    change(&mut c, 1, &[remove(3)]);
    c.partition(&[vec![1, 2], vec![3]]);
    run(&mut c, 12);
    assert_eq!(voters(&c, 1), vec![1, 2]);
    assert!(!c.raft(3).unwrap().is_removed(), "n3 missed C_new");
    let term = c.raft(1).unwrap().term();
    c.heal();
    c.campaign(3).unwrap();
    run(&mut c, 100);
    assert_eq!(c.raft(1).unwrap().role(), Role::Leader);
    assert_eq!(c.raft(1).unwrap().term(), term, "no election was forced");
}

#[test]
fn a_change_proposed_while_another_is_pending_is_refused() {
    // thesis §4.1: one change at a time: while a configuration is uncommitted, or the cluster
    // is in a joint configuration, a second change is refused.
    let mut c = cluster(3);
    c.add_node(4).unwrap();
    c.add_node(5).unwrap();
    change(&mut c, 1, &[add_learner(4)]);
    assert_eq!(
        c.change(1, &[add_learner(5)]).unwrap(),
        Err(MembershipError::ChangeInProgress)
    );
    c.stabilize(100).unwrap();
    let joint = change(&mut c, 1, &[MemberChange::Promote { id: 4 }]);
    c.partition(&[vec![1], vec![2, 3, 4]]);
    c.stabilize(100).unwrap();
    assert!(commit(&c, 1) < joint);
    assert_eq!(
        c.change(1, &[remove(2)]).unwrap(),
        Err(MembershipError::ChangeInProgress)
    );
    c.heal();
    run(&mut c, 25);
    change(&mut c, 1, &[add_learner(5)]);
}

#[test]
fn a_change_before_the_leaders_first_commit_in_its_term_is_refused() {
    // thesis §4.1 (the single-server bug reported on raft-dev in 2015): a new leader must
    // commit an entry of its term before changing the configuration.
    let mut c = ManualCluster::new(3, template()).unwrap();
    c.campaign(1).unwrap();
    c.deliver(&[]);
    c.deliver(&[]);
    c.deliver(&[]);
    c.deliver(&[]);
    let r = c.raft(1).unwrap();
    assert_eq!(r.role(), Role::Leader);
    assert!(r.commit_index() < r.last_log_id().index);
    assert_eq!(
        c.change(1, &[remove(3)]).unwrap(),
        Err(MembershipError::NotCommittedInTerm)
    );
    c.stabilize(100).unwrap();
    change(&mut c, 1, &[remove(3)]);
}

#[test]
fn invalid_changes_are_refused_with_typed_errors() {
    let mut c = cluster(3);
    let refused = |c: &mut ManualCluster, id, ch: &[MemberChange]| c.change(id, ch).unwrap();
    assert_eq!(
        refused(&mut c, 2, &[remove(3)]),
        Err(MembershipError::NotLeader {
            leader_hint: Some(1)
        })
    );
    assert_eq!(
        refused(&mut c, 1, &[remove(9)]),
        Err(MembershipError::NotAMember(9))
    );
    assert_eq!(
        refused(&mut c, 1, &[add_voter(2)]),
        Err(MembershipError::AlreadyAMember(2))
    );
    assert_eq!(
        refused(&mut c, 1, &[remove(1), remove(2), remove(3)]),
        Err(MembershipError::NoVotersLeft)
    );
    // Adding two empty voters to a cluster with one node down (for an election timeout): the
    // new configuration's voters that are up to date (1 and 2) are not a majority of its 5.
    c.crash(3).unwrap();
    run(&mut c, 30);
    assert_eq!(
        refused(&mut c, 1, &[add_voter(4), add_voter(5)]),
        Err(MembershipError::WouldLoseQuorum {
            healthy: 2,
            voters: 5
        })
    );
    let msg = MembershipError::ChangeInProgress.to_string();
    assert!(msg.contains("already in progress"), "{msg}");
    assert_eq!(
        MembershipError::NotAMember(4).to_string(),
        "node 4 is not a member"
    );
}

#[test]
fn a_truncated_configuration_rolls_back_to_the_previous_one() {
    // thesis §4.1: a server uses the latest configuration in its log, committed or not; when
    // a new leader overwrites that entry, the previous configuration applies again.
    let mut c = cluster(3);
    c.add_node(4).unwrap();
    c.partition(&[vec![1], vec![2, 3, 4]]);
    let joint = change(&mut c, 1, &[add_voter(4)]);
    assert!(
        c.raft(1).unwrap().membership().is_joint(),
        "in effect once appended"
    );
    run(&mut c, 100);
    let leader = c.raft(2).unwrap().leader().expect("2 and 3 elect a leader");
    assert_ne!(leader, 1);
    c.heal();
    run(&mut c, 15);
    let r1 = c.raft(1).unwrap();
    assert_eq!(r1.role(), Role::Follower);
    assert!(r1.term_at(joint) != Some(1), "the entry was overwritten");
    assert!(!r1.membership().is_joint(), "rolled back");
    assert_eq!(voters(&c, 1), vec![1, 2, 3]);
    assert_eq!(r1.membership_index(), 0);
}

#[test]
fn a_truncated_configuration_rolls_back_on_a_follower() {
    let mut r = node_with_log(&[1, 1], 1);
    let cfg = |voters: &[u64]| Entry {
        index: 3,
        term: 1,
        payload: Payload::Membership(Box::new(Membership::from_voters(voters.iter().copied()))),
    };
    step_append(&mut r, 1, LogId::new(2, 1), vec![cfg(&[1, 2, 3, 4])]);
    assert_eq!(r.membership().voters().len(), 4, "in effect once appended");
    assert_eq!(r.membership_index(), 3);
    // A leader of term 2 overwrites index 3 with a no-op.
    let noop = Entry {
        index: 3,
        term: 2,
        payload: Payload::Noop,
    };
    step_append(&mut r, 2, LogId::new(2, 1), vec![noop]);
    assert_eq!(
        r.membership().voters().iter().copied().collect::<Vec<_>>(),
        vec![1, 2, 3],
        "rolled back"
    );
    assert_eq!(r.membership_index(), 0);
}

/// Node 2 of {1, 2, 3}, restored with entries of the given terms and `term`.
fn node_with_log(terms: &[u64], term: u64) -> Raft {
    let entries = terms
        .iter()
        .enumerate()
        .map(|(i, &t)| Entry {
            index: i as u64 + 1,
            term: t,
            payload: Payload::Noop,
        })
        .collect();
    let persisted = Persisted {
        hard_state: HardState {
            term,
            voted_for: None,
            commit: 0,
        },
        snapshot: None,
        entries,
    };
    Raft::restore(Config::new(2, [1, 2, 3]), persisted).unwrap()
}

fn step_append(r: &mut Raft, term: u64, base: LogId, entries: Vec<Entry>) {
    r.step(Message {
        from: 1,
        to: 2,
        term,
        body: Body::Append {
            base,
            entries,
            commit: 0,
        },
    });
    let ready = r.take_ready();
    if let Some(t) = ready.persist_token {
        r.persisted(t);
    }
    assert_eq!(r.stats().protocol_violations, 0);
}

#[test]
fn the_configuration_survives_restart_from_the_log_and_from_a_snapshot() {
    // thesis §4: the configuration is in the log and in snapshots; `Config::voters` only
    // bootstraps a fresh log.
    let mut c = cluster(3);
    c.add_node(4).unwrap();
    change(&mut c, 1, &[add_learner(4)]);
    run(&mut c, 12);
    let expect = c.raft(1).unwrap().membership().clone();
    c.crash(2).unwrap();
    c.restart(2).unwrap();
    assert_eq!(c.raft(2).unwrap().membership(), &expect, "from the log");
    run(&mut c, 12); // node 2 learns the commit index again and applies the configuration
    c.snapshot(2).unwrap().unwrap();
    let snap = c.nodes[&2].store.snapshot.clone().unwrap();
    assert_eq!(snap.membership, expect, "the snapshot carries it");
    assert!(c.nodes[&2].store.entries.is_empty(), "the log is compacted");
    c.crash(2).unwrap();
    c.restart(2).unwrap();
    assert_eq!(
        c.raft(2).unwrap().membership(),
        &expect,
        "from the snapshot"
    );
    // The joining node restarts with no initial voters and still knows.
    c.crash(4).unwrap();
    c.restart(4).unwrap();
    assert_eq!(c.raft(4).unwrap().membership(), &expect);
}

#[test]
fn a_learner_added_after_compaction_gets_the_configuration_with_the_snapshot() {
    // thesis §4.1 and Raft §7: a new node whose entries are compacted away at the leader gets
    // the snapshot, which carries the configuration at its last entry.
    let mut c = cluster(3);
    for _ in 0..5 {
        propose(&mut c, 1, "x").unwrap();
    }
    c.stabilize(100).unwrap();
    c.snapshot(1).unwrap().unwrap();
    c.add_node(4).unwrap();
    change(&mut c, 1, &[add_learner(4)]);
    run(&mut c, 12);
    let r4 = c.raft(4).unwrap();
    assert!(r4.snapshot_index() > 0, "n4 installed a snapshot");
    assert_eq!(r4.membership(), c.raft(1).unwrap().membership());
    assert_eq!(r4.commit_index(), commit(&c, 1));
}

#[test]
fn a_learner_marked_for_promotion_is_promoted_once_caught_up() {
    // thesis §4.2.1: a new server catches up as a learner, then becomes a voter.
    let mut c = cluster(3);
    c.add_node(4).unwrap();
    c.crash(4).unwrap();
    change(
        &mut c,
        1,
        &[MemberChange::AddLearner {
            id: 4,
            addrs: addrs(4),
            auto_promote: true,
        }],
    );
    run(&mut c, 30);
    assert!(
        c.raft(1).unwrap().membership().is_learner(4),
        "not promoted while unreachable"
    );
    let status = c.raft(1).unwrap().status();
    assert_eq!(status.followers[&4].match_index, 0);
    assert!(!status.followers[&4].active);
    c.restart(4).unwrap();
    run(&mut c, 25);
    assert_eq!(voters(&c, 1), vec![1, 2, 3, 4]);
    assert!(!c.raft(1).unwrap().membership().is_joint());
    assert!(c.raft(1).unwrap().membership().auto_promote().is_empty());
}

#[test]
fn the_leaders_status_shows_each_followers_progress_and_the_membership() {
    let mut c = cluster(3);
    c.add_node(4).unwrap();
    change(&mut c, 1, &[add_learner(4)]);
    c.stabilize(100).unwrap();
    let s = c.raft(1).unwrap().status();
    assert_eq!(
        s.followers.keys().copied().collect::<BTreeSet<_>>(),
        BTreeSet::from([2, 3, 4])
    );
    assert!(s.followers.values().all(|f| f.match_index == s.last_index));
    assert_eq!(s.membership.learners(), &BTreeSet::from([4]));
    assert!(!s.membership.is_joint() && !s.removed);
    assert!(c.raft(2).unwrap().status().followers.is_empty());
}

// ---- leadership transfer (thesis §3.10) ----

#[test]
fn transfer_to_an_up_to_date_follower_elects_it_at_once() {
    let mut c = cluster(3);
    c.transfer(1, 2).unwrap().unwrap();
    c.stabilize(100).unwrap();
    assert_eq!(c.raft(2).unwrap().role(), Role::Leader);
    assert_eq!(c.raft(1).unwrap().role(), Role::Follower);
    assert_eq!(c.raft(1).unwrap().leader(), Some(2));
}

#[test]
fn transfer_to_a_lagging_follower_first_brings_its_log_up_to_date() {
    let mut c = cluster(3);
    c.crash(3).unwrap();
    for _ in 0..3 {
        propose(&mut c, 1, "x").unwrap();
    }
    c.stabilize(100).unwrap();
    c.restart(3).unwrap();
    c.transfer(1, 3).unwrap().unwrap();
    assert_eq!(
        propose(&mut c, 1, "refused"),
        Err(Error::TransferInProgress { target: 3 }),
        "no proposals while transferring"
    );
    assert_eq!(c.raft(1).unwrap().status().transferring_to, Some(3));
    // The leader finds 3's pipeline stalled at the second heartbeat, probes, catches it up.
    run(&mut c, 25);
    assert_eq!(c.raft(3).unwrap().role(), Role::Leader);
    assert_eq!(
        c.raft(3).unwrap().last_log_id().index,
        c.raft(2).unwrap().last_log_id().index
    );
}

/// Regression (issue 16's transfer bug: the TCP transport lost the first message on some
/// links, here the target's vote requests): the target resends them at its next heartbeat
/// interval and wins, instead of waiting out an election timeout that the old leader, which
/// stepped down for the transfer, could win. Reference: thesis §3.10, Raft §5.1.
#[test]
fn a_transfer_whose_vote_requests_are_lost_still_elects_the_target() {
    let mut c = cluster(3);
    c.transfer(1, 2).unwrap().unwrap();
    c.deliver(&[2]); // TimeoutNow: 2 campaigns, for the transfer
    assert_eq!(c.raft(2).unwrap().role(), Role::Candidate);
    let term = c.raft(2).unwrap().term();
    c.partition(&[vec![1, 3], vec![2]]);
    c.deliver(&[]); // both vote requests lost
    c.heal();
    assert_eq!(
        c.raft(1).unwrap().role(),
        Role::Leader,
        "1 never heard of it"
    );
    let heartbeat = template().heartbeat_interval_ticks;
    c.tick(2, heartbeat).unwrap();
    c.stabilize(100).unwrap();
    let target = c.raft(2).unwrap();
    assert_eq!((target.role(), target.term()), (Role::Leader, term));
    assert_eq!(c.raft(1).unwrap().leader(), Some(2));
}

/// Only a transfer's candidate resends (an ordinary election is retried by the next one).
#[test]
fn a_candidate_the_leader_did_not_ask_for_does_not_resend_its_vote_requests() {
    let mut config = template();
    config.pre_vote = false;
    let mut c = ManualCluster::new(3, config).unwrap();
    c.campaign(2).unwrap();
    assert_eq!(c.raft(2).unwrap().role(), Role::Candidate);
    c.partition(&[vec![1, 3], vec![2]]);
    c.deliver(&[]);
    c.heal();
    c.tick(2, template().heartbeat_interval_ticks).unwrap();
    assert_eq!(c.raft(2).unwrap().role(), Role::Candidate);
    assert!(c.queue.is_empty(), "resent: {:?}", c.queue);
}

#[test]
fn transfer_to_an_unreachable_target_gives_up_after_an_election_timeout() {
    let mut c = cluster(3);
    c.partition(&[vec![1, 2], vec![3]]);
    c.transfer(1, 3).unwrap().unwrap();
    run(&mut c, 10);
    assert_eq!(
        propose(&mut c, 1, "refused"),
        Err(Error::TransferInProgress { target: 3 })
    );
    run(&mut c, 25);
    assert_eq!(c.raft(1).unwrap().role(), Role::Leader);
    assert_eq!(c.raft(1).unwrap().status().transferring_to, None);
    assert!(propose(&mut c, 1, "accepted again").is_ok());
}

#[test]
fn transfer_to_a_removed_unknown_or_learner_node_is_refused() {
    let mut c = cluster(3);
    c.add_node(4).unwrap();
    change(&mut c, 1, &[add_learner(4)]);
    c.stabilize(100).unwrap();
    assert_eq!(
        c.transfer(1, 4).unwrap(),
        Err(MembershipError::NotAVoter(4))
    );
    assert_eq!(
        c.transfer(1, 9).unwrap(),
        Err(MembershipError::NotAMember(9))
    );
    change(&mut c, 1, &[remove(3)]);
    run(&mut c, 12);
    assert_eq!(
        c.transfer(1, 3).unwrap(),
        Err(MembershipError::NotAMember(3))
    );
    assert_eq!(
        c.transfer(2, 1).unwrap(),
        Err(MembershipError::NotLeader {
            leader_hint: Some(1)
        })
    );
    c.transfer(1, 1).unwrap().unwrap();
    assert_eq!(c.raft(1).unwrap().status().transferring_to, None);
}

#[test]
fn a_transfer_vote_is_answered_despite_the_leaders_lease() {
    // thesis §3.10 and §4.2.3: followers ignore vote requests while they hear from a leader,
    // except in the election that leader asked for.
    let mut c = cluster(3);
    c.transfer(1, 3).unwrap().unwrap();
    c.stabilize(100).unwrap();
    assert_eq!(c.raft(3).unwrap().role(), Role::Leader);
    // Without the transfer flag, the same request is ignored.
    let term = c.raft(3).unwrap().term();
    c.queue.push_back(Message {
        from: 1,
        to: 2,
        term: term + 1,
        body: Body::Vote {
            last_log: LogId::new(100, term),
            transfer: false,
        },
    });
    c.stabilize(100).unwrap();
    assert_eq!(c.raft(2).unwrap().term(), term);
}

#[test]
fn no_change_starts_while_leadership_is_transferred() {
    let mut c = cluster(3);
    c.partition(&[vec![1, 2], vec![3]]);
    c.transfer(1, 3).unwrap().unwrap();
    assert_eq!(
        c.change(1, &[remove(2)]).unwrap(),
        Err(MembershipError::TransferInProgress { target: 3 })
    );
}

#[test]
fn a_leader_that_won_alone_sends_nothing_before_its_term_is_durable() {
    // Raft Figure 2: term and vote are durable before the node acts on them. A single voter
    // wins without asking anyone; its Appends to a learner wait for that write (chaos seed
    // 19866: it crashed, won the same term again and wrote other entries at the same ids).
    let learner = Membership::from_voters([1])
        .apply_changes(&[add_learner(2)])
        .unwrap();
    let persisted = Persisted {
        entries: vec![Entry {
            index: 1,
            term: 0,
            payload: Payload::Membership(Box::new(learner)),
        }],
        ..Persisted::default()
    };
    let mut r = Raft::restore(Config::new(1, [1]), persisted).unwrap();
    r.campaign();
    assert_eq!(r.role(), Role::Leader);
    let ready = r.take_ready();
    assert!(ready.hard_state.is_some_and(|hs| hs.term == 1));
    assert!(
        ready.send_now.is_empty(),
        "nothing leaves before the term is durable"
    );
    assert!(ready
        .send_after_persist
        .iter()
        .any(|m| m.to == 2 && matches!(m.body, Body::Append { .. })));
    r.persisted(ready.persist_token.unwrap());
    r.step(Message {
        from: 2,
        to: 1,
        term: 1,
        body: Body::AppendResponse {
            base_index: 1,
            result: raftkv_raft::AppendResult::Accepted { match_index: 2 },
        },
    });
    r.take_ready();
    r.propose(Bytes::from_static(b"x")).unwrap();
    let ready = r.take_ready();
    assert!(
        ready.send_now.iter().any(|m| m.to == 2),
        "once durable, replication leaves before the write again (thesis §10.2.1)"
    );
}

#[test]
fn a_removed_follower_learns_its_removal_committed_and_stops_campaigning() {
    // thesis §4.2.2: a node outside its latest configuration still campaigns until that
    // configuration commits; the leader keeps replicating to it so that it learns the commit.
    let mut c = cluster(3);
    let joint = change(&mut c, 1, &[remove(3)]);
    run(&mut c, 12);
    let r3 = c.raft(3).unwrap();
    assert!(r3.is_removed() && r3.status().removed);
    assert!(r3.commit_index() > joint, "n3 learned that C_new committed");
    c.partition(&[vec![1, 2], vec![3]]);
    let term = c.raft(3).unwrap().term();
    c.tick(3, 300).unwrap();
    assert!(c.queue.is_empty(), "no pre-vote, no vote");
    assert_eq!(c.raft(3).unwrap().term(), term);
    assert_eq!(c.raft(3).unwrap().role(), Role::Follower);
}

#[test]
fn a_node_outside_its_uncommitted_latest_configuration_still_campaigns() {
    // thesis §4.2.2, chaos seed 16668: in {1, 2}, node 1 removes itself. C_old,new = {2}&{1, 2}
    // commits; C_new = {2} reaches no one before node 1 restarts (its commit index, written
    // lazily, now says C_new is not committed). Node 2 needs node 1's vote (C_old), which node
    // 1 refuses (its log is longer): only node 1 can win, with node 2's vote (C_new), commit
    // C_new and hand over.
    let mut c = cluster(2);
    let joint = change(&mut c, 1, &[remove(1)]);
    c.deliver(&[2]);
    c.deliver(&[1]); // the joint configuration commits; node 1 appends C_new
    assert_eq!(voters(&c, 1), vec![2]);
    c.queue.clear();
    c.crash(1).unwrap();
    c.restart(1).unwrap();
    let r1 = c.raft(1).unwrap();
    assert!(r1.is_removed(), "its latest configuration excludes it");
    assert!(r1.commit_index() <= joint + 1 && r1.membership_index() == joint + 1);
    run(&mut c, 150);
    assert_eq!(
        c.raft(2).unwrap().role(),
        Role::Leader,
        "node 1 won, then handed over"
    );
    assert_eq!(voters(&c, 2), vec![2]);
    assert!(c.raft(2).unwrap().commit_index() > joint + 1);
    assert_eq!(c.raft(1).unwrap().role(), Role::Follower);
}
