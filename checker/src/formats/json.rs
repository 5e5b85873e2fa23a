//! Our JSON history (the format raftkv records and `raftkv check` reads):
//!
//! ```json
//! {"model": "kv",
//!  "ops": [{"client": 0, "call": 1200, "return": 5300,
//!           "input":  {"op": "put", "key": "k", "value": "v", "version": null},
//!           "output": {"value": null, "version": 1, "err": null}}]}
//! ```
//!
//! `return` is `null` (or absent) when no response came; `output` may then be `null` or absent.
//! Fields this reader does not know are ignored, so that writers may add some.

use std::io::{self, BufRead, Write};

use serde::{Deserialize, Serialize};

use super::ReadError;
use crate::models::{KvInput, KvOp, KvOutput};
use crate::Operation;

#[derive(Deserialize)]
struct HistoryIn {
    #[allow(dead_code)] // Read only to reject other models.
    model: ModelName,
    ops: Vec<OpIn>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum ModelName {
    Kv,
}

/// One operation, validated while it is deserialized so that errors carry its position.
#[derive(Deserialize)]
#[serde(try_from = "RawOp")]
struct OpIn(Operation<KvInput, KvOutput>);

#[derive(Deserialize)]
struct RawOp {
    client: u64,
    call: u64,
    #[serde(rename = "return", default)]
    ret: Option<u64>,
    input: KvInput,
    #[serde(default)]
    output: Option<KvOutput>,
}

impl TryFrom<RawOp> for OpIn {
    type Error = String;

    fn try_from(raw: RawOp) -> Result<Self, String> {
        if let Some(ret) = raw.ret {
            if ret < raw.call {
                return Err(format!("return {ret} is before call {}", raw.call));
            }
        }
        let input = &raw.input;
        match input.op {
            KvOp::Put | KvOp::Append if input.value.is_none() => {
                return Err(format!("{:?} needs a value", input.op).to_lowercase())
            }
            KvOp::Get | KvOp::Delete if input.value.is_some() => {
                return Err(format!("{:?} takes no value", input.op).to_lowercase())
            }
            KvOp::Get | KvOp::Append | KvOp::Delete if input.version.is_some() => {
                return Err(
                    format!("{:?} takes no version (only put does)", input.op).to_lowercase()
                )
            }
            _ => {}
        }
        Ok(OpIn(Operation {
            client: raw.client,
            call: raw.call,
            ret: raw.ret,
            input: raw.input,
            output: raw.output.unwrap_or_default(),
        }))
    }
}

#[derive(Serialize)]
struct OpOut<'a> {
    client: u64,
    call: u64,
    #[serde(rename = "return")]
    ret: Option<u64>,
    input: &'a KvInput,
    output: &'a KvOutput,
}

/// Reads a JSON history of model `kv`.
pub fn read_json(mut reader: impl BufRead) -> Result<Vec<Operation<KvInput, KvOutput>>, ReadError> {
    let mut bytes = Vec::new();
    reader.read_to_end(&mut bytes)?;
    let history: HistoryIn = serde_json::from_slice(&bytes).map_err(|e| {
        let position = format!(" at line {} column {}", e.line(), e.column());
        let message = e.to_string();
        let message = message
            .strip_suffix(&position)
            .unwrap_or(&message)
            .to_string();
        ReadError::Json {
            line: e.line(),
            column: e.column(),
            message,
        }
    })?;
    Ok(history.ops.into_iter().map(|op| op.0).collect())
}

/// Writes a JSON history of model `kv`, one operation a line.
pub fn write_json(ops: &[Operation<KvInput, KvOutput>], mut out: impl Write) -> io::Result<()> {
    out.write_all(b"{\"model\": \"kv\", \"ops\": [")?;
    for (i, op) in ops.iter().enumerate() {
        out.write_all(if i == 0 { b"\n" } else { b",\n" })?;
        let op = OpOut {
            client: op.client,
            call: op.call,
            ret: op.ret,
            input: &op.input,
            output: &op.output,
        };
        serde_json::to_writer(&mut out, &op)?;
    }
    out.write_all(b"\n]}\n")
}

/// The JSON history of `ops` as a string.
pub fn to_json(ops: &[Operation<KvInput, KvOutput>]) -> String {
    let mut out = Vec::new();
    // Writing to a Vec cannot fail, and serde_json writes UTF-8.
    let _ = write_json(ops, &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::KvErr;

    fn read(s: &str) -> Result<Vec<Operation<KvInput, KvOutput>>, ReadError> {
        read_json(s.as_bytes())
    }

    #[test]
    fn round_trips_the_api_example() {
        let text = r#"{"model": "kv",
 "ops": [{"client": 0, "call": 1200, "return": 5300,
          "input":  {"op": "put", "key": "k", "value": "v", "version": null},
          "output": {"value": null, "version": 1, "err": null}},
         {"client": 1, "call": 1300, "return": null,
          "input":  {"op": "put", "key": "k", "value": "w", "version": 1},
          "output": {"value": null, "version": null, "err": "maybe"}},
         {"client": 2, "call": 1400, "input": {"op": "get", "key": "k"}}]}"#;
        let ops = read(text).unwrap();
        assert_eq!(ops.len(), 3);
        assert_eq!(ops[0].ret, Some(5300));
        assert_eq!(ops[0].output.version, Some(1));
        assert_eq!(ops[1].input.version, Some(1));
        assert_eq!(ops[1].output.err, Some(KvErr::Maybe));
        assert_eq!(ops[2].ret, None);
        assert_eq!(ops[2].output, KvOutput::default());
        let again = read(&to_json(&ops)).unwrap();
        assert_eq!(again, ops);
    }

    #[test]
    fn malformed_input_is_an_error_with_its_line() {
        let cases = [
            ("{\"model\": \"kv\", \"ops\": [\n{\"client\": 0, \"call\": 5, \"return\": 4,\n \"input\": {\"op\": \"get\", \"key\": \"k\"}}]}", 3, "before call"),
            ("{\"model\": \"kv\", \"ops\": [\n{\"client\": 0, \"call\": 5, \"return\": 6,\n \"input\": {\"op\": \"put\", \"key\": \"k\"}}]}", 3, "needs a value"),
            ("{\"model\": \"kv\", \"ops\": [\n{\"client\": 0, \"call\": 5,\n \"input\": {\"op\": \"frob\", \"key\": \"k\"}}]}", 3, "unknown variant"),
            ("{\"model\": \"kv\", \"ops\": [\n{\"client\": 0, \"call\": 5,\n \"input\": {\"op\": \"get\", \"key\": \"k\"},\n \"output\": {\"err\": \"oops\"}}]}", 4, "unknown variant"),
            ("{\"model\": \"register\", \"ops\": []}", 1, "unknown variant"),
            ("{\"model\": \"kv\", \"ops\": [\n{\"client\": -1, \"call\": 5}]}", 2, "invalid value"),
            ("{\"model\": \"kv\", \"ops\": [\n", 2, "EOF"),
            ("{\"model\": \"kv\", \"ops\": [\n{\"client\": 0, \"call\": 5,\n \"input\": {\"op\": \"get\", \"key\": \"k\", \"version\": 2}}]}", 3, "no version"),
        ];
        for (text, line, needle) in cases {
            match read(text) {
                Err(ReadError::Json {
                    line: l, message, ..
                }) => {
                    assert_eq!(l, line, "{message}");
                    assert!(
                        message.contains(needle),
                        "{message:?} should mention {needle:?}"
                    );
                }
                other => panic!("expected a JSON error for {text:?}, got {other:?}"),
            }
        }
    }
}
