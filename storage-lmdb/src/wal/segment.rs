//! Segment files: their names, listing, creation (preallocated) and deletion, each made
//! durable in the directory.

use super::fs::{WalFile, WalFs};
use super::io_error;
use raftkv_raft::StorageError;
use std::path::{Path, PathBuf};

const SEGMENT_PREFIX: &str = "wal-";
const SEGMENT_SUFFIX: &str = ".log";

/// The name of the segment whose first record is `seq`.
pub(crate) fn segment_name(seq: u64) -> String {
    format!("{SEGMENT_PREFIX}{seq:020}{SEGMENT_SUFFIX}")
}

/// The first sequence number of a segment, from its file name.
pub(crate) fn segment_seq(name: &str) -> Option<u64> {
    let digits = name
        .strip_prefix(SEGMENT_PREFIX)?
        .strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The segments in `dir`, oldest first.
pub(crate) fn segments<F: WalFs>(fs: &F, dir: &Path) -> Result<Vec<(u64, PathBuf)>, StorageError> {
    let mut found = Vec::new();
    for name in fs.list(dir).map_err(|e| io_error("list", dir, e))? {
        if let Some(seq) = name.to_str().and_then(segment_seq) {
            found.push((seq, dir.join(name)));
        }
    }
    found.sort();
    Ok(found)
}

/// Makes the names created and removed in `dir` durable.
pub(crate) fn sync_dir<F: WalFs>(fs: &F, dir: &Path) -> Result<(), StorageError> {
    fs.sync_dir(dir)
        .map_err(|e| io_error("sync directory", dir, e))
}

/// Deletes `paths` and makes the deletions durable.
pub(crate) fn remove<F: WalFs>(fs: &F, dir: &Path, paths: &[PathBuf]) -> Result<(), StorageError> {
    for path in paths {
        fs.remove(path).map_err(|e| io_error("delete", path, e))?;
    }
    if !paths.is_empty() {
        sync_dir(fs, dir)?;
    }
    Ok(())
}

/// A segment made while the disk is short of space is preallocated to at least this much (or
/// to what the record to write needs, if more).
pub(crate) const SEGMENT_BYTES_SHORT_MIN: u64 = 64 << 10;

/// Creates the segment for the records from `first_seq` on, preallocated to `bytes`, and makes
/// it durable: its length, and its name in `dir`.
///
/// When the disk has not `bytes` free (`ENOSPC`), the segment is preallocated in smaller
/// steps, halving down to `min_bytes` (a node recovering on a nearly full disk can start and
/// catch up; the next rotation asks for a whole segment again), with a warning. Below
/// `min_bytes` it fails with an error that says how much room the WAL needs.
pub(crate) fn create_segment<F: WalFs>(
    fs: &F,
    dir: &Path,
    first_seq: u64,
    bytes: u64,
    min_bytes: u64,
) -> Result<(F::File, PathBuf, u64), StorageError> {
    let path = dir.join(segment_name(first_seq));
    let file = fs.create(&path).map_err(|e| io_error("create", &path, e))?;
    let size = preallocate(&file, &path, bytes, min_bytes)?;
    file.sync_all().map_err(|e| io_error("sync", &path, e))?;
    sync_dir(fs, dir)?;
    Ok((file, path, size))
}

/// Preallocates `file` to `bytes`, or, when the disk has not that much free, to as much as it
/// has in halving steps down to `min_bytes` (see [`create_segment`]); returns the length.
pub(crate) fn preallocate<W: WalFile>(
    file: &W,
    path: &Path,
    bytes: u64,
    min_bytes: u64,
) -> Result<u64, StorageError> {
    let min_bytes = min_bytes.min(bytes);
    let mut size = bytes;
    loop {
        match file.preallocate(size) {
            Ok(()) => break,
            Err(e) if is_no_space(&e) && size > min_bytes => {
                size = (size / 2).max(min_bytes);
            }
            Err(e) if is_no_space(&e) => {
                // Give back what a failed preallocation may have taken (the file is a new,
                // empty segment: nothing is lost).
                let _ = file.set_len(0);
                let dir = path.parent().unwrap_or(path);
                tracing::error!(
                    wal = %path.display(),
                    need_bytes = min_bytes,
                    segment_bytes = bytes,
                    "no space left for the WAL: it needs {min_bytes} bytes free in {}",
                    dir.display()
                );
                return Err(StorageError::NoSpace {
                    dir: dir.to_path_buf(),
                    need_bytes: min_bytes,
                    segment_bytes: bytes,
                });
            }
            Err(e) => return Err(io_error("preallocate", path, e)),
        }
    }
    if size < bytes {
        tracing::warn!(
            wal = %path.display(),
            segment_bytes = size,
            wanted_bytes = bytes,
            "the disk is short of space: WAL segment preallocated to {size} bytes instead of {bytes}"
        );
    }
    Ok(size)
}

fn is_no_space(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOSPC) || e.kind() == std::io::ErrorKind::StorageFull
}
