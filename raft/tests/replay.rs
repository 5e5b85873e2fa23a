//! Replays one chaos seed with a long trace: `RAFTKV_SEED=<n> cargo test --release -p
//! raftkv-raft --test replay -- --ignored --nocapture` (optionally `RAFTKV_NODES=<k>`, and
//! `RAFTKV_RECONFIG=1` for a seed of the sweep with reconfiguration, `RAFTKV_PROCESS_FAULTS=1`
//! for one of the sweep with process faults, `RAFTKV_READS=1` for one of the sweep with lease
//! and follower reads).

use raftkv_raft::sim::chaos::{self, ChaosOptions};

#[test]
#[ignore = "a tool: run with RAFTKV_SEED set"]
fn replay_seed() {
    let Ok(seed) = std::env::var("RAFTKV_SEED") else {
        panic!("set RAFTKV_SEED=<n>");
    };
    let seed: u64 = seed.parse().expect("RAFTKV_SEED is a number");
    let nodes = std::env::var("RAFTKV_NODES")
        .ok()
        .map(|k| k.parse().expect("a number"));
    let reconfig = std::env::var("RAFTKV_RECONFIG").is_ok_and(|v| v == "1");
    let process_faults = std::env::var("RAFTKV_PROCESS_FAULTS").is_ok_and(|v| v == "1");
    let lease_and_follower_reads = std::env::var("RAFTKV_READS").is_ok_and(|v| v == "1");
    let opts = ChaosOptions {
        nodes,
        reconfig,
        process_faults,
        lease_and_follower_reads,
        trace_lines: 400,
        ..ChaosOptions::new(seed)
    };
    match chaos::run(&opts) {
        Ok(report) => println!("RAFTKV_SEED={seed} passed: {report:?}"),
        Err(failure) => panic!("{failure}"),
    }
}
