//! 6.5840 lab 5A (shardctrler) tests ported to the deterministic simulation: real controller
//! clusters — the driver `Node`, `ControllerService`, `ControllerClerk` — on `SimRuntime`, in
//! virtual time, plus changes under crashes, partitions and an unreliable network with
//! exactly-once checked by config numbers.
//!
//! A failure prints `RAFTKV_SEED=<n>` and the replay command; sweep with `RAFTKV_SEEDS=0..50`.

use std::collections::BTreeMap;
use std::time::Duration;

use raftkv_raft::runtime::sim::SimRuntime;
use raftkv_raft::Runtime;
use raftkv_shard::clerk::CtrlClerkError;
use raftkv_shard::testing::*;
use raftkv_shard::{ControllerConfig, CtrlError, Gid, ShardConfig};

/// The lab's `NShards`.
const NSHARDS: u32 = 10;
const TEST: &str = "-p raftkv-shard --test controller_sim";

/// The chaos test's default seeds (a seed takes a few milliseconds in a release build).
const CHAOS_SEEDS: [u64; 64] = {
    let mut seeds = [0; 64];
    let mut i = 0;
    while i < 64 {
        seeds[i] = i as u64;
        i += 1;
    }
    seeds
};

fn addrs_of(gid: Gid) -> Vec<String> {
    (1..=3).map(|i| format!("g{gid}-s{i}")).collect()
}

fn groups(gids: &[Gid]) -> BTreeMap<Gid, Vec<String>> {
    gids.iter().map(|&g| (g, addrs_of(g))).collect()
}

async fn cluster(seed: u64, rt: &SimRuntime, servers: usize) -> CtrlSimCluster {
    CtrlSimCluster::new(
        seed,
        rt,
        servers,
        ControllerConfig::with_shards(NSHARDS),
        NEVER_SNAPSHOT,
    )
    .await
}

const NEVER_SNAPSHOT: u64 = 1 << 40;

/// The lab's `check`: the latest config has exactly `gids`, every shard is served by one of
/// them, counts differ by at most one.
async fn check(seed: u64, ck: &mut SimCtrlClerk, gids: &[Gid]) -> ShardConfig {
    let c = ck.query(None).await.unwrap();
    let have: Vec<Gid> = c.groups.keys().copied().collect();
    let mut want = gids.to_vec();
    want.sort_unstable();
    assert_eq!(
        have, want,
        "RAFTKV_SEED={seed}: wrong groups in config {}",
        c.num
    );
    if !gids.is_empty() {
        for (s, g) in c.shards.iter().enumerate() {
            assert!(
                c.groups.contains_key(g),
                "RAFTKV_SEED={seed}: shard {s} -> invalid group {g}"
            );
        }
        let counts: Vec<usize> = gids.iter().map(|&g| c.count_of(g)).collect();
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(
            max - min <= 1,
            "RAFTKV_SEED={seed}: max {max} too much larger than min {min}"
        );
    } else {
        assert!(
            c.shards.iter().all(|&g| g == 0),
            "RAFTKV_SEED={seed}: shards assigned without groups"
        );
    }
    c
}

/// Runs the clerks' futures concurrently as client tasks and waits for all of them.
async fn join_all<T: Send + 'static>(
    rt: &SimRuntime,
    tasks: Vec<impl std::future::Future<Output = T> + Send + 'static>,
) -> Vec<T> {
    let rxs: Vec<_> = tasks.into_iter().map(|t| spawn_client(rt, t)).collect();
    let mut out = Vec::new();
    for rx in rxs {
        out.push(rx.await.expect("client task finished"));
    }
    out
}

