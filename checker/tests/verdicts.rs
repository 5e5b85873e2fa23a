//! Every history of Porcupine's test data gets the verdict Porcupine's own tests assert.

mod common;

use std::time::{Duration, Instant};

use common::{data_dir, validate, verdicts};
use raftkv_checker::models::{PorcupineKvModel, RegisterModel};
use raftkv_checker::{AnyHistory, CheckOptions, Format, Verdict};

/// Checks every file of `dir`. Files for which `bounded` is true are checked with a small time
/// and memory budget and may come out `Unknown`, but never with the wrong verdict.
fn check_dir(dir: &str, format: Format, partition: bool, bounded: impl Fn(&str) -> bool) {
    for (name, expected) in verdicts(dir) {
        let path = data_dir().join(dir).join(&name);
        let history = AnyHistory::read_file(format, &path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut options = CheckOptions {
            partition,
            ..CheckOptions::default()
        };
        if bounded(&name) {
            options.timeout = Some(Duration::from_secs(5));
            options.cache_entries_max = Some(1_000_000);
        }
        let start = Instant::now();
        let result = history.check(&options);
        println!(
            "{dir}/{name} (partition: {partition}): {} in {:?}",
            result.verdict,
            start.elapsed()
        );
        if bounded(&name) && result.verdict == Verdict::Unknown {
            println!("  (undecided within the budget, as expected for this size)");
        } else {
            assert_eq!(
                result.verdict, expected,
                "{dir}/{name}, partition: {partition}"
            );
        }
        match &history {
            AnyHistory::PorcupineKv(ops) => validate(&PorcupineKvModel, ops, &result),
            AnyHistory::Register(ops) => validate(&RegisterModel, ops, &result),
            AnyHistory::Kv(_) => unreachable!("no JSON in Porcupine's data"),
        }
    }
}

#[test]
fn porcupine_kv_histories_partitioned_by_key() {
    check_dir("kv", Format::PorcupineKv, true, |_| false);
}

/// Porcupine's `TestKvNoPartition*`: the whole history as one partition, the state a map of
/// every key. The 50-client histories are out of reach of this search as one partition (the
/// visited set grows by about 270 bytes per entry, 8 million entries in 30 s, without end in
/// sight); Porcupine does not test them either. They are run with a budget and must not get a
/// wrong verdict.
#[test]
fn porcupine_kv_histories_as_one_partition() {
    check_dir("kv", Format::PorcupineKv, false, |name| {
        name.starts_with("c50")
    });
}

#[test]
fn jepsen_etcd_histories() {
    check_dir("jepsen-etcd", Format::JepsenEtcd, true, |_| false);
}
