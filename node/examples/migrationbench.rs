//! Moving a large shard between replica groups, measured: a `ShardedCluster` (2 groups of 3
//! nodes, 1 controller node, memory storage, 16 shards) whose shard S holds `--keys` keys of
//! `--value-bytes`-byte values at group A; `move S → B` while `--clients` ShardClerks put into
//! S (the moving shard) and as many into another shard of A (a non-moving one). Printed per
//! run:
//!
//! - **migrate**: from the `move` (the controller's answer) until B serves S (its progress
//!   says so), and until the move has settled (A deleted its copy);
//! - per shard: the **longest gap** between two successful writes around the move (write
//!   unavailability, from 1 s before the move to 1 s after it settled), and the p50, p99 and
//!   max latency of the writes in flight during the move (until it settled).
//!
//! ```text
//! cargo run --release -p raftkv-node --example migrationbench -- [--keys 100000] [--value-bytes 100] [--clients 4] [--repeats 3]
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use raftkv_node::sharded::{ShardedCluster, ShardedConfig};
use raftkv_raft::runtime::tokio::TokioRuntime;
use raftkv_raft::Runtime;
use raftkv_shard::group::{ShardClerkConfig, ShardStatus};
use raftkv_shard::{key_to_shard, ShardId};

const SHARDS: u32 = 16;

