//! Configurations: which replica group serves each shard, and where each group's members are.

use std::collections::BTreeMap;

use raftkv_kv::protocol::CLIENT_FRAME_BYTES_MAX;
use raftkv_kv::state::SessionConfig;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A replica group's id. 0 is never a group: it marks an unassigned shard.
pub type Gid = u64;

/// A shard's number, `0..shards`.
pub type ShardId = u32;

/// The shard count a controller is created with unless told otherwise: 256 rebalances evenly
/// across tens of groups (30 groups hold 8 or 9 shards each, a 1.125 ratio between the most
/// and least loaded; 64 shards would give 2 or 3, a 1.5 ratio), while a configuration stays
/// small (256 gids) and a shard stays a coarse unit of migration.
pub const SHARDS_DEFAULT: u32 = 256;

/// At most this many shards per controller (a configuration carries one gid per shard).
pub const SHARDS_MAX: u32 = 4096;

/// One numbered configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ShardConfig {
    /// Config 0 is the empty one; each Join, Leave or Move makes the next.
    pub num: u64,
    /// shard → gid (0: unassigned). Invariant: length = the controller's shard count, and
    /// every gid in it is 0 or a key of `groups`.
    pub shards: Vec<Gid>,
    /// gid → the client addresses of the group's members.
    pub groups: BTreeMap<Gid, Vec<String>>,
}

impl ShardConfig {
    /// Config 0: every one of `shards` shards unassigned, no groups.
    pub fn empty(shards: u32) -> Self {
        Self {
            num: 0,
            shards: vec![0; shards as usize],
            groups: BTreeMap::new(),
        }
    }

    /// How many shards `gid` serves.
    pub fn count_of(&self, gid: Gid) -> usize {
        self.shards.iter().filter(|&&g| g == gid).count()
    }

    /// The gid serving `shard`, if the shard exists (0: unassigned).
    pub fn gid_of(&self, shard: ShardId) -> Option<Gid> {
        self.shards.get(shard as usize).copied()
    }
}

/// How a controller is created: its shard count (fixed for its life) and its bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControllerConfig {
    /// 1..=[`SHARDS_MAX`].
    pub shards: u32,
    /// At most this many groups in a configuration.
    pub groups_max: usize,
    /// At most this many member addresses per group (and at least one).
    pub addrs_per_group_max: usize,
    /// At most this many bytes per address.
    pub addr_bytes_max: usize,
    /// At most this many configurations (config 0 included); beyond it changes are refused.
    /// Every configuration is kept, stored as its change from the one before; the memory this
    /// bounds is worked out in [`crate::state`].
    pub configs_max: u64,
    /// The exactly-once session table's expiry and bound (as the KV service's).
    pub sessions: SessionConfig,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            shards: SHARDS_DEFAULT,
            groups_max: 256,
            addrs_per_group_max: 9,
            addr_bytes_max: 256,
            configs_max: 1 << 16,
            sessions: SessionConfig {
                ttl_ms: 10 * 60 * 1000,
                sessions_max: 100_000,
            },
        }
    }
}

impl ControllerConfig {
    /// A default configuration with `shards` shards.
    pub fn with_shards(shards: u32) -> Self {
        Self {
            shards,
            ..Self::default()
        }
    }

    /// An upper bound on the encoded size of one configuration (postcard: at most 10 bytes per
    /// integer, 5 per length) under these bounds.
    pub fn config_bytes_max(&self) -> usize {
        let group = 10
            + 5
            + self
                .addrs_per_group_max
                .saturating_mul(5 + self.addr_bytes_max);
        (10 + 5 + 5 + self.shards as usize * 10)
            .saturating_add(self.groups_max.saturating_mul(group))
    }

    /// Checks the configuration itself: the shard count, and that the largest configuration
    /// these bounds allow fits in one client frame (a `Query` answer must).
    pub fn validate(&self) -> Result<(), CtrlError> {
        if self.shards == 0 || self.shards > SHARDS_MAX {
            return Err(CtrlError::ShardCount {
                shards: self.shards,
                max: SHARDS_MAX,
            });
        }
        let bytes = self.config_bytes_max();
        if bytes > CLIENT_FRAME_BYTES_MAX - 1024 {
            return Err(CtrlError::ConfigTooLarge {
                bytes,
                max: CLIENT_FRAME_BYTES_MAX - 1024,
            });
        }
        Ok(())
    }
}

/// Expected failures of a controller operation (never a broken invariant).
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum CtrlError {
    /// Gid 0 marks unassigned shards; no group has it.
    #[error("gid 0 is reserved for unassigned shards")]
    ZeroGid,
    /// A Leave or Move named a group that is not in the latest configuration.
    #[error("group {gid} is not in the latest configuration")]
    UnknownGid { gid: Gid },
    /// A Join named a group that is already in the latest configuration.
    #[error("group {gid} has already joined")]
    GidAlreadyJoined { gid: Gid },
    /// A Leave named the same group twice.
    #[error("group {gid} named twice")]
    DuplicateGid { gid: Gid },
    #[error("shard {shard} is out of range (the controller has {shards} shards)")]
    ShardOutOfRange { shard: ShardId, shards: u32 },
    /// A Join or Leave that names no group.
    #[error("the operation names no group")]
    NoGroups,
    #[error("a Join would make {groups} groups (at most {max})")]
    TooManyGroups { groups: usize, max: usize },
    /// A group needs at least one member and at most the bound.
    #[error("group {gid} has {addrs} member addresses (1 to {max} allowed)")]
    AddrCount { gid: Gid, addrs: usize, max: usize },
    #[error("an address of group {gid} has {bytes} bytes (at most {max})")]
    AddrTooLong { gid: Gid, bytes: usize, max: usize },
    /// The controller holds its maximum number of configurations.
    #[error("the controller holds its maximum of {max} configurations")]
    ConfigsFull { max: u64 },
    /// The bounds allow a configuration too large for one client frame.
    #[error("the bounds allow configurations of {bytes} bytes (at most {max})")]
    ConfigTooLarge { bytes: usize, max: usize },
    #[error("a controller has 1 to {max} shards, not {shards}")]
    ShardCount { shards: u32, max: u32 },
    /// The session expired before this change was applied: it was not applied and never will
    /// be, so it may be sent again under a new session.
    #[error("the client session expired; the change was not applied")]
    SessionExpired,
    /// The session expired and either this change had been applied before (its outcome is no
    /// longer kept) or the session's record is gone too: it may or may not have been applied.
    #[error("the client session expired; whether the change was applied is no longer known")]
    Forgotten,
    /// A request older than the session's last applied one.
    #[error("stale request: a later request of this session was already applied")]
    Stale,
    #[error("malformed command")]
    Malformed,
}
