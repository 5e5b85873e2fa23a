//! The raftkv sharding layer (work in progress: the shard controller).
pub mod config;
pub mod hash;
pub mod rebalance;
pub mod session;
pub mod state;

pub use config::{ControllerConfig, CtrlError, Gid, ShardConfig, ShardId, SHARDS_DEFAULT};
pub use hash::{key_hash, key_to_shard, ZeroShards};
pub use state::ControllerStateMachine;
pub mod clerk;
pub mod protocol;
pub mod service;
#[cfg(feature = "testing")]
pub mod testing;
