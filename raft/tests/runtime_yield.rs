//! `Runtime::yield_now` on each runtime: a task that wakes another and then yields lets the
//! woken task run first. The driver's event loop relies on it to gather the requests that
//! arrive together into one `Ready` (one log write, one Append per follower).

use futures::channel::oneshot;
use raftkv_raft::runtime::sim::SimRuntime;
use raftkv_raft::runtime::smol::SmolRuntime;
use raftkv_raft::runtime::tokio::TokioRuntime;
use raftkv_raft::Runtime;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Task B waits for a signal on a channel; task A sends it, yields, then records that it
/// resumed. Returns the order of the two records.
async fn order_after_yield<R: Runtime>(runtime: R) -> Vec<&'static str> {
    let (signal, signalled) = oneshot::channel::<()>();
    let log = Arc::new(Mutex::new(Vec::new()));
    let (finished, done) = oneshot::channel::<()>();
    let b_log = log.clone();
    runtime.spawn(async move {
        let _ = signalled.await;
        b_log.lock().unwrap().push("woken");
    });
    let a_log = log.clone();
    let a_runtime = runtime.clone();
    runtime.spawn(async move {
        // B is waiting by now.
        a_runtime.sleep(Duration::from_millis(20)).await;
        let _ = signal.send(());
        a_runtime.yield_now().await;
        a_log.lock().unwrap().push("resumed");
        // Let B finish if it has not run yet.
        a_runtime.sleep(Duration::from_millis(20)).await;
        let _ = finished.send(());
    });
    let _ = done.await;
    let order = log.lock().unwrap().clone();
    order
}

#[test]
fn tokio_yield_now_lets_the_woken_task_run_first() {
    // One worker, as `raftkv serve` runs by default on a shared machine.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let runtime = TokioRuntime::new(rt.handle().clone());
    assert_eq!(
        rt.block_on(order_after_yield(runtime)),
        ["woken", "resumed"]
    );
}

#[test]
fn tokio_current_thread_yield_now_lets_the_woken_task_run_first() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let runtime = TokioRuntime::new(rt.handle().clone());
    assert_eq!(
        rt.block_on(order_after_yield(runtime)),
        ["woken", "resumed"]
    );
}

#[test]
fn smol_yield_now_lets_the_woken_task_run_first() {
    assert_eq!(
        smol::block_on(order_after_yield(SmolRuntime::new())),
        ["woken", "resumed"]
    );
}

#[test]
fn sim_yield_now_returns_at_a_later_turn() {
    // The simulator picks among ready tasks with its seeded RNG: either order is legal, and
    // both occur over a few seeds.
    let mut seen = std::collections::BTreeSet::new();
    for seed in 0..32 {
        let runtime = SimRuntime::new(seed);
        let order = runtime
            .block_on(order_after_yield(runtime.clone()))
            .expect("no deadlock");
        assert_eq!(order.len(), 2, "seed {seed}: {order:?}");
        seen.insert(order);
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
}
