//! The 6.5840 Raft lab's 3B tests (log replication), on the deterministic simulator.
//!
//! Index arithmetic differs from the lab's by the leader's no-op (Raft §8): a leader's first
//! command of a term sits one past its no-op, so where the lab expects index `k` the tests
//! below expect "one past the previous command", or allow for the no-op explicitly.

use bytes::Bytes;
use raftkv_raft::sim::lab::{cmd, cmd_value, run_seeds, ELECTION_TIMEOUT_MS};
use raftkv_raft::sim::{Failure, Sim};
use raftkv_raft::{Index, Rng, Term};

fn basic_agree(seed: u64) -> Result<(), Failure> {
    let servers = 3;
    let mut sim = Sim::lab(servers, seed, false, false);
    let iters = 3;
    for k in 1..=iters {
        // Index 1 is the first leader's no-op: command k lands at k + 1.
        let index = k + 1;
        if sim.n_committed(index).0 > 0 {
            return Err(sim.fail("some have committed before Start()"));
        }
        let xindex = sim.one(cmd(k * 100), servers, false)?;
        if xindex != index {
            return Err(sim.fail(format!("got index {xindex} but expected {index}")));
        }
    }
    Ok(())
}

#[test]
fn basic_agree_3b() {
    run_seeds(0..5, basic_agree);
}

/// Checks, by counting the payload bytes of Appends, that each command is sent to each
/// follower about once.
fn rpc_bytes(seed: u64) -> Result<(), Failure> {
    let servers = 3;
    let mut sim = Sim::lab(servers, seed, false, false);
    let mut rng = Rng::new(seed ^ 0xB17E5);
    let first = sim.one(cmd(99), servers, false)?;
    let bytes0 = sim.stats.append_payload_bytes;

    let iters = 10;
    let mut sent = 0u64;
    for k in 1..=iters {
        let data: Vec<u8> = (0..5_000).map(|_| b'a' + rng.range(0, 26) as u8).collect();
        sent += data.len() as u64;
        let xindex = sim.one(Bytes::from(data), servers, false)?;
        if xindex != first + k {
            return Err(sim.fail(format!("got index {xindex} but expected {}", first + k)));
        }
    }

    let got = sim.stats.append_payload_bytes - bytes0;
    let expected = (servers as u64 - 1) * sent;
    if got > expected + 50_000 {
        return Err(sim.fail(format!(
            "too many RPC bytes; got {got}, expected {expected}"
        )));
    }
    Ok(())
}

#[test]
fn rpc_bytes_3b() {
    run_seeds(0..5, rpc_bytes);
}

/// Nothing new may commit: the highest commit index anyone reached stays `commit`.
fn check_no_commit(sim: &mut Sim, commit: Index, what: &str) -> Result<(), Failure> {
    let now = sim.checker.commit_max;
    if now != commit {
        return Err(sim.fail(format!(
            "{what}: commit index moved from {commit} to {now} without a majority"
        )));
    }
    Ok(())
}

/// Tests just the failure of followers.
fn follower_failure(seed: u64) -> Result<(), Failure> {
    let servers = 3;
    let mut sim = Sim::lab(servers, seed, false, false);
    sim.one(cmd(101), servers, false)?;

    // Disconnect one follower from the network.
    let leader1 = sim.check_one_leader()?;
    sim.disconnect((leader1 + 1) % servers);

    // The leader and the remaining follower should be able to agree despite the
    // disconnected follower.
    sim.one(cmd(102), servers - 1, false)?;
    sim.run_for(ELECTION_TIMEOUT_MS)?;
    let last = sim.one(cmd(103), servers - 1, false)?;

    // Disconnect the remaining follower.
    let leader2 = sim.check_one_leader()?;
    sim.disconnect((leader2 + 1) % servers);
    sim.disconnect((leader2 + 2) % servers);

    // Submit a command.
    let commit = sim.checker.commit_max;
    let index = match sim.propose(leader2, cmd(104)) {
        Ok((index, _)) => index,
        Err(e) => return Err(sim.fail(format!("leader rejected Start(): {e}"))),
    };
    if index != last + 1 {
        return Err(sim.fail(format!("expected index {}, got {index}", last + 1)));
    }

    sim.run_for(2 * ELECTION_TIMEOUT_MS)?;

    // Check that command 104 did not commit.
    let n = sim.n_committed(index).0;
    if n > 0 {
        return Err(sim.fail(format!("{n} committed but no majority")));
    }
    check_no_commit(&mut sim, commit, "followers failed")
}

