//! Helpers shared by the integration tests.
#![allow(dead_code)] // Each test file uses its own subset.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use raftkv_checker::{CheckResult, Model, Operation, Verdict};

/// Porcupine's test data: `$RAFTKV_PORCUPINE_DATA`, or `shared/data/porcupine` beside the repo.
pub fn data_dir() -> PathBuf {
    match std::env::var_os("RAFTKV_PORCUPINE_DATA") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/porcupine"),
    }
}

/// The (file name, expected verdict) pairs of `dir/VERDICTS.txt`.
pub fn verdicts(dir: &str) -> Vec<(String, Verdict)> {
    let path = data_dir().join(dir).join("VERDICTS.txt");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {} (set RAFTKV_PORCUPINE_DATA?): {e}",
            path.display()
        )
    });
    let list: Vec<(String, Verdict)> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (name, verdict) = l
                .split_once(char::is_whitespace)
                .expect("VERDICTS.txt: `file verdict` lines");
            let verdict = match verdict.trim() {
                "linearizable" => Verdict::Ok,
                "not-linearizable" => Verdict::Illegal,
                other => panic!("VERDICTS.txt: unknown verdict {other:?}"),
            };
            (name.to_string(), verdict)
        })
        .collect();
    assert!(!list.is_empty(), "{} lists no files", path.display());
    list
}

/// The return time the checker uses: `None` (+infinity) when the outcome is unknown.
pub fn effective_ret<M: Model>(model: &M, op: &Operation<M::Input, M::Output>) -> Option<u64> {
    if model.op_outcome_unknown(op) {
        None
    } else {
        op.ret
    }
}

/// Checks that `result` is a consistent account of `ops`: partitions cover the history once;
/// each linearization (or prefix) replays under the model and respects real time; an `Ok`
/// partition's linearization holds all its operations; an `Illegal` one names operations that
/// could have come next and that the model refuses after the prefix.
pub fn validate<M: Model>(model: &M, ops: &[Operation<M::Input, M::Output>], result: &CheckResult) {
    let mut seen = vec![0usize; ops.len()];
    for part in &result.partitions {
        for &i in &part.ops {
            seen[i] += 1;
        }
    }
    assert!(
        seen.iter().all(|&n| n == 1),
        "partitions must cover every operation once"
    );
    for part in &result.partitions {
        let members: HashSet<usize> = part.ops.iter().copied().collect();
        let lin = &part.linearization;
        let placed: HashSet<usize> = lin.iter().copied().collect();
        assert_eq!(placed.len(), lin.len(), "an operation is linearized twice");
        assert!(
            placed.is_subset(&members),
            "linearization holds operations of another partition"
        );
        if part.verdict == Verdict::Ok {
            assert_eq!(placed, members, "an Ok linearization holds every operation");
        }
        // Replays under the model.
        let mut state = model.init();
        for &i in lin {
            state = model
                .apply(&state, &ops[i])
                .unwrap_or_else(|| panic!("linearization step {i} refused by the model"));
        }
        // Real time: nothing placed after an operation that returned before it was called, and
        // nothing left out that returned before a placed operation was called.
        let position: HashMap<usize, usize> =
            lin.iter().enumerate().map(|(k, &i)| (i, k)).collect();
        for &a in &part.ops {
            for &b in lin {
                if let Some(ret) = effective_ret(model, &ops[a]) {
                    if ret < ops[b].call {
                        let pa = position.get(&a).unwrap_or_else(|| {
                            panic!(
                                "op {a} returned before placed op {b} was called but is not placed"
                            )
                        });
                        assert!(
                            *pa < position[&b],
                            "op {a} returned before op {b} was called but comes after it"
                        );
                    }
                }
            }
        }
        if part.verdict == Verdict::Illegal {
            assert!(
                !part.unplaceable.is_empty(),
                "an illegal partition names what could not be placed"
            );
            for &i in &part.unplaceable {
                assert!(members.contains(&i) && !placed.contains(&i));
                assert!(
                    model.apply(&state, &ops[i]).is_none(),
                    "op {i} is said unplaceable but the model accepts it after the prefix"
                );
            }
        } else {
            assert!(part.unplaceable.is_empty());
        }
    }
}
