//! The 6.5840 Raft lab's 3D tests (log compaction), on the deterministic simulator.
//!
//! The test service snapshots every [`SNAPSHOT_INTERVAL`] applied entries, as the lab's does.
//! The lab bounds the persisted Raft state (`MAXLOGSIZE`); here the bound is on the entries a
//! node keeps in memory after its snapshot (`last_index - snapshot_index`), which must stay
//! near the snapshot interval once the node has applied what it holds.

use raftkv_raft::sim::lab::{cmd, run_seeds, SNAPSHOT_INTERVAL};
use raftkv_raft::sim::{Failure, Sim};
use raftkv_raft::Rng;

/// Entries a caught-up node may keep after its snapshot: fewer than one interval are applied
/// since the last snapshot, plus another interval's worth of entries appended but not yet
/// applied, plus slack.
const LOG_LEN_MAX: u64 = 2 * SNAPSHOT_INTERVAL + 5;

/// The lab's log-size check: every live node's in-memory log is bounded.
fn check_log_size(sim: &mut Sim) -> Result<(), Failure> {
    for i in 0..sim.n() {
        if let Some(len) = sim.log_len(i) {
            if len > LOG_LEN_MAX {
                let msg = format!(
                    "log size too large: n{} keeps {len} entries after its snapshot (at most {LOG_LEN_MAX})\n{}",
                    i + 1,
                    sim.describe_all()
                );
                return Err(sim.fail(msg));
            }
        }
    }
    Ok(())
}

/// The log was compacted on every node: its first index moved past the start.
fn check_compacted(sim: &mut Sim) -> Result<(), Failure> {
    for i in 0..sim.n() {
        if let Some(r) = sim.raft(i) {
            let s = r.status();
            if s.snapshot_index == 0 || s.first_index <= 1 {
                let msg = format!(
                    "n{} never compacted its log (first index {}, snapshot {})",
                    i + 1,
                    s.first_index,
                    s.snapshot_index
                );
                return Err(sim.fail(msg));
            }
        }
    }
    Ok(())
}

/// Would `victim` need the leader's snapshot to catch up (the leader compacted entries
/// the victim lacks)?
fn needs_snapshot(sim: &Sim, victim: usize) -> bool {
    let (Some(l), Some(v)) = (sim.leader(), sim.raft(victim)) else {
        return false;
    };
    let leader_snapshot = sim.raft(l).map_or(0, |r| r.status().snapshot_index);
    l != victim && v.status().last_index < leader_snapshot
}

/// The lab's `snapcommon`: 30 rounds of enough commands to snapshot, with the victim (a
/// follower, or one time in three the leader) disconnected or crashed meanwhile, so that
/// it may need an InstallSnapshot to catch up when it returns.
fn snapcommon(seed: u64, disconnect: bool, reliable: bool, crash: bool) -> Result<(), Failure> {
    let iters = 30;
    let servers = 3;
    let mut sim = Sim::lab(servers, seed, !reliable, true);
    let mut rng = Rng::new(seed ^ 0x5A4);
    let mut rand_cmd = || cmd(rng.next_u64());

    sim.one(rand_cmd(), servers, true)?;
    let mut leader1 = sim.check_one_leader()?;
    let mut installs_needed = 0;

    for i in 0..iters {
        let (mut victim, mut sender) = ((leader1 + 1) % servers, leader1);
        if i % 3 == 1 {
            (victim, sender) = (leader1, (leader1 + 1) % servers);
        }

        if disconnect {
            sim.disconnect(victim);
            sim.one(rand_cmd(), servers - 1, true)?;
        }
        if crash {
            sim.crash1(victim);
            sim.one(rand_cmd(), servers - 1, true)?;
        }

        // Perhaps send enough to get a snapshot.
        let nn = SNAPSHOT_INTERVAL / 2 + rng_range(&mut sim, SNAPSHOT_INTERVAL);
        for _ in 0..nn {
            let _ = sim.propose(sender, rand_cmd());
        }

        // Let the appliers catch up with the Start()s.
        if !disconnect && !crash {
            // Make sure all followers have caught up, so that an InstallSnapshot is not
            // needed for the basic test.
            sim.one(rand_cmd(), servers, true)?;
        } else {
            sim.one(rand_cmd(), servers - 1, true)?;
        }
        check_log_size(&mut sim)?;

        if disconnect {
            // Reconnect a follower, which may be behind and need a snapshot to catch up.
            installs_needed += needs_snapshot(&sim, victim) as u32;
            sim.connect(victim);
            sim.one(rand_cmd(), servers, true)?;
            check_log_size(&mut sim)?;
            leader1 = sim.check_one_leader()?;
        }
        if crash {
            sim.start1(victim);
            installs_needed += needs_snapshot(&sim, victim) as u32;
            sim.connect(victim);
            sim.one(rand_cmd(), servers, true)?;
            check_log_size(&mut sim)?;
            leader1 = sim.check_one_leader()?;
        }
    }
    check_compacted(&mut sim)?;
    if (disconnect || crash) && installs_needed == 0 {
        return Err(sim.fail(
            "no victim ever fell behind the leader's snapshot: InstallSnapshot was not exercised",
        ));
    }
    Ok(())
}

