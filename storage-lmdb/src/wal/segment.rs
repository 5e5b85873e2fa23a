//! Segment files: their names, listing, creation (preallocated) and deletion, each made
//! durable in the directory.

use super::io_error;
use crate::dir::sync_dir;
use raftkv_raft::StorageError;
use std::fs::{self, File, OpenOptions};
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
pub(crate) fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StorageError> {
    let mut found = Vec::new();
    let listing = fs::read_dir(dir).map_err(|e| io_error("list", dir, e))?;
    for item in listing {
        let item = item.map_err(|e| io_error("list", dir, e))?;
        let name = item.file_name();
        if let Some(seq) = name.to_str().and_then(segment_seq) {
            found.push((seq, item.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// Deletes `paths` and makes the deletions durable.
pub(crate) fn remove(dir: &Path, paths: &[PathBuf]) -> Result<(), StorageError> {
    for path in paths {
        fs::remove_file(path).map_err(|e| io_error("delete", path, e))?;
    }
    if !paths.is_empty() {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Reserves `bytes` of disk for `file` (its length becomes `bytes`), so that writes within
/// them change no metadata that `fdatasync` would have to write.
pub(crate) fn preallocate(file: &File, bytes: u64) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::io::AsRawFd;
        let len = libc::off_t::try_from(bytes).map_err(std::io::Error::other)?;
        // Safety: a system call on a descriptor we own; no memory is passed.
        let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
        match rc {
            0 => return Ok(()),
            // Not supported by this file system: a plain length below does.
            libc::EOPNOTSUPP | libc::EINVAL => {}
            _ => return Err(std::io::Error::from_raw_os_error(rc)),
        }
    }
    file.set_len(bytes)
}

pub(crate) fn create_segment(
    dir: &Path,
    first_seq: u64,
    bytes: u64,
) -> Result<(File, PathBuf), StorageError> {
    let path = dir.join(segment_name(first_seq));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .map_err(|e| io_error("create", &path, e))?;
    preallocate(&file, bytes).map_err(|e| io_error("preallocate", &path, e))?;
    file.sync_all().map_err(|e| io_error("sync", &path, e))?;
    sync_dir(dir)?;
    Ok((file, path))
}
