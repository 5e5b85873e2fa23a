//! 6.5840's kvraft tests (Lab 4A, 4B) ported to the deterministic simulation: the real driver
//! `Node`, `KvService` and `Clerk` on `SimRuntime` with `SimNet` and `SimStorage`, in virtual
//! time. Every test checks its whole history for linearizability (every partition `Ok`) besides
//! the lab's own checks (appends exactly once and in order, gets return the right value, the
//! persisted log stays bounded).
//!
//! A failure prints `RAFTKV_SEED=<n>`; replay one seed with
//! `RAFTKV_SEED=<n> cargo test --release -p raftkv-kv --test kvraft_sim -- <test> --exact
//! --nocapture`, or sweep with `RAFTKV_SEEDS=0..50` (or `3,7,9`, or a count).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use raftkv_checker::Verdict;
use raftkv_kv::durable::{DurableKv, HeapStore};
use raftkv_kv::history::History;
use raftkv_kv::state::{KvStateMachine, Outcome, SessionConfig};
use raftkv_kv::testing::*;
use raftkv_raft::driver::observer::{EventKind, Observer, ObserverHandle, SnapshotHow, TraceEvent};
use raftkv_raft::runtime::sim::{SimNet, SimRuntime};
use raftkv_raft::{Runtime, StateMachine};

/// Phases of a generic test (the lab: 3).
const ITERATIONS: usize = 3;
/// How long clients run in each phase (the lab: 5 s).
const RUN: Duration = Duration::from_secs(5);

/// The parameters of the lab's `GenericTest`.
#[derive(Clone, Copy, Debug)]
struct Generic {
    clients: usize,
    servers: usize,
    unreliable: bool,
    crash: bool,
    partitions: bool,
    maxraftstate: Option<u64>,
    reads_anywhere: bool,
    random_keys: bool,
}

impl Generic {
    fn new(clients: usize, servers: usize) -> Self {
        Self {
            clients,
            servers,
            unreliable: false,
            crash: false,
            partitions: false,
            maxraftstate: None,
            reads_anywhere: false,
            random_keys: false,
        }
    }
    fn unreliable(mut self) -> Self {
        self.unreliable = true;
        self
    }
    fn crash(mut self) -> Self {
        self.crash = true;
        self
    }
    fn partitions(mut self) -> Self {
        self.partitions = true;
        self
    }
    /// Lease and follower reads, gets sent to any node.
    fn reads_anywhere(mut self) -> Self {
        self.reads_anywhere = true;
        self
    }

    fn maxraftstate(mut self, bytes: u64) -> Self {
        self.maxraftstate = Some(bytes);
        self
    }
    fn random_keys(mut self) -> Self {
        self.random_keys = true;
        self
    }
}

/// What a run did, for the summary line.
struct RunStats {
    ops: usize,
    /// Virtual ms from call to return of completed operations: median, 99th percentile, max.
    latency_ms: (f64, f64, f64),
    virtual_time: Duration,
    log_bytes: usize,
    snapshot_bytes: usize,
    net: ClientNetStats,
}

impl RunStats {
    fn of<M: StateMachine<Response = Outcome>>(c: &KvSimCluster<M>) -> Self {
        let mut lat: Vec<u64> = c
            .history
            .operations()
            .iter()
            .filter_map(|o| o.ret.map(|r| r - o.call))
            .collect();
        lat.sort_unstable();
        let at = |q: f64| {
            lat.get(((lat.len() as f64 * q) as usize).min(lat.len().saturating_sub(1)))
                .map_or(0.0, |&ns| ns as f64 / 1e6)
        };
        Self {
            ops: c.history.len(),
            latency_ms: (at(0.5), at(0.99), at(1.0)),
            virtual_time: c.rt.now(),
            log_bytes: c.log_bytes(),
            snapshot_bytes: c.snapshot_bytes(),
            net: c.clients.stats(),
        }
    }

    fn print(&self, name: &str, seed: u64, real: Duration) {
        println!(
            "{name} seed {seed}: {} ops in {:.1} s virtual ({:.2} s real), latency ms p50 {:.0} \
             p99 {:.0} max {:.0}; max log {} B, max snapshot {} B; client calls {} (dropped {} \
             requests, {} replies; {} unreachable, {} lost in crashes, {} delayed, {} \
             duplicated)",
            self.ops,
            self.virtual_time.as_secs_f64(),
            real.as_secs_f64(),
            self.latency_ms.0,
            self.latency_ms.1,
            self.latency_ms.2,
            self.log_bytes,
            self.snapshot_bytes,
            self.net.calls,
            self.net.dropped_requests,
            self.net.dropped_replies,
            self.net.unreachable,
            self.net.lost_in_crash,
            self.net.delayed,
            self.net.duplicated,
        );
    }
}

/// Runs `scenario` over `seeds`: the simulation, then the history check and a summary line.
fn run<F, Fut>(name: &str, default_seeds: &[u64], scenario: F)
where
    F: Fn(u64, SimRuntime) -> Fut,
    Fut: std::future::Future<Output = (History, RunStats)> + Send + 'static,
{
    run_seeds(
        "-p raftkv-kv --test kvraft_sim",
        name,
        default_seeds,
        |seed| {
            let t0 = Instant::now();
            let (history, stats) = sim(seed, |rt| scenario(seed, rt));
            assert_linearizable(&history, name, seed);
            stats.print(name, seed, t0.elapsed());
        },
    );
}

