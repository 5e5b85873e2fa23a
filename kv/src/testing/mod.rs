//! Whole KV clusters — the real driver [`Node`], [`KvService`] and [`Clerk`] — on the
//! deterministic simulation runtime ([`SimRuntime`], [`SimNet`], [`SimStorage`]), in the manner
//! of 6.5840's kvraft `config.go`: the harness of this crate's `kvraft_sim` tests, for services
//! built on the KV service too (feature `testing`). Modules: `net` (the client network),
//! `cluster` (the cluster and the lab's Clerk); seeds and checks here. Everything is
//! re-exported at this level.
//!
//! - [`ClientNet`] / [`SimConnector`]: the network between Clerks and servers, generic over
//!   the request and reply types (the KV protocol's by default). A call sleeps a
//!   request latency, is served by a task spawned in the server's runtime group (so a crash —
//!   killing the group — drops requests in flight: the Clerk sees `Lost`), sleeps a reply
//!   latency. Unreliable mode drops requests and replies (a drop answers `Lost` after up to
//!   100 ms, as labrpc's `false`, or — a fraction of the time — never, so that the Clerk's
//!   attempt timeout is exercised). A crashed server, or one outside the set a client is
//!   connected to, is `Unreachable`. Calls travel in tasks of their own, so a request the
//!   Clerk abandoned may still arrive; the hostile mode also delays requests by seconds and
//!   delivers some twice (as a connector that resends after a reconnect would; see the test
//!   `duplicated_request_meets_expired_session`).
//! - [`KvSimCluster`]: n nodes with crash (storage survives), restart, server partitions
//!   ([`SimNet::partition`]), client partitions ([`KvSimCluster::connect_client`]), unreliable
//!   mode, the lab's `maxraftstate` as snapshot thresholds, and the persisted log and snapshot
//!   sizes the lab checks.
//! - [`LabClerk`]: a Clerk recording into the cluster's [`History`] on virtual time, with the
//!   lab's `Get`/`Put`/`Append` (a missing key reads as "", no error is acceptable).
//! - Checks: [`assert_linearizable`] (every partition `Ok`, else the HTML visualization is
//!   written and named), [`check_clnt_appends`], [`check_concurrent_appends`].
//! - Seeds: [`run_seeds`] prints `RAFTKV_SEED=<n>` and the replay command (for the test binary
//!   it is given) on failure; `RAFTKV_SEED` runs one seed,
//!   `RAFTKV_SEEDS` (`3,7,9`, `10..20`, or a count `n` for `0..n`) overrides the defaults.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::clerk::{
    CallError, Clerk, ClerkConfig, ClerkError, Connector, LostReason, UnreachableReason,
};
use crate::history::History;
use crate::protocol::{Reply, RequestBody};
use crate::service::{KvService, ServiceConfig};
use crate::state::{Command, KvStateMachine, Outcome, SessionConfig};
use bytes::Bytes;
use futures::channel::oneshot;
use raftkv_checker::models::{KvInput, KvModel, KvOutput};
use raftkv_checker::{check, visualize, CheckOptions, CheckResult, Operation, Verdict};
use raftkv_raft::driver::observer::ObserverHandle;
use raftkv_raft::runtime::sim::{SimNet, SimRuntime, SimStorage};
use raftkv_raft::{Config, Node, NodeConfig, Role, Runtime, StateMachine, ENTRY_OVERHEAD_BYTES};

mod cluster;
pub mod durable;
mod net;

pub use cluster::*;
pub use net::*;

/// The lab's `electionTimeout`: the tester allows a second for an election.
pub const ELECTION_TIMEOUT: Duration = Duration::from_secs(1);

/// The runtime group of client tasks (never killed). Nodes use groups 1..=n, the network 0.
pub const CLIENT_GROUP: u64 = 1 << 32;

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

// ---- seeds ----

/// The seeds to run: `RAFTKV_SEED=<n>` (one), `RAFTKV_SEEDS` (`3,7,9`, `10..20`, or a count),
/// else `default`.
pub fn seeds(default: &[u64]) -> Vec<u64> {
    if let Ok(s) = std::env::var("RAFTKV_SEED") {
        return vec![s.trim().parse().expect("RAFTKV_SEED must be a number")];
    }
    if let Ok(s) = std::env::var("RAFTKV_SEEDS") {
        let s = s.trim();
        if let Some((a, b)) = s.split_once("..") {
            let a: u64 = a.parse().expect("RAFTKV_SEEDS: a..b");
            let b: u64 = b.parse().expect("RAFTKV_SEEDS: a..b");
            return (a..b).collect();
        }
        if s.contains(',') {
            return s
                .split(',')
                .map(|x| x.trim().parse().expect("RAFTKV_SEEDS: a,b,c"))
                .collect();
        }
        let n: u64 = s.parse().expect("RAFTKV_SEEDS: a count, a..b or a,b,c");
        return (0..n).collect();
    }
    default.to_vec()
}

/// Runs `f` for each seed; a failure names its seed and how to replay it: `cargo test
/// --release {target} -- {name} ...`, where `target` names the test binary (`-p raftkv-kv --test
/// kvraft_sim`).
pub fn run_seeds<T>(target: &str, name: &str, default: &[u64], f: impl Fn(u64) -> T) -> Vec<T> {
    seeds(default)
        .into_iter()
        .map(|seed| match catch_unwind(AssertUnwindSafe(|| f(seed))) {
            Ok(v) => v,
            Err(e) => {
                eprintln!(
                    "{name} FAILED with RAFTKV_SEED={seed}; replay: RAFTKV_SEED={seed} cargo test \
                     --release {target} -- {name} --exact --include-ignored --nocapture"
                );
                resume_unwind(e)
            }
        })
        .collect()
}

