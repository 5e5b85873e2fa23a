//! Times the linearizability checker on one history file.
//!
//! ```text
//! cargo run --release -p raftkv-checker --example checker_bench -- FILE [--no-partition] [--runs N]
//!     [--format json|porcupine-kv|jepsen-etcd] [--threads N] [--timeout SECONDS]
//!     [--stop-on-illegal] [--html OUT.html]
//! ```
//!
//! The format defaults from the extension: `.json` → json, `.txt` → porcupine-kv,
//! `.log` → jepsen-etcd. Prints each run and the median.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use raftkv_checker::{AnyHistory, CheckOptions, Format};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("checker_bench: {message}");
            eprintln!(
                "usage: checker_bench FILE [--no-partition] [--runs N] [--format json|porcupine-kv|jepsen-etcd] [--threads N] [--timeout SECONDS] [--stop-on-illegal] [--html OUT.html]"
            );
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let mut file = None;
    let mut options = CheckOptions::default();
    let mut runs = 5usize;
    let mut format = None;
    let mut html = None;
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--no-partition" => options.partition = false,
            "--runs" => {
                runs = value("--runs")?
                    .parse()
                    .map_err(|e| format!("--runs: {e}"))?
            }
            "--threads" => {
                options.threads = Some(
                    value("--threads")?
                        .parse()
                        .map_err(|e| format!("--threads: {e}"))?,
                )
            }
            "--timeout" => {
                let seconds: f64 = value("--timeout")?
                    .parse()
                    .map_err(|e| format!("--timeout: {e}"))?;
                options.timeout = Some(
                    Duration::try_from_secs_f64(seconds).map_err(|e| format!("--timeout: {e}"))?,
                );
            }
            "--html" => html = Some(value("--html")?),
            "--stop-on-illegal" => options.stop_on_illegal = true,
            "--format" => {
                format = Some(
                    value("--format")?
                        .parse::<Format>()
                        .map_err(|e| e.to_string())?,
                )
            }
            _ if arg.starts_with("--") => return Err(format!("unknown option {arg}")),
            _ => file = Some(arg),
        }
    }
    let file = file.ok_or("no history file given")?;
    let format = match format {
        Some(f) => f,
        None if file.ends_with(".json") => Format::Json,
        None if file.ends_with(".txt") => Format::PorcupineKv,
        None if file.ends_with(".log") => Format::JepsenEtcd,
        None => return Err("cannot tell the format from the extension: give --format".into()),
    };
    let history = AnyHistory::read_file(format, &file).map_err(|e| format!("{file}: {e}"))?;
    println!(
        "{file}: {} operations, model {}, {}",
        history.len(),
        history.model_name(),
        if options.partition {
            "partitioned"
        } else {
            "one partition"
        }
    );
    let mut times = Vec::with_capacity(runs);
    for run in 1..=runs.max(1) {
        let start = Instant::now();
        let result = history.check(&options);
        let seconds = start.elapsed().as_secs_f64();
        let entries: usize = result
            .partitions
            .iter()
            .map(|p| p.stats.cache_entries)
            .sum();
        let states: usize = result.partitions.iter().map(|p| p.stats.states).sum();
        let steps: u64 = result.partitions.iter().map(|p| p.stats.model_steps).sum();
        println!(
            "run {run}: {} in {seconds:.3}s ({} partitions, {entries} cache entries, {states} states, {steps} model steps)",
            result.verdict,
            result.partitions.len()
        );
        times.push(seconds);
    }
    if let Some(path) = html {
        let result = history.check(&options);
        let mut out = std::io::BufWriter::new(
            std::fs::File::create(&path).map_err(|e| format!("{path}: {e}"))?,
        );
        history
            .visualize(&result, &mut out)
            .map_err(|e| format!("{path}: {e}"))?;
        println!("visualization: {path}");
    }
    times.sort_by(f64::total_cmp);
    println!("median: {:.3}s", times[times.len() / 2]);
    Ok(())
}
