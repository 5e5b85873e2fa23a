//! The real driver ([`Node`]) under the deterministic simulation runtime: seeds with crashes,
//! partitions, one-way blocked links, message loss and duplication, paused nodes (a stopped
//! process: it resumes with its timers late) and clocks ticking at different rates, checked for
//! Election Safety, State Machine Safety, durability of every acknowledged write, and liveness
//! after healing; every node checks its own invariants (log matching among them) after every
//! input, in release builds too. In some seeds the disks fail too (issue 21, [`disk`]): a
//! write fails like an `fsync` error, durable or not, the node fail-stops, and a supervisor
//! restarts it on a repaired disk; a crash is a process kill (the write in flight lands) or a
//! power cut (it is lost or torn); a stored entry rots, the restart finds it by its checksum
//! and the node stays down; disks turn slow for a while. No acknowledged write may be lost for
//! any of it. Every node reports its events
//! to one observer ([`TraceCheck`]), which checks the trace as it grows: Election Safety from
//! the role events, applies in order without gaps, a commit index that never falls within a
//! run, and every message received matching one sent. A failing seed replays:
//! `RAFTKV_SEED=<n> cargo test --release -p raftkv-raft --test driver_sim -- replay --ignored`.

use bytes::Bytes;
use raftkv_raft::runtime::sim::SimRuntime;
use raftkv_raft::{
    MemberAddrs, MemberChange, MembershipError, NodeError, ReconfigError, Role, Runtime,
};
use std::time::Duration;

#[path = "driver_sim/checks.rs"]
mod checks;
#[path = "driver_sim/cluster.rs"]
mod cluster;
#[path = "driver_sim/disk.rs"]
mod disk;
use cluster::Cluster;
use disk::{Checks, DiskCounts};

/// What one seeded run did.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    acked: u64,
    faults: usize,
    recovery: Duration,
    disk: DiskCounts,
    /// Issue 20: snapshots read on demand, snapshots installed by durable nodes, durable
    /// states' commits lost at a power cut, their commits in flight lost at a crash, and
    /// reads made while one was in flight.
    on_demand: u64,
    durable_installs: u64,
    lost_commits: u64,
    in_flight_lost: u64,
    in_flight_reads: u64,
    /// Issue 20: snapshot reads run off the loop, and how their results fared.
    off_loop: OffLoop,
    /// Issue 20, the trailing log: followers behind where a compaction would have gone
    /// without it that caught up from the log kept.
    from_tail: u64,
}

/// Issue 20: snapshot reads run off the loop — for a compaction (in-memory nodes) and for a
/// transfer (durable ones) — those that were used, those used though the node had applied
/// more meanwhile, and those dropped (the node had moved on: compacted past them, or a crash).
#[derive(Debug, Default, PartialEq, Eq, Clone, Copy)]
struct OffLoop {
    compaction: u64,
    transfer: u64,
    taken: u64,
    taken_behind: u64,
    dropped: u64,
}

impl std::ops::AddAssign for OffLoop {
    fn add_assign(&mut self, o: Self) {
        self.compaction += o.compaction;
        self.transfer += o.transfer;
        self.taken += o.taken;
        self.taken_behind += o.taken_behind;
        self.dropped += o.dropped;
    }
}

/// One seeded run with the disks' checksums on.
fn run_seed(seed: u64) -> Outcome {
    run_seed_with(seed, Checks::On)
}

