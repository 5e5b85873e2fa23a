//! Hand-made histories with known verdicts.

use std::time::Duration;

use super::models::{
    KvErr, KvInput, KvModel, KvOp, KvOutput, RegisterInput as In, RegisterModel,
    RegisterOutput as Out,
};
use super::*;

type RegOp = Operation<In, Out>;

fn op(client: u64, call: u64, ret: Option<u64>, input: In, output: Out) -> RegOp {
    Operation {
        client,
        call,
        ret,
        input,
        output,
    }
}

fn verdict(ops: &[RegOp]) -> Verdict {
    check(&RegisterModel, ops, &CheckOptions::default()).verdict
}

#[test]
fn empty_history_is_linearizable() {
    let result = check(&RegisterModel, &[], &CheckOptions::default());
    assert_eq!(result.verdict, Verdict::Ok);
    assert!(result.partitions.is_empty());
}

/// The register example of MIT 6.824's 2017 quiz 2 (Porcupine's `TestRegisterModel`).
#[test]
fn quiz_register_histories() {
    let ok = [
        op(0, 0, Some(100), In::Write(100), Out::Write),
        op(1, 25, Some(75), In::Read, Out::Read(Some(100))),
        op(2, 30, Some(60), In::Read, Out::Read(None)),
    ];
    assert_eq!(verdict(&ok), Verdict::Ok);
    let bad = [
        op(0, 0, Some(100), In::Write(200), Out::Write),
        op(1, 10, Some(30), In::Read, Out::Read(Some(200))),
        op(2, 40, Some(90), In::Read, Out::Read(None)),
    ];
    assert_eq!(verdict(&bad), Verdict::Illegal);
}

/// Intervals are closed: operations that touch are concurrent (Porcupine's `TestZeroDuration`).
#[test]
fn zero_length_and_touching_intervals_are_concurrent() {
    let ok = [
        op(0, 0, Some(100), In::Write(100), Out::Write),
        op(1, 25, Some(75), In::Read, Out::Read(Some(100))),
        op(2, 30, Some(30), In::Read, Out::Read(None)),
        op(3, 30, Some(30), In::Read, Out::Read(None)),
    ];
    assert_eq!(verdict(&ok), Verdict::Ok);
    let bad = [
        op(0, 0, Some(100), In::Write(200), Out::Write),
        op(1, 10, Some(10), In::Read, Out::Read(Some(200))),
        op(2, 10, Some(10), In::Read, Out::Read(Some(200))),
        op(3, 40, Some(90), In::Read, Out::Read(None)),
    ];
    assert_eq!(verdict(&bad), Verdict::Illegal);
    // A write that returns at the very time a read is called may still come after it.
    let touching = [
        op(0, 0, Some(10), In::Write(1), Out::Write),
        op(1, 10, Some(20), In::Read, Out::Read(None)),
    ];
    assert_eq!(verdict(&touching), Verdict::Ok);
    let apart = [
        op(0, 0, Some(9), In::Write(1), Out::Write),
        op(1, 10, Some(20), In::Read, Out::Read(None)),
    ];
    assert_eq!(verdict(&apart), Verdict::Illegal);
}

#[test]
fn unknown_outcome_may_take_effect_any_time_after_its_call_or_never() {
    let write = |ret| op(0, 10, ret, In::Write(1), Out::Unknown);
    // Seen long after the writer gave up...
    let late = [
        write(None),
        op(1, 100, Some(110), In::Read, Out::Read(Some(1))),
    ];
    assert_eq!(verdict(&late), Verdict::Ok);
    // ...or never seen...
    let never = [
        write(None),
        op(1, 100, Some(110), In::Read, Out::Read(None)),
    ];
    assert_eq!(verdict(&never), Verdict::Ok);
    // ...or seen, then not seen, then seen again: a value cannot come back.
    let flicker = [
        write(None),
        op(1, 100, Some(110), In::Read, Out::Read(Some(1))),
        op(1, 120, Some(130), In::Read, Out::Read(None)),
    ];
    assert_eq!(verdict(&flicker), Verdict::Illegal);
    // But never before its call.
    let early = [write(None), op(1, 0, Some(5), In::Read, Out::Read(Some(1)))];
    assert_eq!(verdict(&early), Verdict::Illegal);
}

#[test]
fn illegal_result_names_the_prefix_and_the_operations_that_could_not_follow() {
    let ops = [
        op(0, 0, Some(10), In::Write(1), Out::Write),
        op(0, 20, Some(30), In::Write(2), Out::Write),
        op(1, 40, Some(50), In::Read, Out::Read(Some(1))),
    ];
    let result = check(&RegisterModel, &ops, &CheckOptions::default());
    assert_eq!(result.verdict, Verdict::Illegal);
    let part = &result.partitions[0];
    assert_eq!(part.verdict, Verdict::Illegal);
    assert_eq!(part.linearization, vec![0, 1]);
    assert_eq!(part.unplaceable, vec![2]);
}

