//! The model of our versioned key/value service.
//!
//! Each key has a value and a version; a missing key has version 0. Every successful write
//! (put, append) adds one to the version, so a key's first write gives version 1; a delete
//! removes the key, and a key written again after a delete starts again at version 1.
//!
//! - `get`: the value and version, or `no_key`.
//! - `put` without a version: writes, answers the new version.
//! - `put` with version `v`: applies only if the key's version is `v` (`0`: the key must be
//!   missing); a missing key with `v > 0` answers `no_key`; any other mismatch answers `version`
//!   and changes nothing.
//! - `append`: like an unconditional put of the old value followed by the suffix (a missing key
//!   is created with the suffix as its value).
//! - `delete`: removes the key, or answers `no_key`.
//! - `store_full`: a put or append was refused because the store's data would pass its bound;
//!   nothing changed. A definite outcome (the server records it in the session, so a retry
//!   gets the same answer and the write is never applied). The bound counts every key, which
//!   one key's partition cannot see: the model accepts the answer whenever the write's
//!   version condition held (a conditional put is checked for its version first).
//!
//! An operation that answered `maybe` or `timeout`, or never answered, may or may not have taken
//! effect: its outcome is unknown ([`Model::outcome_unknown`]) and any output is accepted.
//! An output without a version (`null`) accepts any version.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{quote, KeyMap, SharedStr};
use crate::{Model, Operation};

/// The kind of a key/value operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KvOp {
    /// Read a key.
    Get,
    /// Write a key, optionally only at a given version.
    Put,
    /// Append to a key's value.
    Append,
    /// Remove a key.
    Delete,
}

/// The error of a key/value operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KvErr {
    /// The key does not exist.
    NoKey,
    /// A conditional put's version did not match; nothing changed.
    Version,
    /// A retried conditional put cannot tell whether it was applied.
    Maybe,
    /// No answer in time.
    Timeout,
    /// A put or append was refused: the store was full. Nothing changed; a definite outcome.
    StoreFull,
}

impl KvErr {
    /// The name used in the JSON history.
    pub fn as_str(self) -> &'static str {
        match self {
            KvErr::NoKey => "no_key",
            KvErr::Version => "version",
            KvErr::Maybe => "maybe",
            KvErr::Timeout => "timeout",
            KvErr::StoreFull => "store_full",
        }
    }

    /// True for the errors after which the operation may or may not have taken effect.
    pub fn outcome_unknown(self) -> bool {
        matches!(self, KvErr::Maybe | KvErr::Timeout)
    }
}

/// The input of a key/value operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvInput {
    /// What to do.
    pub op: KvOp,
    /// The key.
    pub key: String,
    /// The value to put or append (`None` for get and delete).
    #[serde(default)]
    pub value: Option<String>,
    /// For a conditional put: the version the key must have (0: must be missing).
    #[serde(default)]
    pub version: Option<u64>,
}

/// The output of a key/value operation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvOutput {
    /// The value read by a get.
    #[serde(default)]
    pub value: Option<String>,
    /// The version read by a get, or written by a put or append.
    #[serde(default)]
    pub version: Option<u64>,
    /// The error, if any.
    #[serde(default)]
    pub err: Option<KvErr>,
}

/// The versioned key/value model, partitioned by key.
#[derive(Clone, Copy, Debug, Default)]
pub struct KvModel;

/// A key's value and version.
pub type KvEntry = (SharedStr, u64);

impl KvModel {
    /// What a write does to `current`: the new entry, or the error it answers.
    fn write(input: &KvInput, current: Option<&KvEntry>) -> Result<KvEntry, KvErr> {
        let current_version = current.map_or(0, |(_, v)| *v);
        if input.op == KvOp::Put {
            match (input.version, current) {
                (Some(v), None) if v > 0 => return Err(KvErr::NoKey),
                (Some(v), _) if v != current_version => return Err(KvErr::Version),
                _ => {}
            }
        }
        // 2^64 writes to one key cannot happen; a history claiming it is refused.
        let version = current_version.checked_add(1).ok_or(KvErr::Version)?;
        let suffix = input.value.as_deref().unwrap_or("");
        let value = match (input.op, current) {
            (KvOp::Append, Some((old, _))) => old.concat(suffix),
            _ => SharedStr::from(suffix),
        };
        Ok((value, version))
    }
}

