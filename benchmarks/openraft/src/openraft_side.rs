//! openraft's side, in the setup of openraft's own benchmark (`benchmarks/minimal` in
//! databendlabs/openraft): three `openraft::Raft`s in one process, an in-memory log (a `BTreeMap`
//! of entries, no serialization), a state machine that keeps nothing but the applied log id and
//! membership, and a router that calls the target `Raft`'s RPC handlers directly. Written here
//! against openraft's public traits (that benchmark's store is not published on crates.io;
//! `openraft-memstore` is, but it stores every entry as a JSON string, a cost openraft's own
//! benchmark does not pay, so using it would flatter raftkv).

use crate::Workload;
use bytes::Bytes;
use futures::Stream;
use openraft::alias::{EntryOf, LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf, VoteOf};
use openraft::entry::RaftEntry;
use openraft::error::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::storage::{
    EntryResponder, IOFlushed, LogState, RaftLogReader, RaftLogStorage, RaftSnapshotBuilder,
    RaftStateMachine,
};
use openraft::{Config, EntryPayload, OptionalSend, Raft, RaftNetworkV2};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fmt::Debug;
use std::future::Future;
use std::io;
use std::io::Cursor;
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// The request: the payload bytes (empty in openraft's own benchmark).
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Req(pub Bytes);

impl fmt::Display for Req {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Req({} bytes)", self.0.len())
    }
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Resp;

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Req,
        R = Resp,
        Node = (),
);

pub type BenchRaft = Raft<TypeConfig, Arc<SmStore>>;

// ---- log store -------------------------------------------------------------------------------

#[derive(Default)]
pub struct LogStore {
    vote: RwLock<Option<VoteOf<TypeConfig>>>,
    log: RwLock<BTreeMap<u64, EntryOf<TypeConfig>>>,
    last_purged: RwLock<Option<LogIdOf<TypeConfig>>>,
}

impl RaftLogReader<TypeConfig> for Arc<LogStore> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<EntryOf<TypeConfig>>, io::Error> {
        let log = self.log.read().unwrap();
        Ok(log.range(range).map(|(_, e)| e.clone()).collect())
    }

    async fn read_vote(&mut self) -> Result<Option<VoteOf<TypeConfig>>, io::Error> {
        Ok(*self.vote.read().unwrap())
    }
}

