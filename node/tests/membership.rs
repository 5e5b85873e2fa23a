//! Membership changes on a LocalCluster over real TCP, under load, each history checked
//! linearizable and every acknowledged append present exactly once: grow 3 → 5 → 3, remove
//! the leader, add a node that can only catch up from a snapshot, 20 leader transfers, and
//! the membership operations of the client protocol (member list/add/promote/remove, move
//! leader, a change refused while another is in progress).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use raftkv_checker::{CheckOptions, Verdict};
use raftkv_kv::clerk::{CallError, ClerkConfig, ClerkError, LostReason};
use raftkv_kv::history::History;
use raftkv_kv::protocol::{MemberOp, RefusalKind, Reply, RequestBody};
use raftkv_node::cluster::{ClusterConfig, LocalCluster, Members, StorageKind};
use raftkv_raft::runtime::tokio::TokioRuntime;
use raftkv_raft::{NetRuntime, Role, Runtime};

const T: Duration = Duration::from_secs(20);

fn on_tokio<F: std::future::Future<Output = ()> + Send + 'static>(
    test: impl FnOnce(TokioRuntime) -> F,
) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let handle = rt.handle().clone();
    rt.block_on(async move { test(TokioRuntime::new(handle)).await });
}

async fn cluster(
    rt: TokioRuntime,
    storage: StorageKind,
    snapshot: Option<u64>,
) -> LocalCluster<TokioRuntime> {
    let mut config = ClusterConfig::new(3, storage);
    config.snapshot_threshold = snapshot;
    let c = LocalCluster::start(rt, config).await.unwrap();
    c.wait_leader(Duration::from_secs(10)).await.unwrap();
    c
}

fn clerk_config() -> ClerkConfig {
    ClerkConfig {
        timeout: T,
        ..ClerkConfig::default()
    }
}

/// `clients` Clerks appending to their own key until stopped; `finish` stops them and checks
/// that each one's acknowledged appends are there exactly once, in order, and that the
/// history is linearizable.
struct Load {
    history: History,
    stop: Arc<AtomicBool>,
    done: futures::channel::mpsc::UnboundedReceiver<(usize, Vec<String>, String)>,
    clients: usize,
}

impl Load {
    fn start<R: NetRuntime>(cluster: &LocalCluster<R>, clients: usize) -> Self {
        let history = History::new();
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, done) = futures::channel::mpsc::unbounded();
        for c in 0..clients {
            let mut clerk = cluster.clerk(clerk_config()).with_history(history.clone());
            let (stop, tx) = (stop.clone(), tx.clone());
            cluster.runtime().spawn(async move {
                let mut acked = Vec::new();
                let mut j = 0;
                while !stop.load(Ordering::SeqCst) {
                    let v = format!("c{c}x{j} ");
                    match clerk.append(format!("k{c}"), v.clone()).await {
                        Ok(_) => acked.push(v),
                        Err(e) => panic!("client {c}: append failed: {e}"),
                    }
                    if j % 4 == 0 {
                        let _ = clerk.get(format!("k{c}")).await.unwrap();
                    }
                    j += 1;
                }
                let (value, _) = clerk.get(format!("k{c}")).await.unwrap();
                let _ = tx.unbounded_send((c, acked, String::from_utf8(value.to_vec()).unwrap()));
            });
        }
        Self {
            history,
            stop,
            done,
            clients,
        }
    }

    async fn finish(self, what: &str) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        let results: Vec<_> = self.done.collect().await;
        assert_eq!(results.len(), self.clients, "{what}: every client finished");
        let mut total = 0;
        for (c, acked, value) in results {
            assert_eq!(value, acked.concat(), "{what}: client {c}'s appends");
            total += acked.len();
        }
        let result = self.history.check(&CheckOptions {
            timeout: Some(Duration::from_secs(60)),
            ..CheckOptions::default()
        });
        if result.verdict != Verdict::Ok {
            let path = std::env::temp_dir().join(format!("raftkv-{what}.json"));
            std::fs::write(&path, self.history.to_json()).unwrap();
            panic!(
                "{what}: history is {:?}, written to {}",
                result.verdict,
                path.display()
            );
        }
        total
    }
}

