//! Recovery: reading every segment back after a crash, and what may end one.

use super::fs::WalFs;
use super::record::{any_record_from, read_slot, RecordOp, Slot};
use super::segment::{segment_name, segments};
use super::{corrupt, io_error, missing};
use crate::codec::WalHead;
use raftkv_raft::{StorageError, WriteOp};
use std::path::{Path, PathBuf};

/// What a WAL holds beyond LMDB.
#[derive(Debug, Default)]
pub(crate) struct Recovered {
    /// Ops of the records after LMDB's sequence number, in order.
    pub ops: Vec<WriteOp>,
    /// The last sequence number in the WAL or in LMDB: the next record is this plus one.
    pub last_seq: u64,
    /// Every segment file found; all of them can go once `ops` is in LMDB.
    pub segments: Vec<PathBuf>,
    /// The first sequence number of each segment found, in the same order.
    pub firsts: Vec<u64>,
    /// The newest segment found, if it is not sealed: where a seal would go.
    pub tail: Option<Tail>,
}

/// The end of the newest segment: where its records end and the sequence number after them.
#[derive(Debug)]
pub(crate) struct Tail {
    pub path: PathBuf,
    pub end: u64,
    pub next_seq: u64,
    pub len: u64,
}

/// Reads the WAL in `dir` back after LMDB's last record, `applied_seq` ([`recover`]), and
/// checks it against what LMDB's last checkpoint saw of it, `head` ([`check_head`]).
pub(crate) fn recover_checked<F: WalFs>(
    fs: &F,
    dir: &Path,
    applied_seq: u64,
    head: Option<WalHead>,
) -> Result<Recovered, StorageError> {
    let recovered = recover(fs, dir, applied_seq)?;
    if let Some(head) = head {
        check_head(dir, &recovered, head)?;
    }
    Ok(recovered)
}

/// Reads every segment in `dir`, keeping the records after `applied_seq` (LMDB's).
pub(crate) fn recover<F: WalFs>(
    fs: &F,
    dir: &Path,
    applied_seq: u64,
) -> Result<Recovered, StorageError> {
    let found = segments(fs, dir)?;
    let mut recovered = Recovered {
        last_seq: applied_seq,
        ..Recovered::default()
    };
    let next_firsts: Vec<Option<u64>> = found
        .iter()
        .skip(1)
        .map(|(seq, _)| Some(*seq))
        .chain([None])
        .collect();
    for ((first_seq, path), next_first) in found.into_iter().zip(next_firsts) {
        let bytes = fs.read(&path).map_err(|e| io_error("read", &path, e))?;
        let mut offset = 0;
        // The sequence number the next record of this segment must have.
        let mut expected = first_seq;
        // An unfinished write may end this segment: it is the last one, or the next one starts
        // with the record the unfinished write would have been (an open after the crash
        // started it there), so nothing acknowledged is missing.
        let may_end_unfinished = |expected: u64| next_first.is_none_or(|next| next == expected);
        let mut sealed = false;
        loop {
            match read_slot(&bytes, offset) {
                Slot::Record { seq, ops, .. } if matches!(ops.as_slice(), [RecordOp::Seal]) => {
                    // The WAL moved on from this segment to the one starting at `seq`.
                    if seq != expected {
                        return Err(corrupt(
                            &path,
                            format!(
                                "the seal at offset {offset} names sequence {seq}, expected \
                                 {expected}"
                            ),
                        ));
                    }
                    if next_first != Some(seq) {
                        return Err(missing(
                            dir,
                            format!(
                                "{} ends with a seal saying the WAL continues in {}, but that \
                                 segment is gone",
                                path.display(),
                                segment_name(seq)
                            ),
                        ));
                    }
                    sealed = true;
                    break;
                }
                Slot::Record { seq, ops, end } => {
                    let want = expected;
                    if seq != want {
                        return Err(corrupt(
                            &path,
                            format!(
                                "record at offset {offset} has sequence {seq}, expected {want}"
                            ),
                        ));
                    }
                    if seq > applied_seq {
                        if seq != recovered.last_seq + 1 {
                            return Err(corrupt(
                                &path,
                                format!(
                                    "record {seq} follows {} (LMDB holds up to {applied_seq}): \
                                     records are missing",
                                    recovered.last_seq
                                ),
                            ));
                        }
                        for op in ops {
                            let Some(op) = op.into_write_op() else {
                                return Err(corrupt(
                                    &path,
                                    format!("record {seq} holds a seal among its ops"),
                                ));
                            };
                            recovered.ops.push(op);
                        }
                        recovered.last_seq = seq;
                    }
                    expected = seq + 1;
                    offset = end;
                }
                Slot::Empty => {
                    if let Some(at) = bytes[offset..].iter().position(|&b| b != 0) {
                        let at = offset + at;
                        if !may_end_unfinished(expected) || any_record_from(&bytes[at..], expected)
                        {
                            return Err(corrupt(
                                &path,
                                format!("non-zero bytes at offset {at} after the last record"),
                            ));
                        }
                        tracing::warn!(wal = %path.display(), offset = at, "ignoring the remains of an unfinished write at the end of the WAL");
                    }
                    break;
                }
                Slot::Invalid(why) => {
                    let later = any_record_from(&bytes[offset + 1..], expected);
                    if !may_end_unfinished(expected) || later {
                        return Err(corrupt(&path, format!("offset {offset}: {why}")));
                    }
                    tracing::warn!(wal = %path.display(), offset, "ignoring an unfinished write at the end of the WAL: {why}");
                    break;
                }
            }
        }
        recovered.tail = (!sealed).then(|| Tail {
            path: path.clone(),
            end: offset as u64,
            next_seq: expected,
            len: bytes.len() as u64,
        });
        recovered.firsts.push(first_seq);
        recovered.segments.push(path);
    }
    Ok(recovered)
}

/// Checks what recovery found against what LMDB's last checkpoint saw of the WAL (`head`):
/// every record written by then is still there, and so is the segment that was being written
/// (or a later one). A torn tail passes: the one unfinished write was never counted.
pub(crate) fn check_head(
    dir: &Path,
    recovered: &Recovered,
    head: WalHead,
) -> Result<(), StorageError> {
    if recovered.last_seq < head.durable_seq {
        return Err(missing(
            dir,
            format!(
                "the WAL held records up to {} at the last checkpoint, it now ends at {}",
                head.durable_seq, recovered.last_seq
            ),
        ));
    }
    if !recovered
        .firsts
        .iter()
        .any(|&first| first >= head.first_seq)
    {
        return Err(missing(
            dir,
            format!(
                "the segment being written at the last checkpoint, {} (or a later one), is gone",
                segment_name(head.first_seq)
            ),
        ));
    }
    Ok(())
}