/// Runs `body` on a fresh simulation runtime seeded with `seed`, then tears every task down
/// (so that nothing of the run stays alive). Panics if the simulation deadlocks.
pub fn sim<T, F, Fut>(seed: u64, body: F) -> T
where
    T: Send + 'static,
    F: FnOnce(SimRuntime) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
{
    let rt = SimRuntime::new(seed);
    let out = rt.block_on(body(rt.clone()));
    for group in (0..=16).chain([CLIENT_GROUP, NET_GROUP, u64::MAX]) {
        rt.kill_group(group);
    }
    out.unwrap_or_else(|| panic!("RAFTKV_SEED={seed}: the simulation deadlocked"))
}

/// Spawns `future` as a client task; its output arrives on the receiver.
pub fn spawn_client<T: Send + 'static>(
    rt: &SimRuntime,
    future: impl Future<Output = T> + Send + 'static,
) -> oneshot::Receiver<T> {
    let (tx, rx) = oneshot::channel();
    rt.with_group(CLIENT_GROUP).spawn(async move {
        let _ = tx.send(future.await);
    });
    rx
}

// ---- checks ----

/// The lab's `checkClntAppends`: client `clnt`'s appends `x clnt 0 y` .. `x clnt count-1 y`
/// each appear exactly once in `v`, in order.
pub fn check_clnt_appends(clnt: usize, v: &str, count: usize) -> Result<(), String> {
    let mut lastoff: Option<usize> = None;
    for j in 0..count {
        let wanted = format!("x {clnt} {j} y");
        let Some(off) = v.find(&wanted) else {
            return Err(format!(
                "{clnt} missing element {wanted:?} in Append result {v:?}"
            ));
        };
        if v.rfind(&wanted) != Some(off) {
            return Err(format!("duplicate element {wanted:?} in Append result"));
        }
        if lastoff.is_some_and(|l| off <= l) {
            return Err(format!(
                "wrong order for element {wanted:?} in Append result"
            ));
        }
        lastoff = Some(off);
    }
    Ok(())
}

/// The lab's `checkConcurrentAppends`: for every client i, its `counts[i]` appends appear
/// exactly once each, in order.
pub fn check_concurrent_appends(v: &str, counts: &[usize]) -> Result<(), String> {
    for (i, &count) in counts.iter().enumerate() {
        check_clnt_appends(i, v, count)?;
    }
    Ok(())
}

/// At most this many bytes of visited set per partition: a history whose check would take
/// more fails as `Unknown` (issue 20: one ran for 7 minutes and took 5.8 GB) instead of
/// stalling the test run.
pub const CHECK_CACHE_BYTES_MAX: usize = 1 << 30;

/// Checks `ops` with no timeout (the verdict is decided), the visited set bounded by
/// [`CHECK_CACHE_BYTES_MAX`] per partition.
pub fn check_ops(ops: &[Operation<KvInput, KvOutput>]) -> CheckResult {
    let options = CheckOptions {
        cache_bytes_max: Some(CHECK_CACHE_BYTES_MAX),
        ..CheckOptions::default()
    };
    check(&KvModel, ops, &options)
}

/// Writes the HTML visualization of a checked history to the temp directory; returns its path.
pub fn write_visualization(
    ops: &[Operation<KvInput, KvOutput>],
    result: &CheckResult,
    name: &str,
    seed: u64,
) -> PathBuf {
    let path = std::env::temp_dir().join(format!("kvraft_sim-{name}-seed{seed}.html"));
    let mut file = std::fs::File::create(&path)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
    visualize(&KvModel, ops, result, &mut file)
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    path
}

/// Checks the whole history: every partition must be `Ok`. Otherwise writes the
/// visualization and fails naming the seed and the file.
pub fn assert_linearizable(history: &History, name: &str, seed: u64) -> CheckResult {
    let ops = history.operations();
    let result = check_ops(&ops);
    let bad = result
        .partitions
        .iter()
        .filter(|p| p.verdict != Verdict::Ok)
        .count();
    if bad > 0 || result.verdict != Verdict::Ok {
        let path = write_visualization(&ops, &result, name, seed);
        let json = path.with_extension("json");
        let _ = std::fs::write(&json, history.to_json());
        panic!(
            "RAFTKV_SEED={seed}: {name}: the history ({} ops) is not linearizable: verdict {}, \
             {bad} of {} partitions not Ok; visualization written to {} (history: {})",
            ops.len(),
            result.verdict,
            result.partitions.len(),
            path.display(),
            json.display()
        );
    }
    result
}

// ---- a deliberately wrong server ----

/// A state machine that breaks exactly-once: every request's sequence number is replaced by
/// its log index, so a retry of an applied write looks new and is applied again.
pub struct DropsDedup(pub KvStateMachine);

impl StateMachine for DropsDedup {
    type Response = Outcome;

    fn apply(&mut self, index: u64, command: &[u8]) -> Outcome {
        match Command::decode(command) {
            Ok(Command::Request {
                session,
                seq: _,
                now_ms,
                op,
            }) => {
                let forged = Command::Request {
                    session,
                    seq: index,
                    now_ms,
                    op,
                };
                self.0.apply(index, &forged.encode())
            }
            _ => self.0.apply(index, command),
        }
    }

    fn query(&self, query: &[u8]) -> Outcome {
        self.0.query(query)
    }

    fn snapshot(&self) -> Bytes {
        self.0.snapshot()
    }

    fn restore(&mut self, data: &[u8]) -> Result<(), String> {
        self.0.restore(data)
    }
}