async fn pause<R: Runtime>(rt: &R, ms: u64) {
    rt.sleep(Duration::from_millis(ms)).await;
}

#[test]
fn grow_3_to_5_and_shrink_back_to_3_under_load() {
    on_tokio(|rt| async move {
        let mut c = cluster(rt.clone(), StorageKind::Lmdb, None).await;
        let load = Load::start(&c, 3);
        pause(&rt, 300).await;
        let a = c.add_node(false, T).await.unwrap();
        pause(&rt, 200).await;
        let b = c.add_node(false, T).await.unwrap();
        assert_eq!((a, b), (3, 4), "indexes are handed out in order");
        assert_eq!(
            c.members().await.unwrap(),
            Members {
                voters: vec![0, 1, 2, 3, 4],
                learners: vec![]
            }
        );
        // The new nodes serve like any other: a status, and the log.
        let s = c.status(4).await.unwrap();
        assert!(
            s.applied_index > 0 && s.membership.voters().len() == 5,
            "{s:?}"
        );
        pause(&rt, 300).await;
        c.remove_node(0, T).await.unwrap();
        pause(&rt, 200).await;
        c.remove_node(1, T).await.unwrap();
        assert!(c.is_removed(0) && c.is_removed(1) && !c.is_running(0));
        assert_eq!(c.members().await.unwrap().voters, vec![2, 3, 4]);
        assert!(matches!(
            c.restart(0).await,
            Err(raftkv_node::cluster::ClusterError::Removed { index: 0 })
        ));
        pause(&rt, 300).await;
        let acked = load.finish("grow_3_5_3").await;
        assert!(acked > 20, "only {acked} appends");
        c.close().await;
    });
}

#[test]
fn remove_the_leader_under_load() {
    on_tokio(|rt| async move {
        let mut c = cluster(rt.clone(), StorageKind::Memory, None).await;
        let load = Load::start(&c, 2);
        pause(&rt, 300).await;
        let leader = c.wait_leader(T).await.unwrap();
        c.remove_node(leader, T).await.unwrap();
        let members = c.members().await.unwrap();
        assert_eq!(members.voters.len(), 2, "{members:?}");
        assert!(!members.voters.contains(&leader));
        let new = c.wait_leader(T).await.unwrap();
        assert_ne!(new, leader);
        pause(&rt, 300).await;
        // Two voters left: removing the leader again still works.
        c.remove_node(new, T).await.unwrap();
        assert_eq!(c.members().await.unwrap().voters.len(), 1);
        pause(&rt, 300).await;
        load.finish("remove_leader").await;
        c.close().await;
    });
}

#[test]
fn a_node_added_after_compaction_catches_up_from_a_snapshot() {
    on_tokio(|rt| async move {
        let mut c = cluster(rt.clone(), StorageKind::Lmdb, Some(50)).await;
        let mut clerk = c.clerk(clerk_config());
        for k in 0..300 {
            clerk
                .put(format!("key{k}"), format!("v{k}"), None)
                .await
                .unwrap();
        }
        let leader = c.wait_leader(T).await.unwrap();
        let s = c.status(leader).await.unwrap();
        assert!(s.first_index > 1, "the leader compacted its log: {s:?}");
        let load = Load::start(&c, 2);
        let i = c.add_node(false, T).await.unwrap();
        let s = c.status(i).await.unwrap();
        assert!(
            s.snapshot_index > 0,
            "the new node installed a snapshot: {s:?}"
        );
        // It has the data: make it lead and read through it.
        c.transfer_leader(i, T).await.unwrap();
        for k in [0, 150, 299] {
            let (v, _) = clerk.get(format!("key{k}")).await.unwrap();
            assert_eq!(v, format!("v{k}").as_bytes());
        }
        load.finish("snapshot_join").await;
        c.close().await;
    });
}

