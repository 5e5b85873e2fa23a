//! Replays one chaos seed with a long trace: `RAFTKV_SEED=<n> cargo test --release -p
//! raftkv-raft --test replay -- --ignored --nocapture` (optionally `RAFTKV_NODES=<k>`).

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
    let opts = ChaosOptions {
        nodes,
        trace_lines: 400,
        ..ChaosOptions::new(seed)
    };
    match chaos::run(&opts) {
        Ok(report) => println!("RAFTKV_SEED={seed} passed: {report:?}"),
        Err(failure) => panic!("{failure}"),
    }
}
