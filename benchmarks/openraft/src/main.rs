//! raftkv's Rust library vs openraft, side by side, in one process invocation.
//!
//! The setup is openraft's own benchmark (`benchmarks/minimal` in databendlabs/openraft): a
//! cluster of 3 nodes in one process, in-memory log and state machine, no network (an
//! in-process router), no fsync, empty requests by default, N concurrent proposers writing on
//! the leader in a closed loop. Both systems run on the same kind of tokio runtime (a fresh
//! multi-thread runtime per run, `--workers` threads, proposers on it too), alternating which
//! goes first from case to case and repeat to repeat.
//!
//! Output: a table on stdout (also written as `.md`) and one JSON line per run in
//! `benchmarks/results/openraft-STAMP.jsonl`.

mod openraft_side;
mod raftkv_side;

use bytes::Bytes;
use clap::Parser;
use hdrhistogram::Histogram;
use serde_json::json;
use std::fmt::Write as _;
use std::future::Future;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// One write through a system's public API, on its leader.
pub trait Workload: Clone + Send + Sync + 'static {
    fn write(&self, payload: Bytes) -> impl Future<Output = Result<(), String>> + Send;
}

#[derive(Parser, Debug, Clone)]
#[command(about = "raftkv vs openraft: 3 in-process nodes, in-memory, N proposers on the leader")]
struct Args {
    /// Measured seconds per run.
    #[arg(long, default_value_t = 5.0)]
    secs: f64,
    /// Warm-up seconds per run (after the leader is known; not measured).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Repeats of every case.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Concurrent proposers, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,64,256")]
    proposers: Vec<usize>,
    /// Request size in bytes (openraft's benchmark sends empty requests).
    #[arg(long, default_value_t = 0)]
    payload: usize,
    /// tokio worker threads (servers and proposers share them).
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Systems to run, comma separated: raftkv, openraft.
    #[arg(long, value_delimiter = ',', default_value = "raftkv,openraft")]
    systems: Vec<String>,
    /// JSON lines output (default: benchmarks/results/openraft-STAMP.jsonl).
    #[arg(long)]
    out: Option<PathBuf>,
}

struct Measured {
    ops: u64,
    errors: u64,
    first_error: Option<String>,
    hist: Histogram<u64>,
    secs: f64,
    cpu_cores: f64,
}

/// Latency in ns, 1 ns to 60 s, 3 significant digits. Proposers push raw latencies onto a
/// `Vec` and the histogram is built after the run: one histogram per proposer (~0.6 MB each)
/// showed in a profile as 4–5% of CPU (cache misses) at 256 proposers, a tax on both systems.
fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).unwrap()
}

fn cpu_ticks() -> u64 {
    // utime + stime of this process, in clock ticks (fields 14 and 15 of /proc/self/stat).
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = s.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    get(11) + get(12)
}

fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|x| x.parse().ok()))
        .unwrap_or(f64::NAN)
}

/// Closed loop: `proposers` tasks each write, wait for the answer, write again. A write counts
/// (and its latency is recorded) if it completes inside the measured window.
async fn drive<W: Workload>(
    w: W,
    proposers: usize,
    warmup: Duration,
    secs: Duration,
    payload: Bytes,
) -> Measured {
    let t0 = Instant::now();
    let start = t0 + warmup;
    let end = start + secs;
    let cpu = tokio::spawn(async move {
        tokio::time::sleep_until(start.into()).await;
        let (c0, w0) = (cpu_ticks(), Instant::now());
        tokio::time::sleep_until(end.into()).await;
        let (c1, w1) = (cpu_ticks(), Instant::now());
        (c1 - c0) as f64 / 100.0 / (w1 - w0).as_secs_f64()
    });
    let mut tasks = Vec::new();
    for _ in 0..proposers {
        let w = w.clone();
        let payload = payload.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat: Vec<u64> = Vec::with_capacity(1 << 16);
            let (mut ops, mut errors, mut first_error) = (0u64, 0u64, None);
            loop {
                let s = Instant::now();
                if s >= end {
                    break;
                }
                // A fresh buffer per write, as a server decoding a request would have: one
                // shared `Bytes` would make every clone, in both systems, an atomic on the same
                // cache line from both cores. Empty requests need no buffer.
                let r = w.write(Bytes::copy_from_slice(&payload)).await;
                let e = Instant::now();
                match r {
                    Ok(()) => {
                        if e >= start && e <= end {
                            ops += 1;
                            lat.push((e - s).as_nanos() as u64);
                        }
                    }
                    Err(err) => {
                        errors += 1;
                        first_error.get_or_insert(err);
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            }
            (lat, ops, errors, first_error)
        }));
    }
    let mut m = Measured {
        ops: 0,
        errors: 0,
        first_error: None,
        hist: new_hist(),
        secs: secs.as_secs_f64(),
        cpu_cores: 0.0,
    };
    for t in tasks {
        let (lat, ops, errors, fe) = t.await.expect("proposer");
        for l in lat {
            m.hist.saturating_record(l);
        }
        m.ops += ops;
        m.errors += errors;
        if m.first_error.is_none() {
            m.first_error = fe;
        }
    }
    m.cpu_cores = cpu.await.unwrap_or(f64::NAN);
    m
}