#[test]
fn basic_join_leave_and_historical_queries() {
    run_seeds(
        TEST,
        "basic_join_leave_and_historical_queries",
        &[1, 2, 3],
        |seed| {
            sim(seed, move |rt| async move {
                let mut cfg = cluster(seed, &rt, 3).await;
                let mut ck = cfg.clerk(&cfg.all());
                // Test: Basic leave/join
                let mut cfa = vec![ck.query(None).await.unwrap()];
                check(seed, &mut ck, &[]).await;
                assert_eq!(ck.join(groups(&[1])).await, Ok(1));
                cfa.push(check(seed, &mut ck, &[1]).await);
                assert_eq!(ck.join(groups(&[2])).await, Ok(2));
                cfa.push(check(seed, &mut ck, &[1, 2]).await);
                let cfx = ck.query(None).await.unwrap();
                assert_eq!(cfx.groups[&1], addrs_of(1), "wrong servers for gid 1");
                assert_eq!(cfx.groups[&2], addrs_of(2), "wrong servers for gid 2");
                assert_eq!(ck.leave(vec![1]).await, Ok(3));
                cfa.push(check(seed, &mut ck, &[2]).await);
                assert_eq!(ck.leave(vec![2]).await, Ok(4));
                cfa.push(check(seed, &mut ck, &[]).await);

                // Test: Historical queries, each server down in turn.
                for s in 0..cfg.n() {
                    cfg.crash(s);
                    for c in &cfa {
                        assert_eq!(
                            &ck.query(Some(c.num)).await.unwrap(),
                            c,
                            "RAFTKV_SEED={seed}"
                        );
                    }
                    cfg.start(s).await;
                }
            })
        },
    );
}

#[test]
fn move_hands_shards_explicitly() {
    run_seeds(TEST, "move_hands_shards_explicitly", &[1, 2, 3], |seed| {
        sim(seed, move |rt| async move {
            let cfg = cluster(seed, &rt, 3).await;
            let mut ck = cfg.clerk(&cfg.all());
            let (gid3, gid4) = (503, 504);
            ck.join(groups(&[gid3])).await.unwrap();
            ck.join(groups(&[gid4])).await.unwrap();
            for i in 0..NSHARDS {
                let cf = ck.query(None).await.unwrap();
                let to = if i < NSHARDS / 2 { gid3 } else { gid4 };
                let num = ck.move_shard(i, to).await.unwrap();
                let cf1 = ck.query(None).await.unwrap();
                assert!(cf1.num > cf.num, "Move should increase Config.Num");
                assert_eq!(cf1.num, num);
            }
            let cf2 = ck.query(None).await.unwrap();
            for i in 0..NSHARDS {
                let want = if i < NSHARDS / 2 { gid3 } else { gid4 };
                assert_eq!(cf2.gid_of(i), Some(want), "RAFTKV_SEED={seed}: shard {i}");
            }
            // Typed refusals travel to the Clerk.
            assert_eq!(
                ck.move_shard(NSHARDS, gid3).await,
                Err(CtrlClerkError::Refused(CtrlError::ShardOutOfRange {
                    shard: NSHARDS,
                    shards: NSHARDS
                }))
            );
            assert_eq!(
                ck.leave(vec![77]).await,
                Err(CtrlClerkError::Refused(CtrlError::UnknownGid { gid: 77 }))
            );
            ck.leave(vec![gid3]).await.unwrap();
            ck.leave(vec![gid4]).await.unwrap();
            check(seed, &mut ck, &[]).await;
        })
    });
}

/// The lab's concurrent leave/join and minimal transfers, with one Join map per group
/// (`multi = false`) or several groups per Join and Leave (`multi = true`, lab's TestMulti).
fn concurrent_then_minimal(seed: u64, multi: bool) {
    sim(seed, move |rt| async move {
        let cfg = cluster(seed, &rt, 3).await;
        let mut ck = cfg.clerk(&cfg.all());
        let npara: Gid = 10;
        let tasks: Vec<_> = (0..npara)
            .map(|i| {
                let mut c = cfg.clerk(&cfg.all());
                let gid = i + 1;
                async move {
                    if multi {
                        c.join(groups(&[gid, gid + 1000, gid + 2000]))
                            .await
                            .unwrap();
                        c.leave(vec![gid + 1000, gid + 2000]).await.unwrap();
                    } else {
                        c.join(groups(&[gid + 1000])).await.unwrap();
                        c.join(groups(&[gid])).await.unwrap();
                        c.leave(vec![gid + 1000]).await.unwrap();
                    }
                }
            })
            .collect();
        join_all(&rt, tasks).await;
        let gids: Vec<Gid> = (1..=npara).collect();
        let c1 = check(seed, &mut ck, &gids).await;

        // Minimal transfers after joins: no shard moves between old groups.
        if multi {
            let new: Vec<Gid> = (1..=5).map(|i| npara + i).collect();
            ck.join(groups(&new)).await.unwrap();
        } else {
            for i in 1..=5 {
                ck.join(groups(&[npara + i])).await.unwrap();
            }
        }
        let all: Vec<Gid> = (1..=npara + 5).collect();
        let c2 = check(seed, &mut ck, &all).await;
        for i in 1..=npara {
            for (j, &g) in c2.shards.iter().enumerate() {
                if g == i {
                    assert_eq!(
                        c1.shards[j], i,
                        "RAFTKV_SEED={seed}: non-minimal transfer after Join()s"
                    );
                }
            }
        }
        // Minimal transfers after leaves: shards of staying groups stay.
        if multi {
            ck.leave((1..=5).map(|i| npara + i).collect())
                .await
                .unwrap();
        } else {
            for i in 1..=5 {
                ck.leave(vec![npara + i]).await.unwrap();
            }
        }
        let c3 = check(seed, &mut ck, &gids).await;
        for i in 1..=npara {
            for (j, &g) in c2.shards.iter().enumerate() {
                if g == i {
                    assert_eq!(
                        c3.shards[j], i,
                        "RAFTKV_SEED={seed}: non-minimal transfer after Leave()s"
                    );
                }
            }
        }
    });
}

