//! One register with read, write and compare-and-set: the model of Jepsen's etcd test, as
//! Porcupine checks it.
//!
//! The register starts empty (`nil`). A completed cas that matched wrote its new value
//! (`:ok :cas`); one that did not match changed nothing, and the register then held something
//! other than the expected old value (`:fail :cas`). An operation whose outcome is unknown (no
//! completion, or a read that timed out) accepts any output.

use crate::Model;

/// The input of a register operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RegisterInput {
    /// Read the value.
    Read,
    /// Write a value.
    Write(i64),
    /// If the value is `from`, write `to`.
    Cas {
        /// The expected old value.
        from: i64,
        /// The new value.
        to: i64,
    },
}

/// The output of a register operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RegisterOutput {
    /// A completed read: the value, `None` for the empty register.
    Read(Option<i64>),
    /// A completed write.
    Write,
    /// A completed cas: `true` if it matched and wrote.
    Cas(bool),
    /// No (usable) answer: the outcome is unknown.
    Unknown,
}

/// The register model (one object: no partitions).
#[derive(Clone, Copy, Debug, Default)]
pub struct RegisterModel;

impl Model for RegisterModel {
    type State = Option<i64>;
    type Input = RegisterInput;
    type Output = RegisterOutput;

    fn init(&self) -> Option<i64> {
        None
    }

    fn step(
        &self,
        state: &Option<i64>,
        input: &RegisterInput,
        output: &RegisterOutput,
    ) -> Option<Option<i64>> {
        use RegisterOutput as Out;
        match (*input, *output) {
            (RegisterInput::Read, Out::Read(value)) => (value == *state).then_some(*state),
            (RegisterInput::Read, Out::Unknown) => Some(*state),
            (RegisterInput::Write(value), Out::Write | Out::Unknown) => Some(Some(value)),
            (RegisterInput::Cas { from, to }, out @ (Out::Cas(_) | Out::Unknown)) => {
                let matched = *state == Some(from);
                let next = if matched { Some(to) } else { *state };
                match out {
                    Out::Cas(ok) => (ok == matched).then_some(next),
                    _ => Some(next),
                }
            }
            // An output of another kind of operation.
            _ => None,
        }
    }

    fn step_unknown(
        &self,
        state: &Option<i64>,
        input: &RegisterInput,
        _output: &RegisterOutput,
    ) -> Option<i64> {
        self.step(state, input, &RegisterOutput::Unknown)
            .unwrap_or(*state)
    }

    fn outcome_unknown(&self, _input: &RegisterInput, output: &RegisterOutput) -> bool {
        *output == RegisterOutput::Unknown
    }

    fn describe_operation(&self, input: &RegisterInput, output: &RegisterOutput) -> String {
        let answer = match output {
            RegisterOutput::Read(Some(v)) => format!(" → {v}"),
            RegisterOutput::Read(None) => " → nil".to_string(),
            RegisterOutput::Write => String::new(),
            RegisterOutput::Cas(true) => " → ok".to_string(),
            RegisterOutput::Cas(false) => " → fail".to_string(),
            RegisterOutput::Unknown => " → ?".to_string(),
        };
        match input {
            RegisterInput::Read => format!("read(){answer}"),
            RegisterInput::Write(v) => format!("write({v}){answer}"),
            RegisterInput::Cas { from, to } => format!("cas({from}, {to}){answer}"),
        }
    }

    fn describe_state(&self, state: &Option<i64>) -> String {
        state.map_or("nil".to_string(), |v| v.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RegisterInput as In;
    use RegisterOutput as Out;

    #[test]
    fn read_must_see_the_value_and_nil_is_the_empty_register() {
        let m = RegisterModel;
        assert_eq!(m.step(&None, &In::Read, &Out::Read(None)), Some(None));
        assert_eq!(m.step(&None, &In::Read, &Out::Read(Some(0))), None);
        assert_eq!(
            m.step(&Some(3), &In::Read, &Out::Read(Some(3))),
            Some(Some(3))
        );
        assert_eq!(m.step(&Some(3), &In::Read, &Out::Unknown), Some(Some(3)));
    }

    #[test]
    fn cas_ok_means_matched_and_written_fail_means_not_matched() {
        let m = RegisterModel;
        let cas = In::Cas { from: 3, to: 0 };
        assert_eq!(m.step(&Some(3), &cas, &Out::Cas(true)), Some(Some(0)));
        assert_eq!(m.step(&Some(3), &cas, &Out::Cas(false)), None);
        assert_eq!(m.step(&Some(4), &cas, &Out::Cas(false)), Some(Some(4)));
        assert_eq!(m.step(&None, &cas, &Out::Cas(false)), Some(None));
        assert_eq!(m.step(&Some(4), &cas, &Out::Cas(true)), None);
        // Unknown: applied if it matched, else nothing.
        assert_eq!(m.step(&Some(3), &cas, &Out::Unknown), Some(Some(0)));
        assert_eq!(m.step(&Some(4), &cas, &Out::Unknown), Some(Some(4)));
    }

    #[test]
    fn write_always_applies_and_mismatched_outputs_are_refused() {
        let m = RegisterModel;
        assert_eq!(m.step(&None, &In::Write(7), &Out::Write), Some(Some(7)));
        assert_eq!(m.step(&None, &In::Write(7), &Out::Unknown), Some(Some(7)));
        assert_eq!(m.step(&None, &In::Write(7), &Out::Read(None)), None);
        assert_eq!(m.step(&None, &In::Read, &Out::Write), None);
    }
}
