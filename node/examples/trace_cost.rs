//! What the cluster trace costs: put throughput of an in-process 3-node cluster (TCP, tokio)
//! with the trace off and on, in alternating rounds of one run, so that both see the same
//! machine (the node metrics, another observer, are off in both). `cargo run --release -p raftkv-node --example trace_cost -- [clients] [seconds per
//! round] [rounds] [replay.html]`. `KVBENCH_MEMORY=1` keeps the logs in memory (the trace's
//! CPU cost is then a larger share). With a fourth argument, the last traced round's replay
//! page is written there. Prints one JSON line per round and a summary line.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use raftkv_node::cluster::{ClusterConfig, LocalCluster, StorageKind};
use raftkv_node::load::{Load, LoadConfig, LoadMode};
use raftkv_node::replay::replay_html;
use raftkv_node::trace::TRACE_EVENTS_MAX_DEFAULT;
use raftkv_raft::runtime::tokio::TokioRuntime;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let num = |i: usize, default: f64| -> Result<f64, String> {
        args.get(i).map_or(Ok(default), |a| {
            a.parse::<f64>().map_err(|e| format!("argument {i}: {e}"))
        })
    };
    let parsed =
        (|| Ok::<_, String>((num(1, 32.0)? as usize, num(2, 5.0)?, num(3, 2.0)? as usize)))();
    let (clients, seconds, rounds) = match parsed {
        Ok((c, s, r)) if c > 0 && s > 0.0 && s < 3600.0 && r > 0 => (c, s, r),
        Ok(_) => {
            eprintln!("trace_cost: clients and rounds must be positive, seconds in (0, 3600)");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!(
                "trace_cost: {e}\nusage: trace_cost [clients] [seconds] [rounds] [replay.html]"
            );
            return ExitCode::from(2);
        }
    };
    let replay_path = args.get(4).cloned();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("cannot start the tokio runtime");
    let runtime = TokioRuntime::new(rt.handle().clone());
    let storage = if std::env::var_os("KVBENCH_MEMORY").is_some() {
        StorageKind::Memory
    } else {
        StorageKind::Lmdb
    };
    let mut totals = [(0.0f64, 0usize); 2];
    for round in 0..rounds * 2 {
        let traced = round % 2 == 1;
        let mut config = ClusterConfig::new(3, storage);
        config.trace_events_max = if traced { TRACE_EVENTS_MAX_DEFAULT } else { 0 };
        config.metrics = false;
        let started = rt.block_on(async {
            let cluster = LocalCluster::start(runtime.clone(), config).await?;
            cluster.wait_leader(Duration::from_secs(5)).await?;
            Ok::<_, raftkv_node::cluster::ClusterError>(cluster)
        });
        let mut cluster = match started {
            Ok(c) => c,
            Err(e) => {
                eprintln!("trace_cost: {e}");
                return ExitCode::FAILURE;
            }
        };
        let guard = rt.enter();
        let mut load_config = LoadConfig::new(clients, LoadMode::Put);
        load_config.preload = false;
        let load = Load::start(&runtime, cluster.addrs(), load_config);
        std::thread::sleep(Duration::from_millis(500));
        load.measure();
        let start = Instant::now();
        std::thread::sleep(Duration::from_secs_f64(seconds));
        load.stop();
        let elapsed = start.elapsed().as_secs_f64();
        let report = load.collect(Duration::from_secs(12));
        drop(guard);
        let ops_per_s = report.ops as f64 / elapsed;
        let trace = cluster.trace();
        println!(
            "{{\"round\": {round}, \"trace\": {traced}, \"ops_per_s\": {ops_per_s:.0}, \"p50_us\": {}, \"p99_us\": {}, \"events\": {}, \"dropped\": {}}}",
            report.latency_us_at(0.5),
            report.latency_us_at(0.99),
            trace.events.len(),
            trace.dropped,
        );
        totals[traced as usize].0 += ops_per_s;
        totals[traced as usize].1 += 1;
        if traced {
            if let Some(path) = &replay_path {
                if let Err(e) = std::fs::write(path, replay_html(&trace)) {
                    eprintln!("trace_cost: cannot write {path}: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        rt.block_on(cluster.close());
    }
    let off = totals[0].0 / totals[0].1.max(1) as f64;
    let on = totals[1].0 / totals[1].1.max(1) as f64;
    println!(
        "{{\"summary\": true, \"ops_per_s_trace_off\": {off:.0}, \"ops_per_s_trace_on\": {on:.0}, \"cost_percent\": {:.1}}}",
        (1.0 - on / off.max(1.0)) * 100.0
    );
    ExitCode::SUCCESS
}
