//! [`ControllerStateMachine`]: the replicated shard controller — a numbered list of
//! configurations, changed by `Join`, `Leave` and `Move`, read by `Query` — applied from the
//! Raft log, with exactly-once client sessions.
//!
//! **Configurations.** Config 0 has no groups and every shard unassigned (gid 0). Each applied
//! change makes the next config: `Join` adds groups and rebalances, `Leave` removes groups and
//! rebalances ([`crate::rebalance`]), `Move` hands one shard to one group and does not
//! rebalance (the next Join or Leave may move it again). A change that fails validation makes
//! no config and answers a [`CtrlError`]. `Query(None)` — and, as in 6.5840, `Query(n)` for an
//! `n` beyond the latest — answers the latest config.
//!
//! **Memory.** Every config stays answerable, and memory is bounded as follows. Config `n` is
//! stored as its change from config `n - 1` (gids joined and left, shards that moved: 8 bytes
//! per gid, 12 per moved shard); each Join's addresses are stored once, in an address table
//! keyed by (gid, the config the Join made); a full copy of the shard list and of the gids
//! (without addresses) is kept every [`CHECKPOINT_EVERY`] configs, so a historical query
//! replays at most `CHECKPOINT_EVERY - 1` changes. The number of configs is bounded by
//! `configs_max` (beyond it changes get [`CtrlError::ConfigsFull`]), so the total is at most
//! `configs_max × (shards × 12 B + one Join's addresses) + configs_max / CHECKPOINT_EVERY ×
//! (shards × 8 B + groups_max × 16 B)`. With the defaults (256 shards, 65,536 configs, 256
//! groups) the checkpoints take 6 MB; the changes take 200 MB only if every change moved every
//! shard — a Move moves one, and a Join or Leave of one group among `g` about `256 / g`.
//!
//! **Exactly-once** (the KV service's [`SessionTable`]): a client registers a session and
//! numbers its changes; a retried change is answered with its first result (success or error)
//! and never applied twice. A change of an expired session is never applied: it is answered
//! `SessionExpired` when it was not applied before (it may be sent again under a new session)
//! and `Forgotten` when an earlier copy was, or the session's record is gone (issue 21 #12).

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use raftkv_kv::session::{Check, SessionCommand, SessionTable};
use raftkv_raft::{Index, StateMachine};
use serde::{Deserialize, Serialize};

use crate::config::{ControllerConfig, CtrlError, Gid, ShardConfig, ShardId};
use crate::rebalance::rebalance;

/// A full copy of every config whose number is a multiple of this is kept.
pub const CHECKPOINT_EVERY: u64 = 64;

/// A change to the configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CtrlOp {
    /// New groups (gid → member client addresses); shards are rebalanced over all groups.
    Join { groups: BTreeMap<Gid, Vec<String>> },
    /// Groups leave; their shards are rebalanced over the remaining ones.
    Leave { gids: Vec<Gid> },
    /// `shard` is served by `gid` from the next config on.
    Move { shard: ShardId, gid: Gid },
}

/// What goes into a Raft entry: kv's session command carrying a [`CtrlOp`] (one
/// implementation of registrations and numbered requests for both services; the same bytes as
/// before it was shared).
pub type Command = SessionCommand<CtrlOp>;

/// A read: config `num` (`None`: the latest).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Query {
    pub num: Option<u64>,
}

impl Query {
    pub fn encode(&self) -> Bytes {
        Bytes::from(postcard::to_allocvec(self).expect("queries always encode"))
    }
}

/// The result of applying a command or serving a query.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Registered {
        session: u64,
    },
    /// The change was applied; it made config `num`.
    Changed {
        num: u64,
    },
    Config(ShardConfig),
    Err(CtrlError),
}

/// What a session remembers of its last change: small (no configs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
enum Cached {
    /// No change yet (a request numbered 0 is never new).
    #[default]
    Nothing,
    Changed(u64),
    Err(CtrlError),
}

/// What a change does to the latest config (addresses included).
#[derive(Default)]
struct Plan {
    joined: BTreeMap<Gid, Vec<String>>,
    left: Vec<Gid>,
    /// (shard, its new gid), shards ascending.
    moved: Vec<(ShardId, Gid)>,
}

/// How config `n + 1` differs from config `n`. The joined groups' addresses are in
/// [`ControllerStateMachine`]'s address table under (gid, `n + 1`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Delta {
    joined: Vec<Gid>,
    left: Vec<Gid>,
    /// (shard, its new gid), shards ascending.
    moved: Vec<(ShardId, Gid)>,
}