/// One seeded run: ~5 s of load with faults, then heal and require progress. With
/// `Checks::Off` every seed has disk faults and every power cut corrupts a stored entry (of
/// one node per run), to show what the checksums stop.
fn run_seed_with(seed: u64, checks: Checks) -> Outcome {
    let rt = SimRuntime::new(seed);
    let r2 = rt.clone();
    rt.block_on(async move {
        let rt = r2;
        let n = 3 + (seed % 3) as usize;
        let mut c = Cluster::with_checks(seed, n, &rt, checks);
        // Issue 20: in three seeds of four a snapshot read off the loop finishes up to 300 ms
        // after it started (else at once): the node applies more, compacts, loses or gains
        // leadership meanwhile.
        if seed % 2 == 1 || seed % 4 == 2 {
            rt.set_blocking_delay_ms(Some((0, 300)));
        }
        // Clock-rate skew: most nodes' clocks run up to 10% fast or slow.
        for id in 1..=n as u64 {
            if rt.chance(0.7) {
                rt.set_clock_per_mille(id, rt.random(900, 1_101));
            }
        }
        if rt.chance(0.5) {
            c.net.set_duplicate_chance(0.05);
        }
        // Issue 21: disk faults in some seeds: a write failing now and then, power cuts that
        // lose or tear the write in flight, a stored entry rotting (on one node at most, so
        // that a majority keeps its data), slow disks.
        let disk_faults = rt.chance(0.3) || checks == Checks::Off;
        let corrupt_chance = if checks == Checks::Off { 1.0 } else { 0.35 };
        let mut corrupted: Option<usize> = None;
        if disk_faults {
            for s in &c.storages {
                s.set_write_error_chance(0.01);
            }
        }
        // Issue 20: in one seed of five a received snapshot's spool fails now and then
        // (chunks are small here: a transfer is tens of them); the node stops and restarts.
        if seed % 5 == 3 {
            for s in &c.storages {
                s.set_spool_error_chance(0.05);
            }
        }
        for i in 0..n {
            c.start(i).await;
        }
        let mut acked: Vec<(u64, Bytes)> = Vec::new();
        let mut faults = 0;
        let mut next_fault = Duration::from_millis(rt.random(300, 900));
        let mut cmd = 0u64;
        while rt.now() < Duration::from_secs(5) {
            rt.sleep(Duration::from_millis(rt.random(5, 40))).await;
            c.resume_due(false);
            // A node whose disk failed stops itself (fail-stop); its supervisor restarts it.
            for i in 0..n {
                if c.nodes[i].is_some() && c.storages[i].has_failed() {
                    c.crash(i, false);
                    c.start(i).await;
                }
            }
            if let Some(l) = c.leader().await {
                cmd += 1;
                let data = Bytes::from(format!("s{seed}c{cmd}"));
                let node = c.nodes[l].clone().expect("leader is up");
                match node.propose(data.clone()).await {
                    Ok(index) => acked.push((index, data)),
                    Err(NodeError::NotLeader { .. } | NodeError::Timeout | NodeError::Shutdown) => {
                    }
                    Err(NodeError::OutcomeUnknown) => {}
                    // The leader's disk failed: it stopped without acknowledging.
                    Err(NodeError::Storage(_)) if disk_faults => {}
                    Err(e) => panic!("RAFTKV_SEED={seed}: unexpected error {e}"),
                }
                if rt.chance(0.2) {
                    let _ = node.linearizable_read(Bytes::new()).await;
                }
            }
            if rt.now() >= next_fault {
                next_fault = rt.now() + Duration::from_millis(rt.random(200, 1_000));
                faults += 1;
                let i = rt.random(0, n as u64) as usize;
                match rt.random(0, 9) {
                    0 | 1 => {
                        if c.nodes[i].is_some() {
                            // Issue 20: a durable state's machine loses power in every seed
                            // (what it loses is the state's to survive, not the disk's fault).
                            let power_cut =
                                (disk_faults || c.durable[i].is_some()) && rt.chance(0.5);
                            if disk_faults {
                                // Crash amid a write (within 50 ms), what the disk faults are
                                // about: a command (never acknowledged) to make one.
                                if let Some(l) = c.leader().await {
                                    let node = c.nodes[l].clone().expect("leader is up");
                                    let data = Bytes::from(format!("s{seed}crash{faults}"));
                                    rt.spawn(async move {
                                        let _ = node.propose(data).await;
                                    });
                                }
                                for _ in 0..50 {
                                    if c.storages[i].has_unsynced() {
                                        break;
                                    }
                                    rt.sleep(Duration::from_millis(1)).await;
                                }
                            }
                            c.crash(i, power_cut);
                            if disk_faults
                                && power_cut
                                && corrupted.is_none_or(|j| j == i)
                                && rt.chance(corrupt_chance)
                                && c.storages[i].corrupt_an_entry()
                            {
                                corrupted = Some(i);
                            }
                        } else {
                            c.start(i).await;
                        }
                    }
                    2 => {
                        let split = rt.random(1, n as u64);
                        let ids: Vec<u64> = (1..=n as u64).collect();
                        c.net.partition(&[
                            ids[..split as usize].to_vec(),
                            ids[split as usize..].to_vec(),
                        ]);
                    }
                    3 => c
                        .net
                        .set_drop_chance(if rt.chance(0.5) { 0.1 } else { 0.0 }),
                    4 => {
                        // One way: i's messages to j are lost, j's reach i.
                        let j = rt.random(0, n as u64) as usize;
                        if i != j {
                            c.net.block(i as u64 + 1, j as u64 + 1);
                        }
                    }
                    5 | 6 => {
                        // Pause the leader (or any node) for less or more than an election
                        // timeout.
                        let target = match c.leader().await {
                            Some(l) if rt.chance(0.6) => l,
                            _ => i,
                        };
                        if c.nodes[target].is_some() && c.paused_until[target].is_none() {
                            let ms = match rt.chance(0.5) {
                                true => rt.random(20, 300),
                                false => rt.random(300, 1_500),
                            };
                            c.pause(target, Duration::from_millis(ms));
                        }
                    }
                    7 => c
                        .net
                        .set_duplicate_chance(if rt.chance(0.5) { 0.05 } else { 0.0 }),
                    _ => c.net.heal(),
                }
                if disk_faults && rt.chance(0.3) {
                    let j = rt.random(0, n as u64) as usize;
                    let ms = rt.random(200, 2_000);
                    c.storages[j].slow_down(Duration::from_millis(ms), rt.random(10, 51));
                }
            }
        }
        // Heal and require liveness: a command commits and every node applies it.
        for i in 0..n {
            c.storages[i].set_write_error_chance(0.0);
            c.storages[i].set_spool_error_chance(0.0);
            if c.storages[i].has_failed() {
                c.crash(i, false);
            }
        }
        c.net.heal();
        c.net.set_drop_chance(0.0);
        c.resume_due(true);
        for i in 0..n {
            if c.nodes[i].is_none() {
                c.start(i).await;
            }
        }
        let healed = rt.now();
        let probe = Bytes::from(format!("s{seed}probe"));
        let index = loop {
            assert!(
                rt.now() < healed + Duration::from_secs(10),
                "RAFTKV_SEED={seed}: liveness: nothing committed within 10 s of healing"
            );
            rt.sleep(Duration::from_millis(50)).await;
            let Some(l) = c.leader().await else { continue };
            let node = c.nodes[l].clone().expect("leader is up");
            if let Ok(index) = node.propose(probe.clone()).await {
                break index;
            }
        };
        loop {
            let mut all = true;
            for node in c.nodes.iter().flatten() {
                let applied = node.status().await.map_or(0, |s| s.applied_index);
                all &= applied >= index;
            }
            if all {
                break;
            }
            assert!(
                rt.now() < healed + Duration::from_secs(20),
                "RAFTKV_SEED={seed}: liveness: not every node applied {index}"
            );
            rt.sleep(Duration::from_millis(50)).await;
        }
        // Every acknowledged write is in the committed log, at the index it was acknowledged.
        let global = c.global.lock().unwrap().clone();
        for (index, data) in &acked {
            assert_eq!(
                global.get(index),
                Some(data),
                "RAFTKV_SEED={seed}: acknowledged write at {index} was lost"
            );
        }
        let recovery = rt.now() - healed;
        for node in c.nodes.iter().flatten() {
            node.shutdown().await;
        }
        assert!(faults >= 3, "RAFTKV_SEED={seed}: only {faults} faults");
        let mut disk = DiskCounts::default();
        for s in &c.storages {
            disk += s.counts();
        }
        // Every corruption was found, at the start that loaded it; the node stayed down.
        assert_eq!(
            disk.corruptions, disk.corruptions_detected,
            "RAFTKV_SEED={seed}: a corrupted entry was loaded unnoticed"
        );
        let events = c.trace.state.lock().unwrap().events;
        assert!(
            events > 100,
            "RAFTKV_SEED={seed}: the trace saw only {events} events"
        );
        let (on_demand, durable_installs, mut off_loop, from_tail) = {
            let t = c.trace.state.lock().unwrap();
            let mut off_loop = OffLoop {
                taken_behind: t.taken_behind,
                ..OffLoop::default()
            };
            if let Some(reads) = &c.reads {
                let r = reads.lock().unwrap();
                off_loop.compaction = r.compaction.len() as u64;
                off_loop.transfer = r.transfer.len() as u64;
                let used =
                    |read: &&(u64, u64)| t.taken.contains(read) || t.on_demand_at.contains(read);
                off_loop.taken = r.compaction.iter().filter(used).count() as u64;
                off_loop.dropped = r
                    .compaction
                    .iter()
                    .chain(&r.transfer)
                    .filter(|x| !used(x))
                    .count() as u64;
            }
            let from_tail = t.from_tail.len() as u64;
            (t.on_demand, t.durable_installs, off_loop, from_tail)
        };
        if c.reads.is_none() {
            off_loop.taken_behind = 0;
        }
        let (mut lost_commits, mut in_flight_lost, mut in_flight_reads) = (0, 0, 0);
        for (d, _) in c.durable.iter().flatten() {
            let d = d.lock().unwrap();
            lost_commits += d.lost_commits;
            in_flight_lost += d.in_flight_lost;
            in_flight_reads += d.in_flight_reads;
        }
        Outcome {
            acked: acked.len() as u64,
            faults,
            recovery,
            disk,
            on_demand,
            durable_installs,
            lost_commits,
            off_loop,
            in_flight_lost,
            in_flight_reads,
            from_tail,
        }
    })
    .unwrap_or_else(|| panic!("RAFTKV_SEED={seed}: the simulation deadlocked"))
}