impl Model for KvModel {
    type State = KeyMap<KvEntry>;
    type Input = KvInput;
    type Output = KvOutput;

    fn init(&self) -> Self::State {
        KeyMap::new()
    }

    fn step(&self, state: &Self::State, input: &KvInput, output: &KvOutput) -> Option<Self::State> {
        if output.err.is_some_and(KvErr::outcome_unknown) {
            return Some(self.step_unknown(state, input, output));
        }
        let current = state.get(&input.key);
        if output.err == Some(KvErr::StoreFull) {
            let refusable =
                matches!(input.op, KvOp::Put | KvOp::Append) && Self::write(input, current).is_ok();
            return refusable.then(|| state.clone());
        }
        match input.op {
            KvOp::Get => {
                let answered = match current {
                    None => output.err == Some(KvErr::NoKey),
                    Some((value, version)) => {
                        output.err.is_none()
                            && output.value.as_deref() == Some(value.as_str())
                            && output.version.is_none_or(|v| v == *version)
                    }
                };
                answered.then(|| state.clone())
            }
            KvOp::Put | KvOp::Append => match Self::write(input, current) {
                Err(err) => (output.err == Some(err)).then(|| state.clone()),
                Ok(entry) => {
                    let answered =
                        output.err.is_none() && output.version.is_none_or(|v| v == entry.1);
                    answered.then(|| state.with(&input.key, Some(entry)))
                }
            },
            KvOp::Delete => match current {
                None => (output.err == Some(KvErr::NoKey)).then(|| state.clone()),
                Some(_) => output.err.is_none().then(|| state.with(&input.key, None)),
            },
        }
    }

    fn step_unknown(
        &self,
        state: &Self::State,
        input: &KvInput,
        _output: &KvOutput,
    ) -> Self::State {
        let current = state.get(&input.key);
        match input.op {
            KvOp::Get => state.clone(),
            KvOp::Put | KvOp::Append => match Self::write(input, current) {
                Ok(entry) => state.with(&input.key, Some(entry)),
                Err(_) => state.clone(),
            },
            KvOp::Delete if current.is_some() => state.with(&input.key, None),
            KvOp::Delete => state.clone(),
        }
    }

    fn outcome_unknown(&self, _input: &KvInput, output: &KvOutput) -> bool {
        output.err.is_some_and(KvErr::outcome_unknown)
    }