fn run_one(system: &str, proposers: usize, args: &Args) -> Measured {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.workers)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let warmup = Duration::from_secs_f64(args.warmup);
    let secs = Duration::from_secs_f64(args.secs);
    let payload = Bytes::from(vec![b'x'; args.payload]);
    let m = rt.block_on(async {
        match system {
            "raftkv" => {
                let c = raftkv_side::start().await;
                let m = drive(c.leader.clone(), proposers, warmup, secs, payload).await;
                c.shutdown().await;
                m
            }
            "openraft" => {
                let c = openraft_side::start().await;
                let m = drive(c.leader.clone(), proposers, warmup, secs, payload).await;
                c.shutdown().await;
                m
            }
            other => panic!("unknown system {other}"),
        }
    });
    rt.shutdown_timeout(Duration::from_secs(2));
    m
}

fn cmd_out(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

struct Row {
    system: String,
    proposers: usize,
    ops_per_s: f64,
    p50_us: f64,
    p99_us: f64,
    repeat: usize,
    cpu_cores: f64,
    load_before: f64,
    load_after: f64,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() {
    let args = Args::parse();
    let stamp = cmd_out("date", &["-u", "+%Y%m%dT%H%M%SZ"]);
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap()
            .join(format!("results/openraft-{stamp}.jsonl"))
    });
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).expect("results dir");
    }
    let mut file = std::fs::File::create(&out).expect("results file");
    let commit = cmd_out(
        "git",
        &[
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "rev-parse",
            "--short",
            "HEAD",
        ],
    );
    let machine = json!({
        "kind": "machine",
        "stamp": stamp,
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "kernel": cmd_out("uname", &["-r"]),
        "rustc": cmd_out("rustc", &["--version"]),
        "raftkv_commit": commit,
        "openraft": "0.10.0-alpha.37",
        "args": format!("{args:?}"),
    });
    writeln!(file, "{machine}").unwrap();
    eprintln!("results: {}", out.display());

    let mut rows = Vec::new();
    for repeat in 0..args.repeats {
        for (ci, &p) in args.proposers.iter().enumerate() {
            let mut order = args.systems.clone();
            if (repeat + ci) % 2 == 1 {
                order.reverse();
            }
            for system in &order {
                let load_before = loadavg();
                let m = run_one(system, p, &args);
                let load_after = loadavg();
                let ops_per_s = m.ops as f64 / m.secs;
                let us = |q: f64| m.hist.value_at_quantile(q) as f64 / 1000.0;
                let (p50, p99) = (us(0.5), us(0.99));
                let noisy = load_before > 1.5 || load_after > 1.5;
                let line = json!({
                    "kind": "run", "system": system, "proposers": p, "repeat": repeat,
                    "payload_bytes": args.payload, "workers": args.workers,
                    "secs": m.secs, "ops": m.ops, "ops_per_s": ops_per_s,
                    "p50_us": p50, "p90_us": us(0.9), "p99_us": p99, "p999_us": us(0.999),
                    "mean_us": m.hist.mean() / 1000.0, "max_us": m.hist.max() as f64 / 1000.0,
                    "errors": m.errors, "first_error": m.first_error,
                    "cpu_cores": m.cpu_cores,
                    "loadavg_before": load_before, "loadavg_after": load_after, "noisy": noisy,
                });
                writeln!(file, "{line}").unwrap();
                file.flush().unwrap();
                eprintln!(
                    "repeat {repeat} {system:>8} {p:>4} proposers: {ops_per_s:>10.0} ops/s  p50 {p50:>8.1} µs  p99 {p99:>8.1} µs  cpu {:.2} cores  errors {}  load {load_before:.2}→{load_after:.2}{}",
                    m.cpu_cores, m.errors, if noisy { "  NOISY" } else { "" }
                );
                rows.push(Row {
                    system: system.clone(),
                    proposers: p,
                    ops_per_s,
                    p50_us: p50,
                    p99_us: p99,
                    repeat,
                    cpu_cores: m.cpu_cores,
                    load_before,
                    load_after,
                });
            }
        }
    }

    let mut md = String::new();
    let _ = writeln!(
        md,
        "| system | proposers | its ops/s median (min–max) | openraft ops/s median (min–max) | ratio of medians | per-repeat ratios | its p50 / p99 µs | openraft p50 / p99 µs | p50 ratio | ops per CPU-second, its / openraft (ratio) | load avg (min–max) |"
    );
    let _ = writeln!(md, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    let stats = |sys: &str, p: usize| {
        let r: Vec<&Row> = rows
            .iter()
            .filter(|r| r.system == sys && r.proposers == p)
            .collect();
        let mut ops: Vec<f64> = r.iter().map(|r| r.ops_per_s).collect();
        let mut p50: Vec<f64> = r.iter().map(|r| r.p50_us).collect();
        let mut p99: Vec<f64> = r.iter().map(|r| r.p99_us).collect();
        let min = ops.iter().cloned().fold(f64::INFINITY, f64::min);
        let max = ops.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let mut eff: Vec<f64> = r.iter().map(|r| r.ops_per_s / r.cpu_cores).collect();
        (
            median(&mut ops),
            min,
            max,
            median(&mut p50),
            median(&mut p99),
            median(&mut eff),
        )
    };
    for sys in args.systems.iter().filter(|s| *s != "openraft") {
        for &p in &args.proposers {
            // Each repeat runs the systems back to back: their ratio is paired, so less exposed
            // to the machine's load drifting between repeats than the ratio of medians.
            let paired: Vec<String> = (0..args.repeats)
                .filter_map(|rep| {
                    let get = |sys: &str| {
                        rows.iter()
                            .find(|r| r.system == sys && r.proposers == p && r.repeat == rep)
                            .map(|r| r.ops_per_s)
                    };
                    Some(format!("{:.2}", get(sys)? / get("openraft")?))
                })
                .collect();
            let k = stats(sys, p);
            let o = stats("openraft", p);
            let loads: Vec<f64> = rows
                .iter()
                .filter(|r| r.proposers == p && (r.system == *sys || r.system == "openraft"))
                .flat_map(|r| [r.load_before, r.load_after])
                .collect();
            let lmin = loads.iter().cloned().fold(f64::INFINITY, f64::min);
            let lmax = loads.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let _ = writeln!(
                md,
                "| {sys} | {p} | {:.0} ({:.0}–{:.0}) | {:.0} ({:.0}–{:.0}) | {:.2}× | {} | {:.1} / {:.0} | {:.1} / {:.0} | {:.2} | {:.0}k / {:.0}k ({:.2}×) | {lmin:.2}–{lmax:.2} |",
                k.0, k.1, k.2, o.0, o.1, o.2, k.0 / o.0, paired.join(", "), k.3, k.4, o.3, o.4,
                k.3 / o.3, k.5 / 1e3, o.5 / 1e3, k.5 / o.5
            );
        }
    }
    print!("{md}");
    let md_path = out.with_extension("md");
    let header = format!(
        "raftkv vs openraft 0.10.0-alpha.37, in-process, in-memory; {} s per run, {} repeats, {}-byte requests, {} tokio workers; raftkv commit {}; {}\n\n",
        args.secs, args.repeats, args.payload, args.workers, commit, stamp
    );
    std::fs::write(&md_path, header + &md).expect("md");
    eprintln!("table: {}", md_path.display());
}
