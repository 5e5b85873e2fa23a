//! The WAL's file I/O seam: every file operation the WAL does goes through [`WalFs`] and
//! [`WalFile`], so that tests can run the real WAL code on a simulated disk that loses what
//! was not synced when the power goes (`sim_fs`, tests only). Killing a process (`kill -9`)
//! cannot test that: the page cache survives it, so a WAL without its `fdatasync` passes.
//!
//! [`StdFs`] is the real file system, `std::fs`. The WAL is generic over the seam (static
//! dispatch, no boxing, no copies): with `StdFs`, a zero-sized type, an append compiles to the
//! same `pwrite` and `fdatasync` as before.
//!
//! LMDB's files do not go through here: heed opens and maps them itself.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// The file-system operations the WAL uses, on paths.
pub(crate) trait WalFs {
    /// An open file.
    type File: WalFile;
    /// Creates the file at `path` for reading and writing, emptying it if it exists. Its
    /// directory entry is durable only after [`WalFs::sync_dir`] of its directory.
    fn create(&self, path: &Path) -> io::Result<Self::File>;
    /// Opens the existing file at `path` for writing.
    fn open_write(&self, path: &Path) -> io::Result<Self::File>;
    /// The whole content of the file at `path`.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// The names of the entries of the directory `dir`, in no particular order.
    fn list(&self, dir: &Path) -> io::Result<Vec<OsString>>;
    /// Removes the file at `path`; durable only after [`WalFs::sync_dir`] of its directory.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes the names created and removed in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// The operations on an open file the WAL uses.
pub(crate) trait WalFile {
    /// Writes all of `buf` at `offset`; durable only after a sync.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes the data written durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;
    /// Makes the data and the metadata (the length) durable (`fsync`).
    fn sync_all(&self) -> io::Result<()>;
    /// Sets the length, cutting or extending with zeros.
    fn set_len(&self, bytes: u64) -> io::Result<()>;
    /// Reserves `bytes` of disk (the length becomes `bytes`), so that writes within them
    /// change no metadata that `fdatasync` would have to write.
    fn preallocate(&self, bytes: u64) -> io::Result<()>;
}

/// The real file system.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct StdFs;

impl WalFs for StdFs {
    type File = File;

    fn create(&self, path: &Path) -> io::Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
    }

    fn open_write(&self, path: &Path) -> io::Result<File> {
        OpenOptions::new().write(true).open(path)
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<OsString>> {
        fs::read_dir(dir)?
            .map(|item| item.map(|item| item.file_name()))
            .collect()
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        crate::dir::sync_dir_io(dir)
    }
}

impl WalFile for File {
    #[inline]
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        FileExt::write_all_at(self, buf, offset)
    }

    #[inline]
    fn sync_data(&self) -> io::Result<()> {
        File::sync_data(self)
    }

    fn sync_all(&self) -> io::Result<()> {
        File::sync_all(self)
    }

    fn set_len(&self, bytes: u64) -> io::Result<()> {
        File::set_len(self, bytes)
    }

    fn preallocate(&self, bytes: u64) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::io::AsRawFd;
            let len = libc::off_t::try_from(bytes).map_err(io::Error::other)?;
            // Safety: a system call on a descriptor we own; no memory is passed.
            let rc = unsafe { libc::posix_fallocate(self.as_raw_fd(), 0, len) };
            match rc {
                0 => return Ok(()),
                // Not supported by this file system: a plain length below does.
                libc::EOPNOTSUPP | libc::EINVAL => {}
                _ => return Err(io::Error::from_raw_os_error(rc)),
            }
        }
        File::set_len(self, bytes)
    }
}
