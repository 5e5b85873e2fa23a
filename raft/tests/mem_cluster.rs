//! A cluster in one process from the library's own pieces (issue 20): `MemNetwork`,
//! `MemStorage`, `NoopStateMachine`, under tokio with several worker threads.

use bytes::Bytes;
use raftkv_raft::mem::{MemNetwork, NoopStateMachine};
use raftkv_raft::runtime::tokio::TokioRuntime;
use raftkv_raft::storage::MemStorage;
use raftkv_raft::{Config, Node, NodeConfig, NodeError};
use std::time::Duration;

type MemNode = Node<TokioRuntime, NoopStateMachine>;

async fn start(network: &MemNetwork, storages: &[MemStorage]) -> Vec<MemNode> {
    let mut nodes = Vec::new();
    for id in 1..=3u64 {
        let config = NodeConfig::new(Config::new(id, [1, 2, 3]));
        let node = Node::start(
            TokioRuntime::current(),
            config,
            storages[id as usize - 1].clone(),
            network.transport(id),
            NoopStateMachine,
        )
        .await
        .expect("starts");
        nodes.push(node);
    }
    nodes
}

#[test]
fn a_mem_network_cluster_commits_concurrent_proposals_and_survives_a_leader_restart() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let network = MemNetwork::new();
        let storages: Vec<MemStorage> = (0..3).map(|_| MemStorage::new()).collect();
        let mut nodes = start(&network, &storages).await;
        let wait = Duration::from_secs(10);
        let l = nodes[0].wait_for_leader(wait).await.expect("a leader");
        let leader = nodes[l as usize - 1].clone();
        let calls: Vec<_> = (0..200)
            .map(|i| {
                let n = leader.clone();
                tokio::spawn(async move { n.propose(Bytes::from(format!("c{i}"))).await })
            })
            .collect();
        for c in calls {
            c.await.unwrap().expect("committed");
        }
        // The leader stops; the others elect another, which commits.
        leader.shutdown().await;
        let other = nodes[l as usize % 3].clone();
        let deadline = tokio::time::Instant::now() + wait;
        let next = loop {
            match other.wait_for_leader(wait).await {
                Ok(n) if n != l => break n,
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
            assert!(tokio::time::Instant::now() < deadline, "no new leader");
        };
        let new_leader = nodes[next as usize - 1].clone();
        assert_eq!(
            new_leader.propose(Bytes::from_static(b"after")).await,
            Ok(())
        );
        // Restarted from its storage on a new transport of the same id, the old leader catches
        // up with what was committed without it.
        let config = NodeConfig::new(Config::new(l, [1, 2, 3]));
        let restarted = Node::start(
            TokioRuntime::current(),
            config,
            storages[l as usize - 1].clone(),
            network.transport(l),
            NoopStateMachine,
        )
        .await
        .expect("restarts");
        nodes[l as usize - 1] = restarted.clone();
        let committed = new_leader.status().await.unwrap().commit_index;
        let deadline = tokio::time::Instant::now() + wait;
        while restarted.status().await.unwrap().applied_index < committed {
            assert!(tokio::time::Instant::now() < deadline, "no catch-up");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            leader.propose(Bytes::new()).await,
            Err(NodeError::Shutdown),
            "the stopped handle stays stopped"
        );
        for n in &nodes {
            n.shutdown().await;
        }
    });
}
