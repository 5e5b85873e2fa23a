//! [`GroupStateMachine`]: one replica group's replicated state — the shards it holds (each a
//! KV store with its own session table), each shard's status, and the configuration the group
//! has installed — applied from the group's Raft log. The protocol is in the module doc of
//! [`crate::group`].

use std::collections::BTreeMap;

use bytes::Bytes;
use raftkv_kv::state::{
    KvError, KvStateMachine, Op, Outcome, SessionConfig, DATA_BYTES_MAX_DEFAULT,
};
use raftkv_raft::{Index, StateMachine};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::config::{Gid, ShardConfig, ShardId};
use crate::hash::key_to_shard;

mod pieces;
pub use pieces::Piece;

/// A group's fixed settings (the node's, not part of a snapshot).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupConfig {
    /// This group's id (≥ 1).
    pub gid: Gid,
    /// The number of shards (the controller's).
    pub shards: u32,
    /// Every shard's session table has these bounds (so at most `shards × sessions_max`
    /// sessions in the group). A shard's table travels whole in its last piece: keep it
    /// within `shard_bytes_max`.
    pub sessions: SessionConfig,
    /// A shard migrates in pieces ([`Piece`]) of about a quarter of this many bytes of keys;
    /// a piece larger than this, encoded, is refused, and one pull answer carries at most this
    /// many bytes of pieces beyond its first: keep it below the client frame limit
    /// (`raftkv_kv::protocol::CLIENT_FRAME_BYTES_MAX`) and the Raft entry limit.
    pub shard_bytes_max: usize,
    /// The group's data (every shard it holds, as [`KvStateMachine::data_bytes`] counts them)
    /// stays within this: a write past it is refused (`StoreFull`), and so is a piece of an
    /// arriving shard ([`GroupError::Full`]: the shard stays `Pulling`, its pull retried each
    /// round until room is made). The same on every member.
    pub data_bytes_max: u64,
}

/// A shard's session table holds at most this many sessions (and as many expired records) in a
/// group by default: at most about 80 bytes each encoded, so the table (which travels whole in
/// a migrating shard's last piece) stays under 2 MB, within the default `shard_bytes_max`.
pub const SHARD_SESSIONS_MAX_DEFAULT: usize = 12_000;

impl GroupConfig {
    /// A group `gid` of a store with `shards` shards, with default bounds.
    pub fn new(gid: Gid, shards: u32) -> Self {
        Self {
            gid,
            shards,
            sessions: SessionConfig {
                sessions_max: SHARD_SESSIONS_MAX_DEFAULT,
                ..SessionConfig::default()
            },
            shard_bytes_max: 3 << 20,
            data_bytes_max: DATA_BYTES_MAX_DEFAULT,
        }
    }
}

/// Where a shard stands in this group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ShardStatus {
    /// Owned in the current config and here: served.
    Serving,
    /// Owned in the current config, still held by its previous owner: not served until its data
    /// arrives (issue 17: a group must not serve a shard it is still receiving).
    Pulling,
    /// Owned in the previous config, not in the current one: kept, unserved, until the new
    /// owner has it (issue 17: a group must not serve a shard it has handed off).
    BePulled,
    /// Arrived and served (6.5840 challenge 2), but the previous owner has not yet been told to
    /// delete it (6.5840 challenge 1).
    GcPending,
}

impl ShardStatus {
    /// Whether a shard in this status answers clients.
    pub fn serves(self) -> bool {
        matches!(self, ShardStatus::Serving | ShardStatus::GcPending)
    }
}

/// One shard held by the group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Shard {
    status: ShardStatus,
    /// The shard's keys and its own session table: both move with the shard, so a request
    /// retried at the new owner is still answered once (issue 17).
    kv: KvStateMachine,
}