#[test]
fn twenty_leader_transfers_with_writes_in_between() {
    on_tokio(|rt| async move {
        let mut c = cluster(rt.clone(), StorageKind::Memory, None).await;
        let load = Load::start(&c, 2);
        let mut clerk = c.clerk(clerk_config());
        for n in 0..20 {
            let leader = c.wait_leader(T).await.unwrap();
            let target = (leader + 1 + n % 2) % 3;
            c.transfer_leader(target, T).await.unwrap();
            let s = c.status(target).await.unwrap();
            assert_eq!(s.role, Role::Leader, "transfer {n}");
            clerk.put("t", format!("{n}"), None).await.unwrap();
        }
        assert_eq!(clerk.get("t").await.unwrap().0, "19".as_bytes());
        load.finish("transfer_leader_x20").await;
        c.close().await;
    });
}

#[test]
fn clerk_membership_operations() {
    on_tokio(|rt| async move {
        let mut c = cluster(rt.clone(), StorageKind::Memory, None).await;
        // A Clerk that knows one node only: it learns the others from the member list.
        let addrs = c.addrs();
        let mut clerk = raftkv_kv::clerk::Clerk::new(
            rt.clone(),
            raftkv_node::tcp_client::TcpConnector::with_runtime(rt.clone()),
            vec![addrs[2].clone()],
            clerk_config(),
        );
        let list = clerk.member_list().await.unwrap();
        assert_eq!(list.members.len(), 3);
        assert!(list.leader.is_some());
        for (m, addr) in list.members.iter().zip(&addrs) {
            assert_eq!(&m.client_addr, addr, "{list:?}");
            assert!(!m.learner && !m.peer_addr.is_empty());
        }
        assert_eq!(clerk.addrs().len(), 3, "learned every member's address");

        // Leadership moves on request.
        let target = list
            .members
            .iter()
            .map(|m| m.id)
            .find(|&id| Some(id) != list.leader)
            .unwrap();
        let moved = clerk.move_leader(target).await.unwrap();
        assert_eq!(moved.leader, Some(target));
        assert_eq!(c.leader().await, Some(target as usize - 1));

        // A node the cluster adds through a Clerk (as `raftkv serve --join` does): started by
        // the LocalCluster as a learner that stays one, then promoted and removed by the Clerk.
        let i = c.add_node(true, T).await.unwrap();
        let id = i as u64 + 1;
        let list = clerk.member_list().await.unwrap();
        assert!(
            list.members.iter().any(|m| m.id == id && m.learner),
            "{list:?}"
        );
        let list = clerk.member_promote(id).await.unwrap();
        assert!(
            list.members.iter().any(|m| m.id == id && !m.learner),
            "{list:?}"
        );
        assert_eq!(c.members().await.unwrap().voters, vec![0, 1, 2, i]);
        // Refusals are typed and say why.
        match clerk.member_promote(77).await {
            Err(ClerkError::Membership {
                kind: RefusalKind::Invalid,
                message,
            }) => {
                assert!(message.contains("77"), "{message}")
            }
            other => panic!("promote of a stranger: {other:?}"),
        }
        match clerk.move_leader(99).await {
            Err(ClerkError::Membership {
                kind: RefusalKind::Invalid,
                ..
            }) => {}
            other => panic!("move to a stranger: {other:?}"),
        }
        let list = clerk.member_remove(id).await.unwrap();
        assert!(list.members.iter().all(|m| m.id != id));
        // A learner added through the Clerk with addresses of a node that is not running:
        // it is in the configuration at once, and never stalls commits.
        let list = clerk
            .member_add(50, "127.0.0.1:9", "127.0.0.1:9", true)
            .await
            .unwrap();
        assert!(list.members.iter().any(|m| m.id == 50 && m.learner));
        // Retried with the same addresses: done, not refused.
        clerk
            .member_add(50, "127.0.0.1:9", "127.0.0.1:9", true)
            .await
            .unwrap();
        clerk.put("k", "v", None).await.unwrap();
        // A bad address is refused before anything is proposed.
        let long = "x".repeat(300);
        assert!(matches!(
            clerk.member_add(51, &long, "", false).await,
            Err(ClerkError::Membership {
                kind: RefusalKind::Invalid,
                ..
            })
        ));
        clerk.member_remove(50).await.unwrap();
        c.close().await;
    });
}