#[test]
fn follower_failure_3b() {
    run_seeds(0..5, follower_failure);
}

/// Tests just the failure of leaders.
fn leader_failure(seed: u64) -> Result<(), Failure> {
    let servers = 3;
    let mut sim = Sim::lab(servers, seed, false, false);
    sim.one(cmd(101), servers, false)?;

    // Disconnect the first leader.
    let leader1 = sim.check_one_leader()?;
    sim.disconnect(leader1);

    // The remaining followers should elect a new leader.
    sim.one(cmd(102), servers - 1, false)?;
    sim.run_for(ELECTION_TIMEOUT_MS)?;
    let last = sim.one(cmd(103), servers - 1, false)?;

    // Disconnect the new leader.
    let leader2 = sim.check_one_leader()?;
    sim.disconnect(leader2);

    // Submit a command to each server.
    let commit = sim.checker.commit_max;
    for i in 0..servers {
        let _ = sim.propose(i, cmd(104));
    }

    sim.run_for(2 * ELECTION_TIMEOUT_MS)?;

    // Check that command 104 did not commit.
    let n = sim.n_committed(last + 1).0;
    if n > 0 {
        return Err(sim.fail(format!("{n} committed but no majority")));
    }
    check_no_commit(&mut sim, commit, "leaders failed")
}

#[test]
fn leader_failure_3b() {
    run_seeds(0..5, leader_failure);
}

/// Tests that a follower participates after disconnect and re-connect.
fn fail_agree(seed: u64) -> Result<(), Failure> {
    let servers = 3;
    let mut sim = Sim::lab(servers, seed, false, false);
    sim.one(cmd(101), servers, false)?;

    // Disconnect one follower from the network.
    let leader = sim.check_one_leader()?;
    sim.disconnect((leader + 1) % servers);

    // The leader and the remaining follower should be able to agree despite the
    // disconnected follower.
    sim.one(cmd(102), servers - 1, false)?;
    sim.one(cmd(103), servers - 1, false)?;
    sim.run_for(ELECTION_TIMEOUT_MS)?;
    sim.one(cmd(104), servers - 1, false)?;
    sim.one(cmd(105), servers - 1, false)?;

    // Re-connect.
    sim.connect((leader + 1) % servers);

    // The full set of servers should preserve previous agreements, and be able to agree on
    // new commands.
    sim.one(cmd(106), servers, true)?;
    sim.run_for(ELECTION_TIMEOUT_MS)?;
    sim.one(cmd(107), servers, true)?;
    Ok(())
}

#[test]
fn fail_agree_3b() {
    run_seeds(0..5, fail_agree);
}

fn fail_no_agree(seed: u64) -> Result<(), Failure> {
    let servers = 5;
    let mut sim = Sim::lab(servers, seed, false, false);
    let first = sim.one(cmd(10), servers, false)?;

    // 3 of 5 followers disconnect.
    let leader = sim.check_one_leader()?;
    sim.disconnect((leader + 1) % servers);
    sim.disconnect((leader + 2) % servers);
    sim.disconnect((leader + 3) % servers);

    let commit = sim.checker.commit_max;
    let index = match sim.propose(leader, cmd(20)) {
        Ok((index, _)) => index,
        Err(e) => return Err(sim.fail(format!("leader rejected Start(): {e}"))),
    };
    if index != first + 1 {
        return Err(sim.fail(format!("expected index {}, got {index}", first + 1)));
    }

    sim.run_for(2 * ELECTION_TIMEOUT_MS)?;

    let n = sim.n_committed(index).0;
    if n > 0 {
        return Err(sim.fail(format!("{n} committed but no majority")));
    }
    check_no_commit(&mut sim, commit, "3 of 5 disconnected")?;

    // Repair.
    sim.connect((leader + 1) % servers);
    sim.connect((leader + 2) % servers);
    sim.connect((leader + 3) % servers);

    // The disconnected majority may have chosen a leader from among their own ranks,
    // forgetting `index`. The new leader's no-op comes first: at `index` if it forgot the
    // uncommitted command, after it if it kept it (the lab's "2 or 3").
    let leader2 = sim.check_one_leader()?;
    let index2 = match sim.propose(leader2, cmd(30)) {
        Ok((index2, _)) => index2,
        Err(e) => return Err(sim.fail(format!("leader2 rejected Start(): {e}"))),
    };
    if !(index + 1..=index + 2).contains(&index2) {
        return Err(sim.fail(format!(
            "unexpected index {index2} (expected {} or {})",
            index + 1,
            index + 2
        )));
    }

    sim.one(cmd(1000), servers, true)?;
    Ok(())
}