#[test]
fn concurrent_join_leave_then_minimal_transfers() {
    run_seeds(
        TEST,
        "concurrent_join_leave_then_minimal_transfers",
        &[1, 2, 3],
        |seed| concurrent_then_minimal(seed, false),
    );
}

#[test]
fn concurrent_multi_join_leave_then_minimal_transfers() {
    run_seeds(
        TEST,
        "concurrent_multi_join_leave_then_minimal_transfers",
        &[1, 2, 3],
        |seed| concurrent_then_minimal(seed, true),
    );
}

#[test]
fn multi_group_join_leave() {
    run_seeds(TEST, "multi_group_join_leave", &[1, 2, 3], |seed| {
        sim(seed, move |rt| async move {
            let cfg = cluster(seed, &rt, 3).await;
            let mut ck = cfg.clerk(&cfg.all());
            let mut cfa = vec![ck.query(None).await.unwrap()];
            check(seed, &mut ck, &[]).await;
            ck.join(groups(&[1, 2])).await.unwrap();
            cfa.push(check(seed, &mut ck, &[1, 2]).await);
            ck.join(groups(&[3])).await.unwrap();
            cfa.push(check(seed, &mut ck, &[1, 2, 3]).await);
            let cfx = ck.query(None).await.unwrap();
            for g in [1, 2, 3] {
                assert_eq!(cfx.groups[&g], addrs_of(g));
            }
            ck.leave(vec![1, 3]).await.unwrap();
            cfa.push(check(seed, &mut ck, &[2]).await);
            ck.leave(vec![2]).await.unwrap();
            cfa.push(check(seed, &mut ck, &[]).await);
            for c in &cfa {
                assert_eq!(&ck.query(Some(c.num)).await.unwrap(), c);
            }
        })
    });
}

#[test]
fn same_config_after_leader_crash() {
    run_seeds(TEST, "same_config_after_leader_crash", &[1, 2, 3], |seed| {
        sim(seed, move |rt| async move {
            let mut cfg = cluster(seed, &rt, 3).await;
            let mut ck = cfg.clerk(&cfg.all());
            ck.join(groups(&[1, 2, 3])).await.unwrap();
            let leader = cfg.wait_leader(Duration::from_secs(10)).await;
            let c = ck.query(None).await.unwrap();
            cfg.crash(leader);
            let new = cfg.wait_leader(Duration::from_secs(10)).await;
            assert_ne!(new, leader);
            assert_eq!(ck.query(None).await.unwrap(), c, "RAFTKV_SEED={seed}");
        })
    });
}

/// Beyond the lab: clients change the config while servers crash and restart, the network
/// partitions and loses messages, and servers snapshot. Exactly-once: every successful change
/// made one config, so the numbers returned are exactly 1..=latest; each config says what its
/// change did; after a final Join the assignment is even.
#[test]
fn changes_under_crashes_partitions_and_unreliable_network() {
    run_seeds(
        TEST,
        "changes_under_crashes_partitions_and_unreliable_network",
        &CHAOS_SEEDS,
        |seed| sim(seed, move |rt| chaos(seed, rt, false)),
    );
}

/// The same under kv's hostile client network: requests also held up to seconds (reaching a
/// server after the Clerk gave up on them) and delivered twice.
#[test]
fn changes_under_crashes_partitions_and_a_hostile_client_network() {
    run_seeds(
        TEST,
        "changes_under_crashes_partitions_and_a_hostile_client_network",
        &CHAOS_SEEDS[..16],
        |seed| sim(seed, move |rt| chaos(seed, rt, true)),
    );
}

