//! Embed your own state machine: a replicated counter over `raftkv-raft`, stored on LMDB
//! (`raftkv-storage-lmdb`) and replicated over TCP (`raftkv-transport-tcp`), three nodes on
//! loopback in one process, under tokio.
//!
//! It proposes two additions, reads the total back (ReadIndex), crashes the leader, waits for a
//! new one, adds again and reads again; it exits 0 when every answer is the expected one.
//!
//! ```text
//! cargo run --release -p raftkv-node --example counter
//! ```
//!
//! What a state machine of your own needs is [`StateMachine`]: `apply` a committed command
//! (here an `i64` to add, little-endian), answer a read-only `query`, and `snapshot` /
//! `restore` its whole state. Everything else — elections, replication, durability, snapshots
//! — is the node's.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use raftkv_raft::runtime::tokio::TokioRuntime;
use raftkv_raft::{
    Config, Index, Node, NodeConfig, NodeError, NodeId, Role, Runtime, StateMachine,
};
use raftkv_storage_lmdb::{LmdbOptions, LmdbStorage};
use raftkv_transport_tcp::{TcpConfig, TcpTransport};

/// The replicated state: one number.
#[derive(Debug, Default)]
struct Counter {
    value: i64,
}

impl StateMachine for Counter {
    /// The counter's value after the command (or at the query).
    type Response = i64;

    fn apply(&mut self, _index: Index, command: &[u8]) -> i64 {
        // A command is 8 bytes, an i64 to add; anything else changes nothing (a state machine
        // must not fail on a committed entry: every replica applies the same bytes).
        if let Ok(bytes) = <[u8; 8]>::try_from(command) {
            self.value = self.value.wrapping_add(i64::from_le_bytes(bytes));
        }
        self.value
    }

    fn query(&self, _query: &[u8]) -> i64 {
        self.value
    }

    fn snapshot(&self) -> Bytes {
        Bytes::copy_from_slice(&self.value.to_le_bytes())
    }

    fn restore(&mut self, data: &[u8]) -> Result<(), String> {
        let bytes = <[u8; 8]>::try_from(data)
            .map_err(|_| format!("a counter snapshot is 8 bytes, not {}", data.len()))?;
        self.value = i64::from_le_bytes(bytes);
        Ok(())
    }
}

/// Peers refuse connections that carry another cluster id.
const CLUSTER_ID: u64 = 0x00c0_0e7e;
const NODES: u64 = 3;
const WAIT: Duration = Duration::from_secs(10);

type CounterNode = Node<TokioRuntime, Counter>;

/// Starts node `id` on its listener, with its log in `dir`.
async fn start_node(
    runtime: &TokioRuntime,
    id: NodeId,
    listener: TcpListener,
    peers: &BTreeMap<NodeId, SocketAddr>,
    dir: &std::path::Path,
) -> Result<CounterNode, Box<dyn std::error::Error>> {
    let others = peers
        .iter()
        .filter(|(&j, _)| j != id)
        .map(|(&j, &a)| (j, a))
        .collect();
    let transport = TcpTransport::start_on(
        runtime.clone(),
        TcpConfig::new(id, CLUSTER_ID, peers[&id], others),
        listener,
    )?;
    let storage = LmdbStorage::open(&dir.join(format!("n{id}")), LmdbOptions::default())?;
    let config = NodeConfig::new(Config::new(id, 1..=NODES));
    let node = Node::start(
        runtime.clone(),
        config,
        storage,
        transport,
        Counter::default(),
    )
    .await?;
    Ok(node)
}

/// The id of a node that leads, waiting up to [`WAIT`].
async fn leader(runtime: &TokioRuntime, nodes: &BTreeMap<NodeId, CounterNode>) -> Option<NodeId> {
    let deadline = runtime.now() + WAIT;
    while runtime.now() < deadline {
        for (&id, node) in nodes {
            if let Ok(status) = node.status().await {
                if status.role == Role::Leader {
                    return Some(id);
                }
            }
        }
        runtime.sleep(Duration::from_millis(20)).await;
    }
    None
}

/// Adds `delta` through the leader; returns the new value. Retries only answers that say the
/// command was not taken (`NotLeader`, `Busy`): a timeout could mean it was applied.
async fn add(
    runtime: &TokioRuntime,
    nodes: &BTreeMap<NodeId, CounterNode>,
    delta: i64,
) -> Result<i64, String> {
    let deadline = runtime.now() + WAIT;
    while runtime.now() < deadline {
        let id = leader(runtime, nodes).await.ok_or("no leader")?;
        let command = Bytes::copy_from_slice(&delta.to_le_bytes());
        match nodes[&id].propose(command).await {
            Ok(value) => return Ok(value),
            Err(NodeError::NotLeader { .. } | NodeError::Busy(_)) => {
                runtime.sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(format!("add {delta} at n{id}: {e}")),
        }
    }
    Err(format!("add {delta}: no leader took it within {WAIT:?}"))
}

/// Reads the value at the leader (ReadIndex: linearizable, no log entry).
async fn read(
    runtime: &TokioRuntime,
    nodes: &BTreeMap<NodeId, CounterNode>,
) -> Result<i64, String> {
    let id = leader(runtime, nodes).await.ok_or("no leader")?;
    nodes[&id]
        .linearizable_read(Bytes::new())
        .await
        .map_err(|e| format!("read at n{id}: {e}"))
}

fn expect(what: &str, got: i64, want: i64) -> Result<(), String> {
    println!("{what}: {got}");
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: expected {want}, got {got}"))
    }
}

async fn run(runtime: TokioRuntime) -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::Builder::new()
        .prefix("raftkv-counter-")
        .tempdir()?;
    // Bind every listener first (port 0: the OS picks), so that every address is known.
    let mut listeners = BTreeMap::new();
    let mut peers = BTreeMap::new();
    for id in 1..=NODES {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        peers.insert(id, listener.local_addr()?);
        listeners.insert(id, listener);
    }
    let mut nodes = BTreeMap::new();
    for (id, listener) in listeners {
        nodes.insert(
            id,
            start_node(&runtime, id, listener, &peers, dir.path()).await?,
        );
    }
    println!("3 nodes on {:?}", peers.values().collect::<Vec<_>>());

    expect("after +5", add(&runtime, &nodes, 5).await?, 5)?;
    expect("after +7", add(&runtime, &nodes, 7).await?, 12)?;
    expect("read", read(&runtime, &nodes).await?, 12)?;

    // Crash the leader: its tasks stop; what it made durable stays in its directory.
    let crashed = leader(&runtime, &nodes).await.ok_or("no leader")?;
    if let Some(node) = nodes.remove(&crashed) {
        node.shutdown().await;
    }
    println!("crashed the leader, n{crashed}");

    expect("after +1", add(&runtime, &nodes, 1).await?, 13)?;
    expect("read", read(&runtime, &nodes).await?, 13)?;
    let new_leader = leader(&runtime, &nodes).await.ok_or("no leader")?;
    println!("the two others still work; n{new_leader} leads");

    for node in nodes.values() {
        node.shutdown().await;
    }
    Ok(())
}

fn main() -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("counter: cannot start tokio: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = TokioRuntime::new(rt.handle().clone());
    match rt.block_on(run(runtime)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("counter: {e}");
            ExitCode::FAILURE
        }
    }
}
