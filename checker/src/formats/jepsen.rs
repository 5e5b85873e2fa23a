//! Jepsen's etcd logs (Porcupine's `test_data/jepsen/*.log`): a log4j line per event, its
//! fields separated by tabs (any whitespace is accepted),
//!
//! ```text
//! INFO  jepsen.util - 2   :invoke :cas    [3 0]
//! INFO  jepsen.util - 2   :ok     :cas    [3 0]
//! ```
//!
//! read as Porcupine's `parseJepsenLog` does: times are the events' order; `:ok` completes a
//! read (its value is on this line), write or cas; `:fail :cas` is a cas that did not match;
//! `:fail :read :timed-out` is a read with an unknown result. Every other `:fail` and every
//! `:info` line is skipped, so its operation never completes and its outcome is unknown (it may
//! have taken effect at any time after its invoke, or never). Lines without `jepsen.util - `,
//! and events of non-numeric processes (`:nemesis`), are ignored.

use std::collections::HashMap;
use std::io::BufRead;

use super::edn::{parse_value, Value};
use super::{for_each_line, ReadError};
use crate::models::{RegisterInput, RegisterOutput};
use crate::Operation;

type Op = Operation<RegisterInput, RegisterOutput>;

/// Splits off the first `n` whitespace-separated fields; the rest (trimmed) is the last item.
fn fields(s: &str, n: usize) -> (Vec<&str>, &str) {
    let mut out = Vec::with_capacity(n);
    let mut rest = s.trim_start();
    while out.len() < n && !rest.is_empty() {
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        out.push(&rest[..end]);
        rest = rest[end..].trim_start();
    }
    (out, rest.trim_end())
}

/// Reads a Jepsen etcd log.
pub fn read_jepsen_etcd(reader: impl BufRead) -> Result<Vec<Op>, ReadError> {
    const MARK: &str = "jepsen.util - ";
    let mut ops: Vec<Op> = Vec::new();
    let mut pending: HashMap<u64, usize> = HashMap::new();
    let mut time: u64 = 0;
    for_each_line(reader, |number, text| {
        let Some(at) = text.find(MARK) else {
            return Ok(());
        };
        let err = |m: String| ReadError::line(number, m);
        let (head, value) = fields(&text[at + MARK.len()..], 3);
        let [process, kind, f] = head[..] else {
            return Err(err(
                "expected a process, a type, a function and a value".into()
            ));
        };
        if process.starts_with(':') {
            return Ok(()); // The nemesis, not a client.
        }
        let process: u64 = process
            .parse()
            .map_err(|_| err(format!("bad process {process:?}")))?;
        if !matches!(f, ":read" | ":write" | ":cas") {
            return Err(err(format!(
                "unknown function {f} (expected :read, :write or :cas)"
            )));
        }
        let value = parse_value(value).map_err(|m| err(format!("bad value: {m}")))?;
        time += 1;
        if kind == ":invoke" {
            let input = match (f, &value) {
                (":read", _) => RegisterInput::Read,
                (":write", Value::Int(v)) => RegisterInput::Write(*v),
                (":cas", Value::Vector(v)) => match v[..] {
                    [Value::Int(from), Value::Int(to)] => RegisterInput::Cas { from, to },
                    _ => return Err(err("a cas takes [old new]".into())),
                },
                _ => return Err(err(format!("{f} cannot take {}", value.kind()))),
            };
            // A process with an invoke still pending leaves that one with an unknown outcome.
            pending.insert(process, ops.len());
            ops.push(Operation {
                client: process,
                call: time,
                ret: None,
                input,
                output: RegisterOutput::Unknown,
            });
            return Ok(());
        }
        let output = match (kind, f, &value) {
            (":ok", ":read", Value::Int(v)) => RegisterOutput::Read(Some(*v)),
            (":ok", ":read", Value::Nil) => RegisterOutput::Read(None),
            (":ok", ":write", _) => RegisterOutput::Write,
            (":ok" | ":fail", ":cas", _) => RegisterOutput::Cas(kind == ":ok"),
            (":fail", ":read", Value::Keyword(k)) if k == "timed-out" => RegisterOutput::Unknown,
            (":ok", ":read", _) => {
                return Err(err(format!("a read cannot return {}", value.kind())))
            }
            (":fail" | ":info", _, _) => return Ok(()), // Left pending: unknown outcome.
            _ => {
                return Err(err(format!(
                    "unknown type {kind} (expected :invoke, :ok, :fail or :info)"
                )))
            }
        };
        let Some(i) = pending.remove(&process) else {
            return Err(err(format!(
                "{kind} {f} for process {process} without a pending invoke"
            )));
        };
        let op = &mut ops[i];
        let invoked = match op.input {
            RegisterInput::Read => ":read",
            RegisterInput::Write(_) => ":write",
            RegisterInput::Cas { .. } => ":cas",
        };
        if invoked != f {
            return Err(err(format!(
                "process {process} completes {f} but invoked {invoked}"
            )));
        }
        op.ret = Some(time);
        op.output = output;
        Ok(())
    })?;
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_events_like_porcupine() {
        let log = "INFO  jepsen.util - 0\t:invoke\t:read\tnil
INFO  jepsen.util - 1\t:invoke\t:cas\t[3 0]
INFO  jepsen.util - 0\t:ok\t:read\tnil
some other log line
INFO  jepsen.util - 1\t:fail\t:cas\t[3 0]
INFO  jepsen.util - 2\t:invoke\t:write\t4
INFO  jepsen.util - 2\t:info\t:write\t:timed-out
INFO  jepsen.util - 3\t:invoke\t:read\tnil
INFO  jepsen.util - 3\t:fail\t:read\t:timed-out
INFO  jepsen.util - :nemesis\t:info\t:start\tnil
";
        let ops = read_jepsen_etcd(log.as_bytes()).unwrap();
        assert_eq!(ops.len(), 4);
        assert_eq!(
            (ops[0].call, ops[0].ret, ops[0].output),
            (1, Some(3), RegisterOutput::Read(None))
        );
        assert_eq!(ops[1].input, RegisterInput::Cas { from: 3, to: 0 });
        assert_eq!(ops[1].output, RegisterOutput::Cas(false));
        assert_eq!((ops[2].ret, ops[2].output), (None, RegisterOutput::Unknown));
        assert_eq!(
            (ops[3].ret, ops[3].output),
            (Some(8), RegisterOutput::Unknown)
        );
    }

    #[test]
    fn malformed_lines_are_errors_with_their_line_number() {
        let good = "INFO  jepsen.util - 0\t:invoke\t:read\tnil\n";
        for bad in [
            "INFO  jepsen.util - x\t:invoke\t:read\tnil",
            "INFO  jepsen.util - 0\t:invoke\t:frob\tnil",
            "INFO  jepsen.util - 0\t:ok\t:write\t3",
            "INFO  jepsen.util - 5\t:ok\t:read\t3",
            "INFO  jepsen.util - 0\t:ok\t:read\t[1",
            "INFO  jepsen.util - 0\t:ok\t:read\t\"s\"",
            "INFO  jepsen.util - 1\t:invoke\t:cas\t[1]",
            "INFO  jepsen.util - 1\t:invoke\t:write\tnil",
            "INFO  jepsen.util - 0\t:done\t:read\t1",
            "INFO  jepsen.util - 0",
        ] {
            match read_jepsen_etcd(format!("{good}{bad}\n").as_bytes()) {
                Err(ReadError::Line { line: 2, .. }) => {}
                other => panic!("expected an error on line 2 for {bad:?}, got {other:?}"),
            }
        }
    }
}
