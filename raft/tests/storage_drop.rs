//! Issue 21 #14: a Clerk call once outlived its deadline (smol, LMDB). Root cause: a stopped
//! node's storage task dropped its storage on the executor thread, and closing an
//! `LmdbStorage` blocks (it joins its WAL and checkpoint threads, which finish their last
//! checkpoint and fsync); smol's global executor has one thread, so every task there, timers
//! included, stalled for as long. The driver now drops storage with `Runtime::spawn_blocking`.
//! These tests stop a node whose storage takes 600 ms to drop and check that a ticking task on
//! the same executor never stalls, under smol and under a one-worker tokio.

use bytes::Bytes;
use raftkv_raft::runtime::smol::SmolRuntime;
use raftkv_raft::runtime::tokio::TokioRuntime;
use raftkv_raft::storage::MemStorage;
use raftkv_raft::{
    Config, Index, Message, Node, NodeConfig, Persisted, Runtime, StateMachine, Storage,
    StorageError, Transport, WriteOp,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const DROP_TAKES: Duration = Duration::from_millis(600);
/// A ticker's 10 ms sleeps may end this late on a loaded machine, not a whole drop later.
const GAP_MAX: Duration = Duration::from_millis(300);

/// Memory storage whose drop blocks like closing LMDB does.
struct SlowToClose {
    inner: MemStorage,
    dropped: Arc<AtomicBool>,
}

impl Storage for SlowToClose {
    async fn load(&self) -> Result<Persisted, StorageError> {
        self.inner.load().await
    }

    async fn write(&self, ops: Vec<WriteOp>) -> Result<(), StorageError> {
        self.inner.write(ops).await
    }
}

impl Drop for SlowToClose {
    fn drop(&mut self) {
        std::thread::sleep(DROP_TAKES);
        self.dropped.store(true, Ordering::SeqCst);
    }
}

/// Counts applied commands.
struct Count(u64);

impl StateMachine for Count {
    type Response = u64;

    fn apply(&mut self, _index: Index, _command: &[u8]) -> u64 {
        self.0 += 1;
        self.0
    }

    fn query(&self, _query: &[u8]) -> u64 {
        self.0
    }

    fn snapshot(&self) -> Bytes {
        Bytes::copy_from_slice(&self.0.to_le_bytes())
    }

    fn restore(&mut self, data: &[u8]) -> Result<(), String> {
        let bytes: [u8; 8] = data.try_into().map_err(|_| "not 8 bytes".to_string())?;
        self.0 = u64::from_le_bytes(bytes);
        Ok(())
    }
}

/// A one-node cluster needs no network.
struct NoPeers;

impl Transport for NoPeers {
    fn send(&mut self, _msg: Message) {}

    async fn recv(&mut self) -> Option<Message> {
        std::future::pending().await
    }
}

/// Starts a one-node cluster, writes once, stops it, and returns the longest gap a 10 ms
/// ticker on the same runtime saw meanwhile, and whether the storage was dropped at all.
async fn longest_gap_while_stopping<R: Runtime>(runtime: R) -> (Duration, bool) {
    let dropped = Arc::new(AtomicBool::new(false));
    let storage = SlowToClose {
        inner: MemStorage::new(),
        dropped: dropped.clone(),
    };
    let mut config = NodeConfig::new(Config::new(1, [1]));
    config.tick = Duration::from_millis(1);
    let node = Node::start(runtime.clone(), config, storage, NoPeers, Count(0))
        .await
        .expect("start");
    // The single node elects itself and commits.
    let mut committed = false;
    for _ in 0..200 {
        if node.propose(Bytes::from_static(b"x")).await.is_ok() {
            committed = true;
            break;
        }
        runtime.sleep(Duration::from_millis(10)).await;
    }
    assert!(committed, "a one-node cluster did not commit");

    let stop = Arc::new(AtomicBool::new(false));
    let (gap_tx, gap_rx) = futures::channel::oneshot::channel();
    let ticker_runtime = runtime.clone();
    let ticker_stop = stop.clone();
    runtime.spawn(async move {
        let mut longest = Duration::ZERO;
        let mut last = Instant::now();
        while !ticker_stop.load(Ordering::SeqCst) {
            ticker_runtime.sleep(Duration::from_millis(10)).await;
            longest = longest.max(last.elapsed());
            last = Instant::now();
        }
        let _ = gap_tx.send(longest);
    });
    node.shutdown().await;
    drop(node);
    // Long enough for the drop to finish wherever it runs.
    runtime.sleep(DROP_TAKES + Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let longest = gap_rx.await.expect("ticker");
    (longest, dropped.load(Ordering::SeqCst))
}

fn check((longest, dropped): (Duration, bool)) {
    assert!(dropped, "the storage was never dropped");
    assert!(
        longest < GAP_MAX,
        "the executor stalled for {longest:?} while the storage closed"
    );
}

#[test]
fn regression_dropping_storage_does_not_stall_the_smol_executor() {
    // The global executor's single thread runs the node, the ticker and the drop's caller.
    check(smol::block_on(smol::spawn(longest_gap_while_stopping(
        SmolRuntime::new(),
    ))));
}

#[test]
fn regression_dropping_storage_does_not_stall_a_one_worker_tokio() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let runtime = TokioRuntime::new(rt.handle().clone());
    let out = rt.block_on(rt.spawn(longest_gap_while_stopping(runtime)));
    check(out.expect("join"));
}