/// What goes into a group's Raft entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupCommand {
    /// Request `seq` of client session `session` (a controller-issued id, unique across
    /// groups); applied at most once by the shard of its key.
    Request {
        session: u64,
        seq: u64,
        now_ms: u64,
        op: Op,
    },
    /// 6.5840 lab 5B: install this config; only the one after the current, and only once every
    /// shard of the current one is settled (`Serving`).
    Config(ShardConfig),
    /// Pieces of shards pulled from their previous owner for config `num`: each an encoded
    /// [`Piece`], the pieces of one shard in order.
    Insert {
        num: u64,
        shards: Vec<(ShardId, Bytes)>,
    },
    /// The previous owner's side of GC: the new owner of config `num` has these shards; delete
    /// them here.
    Delete { num: u64, shards: Vec<ShardId> },
    /// The new owner's side of GC: the previous owner deleted these shards of config `num`.
    Confirmed { num: u64, shards: Vec<ShardId> },
}

impl GroupCommand {
    pub fn encode(&self) -> Bytes {
        Bytes::from(postcard::to_allocvec(self).expect("commands always encode"))
    }

    pub fn decode(data: &[u8]) -> Result<Self, GroupError> {
        postcard::from_bytes(data).map_err(|_| GroupError::Malformed)
    }
}

/// A read, served through ReadIndex.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupQuery {
    /// A client read.
    Get { key: Bytes },
    /// Another group, the new owner in config `num`, asks for these shards, each from the
    /// key after the one given (the last it has; `None`: from the first).
    Pull {
        num: u64,
        shards: Vec<(ShardId, Option<Bytes>)>,
    },
    /// Where the group stands: what its migration driver and tests ask.
    Progress,
}

impl GroupQuery {
    pub fn encode(&self) -> Bytes {
        Bytes::from(postcard::to_allocvec(self).expect("queries always encode"))
    }
}

/// Expected refusals of the group's own commands (never a broken invariant).
#[derive(Clone, Debug, Error, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum GroupError {
    #[error("malformed command")]
    Malformed,
    /// A config whose shard count is not the group's.
    #[error("config {num} has {got} shards, not {want}")]
    ShardCount { num: u64, got: usize, want: u32 },
    /// A shard id beyond the shard count.
    #[error("shard {shard} out of range")]
    ShardOutOfRange { shard: ShardId },
    /// A migrated shard that does not decode, breaks an invariant or is too large.
    #[error("bad shard {shard}: {reason}")]
    BadShard { shard: ShardId, reason: String },
    /// A piece of arriving shard `shard` would take the group's data past its
    /// `data_bytes_max`: refused; the shard stays `Pulling` until room is made.
    #[error(
        "shard {shard} cannot arrive: {piece_bytes} more bytes would take the group's data \
         ({data_bytes} bytes) past its bound of {data_bytes_max}"
    )]
    Full {
        shard: ShardId,
        piece_bytes: u64,
        data_bytes: u64,
        data_bytes_max: u64,
    },
    /// A `Pull` or `Delete` from an address that is no member of a group of the installed
    /// config or the one before ([`crate::group::trust`]); nothing was read or changed.
    #[error("refused: {peer} is not a member of a group of config {num} or the one before")]
    NotAGroupMember { peer: String, num: u64 },
}

/// One shard's place in [`Progress`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    pub shard: ShardId,
    pub status: ShardStatus,
    pub keys: usize,
    pub sessions: usize,
    /// The shard's data bytes ([`KvStateMachine::data_bytes`]).
    pub bytes: u64,
    /// `Pulling`: the last key arrived so far (where the next piece starts).
    pub after: Option<Bytes>,
}

/// Where a group stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// The installed config.
    pub config: ShardConfig,
    /// The one before it (where `Pulling` shards come from, where `GcPending` ones go back to).
    pub prev: ShardConfig,
    /// Every shard the group holds, in order.
    pub shards: Vec<ShardInfo>,
}