#[test]
fn driver_survives_200_seeds_of_faults() {
    let mut acked = 0;
    let mut disk = DiskCounts::default();
    let (mut on_demand, mut durable_installs, mut lost_commits) = (0, 0, 0);
    let mut off_loop = OffLoop::default();
    let (mut in_flight_lost, mut in_flight_reads, mut from_tail) = (0, 0, 0);
    for seed in 0..200 {
        let outcome = run_seed(seed);
        from_tail += outcome.from_tail;
        off_loop += outcome.off_loop;
        acked += outcome.acked;
        disk += outcome.disk;
        on_demand += outcome.on_demand;
        durable_installs += outcome.durable_installs;
        lost_commits += outcome.lost_commits;
        in_flight_lost += outcome.in_flight_lost;
        in_flight_reads += outcome.in_flight_reads;
    }
    assert!(
        acked > 1_000,
        "too little progress: {acked} acknowledged writes"
    );
    println!(
        "issue 20: {on_demand} snapshots read on demand, {durable_installs} installed by \
         durable nodes, {lost_commits} durable commits lost at a power cut, \
         {in_flight_lost} commits in flight lost at a crash, {in_flight_reads} reads while one \
         was in flight"
    );
    println!("200 seeds: {acked} acknowledged writes; disk faults: {disk:?}");
    println!("issue 20: snapshot reads off the loop: {off_loop:?}");
    println!("issue 20: followers caught up from the trailing log: {from_tail}");
    // Each kind of disk fault happened, often enough to matter.
    let DiskCounts {
        write_errors,
        unsynced_kept,
        unsynced_lost,
        torn_writes,
        corruptions,
        corruptions_detected: _,
        slow_writes,
        spooled_chunks,
        spool_errors,
    } = disk;
    for (what, count, at_least) in [
        ("failed writes", write_errors, 20),
        ("in-flight writes kept at a kill", unsynced_kept, 10),
        ("in-flight writes lost at a power cut", unsynced_lost, 2),
        // A coin flip per write in flight at a power cut (12-18 such writes in these seeds):
        // 3 torn with the driver polling its writes itself, 6 with a storage task before it.
        ("torn writes", torn_writes, 3),
        // A 35% chance per power cut in a disk-fault seed (6 in these seeds; at 20% the
        // schedule of issue 20's commits behind the state machine made 1-2 of them).
        ("corrupted entries", corruptions, 3),
        ("writes on a slow disk", slow_writes, 100),
        // Issue 20: received snapshots go to a spool on the disk, chunk by chunk, and a
        // spool's failed append stops the node like a failed write.
        ("snapshot chunks spooled", spooled_chunks, 1_000),
        ("failed spool appends", spool_errors, 2),
        // Issue 20: durable leaders send snapshots they read on demand, durable followers
        // install them, and power cuts lose unsynced commits of durable states.
        ("snapshots read on demand", on_demand, 10),
        ("snapshots installed by durable nodes", durable_installs, 10),
        ("durable commits lost at a power cut", lost_commits, 2),
        // Issue 20: snapshots read off the loop, for compactions and for transfers; taken
        // though the node applied more while they were read; dropped as the node moved on.
        (
            "snapshot reads off the loop for a compaction",
            off_loop.compaction,
            1,
        ),
        (
            "snapshot reads off the loop for a transfer",
            off_loop.transfer,
            1,
        ),
        ("compactions by a read off the loop", off_loop.taken, 1),
        (
            "snapshots taken behind the applied entry",
            off_loop.taken_behind,
            1,
        ),
        ("snapshot reads off the loop dropped", off_loop.dropped, 1),
        // Issue 20, the trailing log: followers behind where a compaction would have gone
        // without it catch up from the log kept (in two seeds of three).
        ("followers caught up from the trailing log", from_tail, 20),
        // Issue 20: durable states commit behind the state machine: reads meet a commit in
        // flight, and crashes lose one.
        (
            "durable commits in flight lost at a crash",
            in_flight_lost,
            5,
        ),
        (
            "reads while a durable commit was in flight",
            in_flight_reads,
            20,
        ),
    ] {
        assert!(
            count >= at_least,
            "{what}: {count} in 200 seeds, expected {at_least}+"
        );
    }
}

