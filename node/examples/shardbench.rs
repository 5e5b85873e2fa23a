//! Put throughput of a sharded store with 1, 2 and 4 replica groups, in one run: for each
//! group count, a `ShardedCluster` (3 nodes per group, memory storage, 16 shards) and
//! `--clients` closed-loop ShardClerks putting 100-byte values under random keys for
//! `--seconds`; each group count is measured `--repeats` times (interleaved, so that a slow
//! moment of the machine hits every count alike) and the median is printed. Each measurement
//! also prints the cores this process kept busy (its CPU seconds per second, from
//! `/proc/self/stat`) and the machine's load average: throughput here is bounded by CPU.
//!
//! ```text
//! cargo run --release -p raftkv-node --example shardbench -- [--seconds 3] [--clients 32] [--repeats 3]
//! ```

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use raftkv_node::sharded::{ShardedCluster, ShardedConfig};
use raftkv_raft::runtime::tokio::TokioRuntime;
use raftkv_raft::Runtime;
use raftkv_shard::group::ShardClerkConfig;

struct Args {
    seconds: f64,
    clients: usize,
    repeats: usize,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        seconds: 3.0,
        clients: 32,
        repeats: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("bad {flag} {value:?}: {e}");
        match flag.as_str() {
            "--seconds" => a.seconds = value.parse().map_err(|e| bad(&e))?,
            "--clients" => a.clients = value.parse().map_err(|e| bad(&e))?,
            "--repeats" => a.repeats = value.parse().map_err(|e| bad(&e))?,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    if !a.seconds.is_finite() || a.seconds <= 0.0 || a.clients == 0 || a.repeats == 0 {
        return Err("--seconds, --clients and --repeats must be positive".into());
    }
    Ok(a)
}

/// CPU time this process has used (user + system), in seconds, from `/proc/self/stat`; `None`
/// where there is no such file.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name (which is in parentheses and may hold spaces).
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // Safety: sysconf reads a constant of the system; no memory is passed.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (per_second > 0).then(|| ticks / per_second as f64)
}

/// The machine's load average over the last minute, from `/proc/loadavg`.
fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// One measurement: puts per second with `groups` groups, and the cores this process kept
/// busy while measuring (CPU seconds per second).
async fn measure(rt: &TokioRuntime, groups: usize, a: &Args, seed: u64) -> (f64, Option<f64>) {
    let mut config = ShardedConfig::new(groups, 3, 3, 16);
    config.seed = seed;
    let mut sc = ShardedCluster::start(rt.clone(), config)
        .await
        .expect("the cluster starts");
    sc.wait_config(None, Duration::from_secs(30))
        .await
        .expect("the groups install the config");
    let ops = Arc::new(AtomicU64::new(0));
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let (done_tx, mut done_rx) = futures::channel::mpsc::unbounded::<()>();
    for c in 0..a.clients {
        let mut clerk = sc.clerk(ShardClerkConfig::default(), None);
        let (ops, measuring, stop, done) = (
            ops.clone(),
            measuring.clone(),
            stop.clone(),
            done_tx.clone(),
        );
        rt.spawn(async move {
            let value = vec![b'x'; 100];
            let mut rng = raftkv_raft::Rng::new(seed ^ (c as u64 + 1));
            while !stop.load(Ordering::SeqCst) {
                let key = format!("k{:06}", rng.range(0, 10_000));
                if clerk.put(key, value.clone(), None).await.is_ok()
                    && measuring.load(Ordering::SeqCst)
                {
                    ops.fetch_add(1, Ordering::Relaxed);
                }
            }
            let _ = done.unbounded_send(());
        });
    }
    drop(done_tx);
    // Warm-up: every clerk has its session and the config.
    rt.sleep(Duration::from_millis(500)).await;
    measuring.store(true, Ordering::SeqCst);
    let (start, cpu_start) = (Instant::now(), cpu_seconds());
    rt.sleep(Duration::from_secs_f64(a.seconds)).await;
    measuring.store(false, Ordering::SeqCst);
    let elapsed = start.elapsed().as_secs_f64();
    let rate = ops.load(Ordering::SeqCst) as f64 / elapsed;
    let cores = cpu_start.zip(cpu_seconds()).map(|(s, e)| (e - s) / elapsed);
    stop.store(true, Ordering::SeqCst);
    use futures::StreamExt;
    while done_rx.next().await.is_some() {}
    sc.close().await;
    (rate, cores)
}

fn main() {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("shardbench: {e}");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let rt = TokioRuntime::new(runtime.handle().clone());
    let counts = [1usize, 2, 4];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); counts.len()];
    runtime.block_on(async {
        for r in 0..a.repeats {
            for (i, &g) in counts.iter().enumerate() {
                let (rate, cores) = measure(&rt, g, &a, 1 + r as u64).await;
                let cores = cores.map_or("?".into(), |c| format!("{c:.2}"));
                let load = load_average().map_or("?".into(), |l| format!("{l:.1}"));
                eprintln!(
                    "repeat {}: {g} group(s): {rate:.0} puts/s, this process kept {cores} \
                     cores busy ({} on the machine; load average {load})",
                    r + 1,
                    std::thread::available_parallelism().map_or(0, |n| n.get())
                );
                rates[i].push(rate);
            }
        }
    });
    println!(
        "ShardClerk puts ({} clients, 100-byte values, 16 shards, 3 nodes per group, memory \
         storage, {} s x {} repeats; median):",
        a.clients, a.seconds, a.repeats
    );
    for (i, &g) in counts.iter().enumerate() {
        let mut r = rates[i].clone();
        r.sort_by(f64::total_cmp);
        let median = r[r.len() / 2];
        let all: Vec<String> = rates[i].iter().map(|x| format!("{x:.0}")).collect();
        println!(
            "  {g} group(s): {median:>7.0} puts/s   (runs: {})",
            all.join(", ")
        );
    }
}