async fn chaos(seed: u64, rt: SimRuntime, hostile: bool) {
    let mut cfg =
        CtrlSimCluster::new(seed, &rt, 5, ControllerConfig::with_shards(NSHARDS), 20).await;
    if hostile {
        cfg.set_hostile();
    } else {
        cfg.set_unreliable(true);
    }
    let clients: u64 = 5;
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            let mut c = cfg.clerk(&cfg.all());
            let gid = i + 1;
            async move {
                // (config num, what it did)
                let mut done: Vec<(u64, &'static str, Gid, u32)> = Vec::new();
                for round in 0..15u32 {
                    done.push((c.join(groups(&[gid])).await.unwrap(), "join", gid, 0));
                    let shard = (round + i as u32) % NSHARDS;
                    done.push((c.move_shard(shard, gid).await.unwrap(), "move", gid, shard));
                    done.push((c.leave(vec![gid]).await.unwrap(), "leave", gid, 0));
                }
                done.push((c.join(groups(&[gid])).await.unwrap(), "join", gid, 0));
                done
            }
        })
        .collect();
    let rxs: Vec<_> = tasks.into_iter().map(|t| spawn_client(&rt, t)).collect();
    // The nemesis, until the clients are done.
    let mut finished = Vec::new();
    let mut pending = rxs;
    let mut step = 0u64;
    while !pending.is_empty() {
        match step % 4 {
            0 => {
                let victim = rt.random(0, 5) as usize;
                cfg.crash(victim);
                rt.sleep(ms(rt.random(200, 1500))).await;
                cfg.start(victim).await;
            }
            1 => {
                let a = rt.random(0, 5) as usize;
                let b = (a + 1) % 5;
                let rest: Vec<usize> = (0..5).filter(|&x| x != a && x != b).collect();
                cfg.partition(&[vec![a, b], rest]);
                rt.sleep(ms(rt.random(500, 2000))).await;
                cfg.heal();
            }
            _ => rt.sleep(ms(rt.random(100, 800))).await,
        }
        step += 1;
        let mut still = Vec::new();
        for mut rx in pending {
            match rx.try_recv() {
                Ok(Some(v)) => finished.push(v),
                Ok(None) => still.push(rx),
                Err(_) => panic!("RAFTKV_SEED={seed}: a client task died"),
            }
        }
        pending = still;
        assert!(
            rt.now() < Duration::from_secs(600),
            "RAFTKV_SEED={seed}: clients stuck"
        );
    }
    cfg.heal();
    cfg.set_unreliable(false);
    let mut ck = cfg.clerk(&cfg.all());
    let last = ck.join(groups(&[100])).await.unwrap();
    let mut nums: Vec<u64> = finished.iter().flatten().map(|d| d.0).collect();
    nums.push(last);
    nums.sort_unstable();
    let expected: Vec<u64> = (1..=last).collect();
    assert_eq!(
        nums, expected,
        "RAFTKV_SEED={seed}: a change applied twice or lost"
    );
    for &(num, what, gid, shard) in finished.iter().flatten() {
        let c = ck.query(Some(num)).await.unwrap();
        assert_eq!(c.num, num);
        match what {
            "join" => assert!(c.groups.contains_key(&gid)),
            "leave" => assert!(!c.groups.contains_key(&gid)),
            _ => assert_eq!(c.gid_of(shard), Some(gid)),
        }
    }
    let all: Vec<Gid> = (1..=clients).chain([100]).collect();
    check(seed, &mut ck, &all).await;
    assert!(
        (0..cfg.n()).any(|i| cfg.has_snapshot(i)),
        "RAFTKV_SEED={seed}: no server snapshotted"
    );
}