#[test]
fn fail_no_agree_3b() {
    run_seeds(0..5, fail_no_agree);
}

fn concurrent_starts(seed: u64) -> Result<(), Failure> {
    let servers = 3;
    let mut sim = Sim::lab(servers, seed, false, false);
    'tries: for attempt in 0..5 {
        if attempt > 0 {
            // Give the cluster some time to settle.
            sim.run_for(3_000)?;
        }
        let leader = sim.check_one_leader()?;
        let Ok((_, term)) = sim.propose(leader, cmd(1)) else {
            // The leader moved on really quickly.
            continue;
        };

        // Five "concurrent" Start()s: all at the same virtual instant.
        let iters = 5;
        let mut indexes = Vec::new();
        for k in 0..iters {
            if let Ok((index, t)) = sim.propose(leader, cmd(100 + k)) {
                if t == term {
                    indexes.push(index);
                }
            }
        }

        for j in 0..servers {
            if sim.raft(j).map(|r| r.term()) != Some(term) {
                // The term changed: can't expect all Start()s to have succeeded.
                continue 'tries;
            }
        }

        let mut cmds = Vec::new();
        for index in indexes {
            match sim.wait(index, servers, Some(term))? {
                // Peers moved on to later terms.
                None => continue 'tries,
                Some(c) => match cmd_value(&c) {
                    Some(x) => cmds.push(x),
                    None => return Err(sim.fail(format!("value at {index} is not an int"))),
                },
            }
        }
        for k in 0..iters {
            if !cmds.contains(&(100 + k)) {
                return Err(sim.fail(format!("cmd {} missing in {cmds:?}", 100 + k)));
            }
        }
        return Ok(());
    }
    Err(sim.fail("term changed too often"))
}

#[test]
fn concurrent_starts_3b() {
    run_seeds(0..5, concurrent_starts);
}

fn rejoin(seed: u64) -> Result<(), Failure> {
    let servers = 3;
    let mut sim = Sim::lab(servers, seed, false, false);
    sim.one(cmd(101), servers, true)?;

    // Leader network failure.
    let leader1 = sim.check_one_leader()?;
    sim.disconnect(leader1);

    // Make the old leader try to agree on some entries.
    for x in [102, 103, 104] {
        let _ = sim.propose(leader1, cmd(x));
    }

    // The new leader commits, also for the old leader's first index.
    sim.one(cmd(103), 2, true)?;

    // New leader network failure.
    let leader2 = sim.check_one_leader()?;
    sim.disconnect(leader2);

    // Old leader connected again.
    sim.connect(leader1);
    sim.one(cmd(104), 2, true)?;

    // All together now.
    sim.connect(leader2);
    sim.one(cmd(105), servers, true)?;
    Ok(())
}

#[test]
fn rejoin_3b() {
    run_seeds(0..5, rejoin);
}

/// A node's log as (index, term) pairs, from its first in-memory entry.
fn log_terms(sim: &Sim, i: usize) -> Vec<(Index, Term)> {
    let Some(r) = sim.raft(i) else {
        return Vec::new();
    };
    let s = r.status();
    (s.first_index..=s.last_index)
        .filter_map(|x| r.term_at(x).map(|t| (x, t)))
        .collect()
}

