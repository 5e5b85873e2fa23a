//! The same 3-node cluster test under tokio and under smol, over TCP and LMDB: elect, commit,
//! crash a follower and catch it up by log, crash the leader, keep committing past a snapshot,
//! restart it and catch it up by snapshot; every node ends with the same state.

use bytes::Bytes;
use raftkv_raft::{Config, NetRuntime, Node, NodeConfig, Role, StateMachine};
use raftkv_storage_lmdb::{LmdbOptions, LmdbStorage};
use raftkv_transport_tcp::{TcpConfig, TcpTransport};
use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Appends every command to a list; the list is the state (and the snapshot).
#[derive(Default)]
struct ListSm {
    items: Arc<Mutex<Vec<Bytes>>>,
}

impl StateMachine for ListSm {
    type Response = usize;

    fn apply(&mut self, _index: u64, command: &[u8]) -> usize {
        let mut items = self.items.lock().unwrap();
        items.push(Bytes::copy_from_slice(command));
        items.len()
    }

    fn query(&self, _query: &[u8]) -> usize {
        self.items.lock().unwrap().len()
    }

    fn snapshot(&self) -> Bytes {
        let items = self.items.lock().unwrap();
        let mut out = Vec::new();
        for i in items.iter() {
            out.extend_from_slice(&(i.len() as u32).to_le_bytes());
            out.extend_from_slice(i);
        }
        Bytes::from(out)
    }

    fn restore(&mut self, mut data: &[u8]) -> Result<(), String> {
        let mut items = Vec::new();
        while !data.is_empty() {
            let len = u32::from_le_bytes(data.get(..4).ok_or("short")?.try_into().unwrap());
            let item = data.get(4..4 + len as usize).ok_or("short")?;
            items.push(Bytes::copy_from_slice(item));
            data = &data[4 + len as usize..];
        }
        *self.items.lock().unwrap() = items;
        Ok(())
    }
}

struct Cluster<R: NetRuntime> {
    rt: R,
    dir: PathBuf,
    addrs: BTreeMap<u64, SocketAddr>,
    nodes: BTreeMap<u64, Node<R, ListSm>>,
    states: BTreeMap<u64, Arc<Mutex<Vec<Bytes>>>>,
}

impl<R: NetRuntime> Cluster<R> {
    fn new(rt: R, dir: &Path) -> (Self, Vec<TcpListener>) {
        let listeners: Vec<TcpListener> = (0..3)
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let addrs = (1..=3u64)
            .zip(&listeners)
            .map(|(id, l)| (id, l.local_addr().unwrap()))
            .collect();
        let cluster = Self {
            rt,
            dir: dir.to_path_buf(),
            addrs,
            nodes: BTreeMap::new(),
            states: BTreeMap::new(),
        };
        (cluster, listeners)
    }

    async fn start(&mut self, id: u64, listener: TcpListener) {
        let peers = self
            .addrs
            .iter()
            .filter(|(p, _)| **p != id)
            .map(|(p, a)| (*p, *a))
            .collect();
        let tcp = TcpConfig::new(id, 7, self.addrs[&id], peers);
        let transport =
            TcpTransport::start_on(self.rt.clone(), tcp, listener).expect("transport starts");
        let storage = LmdbStorage::open(&self.dir.join(format!("n{id}")), LmdbOptions::default())
            .expect("storage opens");
        let mut config = NodeConfig::new(Config::new(id, [1, 2, 3]));
        config.snapshot_threshold_entries = 50;
        // The old leader must catch up by snapshot below: with the default trailing log
        // (5,000 entries) the leader keeps the whole log of this short run.
        config.trailing_log_entries = 0;
        let sm = ListSm::default();
        self.states.insert(id, sm.items.clone());
        let node = Node::start(self.rt.clone(), config, storage, transport, sm)
            .await
            .expect("node starts");
        self.nodes.insert(id, node);
    }

    async fn restart(&mut self, id: u64) {
        // The old listener is closed: bind the same address again.
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(self.addrs[&id]) {
                Ok(l) => break l,
                Err(e) if tries < 100 => {
                    tries += 1;
                    let _ = e;
                    self.rt.sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("cannot rebind n{id}: {e}"),
            }
        };
        self.start(id, listener).await;
    }

    async fn crash(&mut self, id: u64) {
        let node = self.nodes.remove(&id).expect("running");
        node.shutdown().await;
        // Give its tasks a moment to end and release the port and the LMDB environment.
        self.rt.sleep(Duration::from_millis(200)).await;
    }

    async fn leader(&self) -> u64 {
        for _ in 0..200 {
            for (id, node) in &self.nodes {
                if let Ok(s) = node.status().await {
                    if s.role == Role::Leader {
                        return *id;
                    }
                }
            }
            self.rt.sleep(Duration::from_millis(50)).await;
        }
        panic!("no leader within 10 s");
    }

    async fn commit(&self, count: usize, tag: &str) {
        let mut done = 0;
        while done < count {
            let leader = self.leader().await;
            let cmd = Bytes::from(format!("{tag}-{done}"));
            if self.nodes[&leader].propose(cmd).await.is_ok() {
                done += 1;
            }
        }
    }

