//! Durable write latency of `LmdbStorage`: one fsynced commit per write, for 1 and 100 entries
//! per write (100-byte payloads), reported as p50 / p99 / max.
//!
//! ```text
//! cargo run --release -p raftkv-storage-lmdb --example lmdb_latency -- [--dir DIR] [--writes N]
//! ```
//! `--dir` is where the temporary store is made (default: the system temp dir): put it on the
//! disk you want to measure.

use bytes::Bytes;
use futures::executor::block_on;
use hdrhistogram::Histogram;
use raftkv_raft::{Entry, HardState, Payload, Storage, WriteOp};
use raftkv_storage_lmdb::{LmdbOptions, LmdbStorage};
use std::path::PathBuf;
use std::time::Instant;

const PAYLOAD_BYTES: usize = 100;
const WARMUP_WRITES: usize = 50;

struct Args {
    dir: PathBuf,
    writes: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        dir: std::env::temp_dir(),
        writes: 2000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--dir" => args.dir = PathBuf::from(value()?),
            "--writes" => args.writes = value()?.parse().map_err(|e| format!("--writes: {e}"))?,
            _ => {
                return Err(format!(
                    "unknown argument {flag}; usage: [--dir DIR] [--writes N]"
                ))
            }
        }
    }
    if args.writes == 0 {
        return Err("--writes must be at least 1".into());
    }
    Ok(args)
}

/// Latencies of `writes` writes of `per_write` entries each, after a warm-up.
fn measure(storage: &LmdbStorage, per_write: usize, writes: usize) -> Histogram<u64> {
    let payload = Payload::Command(Bytes::from(vec![0x5a; PAYLOAD_BYTES]));
    let mut next_index = 1;
    // Microseconds, 1 µs to one hour, three significant digits.
    let mut latencies = Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds");
    for i in 0..WARMUP_WRITES + writes {
        let entries: Vec<Entry> = (next_index..next_index + per_write as u64)
            .map(|index| Entry {
                index,
                term: 1,
                payload: payload.clone(),
            })
            .collect();
        next_index += per_write as u64;
        let hard_state = HardState {
            term: 1,
            voted_for: Some(1),
            commit: next_index - 1,
        };
        let ops = vec![WriteOp::Append(entries), WriteOp::HardState(hard_state)];
        let start = Instant::now();
        block_on(storage.write(ops)).expect("write");
        if i >= WARMUP_WRITES {
            let us = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
            latencies.saturating_record(us.max(1));
        }
    }
    latencies
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let base = tempfile::tempdir_in(&args.dir).expect("make a temp dir");
    println!(
        "dir {} | {} writes per case after {WARMUP_WRITES} warm-up | payload {PAYLOAD_BYTES} B",
        base.path().display(),
        args.writes
    );
    for per_write in [1usize, 100] {
        let dir = base.path().join(format!("per-write-{per_write}"));
        let storage = LmdbStorage::open(&dir, LmdbOptions::default()).expect("open");
        let started = Instant::now();
        let latencies = measure(&storage, per_write, args.writes);
        let elapsed = started.elapsed();
        let total_writes = (WARMUP_WRITES + args.writes) as f64;
        println!(
            "{per_write:>3} entries/write: p50 {:>7.0} us  p99 {:>7.0} us  max {:>7.0} us  \
             | {:>6.0} writes/s {:>8.0} entries/s",
            latencies.value_at_quantile(0.50),
            latencies.value_at_quantile(0.99),
            latencies.max(),
            total_writes / elapsed.as_secs_f64(),
            total_writes * per_write as f64 / elapsed.as_secs_f64(),
        );
    }
}