/// A config without addresses: each group names the config whose Join added it, which keys
/// its addresses in the address table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Compact {
    num: u64,
    shards: Vec<Gid>,
    /// gid → the number of the config that joined it.
    groups: BTreeMap<Gid, u64>,
}

impl Compact {
    fn apply(&mut self, delta: &Delta) {
        self.num += 1;
        for gid in &delta.left {
            self.groups.remove(gid);
        }
        for &gid in &delta.joined {
            self.groups.insert(gid, self.num);
        }
        for &(shard, gid) in &delta.moved {
            self.shards[shard as usize] = gid;
        }
    }
}

/// The shard controller's state machine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControllerStateMachine {
    config: ControllerConfig,
    /// The latest config. Invariant: `latest.num == deltas.len()`; its shard list has
    /// `config.shards` entries; every gid in it is a group of it; a shard is unassigned exactly
    /// when there are no groups; it equals `compact` with the addresses filled in.
    latest: ShardConfig,
    /// The latest config without addresses.
    compact: Compact,
    /// `deltas[i]` turns config `i` into config `i + 1`.
    deltas: Vec<Delta>,
    /// `checkpoints[k]` is config `k * CHECKPOINT_EVERY`, without addresses.
    /// Invariant: `checkpoints.len() == latest.num / CHECKPOINT_EVERY + 1`.
    checkpoints: Vec<Compact>,
    /// (gid, the config its Join made) → the group's addresses: each Join's addresses, once.
    addrs: BTreeMap<(Gid, u64), Vec<String>>,
    /// Its settings are `config.sessions` (not encoded: set again on restore).
    sessions: SessionTable<Cached>,
}

impl ControllerStateMachine {
    /// A controller with config 0 only. Fails if `config` is invalid (shard count).
    pub fn new(config: ControllerConfig) -> Result<Self, CtrlError> {
        config.validate()?;
        let zero = Compact {
            num: 0,
            shards: vec![0; config.shards as usize],
            groups: BTreeMap::new(),
        };
        Ok(Self {
            config,
            latest: ShardConfig::empty(config.shards),
            compact: zero.clone(),
            deltas: Vec::new(),
            checkpoints: vec![zero],
            addrs: BTreeMap::new(),
            sessions: SessionTable::new(config.sessions),
        })
    }

    pub fn controller_config(&self) -> &ControllerConfig {
        &self.config
    }

    /// The number of shards (fixed at creation).
    pub fn shards(&self) -> u32 {
        self.config.shards
    }

    pub fn latest(&self) -> &ShardConfig {
        &self.latest
    }

    /// Open sessions.
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// Config `num`; the latest for `None` or a number beyond it.
    pub fn query(&self, num: Option<u64>) -> ShardConfig {
        let num = match num {
            Some(n) if n < self.latest.num => n,
            _ => return self.latest.clone(),
        };
        let k = num / CHECKPOINT_EVERY;
        let mut compact = self.checkpoints[k as usize].clone();
        for delta in &self.deltas[(k * CHECKPOINT_EVERY) as usize..num as usize] {
            compact.apply(delta);
        }
        self.expand(&compact)
    }

    /// `compact` with its groups' addresses.
    fn expand(&self, compact: &Compact) -> ShardConfig {
        let groups = compact
            .groups
            .iter()
            .map(|(&gid, &joined)| {
                let addrs = self
                    .addrs
                    .get(&(gid, joined))
                    .expect("every joined group's addresses are in the table");
                (gid, addrs.clone())
            })
            .collect();
        ShardConfig {
            num: compact.num,
            shards: compact.shards.clone(),
            groups,
        }
    }

    /// Applies one command (the log index is the session id of a registration).
    pub fn apply_command(&mut self, index: Index, command: Command) -> Outcome {
        match command {
            Command::Register { now_ms } => Outcome::Registered {
                session: self.sessions.register(index, now_ms),
            },
            Command::Request {
                session,
                seq,
                now_ms,
                op,
            } => match self.sessions.check(session, seq, now_ms) {
                Check::Expired => Outcome::Err(CtrlError::SessionExpired),
                Check::Forgotten => Outcome::Err(CtrlError::Forgotten),
                Check::Stale => Outcome::Err(CtrlError::Stale),
                Check::Retry(cached) => outcome_of(cached),
                Check::New => {
                    let cached = match self.change(op) {
                        Ok(num) => Cached::Changed(num),
                        Err(e) => Cached::Err(e),
                    };
                    self.sessions.record(session, seq, cached);
                    outcome_of(cached)
                }
            },
        }
    }