struct Args {
    keys: usize,
    value_bytes: usize,
    clients: usize,
    repeats: usize,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        keys: 100_000,
        value_bytes: 100,
        clients: 4,
        repeats: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("bad {flag} {value:?}: {e}");
        let n: usize = value.parse().map_err(|e| bad(&e))?;
        match flag.as_str() {
            "--keys" => a.keys = n,
            "--value-bytes" => a.value_bytes = n,
            "--clients" => a.clients = n,
            "--repeats" => a.repeats = n,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    if a.keys == 0 || a.clients == 0 || a.repeats == 0 || a.value_bytes > 1 << 20 {
        return Err("--keys, --clients, --repeats must be positive, --value-bytes ≤ 1 MiB".into());
    }
    Ok(a)
}

/// `n` keys of `shard`, named `{prefix}{i}`.
fn keys_of(shard: ShardId, n: usize, prefix: &str) -> Vec<String> {
    (0..)
        .map(|i| format!("{prefix}{i:07}"))
        .filter(|k| key_to_shard(k.as_bytes(), SHARDS) == Ok(shard))
        .take(n)
        .collect()
}

/// One write: when it started and ended, and whether it succeeded.
#[derive(Clone, Copy)]
struct Write {
    start: Instant,
    end: Instant,
    ok: bool,
}

/// Writes by clients hammering one shard.
type Writes = Arc<Mutex<Vec<Write>>>;

/// What one run measured.
struct Run {
    serving: Duration,
    settled: Duration,
    /// Per shard (the moving one, then the other): the longest gap, and the p50, p99 and
    /// max latency.
    shards: [[Duration; 4]; 2],
}

fn stats(writes: &[Write], from: Instant, to: Instant) -> [Duration; 4] {
    let mut ends: Vec<Instant> = writes.iter().filter(|w| w.ok).map(|w| w.end).collect();
    ends.sort();
    // Gaps between successful writes that end around the migration (from 1 s before the move
    // to 1 s after it settled), the window's edges included.
    let lo = from - Duration::from_secs(1);
    let hi = to + Duration::from_secs(1);
    let mut points = vec![lo];
    points.extend(ends.iter().copied().filter(|&t| t > lo && t < hi));
    points.push(hi);
    let gap = points
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    let mut lat: Vec<Duration> = writes
        .iter()
        .filter(|w| w.ok && w.end >= from && w.start <= to)
        .map(|w| w.end - w.start)
        .collect();
    lat.sort();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    let max = lat.last().copied().unwrap_or_default();
    [gap, pct(0.5), pct(0.99), max]
}

async fn run(rt: &TokioRuntime, a: &Args, seed: u64) -> Run {
    let mut config = ShardedConfig::new(2, 3, 1, SHARDS);
    config.seed = seed;
    let mut sc = ShardedCluster::start(rt.clone(), config)
        .await
        .expect("the cluster starts");
    sc.wait_config(None, Duration::from_secs(30))
        .await
        .expect("the groups install the config");
    let first = sc.query(None).await.expect("the config");
    let owned = |g| (0..SHARDS).filter(move |&s| first.shards[s as usize] == g);
    let (moving, other) = {
        let mut a_shards = owned(1);
        (a_shards.next().unwrap(), a_shards.next().unwrap())
    };

    // Load the moving shard, 64 writers at a time.
    let value = vec![b'x'; a.value_bytes];
    let keys = keys_of(moving, a.keys, "m");
    let loaded = Instant::now();
    let mut loaders = Vec::new();
    for part in keys.chunks(keys.len().div_ceil(64)) {
        let (mut clerk, part, value) = (
            sc.clerk(ShardClerkConfig::default(), None),
            part.to_vec(),
            value.clone(),
        );
        loaders.push(tokio::spawn(async move {
            for k in part {
                clerk.put(k, value.clone(), None).await.expect("a load put");
            }
        }));
    }
    for l in loaders {
        l.await.expect("a loader");
    }
    eprintln!(
        "  loaded {} keys into shard {moving} in {:.1} s",
        a.keys,
        loaded.elapsed().as_secs_f64()
    );

    // Hammer both shards.
    let stop = Arc::new(AtomicBool::new(false));
    let logs: [Writes; 2] = Default::default();
    let mut hammers = Vec::new();
    for (i, shard) in [moving, other].into_iter().enumerate() {
        for c in 0..a.clients {
            let keys = keys_of(shard, 16, &format!("h{c}-"));
            let (mut clerk, stop, log) = (
                sc.clerk(ShardClerkConfig::default(), None),
                stop.clone(),
                logs[i].clone(),
            );
            hammers.push(tokio::spawn(async move {
                let mut n = 0usize;
                while !stop.load(Ordering::SeqCst) {
                    let start = Instant::now();
                    let ok = clerk
                        .put(keys[n % keys.len()].clone(), b"v".to_vec(), None)
                        .await
                        .is_ok();
                    let end = Instant::now();
                    log.lock().unwrap().push(Write { start, end, ok });
                    n += 1;
                }
            }));
        }
    }
    rt.sleep(Duration::from_secs(2)).await;

    let t0 = Instant::now();
    sc.move_shard(moving, 2).await.expect("the move");
    let serving = loop {
        let serves = sc.progress(2).await.ok().flatten().is_some_and(|p| {
            p.shards
                .iter()
                .any(|s| s.shard == moving && s.status.serves() && s.status != ShardStatus::Pulling)
        });
        if serves {
            break t0.elapsed();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "shard never arrived"
        );
        rt.sleep(Duration::from_millis(2)).await;
    };
    sc.wait_config(None, Duration::from_secs(300))
        .await
        .expect("the move settles");
    let settled = t0.elapsed();
    let t1 = Instant::now();
    rt.sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    for h in hammers {
        h.await.expect("a writer");
    }
    let progress = sc
        .progress(2)
        .await
        .ok()
        .flatten()
        .expect("group 2 answers");
    let arrived = progress.shards.iter().find(|s| s.shard == moving).unwrap();
    assert!(arrived.keys >= a.keys, "{} keys arrived", arrived.keys);
    sc.close().await;
    let shards = [0, 1].map(|i| stats(&logs[i].lock().unwrap(), t0, t1));
    Run {
        serving,
        settled,
        shards,
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("migrationbench: {e}");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let rt = TokioRuntime::new(runtime.handle().clone());
    println!(
        "Moving a shard of {} keys ({}-byte values) between 2 groups of 3 nodes (memory \
         storage, {SHARDS} shards), {} writers on the moving shard and {} on a non-moving one \
         of the same source group:",
        a.keys, a.value_bytes, a.clients, a.clients
    );
    runtime.block_on(async {
        for r in 0..a.repeats {
            let run = run(&rt, &a, 1 + r as u64).await;
            println!(
                "  run {}: the new owner serves it after {}, settled (old copy deleted) after {}",
                r + 1,
                ms(run.serving),
                ms(run.settled),
            );
            for (name, [gap, p50, p99, max]) in ["moving", "non-moving"].iter().zip(run.shards) {
                println!(
                    "    {name:>10} shard: longest write gap {}; writes during the move: p50 \
                     {}, p99 {}, max {}",
                    ms(gap),
                    ms(p50),
                    ms(p99),
                    ms(max)
                );
            }
        }
    });
}