/// The lab's partitioner: until `done`, splits the servers at random in two, every election
/// timeout plus up to 200 ms.
async fn partitioner(rt: SimRuntime, net: SimNet, servers: usize, done: Arc<AtomicBool>) {
    while !done.load(Ordering::Relaxed) {
        let mut groups = vec![Vec::new(), Vec::new()];
        for i in 0..servers {
            groups[rt.random(0, 2) as usize].push(i);
        }
        partition_servers(&net, &groups);
        rt.sleep(ELECTION_TIMEOUT + ms(rt.random(0, 200))).await;
    }
}

/// The lab's `GenericTest`: clients append, put and get for a while, possibly over an
/// unreliable network, under repartitioning, with every server crashed and restarted at the end
/// of each phase; then each client's appends are checked; three phases.
async fn generic_run(seed: u64, rt: SimRuntime, g: Generic) -> (History, RunStats) {
    let config = ClusterConfig::new(g.servers)
        .unreliable(g.unreliable)
        .maxraftstate(g.maxraftstate)
        .reads_anywhere(g.reads_anywhere);
    let mut c = KvSimCluster::new(seed, &rt, config).await;
    let all = c.all();
    let mut ck = c.clerk(&all);
    for _phase in 0..ITERATIONS {
        let done_clients = Arc::new(AtomicBool::new(false));
        let done_partitioner = Arc::new(AtomicBool::new(false));
        let mut clnts = Vec::new();
        for cli in 0..g.clients {
            let mut myck = c.clerk(&all);
            let done = done_clients.clone();
            let rt2 = rt.clone();
            clnts.push(spawn_client(&rt, async move {
                let mut j = 0usize;
                let mut last = String::new(); // only used when not random_keys
                let own = cli.to_string();
                if !g.random_keys {
                    myck.put(&own, &last).await;
                }
                while !done.load(Ordering::Relaxed) {
                    let key = if g.random_keys {
                        rt2.random(0, g.clients as u64).to_string()
                    } else {
                        own.clone()
                    };
                    let nv = format!("x {cli} {j} y");
                    if rt2.random(0, 1000) < 500 {
                        myck.append(&key, &nv).await;
                        if !g.random_keys {
                            last.push_str(&nv);
                        }
                        j += 1;
                    } else if g.random_keys && rt2.random(0, 1000) < 100 {
                        myck.put(&key, &nv).await;
                        j += 1;
                    } else {
                        let v = myck.get(&key).await;
                        if !g.random_keys {
                            assert_eq!(v, last, "RAFTKV_SEED={seed}: get wrong value, key {key}");
                        }
                    }
                }
                j
            }));
        }
        let partitions = if g.partitions {
            rt.sleep(Duration::from_secs(1)).await;
            let p = partitioner(
                rt.clone(),
                c.net.clone(),
                g.servers,
                done_partitioner.clone(),
            );
            Some(spawn_client(&rt, p))
        } else {
            None
        };
        rt.sleep(RUN).await;
        done_clients.store(true, Ordering::Relaxed);
        done_partitioner.store(true, Ordering::Relaxed);
        if let Some(p) = partitions {
            p.await.expect("the partitioner ends");
            c.heal();
            rt.sleep(ELECTION_TIMEOUT).await;
        }
        if g.crash {
            for &i in &all {
                c.crash(i);
            }
            rt.sleep(ELECTION_TIMEOUT).await;
            for &i in &all {
                c.start(i).await;
            }
            c.heal();
        }
        for (i, clnt) in clnts.into_iter().enumerate() {
            let j = clnt.await.expect("a client task ends");
            let v = ck.get(&i.to_string()).await;
            if !g.random_keys {
                if let Err(e) = check_clnt_appends(i, &v, j) {
                    panic!("RAFTKV_SEED={seed}: {e}");
                }
            }
        }
        c.check_log_size();
    }
    (c.history.clone(), RunStats::of(&c))
}

fn generic(name: &str, seeds: &[u64], g: Generic) {
    run(name, seeds, move |seed, rt| generic_run(seed, rt, g));
}

/// The lab's `GenericTestSpeed`: 1000 appends by one client, each at least three times faster
/// than a heartbeat interval (100 ms), in virtual time. Returns ms per op.
async fn speed_run(seed: u64, rt: SimRuntime, maxraftstate: Option<u64>) -> (History, RunStats) {
    const NUM_OPS: usize = 1000;
    let config = ClusterConfig::new(3).maxraftstate(maxraftstate);
    let c = KvSimCluster::new(seed, &rt, config).await;
    let mut ck = c.clerk(&c.all());
    // Wait until the first op completes, so a leader is elected and the servers are ready.
    ck.get("x").await;
    let start = rt.now();
    for i in 0..NUM_OPS {
        ck.append("x", &format!("x 0 {i} y")).await;
    }
    let dur = rt.now() - start;
    let v = ck.get("x").await;
    if let Err(e) = check_clnt_appends(0, &v, NUM_OPS) {
        panic!("RAFTKV_SEED={seed}: {e}");
    }
    c.check_log_size();
    let per_op = dur / NUM_OPS as u32;
    const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(100);
    const OPS_PER_INTERVAL: u32 = 3;
    let time_per_op = HEARTBEAT_INTERVAL / OPS_PER_INTERVAL;
    println!(
        "speed seed {seed}: {:.2} virtual ms/op (bound {:.2} ms/op)",
        per_op.as_secs_f64() * 1e3,
        time_per_op.as_secs_f64() * 1e3
    );
    assert!(
        per_op <= time_per_op,
        "RAFTKV_SEED={seed}: operations completed too slowly {per_op:?}/op > {time_per_op:?}/op"
    );
    (c.history.clone(), RunStats::of(&c))
}

