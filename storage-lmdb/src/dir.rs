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
    #[cfg(test)]
    tests::record(dir);
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StorageError::Io(format!("sync directory {}: {e}", dir.display())))
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
    fs::create_dir_all(dir).map_err(|e| {
        StorageError::Io(format!("create storage directory {}: {e}", dir.display()))
    })?;
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
        assert!(matches!(err, StorageError::Io(_)), "{err:?}");
        assert!(err.to_string().contains("nope"), "{err}");
    }
}
