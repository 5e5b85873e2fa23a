//! Issue 21 #7: a snapshot from the leader that the follower's state machine cannot read is
//! refused before it is stored. It used to be persisted first and restored after, so the
//! node failed on it again at every restart (bricked until its data was wiped).

use bytes::Bytes;
use raftkv_raft::runtime::sim::{SimNet, SimRuntime, SimStorage};
use raftkv_raft::{Config, Node, NodeConfig, NodeError, Role, Runtime, StateMachine};
use std::time::Duration;

/// A state machine whose snapshot is unreadable (to every node) once it applied `poison`.
#[derive(Default)]
struct Picky {
    applied: Vec<Bytes>,
}

impl StateMachine for Picky {
    type Response = ();

    fn apply(&mut self, _index: u64, command: &[u8]) {
        self.applied.push(Bytes::copy_from_slice(command));
    }

    fn query(&self, _query: &[u8]) {}

    fn snapshot(&self) -> Bytes {
        let poisoned = self.applied.iter().any(|c| &c[..] == b"poison");
        let mut out = match poisoned {
            true => b"bad!".to_vec(),
            false => b"good".to_vec(),
        };
        for c in &self.applied {
            out.push(c.len() as u8);
            out.extend_from_slice(c);
        }
        Bytes::from(out)
    }

    fn restore(&mut self, data: &[u8]) -> Result<(), String> {
        let Some(mut rest) = data.strip_prefix(b"good") else {
            return Err("not a snapshot of this state machine".into());
        };
        let mut applied = Vec::new();
        while let Some((&len, tail)) = rest.split_first() {
            let c = tail.get(..len as usize).ok_or("truncated snapshot")?;
            applied.push(Bytes::copy_from_slice(c));
            rest = &tail[len as usize..];
        }
        self.applied = applied;
        Ok(())
    }
}

fn config(id: u64) -> NodeConfig {
    let mut raft = Config::new(id, 1..=3);
    raft.seed = 7 + id;
    raft.snapshot_chunk_bytes_max = 16;
    let mut config = NodeConfig::new(raft);
    config.snapshot_threshold_entries = 4;
    // A follower a few entries behind gets a snapshot, not the trailing log.
    config.trailing_log_entries = 0;
    config
}

#[test]
fn a_snapshot_the_state_machine_refuses_is_not_stored_and_the_node_restarts() {
    let rt = SimRuntime::new(21);
    let r2 = rt.clone();
    rt.block_on(async move {
        let rt = r2;
        let net = SimNet::new(&rt);
        let storages: Vec<SimStorage> = (0..3).map(|_| SimStorage::new(&rt, (0, 2))).collect();
        let mut nodes = Vec::new();
        for id in 1..=3u64 {
            let node = Node::start(
                rt.with_group(id),
                config(id),
                storages[id as usize - 1].clone(),
                net.endpoint(id),
                Picky::default(),
            )
            .await
            .expect("starts");
            nodes.push(node);
        }
        // n3 is cut off while the others write past a snapshot (and compact their logs).
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
        for c in ["a", "b", "poison", "c", "d", "e", "f", "g"] {
            nodes[leader]
                .propose(Bytes::from_static(c.as_bytes()))
                .await
                .expect("a majority is up");
        }
        rt.sleep(Duration::from_millis(200)).await;
        let status = nodes[leader].status().await.unwrap();
        assert!(
            status.snapshot_index >= 4,
            "the leader snapshotted: {status:?}"
        );
        assert!(storages[2].durable().snapshot.is_none());
        let hard_state = storages[2].durable().hard_state;

        // Healed, the leader sends n3 its (unreadable) snapshot: n3 stops without storing it.
        net.heal();
        let stopped = async {
            for _ in 0..100 {
                rt.sleep(Duration::from_millis(50)).await;
                if let Err(e) = nodes[2].status().await {
                    return Some(e);
                }
            }
            None
        };
        let error = stopped
            .await
            .expect("n3 stops on the snapshot it cannot read");
        assert_eq!(error, NodeError::Shutdown);
        rt.sleep(Duration::from_millis(100)).await;
        let durable = storages[2].durable();
        assert!(
            durable.snapshot.is_none(),
            "the refused snapshot was stored"
        );
        assert_eq!(durable.hard_state.commit, hard_state.commit);

        // Restarted, n3 starts from what it held (it would fail at once on a stored snapshot).
        rt.kill_group(3);
        let restarted = Node::start(
            rt.with_group(30),
            config(3),
            storages[2].clone(),
            net.endpoint(3),
            Picky::default(),
        )
        .await;
        assert!(
            restarted.is_ok(),
            "n3 cannot restart: {:?}",
            restarted.err()
        );
    })
    .expect("the test ran to its end");
}
