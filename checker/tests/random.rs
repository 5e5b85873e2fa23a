//! Randomized tests of the checker against two oracles:
//!
//! - histories generated from a sequential run of a plain `BTreeMap` store, with intervals
//!   jittered around each operation's point in time, are linearizable by construction;
//! - on small histories (≤ 8 operations) an exponential brute-force search must agree with the
//!   checker, after one read has been corrupted and on wholly random histories.
//!
//! A failure prints its seed; `RAFTKV_SEED=<seed>` replays it first.

mod common;

use std::cell::Cell;
use std::collections::BTreeMap;

use common::{effective_ret, validate};
use raftkv_checker::models::{KvErr, KvInput, KvModel, KvOp, KvOutput};
use raftkv_checker::{check, CheckOptions, Model, Operation, Verdict};

type Op = Operation<KvInput, KvOutput>;

/// xorshift64*: small, seeded, good enough for test generation.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// The seeds to run: `$RAFTKV_SEED` first if set, then `count` fixed ones.
fn seeds(count: u64) -> Vec<u64> {
    let mut seeds: Vec<u64> = std::env::var("RAFTKV_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .into_iter()
        .collect();
    seeds.extend(1..=count);
    seeds
}

/// Runs `f(seed)` for each seed, naming the seed of a failure.
fn for_seeds(count: u64, f: impl Fn(u64)) {
    for seed in seeds(count) {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(seed)));
        if let Err(e) = result {
            eprintln!("failed with RAFTKV_SEED={seed}");
            std::panic::resume_unwind(e);
        }
    }
}

/// A random operation applied to a plain map (the oracle), with the output it gives. With
/// `unknown`, the operation answers `maybe`/`timeout` and takes effect only if `applies`.
fn sequential_op(
    rng: &mut Rng,
    store: &mut BTreeMap<String, (String, u64)>,
    keys: u64,
    serial: usize,
) -> (KvInput, KvOutput) {
    let key = format!("k{}", rng.below(keys));
    let value = format!("v{serial}");
    let current = store.get(&key).cloned();
    let current_version = current.as_ref().map_or(0, |(_, v)| *v);
    let (input, result): (KvInput, Result<KvOutput, KvErr>) = match rng.below(5) {
        0 => {
            let input = KvInput {
                op: KvOp::Get,
                key: key.clone(),
                value: None,
                version: None,
            };
            let out = match &current {
                Some((v, n)) => Ok(KvOutput {
                    value: Some(v.clone()),
                    version: Some(*n),
                    err: None,
                }),
                None => Err(KvErr::NoKey),
            };
            (input, out)
        }
        1 | 2 => {
            let conditional = rng.chance(50);
            let version = conditional.then(|| match rng.below(3) {
                0 => current_version,
                1 => current_version + 1,
                _ => rng.below(3),
            });
            let input = KvInput {
                op: KvOp::Put,
                key: key.clone(),
                value: Some(value.clone()),
                version,
            };
            let out = match (version, &current) {
                (Some(v), None) if v > 0 => Err(KvErr::NoKey),
                (Some(v), _) if v != current_version => Err(KvErr::Version),
                _ => {
                    store.insert(key, (value, current_version + 1));
                    Ok(KvOutput {
                        value: None,
                        version: Some(current_version + 1),
                        err: None,
                    })
                }
            };
            (input, out)
        }
        3 => {
            let input = KvInput {
                op: KvOp::Append,
                key: key.clone(),
                value: Some(value.clone()),
                version: None,
            };
            let new_value = current.map_or(value.clone(), |(old, _)| old + &value);
            store.insert(key, (new_value, current_version + 1));
            (
                input,
                Ok(KvOutput {
                    value: None,
                    version: Some(current_version + 1),
                    err: None,
                }),
            )
        }
        _ => {
            let input = KvInput {
                op: KvOp::Delete,
                key: key.clone(),
                value: None,
                version: None,
            };
            let out = match store.remove(&key) {
                Some(_) => Ok(KvOutput::default()),
                None => Err(KvErr::NoKey),
            };
            (input, out)
        }
    };
    let output = result.unwrap_or_else(|err| KvOutput {
        value: None,
        version: None,
        err: Some(err),
    });
    (input, output)
}

/// A linearizable history: operations applied one after another at points 100 apart, each
/// interval a random stretch around its point. Some outcomes are unknown: the operation then
/// took effect or not at random, and its answer is `maybe`/`timeout` or missing.
fn linearizable_history(rng: &mut Rng, n: usize, keys: u64) -> Vec<Op> {
    let mut store = BTreeMap::new();
    let mut ops = Vec::with_capacity(n);
    for serial in 0..n {
        let point = 1000 + 100 * serial as u64;
        let unknown = rng.chance(15);
        let before = store.clone();
        let (input, mut output) = sequential_op(rng, &mut store, keys, serial);
        let mut ret = Some(point + rng.below(250));
        if unknown {
            if rng.chance(50) {
                store = before; // It never took effect.
            }
            output = KvOutput {
                value: None,
                version: None,
                err: Some(KvErr::Maybe),
            };
            match rng.below(3) {
                0 => ret = None,
                1 => output.err = Some(KvErr::Timeout),
                _ => {}
            }
        }
        ops.push(Operation {
            client: rng.below(4),
            call: point - rng.below(250),
            ret,
            input,
            output,
        });
    }
    ops
}