/// The rejection budget for followers catching up with `leader`, given every node's log from
/// before the catch-up began (`before`, by node; the leader's own among them).
///
/// With the 6.5840 conflict hint (XTerm, XIndex, XLen) a leader needs, per follower:
/// - at most one rejection because the follower's log is shorter than the leader's guess
///   (answered with XLen: the leader jumps to the follower's end),
/// - at most one rejection per term of the follower's conflicting suffix (answered with XTerm
///   and XIndex: the leader skips that whole term),
/// - and one more where the leader's jump (to its own last entry of XTerm) lands inside a
///   term both logs hold but that still conflicts further back.
///
/// So the budget is, summed over the followers that had to back up at all (a suffix that
/// conflicts with the leader's log, or a log shorter than the leader's was), `conflicting
/// terms + 2`. Here that is 3 for each of the two followers with 50 stale entries of one
/// term: a leader that backs up one entry per round trip needs about 50 each and fails by far.
fn backup_budget(sim: &Sim, leader: usize, before: &[(usize, Vec<(Index, Term)>)]) -> u64 {
    let leader_log = log_terms(sim, leader);
    let leader_term_at = |x: Index| {
        leader_log
            .binary_search_by_key(&x, |&(i, _)| i)
            .ok()
            .map(|p| leader_log[p].1)
    };
    let last_of = |log: &[(Index, Term)]| log.last().map_or(0, |&(i, _)| i);
    let leader_last = before
        .iter()
        .find(|(node, _)| *node == leader)
        .map_or(last_of(&leader_log), |(_, log)| last_of(log));
    let mut budget = 0;
    for (node, log) in before {
        if *node == leader {
            continue;
        }
        let mut conflicting: Vec<Term> = log
            .iter()
            .filter(|&&(x, t)| leader_term_at(x) != Some(t))
            .map(|&(_, t)| t)
            .collect();
        conflicting.dedup();
        if !conflicting.is_empty() || last_of(log) < leader_last {
            budget += conflicting.len() as u64 + 2;
        }
    }
    budget
}

/// The leader backs up quickly over incorrect follower logs.
fn backup(seed: u64) -> Result<(), Failure> {
    let servers = 5;
    let mut sim = Sim::lab(servers, seed, false, false);
    let mut rng = Rng::new(seed ^ 0xBAC0);
    let mut rand_cmd = || cmd(rng.next_u64());
    sim.one(rand_cmd(), servers, true)?;

    // Put the leader and one follower in a partition.
    let leader1 = sim.check_one_leader()?;
    sim.disconnect((leader1 + 2) % servers);
    sim.disconnect((leader1 + 3) % servers);
    sim.disconnect((leader1 + 4) % servers);

    // Submit lots of commands that won't commit.
    for _ in 0..50 {
        let _ = sim.propose(leader1, rand_cmd());
    }
    sim.run_for(ELECTION_TIMEOUT_MS / 2)?;

    sim.disconnect(leader1);
    sim.disconnect((leader1 + 1) % servers);

    // Allow the other partition to recover.
    sim.connect((leader1 + 2) % servers);
    sim.connect((leader1 + 3) % servers);
    sim.connect((leader1 + 4) % servers);

    // Lots of successful commands to the new group.
    for _ in 0..50 {
        sim.one(rand_cmd(), 3, true)?;
    }

    // Now another partitioned leader and one follower.
    let leader2 = sim.check_one_leader()?;
    let mut other = (leader1 + 2) % servers;
    if leader2 == other {
        other = (leader2 + 1) % servers;
    }
    sim.disconnect(other);

    // Lots more commands that won't commit.
    for _ in 0..50 {
        let _ = sim.propose(leader2, rand_cmd());
    }
    sim.run_for(ELECTION_TIMEOUT_MS / 2)?;

    // Bring the original leader back to life.
    for i in 0..servers {
        sim.disconnect(i);
    }
    let group = [leader1, (leader1 + 1) % servers, other];
    let before: Vec<_> = group.iter().map(|&i| (i, log_terms(&sim, i))).collect();
    let rejections0 = sim.stats.append_rejections;
    for &i in &group {
        sim.connect(i);
    }

    // Lots of successful commands to the new group: the first needs the original leader and
    // its follower to back up over their 50 stale entries.
    for _ in 0..50 {
        sim.one(rand_cmd(), 3, true)?;
    }
    let leader3 = sim.check_one_leader()?;
    let rejections = sim.stats.append_rejections - rejections0;
    let budget = backup_budget(&sim, leader3, &before);
    if rejections > budget {
        return Err(sim.fail(format!(
            "the leader backed up slowly: {rejections} rejected Appends while n{} and n{} caught up (budget {budget})",
            leader1 + 1,
            (leader1 + 1) % servers + 1
        )));
    }

    // Now everyone: leader2 and its follower back up over their 50 stale entries.
    let before: Vec<_> = (0..servers).map(|i| (i, log_terms(&sim, i))).collect();
    let rejections0 = sim.stats.append_rejections;
    for i in 0..servers {
        sim.connect(i);
    }
    sim.one(rand_cmd(), servers, true)?;
    let leader4 = sim.check_one_leader()?;
    let rejections = sim.stats.append_rejections - rejections0;
    let budget = backup_budget(&sim, leader4, &before);
    if rejections > budget {
        return Err(sim.fail(format!(
            "the leader backed up slowly: {rejections} rejected Appends while everyone caught up (budget {budget})"
        )));
    }
    Ok(())
}

