//! Issue 20: [`FileSpool`], the [`SnapshotSpool`] of an [`LmdbState`](crate::LmdbState): a
//! snapshot of the state (the leader's read of it for a follower, or a follower's copy of
//! its leader's) in a file of the state's directory, mapped back read-only once written. Its
//! pages are the kernel's page cache (counted as the process's RssFile, which the kernel may
//! drop and read again), never the process's own memory (RssAnon), so a state larger than
//! memory has a snapshot larger than memory too.
//!
//! The file is unlinked right after it is made: it has no name while it is used, the space
//! is freed when the last handle (the map included) is dropped, and a crash leaves nothing
//! behind. A crash between the making and the unlinking leaves a named file, which
//! [`remove_stale`] removes when the state is opened.

use bytes::Bytes;
use memmap2::Mmap;
use raftkv_raft::{SnapshotSpool, StorageError};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The names of spool files start with this (then the process id and a number).
const SPOOL_PREFIX: &str = "raftkv-spool-";

/// What is gathered in memory before it is written to the file.
const BUFFER_BYTES: usize = 1 << 20;

/// A snapshot spooled to an unlinked file ([`SnapshotSpool`]).
pub struct FileSpool {
    file: BufWriter<File>,
    /// Where the file was made (it is unlinked): for errors.
    path: PathBuf,
    len: u64,
}

impl FileSpool {
    /// A new, empty spool in `dir`.
    pub fn create(dir: &Path) -> Result<Self, StorageError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("{SPOOL_PREFIX}{}-{n}", std::process::id()));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| StorageError::io("create snapshot spool", &path, e))?;
        match std::fs::remove_file(&path) {
            // Removed already (a state opened meanwhile in this directory removes spools).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            other => other.map_err(|e| StorageError::io("unlink snapshot spool", &path, e))?,
        }
        Ok(Self {
            file: BufWriter::with_capacity(BUFFER_BYTES, file),
            path,
            len: 0,
        })
    }
}

impl SnapshotSpool for FileSpool {
    fn append(&mut self, data: &[u8]) -> Result<(), StorageError> {
        self.file
            .write_all(data)
            .map_err(|e| StorageError::io("write snapshot spool", &self.path, e))?;
        self.len += data.len() as u64;
        Ok(())
    }

    fn len(&self) -> u64 {
        self.len
    }

    /// The file mapped read-only (the map keeps it alive once the file is closed); empty:
    /// nothing mapped.
    fn finish(self: Box<Self>) -> Result<Bytes, StorageError> {
        let FileSpool { file, path, len } = *self;
        let file = file
            .into_inner()
            .map_err(|e| StorageError::io("write snapshot spool", &path, e.into_error()))?;
        if len == 0 {
            return Ok(Bytes::new());
        }
        // Safety: the file was made by this spool and unlinked at once; no one else can open
        // it, and this process writes it no more: the mapped bytes never change.
        let map = unsafe { Mmap::map(&file) }
            .map_err(|e| StorageError::io("map snapshot spool", &path, e))?;
        if map.len() as u64 != len {
            let detail = format!("holds {} bytes, {len} were written", map.len());
            return Err(StorageError::io(
                "map snapshot spool",
                &path,
                std::io::Error::other(detail),
            ));
        }
        Ok(Bytes::from_owner(map))
    }
}

/// Removes the spool files a crash left in `dir` (made but not unlinked yet).
pub(crate) fn remove_stale(dir: &Path) -> Result<(), StorageError> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| StorageError::io("list state directory", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| StorageError::io("list state directory", dir, e))?;
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with(SPOOL_PREFIX)
        {
            let path = entry.path();
            std::fs::remove_file(&path)
                .map_err(|e| StorageError::io("remove stale snapshot spool", &path, e))?;
        }
    }
    Ok(())
}