impl RaftLogStorage<TypeConfig> for Arc<LogStore> {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged = *self.last_purged.read().unwrap();
        let last = self
            .log
            .read()
            .unwrap()
            .values()
            .next_back()
            .map(|e| e.log_id());
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last.or(last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &VoteOf<TypeConfig>) -> Result<(), io::Error> {
        *self.vote.write().unwrap() = Some(*vote);
        Ok(())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = EntryOf<TypeConfig>> + OptionalSend,
    {
        {
            let mut log = self.log.write().unwrap();
            log.extend(entries.into_iter().map(|e| (e.index(), e)));
        }
        // No fsync: the write is "durable" at once.
        callback.io_completed(Ok(()));
        Ok(())
    }

    async fn truncate_after(&mut self, last: Option<LogIdOf<TypeConfig>>) -> Result<(), io::Error> {
        let from = last.map_or(0, |l| l.index() + 1);
        self.log.write().unwrap().split_off(&from);
        Ok(())
    }

    async fn purge(&mut self, upto: LogIdOf<TypeConfig>) -> Result<(), io::Error> {
        *self.last_purged.write().unwrap() = Some(upto);
        let mut log = self.log.write().unwrap();
        *log = log.split_off(&(upto.index() + 1));
        Ok(())
    }
}

// ---- state machine ---------------------------------------------------------------------------

#[derive(Default)]
struct SmState {
    applied: Option<LogIdOf<TypeConfig>>,
    membership: StoredMembershipOf<TypeConfig>,
    snapshot: Option<(SnapshotMetaOf<TypeConfig>, Vec<u8>)>,
}

/// Keeps only what openraft needs: the applied log id and the membership.
#[derive(Default)]
pub struct SmStore {
    state: Mutex<SmState>,
}

impl RaftSnapshotBuilder<TypeConfig> for Arc<SmStore> {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn build_snapshot(
        &mut self,
    ) -> Result<SnapshotOf<TypeConfig, Cursor<Vec<u8>>>, io::Error> {
        let mut st = self.state.lock().unwrap();
        let meta = SnapshotMetaOf::<TypeConfig> {
            last_log_id: st.applied,
            last_membership: st.membership.clone(),
        };
        st.snapshot = Some((meta.clone(), Vec::new()));
        Ok(SnapshotOf::<TypeConfig, Cursor<Vec<u8>>> {
            meta,
            snapshot: Cursor::new(Vec::new()),
        })
    }
}

impl RaftStateMachine<TypeConfig> for Arc<SmStore> {
    type SnapshotData = Cursor<Vec<u8>>;
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogIdOf<TypeConfig>>, StoredMembershipOf<TypeConfig>), io::Error> {
        let st = self.state.lock().unwrap();
        Ok((st.applied, st.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        use futures::TryStreamExt;
        while let Some((entry, responder)) = entries.try_next().await? {
            {
                let mut st = self.state.lock().unwrap();
                st.applied = Some(entry.log_id);
                if let EntryPayload::Membership(ref m) = entry.payload {
                    st.membership =
                        StoredMembershipOf::<TypeConfig>::new(Some(entry.log_id), m.clone());
                }
            }
            if let Some(r) = responder {
                r.send(Resp);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<TypeConfig>,
        snapshot: Self::SnapshotData,
    ) -> Result<(), io::Error> {
        let mut st = self.state.lock().unwrap();
        st.applied = meta.last_log_id;
        st.membership = meta.last_membership.clone();
        st.snapshot = Some((meta.clone(), snapshot.into_inner()));
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<TypeConfig, Self::SnapshotData>>, io::Error> {
        let st = self.state.lock().unwrap();
        Ok(st
            .snapshot
            .as_ref()
            .map(|(meta, data)| SnapshotOf::<TypeConfig, Cursor<Vec<u8>>> {
                meta: meta.clone(),
                snapshot: Cursor::new(data.clone()),
            }))
    }
}

// ---- router ----------------------------------------------------------------------------------

/// The in-process network: every RPC is a direct call of the target's handler.
#[derive(Clone, Default)]
pub struct Router {
    table: Arc<RwLock<BTreeMap<u64, BenchRaft>>>,
}

pub struct Conn {
    target: u64,
    router: Router,
}

impl Conn {
    fn raft(&self) -> Result<BenchRaft, Unreachable<TypeConfig>> {
        self.router
            .table
            .read()
            .unwrap()
            .get(&self.target)
            .cloned()
            .ok_or_else(|| Unreachable::new(&io::Error::other("no such node")))
    }
}

impl RaftNetworkFactory<TypeConfig> for Router {
    type Network = Conn;

    async fn new_client(&mut self, target: u64, _node: &()) -> Conn {
        Conn {
            target,
            router: self.clone(),
        }
    }
}

impl RaftNetworkV2<TypeConfig> for Conn {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let raft = self.raft()?;
        raft.append_entries(rpc)
            .await
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let raft = self.raft()?;
        raft.vote(rpc)
            .await
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<TypeConfig>,
        snapshot: SnapshotOf<TypeConfig, Cursor<Vec<u8>>>,
        _cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let raft = self.raft()?;
        raft.install_full_snapshot(vote, snapshot)
            .await
            .map_err(|e| StreamingError::Unreachable(Unreachable::new(&e)))
    }
}

// ---- cluster ---------------------------------------------------------------------------------

pub struct Cluster {
    rafts: Vec<BenchRaft>,
    pub leader: BenchRaft,
}

pub async fn start() -> Cluster {
    // openraft's benchmark configuration (benchmarks/minimal/src/bin/bench.rs).
    let config = Arc::new(
        Config {
            election_timeout_min: 200,
            election_timeout_max: 2000,
            purge_batch_size: 1024,
            max_payload_entries: 1024,
            ..Default::default()
        }
        .validate()
        .expect("openraft config"),
    );
    let router = Router::default();
    let ids: BTreeSet<u64> = [0, 1, 2].into();
    let mut rafts = Vec::new();
    for &id in &ids {
        let raft = Raft::new(
            id,
            config.clone(),
            router.clone(),
            Arc::new(LogStore::default()),
            Arc::new(SmStore::default()),
        )
        .await
        .expect("openraft node starts");
        router.table.write().unwrap().insert(id, raft.clone());
        rafts.push(raft);
    }
    rafts[0].initialize(ids.clone()).await.expect("initialize");
    for r in &rafts {
        r.wait(Some(Duration::from_secs(10)))
            .applied_index_at_least(Some(1), "init")
            .await
            .expect("membership applied");
    }
    let leader = rafts[0].clone();
    leader
        .wait(Some(Duration::from_secs(10)))
        .current_leader(0, "leader")
        .await
        .expect("node 0 leads");
    Cluster { rafts, leader }
}

impl Cluster {
    pub async fn shutdown(self) {
        for r in &self.rafts {
            let _ = r.shutdown().await;
        }
    }
}

impl Workload for BenchRaft {
    async fn write(&self, payload: Bytes) -> Result<(), String> {
        self.client_write(Req(payload))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}
