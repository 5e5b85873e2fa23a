//! Golden interaction scripts (toydb's goldenscript style) for cross-cutting protocol behaviour.
//! Each file in `tests/golden/` is a script of commands and their expected output; regenerate
//! with `UPDATE_GOLDENFILES=1 cargo test -p raftkv-raft --test golden` and review the diff.
//!
//! Commands: `cluster nodes=N [prevote=BOOL] [checkquorum=BOOL]`, `tick [IDS..] [count=N]`,
//! `run ticks=N [verbose=BOOL]` (all nodes tick, then every message is delivered, N times),
//! `campaign ID`, `propose ID DATA`, `read ID READ_ID..`, `deliver [IDS..]`, `stabilize`,
//! `partition GROUP GROUP..` (a group is ids joined by dashes, e.g. `1-2 3`), `isolate ID`,
//! `heal`, `crash ID`, `restart ID`, `snapshot ID`, `status [IDS..]`, `log [IDS..]`.
//! Reconfiguration: `add-node ID` (a node with no configuration, to be added), `change ID
//! OP=NODE..` (OP: `voter`, `learner`, `learner-auto` (promoted once caught up), `promote`,
//! `remove`; several at once), `transfer ID TARGET`, `members [IDS..]`.

use bytes::Bytes;
use goldenscript::{Command, Runner};
use raftkv_raft::sim::manual::ManualCluster;
use raftkv_raft::{Config, MemberAddrs, MemberChange, NodeId};
use std::error::Error;
use std::fmt::Write as _;

#[derive(Default)]
struct GoldenRunner {
    cluster: Option<ManualCluster>,
}

fn ids(args: &[&goldenscript::Argument]) -> Result<Vec<NodeId>, Box<dyn Error>> {
    args.iter().map(|a| Ok(a.value.parse()?)).collect()
}

