//! Issue 20 (seen loading 10,000,000 keys into `raftkv serve --state lmdb`): a follower that
//! fell behind a leader under a steady load never caught up. The leader compacted its log
//! every few thousand entries, each compaction passed the snapshot it was sending the follower
//! (a transfer of many chunks), and the transfer started over with a newer one, again and
//! again. The driver now holds compactions back to a snapshot on its way to a follower
//! ([`raftkv_raft::Raft::snapshot_being_sent`]), within a bound.

use bytes::Bytes;
use raftkv_raft::runtime::sim::{SimNet, SimRuntime, SimStorage};
use raftkv_raft::{
    Config, LogId, Membership, Node, NodeConfig, Role, Runtime, Snapshot, StateMachine,
    StorageError,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A state machine that keeps its own state (snapshots on demand) and whose snapshot is 2 KiB:
/// 128 chunks of 16 bytes, many round trips.
struct Durable {
    position: Option<(LogId, Membership)>,
    installs: Arc<AtomicU64>,
}

impl StateMachine for Durable {
    type Response = ();

    fn apply(&mut self, _index: u64, _command: &[u8]) {}

    fn query(&self, _query: &[u8]) {}

    fn snapshot(&self) -> Bytes {
        Bytes::from(vec![b's'; 2048])
    }

    fn restore(&mut self, _data: &[u8]) -> Result<(), String> {
        Ok(())
    }

    fn restore_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), String> {
        self.installs.fetch_add(1, Ordering::Relaxed);
        self.position = Some((snapshot.last, snapshot.membership.clone()));
        Ok(())
    }

    fn applied(&self) -> Result<Option<(LogId, Membership)>, StorageError> {
        Ok(self.position.clone())
    }

    fn applied_to(&mut self, last: LogId, membership: &Membership) -> Result<(), StorageError> {
        self.position = Some((last, membership.clone()));
        Ok(())
    }

    fn make_durable(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(Some(
            self.position
                .as_ref()
                .map_or(LogId::default(), |(at, _)| *at),
        ))
    }
}

fn config(id: u64) -> NodeConfig {
    let mut raft = Config::new(id, 1..=3);
    raft.seed = 11 + id;
    raft.snapshot_chunk_bytes_max = 16;
    let mut config = NodeConfig::new(raft);
    config.snapshot_threshold_entries = 4;
    // A follower a few entries behind gets a snapshot, not the trailing log.
    config.trailing_log_entries = 0;
    config
}

#[test]
fn regression_a_follower_behind_a_leader_under_load_gets_its_snapshot() {
    let rt = SimRuntime::new(20);
    let r2 = rt.clone();
    rt.block_on(async move {
        let rt = r2;
        let net = SimNet::new(&rt);
        let installs: Vec<Arc<AtomicU64>> = (0..3).map(|_| Arc::default()).collect();
        let mut nodes = Vec::new();
        for id in 1..=3u64 {
            let node = Node::start(
                rt.with_group(id),
                config(id),
                SimStorage::new(&rt, (0, 1)),
                net.endpoint(id),
                Durable {
                    position: None,
                    installs: installs[id as usize - 1].clone(),
                },
            )
            .await
            .expect("starts");
            nodes.push(node);
        }
        // n3 is cut off while the others write past several compactions.
        net.partition(&[vec![1, 2], vec![3]]);
        let leader = loop {
            rt.sleep(Duration::from_millis(50)).await;
            let mut found = None;
            for (i, n) in nodes.iter().take(2).enumerate() {
                if n.status().await.is_ok_and(|s| s.role == Role::Leader) {
                    found = Some(i);
                }
            }
            if let Some(i) = found {
                break i;
            }
        };
        for i in 0..40u64 {
            nodes[leader]
                .propose(Bytes::from(i.to_le_bytes().to_vec()))
                .await
                .expect("a majority is up");
        }
        // Healed, n3 needs the snapshot (128 chunks) while the leader goes on writing and
        // would compact every 4 entries.
        net.heal();
        let (end, mut written) = (rt.now() + Duration::from_secs(3), 40u64);
        while rt.now() < end && installs[2].load(Ordering::Relaxed) == 0 {
            nodes[leader]
                .propose(Bytes::from(written.to_le_bytes().to_vec()))
                .await
                .expect("a majority is up");
            written += 1;
        }
        assert!(
            installs[2].load(Ordering::Relaxed) >= 1,
            "n3 never installed the leader's snapshot while {written} entries were written"
        );
        let status = nodes[leader].status().await.unwrap();
        assert!(
            status.snapshot_index > 4,
            "the leader compacted: {status:?}"
        );
    })
    .expect("the test ran to its end");
}