impl Progress {
    /// Every shard settled: the next config may be installed.
    pub fn settled(&self) -> bool {
        self.shards.iter().all(|s| s.status == ShardStatus::Serving)
    }

    /// The shards in `status`, grouped by the gid that owned them in the previous config.
    pub fn by_prev_owner(&self, status: ShardStatus) -> BTreeMap<Gid, Vec<ShardId>> {
        let mut out: BTreeMap<Gid, Vec<ShardId>> = BTreeMap::new();
        for s in self.shards.iter().filter(|s| s.status == status) {
            let from = self.prev.shards.get(s.shard as usize).copied().unwrap_or(0);
            out.entry(from).or_default().push(s.shard);
        }
        out
    }

    /// The shards this group serves now.
    pub fn serving(&self) -> Vec<ShardId> {
        self.shards
            .iter()
            .filter(|s| s.status.serves())
            .map(|s| s.shard)
            .collect()
    }
}

/// The result of applying a command or serving a query.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupOutcome {
    /// The shard's KV answer.
    Kv(Outcome),
    /// 6.5840 lab 5B: the key's shard is not served here now (not owned in the installed
    /// config, or not arrived yet): ask the controller for the latest config.
    WrongGroup,
    /// The group has not installed config `num` yet (its installed one is given).
    NotReady {
        installed: u64,
    },
    /// Pulled shards (those asked that are handed off here; others are left out).
    Shards {
        num: u64,
        shards: Vec<(ShardId, Bytes)>,
    },
    Progress(Progress),
    /// A group command was applied, or was already (commands are idempotent).
    Done,
    Err(GroupError),
}

/// The state a snapshot holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Persisted {
    /// The installed config. Invariant: `config.num == 0` or `prev.num + 1 == config.num`.
    config: ShardConfig,
    prev: ShardConfig,
    /// Invariant: a shard is `Serving`, `Pulling` or `GcPending` exactly when it is owned in
    /// `config` and held here; `BePulled` only when owned in `prev` and not in `config`; every
    /// shard owned in `config` is held.
    shards: BTreeMap<ShardId, Shard>,
}

/// A replica group's state machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupStateMachine {
    settings: GroupConfig,
    state: Persisted,
}

impl GroupStateMachine {
    pub fn new(settings: GroupConfig) -> Self {
        Self {
            settings,
            state: Persisted {
                config: ShardConfig::empty(settings.shards),
                prev: ShardConfig::empty(settings.shards),
                shards: BTreeMap::new(),
            },
        }
    }

    pub fn settings(&self) -> &GroupConfig {
        &self.settings
    }

    /// The installed config.
    pub fn config(&self) -> &ShardConfig {
        &self.state.config
    }

    pub fn progress(&self) -> Progress {
        Progress {
            config: self.state.config.clone(),
            prev: self.state.prev.clone(),
            shards: self
                .state
                .shards
                .iter()
                .map(|(&shard, s)| ShardInfo {
                    shard,
                    status: s.status,
                    keys: s.kv.len(),
                    sessions: s.kv.sessions(),
                    bytes: s.kv.data_bytes(),
                    after: match s.status {
                        ShardStatus::Pulling => s.kv.last_key().cloned(),
                        _ => None,
                    },
                })
                .collect(),
        }
    }

    /// The shard of `key` if this group serves it now.
    fn serving(&mut self, key: &[u8]) -> Option<&mut Shard> {
        let shard = key_to_shard(key, self.settings.shards).ok()?;
        if self.state.config.shards.get(shard as usize) != Some(&self.settings.gid) {
            return None;
        }
        self.state
            .shards
            .get_mut(&shard)
            .filter(|s| s.status.serves())
    }