#[test]
fn backup_3b() {
    run_seeds(0..10, backup);
}

fn count(seed: u64) -> Result<(), Failure> {
    let servers = 3;
    let mut sim = Sim::lab(servers, seed, false, false);
    let mut rng = Rng::new(seed ^ 0xC0C0);

    sim.check_one_leader()?;
    let total1 = sim.rpc_total();
    if !(1..=30).contains(&total1) {
        return Err(sim.fail(format!(
            "too many or few RPCs ({total1}) to elect initial leader"
        )));
    }

    let iters = 10;
    let mut total2 = 0;
    let mut success = false;
    'tries: for attempt in 0..5 {
        if attempt > 0 {
            // Give the cluster some time to settle.
            sim.run_for(3_000)?;
        }
        let leader = sim.check_one_leader()?;
        let total1 = sim.rpc_total();

        let Ok((starti, term)) = sim.propose(leader, cmd(1)) else {
            // The leader moved on really quickly.
            continue;
        };
        let mut cmds = Vec::new();
        for k in 1..iters + 2 {
            let x = rng.next_u64() >> 33;
            cmds.push(x);
            match sim.propose(leader, cmd(x)) {
                Ok((index, t)) if t == term => {
                    if index != starti + k {
                        return Err(sim.fail("Start() failed"));
                    }
                }
                // No longer the leader, or a new term: try again.
                _ => continue 'tries,
            }
        }

        for k in 1..iters + 1 {
            let got = sim.wait(starti + k, servers, Some(term))?;
            match got {
                None => continue 'tries,
                Some(c) if cmd_value(&c) == Some(cmds[k as usize - 1]) => {}
                Some(c) => {
                    return Err(sim.fail(format!(
                        "wrong value {:?} committed for index {}; expected {cmds:?}",
                        cmd_value(&c),
                        starti + k
                    )))
                }
            }
        }

        total2 = sim.rpc_total();
        if (0..servers).any(|j| sim.raft(j).map(|r| r.term()) != Some(term)) {
            // The term changed: can't expect low RPC counts.
            continue;
        }
        let used = total2 - total1;
        if used > (iters + 1 + 3) * 3 {
            return Err(sim.fail(format!("too many RPCs ({used}) for {iters} entries")));
        }
        success = true;
        break;
    }
    if !success {
        return Err(sim.fail("term changed too often"));
    }

    sim.run_for(ELECTION_TIMEOUT_MS)?;
    let total3 = sim.rpc_total();
    if total3 - total2 > 3 * 20 {
        return Err(sim.fail(format!(
            "too many RPCs ({}) for 1 second of idleness",
            total3 - total2
        )));
    }
    Ok(())
}

#[test]
fn count_3b() {
    run_seeds(0..10, count);
}