fn kv(
    client: u64,
    call: u64,
    ret: Option<u64>,
    input: KvInput,
    output: KvOutput,
) -> Operation<KvInput, KvOutput> {
    Operation {
        client,
        call,
        ret,
        input,
        output,
    }
}

fn put(key: &str, value: &str, version: Option<u64>) -> KvInput {
    KvInput {
        op: KvOp::Put,
        key: key.into(),
        value: Some(value.into()),
        version,
    }
}

fn get(key: &str) -> KvInput {
    KvInput {
        op: KvOp::Get,
        key: key.into(),
        value: None,
        version: None,
    }
}

fn out(value: Option<&str>, version: Option<u64>, err: Option<KvErr>) -> KvOutput {
    KvOutput {
        value: value.map(Into::into),
        version,
        err,
    }
}

#[test]
fn conditional_put_that_answered_maybe_may_or_may_not_have_applied() {
    let base = [
        kv(
            0,
            0,
            Some(10),
            put("k", "a", None),
            out(None, Some(1), None),
        ),
        // Retried after an unknown outcome: answered maybe, at time 30.
        kv(
            1,
            20,
            Some(30),
            put("k", "b", Some(1)),
            out(None, None, Some(KvErr::Maybe)),
        ),
    ];
    let read = |value, version| {
        kv(
            2,
            40,
            Some(50),
            get("k"),
            out(Some(value), Some(version), None),
        )
    };
    for (value, version, expected) in [
        ("b", 2, Verdict::Ok),
        ("a", 1, Verdict::Ok),
        ("b", 1, Verdict::Illegal),
    ] {
        let mut ops = base.to_vec();
        ops.push(read(value, version));
        for partition in [true, false] {
            let result = check(
                &KvModel,
                &ops,
                &CheckOptions {
                    partition,
                    ..CheckOptions::default()
                },
            );
            assert_eq!(
                result.verdict, expected,
                "read {value}@{version}, partition {partition}"
            );
        }
    }
}

#[test]
fn keys_are_checked_apart_and_one_illegal_key_makes_the_history_illegal() {
    let ops = [
        kv(
            0,
            0,
            Some(10),
            put("a", "1", None),
            out(None, Some(1), None),
        ),
        kv(
            1,
            0,
            Some(10),
            put("b", "1", None),
            out(None, Some(1), None),
        ),
        kv(0, 20, Some(30), get("a"), out(Some("1"), Some(1), None)),
        kv(
            1,
            20,
            Some(30),
            get("b"),
            out(None, None, Some(KvErr::NoKey)),
        ),
    ];
    let result = check(&KvModel, &ops, &CheckOptions::default());
    assert_eq!(result.verdict, Verdict::Illegal);
    assert!(result.partitioned);
    assert_eq!(result.partitions.len(), 2);
    assert_eq!(result.partitions[1].ops, vec![1, 3]);
    assert_eq!(result.partitions[1].verdict, Verdict::Illegal);
    assert_eq!(result.partitions[1].unplaceable, vec![3]);
    let whole = check(
        &KvModel,
        &ops,
        &CheckOptions {
            partition: false,
            ..CheckOptions::default()
        },
    );
    assert_eq!(whole.verdict, Verdict::Illegal);
    assert_eq!(whole.partitions.len(), 1);
}

/// Many concurrent writes and a read of a value none wrote: illegal, but only after exploring
/// every order of the writes.
fn hard_history(writes: u64) -> Vec<RegOp> {
    let mut ops: Vec<RegOp> = (0..writes)
        .map(|i| op(i, 0, Some(100), In::Write(i as i64), Out::Write))
        .collect();
    ops.push(op(writes, 0, Some(100), In::Read, Out::Read(Some(-1))));
    ops
}

#[test]
fn timeout_gives_unknown() {
    let options = CheckOptions {
        timeout: Some(Duration::ZERO),
        ..CheckOptions::default()
    };
    let result = check(&RegisterModel, &hard_history(40), &options);
    assert_eq!(result.verdict, Verdict::Unknown);
    assert_eq!(result.partitions[0].undecided, Some(Undecided::Timeout));
}

