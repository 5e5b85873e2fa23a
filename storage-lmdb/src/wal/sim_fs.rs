//! A simulated file system for power-loss tests (tests only): the WAL runs on it through the
//! [`WalFs`] seam, unchanged.
//!
//! Each file has a *durable* content (what is on the platter) and a *current* one (what the
//! running system reads: the page cache). Directory entries too: the names the running system
//! sees, and the names a directory sync made durable. A sync copies current to durable.
//! [`SimFs::power_off`] then keeps only what is durable, except for the last write not yet
//! synced, which it tears, seeded: nothing of it, all of it, or a prefix, possibly followed
//! by zeros or garbage up to the end of the 512-byte sector the cut fell in. Everything
//! else never synced is lost, including new names never made durable by a directory sync
//! (the file is gone) and removals never made durable (the file is back).
//!
//! [`SimFs::lose_power_after_ops`] makes every operation after the next `n` fail, as on a
//! machine whose power went at that instant: tests sweep `n` to cut the power between any
//! two operations (a write and its sync, a segment's creation and its directory's sync).
//! [`Faults`] remove a kind of sync, to show that the tests notice when one is missing.
//! Deterministic: the same operations and seeds give the same disk.

use super::fs::{WalFile, WalFs};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// The unit a disk writes atomically: a torn write leaves at most one partly written.
pub(crate) const SECTOR_BYTES: u64 = 512;

/// Syncs the simulated file system pretends to do, and does not.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Faults {
    /// `sync_data` returns `Ok` and syncs nothing: the WAL's `fdatasync` removed.
    pub(crate) sync_data_ignored: bool,
    /// `sync_dir` returns `Ok` and syncs nothing: the directory fsyncs removed.
    pub(crate) sync_dir_ignored: bool,
}

/// A deterministic random number generator (SplitMix64).
pub(crate) struct SimRng(u64);

impl SimRng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// A handle on one simulated file system; clones share it.
#[derive(Clone, Default)]
pub(crate) struct SimFs {
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    /// The names the running system sees.
    names: BTreeMap<PathBuf, u64>,
    /// The names on disk: as the last directory sync of each directory left them.
    durable_names: BTreeMap<PathBuf, u64>,
    /// By inode number.
    files: BTreeMap<u64, FileData>,
    next_inode: u64,
    /// The last write since its file's last sync: the one a power cut tears.
    unsynced_write: Option<Write>,
    /// Operations that change something, so far.
    ops: u64,
    /// Every operation that would make `ops` exceed this fails: the power is gone.
    ops_max: Option<u64>,
    faults: Faults,
    stats: SimStats,
    /// The disk's size: growing files beyond it fails with `ENOSPC` (`None`: unbounded).
    capacity_bytes: Option<u64>,
}

/// What a simulated file system went through, to check that a test reached the cases it is
/// about.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SimStats {
    /// Files created (or emptied by a create).
    pub(crate) files_created: u64,
    /// Power cuts that left part of a write on disk: a prefix, possibly with zeros or garbage.
    pub(crate) writes_torn: u64,
    /// Power cuts.
    pub(crate) power_offs: u64,
}

#[derive(Clone, Default)]
struct FileData {
    durable: Vec<u8>,
    current: Vec<u8>,
}

struct Write {
    inode: u64,
    offset: u64,
    data: Vec<u8>,
}

fn power_lost_error() -> io::Error {
    io::Error::other("simulated power loss")
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file", path.display()),
    )
}

impl State {
    /// Counts one operation that changes something; fails once the power is gone.
    fn op(&mut self) -> io::Result<()> {
        self.alive()?;
        self.ops += 1;
        self.alive()
    }

    fn alive(&self) -> io::Result<()> {
        match self.ops_max {
            Some(max) if self.ops > max => Err(power_lost_error()),
            _ => Ok(()),
        }
    }