/// `0..n` from the simulator's own random stream.
fn rng_range(sim: &mut Sim, n: u64) -> u64 {
    sim.rng().range(0, n)
}

#[test]
fn snapshot_basic_3d() {
    run_seeds(0..5, |seed| snapcommon(seed, false, true, false));
}

#[test]
fn snapshot_install_3d() {
    run_seeds(0..5, |seed| snapcommon(seed, true, true, false));
}

#[test]
fn snapshot_install_unreliable_3d() {
    run_seeds(0..5, |seed| snapcommon(seed, true, false, false));
}

#[test]
fn snapshot_install_crash_3d() {
    run_seeds(0..5, |seed| snapcommon(seed, false, true, true));
}

#[test]
fn snapshot_install_uncrash_3d() {
    run_seeds(0..5, |seed| snapcommon(seed, false, false, true));
}

/// Crash and restart every server: do they persist their snapshots, and restart from the
/// snapshot along with the tail of the log?
fn snapshot_all_crash(seed: u64) -> Result<(), Failure> {
    let servers = 3;
    let iters = 5;
    let mut sim = Sim::lab(servers, seed, false, true);
    let mut rng = Rng::new(seed ^ 0xA11C);
    sim.one(cmd(rng.next_u64()), servers, true)?;

    for _ in 0..iters {
        // Perhaps enough to get a snapshot.
        let nn = SNAPSHOT_INTERVAL / 2 + rng.range(0, SNAPSHOT_INTERVAL);
        for _ in 0..nn {
            sim.one(cmd(rng.next_u64()), servers, true)?;
        }
        let index1 = sim.one(cmd(rng.next_u64()), servers, true)?;

        // Crash all, then revive all.
        for i in 0..servers {
            sim.crash1(i);
        }
        for i in 0..servers {
            sim.start1(i);
            sim.connect(i);
        }

        let index2 = sim.one(cmd(rng.next_u64()), servers, true)?;
        if index2 < index1 + 1 {
            return Err(sim.fail(format!("index decreased from {index1} to {index2}")));
        }
        check_log_size(&mut sim)?;
    }
    check_compacted(&mut sim)
}

#[test]
fn snapshot_all_crash_3d() {
    run_seeds(0..5, snapshot_all_crash);
}

/// Crash all, revive all and check that each came back from its snapshot (not from an empty
/// log): the lab's "do servers initialize their in-memory copy of the snapshot, so that
/// later writes to persistent state don't lose it?".
fn crash_and_revive_all(sim: &mut Sim) -> Result<(), Failure> {
    let servers = sim.n();
    for i in 0..servers {
        sim.crash1(i);
    }
    for i in 0..servers {
        sim.start1(i);
        sim.connect(i);
    }
    for i in 0..servers {
        let s = sim.raft(i).expect("just restarted").status();
        if s.snapshot_index == 0 || s.first_index != s.snapshot_index + 1 {
            let msg = format!(
                "n{} restarted without its snapshot (snapshot {}, first index {})",
                i + 1,
                s.snapshot_index,
                s.first_index
            );
            return Err(sim.fail(msg));
        }
    }
    Ok(())
}

fn snapshot_init(seed: u64) -> Result<(), Failure> {
    let servers = 3;
    let mut sim = Sim::lab(servers, seed, false, true);
    let mut rng = Rng::new(seed ^ 0x1417);
    sim.one(cmd(rng.next_u64()), servers, true)?;

    // Enough ops to make a snapshot.
    for _ in 0..SNAPSHOT_INTERVAL + 1 {
        sim.one(cmd(rng.next_u64()), servers, true)?;
    }

    crash_and_revive_all(&mut sim)?;

    // A single op, to get something written back to persistent storage.
    sim.one(cmd(rng.next_u64()), servers, true)?;

    crash_and_revive_all(&mut sim)?;

    // Another op, to trigger a potential bug.
    sim.one(cmd(rng.next_u64()), servers, true)?;
    Ok(())
}

#[test]
fn snapshot_init_3d() {
    run_seeds(0..10, snapshot_init);
}
