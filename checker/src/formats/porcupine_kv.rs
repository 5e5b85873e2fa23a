//! Porcupine's key/value logs (`test_data/kv/*.txt`): one EDN map a line,
//!
//! ```text
//! {:process 9, :type :invoke, :f :append, :key "0", :value "x 9 0 y"}
//! {:process 1, :type :ok, :f :get, :key "9", :value "x 5 0 y"}
//! ```
//!
//! Times are the events' order in the file (as Porcupine's `CheckEvents` does). A get's value
//! is on its `:ok` line. An invoke that never completes, or completes with `:info`, has an
//! unknown outcome; one that completes with `:fail` did not happen and is dropped.

use std::collections::HashMap;
use std::io::BufRead;

use super::edn::{parse_map, Value};
use super::{for_each_line, ReadError};
use crate::models::{PorcupineKvInput, PorcupineKvOp, PorcupineKvOutput};
use crate::Operation;

type Op = Operation<PorcupineKvInput, PorcupineKvOutput>;

/// The fields of one line.
struct Line {
    process: u64,
    kind: String,
    f: PorcupineKvOp,
    key: Option<String>,
    value: Value,
}

fn parse_line(text: &str) -> Result<Line, String> {
    let mut process = None;
    let mut kind = None;
    let mut f = None;
    let mut key = None;
    let mut value = Value::Nil;
    for (name, v) in parse_map(text)? {
        match (name.as_str(), v) {
            ("process", Value::Int(p)) if p >= 0 => process = Some(p as u64),
            ("type", Value::Keyword(t)) => kind = Some(t),
            ("f", Value::Keyword(name)) => {
                f = Some(match name.as_str() {
                    "get" => PorcupineKvOp::Get,
                    "put" => PorcupineKvOp::Put,
                    "append" => PorcupineKvOp::Append,
                    other => {
                        return Err(format!(
                            "unknown :f :{other} (expected :get, :put or :append)"
                        ))
                    }
                })
            }
            ("key", Value::Str(k)) => key = Some(k),
            ("value", v @ (Value::Str(_) | Value::Nil)) => value = v,
            ("process" | "type" | "f" | "key" | "value", v) => {
                return Err(format!(":{name} cannot be {}", v.kind()));
            }
            _ => {} // Other fields are not ours.
        }
    }
    Ok(Line {
        process: process.ok_or(":process is missing")?,
        kind: kind.ok_or(":type is missing")?,
        f: f.ok_or(":f is missing")?,
        key,
        value,
    })
}

/// Reads a Porcupine key/value log.
pub fn read_porcupine_kv(reader: impl BufRead) -> Result<Vec<Op>, ReadError> {
    let mut ops: Vec<Op> = Vec::new();
    let mut failed: Vec<bool> = Vec::new();
    let mut pending: HashMap<u64, usize> = HashMap::new();
    let mut time: u64 = 0;
    for_each_line(reader, |number, text| {
        if text.trim().is_empty() {
            return Ok(());
        }
        let line = parse_line(text).map_err(|m| ReadError::line(number, m))?;
        time += 1;
        if line.kind == "invoke" {
            let key = line
                .key
                .ok_or_else(|| ReadError::line(number, ":key is missing"))?;
            let value = match (line.f, line.value) {
                (PorcupineKvOp::Get, _) => String::new(),
                (_, Value::Str(v)) => v,
                (f, _) => {
                    return Err(ReadError::line(
                        number,
                        format!("{f:?} needs a string :value").to_lowercase(),
                    ))
                }
            };
            // A process with an invoke still pending leaves that one with an unknown outcome.
            pending.insert(line.process, ops.len());
            ops.push(Operation {
                client: line.process,
                call: time,
                ret: None,
                input: PorcupineKvInput {
                    op: line.f,
                    key,
                    value,
                },
                output: PorcupineKvOutput { value: None },
            });
            failed.push(false);
            return Ok(());
        }
        let Some(i) = pending.remove(&line.process) else {
            return Err(ReadError::line(
                number,
                format!(
                    ":{} for process {} without a pending invoke",
                    line.kind, line.process
                ),
            ));
        };
        let op = &mut ops[i];
        if op.input.op != line.f {
            return Err(ReadError::line(
                number,
                format!(
                    "process {} completes {:?} but invoked {:?}",
                    line.process, line.f, op.input.op
                )
                .to_lowercase(),
            ));
        }
        match line.kind.as_str() {
            "ok" => {
                op.ret = Some(time);
                if op.input.op == PorcupineKvOp::Get {
                    op.output.value = Some(match line.value {
                        Value::Str(v) => v,
                        _ => String::new(),
                    });
                }
            }
            "fail" => failed[i] = true,
            "info" => {}
            other => {
                return Err(ReadError::line(
                    number,
                    format!("unknown :type :{other} (expected :invoke, :ok, :fail or :info)"),
                ))
            }
        }
        Ok(())
    })?;
    Ok(ops
        .into_iter()
        .zip(failed)
        .filter(|(_, failed)| !failed)
        .map(|(op, _)| op)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_invokes_with_completions_by_process() {
        let log = r#"{:process 0, :type :invoke, :f :put, :key "k", :value "a"}
{:process 1, :type :invoke, :f :get, :key "k", :value nil}
{:process 0, :type :ok, :f :put, :key "k", :value "a"}

{:process 1, :type :ok, :f :get, :key "k", :value "a"}
{:process 2, :type :invoke, :f :append, :key "k", :value "b"}
{:process 3, :type :invoke, :f :append, :key "k", :value "c"}
{:process 3, :type :fail, :f :append, :key "k", :value "c"}
"#;
        let ops = read_porcupine_kv(log.as_bytes()).unwrap();
        assert_eq!(ops.len(), 3);
        assert_eq!((ops[0].call, ops[0].ret), (1, Some(3)));
        assert_eq!((ops[1].call, ops[1].ret), (2, Some(4)));
        assert_eq!(ops[1].output.value.as_deref(), Some("a"));
        assert_eq!((ops[2].client, ops[2].ret), (2, None));
    }

    #[test]
    fn malformed_lines_are_errors_with_their_line_number() {
        let good = "{:process 0, :type :invoke, :f :get, :key \"k\", :value nil}\n";
        let cases = [
            (
                "{:process 0, :type :ok, :f :get, :key \"k\", :value \"\"}",
                1,
            ),
            ("{:process 0, :type :invoke, :f :frob, :key \"k\"}", 2),
            (
                "{:process 0, :type :ok, :f :put, :key \"k\", :value \"x\"}",
                2,
            ),
            (
                "{:process 0, :type :invoke, :f :put, :key \"k\", :value nil}",
                2,
            ),
            ("{:process -1, :type :invoke, :f :get, :key \"k\"}", 2),
            ("{:process 0, :type :ok, :f :get, :key \"k\"", 2),
            ("{:type :ok, :f :get}", 2),
            ("not edn", 2),
        ];
        for (i, (bad, line)) in cases.into_iter().enumerate() {
            let text = if i == 0 {
                format!("{bad}\n")
            } else {
                format!("{good}{bad}\n")
            };
            match read_porcupine_kv(text.as_bytes()) {
                Err(ReadError::Line { line: l, .. }) => assert_eq!(l, line, "{bad}"),
                other => panic!("expected a line error for {bad:?}, got {other:?}"),
            }
        }
        let not_utf8: &[u8] = b"{:process 0, :type :invoke, :f :get, :key \"\xff\"}\n";
        assert!(matches!(
            read_porcupine_kv(not_utf8),
            Err(ReadError::Line { line: 1, .. })
        ));
    }
}
