//! Durable directory entries: a file's data can be fsynced and still be lost with a power cut
//! if the directory entry naming it was not (issue 21 #11). Every creation, rename or removal
//! of a store file is followed by [`sync_dir`] of its directory, and a store directory that
//! did not exist is created by [`create_dir_all_synced`], which syncs each new directory's
//! parent too.

use raftkv_raft::StorageError;
use std::fs::{self, File};
use std::path::{Path, PathBuf};

/// Flushes `dir`'s entries (names created, renamed or removed in it) to disk.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    sync_dir_io(dir).map_err(|e| StorageError::io("sync directory", dir, e))
}

/// [`sync_dir`] with the bare I/O error (the WAL's file system seam, `wal::fs`, says where).
pub(crate) fn sync_dir_io(dir: &Path) -> std::io::Result<()> {
    #[cfg(test)]
    tests::record(dir);
    File::open(dir).and_then(|d| d.sync_all())
}

/// Creates `dir` and any missing ancestors, then syncs the parent of each directory it
/// created (top down), so the new directories survive a power cut; and `dir` itself.
pub(crate) fn create_dir_all_synced(dir: &Path) -> Result<(), StorageError> {
    let mut created: Vec<PathBuf> = Vec::new();
    let mut at = Some(dir);
    while let Some(p) = at {
        if p.as_os_str().is_empty() || p.exists() {
            break;
        }
        created.push(p.to_path_buf());
        at = p.parent();
    }
    fs::create_dir_all(dir).map_err(|e| StorageError::io("create storage directory", dir, e))?;
    for new in created.iter().rev() {
        match new.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => sync_dir(parent)?,
            // A relative path's first component: its parent is the working directory.
            _ => sync_dir(Path::new("."))?,
        }
    }
    sync_dir(dir)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Every directory synced in this test process, in order.
    static SYNCED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

    pub(super) fn record(dir: &Path) {
        SYNCED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(dir.to_path_buf());
    }

    /// The directories synced so far that lie under `root` (tests run in parallel).
    pub(crate) fn synced_under(root: &Path) -> Vec<PathBuf> {
        SYNCED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|p| p.starts_with(root))
            .cloned()
            .collect()
    }

    #[test]
    fn creating_nested_directories_syncs_each_new_ones_parent_top_down_then_the_directory() {
        let root = tempfile::tempdir().unwrap();
        let deep = root.path().join("a").join("b").join("c");
        create_dir_all_synced(&deep).unwrap();
        assert!(deep.is_dir());
        let a = root.path().join("a");
        let b = a.join("b");
        assert_eq!(
            synced_under(root.path()),
            vec![root.path().to_path_buf(), a, b, deep.clone()]
        );
        // Already there: only the directory itself.
        create_dir_all_synced(&deep).unwrap();
        assert_eq!(synced_under(root.path()).last(), Some(&deep));
        assert_eq!(synced_under(root.path()).len(), 5);
    }

    #[test]
    fn syncing_a_missing_directory_is_an_io_error() {
        let root = tempfile::tempdir().unwrap();
        let err = sync_dir(&root.path().join("nope")).unwrap_err();
        assert!(
            matches!(&err, StorageError::Io { op: "sync directory", source, .. }
                if source.kind() == std::io::ErrorKind::NotFound),
            "{err:?}"
        );
        assert!(err.to_string().contains("nope"), "{err}");
    }
}

#[cfg(test)]
mod store_tests {
    use crate::dir::tests::synced_under;
    use crate::{LmdbOptions, LmdbStorage};
    use raftkv_raft::Entry;
    use raftkv_raft::{Payload, Storage, WriteOp};

    /// Issue 21 #11: the data directory's parent and new files' directory entries were never
    /// fsynced, so a power cut could lose a whole new store, or a segment a record was in.
    #[test]
    fn opening_writing_and_closing_sync_every_directory_whose_entries_changed() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("node").join("data");
        let options = LmdbOptions {
            map_size_bytes: 1 << 20,
            wal_segment_bytes: 4096,
            wal_checkpoint_bytes: 1024,
            ..LmdbOptions::default()
        };
        let storage = LmdbStorage::open(&dir, options).unwrap();
        let synced = synced_under(root.path());
        let node = root.path().join("node");
        for parent in [root.path(), node.as_path()] {
            assert!(
                synced.iter().any(|p| p == parent),
                "{} not synced: {synced:?}",
                parent.display()
            );
        }
        let at_open = synced.iter().filter(|p| **p == dir).count();
        assert!(
            at_open >= 3,
            "the store directory is synced when created, after LMDB's files and after the first \
             WAL segment: {synced:?}"
        );
        // Enough writes to rotate segments and release them after checkpoints.
        for i in 1..=200u64 {
            let entry = Entry {
                index: i,
                term: 1,
                payload: Payload::Command(bytes::Bytes::from(vec![7u8; 100])),
            };
            futures::executor::block_on(storage.write(vec![WriteOp::Append(vec![entry])])).unwrap();
        }
        let segments_now = std::fs::read_dir(&dir)
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                name.to_str().unwrap().starts_with("wal-")
            })
            .count();
        let syncs_after_writes = synced_under(root.path())
            .iter()
            .filter(|p| **p == dir)
            .count();
        // 200 records of ~130 bytes in 4 KiB segments: at least 6 segments created, most
        // released again, each a directory sync.
        assert!(
            syncs_after_writes >= at_open + 6 + segments_now.min(1),
            "{syncs_after_writes} syncs after writing, {at_open} at open"
        );
        drop(storage);
        let at_close = synced_under(root.path())
            .iter()
            .filter(|p| **p == dir)
            .count();
        assert!(
            at_close > syncs_after_writes,
            "the clean close removes segments"
        );
    }
}