/// `nclient` clients append `upto` values each to one key; returns the final value.
async fn concurrent_appends_to_one_key<M: StateMachine<Response = Outcome>>(
    c: &KvSimCluster<M>,
    nclient: usize,
    upto: usize,
) -> String {
    let mut ck = c.clerk(&c.all());
    ck.put("k", "").await;
    let mut clients = Vec::new();
    for me in 0..nclient {
        let mut myck = c.clerk(&c.all());
        clients.push(spawn_client(&c.rt, async move {
            for n in 0..upto {
                myck.append("k", &format!("x {me} {n} y")).await;
            }
        }));
    }
    for client in clients {
        client.await.expect("a client task ends");
    }
    ck.get("k").await
}

// ---- 4A ----

/// TestBasic4A: one client.
#[test]
fn basic_4a() {
    generic("basic_4a", &[1, 2, 3, 4, 5], Generic::new(1, 5));
}

/// TestSpeed4A: ops complete fast enough.
#[test]
fn speed_4a() {
    run("speed_4a", &[1, 2], |seed, rt| speed_run(seed, rt, None));
}

/// TestConcurrent4A: many clients.
#[test]
fn concurrent_4a() {
    generic("concurrent_4a", &[1, 2, 3], Generic::new(5, 5));
}

/// TestUnreliable4A: unreliable net, many clients.
#[test]
fn unreliable_4a() {
    generic(
        "unreliable_4a",
        &[1, 2, 3, 4, 5],
        Generic::new(5, 5).unreliable(),
    );
}

/// TestUnreliableOneKey4A: concurrent append to same key, unreliable.
#[test]
fn unreliable_one_key_4a() {
    run(
        "unreliable_one_key_4a",
        &[1, 2, 3, 4, 5],
        |seed, rt| async move {
            let config = ClusterConfig::new(3).unreliable(true);
            let c = KvSimCluster::new(seed, &rt, config).await;
            let (nclient, upto) = (5, 10);
            let v = concurrent_appends_to_one_key(&c, nclient, upto).await;
            if let Err(e) = check_concurrent_appends(&v, &vec![upto; nclient]) {
                panic!("RAFTKV_SEED={seed}: {e}");
            }
            (c.history.clone(), RunStats::of(&c))
        },
    );
}

/// TestOnePartition4A: progress in majority, no progress in minority, completion after heal.
#[test]
fn one_partition_4a() {
    run(
        "one_partition_4a",
        &[1, 2, 3, 4, 5],
        |seed, rt| async move {
            let c = KvSimCluster::new(seed, &rt, ClusterConfig::new(5)).await;
            let mut ck = c.clerk(&c.all());
            ck.put("1", "13").await;

            // Progress in majority.
            let (p1, p2) = c.make_partition().await;
            c.partition(&[p1.clone(), p2.clone()]);
            let mut ckp1 = c.clerk(&p1); // connected to p1 only
            let mut ckp2a = c.clerk(&p2); // connected to p2 only
            let mut ckp2b = c.clerk(&p2);
            let (ckp2a_id, ckp2b_id) = (ckp2a.client, ckp2b.client);
            ckp1.put("1", "14").await;
            ckp1.check("1", "14").await;

            // No progress in minority.
            let mut done0 = spawn_client(&rt, async move {
                ckp2a.put("1", "15").await;
            });
            let mut done1 = spawn_client(&rt, async move {
                ckp2b.get("1").await // a different clerk in p2
            });
            rt.sleep(Duration::from_secs(1)).await;
            assert_eq!(
                done0.try_recv(),
                Ok(None),
                "RAFTKV_SEED={seed}: Put in minority completed"
            );
            assert_eq!(
                done1.try_recv(),
                Ok(None),
                "RAFTKV_SEED={seed}: Get in minority completed"
            );
            ckp1.check("1", "14").await;
            ckp1.put("1", "16").await;
            ckp1.check("1", "16").await;
            assert_eq!(
                done0.try_recv(),
                Ok(None),
                "RAFTKV_SEED={seed}: Put in minority completed"
            );

            // Completion after heal.
            c.heal();
            c.connect_client(ckp2a_id, &c.all());
            c.connect_client(ckp2b_id, &c.all());
            rt.sleep(ELECTION_TIMEOUT).await;
            let until = rt.now() + ms(30 * 100);
            let (mut put_done, mut get_done) = (false, None);
            while rt.now() < until && !(put_done && get_done.is_some()) {
                put_done |= done0.try_recv().expect("the Put task ends").is_some();
                if get_done.is_none() {
                    get_done = done1.try_recv().expect("the Get task ends");
                }
                rt.sleep(ms(10)).await;
            }
            assert!(put_done, "RAFTKV_SEED={seed}: Put did not complete");
            let got =
                get_done.unwrap_or_else(|| panic!("RAFTKV_SEED={seed}: Get did not complete"));
            // The Get may take effect before or after the (concurrent) Put of 15.
            assert!(
                got == "16" || got == "15",
                "RAFTKV_SEED={seed}: Get in healed minority returned {got:?}"
            );
            ck.check("1", "15").await;
            (c.history.clone(), RunStats::of(&c))
        },
    );
}

