//! The record format: `len (u32 LE) ‖ crc32c of body (u32 LE) ‖ body`, body = postcard of
//! `(seq, ops)`; encoding, and reading one position of a segment back.
//!
//! A segment the WAL moved on from ends with a seal: a record `(next, [Seal])` whose `next` is
//! the first sequence number of the segment that follows (the next record's). Recovery then
//! knows that segment must exist: a WAL that ends in a sealed segment lost its newest one.

use raftkv_raft::{Entry, HardState, WriteOp};
use serde::{Deserialize, Serialize};

/// Bytes before a record's body: its length and its CRC.
pub(crate) const HEADER_BYTES: usize = 8;

/// The largest record body, in bytes. A write that encodes larger is refused.
pub(crate) const RECORD_BYTES_MAX: usize = 1 << 30;

/// An op as written: borrowed, so entries are encoded without a copy first. Its variants and
/// their order must match [`RecordOp`].
#[derive(Serialize)]
enum RecordOpRef<'a> {
    HardState(&'a HardState),
    Append(&'a [Entry]),
    Seal,
}

/// An op as read back.
#[derive(Deserialize)]
pub(crate) enum RecordOp {
    HardState(HardState),
    Append(Vec<Entry>),
    /// The segment ends here; the record's sequence number is the next segment's first.
    Seal,
}

impl RecordOp {
    /// The write op, or `None` for a seal.
    pub(crate) fn into_write_op(self) -> Option<WriteOp> {
        match self {
            RecordOp::HardState(hs) => Some(WriteOp::HardState(hs)),
            RecordOp::Append(entries) => Some(WriteOp::Append(entries)),
            RecordOp::Seal => None,
        }
    }
}

/// Room a segment keeps for its seal after its last record (a seal encodes to at most 20).
pub(crate) const SEAL_BYTES_MAX: usize = 32;

/// The seal record saying the next segment starts at `next_seq`.
pub(crate) fn encode_seal(next_seq: u64) -> Vec<u8> {
    let mut buf = Vec::new();
    frame(next_seq, &[RecordOpRef::Seal], &mut buf).expect("a seal always encodes");
    debug_assert!(buf.len() <= SEAL_BYTES_MAX);
    buf
}

/// Whether `op` goes into a WAL record: entries and hard state do. Snapshots go to LMDB
/// directly, and so does compaction (replayed from the WAL, a compaction could outlive a
/// snapshot the crash lost).
pub(crate) fn is_record_op(op: &WriteOp) -> bool {
    matches!(op, WriteOp::Append(_) | WriteOp::HardState(_))
}

/// Encodes the record `(seq, ops)` into `buf` (cleared first); every op must pass
/// [`is_record_op`].
pub(crate) fn encode_record<'a>(
    seq: u64,
    ops: impl IntoIterator<Item = &'a WriteOp>,
    buf: &mut Vec<u8>,
) -> Result<(), String> {
    let refs: Vec<RecordOpRef> = ops
        .into_iter()
        .map(|op| match op {
            WriteOp::HardState(hs) => Ok(RecordOpRef::HardState(hs)),
            WriteOp::Append(entries) => Ok(RecordOpRef::Append(entries)),
            WriteOp::CompactTo(_) | WriteOp::InstallSnapshot(_) | WriteOp::SaveSnapshot(_) => {
                Err("only entries and hard state are WAL records".to_string())
            }
        })
        .collect::<Result<_, _>>()?;
    frame(seq, &refs, buf)
}

/// Frames the record `(seq, refs)` into `buf` (cleared first): header, then body.
fn frame(seq: u64, refs: &[RecordOpRef], buf: &mut Vec<u8>) -> Result<(), String> {
    buf.clear();
    buf.resize(HEADER_BYTES, 0);
    let mut body = postcard::to_extend(&(seq, refs), std::mem::take(buf))
        .map_err(|e| format!("cannot encode WAL record {seq}: {e}"))?;
    let len = body.len() - HEADER_BYTES;
    if len > RECORD_BYTES_MAX {
        return Err(format!(
            "WAL record {seq} of {len} bytes, over the bound of {RECORD_BYTES_MAX}"
        ));
    }
    let crc = crc32c::crc32c(&body[HEADER_BYTES..]);
    body[..4].copy_from_slice(&(len as u32).to_le_bytes());
    body[4..HEADER_BYTES].copy_from_slice(&crc.to_le_bytes());
    *buf = body;
    Ok(())
}

/// What one position of a segment holds.
pub(crate) enum Slot {
    /// A verified record and the offset after it.
    Record {
        seq: u64,
        ops: Vec<RecordOp>,
        end: usize,
    },
    /// Zeros, or too few bytes for a header: no record starts here.
    Empty,
    /// Bytes that are not a verifiable record.
    Invalid(String),
}

pub(crate) fn read_slot(bytes: &[u8], offset: usize) -> Slot {
    let Some(header) = bytes.get(offset..offset + HEADER_BYTES) else {
        return Slot::Empty;
    };
    let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
    if len == 0 && crc == 0 {
        return Slot::Empty;
    }
    if len > RECORD_BYTES_MAX {
        return Slot::Invalid(format!("record length {len} over the bound"));
    }
    let Some(body) = bytes.get(offset + HEADER_BYTES..offset + HEADER_BYTES + len) else {
        return Slot::Invalid(format!(
            "record of {len} bytes runs past the end of the file"
        ));
    };
    let actual = crc32c::crc32c(body);
    if actual != crc {
        return Slot::Invalid(format!(
            "CRC mismatch: stored {crc:#010x}, computed {actual:#010x}"
        ));
    }
    match postcard::take_from_bytes::<(u64, Vec<RecordOp>)>(body) {
        Ok(((seq, ops), [])) => Slot::Record {
            seq,
            ops,
            end: offset + HEADER_BYTES + len,
        },
        Ok((_, rest)) => Slot::Invalid(format!("{} trailing bytes in a record", rest.len())),
        Err(e) => Slot::Invalid(format!("undecodable record: {e}")),
    }
}

/// True if a verifiable record with a sequence number of at least `seq` starts anywhere in
/// `bytes` (a scan at every offset, run only on a WAL that ends in an invalid record).
pub(crate) fn any_record_from(bytes: &[u8], seq: u64) -> bool {
    (0..bytes.len())
        .any(|offset| matches!(read_slot(bytes, offset), Slot::Record { seq: s, .. } if s >= seq))
}