impl Runner for GoldenRunner {
    fn run(&mut self, cmd: &Command) -> Result<String, Box<dyn Error>> {
        let mut args = cmd.consume_args();
        if cmd.name == "cluster" {
            let nodes: u64 = args.lookup_parse("nodes")?.unwrap_or(3);
            let mut config = Config::new(1, [1]);
            config.pre_vote = args.lookup_parse("prevote")?.unwrap_or(true);
            config.check_quorum = args.lookup_parse("checkquorum")?.unwrap_or(true);
            config.snapshot_chunk_bytes_max = args.lookup_parse("chunk")?.unwrap_or(64);
            config.append_entries_max = args.lookup_parse("batch")?.unwrap_or(64);
            // The scripts were written for partial Appends that wait for every answer.
            config.partial_appends_inflight_max = args.lookup_parse("partial")?.unwrap_or(1);
            config.promote_lag_entries_max = args.lookup_parse("promote_lag")?.unwrap_or(0);
            args.reject_rest()?;
            self.cluster = Some(ManualCluster::new(nodes, config)?);
            return Ok(String::new());
        }
        let c = self
            .cluster
            .as_mut()
            .ok_or("no cluster: start with `cluster`")?;
        let mut out = String::new();
        match cmd.name.as_str() {
            "tick" => {
                let count: u64 = args.lookup_parse("count")?.unwrap_or(1);
                let mut targets = ids(&args.rest_pos())?;
                if targets.is_empty() {
                    targets = c
                        .ids()
                        .into_iter()
                        .filter(|id| c.raft(*id).is_some())
                        .collect();
                }
                for id in targets {
                    c.tick(id, count)?;
                }
            }
            "run" => {
                // Time passes with an instant network: every live node ticks, then every
                // message is delivered, `ticks` times. Only state changes are shown, unless
                // `verbose=true`.
                let ticks: u64 = args.lookup_parse("ticks")?.unwrap_or(1);
                let verbose: bool = args.lookup_parse("verbose")?.unwrap_or(false);
                let mut lines = Vec::new();
                for _ in 0..ticks {
                    for id in c.ids() {
                        if c.raft(id).is_some() {
                            c.tick(id, 1)?;
                        }
                    }
                    c.stabilize(100)?;
                    lines.extend(
                        c.take_output()
                            .into_iter()
                            .filter(|l| verbose || !l.contains(" → ")),
                    );
                }
                for l in lines {
                    writeln!(out, "{l}")?;
                }
            }
            "campaign" => c.campaign(ids(&args.rest_pos())?[0])?,
            "propose" => {
                let id: NodeId = args.next_pos().ok_or("propose ID DATA")?.value.parse()?;
                let data = args.next_pos().ok_or("propose ID DATA")?.value.clone();
                match c.propose(id, Bytes::from(data))? {
                    Ok(index) => writeln!(out, "n{id} proposed at index {index}")?,
                    Err(e) => writeln!(out, "n{id} refused: {e}")?,
                }
            }
            "read" => {
                // Several read ids are requested together, before the node is processed.
                let id: NodeId = args.next_pos().ok_or("read ID READ_ID..")?.value.parse()?;
                let read_ids = ids(&args.rest_pos())?;
                for (read_id, result) in read_ids.iter().zip(c.read(id, &read_ids)?) {
                    if let Err(e) = result {
                        writeln!(out, "n{id} refused read {read_id}: {e}")?;
                    }
                }
            }
            "deliver" => {
                c.deliver(&ids(&args.rest_pos())?);
            }
            "stabilize" => c.stabilize(args.lookup_parse("rounds")?.unwrap_or(100))?,
            "partition" => {
                let groups = args
                    .rest_pos()
                    .iter()
                    .map(|g| g.value.split('-').map(|s| s.parse()).collect())
                    .collect::<Result<Vec<Vec<NodeId>>, _>>()?;
                c.partition(&groups);
            }
            "isolate" => {
                let id = ids(&args.rest_pos())?[0];
                let rest: Vec<NodeId> = c.ids().into_iter().filter(|i| *i != id).collect();
                c.partition(&[vec![id], rest]);
            }
            "heal" => c.heal(),
            "add-node" => c.add_node(ids(&args.rest_pos())?[0])?,
            "change" => {
                let id: NodeId = args
                    .next_pos()
                    .ok_or("change ID OP=NODE..")?
                    .value
                    .parse()?;
                let mut changes = Vec::new();
                for arg in args.rest_key() {
                    let node: NodeId = arg.value.parse()?;
                    let addrs = MemberAddrs::new(format!("peer{node}"), format!("client{node}"));
                    changes.push(match arg.key.as_deref() {
                        Some("voter") => MemberChange::AddVoter { id: node, addrs },
                        Some("learner") | Some("learner-auto") => MemberChange::AddLearner {
                            id: node,
                            addrs,
                            auto_promote: arg.key.as_deref() == Some("learner-auto"),
                        },
                        Some("promote") => MemberChange::Promote { id: node },
                        Some("remove") => MemberChange::Remove { id: node },
                        other => return Err(format!("unknown change {other:?}").into()),
                    });
                }
                match c.change(id, &changes)? {
                    Ok(index) => writeln!(out, "n{id} proposed the change at index {index}")?,
                    Err(e) => writeln!(out, "n{id} refused the change: {e}")?,
                }
            }
            "transfer" => {
                let targets = ids(&args.rest_pos())?;
                let (id, target) = (targets[0], targets[1]);
                if let Err(e) = c.transfer(id, target)? {
                    writeln!(out, "n{id} refused the transfer: {e}")?;
                }
            }
            "members" => {
                let mut targets = ids(&args.rest_pos())?;
                if targets.is_empty() {
                    targets = c.ids();
                }
                for id in targets {
                    match c.raft(id) {
                        Some(r) => {
                            let removed = if r.is_removed() { " (removed)" } else { "" };
                            writeln!(out, "n{id} {}{removed}", r.membership())?
                        }
                        None => writeln!(out, "n{id} crashed")?,
                    }
                }
            }
            "crash" => c.crash(ids(&args.rest_pos())?[0])?,
            "restart" => c.restart(ids(&args.rest_pos())?[0])?,
            "snapshot" => {
                let id = ids(&args.rest_pos())?[0];
                match c.snapshot(id)? {
                    Ok(last) => writeln!(out, "n{id} snapshot at {last}")?,
                    Err(e) => writeln!(out, "n{id} snapshot refused: {e}")?,
                }
            }
            "status" | "log" => {
                let mut targets = ids(&args.rest_pos())?;
                if targets.is_empty() {
                    targets = c.ids();
                }
                for id in targets {
                    let line = if cmd.name == "status" {
                        c.status(id)
                    } else {
                        c.log(id)
                    };
                    writeln!(out, "{line}")?;
                }
            }
            other => return Err(format!("unknown command {other}").into()),
        }
        args.reject_rest()?;
        let mut lines = c.take_output().join("\n");
        if !lines.is_empty() {
            lines.push('\n');
        }
        Ok(lines + &out)
    }

    fn end_command(&mut self, _: &Command) -> Result<String, Box<dyn Error>> {
        // Every node's invariants hold after every command.
        if let Some(c) = &self.cluster {
            for id in c.ids() {
                if let Some(r) = c.raft(id) {
                    r.check_invariants();
                    assert_eq!(r.stats().protocol_violations, 0, "n{id} saw a violation");
                }
            }
        }
        Ok(String::new())
    }
}

#[test]
fn golden_scripts() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/golden exists")
        .map(|e| e.expect("readable dir entry").path())
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no golden scripts in {}", dir.display());
    for path in paths {
        goldenscript::run(&mut GoldenRunner::default(), &path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}