/// TestManyPartitionsOneClient4A: partitions, one client.
#[test]
fn many_partitions_one_client_4a() {
    generic(
        "many_partitions_one_client_4a",
        &[1, 2, 3, 4, 5],
        Generic::new(1, 5).partitions(),
    );
}

/// TestManyPartitionsManyClients4A: partitions, many clients.
#[test]
fn many_partitions_many_clients_4a() {
    generic(
        "many_partitions_many_clients_4a",
        &[1, 2, 3],
        Generic::new(5, 5).partitions(),
    );
}

/// TestPersistOneClient4A: restarts, one client.
#[test]
fn persist_one_client_4a() {
    generic(
        "persist_one_client_4a",
        &[1, 2, 3, 4, 5],
        Generic::new(1, 5).crash(),
    );
}

/// TestPersistConcurrent4A: restarts, many clients.
#[test]
fn persist_concurrent_4a() {
    generic(
        "persist_concurrent_4a",
        &[1, 2, 3],
        Generic::new(5, 5).crash(),
    );
}

/// TestPersistConcurrentUnreliable4A: unreliable net, restarts, many clients.
#[test]
fn persist_concurrent_unreliable_4a() {
    generic(
        "persist_concurrent_unreliable_4a",
        &[1, 2, 3, 4, 5],
        Generic::new(5, 5).unreliable().crash(),
    );
}

/// TestPersistPartition4A: restarts, partitions, many clients.
#[test]
fn persist_partition_4a() {
    generic(
        "persist_partition_4a",
        &[1, 2, 3],
        Generic::new(5, 5).crash().partitions(),
    );
}

/// TestPersistPartitionUnreliable4A: unreliable net, restarts, partitions, many clients.
#[test]
fn persist_partition_unreliable_4a() {
    generic(
        "persist_partition_unreliable_4a",
        &[1, 2, 3, 4, 5],
        Generic::new(5, 5).unreliable().crash().partitions(),
    );
}

/// TestPersistPartitionUnreliableLinearizable4A: unreliable net, restarts, partitions, random
/// keys, 15 clients, 7 servers.
#[test]
fn persist_partition_unreliable_linearizable_4a() {
    generic(
        "persist_partition_unreliable_linearizable_4a",
        &[1, 2, 3, 4, 5],
        Generic::new(15, 7)
            .unreliable()
            .crash()
            .partitions()
            .random_keys(),
    );
}

/// The same with lease reads (thesis §6.4.1) and follower reads (thesis §6.4): every get goes
/// to a node at random, which serves it (a follower with a read index from the leader) or
/// sends the Clerk on; the history must stay linearizable.
#[test]
fn persist_partition_unreliable_linearizable_reads_anywhere() {
    generic(
        "persist_partition_unreliable_linearizable_reads_anywhere",
        &[1, 2, 3, 4, 5],
        Generic::new(15, 7)
            .unreliable()
            .crash()
            .partitions()
            .random_keys()
            .reads_anywhere(),
    );
}

/// Reads anywhere with 5 servers, partitions and snapshots: many more gets served by
/// followers and leases between leader changes.
#[test]
fn many_partitions_many_clients_reads_anywhere() {
    generic(
        "many_partitions_many_clients_reads_anywhere",
        &[1, 2, 3],
        Generic::new(5, 5)
            .partitions()
            .crash()
            .random_keys()
            .maxraftstate(MAXRAFTSTATE)
            .reads_anywhere(),
    );
}

// ---- 4B ----

const MAXRAFTSTATE: u64 = 1000;

const SEEDS_1_TO_20: [u64; 20] = [
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20,
];