/// The disk's checksums are what stop a corrupted entry (and a torn record): without them,
/// the node loads the damaged log and applies what nobody wrote, and this simulation's checks
/// (State Machine Safety, the acknowledged writes, the trace) fail. Each run on its own thread,
/// as a failing one panics.
#[test]
fn without_the_disk_checksums_the_simulation_fails() {
    let seeds: Vec<u64> = match std::env::var("RAFTKV_SEED") {
        Ok(seed) => vec![seed.parse().expect("RAFTKV_SEED is a number")],
        Err(_) => (0..40).collect(),
    };
    let failed: Vec<u64> = seeds
        .iter()
        .copied()
        .filter(|&seed| {
            std::thread::spawn(move || run_seed_with(seed, Checks::Off))
                .join()
                .is_err()
        })
        .collect();
    println!(
        "checksums off: {} of {} seeds failed: {failed:?}",
        failed.len(),
        seeds.len()
    );
    assert!(!failed.is_empty(), "no seed failed without the checksums");
}

#[test]
fn same_seed_replays_the_same_run() {
    let a = run_seed(42);
    let b = run_seed(42);
    assert_eq!(a, b);
}

#[test]
#[ignore = "a tool: run with RAFTKV_SEED set"]
fn replay() {
    let seed: u64 = std::env::var("RAFTKV_SEED")
        .expect("set RAFTKV_SEED")
        .parse()
        .unwrap();
    println!("{:?}", run_seed(seed));
}