    /// Fails with `ENOSPC` if `inode` growing to `len` bytes would overfill the disk (named
    /// files count, at their current length).
    fn room(&self, inode: u64, len: u64) -> io::Result<()> {
        let Some(capacity) = self.capacity_bytes else {
            return Ok(());
        };
        let others: u64 = self
            .names
            .values()
            .filter(|&&i| i != inode)
            .filter_map(|i| self.files.get(i))
            .map(|f| f.current.len() as u64)
            .sum();
        if others + len > capacity {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        Ok(())
    }

    fn file(&mut self, inode: u64) -> &mut FileData {
        self.files
            .get_mut(&inode)
            .expect("an open file's inode lives while it is open")
    }

    fn sync(&mut self, inode: u64) {
        let file = self.file(inode);
        file.durable = file.current.clone();
        if self
            .unsynced_write
            .as_ref()
            .is_some_and(|w| w.inode == inode)
        {
            self.unsynced_write = None;
        }
    }

    /// Writes the part of the last unsynced write that a power cut let reach the disk.
    fn tear(&mut self, rng: &mut SimRng) {
        let Some(write) = self.unsynced_write.take() else {
            return;
        };
        let len = write.data.len() as u64;
        let kept = match rng.below(4) {
            0 => 0,
            1 => len,
            _ => rng.below(len + 1),
        };
        if 0 < kept && kept < len {
            self.stats.writes_torn += 1;
        }
        let mut data = write.data[..kept as usize].to_vec();
        if kept < len && rng.below(2) == 0 {
            // The sector being written when the power went: zeros or garbage from the cut.
            let cut = write.offset + kept;
            let end = ((cut / SECTOR_BYTES + 1) * SECTOR_BYTES).min(write.offset + len);
            let garbage = rng.below(2) == 0;
            data.extend((cut..end).map(|_| if garbage { rng.next_u64() as u8 } else { 0 }));
        }
        let Some(file) = self.files.get_mut(&write.inode) else {
            return;
        };
        write_at(&mut file.durable, &data, write.offset);
    }
}

fn write_at(content: &mut Vec<u8>, data: &[u8], offset: u64) {
    let start = offset as usize;
    let end = start + data.len();
    if content.len() < end {
        content.resize(end, 0);
    }
    content[start..end].copy_from_slice(data);
}

impl SimFs {
    pub(crate) fn new(faults: Faults) -> Self {
        let fs = Self::default();
        fs.state().faults = faults;
        fs
    }

    /// Gives the disk a size: from now on, growing files beyond it fails with `ENOSPC`.
    pub(crate) fn set_capacity(&self, bytes: u64) {
        self.state().capacity_bytes = Some(bytes);
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The power goes after `n` more operations that change something: the next ones fail.
    pub(crate) fn lose_power_after_ops(&self, n: u64) {
        let mut state = self.state();
        state.ops_max = Some(state.ops + n);
    }

    /// Whether the power is gone (an operation failed for it, or would).
    pub(crate) fn power_lost(&self) -> bool {
        let state = self.state();
        state.ops_max.is_some_and(|max| state.ops >= max)
    }

    /// Cuts the power and turns it back on: what was not synced is lost, the last unsynced
    /// write torn (seeded). Handles opened before must not be used after.
    pub(crate) fn power_off(&self, seed: u64) {
        let mut rng = SimRng::new(seed);
        let mut state = self.state();
        state.tear(&mut rng);
        state.names = state.durable_names.clone();
        let named: std::collections::BTreeSet<u64> = state.names.values().copied().collect();
        state.files.retain(|inode, _| named.contains(inode));
        for file in state.files.values_mut() {
            file.current = file.durable.clone();
        }
        state.ops_max = None;
        state.stats.power_offs += 1;
    }

    pub(crate) fn stats(&self) -> SimStats {
        self.state().stats
    }

    /// What the running system reads at `path`, if a file is there.
    pub(crate) fn content(&self, path: &Path) -> Option<Vec<u8>> {
        let state = self.state();
        let inode = state.names.get(path)?;
        Some(state.files[inode].current.clone())
    }
}

/// An open file of a [`SimFs`].
pub(crate) struct SimFile {
    fs: SimFs,
    inode: u64,
}

impl WalFs for SimFs {
    type File = SimFile;