/// TestSnapshotRPC4B: a lagging server catches up by InstallSnapshot.
#[test]
fn snapshot_rpc_4b() {
    run("snapshot_rpc_4b", &[1, 2, 3, 4, 5], |seed, rt| async move {
        let config = ClusterConfig::new(3).maxraftstate(Some(MAXRAFTSTATE));
        let c = KvSimCluster::new(seed, &rt, config).await;
        let mut ck = c.clerk(&c.all());
        ck.put("a", "A").await;
        ck.check("a", "A").await;

        // A bunch of puts into the majority partition.
        c.partition(&[vec![0, 1], vec![2]]);
        {
            let mut ck1 = c.clerk(&[0, 1]);
            for i in 0..50 {
                ck1.put(&i.to_string(), &i.to_string()).await;
            }
            rt.sleep(ELECTION_TIMEOUT).await;
            ck1.put("b", "B").await;
        }
        // The majority has thrown away most of its log.
        let sz = c.log_bytes();
        assert!(
            sz as u64 <= 8 * MAXRAFTSTATE,
            "RAFTKV_SEED={seed}: logs were not trimmed ({sz} > 8*{MAXRAFTSTATE})"
        );
        let lagging_snapshot = c.durable(2).snapshot.map(|s| s.last.index);

        // A group that needs the lagging server, so that it has to catch up.
        c.partition(&[vec![0, 2], vec![1]]);
        {
            let mut ck1 = c.clerk(&[0, 2]);
            ck1.put("c", "C").await;
            ck1.put("d", "D").await;
            ck1.check("a", "A").await;
            ck1.check("b", "B").await;
            ck1.check("1", "1").await;
            ck1.check("49", "49").await;
        }
        // It caught up through a snapshot: the entries it missed were compacted away.
        let caught_up = c.durable(2).snapshot.map(|s| s.last.index);
        assert!(
            caught_up > lagging_snapshot,
            "RAFTKV_SEED={seed}: the lagging server got no snapshot ({lagging_snapshot:?} → \
             {caught_up:?})"
        );

        // Now everybody.
        c.partition(&[vec![0, 1, 2], vec![]]);
        ck.put("e", "E").await;
        ck.check("c", "C").await;
        ck.check("e", "E").await;
        ck.check("1", "1").await;
        c.check_log_size();
        (c.history.clone(), RunStats::of(&c))
    });
}

/// TestSnapshotSize4B: the log is trimmed and snapshots stay small.
#[test]
fn snapshot_size_4b() {
    run(
        "snapshot_size_4b",
        &[1, 2, 3, 4, 5],
        |seed, rt| async move {
            const MAXSNAPSHOTSTATE: usize = 500;
            let config = ClusterConfig::new(3).maxraftstate(Some(MAXRAFTSTATE));
            let c = KvSimCluster::new(seed, &rt, config).await;
            let mut ck = c.clerk(&c.all());
            for _ in 0..200 {
                ck.put("x", "0").await;
                ck.check("x", "0").await;
                ck.put("x", "1").await;
                ck.check("x", "1").await;
            }
            let sz = c.log_bytes();
            assert!(
                sz as u64 <= 8 * MAXRAFTSTATE,
                "RAFTKV_SEED={seed}: logs were not trimmed ({sz} > 8*{MAXRAFTSTATE})"
            );
            let ssz = c.snapshot_bytes();
            assert!(ssz > 0, "RAFTKV_SEED={seed}: no snapshot was taken");
            assert!(
                ssz <= MAXSNAPSHOTSTATE,
                "RAFTKV_SEED={seed}: snapshot too large ({ssz} > {MAXSNAPSHOTSTATE})"
            );
            (c.history.clone(), RunStats::of(&c))
        },
    );
}

/// TestSpeed4B: ops complete fast enough, with snapshots.
#[test]
fn speed_4b() {
    run("speed_4b", &[1, 2], |seed, rt| {
        speed_run(seed, rt, Some(MAXRAFTSTATE))
    });
}

/// TestSnapshotRecover4B: restarts, snapshots, one client.
#[test]
fn snapshot_recover_4b() {
    generic(
        "snapshot_recover_4b",
        &[1, 2, 3, 4, 5],
        Generic::new(1, 5).crash().maxraftstate(MAXRAFTSTATE),
    );
}

/// TestSnapshotRecoverManyClients4B: restarts, snapshots, many clients.
#[test]
fn snapshot_recover_many_clients_4b() {
    generic(
        "snapshot_recover_many_clients_4b",
        &[1, 2, 3],
        Generic::new(20, 5).crash().maxraftstate(MAXRAFTSTATE),
    );
}

/// TestSnapshotUnreliable4B: unreliable net, snapshots, many clients.
#[test]
fn snapshot_unreliable_4b() {
    generic(
        "snapshot_unreliable_4b",
        &[1, 2, 3, 4, 5],
        Generic::new(5, 5).unreliable().maxraftstate(MAXRAFTSTATE),
    );
}

/// TestSnapshotUnreliableRecover4B: unreliable net, restarts, snapshots, many clients.
#[test]
fn snapshot_unreliable_recover_4b() {
    generic(
        "snapshot_unreliable_recover_4b",
        &[1, 2, 3, 4, 5],
        Generic::new(5, 5)
            .unreliable()
            .crash()
            .maxraftstate(MAXRAFTSTATE),
    );
}

/// TestSnapshotUnreliableRecoverConcurrentPartition4B: unreliable net, restarts, partitions,
/// snapshots, many clients.
#[test]
fn snapshot_unreliable_recover_concurrent_partition_4b() {
    generic(
        "snapshot_unreliable_recover_concurrent_partition_4b",
        &[1, 2, 3, 4, 5],
        Generic::new(5, 5)
            .unreliable()
            .crash()
            .partitions()
            .maxraftstate(MAXRAFTSTATE),
    );
}

