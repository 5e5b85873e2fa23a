//! Reading histories: our JSON ([`json`]), Porcupine's key/value logs ([`porcupine_kv`]) and
//! Jepsen's etcd logs ([`jepsen`]); writing our JSON.
//!
//! Every reader returns a [`ReadError`] naming the line of a malformed input; none panics.

mod edn;
pub mod jepsen;
pub mod json;
pub mod porcupine_kv;

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::path::Path;
use std::str::FromStr;

use super::models::{
    KvInput, KvModel, KvOutput, PorcupineKvInput, PorcupineKvModel, PorcupineKvOutput,
    RegisterInput, RegisterModel, RegisterOutput,
};
use super::{check, visualize, CheckOptions, CheckResult, Operation};

/// Why a history could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The input could not be read.
    #[error("cannot read the history: {0}")]
    Io(#[from] io::Error),
    /// Malformed JSON, or JSON that does not follow the history schema.
    #[error("line {line}, column {column}: {message}")]
    Json {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// A malformed line of a line-based format.
    #[error("line {line}: {message}")]
    Line {
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

impl ReadError {
    pub(crate) fn line(line: usize, message: impl Into<String>) -> Self {
        ReadError::Line {
            line,
            message: message.into(),
        }
    }
}

/// Reads `reader` line by line: `f(line number, line)` for each line (1-based, without the
/// line ending). Bytes that are not UTF-8 are an error naming the line.
pub(crate) fn for_each_line(
    mut reader: impl BufRead,
    mut f: impl FnMut(usize, &str) -> Result<(), ReadError>,
) -> Result<(), ReadError> {
    let mut buf = Vec::new();
    let mut number = 0;
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf)? == 0 {
            return Ok(());
        }
        number += 1;
        let line = std::str::from_utf8(&buf)
            .map_err(|e| ReadError::line(number, format!("not UTF-8: {e}")))?;
        f(number, line.trim_end_matches(['\n', '\r']))?;
    }
}

/// A history file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Our JSON history ([`json`]), model `kv`.
    Json,
    /// Porcupine's key/value logs (`{:process 0, :type :invoke, ...}` a line), unversioned kv.
    PorcupineKv,
    /// Jepsen's etcd logs (`INFO  jepsen.util - 0 :invoke :read nil`), register model.
    JepsenEtcd,
}

impl Format {
    /// The format's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::PorcupineKv => "porcupine-kv",
            Format::JepsenEtcd => "jepsen-etcd",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A format name that is not one of `json`, `porcupine-kv`, `jepsen-etcd`.
#[derive(Debug, thiserror::Error)]
#[error("unknown history format {name:?} (expected json, porcupine-kv or jepsen-etcd)")]
pub struct UnknownFormat {
    /// The name given.
    pub name: String,
}

impl FromStr for Format {
    type Err = UnknownFormat;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "json" => Ok(Format::Json),
            "porcupine-kv" => Ok(Format::PorcupineKv),
            "jepsen-etcd" => Ok(Format::JepsenEtcd),
            _ => Err(UnknownFormat {
                name: s.to_string(),
            }),
        }
    }
}

/// A history of any supported model, as read from a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AnyHistory {
    /// Our versioned key/value service ([`KvModel`]).
    Kv(Vec<Operation<KvInput, KvOutput>>),
    /// Porcupine's unversioned key/value store ([`PorcupineKvModel`]).
    PorcupineKv(Vec<Operation<PorcupineKvInput, PorcupineKvOutput>>),
    /// A read/write/cas register ([`RegisterModel`]).
    Register(Vec<Operation<RegisterInput, RegisterOutput>>),
}

impl AnyHistory {
    /// Reads a history in `format`.
    pub fn read(format: Format, reader: impl BufRead) -> Result<Self, ReadError> {
        Ok(match format {
            Format::Json => AnyHistory::Kv(json::read_json(reader)?),
            Format::PorcupineKv => {
                AnyHistory::PorcupineKv(porcupine_kv::read_porcupine_kv(reader)?)
            }
            Format::JepsenEtcd => AnyHistory::Register(jepsen::read_jepsen_etcd(reader)?),
        })
    }

    /// Reads a history file in `format`.
    pub fn read_file(format: Format, path: impl AsRef<Path>) -> Result<Self, ReadError> {
        Self::read(format, BufReader::new(File::open(path)?))
    }

    /// The model's name: `kv`, `porcupine-kv` or `register`.
    pub fn model_name(&self) -> &'static str {
        match self {
            AnyHistory::Kv(_) => "kv",
            AnyHistory::PorcupineKv(_) => "porcupine-kv",
            AnyHistory::Register(_) => "register",
        }
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        match self {
            AnyHistory::Kv(ops) => ops.len(),
            AnyHistory::PorcupineKv(ops) => ops.len(),
            AnyHistory::Register(ops) => ops.len(),
        }
    }

    /// True when there are no operations.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks the history under its model.
    pub fn check(&self, options: &CheckOptions) -> CheckResult {
        match self {
            AnyHistory::Kv(ops) => check(&KvModel, ops, options),
            AnyHistory::PorcupineKv(ops) => check(&PorcupineKvModel, ops, options),
            AnyHistory::Register(ops) => check(&RegisterModel, ops, options),
        }
    }

    /// Writes the HTML visualization of the history and `result` (a result of
    /// [`AnyHistory::check`] on this history).
    pub fn visualize(&self, result: &CheckResult, out: &mut impl Write) -> io::Result<()> {
        match self {
            AnyHistory::Kv(ops) => visualize(&KvModel, ops, result, out),
            AnyHistory::PorcupineKv(ops) => visualize(&PorcupineKvModel, ops, result, out),
            AnyHistory::Register(ops) => visualize(&RegisterModel, ops, result, out),
        }
    }
}