    /// Waits until node `id` has applied as much as the leader has.
    async fn caught_up(&self, id: u64) -> raftkv_raft::Status {
        for _ in 0..400 {
            let leader = self.leader().await;
            let l = self.nodes[&leader].status().await.unwrap();
            let s = self.nodes[&id].status().await.unwrap();
            if s.applied_index >= l.commit_index {
                return s;
            }
            self.rt.sleep(Duration::from_millis(25)).await;
        }
        panic!("n{id} did not catch up within 10 s");
    }
}

async fn scenario<R: NetRuntime>(rt: R, dir: &Path) {
    let (mut c, listeners) = Cluster::new(rt, dir);
    for (id, l) in (1..=3).zip(listeners) {
        c.start(id, l).await;
    }
    let first = c.leader().await;
    c.commit(10, "a").await;
    assert_eq!(
        c.nodes[&first]
            .linearizable_read(Bytes::new())
            .await
            .unwrap(),
        10,
        "a linearizable read"
    );

    // Garbage, a silent connection and an oversized length prefix at a node's peer port close
    // only those connections: the cluster keeps committing.
    {
        use std::io::Write;
        let target = c.addrs[&first];
        let mut garbage = std::net::TcpStream::connect(target).unwrap();
        garbage
            .write_all(b"GET / HTTP/1.1\r\n\r\n garbage")
            .unwrap();
        let _silent = std::net::TcpStream::connect(target).unwrap();
        let mut huge = std::net::TcpStream::connect(target).unwrap();
        huge.write_all(&u32::MAX.to_be_bytes()).unwrap();
        c.commit(5, "g").await;
    }

    // A follower misses a few entries and catches up from the leader's log.
    let follower = (1..=3).find(|id| *id != first).unwrap();
    c.crash(follower).await;
    c.commit(10, "b").await;
    c.restart(follower).await;
    let s = c.caught_up(follower).await;
    assert_eq!(s.snapshot_index, 0, "caught up by log, no snapshot needed");

    // The leader crashes; the others keep committing, past several snapshots.
    let leader = c.leader().await;
    c.crash(leader).await;
    c.commit(150, "c").await;
    let new_leader = c.leader().await;
    assert_ne!(new_leader, leader);
    let l = c.nodes[&new_leader].status().await.unwrap();
    assert!(l.snapshot_index > 20, "the leader compacted its log: {l:?}");

    // The old leader comes back and catches up by snapshot.
    c.restart(leader).await;
    let s = c.caught_up(leader).await;
    assert!(s.snapshot_index > 20, "caught up by snapshot: {s:?}");

    // Same state everywhere.
    let expected = c.states[&new_leader].lock().unwrap().clone();
    assert_eq!(expected.len(), 175);
    for id in 1..=3u64 {
        c.caught_up(id).await;
        assert_eq!(
            *c.states[&id].lock().unwrap(),
            expected,
            "n{id} has the same state"
        );
    }
    for node in c.nodes.values() {
        node.shutdown().await;
    }
}

#[test]
fn three_node_cluster_under_tokio_over_tcp_and_lmdb() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio_runtime();
    rt.block_on(async {
        scenario(
            raftkv_raft::runtime::tokio::TokioRuntime::current(),
            dir.path(),
        )
        .await
    });
}

#[test]
fn three_node_cluster_under_smol_over_tcp_and_lmdb() {
    let dir = tempfile::tempdir().unwrap();
    smol::block_on(scenario(
        raftkv_raft::runtime::smol::SmolRuntime::new(),
        dir.path(),
    ));
}

/// Commit latency at 1 client: sequential proposals to the leader of a 3-node cluster over TCP
/// and LMDB (every write fsynced). Run with
/// `cargo test --release -p raftkv-transport-tcp --test lmdb_cluster -- --ignored --nocapture`.
async fn commit_latency<R: NetRuntime>(rt: R, dir: &Path, name: &str) {
    let (mut c, listeners) = Cluster::new(rt, dir);
    for (id, l) in (1..=3).zip(listeners) {
        c.start(id, l).await;
    }
    let leader = c.leader().await;
    let node = c.nodes[&leader].clone();
    let value = Bytes::from(vec![b'v'; 100]);
    for _ in 0..200 {
        node.propose(value.clone()).await.expect("warm-up commit");
    }
    let mut samples = Vec::new();
    for _ in 0..2_000 {
        let t0 = std::time::Instant::now();
        node.propose(value.clone()).await.expect("commit");
        samples.push(t0.elapsed());
    }
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    println!(
        "{name}: 3 nodes, TCP + LMDB, 1 client, 100-byte commands, {} commits: p50 {:?} p99 {:?} max {:?}",
        samples.len(),
        pct(0.50),
        pct(0.99),
        samples[samples.len() - 1]
    );
    for node in c.nodes.values() {
        node.shutdown().await;
    }
}

#[test]
#[ignore = "a benchmark: prints figures"]
fn commit_latency_at_one_client() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio_runtime();
    rt.block_on(async {
        let tokio = raftkv_raft::runtime::tokio::TokioRuntime::current();
        commit_latency(tokio, &dir.path().join("tokio"), "tokio").await
    });
    smol::block_on(commit_latency(
        raftkv_raft::runtime::smol::SmolRuntime::new(),
        &dir.path().join("smol"),
        "smol",
    ));
}

fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}