    fn partition(&self, ops: &[Operation<KvInput, KvOutput>]) -> Vec<Vec<usize>> {
        let mut by_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, op) in ops.iter().enumerate() {
            by_key.entry(op.input.key.as_str()).or_default().push(i);
        }
        by_key.into_values().collect()
    }

    fn describe_operation(&self, input: &KvInput, output: &KvOutput) -> String {
        let key = quote(&input.key);
        let value = quote(input.value.as_deref().unwrap_or(""));
        let call = match (input.op, input.version) {
            (KvOp::Get, _) => format!("get({key})"),
            (KvOp::Put, None) => format!("put({key}, {value})"),
            (KvOp::Put, Some(v)) => format!("put({key}, {value}, if ver {v})"),
            (KvOp::Append, _) => format!("append({key}, {value})"),
            (KvOp::Delete, _) => format!("delete({key})"),
        };
        let answer = match (output.err, input.op) {
            (Some(err), _) => err.as_str().to_string(),
            (None, KvOp::Get) => match (&output.value, output.version) {
                (Some(value), Some(v)) => format!("{} (ver {v})", quote(value)),
                (Some(value), None) => quote(value),
                (None, _) => "?".to_string(),
            },
            (None, KvOp::Put | KvOp::Append) => output
                .version
                .map_or("ok".to_string(), |v| format!("ver {v}")),
            (None, KvOp::Delete) => "ok".to_string(),
        };
        format!("{call} → {answer}")
    }

    fn describe_state(&self, state: &Self::State) -> String {
        let entries: Vec<String> = state
            .iter()
            .map(|(k, (value, version))| {
                format!("{}: {} (ver {version})", quote(k), quote(value.as_str()))
            })
            .collect();
        format!("{{{}}}", entries.join(", "))
    }

    fn describe_partition(&self, input: &KvInput) -> Option<String> {
        Some(format!("key {}", quote(&input.key)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(op: KvOp, key: &str, value: Option<&str>, version: Option<u64>) -> KvInput {
        KvInput {
            op,
            key: key.into(),
            value: value.map(Into::into),
            version,
        }
    }

    fn ok(value: Option<&str>, version: Option<u64>) -> KvOutput {
        KvOutput {
            value: value.map(Into::into),
            version,
            err: None,
        }
    }

    fn err(e: KvErr) -> KvOutput {
        KvOutput {
            value: None,
            version: None,
            err: Some(e),
        }
    }

    /// Applies `steps` in order from the initial state; the index of the first refused step.
    fn run(steps: &[(KvInput, KvOutput)]) -> Result<KeyMap<KvEntry>, usize> {
        let mut state = KvModel.init();
        for (i, (inp, out)) in steps.iter().enumerate() {
            state = KvModel.step(&state, inp, out).ok_or(i)?;
        }
        Ok(state)
    }

    /// A refused write changes nothing; a conditional put is refused as full only if its
    /// version matched; a get or delete is never refused as full.
    #[test]
    fn store_full_changes_nothing_and_needs_the_version_to_match() {
        let full = || err(KvErr::StoreFull);
        let create = (input(KvOp::Put, "k", Some("a"), None), ok(None, Some(1)));
        let state = run(&[
            create.clone(),
            (input(KvOp::Append, "k", Some("b"), None), full()),
            (input(KvOp::Put, "k", Some("c"), None), full()),
            (input(KvOp::Put, "k", Some("d"), Some(1)), full()),
            (input(KvOp::Append, "j", Some("e"), None), full()),
        ])
        .unwrap();
        assert_eq!(
            state.get("k").map(|(v, n)| (v.as_str(), *n)),
            Some(("a", 1))
        );
        assert!(state.get("j").is_none());
        let refused = |i: KvInput| run(&[create.clone(), (i, full())]);
        assert_eq!(refused(input(KvOp::Put, "k", Some("d"), Some(2))), Err(1));
        assert_eq!(refused(input(KvOp::Put, "j", Some("d"), Some(1))), Err(1));
        assert_eq!(refused(input(KvOp::Get, "k", None, None)), Err(1));
        assert_eq!(refused(input(KvOp::Delete, "k", None, None)), Err(1));
        assert!(!KvModel.outcome_unknown(&input(KvOp::Put, "k", Some("x"), None), &full()));
    }

    #[test]
    fn get_of_a_missing_key_answers_no_key() {
        assert!(run(&[(input(KvOp::Get, "k", None, None), err(KvErr::NoKey))]).is_ok());
        assert_eq!(
            run(&[(input(KvOp::Get, "k", None, None), ok(Some(""), Some(0)))]),
            Err(0)
        );
    }

    #[test]
    fn first_write_gives_version_one_and_each_write_adds_one() {
        let steps = [
            (input(KvOp::Put, "k", Some("a"), None), ok(None, Some(1))),
            (input(KvOp::Append, "k", Some("b"), None), ok(None, Some(2))),
            (input(KvOp::Put, "k", Some("c"), None), ok(None, Some(3))),
            (input(KvOp::Get, "k", None, None), ok(Some("c"), Some(3))),
        ];
        assert!(run(&steps).is_ok());
        let wrong = [(input(KvOp::Put, "k", Some("a"), None), ok(None, Some(2)))];
        assert_eq!(run(&wrong), Err(0));
    }

    #[test]
    fn append_to_a_missing_key_creates_it_at_version_one() {
        let steps = [
            (input(KvOp::Append, "k", Some("x"), None), ok(None, Some(1))),
            (input(KvOp::Append, "k", Some("y"), None), ok(None, Some(2))),
            (input(KvOp::Get, "k", None, None), ok(Some("xy"), Some(2))),
        ];
        assert!(run(&steps).is_ok());
    }

    #[test]
    fn conditional_put_follows_the_version_rules() {
        let put = |v| input(KvOp::Put, "k", Some("v"), Some(v));
        // Missing key: version 0 creates at version 1, version > 0 answers no_key.
        assert!(run(&[(put(0), ok(None, Some(1)))]).is_ok());
        assert!(run(&[(put(2), err(KvErr::NoKey))]).is_ok());
        assert_eq!(run(&[(put(2), ok(None, Some(3)))]), Err(0));
        assert_eq!(run(&[(put(0), err(KvErr::Version))]), Err(0));
        // Present key at version 1: matching version applies, anything else answers version.
        let create = (put(0), ok(None, Some(1)));
        assert!(run(&[create.clone(), (put(1), ok(None, Some(2)))]).is_ok());
        assert!(run(&[create.clone(), (put(0), err(KvErr::Version))]).is_ok());
        assert!(run(&[create.clone(), (put(5), err(KvErr::Version))]).is_ok());
        assert_eq!(run(&[create.clone(), (put(5), err(KvErr::NoKey))]), Err(1));
        // A refused put changes nothing.
        let state = run(&[create, (put(5), err(KvErr::Version))]).unwrap();
        assert_eq!(state.get("k").map(|(_, v)| *v), Some(1));
    }

    #[test]
    fn delete_removes_and_recreation_starts_again_at_version_one() {
        let steps = [
            (input(KvOp::Put, "k", Some("a"), None), ok(None, Some(1))),
            (input(KvOp::Put, "k", Some("b"), None), ok(None, Some(2))),
            (input(KvOp::Delete, "k", None, None), ok(None, None)),
            (input(KvOp::Get, "k", None, None), err(KvErr::NoKey)),
            (input(KvOp::Delete, "k", None, None), err(KvErr::NoKey)),
            (input(KvOp::Put, "k", Some("c"), None), ok(None, Some(1))),
        ];
        assert!(run(&steps).is_ok());
        assert_eq!(
            run(&[(input(KvOp::Delete, "k", None, None), ok(None, None))]),
            Err(0)
        );
    }

    #[test]
    fn maybe_and_timeout_accept_both_outcomes() {
        // A conditional put that answered maybe: applied if the version matched...
        let create = (input(KvOp::Put, "k", Some("a"), None), ok(None, Some(1)));
        let maybe = (input(KvOp::Put, "k", Some("b"), Some(1)), err(KvErr::Maybe));
        let state = run(&[create.clone(), maybe.clone()]).unwrap();
        assert_eq!(
            state.get("k").map(|(v, n)| (v.as_str(), *n)),
            Some(("b", 2))
        );
        // ...and left alone if it did not.
        let maybe_stale = (input(KvOp::Put, "k", Some("b"), Some(7)), err(KvErr::Maybe));
        let state = run(&[create, maybe_stale]).unwrap();
        assert_eq!(
            state.get("k").map(|(v, n)| (v.as_str(), *n)),
            Some(("a", 1))
        );
        // A get that timed out accepts anything and changes nothing.
        let get = (input(KvOp::Get, "k", None, None), err(KvErr::Timeout));
        assert!(run(&[get]).is_ok());
        assert!(KvModel.outcome_unknown(&input(KvOp::Get, "k", None, None), &err(KvErr::Timeout)));
        assert!(!KvModel.outcome_unknown(&input(KvOp::Get, "k", None, None), &err(KvErr::NoKey)));
    }

    #[test]
    fn get_must_match_value_and_version() {
        let create = (input(KvOp::Put, "k", Some("a"), None), ok(None, Some(1)));
        let get = |v: &str, n| (input(KvOp::Get, "k", None, None), ok(Some(v), n));
        assert!(run(&[create.clone(), get("a", Some(1))]).is_ok());
        assert!(run(&[create.clone(), get("a", None)]).is_ok());
        assert_eq!(run(&[create.clone(), get("a", Some(2))]), Err(1));
        assert_eq!(run(&[create, get("b", Some(1))]), Err(1));
    }

    #[test]
    fn partition_groups_by_key() {
        let op = |key: &str| Operation {
            client: 0,
            call: 0,
            ret: Some(1),
            input: input(KvOp::Get, key, None, None),
            output: err(KvErr::NoKey),
        };
        let ops = [op("b"), op("a"), op("b")];
        assert_eq!(KvModel.partition(&ops), vec![vec![1], vec![0, 2]]);
    }
}
