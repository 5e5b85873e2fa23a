//! The unversioned key/value store of Porcupine's tests (6.5840 style): get, put and append on
//! string values, where a missing key reads as `""`. Partitioned by key.

use std::collections::BTreeMap;

use super::{quote, KeyMap, SharedStr};
use crate::{Model, Operation};

/// The kind of an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PorcupineKvOp {
    /// Read a key.
    Get,
    /// Replace a key's value.
    Put,
    /// Append to a key's value.
    Append,
}

/// The input of an operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PorcupineKvInput {
    /// What to do.
    pub op: PorcupineKvOp,
    /// The key.
    pub key: String,
    /// The value to put or append (empty for a get).
    pub value: String,
}

/// The output of an operation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PorcupineKvOutput {
    /// The value a get read; `None` when it never answered (then anything is accepted).
    /// Unused for put and append.
    pub value: Option<String>,
}

/// The unversioned key/value model. Its state never holds `""` values (a key holding `""`
/// and a missing key read alike, so they are one state).
#[derive(Clone, Copy, Debug, Default)]
pub struct PorcupineKvModel;

impl Model for PorcupineKvModel {
    type State = KeyMap<SharedStr>;
    type Input = PorcupineKvInput;
    type Output = PorcupineKvOutput;

    fn init(&self) -> Self::State {
        KeyMap::new()
    }

    fn step(
        &self,
        state: &Self::State,
        input: &PorcupineKvInput,
        output: &PorcupineKvOutput,
    ) -> Option<Self::State> {
        match input.op {
            PorcupineKvOp::Get => {
                let current = state.get(&input.key).map_or("", SharedStr::as_str);
                output
                    .value
                    .as_deref()
                    .is_none_or(|v| v == current)
                    .then(|| state.clone())
            }
            PorcupineKvOp::Put => Some(state.with(
                &input.key,
                (!input.value.is_empty()).then(|| SharedStr::from(input.value.as_str())),
            )),
            PorcupineKvOp::Append if input.value.is_empty() => Some(state.clone()),
            PorcupineKvOp::Append => {
                let value = match state.get(&input.key) {
                    Some(old) => old.concat(&input.value),
                    None => SharedStr::from(input.value.as_str()),
                };
                Some(state.with(&input.key, Some(value)))
            }
        }
    }

    fn step_unknown(
        &self,
        state: &Self::State,
        input: &PorcupineKvInput,
        _output: &PorcupineKvOutput,
    ) -> Self::State {
        let no_answer = PorcupineKvOutput { value: None };
        self.step(state, input, &no_answer)
            .unwrap_or_else(|| state.clone())
    }

    fn partition(&self, ops: &[Operation<PorcupineKvInput, PorcupineKvOutput>]) -> Vec<Vec<usize>> {
        let mut by_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, op) in ops.iter().enumerate() {
            by_key.entry(op.input.key.as_str()).or_default().push(i);
        }
        by_key.into_values().collect()
    }

    fn describe_operation(&self, input: &PorcupineKvInput, output: &PorcupineKvOutput) -> String {
        let key = quote(&input.key);
        match input.op {
            PorcupineKvOp::Get => {
                format!(
                    "get({key}) → {}",
                    output.value.as_deref().map_or("?".to_string(), quote)
                )
            }
            PorcupineKvOp::Put => format!("put({key}, {})", quote(&input.value)),
            PorcupineKvOp::Append => format!("append({key}, {})", quote(&input.value)),
        }
    }

    fn describe_state(&self, state: &Self::State) -> String {
        let entries: Vec<String> = state
            .iter()
            .map(|(k, v)| format!("{}: {}", quote(k), quote(v.as_str())))
            .collect();
        format!("{{{}}}", entries.join(", "))
    }

    fn describe_partition(&self, input: &PorcupineKvInput) -> Option<String> {
        Some(format!("key {}", quote(&input.key)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inp(op: PorcupineKvOp, key: &str, value: &str) -> PorcupineKvInput {
        PorcupineKvInput {
            op,
            key: key.into(),
            value: value.into(),
        }
    }

    fn read(v: Option<&str>) -> PorcupineKvOutput {
        PorcupineKvOutput {
            value: v.map(Into::into),
        }
    }

    #[test]
    fn missing_key_reads_empty_and_append_concatenates() {
        let m = PorcupineKvModel;
        let s0 = m.init();
        assert!(m
            .step(&s0, &inp(PorcupineKvOp::Get, "k", ""), &read(Some("")))
            .is_some());
        assert!(m
            .step(&s0, &inp(PorcupineKvOp::Get, "k", ""), &read(Some("x")))
            .is_none());
        let s1 = m
            .step(&s0, &inp(PorcupineKvOp::Append, "k", "x"), &read(None))
            .unwrap();
        let s2 = m
            .step(&s1, &inp(PorcupineKvOp::Append, "k", "y"), &read(None))
            .unwrap();
        assert!(m
            .step(&s2, &inp(PorcupineKvOp::Get, "k", ""), &read(Some("xy")))
            .is_some());
        let s3 = m
            .step(&s2, &inp(PorcupineKvOp::Put, "k", "z"), &read(None))
            .unwrap();
        assert!(m
            .step(&s3, &inp(PorcupineKvOp::Get, "k", ""), &read(Some("z")))
            .is_some());
        // A get that never answered accepts anything.
        assert!(m
            .step(&s3, &inp(PorcupineKvOp::Get, "k", ""), &read(None))
            .is_some());
    }

    #[test]
    fn putting_empty_is_the_same_state_as_missing() {
        let m = PorcupineKvModel;
        let s1 = m
            .step(&m.init(), &inp(PorcupineKvOp::Put, "k", "x"), &read(None))
            .unwrap();
        let s2 = m
            .step(&s1, &inp(PorcupineKvOp::Put, "k", ""), &read(None))
            .unwrap();
        assert_eq!(s2, m.init());
    }
}