/// The Clerk retries an `InProgress` refusal (with backoff) until its timeout, then reports
/// it: here the first change can never commit, so the second Clerk's 2 s run out.
#[test]
fn a_change_while_another_is_in_progress_is_refused_with_in_progress() {
    on_tokio(|rt| async move {
        let mut c = cluster(rt.clone(), StorageKind::Memory, None).await;
        let leader = c.wait_leader(T).await.unwrap();
        let mut clerk = c.clerk(clerk_config());
        clerk.put("warm", "up", None).await.unwrap();
        // The leader alone cannot commit: its first change stays pending...
        c.isolate(leader).unwrap();
        let leader_addr = c.addrs()[leader].clone();
        let one_server = |addr: String| {
            raftkv_kv::clerk::Clerk::new(
                rt.clone(),
                raftkv_node::tcp_client::TcpConnector::with_runtime(rt.clone()),
                vec![addr],
                ClerkConfig {
                    timeout: Duration::from_secs(2),
                    follow_hints: false,
                    ..ClerkConfig::default()
                },
            )
        };
        let mut first = one_server(leader_addr.clone());
        let (tx, pending) = futures::channel::oneshot::channel();
        rt.spawn(async move {
            let _ = tx.send(
                first
                    .member_add(60, "127.0.0.1:9", "127.0.0.1:9", true)
                    .await,
            );
        });
        pause(&rt, 60).await;
        // ...and a second one is refused with InProgress.
        let mut second = one_server(leader_addr);
        let started = std::time::Instant::now();
        match second
            .member_add(61, "127.0.0.1:9", "127.0.0.1:9", true)
            .await
        {
            Err(ClerkError::Membership {
                kind: RefusalKind::InProgress,
                message,
            }) => {
                assert!(message.contains("in progress"), "{message}")
            }
            other => panic!("second change: {other:?}"),
        }
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(1500),
            "not retried: {waited:?}"
        );
        c.heal();
        let _ = pending.await;
        c.close().await;
    });
}

/// Regression (issue 16, found measuring BENCHMARKS.md's membership figures): on LMDB with a
/// writer running, after a few rounds of "add a node, move leadership, remove the old leader",
/// the first transfer attempt failed, and the old leader was re-elected. The cause was in the
/// TCP transport: a joining node dials the members it was started with before they have the
/// configuration that adds it, so they refuse those connections; its writers did not notice
/// (nothing is read on a one-way connection) and the first message each sent later went into
/// the closed socket. Followers never talk to each other, so that first message was the
/// transfer target's vote request or a voter's answer to it: the target got too few votes,
/// and the old leader timed out first and won the next election. A writer now watches its
/// socket and redials at once (see also `transport-tcp/tests/set_peers.rs`).
#[test]
fn transfers_after_repeated_add_and_remove_succeed_at_the_first_attempt() {
    on_tokio(|rt| async move {
        let mut c = cluster(rt.clone(), StorageKind::Lmdb, None).await;
        let mut writer = c.clerk(clerk_config());
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        rt.spawn(async move {
            let mut n = 0u64;
            while !s.load(Ordering::SeqCst) {
                n += 1;
                let _ = writer.put("w", n.to_string(), None).await;
            }
        });
        for round in 0..4 {
            c.add_node(false, T).await.unwrap();
            pause(&rt, 300).await;
            let leader = c.wait_leader(T).await.unwrap();
            let voters = c.members().await.unwrap().voters;
            let target = *voters.iter().find(|&&v| v != leader).unwrap();
            let first = c
                .node(leader)
                .unwrap()
                .transfer_leader(target as u64 + 1)
                .await;
            let status = c.status(leader).await.unwrap();
            assert!(
                first.is_ok(),
                "round {round}: transfer {leader} -> {target}: {first:?}; leader's followers: {:?}",
                status.followers
            );
            c.remove_node(leader, T).await.unwrap();
        }
        stop.store(true, Ordering::SeqCst);
        c.close().await;
    });
}

