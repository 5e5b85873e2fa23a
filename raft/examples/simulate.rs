//! The simulator sweep: runs many seeds of randomized faults and checks Raft's safety after
//! every event and liveness after healing.
//!
//! cargo run --release -p raftkv-raft --example simulate -- --seeds N [--start S] [--nodes K]
//!     [--reconfig]
//!
//! `--reconfig` also adds, removes and promotes nodes and transfers leadership during each run.
//!
//! Prints each failure (with `RAFTKV_SEED=<n>` and the trace tail) and a last line
//! `N seeds, F failures, R seeds/s`. Exits 1 if any seed failed.

use raftkv_raft::sim::chaos::{self, ChaosOptions};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

fn main() {
    let mut seeds = 1_000u64;
    let mut start = 0u64;
    let mut nodes: Option<usize> = None;
    let mut reconfig = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| -> u64 {
            let v = args
                .next()
                .unwrap_or_else(|| usage(&format!("{name} needs a value")));
            v.parse()
                .unwrap_or_else(|_| usage(&format!("{name}: not a number: {v}")))
        };
        match arg.as_str() {
            "--seeds" => seeds = value("--seeds"),
            "--start" => start = value("--start"),
            "--nodes" => {
                let k = value("--nodes") as usize;
                if !(3..=7).contains(&k) {
                    usage("--nodes must be 3 to 7");
                }
                nodes = Some(k);
            }
            "--reconfig" => reconfig = true,
            "-h" | "--help" => usage(""),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    // A failing seed is reported with its trace; the panic itself needs only one line.
    std::panic::set_hook(Box::new(|info| eprintln!("panic {info}")));
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let next = AtomicU64::new(start);
    let failures = Mutex::new(Vec::new());
    let events = AtomicU64::new(0);
    let changes = AtomicU64::new(0);
    let transfers = AtomicU64::new(0);
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= start + seeds {
                    break;
                }
                let opts = ChaosOptions {
                    nodes,
                    reconfig,
                    ..ChaosOptions::new(seed)
                };
                match chaos::run(&opts) {
                    Ok(r) => {
                        events.fetch_add(r.events, Ordering::Relaxed);
                        changes.fetch_add(r.changes, Ordering::Relaxed);
                        transfers.fetch_add(r.transfers, Ordering::Relaxed);
                    }
                    Err(f) => {
                        eprintln!("{f}");
                        failures.lock().expect("no poisoning").push(seed);
                    }
                }
            });
        }
    });
    let secs = t0.elapsed().as_secs_f64();
    let failed = failures.into_inner().expect("no poisoning");
    if !failed.is_empty() {
        println!("failing seeds: {failed:?}");
    }
    println!(
        "events: {}, membership changes: {}, transfers: {}, threads: {threads}, wall: {secs:.1} s",
        events.load(Ordering::Relaxed),
        changes.load(Ordering::Relaxed),
        transfers.load(Ordering::Relaxed),
    );
    println!(
        "{seeds} seeds, {} failures, {:.1} seeds/s",
        failed.len(),
        seeds as f64 / secs
    );
    if !failed.is_empty() {
        std::process::exit(1);
    }
}

fn usage(problem: &str) -> ! {
    if !problem.is_empty() {
        eprintln!("error: {problem}");
    }
    eprintln!("usage: simulate --seeds N [--start S] [--nodes K] [--reconfig]");
    std::process::exit(2);
}
