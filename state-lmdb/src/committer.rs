//! The commit thread: [`Committer`] runs an [`LmdbState`](crate::LmdbState)'s commits (and the
//! syncs after them) on a thread of its own, `raftkv-state-commit`, one at a time, so that the
//! node's event loop goes on (heartbeats included) while LMDB writes and syncs what may be
//! thousands of pages. The state machine keeps the batch readable until the thread says it is
//! committed.

use crate::Db;
use raftkv_kv::durable::Changes;
use raftkv_raft::StorageError;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A commit that took longer than this is logged (at `info`; every commit at `debug`).
const SLOW_COMMIT: Duration = Duration::from_secs(1);

/// A batch for the thread to commit, with its position, then to sync or not.
struct Job {
    changes: Arc<Changes>,
    position: Vec<u8>,
    sync: bool,
}

/// The commit thread's handle: at most one commit in flight.
pub(crate) struct Committer {
    /// `None` once closed (the thread then ends).
    jobs: Option<SyncSender<Job>>,
    done: Receiver<Result<(), StorageError>>,
    /// Set when the state is dropped: the commit in flight, unless its transaction is
    /// committing already, is aborted.
    abandon: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    in_flight: bool,
    dir: std::path::PathBuf,
}

/// The error of a commit abandoned when the state was dropped (no one reads it).
pub(crate) fn abandoned(dir: &Path) -> StorageError {
    StorageError::io(
        "LMDB state commit",
        dir,
        std::io::Error::other("abandoned: the state was dropped"),
    )
}

impl Committer {
    /// Starts the thread that commits to `db`.
    pub(crate) fn spawn(db: Db) -> Result<Self, StorageError> {
        // One job at a time: the state machine starts one only when none is in flight.
        let (jobs, jobs_rx) = sync_channel::<Job>(1);
        let (done_tx, done) = sync_channel(1);
        let abandon = Arc::new(AtomicBool::new(false));
        let dir = db.dir.clone();
        let stop = abandon.clone();
        let thread = std::thread::Builder::new()
            .name("raftkv-state-commit".into())
            .spawn(move || {
                while let Ok(job) = jobs_rx.recv() {
                    let result = run(&db, &job, &stop);
                    if done_tx.send(result).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| StorageError::io("spawn the LMDB state's commit thread", &dir, e))?;
        Ok(Self {
            jobs: Some(jobs),
            done,
            abandon,
            thread: Some(thread),
            in_flight: false,
            dir,
        })
    }

    /// Hands the thread a commit (after waiting for the one in flight, if any).
    pub(crate) fn start(
        &mut self,
        changes: Arc<Changes>,
        position: Vec<u8>,
        sync: bool,
    ) -> Result<(), StorageError> {
        self.wait()?;
        let job = Job {
            changes,
            position,
            sync,
        };
        let sent = self.jobs.as_ref().map(|jobs| jobs.send(job));
        match sent {
            Some(Ok(())) => {
                self.in_flight = true;
                Ok(())
            }
            _ => Err(self.stopped()),
        }
    }

    /// Whether the commit in flight is done (`true` with none), without blocking.
    pub(crate) fn done(&mut self) -> Result<bool, StorageError> {
        if !self.in_flight {
            return Ok(true);
        }
        match self.done.try_recv() {
            Ok(result) => {
                self.in_flight = false;
                result.map(|()| true)
            }
            Err(TryRecvError::Empty) => Ok(false),
            Err(TryRecvError::Disconnected) => {
                self.in_flight = false;
                Err(self.stopped())
            }
        }
    }

    /// Waits for the commit in flight, if any.
    pub(crate) fn wait(&mut self) -> Result<(), StorageError> {
        if !self.in_flight {
            return Ok(());
        }
        self.in_flight = false;
        match self.done.recv() {
            Ok(result) => result,
            Err(_) => Err(self.stopped()),
        }
    }

    fn stopped(&self) -> StorageError {
        StorageError::io(
            "LMDB state commit",
            &self.dir,
            std::io::Error::other("the commit thread has stopped"),
        )
    }
}

/// Abandons the commit in flight (as a crash would) and waits for the thread to end, so that
/// the environment may be opened again at once.
impl Drop for Committer {
    fn drop(&mut self) {
        self.abandon.store(true, Ordering::Relaxed);
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            // A panic on the thread has been reported already.
            let _ = thread.join();
        }
    }
}

/// One job: the commit, then the sync if asked; logged with how long it took.
fn run(db: &Db, job: &Job, abandon: &AtomicBool) -> Result<(), StorageError> {
    let t0 = Instant::now();
    db.commit(&job.changes, &job.position, abandon)?;
    let committed = t0.elapsed();
    if job.sync {
        db.sync()?;
    }
    let took = t0.elapsed();
    let (changes, sync) = (job.changes.len(), job.sync);
    let (commit_ms, total_ms) = (committed.as_millis() as u64, took.as_millis() as u64);
    if took >= SLOW_COMMIT {
        tracing::info!(changes, sync, commit_ms, total_ms, "slow LMDB state commit");
    } else {
        tracing::debug!(changes, sync, commit_ms, total_ms, "LMDB state commit");
    }
    Ok(())
}