/// Carries out every call, but loses the first answer that a membership removal was done (as
/// if the connection closed just after the server sent it).
struct LoseFirstRemoveAnswer {
    inner: raftkv_node::tcp_client::TcpConnector<TokioRuntime>,
    lost: Arc<AtomicBool>,
}

impl raftkv_kv::clerk::Connector for LoseFirstRemoveAnswer {
    fn call(
        &self,
        addr: &str,
        body: RequestBody,
    ) -> impl std::future::Future<Output = Result<Reply, CallError>> + Send {
        let remove = matches!(body, RequestBody::Member(MemberOp::Remove { .. }));
        let call = self.inner.call(addr, body);
        let addr = addr.to_string();
        let lost = self.lost.clone();
        async move {
            let reply = call.await;
            if remove
                && matches!(reply, Ok(Reply::Members(_)))
                && !lost.swap(true, Ordering::SeqCst)
            {
                return Err(CallError::Lost {
                    addr,
                    reason: LostReason::ConnectionClosed,
                });
            }
            reply
        }
    }
}

/// Regression (issue 16): a `member_remove` whose answer was lost was retried, and the retry
/// was refused with "node N is not a member" although the first attempt had removed it. The
/// Clerk now reports its own retried removal as done; a removal of a node that was never a
/// member is still refused.
#[test]
fn member_remove_retried_after_a_lost_answer_reports_success() {
    on_tokio(|rt| async move {
        let mut c = cluster(rt.clone(), StorageKind::Memory, None).await;
        let added = c.add_node(true, T).await.unwrap();
        let id = added as u64 + 1;
        let lost = Arc::new(AtomicBool::new(false));
        let mut clerk = raftkv_kv::clerk::Clerk::new(
            rt.clone(),
            LoseFirstRemoveAnswer {
                inner: raftkv_node::tcp_client::TcpConnector::with_runtime(rt.clone()),
                lost: lost.clone(),
            },
            c.addrs(),
            clerk_config(),
        );
        let list = clerk.member_remove(id).await.unwrap();
        assert!(lost.load(Ordering::SeqCst), "the first answer was not lost");
        assert!(list.members.iter().all(|m| m.id != id), "{list:?}");
        assert!(!c.members().await.unwrap().learners.contains(&added));
        // Not a member, and no attempt lost: refused, saying so.
        match clerk.member_remove(42).await {
            Err(ClerkError::Membership {
                kind: RefusalKind::Invalid,
                message,
            }) => assert!(message.contains("not a member"), "{message}"),
            other => panic!("removing a non-member: {other:?}"),
        }
        c.close().await;
    });
}

/// A node removed while its process keeps running says so in the status it serves to clients
/// (issue 16: "a node that learns it was removed ... says so in its status").
#[test]
fn a_removed_node_that_keeps_running_says_so_in_its_status() {
    on_tokio(|rt| async move {
        let mut c = cluster(rt.clone(), StorageKind::Memory, None).await;
        let added = c.add_node(false, T).await.unwrap();
        let clerk_addr = c.addrs()[added].clone();
        let mut clerk = c.clerk(clerk_config());
        let before = clerk.server_status(&clerk_addr).await.unwrap();
        assert!(!before.removed, "{before:?}");
        clerk.member_remove(added as u64 + 1).await.unwrap();
        let deadline = std::time::Instant::now() + T;
        loop {
            let s = clerk.server_status(&clerk_addr).await.unwrap();
            if s.removed {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "never reported removed: {s:?}"
            );
            pause(&rt, 20).await;
        }
        c.close().await;
    });
}