/// Exponential search over every order that respects real time; unknown outcomes may be left
/// out. The reference for small histories.
fn brute_force(ops: &[Op]) -> Verdict {
    fn go(ops: &[Op], done: u32, state: &<KvModel as Model>::State) -> bool {
        let finished = (0..ops.len())
            .all(|i| done & (1 << i) != 0 || effective_ret(&KvModel, &ops[i]).is_none());
        if finished {
            return true;
        }
        (0..ops.len()).any(|i| {
            let free = done & (1 << i) == 0;
            let blocked = (0..ops.len()).any(|j| {
                j != i
                    && done & (1 << j) == 0
                    && effective_ret(&KvModel, &ops[j]).is_some_and(|r| r < ops[i].call)
            });
            free && !blocked
                && KvModel
                    .apply(state, &ops[i])
                    .is_some_and(|next| go(ops, done | (1 << i), &next))
        })
    }
    if go(ops, 0, &KvModel.init()) {
        Verdict::Ok
    } else {
        Verdict::Illegal
    }
}

/// Checks `ops` both partitioned and whole; both must give `expected` and a valid result.
fn assert_verdict(ops: &[Op], expected: Verdict) {
    for partition in [true, false] {
        let result = check(
            &KvModel,
            ops,
            &CheckOptions {
                partition,
                ..CheckOptions::default()
            },
        );
        assert_eq!(
            result.verdict, expected,
            "partition: {partition}, history: {ops:#?}"
        );
        validate(&KvModel, ops, &result);
    }
}

/// Changes what one read saw, if there is a read.
fn corrupt_one_read(rng: &mut Rng, ops: &mut [Op]) -> bool {
    let reads: Vec<usize> = (0..ops.len())
        .filter(|&i| ops[i].input.op == KvOp::Get && !KvModel.op_outcome_unknown(&ops[i]))
        .collect();
    if reads.is_empty() {
        return false;
    }
    let out = &mut ops[reads[rng.below(reads.len() as u64) as usize]].output;
    *out = match (out.err, out.version) {
        (Some(_), _) => KvOutput {
            value: Some(format!("v{}", rng.below(6))),
            version: Some(1 + rng.below(2)),
            err: None,
        },
        (None, Some(v)) if rng.chance(50) => KvOutput {
            version: Some(v + 1),
            ..out.clone()
        },
        (None, _) if rng.chance(50) => KvOutput {
            value: None,
            version: None,
            err: Some(KvErr::NoKey),
        },
        (None, v) => KvOutput {
            value: Some(format!("v{}", rng.below(6))),
            version: v,
            err: None,
        },
    };
    true
}

#[test]
fn sequential_histories_with_jittered_intervals_are_linearizable() {
    for_seeds(300, |seed| {
        let mut rng = Rng::new(seed);
        let n = 1 + rng.below(if seed % 10 == 0 { 60 } else { 12 }) as usize;
        let keys = 1 + rng.below(3);
        let ops = linearizable_history(&mut rng, n, keys);
        assert_verdict(&ops, Verdict::Ok);
    });
}

#[test]
fn brute_force_agrees_after_corrupting_one_read() {
    let verdicts = Cell::new([0usize; 2]);
    for_seeds(400, |seed| {
        let mut rng = Rng::new(seed);
        let n = 2 + rng.below(7) as usize;
        let keys = 1 + rng.below(2);
        let mut ops = linearizable_history(&mut rng, n, keys);
        assert_eq!(
            brute_force(&ops),
            Verdict::Ok,
            "the generator must make linearizable histories"
        );
        if corrupt_one_read(&mut rng, &mut ops) {
            let expected = brute_force(&ops);
            assert_verdict(&ops, expected);
            let mut counts = verdicts.get();
            counts[usize::from(expected == Verdict::Illegal)] += 1;
            verdicts.set(counts);
        }
    });
    let [ok, illegal] = verdicts.get();
    assert!(
        ok >= 20 && illegal >= 20,
        "after corruption: {ok} linearizable, {illegal} not"
    );
}

#[test]
fn brute_force_agrees_on_random_histories() {
    let verdicts = Cell::new([0usize; 2]);
    for_seeds(600, |seed| {
        let mut rng = Rng::new(seed ^ 0xabcdef);
        let n = 1 + rng.below(7) as usize;
        let ops: Vec<Op> = (0..n)
            .map(|_| {
                let key = format!("k{}", rng.below(2));
                let op = [KvOp::Get, KvOp::Put, KvOp::Append, KvOp::Delete][rng.below(4) as usize];
                let value =
                    matches!(op, KvOp::Put | KvOp::Append).then(|| format!("v{}", rng.below(2)));
                let version = (op == KvOp::Put && rng.chance(40)).then(|| rng.below(3));
                let err = [
                    None,
                    None,
                    None,
                    Some(KvErr::NoKey),
                    Some(KvErr::Version),
                    Some(KvErr::Maybe),
                ][rng.below(6) as usize];
                let output = KvOutput {
                    value: (op == KvOp::Get && rng.chance(70))
                        .then(|| ["v0", "v1", "v0v1", "v1v0"][rng.below(4) as usize].into()),
                    version: rng.chance(70).then(|| 1 + rng.below(3)),
                    err,
                };
                let call = rng.below(100);
                let ret = (!rng.chance(10)).then(|| call + rng.below(60));
                Operation {
                    client: rng.below(3),
                    call,
                    ret,
                    input: KvInput {
                        op,
                        key,
                        value,
                        version,
                    },
                    output,
                }
            })
            .collect();
        let expected = brute_force(&ops);
        assert_verdict(&ops, expected);
        let mut counts = verdicts.get();
        counts[usize::from(expected == Verdict::Illegal)] += 1;
        verdicts.set(counts);
    });
    // Both verdicts must be well represented, or the comparison proves little.
    let [ok, illegal] = verdicts.get();
    assert!(
        ok >= 60 && illegal >= 60,
        "{ok} linearizable, {illegal} not"
    );
}