    /// Applies a change without a session (tests, tools): validates, then makes the next config.
    pub fn change(&mut self, op: CtrlOp) -> Result<u64, CtrlError> {
        if self.latest.num.saturating_add(2) > self.config.configs_max {
            return Err(CtrlError::ConfigsFull {
                max: self.config.configs_max,
            });
        }
        let plan = self.plan(op)?;
        let num = self.latest.num + 1;
        let delta = Delta {
            joined: plan.joined.keys().copied().collect(),
            left: plan.left,
            moved: plan.moved,
        };
        for gid in &delta.left {
            self.latest.groups.remove(gid);
        }
        for (gid, addrs) in plan.joined {
            self.latest.groups.insert(gid, addrs.clone());
            self.addrs.insert((gid, num), addrs);
        }
        for &(shard, gid) in &delta.moved {
            self.latest.shards[shard as usize] = gid;
        }
        self.latest.num = num;
        self.compact.apply(&delta);
        self.deltas.push(delta);
        if num % CHECKPOINT_EVERY == 0 {
            self.checkpoints.push(self.compact.clone());
        }
        Ok(num)
    }

    /// The delta `op` makes from the latest config, or why it is refused.
    fn plan(&self, op: CtrlOp) -> Result<Plan, CtrlError> {
        let current = &self.latest;
        match op {
            CtrlOp::Join { groups } => {
                if groups.is_empty() {
                    return Err(CtrlError::NoGroups);
                }
                for (&gid, addrs) in &groups {
                    self.check_joining(gid, addrs)?;
                }
                let total = current.groups.len() + groups.len();
                if total > self.config.groups_max {
                    return Err(CtrlError::TooManyGroups {
                        groups: total,
                        max: self.config.groups_max,
                    });
                }
                let gids: BTreeSet<Gid> = current
                    .groups
                    .keys()
                    .chain(groups.keys())
                    .copied()
                    .collect();
                Ok(Plan {
                    moved: changed(&current.shards, &rebalance(&current.shards, &gids)),
                    joined: groups,
                    left: Vec::new(),
                })
            }
            CtrlOp::Leave { gids } => {
                if gids.is_empty() {
                    return Err(CtrlError::NoGroups);
                }
                let mut leaving = BTreeSet::new();
                for &gid in &gids {
                    self.check_present(gid)?;
                    if !leaving.insert(gid) {
                        return Err(CtrlError::DuplicateGid { gid });
                    }
                }
                let remaining: BTreeSet<Gid> = current
                    .groups
                    .keys()
                    .filter(|g| !leaving.contains(g))
                    .copied()
                    .collect();
                Ok(Plan {
                    moved: changed(&current.shards, &rebalance(&current.shards, &remaining)),
                    joined: BTreeMap::new(),
                    left: leaving.into_iter().collect(),
                })
            }
            CtrlOp::Move { shard, gid } => {
                if shard >= self.config.shards {
                    return Err(CtrlError::ShardOutOfRange {
                        shard,
                        shards: self.config.shards,
                    });
                }
                self.check_present(gid)?;
                Ok(Plan {
                    moved: vec![(shard, gid)],
                    ..Plan::default()
                })
            }
        }
    }

    fn check_present(&self, gid: Gid) -> Result<(), CtrlError> {
        if gid == 0 {
            return Err(CtrlError::ZeroGid);
        }
        if !self.latest.groups.contains_key(&gid) {
            return Err(CtrlError::UnknownGid { gid });
        }
        Ok(())
    }

    fn check_joining(&self, gid: Gid, addrs: &[String]) -> Result<(), CtrlError> {
        if gid == 0 {
            return Err(CtrlError::ZeroGid);
        }
        if self.latest.groups.contains_key(&gid) {
            return Err(CtrlError::GidAlreadyJoined { gid });
        }
        let max = self.config.addrs_per_group_max;
        if addrs.is_empty() || addrs.len() > max {
            return Err(CtrlError::AddrCount {
                gid,
                addrs: addrs.len(),
                max,
            });
        }
        let max = self.config.addr_bytes_max;
        if let Some(long) = addrs.iter().find(|a| a.len() > max) {
            return Err(CtrlError::AddrTooLong {
                gid,
                bytes: long.len(),
                max,
            });
        }
        Ok(())
    }