#[test]
fn cache_bound_gives_unknown() {
    let options = CheckOptions {
        cache_entries_max: Some(1000),
        ..CheckOptions::default()
    };
    let result = check(&RegisterModel, &hard_history(40), &options);
    assert_eq!(result.verdict, Verdict::Unknown);
    assert_eq!(result.partitions[0].stats.cache_entries, 1000);
    assert_eq!(result.partitions[0].undecided, Some(Undecided::CacheFull));
    // The same history, small enough to finish.
    assert_eq!(verdict(&hard_history(8)), Verdict::Illegal);
}

/// Found by the brute-force comparison: an operation without a response may carry any output
/// (here an append "answering" `version`, which an append never does); it must not block.
#[test]
fn no_response_means_the_recorded_output_is_ignored() {
    let append = KvInput {
        op: KvOp::Append,
        key: "k".into(),
        value: Some("x".into()),
        version: None,
    };
    let junk = out(None, Some(7), Some(KvErr::Version));
    let seen = [
        kv(0, 0, None, append.clone(), junk.clone()),
        kv(1, 10, Some(20), get("k"), out(Some("x"), Some(1), None)),
    ];
    let unseen = [
        kv(0, 0, None, append, junk),
        kv(
            1,
            10,
            Some(20),
            get("k"),
            out(None, None, Some(KvErr::NoKey)),
        ),
    ];
    for ops in [&seen[..], &unseen[..]] {
        assert_eq!(
            check(&KvModel, ops, &CheckOptions::default()).verdict,
            Verdict::Ok
        );
    }
}

/// With `stop_on_illegal` (the default), a hard partition that is not needed for the verdict
/// is stopped once another is found illegal, and says why. One thread: partitions take turns,
/// so the hard one (the largest, started first) cannot keep the illegal one waiting (found on
/// Porcupine's c50-bad.txt, which never finished on one thread before partitions took turns).
#[test]
fn an_illegal_partition_stops_the_others() {
    // Key "hard": 40 concurrent writes and a read of a value none wrote, as in `hard_history`.
    let hard = |i: u64| {
        kv(
            i,
            0,
            Some(100),
            put("hard", &i.to_string(), None),
            out(None, None, None),
        )
    };
    let mut ops: Vec<_> = (0..40).map(hard).collect();
    ops.push(kv(
        40,
        0,
        Some(100),
        get("hard"),
        out(Some("none"), None, None),
    ));
    // Key "easy": a read of a value never written.
    ops.push(kv(
        41,
        0,
        Some(10),
        get("easy"),
        out(Some("x"), Some(1), None),
    ));
    let options = CheckOptions {
        threads: Some(1),
        ..CheckOptions::default()
    };
    let result = check(&KvModel, &ops, &options);
    assert_eq!(result.verdict, Verdict::Illegal);
    assert_eq!(result.partitions[0].verdict, Verdict::Illegal); // "easy"
    assert_eq!(result.partitions[1].verdict, Verdict::Unknown); // "hard"
    assert_eq!(result.partitions[1].undecided, Some(Undecided::Stopped));
}

/// Issue 20, the runaway of kv's simulated chaos test: writes refused because the store was
/// full were recorded as unknown outcomes (`timeout`, no return), so each could take effect at
/// any later time, and a run of them on one key gave the search every order of every subset
/// of them (7 minutes and 5.8 GB for 22 of them). Recorded as the definite `store_full` they
/// are, they change nothing and the history is decided at once.
#[test]
fn store_full_refusals_on_one_key_are_decided_at_once() {
    let history = |refusal: KvErr| {
        let mut ops = vec![kv(
            0,
            0,
            Some(10),
            put("k", "a", None),
            out(None, Some(1), None),
        )];
        for i in 0..20u64 {
            let ret = (refusal == KvErr::StoreFull).then_some(25 + 10 * i);
            let append = KvInput {
                op: KvOp::Append,
                key: "k".into(),
                value: Some(format!("{i};")),
                version: None,
            };
            ops.push(kv(
                1 + i,
                20 + 10 * i,
                ret,
                append,
                out(None, None, Some(refusal)),
            ));
        }
        ops.push(kv(
            21,
            300,
            Some(310),
            get("k"),
            out(Some("a"), Some(1), None),
        ));
        ops
    };
    let bounded = CheckOptions {
        cache_entries_max: Some(100_000),
        ..CheckOptions::default()
    };
    let result = check(&KvModel, &history(KvErr::StoreFull), &bounded);
    assert_eq!(result.verdict, Verdict::Ok);
    assert!(result.partitions[0].stats.cache_entries < 1_000);
    // The same answers as unknown outcomes: the search does not end within the bound.
    let result = check(&KvModel, &history(KvErr::Timeout), &bounded);
    assert_eq!(result.verdict, Verdict::Unknown);
}
