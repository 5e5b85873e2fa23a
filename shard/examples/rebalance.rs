//! Shows rebalancing: groups join one by one, then leave, on a controller of 256 shards; each
//! line gives the groups, the fewest and most shards a group serves, and how many shards moved.
//!
//! `cargo run --release -p raftkv-shard --example rebalance`

use std::collections::BTreeMap;

use raftkv_shard::rebalance::moves;
use raftkv_shard::state::CtrlOp;
use raftkv_shard::{ControllerConfig, ControllerStateMachine, CtrlError, Gid, ShardConfig};

fn line(before: &ShardConfig, after: &ShardConfig, what: &str) {
    let counts: Vec<usize> = after.groups.keys().map(|&g| after.count_of(g)).collect();
    println!(
        "config {:>3} {what:<10} groups {:>2}  shards per group {:>3}..{:<3}  moved {:>3}",
        after.num,
        after.groups.len(),
        counts.iter().min().unwrap_or(&0),
        counts.iter().max().unwrap_or(&0),
        moves(&before.shards, &after.shards),
    );
}

fn main() -> Result<(), CtrlError> {
    let mut c = ControllerStateMachine::new(ControllerConfig::default())?;
    for gid in 1..=40 as Gid {
        let before = c.latest().clone();
        let groups = BTreeMap::from([(gid, vec![format!("g{gid}.example:7000")])]);
        c.change(CtrlOp::Join { groups })?;
        line(&before, c.latest(), &format!("join {gid}"));
    }
    for gid in (1..=40 as Gid).step_by(3) {
        let before = c.latest().clone();
        c.change(CtrlOp::Leave { gids: vec![gid] })?;
        line(&before, c.latest(), &format!("leave {gid}"));
    }
    Ok(())
}