/// TestSnapshotUnreliableRecoverConcurrentPartitionLinearizable4B: as above with random keys,
/// 15 clients, 7 servers.
#[test]
fn snapshot_unreliable_recover_concurrent_partition_linearizable_4b() {
    generic(
        "snapshot_unreliable_recover_concurrent_partition_linearizable_4b",
        &[1, 2, 3, 4, 5],
        Generic::new(15, 7)
            .unreliable()
            .crash()
            .partitions()
            .maxraftstate(MAXRAFTSTATE)
            .random_keys(),
    );
}

// ---- the harness catches a broken server ----

/// A server without duplicate detection (`DropsDedup`: every retry is applied again), under
/// an unreliable network whose lost replies force retries: the checker must find the history
/// illegal, and the lab's append check must find a duplicate.
#[test]
fn checker_catches_a_server_that_applies_retries_twice() {
    const SEED: u64 = 1;
    let name = "checker_catches_a_server_that_applies_retries_twice";
    let (nclient, upto) = (5, 10);
    let (history, value, stats) = sim(SEED, move |rt| async move {
        let config = ClusterConfig::new(3).unreliable(true);
        let c = KvSimCluster::with_state_machine(SEED, &rt, config, || {
            DropsDedup(KvStateMachine::new(SessionConfig::default()))
        })
        .await;
        let v = concurrent_appends_to_one_key(&c, nclient, upto).await;
        (c.history.clone(), v, RunStats::of(&c))
    });
    stats.print(name, SEED, Duration::ZERO);
    assert!(
        stats.net.dropped_replies > 0,
        "RAFTKV_SEED={SEED}: no reply was dropped: the workload retried nothing"
    );
    let ops = history.operations();
    let result = check_ops(&ops);
    assert_eq!(
        result.verdict,
        Verdict::Illegal,
        "RAFTKV_SEED={SEED}: the checker did not catch the server that applies retries twice"
    );
    let path = write_visualization(&ops, &result, name, SEED);
    let html = std::fs::read_to_string(&path).expect("the visualization was written");
    assert!(
        html.contains("<svg") || html.contains("<html"),
        "{}",
        path.display()
    );
    println!("{name}: caught; visualization at {}", path.display());
    assert!(
        check_concurrent_appends(&value, &vec![upto; nclient]).is_err(),
        "RAFTKV_SEED={SEED}: the append check did not catch a duplicate in {value:?}"
    );
}

// ---- beyond the lab ----

/// Beyond the lab: conditional puts, deletes, appends and gets on three keys by six clients,
/// over an unreliable network that delays some requests by seconds and delivers some twice
/// (and some Raft messages between servers twice),
/// with single servers crashing and restarting and the servers repartitioned at random times,
/// snapshots, and a session table so small and short-lived (4 sessions, 1.5 s of idleness)
/// that sessions expire under the clients: retries then meet expired sessions, and the Clerk
/// must answer `MaybeApplied` (never a guess) when a copy may have been applied. The checker
/// decides the whole history.
#[test]
fn versioned_ops_with_expiring_sessions_under_chaos() {
    run(
        "versioned_ops_with_expiring_sessions_under_chaos",
        &SEEDS_1_TO_20,
        |seed, rt| chaos_run(seed, rt, seed % 2 == 1, false),
    );
}

/// Issue 20: [`versioned_ops_with_expiring_sessions_under_chaos`] with every server's state
/// in a store that survives its crashes ([`DurableKv`]): restarts resume from the state's
/// committed position — behind the log (what was applied after the last commit is lost and
/// applied again), or ahead of it (a leader's snapshot installed, the node crashed before its
/// log recorded it) — and the history stays linearizable.
///
/// Issue 20: a durable node stores no copy of its state: its log is compacted up to its
/// state's committed position, a leader reads its state on demand for a lagging or restarted
/// follower — its committed state, off its loop — and followers install what it sends — all of
/// which these seeds do, counted here. Its commits run behind the state machine: reads are
/// answered by the batch in flight, and crashes lose it — counted too.
#[test]
fn durable_state_under_chaos() {
    run("durable_state_under_chaos", &SEEDS_1_TO_20, |seed, rt| {
        chaos_run(seed, rt, seed % 2 == 1, true)
    });
    if std::env::var("RAFTKV_SEED").is_err() {
        let (on_demand, installed) = (
            ON_DEMAND.load(Ordering::Relaxed),
            INSTALLED.load(Ordering::Relaxed),
        );
        let (reads, lost) = (
            IN_FLIGHT_READS.load(Ordering::Relaxed),
            IN_FLIGHT_LOST.load(Ordering::Relaxed),
        );
        println!(
            "durable_state_under_chaos: {on_demand} snapshots read on demand, {installed} \
             installed; {reads} reads answered by a commit in flight, {lost} commits in \
             flight lost at a crash"
        );
        assert!(on_demand >= 5, "only {on_demand} snapshots read on demand");
        assert!(installed >= 5, "only {installed} snapshots installed");
        assert!(
            reads >= 20,
            "only {reads} reads answered by a commit in flight"
        );
        assert!(lost >= 5, "only {lost} commits in flight lost at a crash");
    }
}

