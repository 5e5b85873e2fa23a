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

/// Creates the segment for the records from `first_seq` on, preallocated to `bytes`, and makes
/// it durable: its length, and its name in `dir`.
pub(crate) fn create_segment<F: WalFs>(
    fs: &F,
    dir: &Path,
    first_seq: u64,
    bytes: u64,
) -> Result<(F::File, PathBuf), StorageError> {
    let path = dir.join(segment_name(first_seq));
    let file = fs.create(&path).map_err(|e| io_error("create", &path, e))?;
    file.preallocate(bytes)
        .map_err(|e| io_error("preallocate", &path, e))?;
    file.sync_all().map_err(|e| io_error("sync", &path, e))?;
    sync_dir(fs, dir)?;
    Ok((file, path))
}