    /// Checks the invariants on the fields; the first broken one, named.
    pub fn validate(&self) -> Result<(), String> {
        self.config.validate().map_err(|e| e.to_string())?;
        let l = &self.latest;
        if l.num != self.deltas.len() as u64 {
            return Err("latest.num == deltas.len()".into());
        }
        if self.checkpoints.len() as u64 != l.num / CHECKPOINT_EVERY + 1 {
            return Err("one checkpoint per CHECKPOINT_EVERY configs".into());
        }
        if l.shards.len() != self.config.shards as usize {
            return Err("one gid per shard".into());
        }
        // Every stored config refers to addresses that exist and to shards in range, so that
        // no query of a restored snapshot can fail.
        let n = self.config.shards as usize;
        for c in self.checkpoints.iter().chain([&self.compact]) {
            if c.shards.len() != n {
                return Err("one gid per shard in every stored config".into());
            }
            if c.groups
                .iter()
                .any(|(&g, &j)| !self.addrs.contains_key(&(g, j)))
            {
                return Err("every group of a stored config has its addresses".into());
            }
        }
        for (i, d) in self.deltas.iter().enumerate() {
            let num = i as u64 + 1;
            if d.moved.iter().any(|&(s, _)| s as usize >= n) {
                return Err("every moved shard is in range".into());
            }
            if d.joined
                .iter()
                .any(|&g| !self.addrs.contains_key(&(g, num)))
            {
                return Err("every joined group has its addresses".into());
            }
        }
        if self.compact.num != l.num || self.expand(&self.compact) != *l {
            return Err("latest equals the compact config with its addresses".into());
        }
        if l.groups.len() > self.config.groups_max {
            return Err("groups are bounded".into());
        }
        self.sessions.validate()?;
        for &gid in &l.shards {
            if gid == 0 && !l.groups.is_empty() {
                return Err("every shard is assigned while a group exists".into());
            }
            if gid != 0 && !l.groups.contains_key(&gid) {
                return Err(format!("shard assigned to gid {gid}, which is not a group"));
            }
        }
        Ok(())
    }

    /// The invariants of the latest config alone (cheap: checked after every apply in debug
    /// builds, the simulator's included); panics naming the broken one.
    pub fn check_latest(&self) {
        let l = &self.latest;
        assert_eq!(
            l.num,
            self.deltas.len() as u64,
            "latest.num == deltas.len()"
        );
        assert_eq!(
            l.shards.len(),
            self.config.shards as usize,
            "one gid per shard"
        );
        assert!(
            l.groups.len() <= self.config.groups_max,
            "groups are bounded"
        );
        for &gid in &l.shards {
            assert!(
                gid != 0 || l.groups.is_empty(),
                "every shard is assigned while a group exists"
            );
            assert!(
                gid == 0 || l.groups.contains_key(&gid),
                "shards go to groups"
            );
        }
    }

    /// Panics naming a broken invariant.
    pub fn check_invariants(&self) {
        if let Err(rule) = self.validate() {
            panic!("controller invariant broken: {rule}");
        }
    }
}

/// The (shard, new gid) pairs that differ between two assignments.
fn changed(before: &[Gid], after: &[Gid]) -> Vec<(ShardId, Gid)> {
    before
        .iter()
        .zip(after)
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(s, (_, &b))| (ShardId::try_from(s).expect("shard counts fit in a u32"), b))
        .collect()
}

fn outcome_of(cached: Cached) -> Outcome {
    match cached {
        Cached::Nothing => Outcome::Err(CtrlError::Stale),
        Cached::Changed(num) => Outcome::Changed { num },
        Cached::Err(e) => Outcome::Err(e),
    }
}

impl StateMachine for ControllerStateMachine {
    type Response = Outcome;

    fn apply(&mut self, index: Index, command: &[u8]) -> Outcome {
        let outcome = match Command::decode(command) {
            Ok(c) => self.apply_command(index, c),
            Err(_) => Outcome::Err(CtrlError::Malformed),
        };
        if cfg!(debug_assertions) {
            self.check_latest();
        }
        outcome
    }

    fn query(&self, query: &[u8]) -> Outcome {
        match postcard::from_bytes::<Query>(query) {
            Ok(Query { num }) => Outcome::Config(ControllerStateMachine::query(self, num)),
            Err(_) => Outcome::Err(CtrlError::Malformed),
        }
    }

    fn snapshot(&self) -> Bytes {
        Bytes::from(postcard::to_allocvec(self).expect("state always encodes"))
    }

    fn restore(&mut self, data: &[u8]) -> Result<(), String> {
        let mut restored: Self =
            postcard::from_bytes(data).map_err(|e| format!("bad controller snapshot: {e}"))?;
        // The snapshot's settings, sessions' included, as before the table was shared.
        restored.sessions.set_config(restored.config.sessions);
        restored
            .validate()
            .map_err(|rule| format!("controller snapshot breaks an invariant: {rule}"))?;
        *self = restored;
        Ok(())
    }
}