/// Issue 20: snapshots read on demand by durable leaders, and installed by durable followers,
/// in [`durable_state_under_chaos`].
static ON_DEMAND: AtomicU64 = AtomicU64::new(0);
static INSTALLED: AtomicU64 = AtomicU64::new(0);

/// Issue 20: state commits in flight (behind the state machine) that answered reads, and that
/// a crash lost, in [`durable_state_under_chaos`].
static IN_FLIGHT_READS: AtomicU64 = AtomicU64::new(0);
static IN_FLIGHT_LOST: AtomicU64 = AtomicU64::new(0);

/// Counts the snapshots of [`ON_DEMAND`] and [`INSTALLED`].
struct SnapshotCount;

impl Observer for SnapshotCount {
    fn observe(&self, e: TraceEvent) {
        match e.kind {
            EventKind::Snapshot {
                how: SnapshotHow::OnDemand,
                ..
            } => ON_DEMAND.fetch_add(1, Ordering::Relaxed),
            EventKind::Snapshot {
                how: SnapshotHow::Installed,
                ..
            } => INSTALLED.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
    }
}

/// Issue 21 #12: the Clerk applied a write twice. When a write's answered attempt said
/// `SessionExpired`, the Clerk concluded nothing was applied (it had sent that attempt once)
/// and sent the write again under a new session. But the network had delivered the attempt
/// twice: one copy was applied while the session lived, the other arrived after the session
/// was evicted (4-session table) and was the one answered. Seed 69: an append shows up twice
/// in its key (seeds 69, 198 and 448 of 0..1500 failed; 566 and 683 did at an earlier
/// commit). The state machine now keeps each expired session's last applied sequence number,
/// so `SessionExpired` means "not applied, never will be" and a copy applied before the
/// expiry is answered `Forgotten` (the Clerk: `MaybeApplied`).
#[test]
fn duplicated_request_meets_expired_session() {
    run(
        "duplicated_request_meets_expired_session",
        &[69, 198, 448, 566, 683],
        |seed, rt| chaos_run(seed, rt, false, false),
    );
}

/// Issue 20: with the in-loop storage writer (6017705) this chaos test "ran away" (7 minutes
/// and 5.8 GB instead of 1.6 s) and the writer was reverted. The simulation was fine; the
/// check was not. The Clerk recorded a write refused with `StoreFull` as an unknown outcome
/// (`timeout`, no return), so the checker let each refusal take effect at any later time. The
/// writer's changed schedule made seed 17 delete key "a" while "b" and "c" filled the store:
/// 22 refused puts and appends on "a", and the search tried every order of every subset of
/// them. `StoreFull` is definite (the session records it; the write is never applied) and is
/// now recorded as `store_full` (without the refusals, the same history checks in 3 ms).
#[test]
fn store_full_recorded_as_unknown_outcome_made_the_check_run_away() {
    use raftkv_checker::models::{KvErr, KvModel};
    use raftkv_checker::{check, CheckOptions};
    run_seeds(
        "-p raftkv-kv --test kvraft_sim",
        "store_full_recorded_as_unknown_outcome_made_the_check_run_away",
        &[17],
        |seed| {
            let (history, _) = sim(seed, |rt| chaos_run(seed, rt, true, false));
            let ops = history.operations();
            // Bounded, so that a search that explodes fails here at once (`Unknown`).
            let options = CheckOptions {
                cache_entries_max: Some(100_000),
                ..CheckOptions::default()
            };
            let result = check(&KvModel, &ops, &options);
            assert_eq!(result.verdict, Verdict::Ok, "RAFTKV_SEED={seed}");
            let refused = ops
                .iter()
                .filter(|o| o.output.err == Some(KvErr::StoreFull))
                .count();
            assert!(refused > 0, "RAFTKV_SEED={seed}: no write was refused");
        },
    );
}

/// One chaos run; `small_store`: the store is bounded to a few hundred bytes, so that appends
/// fill it and writes are refused (`StoreFull`, issue 21 #8) until deletes make room, on
/// every replica alike.
/// `durable`: the servers run the KV state machine over a store that survives their crashes
/// ([`DurableKv`]), so that a restart resumes from the state's position (behind the log, at a
/// snapshot, or ahead of the log after installing a leader's snapshot) instead of restoring.
async fn chaos_run(
    seed: u64,
    rt: SimRuntime,
    small_store: bool,
    durable: bool,
) -> (History, RunStats) {
    let config = ClusterConfig::new(5)
        .unreliable(true)
        .maxraftstate(Some(MAXRAFTSTATE));
    let sessions = SessionConfig {
        ttl_ms: 1_500,
        sessions_max: 4,
    };
    let data_bytes_max = match small_store {
        true => 130 + seed * 7919 % 30,
        false => u64::MAX,
    };
    match durable {
        false => {
            let c = KvSimCluster::with_state_machine(seed, &rt, config, move || {
                KvStateMachine::new(sessions).with_data_bytes_max(data_bytes_max)
            })
            .await;
            chaos_clients(c, seed, rt, small_store, data_bytes_max).await
        }
        true => {
            // Each server's state outlives its crashes; it commits every 1 to 8 entries (a
            // crash loses what it applied since), different per seed and server.
            let stores: Vec<HeapStore> = (0..5).map(|_| HeapStore::new()).collect();
            // Issue 20: a leader reads its committed state for a follower off its loop; in odd
            // seeds the read finishes up to 300 ms later (the leader applies more, commits,
            // compacts or loses leadership meanwhile), in even ones at once.
            if seed % 2 == 1 {
                rt.set_blocking_delay_ms(Some((0, 300)));
            }
            let counted = stores.clone();
            let mut config = config;
            config.observer = Some(ObserverHandle(Arc::new(SnapshotCount)));
            let c = KvSimCluster::with_node_state_machine(seed, &rt, config, move |i| {
                let every = 1 + (seed * 7 + i as u64 * 3) % 8;
                DurableKv::open(stores[i].clone(), sessions, data_bytes_max)
                    .expect("a heap store opens")
                    .with_commit_every(every, 1 << 20)
            })
            .await;
            let out = chaos_clients(c, seed, rt, small_store, data_bytes_max).await;
            // Counted now: the stores dropped when the simulation ends lose no commit of a
            // crash.
            for s in &counted {
                IN_FLIGHT_READS.fetch_add(s.in_flight_reads(), Ordering::Relaxed);
                IN_FLIGHT_LOST.fetch_add(s.in_flight_lost(), Ordering::Relaxed);
            }
            out
        }
    }
}

/// The clients and faults of [`chaos_run`] on cluster `c`.
async fn chaos_clients<M: StateMachine<Response = Outcome>>(
    mut c: KvSimCluster<M>,
    seed: u64,
    rt: SimRuntime,
    small_store: bool,
    data_bytes_max: u64,
) -> (History, RunStats) {
    use raftkv_kv::clerk::ClerkError;

    const CLIENTS: usize = 6;
    const KEYS: [&str; 3] = ["a", "b", "c"];
    c.set_hostile();
    // Issue 21: Raft messages between servers are delivered twice too, not only requests.
    c.net.set_duplicate_chance(0.02);
    let all = c.all();
    let done = Arc::new(AtomicBool::new(false));
    let maybe_applied = Arc::new(AtomicU64::new(0));
    let store_full = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for cli in 0..CLIENTS {
        let mut ck = c.clerk(&all).ck;
        let (rt, done, maybe_applied) = (rt.clone(), done.clone(), maybe_applied.clone());
        let store_full = store_full.clone();
        clients.push(spawn_client(&rt.clone(), async move {
            let mut seen = std::collections::BTreeMap::<&str, u64>::new();
            let mut j = 0u64;
            while !done.load(Ordering::Relaxed) {
                if rt.chance(0.1) {
                    // Idle past the session TTL now and then.
                    rt.sleep(ms(rt.random(0, 2_500))).await;
                }
                let key = KEYS[rt.random(0, KEYS.len() as u64) as usize];
                // A small store gets longer values: three keys' fill it.
                let value = format!("{cli}.{j};").repeat(if small_store { 3 } else { 1 });
                j += 1;
                let result = match rt.random(0, 10) {
                    0..=2 => ck.get(key).await.map(|(_, version)| {
                        seen.insert(key, version);
                    }),
                    3 | 4 => ck.put(key, value, None).await.map(drop),
                    5 | 6 => {
                        let version = seen.get(key).copied().unwrap_or(0) + rt.random(0, 2);
                        ck.put(key, value, Some(version)).await.map(drop)
                    }
                    7 | 8 => ck.append(key, value).await.map(drop),
                    _ => ck.delete(key).await,
                };
                match result {
                    Ok(()) | Err(ClerkError::NoKey | ClerkError::Version { .. }) => {}
                    Err(ClerkError::StoreFull) if small_store => {
                        store_full.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(ClerkError::MaybeApplied) => {
                        maybe_applied.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => panic!("RAFTKV_SEED={seed}: client {cli}: {e}"),
                }
            }
        }));
    }
    let until = rt.now() + Duration::from_secs(12);
    while rt.now() < until {
        rt.sleep(ms(rt.random(300, 1_500))).await;
        let i = rt.random(0, c.n() as u64) as usize;
        let down = all.iter().filter(|&&k| !c.is_up(k)).count();
        match rt.random(0, 4) {
            0 if c.is_up(i) && down < 2 => c.crash(i),
            0 | 1 if !c.is_up(i) => c.start(i).await,
            2 => {
                let mut groups = vec![Vec::new(), Vec::new()];
                for k in 0..c.n() {
                    groups[rt.random(0, 2) as usize].push(k);
                }
                c.partition(&groups);
            }
            _ => c.heal(),
        }
    }
    done.store(true, Ordering::Relaxed);
    c.heal();
    for &i in &all {
        if !c.is_up(i) {
            c.start(i).await;
        }
    }
    for client in clients {
        client.await.expect("a client task ends");
    }
    c.check_log_size();
    let store_full = store_full.load(Ordering::Relaxed);
    println!(
        "chaos seed {seed}: {} MaybeApplied answers, {store_full} StoreFull",
        maybe_applied.load(Ordering::Relaxed)
    );
    assert!(
        !small_store || store_full > 0,
        "RAFTKV_SEED={seed}: a {data_bytes_max}-byte store was never full"
    );
    (c.history.clone(), RunStats::of(&c))
}