    /// Applies one command.
    pub fn apply_command(&mut self, command: GroupCommand) -> GroupOutcome {
        match command {
            GroupCommand::Request {
                session,
                seq,
                now_ms,
                op,
            } => {
                let key = match &op {
                    Op::Get { key }
                    | Op::Put { key, .. }
                    | Op::Append { key, .. }
                    | Op::Delete { key } => key.clone(),
                };
                let data_bytes = self.data_bytes();
                let data_bytes_max = self.settings.data_bytes_max;
                match self.serving(&key) {
                    // Checked at apply time, in log order: a request logged before a config
                    // change that hands the shard off is applied here, one after it is not.
                    Some(shard) => {
                        // The group's bound, as this shard's: what the others leave it.
                        let others = data_bytes - shard.kv.data_bytes();
                        shard
                            .kv
                            .set_data_bytes_max(data_bytes_max.saturating_sub(others));
                        GroupOutcome::Kv(shard.kv.apply_open_request(session, seq, now_ms, op))
                    }
                    None => GroupOutcome::WrongGroup,
                }
            }
            GroupCommand::Config(config) => self.install(config),
            GroupCommand::Insert { num, shards } => self.insert(num, shards),
            GroupCommand::Delete { num, shards } => {
                let installed = self.state.config.num;
                if num > installed {
                    return GroupOutcome::NotReady { installed };
                }
                if num == installed {
                    for shard in shards {
                        // Only a shard handed off in this config: never one served.
                        if self.state.shards.get(&shard).map(|s| s.status)
                            == Some(ShardStatus::BePulled)
                        {
                            self.state.shards.remove(&shard);
                        }
                    }
                }
                // num < installed: deleted before this group moved on (it cannot move on while
                // holding a handed-off shard).
                GroupOutcome::Done
            }
            GroupCommand::Confirmed { num, shards } => {
                if num == self.state.config.num {
                    for shard in shards {
                        if let Some(s) = self.state.shards.get_mut(&shard) {
                            if s.status == ShardStatus::GcPending {
                                s.status = ShardStatus::Serving;
                            }
                        }
                    }
                }
                GroupOutcome::Done
            }
        }
    }

    /// 6.5840 lab 5B: configs are installed one at a time, in order, and config n + 1 only once
    /// every shard of config n is settled. A shard this group gains is pulled from its previous
    /// owner (or starts empty if it had none); one it loses is kept until the new owner has it.
    fn install(&mut self, config: ShardConfig) -> GroupOutcome {
        let want = self.settings.shards;
        if config.shards.len() != want as usize {
            return GroupOutcome::Err(GroupError::ShardCount {
                num: config.num,
                got: config.shards.len(),
                want,
            });
        }
        let installed = self.state.config.num;
        let settled = self
            .state
            .shards
            .values()
            .all(|s| s.status == ShardStatus::Serving);
        if config.num != installed + 1 || !settled {
            // Already installed, or too early: the driver proposes it again later.
            return if config.num <= installed {
                GroupOutcome::Done
            } else {
                GroupOutcome::NotReady { installed }
            };
        }
        let me = self.settings.gid;
        for (i, (&old, &new)) in self
            .state
            .config
            .shards
            .iter()
            .zip(&config.shards)
            .enumerate()
        {
            let shard = ShardId::try_from(i).expect("shard counts fit in a u32");
            if old != me && new == me {
                let status = if old == 0 {
                    // Nobody held it: it starts empty, served at once.
                    ShardStatus::Serving
                } else {
                    ShardStatus::Pulling
                };
                self.state.shards.insert(
                    shard,
                    Shard {
                        status,
                        kv: KvStateMachine::new(self.settings.sessions),
                    },
                );
            } else if old == me && new != me {
                if let Some(s) = self.state.shards.get_mut(&shard) {
                    s.status = ShardStatus::BePulled;
                }
            }
        }
        self.state.prev = std::mem::replace(&mut self.state.config, config);
        GroupOutcome::Done
    }