/// A longer sweep: `RAFTKV_SEEDS=5000 cargo test --release -p raftkv-raft --test driver_sim --
/// sweep --ignored --nocapture`.
#[test]
#[ignore = "a long sweep"]
fn sweep() {
    let seeds: u64 = std::env::var("RAFTKV_SEEDS").map_or(2_000, |s| s.parse().unwrap());
    let t0 = std::time::Instant::now();
    let mut disk = DiskCounts::default();
    for seed in 0..seeds {
        disk += run_seed(seed).disk;
    }
    println!(
        "{seeds} seeds, 0 failures, {:.1} seeds/s; disk faults: {disk:?}",
        seeds as f64 / t0.elapsed().as_secs_f64()
    );
}

/// Waits (in virtual time, at most 10 s) until `done` holds for node `i`'s status.
async fn wait_for(
    c: &Cluster,
    i: usize,
    what: &str,
    done: impl Fn(&raftkv_raft::Status) -> bool,
) -> raftkv_raft::Status {
    let deadline = c.rt.now() + Duration::from_secs(10);
    loop {
        if let Ok(s) = c.nodes[i].as_ref().expect("up").status().await {
            if done(&s) {
                return s;
            }
        }
        assert!(c.rt.now() < deadline, "n{}: {what} within 10 s", i + 1);
        c.rt.sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn the_driver_adds_a_learner_promotes_it_transfers_leadership_and_replaces_a_voter() {
    let rt = SimRuntime::new(7);
    let r2 = rt.clone();
    rt.block_on(async move {
        let rt = r2;
        let mut c = Cluster::new(7, 5, &rt);
        c.voters = 3;
        for i in 0..5 {
            c.start(i).await;
        }
        let l = loop {
            rt.sleep(Duration::from_millis(50)).await;
            if let Some(l) = c.leader().await {
                break l;
            }
        };
        let leader = c.nodes[l].clone().unwrap();
        for k in 0..20 {
            leader
                .propose(Bytes::from(format!("before{k}")))
                .await
                .unwrap();
        }
        let addrs = |id: u64| MemberAddrs::new(format!("peer{id}"), format!("client{id}"));
        // A follower refuses: it is not the leader.
        let follower = c.nodes[(l + 1) % 3].clone().unwrap();
        let refused = follower
            .change_membership(vec![MemberChange::Remove { id: 3 }])
            .await;
        assert!(
            matches!(
                refused,
                Err(ReconfigError::Node(NodeError::NotLeader { .. }))
            ),
            "{refused:?}"
        );
        // Add node 4 as a learner that the leader promotes once caught up.
        let m = leader
            .change_membership(vec![MemberChange::AddLearner {
                id: 4,
                addrs: addrs(4),
                auto_promote: true,
            }])
            .await
            .unwrap();
        assert!(m.is_learner(4) || m.voters().contains(&4), "{m}");
        assert_eq!(
            leader.transfer_leader(5).await,
            Err(ReconfigError::Refused(MembershipError::NotAMember(5)))
        );
        let s = wait_for(&c, 3, "n4 becomes a voter", |s| {
            s.membership.voters().contains(&4) && !s.membership.is_joint()
        })
        .await;
        assert!(!s.removed);
        // Hand leadership to node 4; it proposes and replaces node 1 by node 5.
        leader.transfer_leader(4).await.unwrap();
        let n4 = c.nodes[3].clone().unwrap();
        wait_for(&c, 3, "n4 leads", |s| s.role == Role::Leader).await;
        n4.propose(Bytes::from_static(b"after transfer"))
            .await
            .unwrap();
        let m = n4
            .change_membership(vec![
                MemberChange::AddVoter {
                    id: 5,
                    addrs: addrs(5),
                },
                MemberChange::Remove { id: 1 },
            ])
            .await
            .unwrap();
        assert_eq!(
            m.voters().iter().copied().collect::<Vec<_>>(),
            vec![2, 3, 4, 5]
        );
        assert!(!m.is_joint(), "the change completes with C_new");
        wait_for(&c, 0, "n1 learns it was removed", |s| s.removed).await;
        n4.propose(Bytes::from_static(b"after replace"))
            .await
            .unwrap();
        // The transports learned the new members' addresses.
        let peers = c.net.peers_of(2).expect("set_peers was called");
        assert_eq!(peers.get(&5).map(String::as_str), Some("peer5"));
        assert_eq!(peers.get(&4).map(String::as_str), Some("peer4"));
        for node in c.nodes.iter().flatten() {
            node.shutdown().await;
        }
    })
    .expect("no deadlock");
}