    fn create(&self, path: &Path) -> io::Result<SimFile> {
        let mut state = self.state();
        state.op()?;
        state.stats.files_created += 1;
        let inode = match state.names.get(path) {
            Some(&inode) => {
                state.file(inode).current.clear();
                inode
            }
            None => {
                state.next_inode += 1;
                let inode = state.next_inode;
                state.files.insert(inode, FileData::default());
                state.names.insert(path.to_path_buf(), inode);
                inode
            }
        };
        Ok(SimFile {
            fs: self.clone(),
            inode,
        })
    }

    fn open_write(&self, path: &Path) -> io::Result<SimFile> {
        let state = self.state();
        state.alive()?;
        let inode = *state.names.get(path).ok_or_else(|| not_found(path))?;
        Ok(SimFile {
            fs: self.clone(),
            inode,
        })
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.state().alive()?;
        self.content(path).ok_or_else(|| not_found(path))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<OsString>> {
        let state = self.state();
        state.alive()?;
        Ok(state
            .names
            .keys()
            .filter(|path| path.parent() == Some(dir))
            .filter_map(|path| path.file_name().map(OsString::from))
            .collect())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state();
        state.op()?;
        state
            .names
            .remove(path)
            .map(drop)
            .ok_or_else(|| not_found(path))
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.state();
        state.op()?;
        if state.faults.sync_dir_ignored {
            return Ok(());
        }
        state
            .durable_names
            .retain(|path, _| path.parent() != Some(dir));
        let now: Vec<(PathBuf, u64)> = state
            .names
            .iter()
            .filter(|(path, _)| path.parent() == Some(dir))
            .map(|(path, &inode)| (path.clone(), inode))
            .collect();
        state.durable_names.extend(now);
        Ok(())
    }
}

impl WalFile for SimFile {
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut state = self.fs.state();
        state.op()?;
        let len = state.file(self.inode).current.len() as u64;
        state.room(self.inode, len.max(offset + buf.len() as u64))?;
        write_at(&mut state.file(self.inode).current, buf, offset);
        state.unsynced_write = Some(Write {
            inode: self.inode,
            offset,
            data: buf.to_vec(),
        });
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut state = self.fs.state();
        state.op()?;
        if !state.faults.sync_data_ignored {
            state.sync(self.inode);
        }
        Ok(())
    }

    fn sync_all(&self) -> io::Result<()> {
        let mut state = self.fs.state();
        state.op()?;
        state.sync(self.inode);
        Ok(())
    }

    fn set_len(&self, bytes: u64) -> io::Result<()> {
        let mut state = self.fs.state();
        state.op()?;
        state.room(self.inode, bytes)?;
        state.file(self.inode).current.resize(bytes as usize, 0);
        Ok(())
    }