/// Every server snapshots, the whole cluster crashes and restarts from its storage: every
/// config is still answered, and sessions survive (a retry-free Clerk keeps working).
#[test]
fn whole_cluster_restarts_from_snapshots() {
    run_seeds(
        TEST,
        "whole_cluster_restarts_from_snapshots",
        &[1, 2, 3],
        |seed| {
            sim(seed, move |rt| async move {
                let mut cfg =
                    CtrlSimCluster::new(seed, &rt, 3, ControllerConfig::with_shards(NSHARDS), 5)
                        .await;
                let mut ck = cfg.clerk(&cfg.all());
                let mut seen = vec![ck.query(None).await.unwrap()];
                for round in 0..30u64 {
                    let gid = round % 4 + 1;
                    let num = if seen.last().unwrap().groups.contains_key(&gid) {
                        ck.move_shard((round % u64::from(NSHARDS)) as u32, gid)
                            .await
                            .unwrap()
                    } else {
                        ck.join(groups(&[gid])).await.unwrap()
                    };
                    seen.push(ck.query(Some(num)).await.unwrap());
                }
                // Let every follower apply (and snapshot) the last entries.
                rt.sleep(Duration::from_secs(2)).await;
                for i in 0..cfg.n() {
                    assert!(
                        cfg.has_snapshot(i),
                        "RAFTKV_SEED={seed}: c{} took no snapshot",
                        i + 1
                    );
                }
                for i in 0..cfg.n() {
                    cfg.crash(i);
                }
                for i in 0..cfg.n() {
                    cfg.start(i).await;
                }
                for c in &seen {
                    assert_eq!(
                        &ck.query(Some(c.num)).await.unwrap(),
                        c,
                        "RAFTKV_SEED={seed}"
                    );
                }
                let next = ck.leave(vec![1]).await.unwrap();
                assert_eq!(next, seen.last().unwrap().num + 1);
            })
        },
    );
}

/// A Clerk that can reach only a server cut off from the majority gets a typed `Timeout` at
/// its deadline, and nothing is applied; once healed, changes go through.
#[test]
fn clerk_in_minority_times_out_without_applying() {
    run_seeds(
        TEST,
        "clerk_in_minority_times_out_without_applying",
        &[1, 2, 3],
        |seed| {
            sim(seed, move |rt| async move {
                let cfg = cluster(seed, &rt, 3).await;
                let mut ck = cfg.clerk(&cfg.all());
                ck.join(groups(&[1])).await.unwrap();
                let leader = cfg.wait_leader(Duration::from_secs(10)).await;
                let other = (leader + 1) % 3;
                let third = (leader + 2) % 3;
                cfg.partition(&[vec![leader, third], vec![other]]);
                let connector = cfg.clients.connector(&CtrlSimCluster::addrs(&[other]));
                let config = raftkv_kv::clerk::ClerkConfig {
                    timeout: Duration::from_secs(3),
                    ..lab_clerk_config()
                };
                let mut cut_off = raftkv_shard::clerk::ControllerClerk::new(
                    rt.clone(),
                    connector,
                    CtrlSimCluster::addrs(&cfg.all()),
                    config,
                );
                let r = cut_off.join(groups(&[2])).await;
                assert!(
                    matches!(r, Err(CtrlClerkError::Timeout(_))),
                    "RAFTKV_SEED={seed}: {r:?}"
                );
                cfg.heal();
                rt.sleep(Duration::from_secs(2)).await;
                let latest = ck.query(None).await.unwrap();
                assert_eq!(
                    latest.num, 1,
                    "RAFTKV_SEED={seed}: the cut-off change was applied"
                );
                assert_eq!(ck.join(groups(&[2])).await, Ok(2));
            })
        },
    );
}

/// A session evicted from a full table (the bound is one session here) is refused on the
/// only attempt that reached a server, so the Clerk opens a new session and sends the change
/// again: applied once, and the other Clerk is unaffected.
#[test]
fn evicted_session_reregisters_and_applies_once() {
    run_seeds(
        TEST,
        "evicted_session_reregisters_and_applies_once",
        &[1, 2, 3],
        |seed| {
            sim(seed, move |rt| async move {
                let mut controller = ControllerConfig::with_shards(NSHARDS);
                controller.sessions.sessions_max = 1;
                let cfg = CtrlSimCluster::new(seed, &rt, 3, controller, NEVER_SNAPSHOT).await;
                let mut a = cfg.clerk(&cfg.all());
                let mut b = cfg.clerk(&cfg.all());
                assert_eq!(a.join(groups(&[1])).await, Ok(1));
                assert_eq!(b.join(groups(&[2])).await, Ok(2), "b's session evicts a's");
                assert_eq!(
                    a.join(groups(&[3])).await,
                    Ok(3),
                    "a re-registers and applies once"
                );
                assert_eq!(b.move_shard(0, 2).await, Ok(4));
                let latest = a.query(None).await.unwrap();
                assert_eq!(latest.num, 4);
                assert_eq!(latest.groups.len(), 3);
            })
        },
    );
}