    /// Serves a read of `key` if the group serves its shard now.
    pub fn get(&self, key: &[u8]) -> GroupOutcome {
        let Ok(shard) = key_to_shard(key, self.settings.shards) else {
            return GroupOutcome::WrongGroup;
        };
        if self.state.config.shards.get(shard as usize) != Some(&self.settings.gid) {
            return GroupOutcome::WrongGroup;
        }
        match self.state.shards.get(&shard) {
            Some(s) if s.status.serves() => GroupOutcome::Kv(s.kv.get(key)),
            _ => GroupOutcome::WrongGroup,
        }
    }

    /// Checks the invariants on the fields, every shard's contents included; the first broken
    /// one, named (for state from outside: a snapshot).
    pub fn validate(&self) -> Result<(), String> {
        self.validate_statuses()?;
        for (&shard, s) in &self.state.shards {
            s.kv.validate()
                .map_err(|rule| format!("shard {shard}: {rule}"))?;
        }
        Ok(())
    }

    /// The invariants of the configs and shard statuses alone (cheap: checked after every
    /// apply in debug builds, the simulator's included).
    pub fn validate_statuses(&self) -> Result<(), String> {
        let n = self.settings.shards as usize;
        let me = self.settings.gid;
        let st = &self.state;
        if st.config.shards.len() != n || st.prev.shards.len() != n {
            return Err("one gid per shard in both configs".into());
        }
        if st.config.num != 0 && st.prev.num + 1 != st.config.num {
            return Err("prev is the config before the installed one".into());
        }
        for (&shard, s) in &st.shards {
            let i = shard as usize;
            if i >= n {
                return Err(format!("shard {shard} out of range"));
            }
            let owned = st.config.shards[i] == me;
            let was = st.prev.shards[i] == me;
            let ok = match s.status {
                ShardStatus::BePulled => was && !owned,
                _ => owned,
            };
            if !ok {
                return Err(format!(
                    "shard {shard} is {:?} against the configs",
                    s.status
                ));
            }
        }
        for (i, &gid) in st.config.shards.iter().enumerate() {
            if gid == me && !st.shards.contains_key(&(i as ShardId)) {
                return Err(format!("owned shard {i} is not held"));
            }
        }
        Ok(())
    }
}

impl StateMachine for GroupStateMachine {
    type Response = GroupOutcome;

    fn apply(&mut self, _index: Index, command: &[u8]) -> GroupOutcome {
        let outcome = match GroupCommand::decode(command) {
            Ok(c) => self.apply_command(c),
            Err(e) => GroupOutcome::Err(e),
        };
        if cfg!(debug_assertions) {
            if let Err(rule) = self.validate_statuses() {
                panic!("group {} invariant broken: {rule}", self.settings.gid);
            }
        }
        outcome
    }

    fn query(&self, query: &[u8]) -> GroupOutcome {
        match postcard::from_bytes::<GroupQuery>(query) {
            Ok(GroupQuery::Get { key }) => self.get(&key),
            Ok(GroupQuery::Pull { num, shards }) => self.pull(num, &shards),
            Ok(GroupQuery::Progress) => GroupOutcome::Progress(self.progress()),
            Err(_) => GroupOutcome::Kv(Outcome::Err(KvError::Malformed)),
        }
    }

    fn snapshot(&self) -> Bytes {
        Bytes::from(postcard::to_allocvec(&self.state).expect("state always encodes"))
    }

    /// Replaces the state with the snapshot's, checked; the settings stay the node's.
    fn restore(&mut self, data: &[u8]) -> Result<(), String> {
        let mut state: Persisted =
            postcard::from_bytes(data).map_err(|e| format!("bad group snapshot: {e}"))?;
        for s in state.shards.values_mut() {
            s.kv.set_session_config(self.settings.sessions);
        }
        let restored = Self {
            settings: self.settings,
            state,
        };
        restored
            .validate()
            .map_err(|rule| format!("group snapshot breaks an invariant: {rule}"))?;
        *self = restored;
        Ok(())
    }
}