    fn preallocate(&self, bytes: u64) -> io::Result<()> {
        self.set_len(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> &'static Path {
        Path::new("/sim")
    }

    #[test]
    fn synced_data_and_names_survive_power_off_and_unsynced_ones_do_not() {
        let fs = SimFs::new(Faults::default());
        let kept = dir().join("kept");
        let unnamed = dir().join("unnamed");
        let file = fs.create(&kept).unwrap();
        file.write_all_at(b"durable", 0).unwrap();
        file.sync_data().unwrap();
        fs.sync_dir(dir()).unwrap();
        let other = fs.create(&unnamed).unwrap();
        other
            .write_all_at(b"synced, but its name is not", 0)
            .unwrap();
        other.sync_all().unwrap();
        file.write_all_at(b"DURABLE!", 0).unwrap();
        // A second unsynced write: the first one, not the last, is simply lost.
        file.write_all_at(b"tail", 100).unwrap();
        fs.power_off(0);
        let content = fs.content(&kept).unwrap();
        assert_eq!(&content[..7], b"durable");
        assert_eq!(
            fs.content(&unnamed),
            None,
            "its directory entry was never synced"
        );
        assert_eq!(fs.list(dir()).unwrap(), vec![OsString::from("kept")]);
    }

    #[test]
    fn a_removal_not_made_durable_by_a_directory_sync_is_undone_by_power_off() {
        let fs = SimFs::new(Faults::default());
        let path = dir().join("f");
        fs.create(&path).unwrap().sync_all().unwrap();
        fs.sync_dir(dir()).unwrap();
        fs.remove(&path).unwrap();
        assert_eq!(fs.content(&path), None);
        fs.power_off(1);
        assert_eq!(fs.content(&path), Some(Vec::new()));
        fs.remove(&path).unwrap();
        fs.sync_dir(dir()).unwrap();
        fs.power_off(1);
        assert_eq!(fs.content(&path), None);
    }

    #[test]
    fn the_last_unsynced_write_is_torn_to_a_prefix_and_at_most_one_sector_of_zeros_or_garbage() {
        let mut seen_kept = std::collections::BTreeSet::new();
        for seed in 0..200 {
            let run = |seed| {
                let fs = SimFs::new(Faults::default());
                let path = dir().join("f");
                let file = fs.create(&path).unwrap();
                file.set_len(4096).unwrap();
                file.sync_all().unwrap();
                fs.sync_dir(dir()).unwrap();
                file.write_all_at(&[0xab; 1500], 300).unwrap();
                fs.power_off(seed);
                fs.content(&path).unwrap()
            };
            let content = run(seed);
            assert_eq!(
                content,
                run(seed),
                "seed {seed}: the same seed tears the same way"
            );
            assert_eq!(content.len(), 4096);
            let kept = content[300..].iter().take_while(|&&b| b == 0xab).count();
            seen_kept.insert(kept);
            let cut = 300 + kept;
            let sector_end = ((cut as u64 / SECTOR_BYTES + 1) * SECTOR_BYTES) as usize;
            // Past the end of the sector the cut fell in, nothing of the write is left.
            assert!(
                content[sector_end.min(4096)..].iter().all(|&b| b == 0),
                "seed {seed}: cut at {cut}"
            );
            assert!(content[..300].iter().all(|&b| b == 0), "seed {seed}");
        }
        assert!(seen_kept.contains(&0) && seen_kept.contains(&1500));
        assert!(
            seen_kept.len() > 20,
            "prefixes of many lengths: {seen_kept:?}"
        );
    }

    #[test]
    fn after_the_power_is_lost_every_operation_fails_until_power_off() {
        let fs = SimFs::new(Faults::default());
        let file = fs.create(&dir().join("f")).unwrap();
        fs.lose_power_after_ops(1);
        file.write_all_at(b"x", 0).unwrap();
        assert!(fs.power_lost());
        assert!(file.sync_data().is_err());
        assert!(fs.list(dir()).is_err());
        assert!(fs.create(&dir().join("g")).is_err());
        fs.power_off(0);
        assert!(fs.list(dir()).unwrap().is_empty());
    }

    #[test]
    fn faults_make_syncs_no_ops() {
        let fs = SimFs::new(Faults {
            sync_data_ignored: true,
            sync_dir_ignored: false,
        });
        let path = dir().join("f");
        let file = fs.create(&path).unwrap();
        file.sync_all().unwrap();
        fs.sync_dir(dir()).unwrap();
        file.write_all_at(b"a", 0).unwrap();
        file.write_all_at(b"b", 1).unwrap();
        file.sync_data().unwrap();
        fs.power_off(0);
        // "a" was never synced, and "b" (the last write) is torn at most.
        assert_ne!(fs.content(&path).unwrap().first(), Some(&b'a'));
        let fs = SimFs::new(Faults {
            sync_data_ignored: false,
            sync_dir_ignored: true,
        });
        fs.create(&path).unwrap().sync_all().unwrap();
        fs.sync_dir(dir()).unwrap();
        fs.power_off(0);
        assert_eq!(fs.content(&path), None);
    }
}
