//! Randomized fault runs: the sweep's unit of work. One seed picks a cluster size, network and
//! node settings, a client workload and a schedule of faults; the run then heals everything and
//! requires the cluster to elect a leader and commit a new command (liveness).
//!
//! With `reconfig`, the cluster starts with some of its nodes as voters and the run also adds
//! and removes nodes, adds learners (some promoted by the leader once caught up), promotes them
//! and transfers leadership, concurrently with the faults; liveness then asks every member of
//! the final configuration to apply the new command.

use super::{Failure, Sim, SimOptions};
use crate::membership::{MemberAddrs, MemberChange};
use crate::rng::Rng;
use crate::types::NodeId;
use bytes::Bytes;

/// The shape of a chaos run.
#[derive(Clone, Debug)]
pub struct ChaosOptions {
    pub seed: u64,
    /// Cluster size; `None` picks 3 to 7 from the seed.
    pub nodes: Option<usize>,
    /// Virtual milliseconds of faults and load before healing.
    pub chaos_ms: u64,
    /// After healing, a leader must be elected and a command committed everywhere within this.
    pub liveness_ms: u64,
    /// Trace lines to keep (0 is fastest; a failing seed is re-run with lines to report).
    pub trace_lines: usize,
    /// Membership changes and leadership transfers during the run (replay a failing seed with
    /// `RAFTKV_RECONFIG=1`).
    pub reconfig: bool,
    /// Process faults: nodes paused for a while (then handling everything late) and clocks
    /// ticking at different rates (replay a failing seed with `RAFTKV_PROCESS_FAULTS=1`).
    pub process_faults: bool,
    /// Leader leases (thesis §6.4.1) under a drift bound drawn from the seed, each node's clock
    /// rate skewed within it, and follower reads (thesis §6.4): reads go to any node (replay a
    /// failing seed with `RAFTKV_READS=1`).
    pub lease_and_follower_reads: bool,
}

impl ChaosOptions {
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            nodes: None,
            chaos_ms: 5_000,
            liveness_ms: 10_000,
            trace_lines: 0,
            reconfig: false,
            process_faults: false,
            lease_and_follower_reads: false,
        }
    }

    /// Lease and follower reads, with process faults, membership changes and leadership
    /// transfers (which end leases) among the faults.
    pub fn with_reads(seed: u64) -> Self {
        Self {
            reconfig: true,
            process_faults: true,
            lease_and_follower_reads: true,
            ..Self::new(seed)
        }
    }

    /// The same run with process faults: pauses and clock-rate skew.
    pub fn with_process_faults(seed: u64) -> Self {
        Self {
            process_faults: true,
            ..Self::new(seed)
        }
    }

    /// The same run with membership changes and leadership transfers.
    pub fn with_reconfig(seed: u64) -> Self {
        Self {
            reconfig: true,
            ..Self::new(seed)
        }
    }
}

/// What a passing run did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChaosReport {
    pub nodes: usize,
    pub events: u64,
    pub faults: u64,
    pub committed: u64,
    pub reads: u64,
    /// Membership changes and leadership transfers the leader accepted.
    pub changes: u64,
    pub transfers: u64,
    pub trace_hash: u64,
    /// Virtual milliseconds from healing to the liveness command being applied everywhere.
    pub recovery_ms: u64,
}

/// Runs one seed. On failure, re-runs it with a trace so that the report has the tail.
pub fn run(opts: &ChaosOptions) -> Result<ChaosReport, Failure> {
    let result = match run_once(opts) {
        Err(f) if opts.trace_lines == 0 => {
            let traced = ChaosOptions {
                trace_lines: 40,
                ..opts.clone()
            };
            Err(run_once(&traced).err().unwrap_or(f))
        }
        other => other,
    };
    result.map_err(|mut f| {
        if opts.reconfig {
            f.message = format!("(with reconfiguration: RAFTKV_RECONFIG=1) {}", f.message);
        }
        if opts.process_faults {
            f.message = format!(
                "(with process faults: RAFTKV_PROCESS_FAULTS=1) {}",
                f.message
            );
        }
        if opts.lease_and_follower_reads {
            f.message = format!(
                "(with lease and follower reads: RAFTKV_READS=1) {}",
                f.message
            );
        }
        f
    })
}

fn run_once(opts: &ChaosOptions) -> Result<ChaosReport, Failure> {
    let mut rng = Rng::new(opts.seed ^ 0x00C4_A05C_4A05);
    let nodes = opts.nodes.unwrap_or_else(|| rng.range(3, 8) as usize);
    let mut so = SimOptions::new(nodes, opts.seed);
    so.trace_lines = opts.trace_lines;
    so.net.latency_ms_max = rng.range(1, 8);
    so.net.duplicate = if rng.chance(0.5) { 0.02 } else { 0.0 };
    so.disk_latency_ms = (0, rng.range(1, 10));
    so.snapshot_entries = rng.chance(0.7).then(|| rng.range(3, 40));
    so.config.pre_vote = rng.chance(0.8);
    so.config.check_quorum = rng.chance(0.8);
    so.config.snapshot_chunk_bytes_max = rng.range(16, 512) as usize;
    so.config.inflight_appends_max = rng.range(1, 9) as usize;
    // From the seed, not the generator: the draws after it (and so each seed's run) stay.
    so.config.partial_appends_inflight_max = (opts.seed % 3 + 1) as usize;
    so.config.append_entries_max = rng.range(1, 17) as usize;
    // Reconfiguration draws from its own generator, so that runs without it are unchanged.
    let mut rc = Rng::new(opts.seed ^ 0x5EC0_4F16_C0DE);
    if opts.reconfig {
        so.voters = Some(if rc.chance(0.5) {
            3
        } else {
            rc.range(1, nodes as u64 + 1) as usize
        });
        so.config.promote_lag_entries_max = rc.range(0, 30);
    }
    // Reads draw from their own generator too.
    let mut rd = Rng::new(opts.seed ^ 0x00EA_D5EA_D500);
    let reads_anywhere = opts.lease_and_follower_reads;
    let mut clock_periods = Vec::new();
    if reads_anywhere {
        so.config.lease_reads = true;
        so.config.follower_reads = true;
        so.config.check_quorum = true;
        // thesis §6.4.1: the stated drift bound, and clock rates that keep to it: tick periods
        // whose largest is at most (100 + drift)% of the smallest.
        let drift = rd.range(0, 51);
        so.config.lease_clock_drift_percent = drift;
        let (base, slowest) = (so.tick_ms, so.tick_ms * (100 + drift) / 100);
        clock_periods = (0..nodes).map(|_| rd.range(base, slowest + 1)).collect();
    }
    let mut sim = Sim::new(so);
    for (i, ms) in clock_periods.into_iter().enumerate() {
        sim.set_tick_ms(i, ms);
    }
    let n = nodes;
    let mut next_reconfig = rc.range(200, 600);
    // Process faults draw from their own generator too.
    let mut pf = Rng::new(opts.seed ^ 0x0050_A05E_D0C1);
    let mut next_pause = pf.range(200, 1_000);
    if opts.process_faults && !reads_anywhere {
        // Clock-rate skew: each node's tick is 8–12 ms where the others' may be 10 (±20%).
        let tick = sim.opts.tick_ms;
        for i in 0..n {
            if pf.chance(0.7) {
                let ms = pf.range(tick - tick / 5, tick + tick / 5 + 1);
                sim.set_tick_ms(i, ms);
            }
        }
    }

    let mut faults = 0u64;
    // Faults come every 50–1,200 ms: short gaps catch leaders before their no-op commits
    // (the Figure 8 window), long ones let the cluster make progress between faults.
    let mut next_fault = rng.range(300, 800);
    let mut next_op = 0u64;
    let mut cmd = 0u64;
    let mut reads = 0u64;
    while sim.now_ms() < opts.chaos_ms {
        sim.run_for(10)?;
        let now = sim.now_ms();
        if now >= next_op {
            next_op = now + rng.range(5, 60);
            let target = match sim.leader() {
                Some(l) if rng.chance(0.85) => l,
                _ => rng.range(0, n as u64) as usize,
            };
            // Reads anywhere: half go to a node at random (a follower forwards them).
            let target = match reads_anywhere && rd.chance(0.5) {
                true => rd.range(0, n as u64) as usize,
                false => target,
            };
            if rng.chance(0.2) {
                reads += sim.read(target).is_ok() as u64;
            } else {
                cmd += 1;
                let _ = sim.propose(target, command(opts.seed, cmd));
            }
        }
        if now >= next_fault {
            next_fault = now
                + if rng.chance(0.4) {
                    rng.range(50, 300)
                } else {
                    rng.range(300, 1_200)
                };
            faults += 1;
            inject_fault(&mut sim, &mut rng);
        }
        if opts.process_faults && now >= next_pause {
            next_pause = now + pf.range(100, 1_200);
            faults += 1;
            // Pause the leader half the time (a stalled leader is the interesting case), for
            // less or more than an election timeout.
            let i = match sim.leader() {
                Some(l) if pf.chance(0.5) => l,
                _ => pf.range(0, n as u64) as usize,
            };
            let ms = if pf.chance(0.5) {
                pf.range(10, 300)
            } else {
                pf.range(300, 2_000)
            };
            sim.pause(i, ms);
        }
        if opts.reconfig && now >= next_reconfig {
            next_reconfig = now + rc.range(50, 700);
            reconfigure(&mut sim, &mut rc);
        }
    }

    // Heal everything; the cluster must recover.
    let healed_at = sim.now_ms();
    sim.heal();
    sim.set_unreliable(false);
    sim.set_long_reordering(false);
    for i in 0..n {
        sim.restart(i);
    }
    let deadline = healed_at + opts.liveness_ms;
    cmd += 1;
    let probe = command(opts.seed, cmd);
    let mut proposed: Option<u64> = None;
    let mut proposed_at = 0;
    loop {
        if sim.now_ms() >= deadline {
            let states: Vec<String> = (0..n)
                .filter_map(|i| sim.raft(i).map(|r| r.describe()))
                .collect();
            return Err(sim.fail(format!(
                "liveness: no command committed on every member within {} ms of healing (proposed at {proposed:?})\n{}",
                opts.liveness_ms,
                states.join("\n")
            )));
        }
        if let Some(index) = proposed {
            let (_, got) = sim.n_committed(index);
            if got.as_ref() == Some(&probe) && members_applied(&sim, index) {
                break;
            }
            // Lost to a leader change (another command took its index, or nothing commits
            // there within 2 s, as the 6.5840 tester's one() allows): propose again.
            if got.is_some() && got.as_ref() != Some(&probe) || sim.now_ms() > proposed_at + 2_000 {
                proposed = None;
            }
        }
        if proposed.is_none() {
            if let Some(l) = sim.leader() {
                proposed = sim.propose(l, probe.clone()).ok().map(|(i, _)| i);
                proposed_at = sim.now_ms();
            }
        }
        sim.run_for(10)?;
    }
    Ok(ChaosReport {
        nodes: n,
        events: sim.events_processed(),
        faults,
        committed: sim.checker.commit_max,
        reads,
        changes: sim.stats.changes_accepted,
        transfers: sim.stats.transfers_started,
        trace_hash: sim.trace_hash(),
        recovery_ms: sim.now_ms() - healed_at,
    })
}

/// A unique command for this seed.
fn command(seed: u64, n: u64) -> Bytes {
    let mut b = Vec::with_capacity(16);
    b.extend_from_slice(&seed.to_le_bytes());
    b.extend_from_slice(&n.to_le_bytes());
    Bytes::from(b)
}

fn inject_fault(sim: &mut Sim, rng: &mut Rng) {
    let n = sim.n();
    let pick = |rng: &mut Rng| rng.range(0, n as u64) as usize;
    match rng.range(0, 11) {
        // Crash the leader, or restart a crashed node: churn at the top is where Raft's
        // election and commitment rules (§5.4) are tested hardest.
        9 | 10 => match sim.leader() {
            Some(l) => sim.crash(l),
            None => {
                let i = pick(rng);
                sim.restart(i);
            }
        },
        0 | 1 => {
            let i = pick(rng);
            if sim.is_up(i) {
                sim.crash(i);
            } else {
                sim.restart(i);
            }
        }
        2 => {
            for i in 0..n {
                sim.restart(i);
            }
        }
        3 => {
            let mut groups = vec![Vec::new(), Vec::new()];
            for i in 0..n {
                groups[rng.range(0, 2) as usize].push(i);
            }
            sim.partition(&groups);
        }
        4 => {
            let i = pick(rng);
            sim.disconnect(i);
        }
        5 => {
            let (a, b) = (pick(rng), pick(rng));
            if a != b {
                sim.block_one_way(a, b);
            }
        }
        6 => sim.heal(),
        7 => {
            let on = !sim.opts.net.unreliable;
            sim.set_unreliable(on);
        }
        _ => {
            let on = !sim.opts.net.long_reordering;
            sim.set_long_reordering(on);
        }
    }
}

/// True if every member of the leader's configuration (every node, without reconfiguration)
/// applied the command at `index`.
fn members_applied(sim: &Sim, index: u64) -> bool {
    let Some(members) = sim
        .leader()
        .and_then(|l| sim.raft(l))
        .map(|r| r.membership().members())
    else {
        return false;
    };
    members
        .iter()
        .all(|id| sim.nodes[*id as usize - 1].sm.commands.contains_key(&index))
}

/// One membership change or leadership transfer at the current leader, picked at random:
/// add a learner (promoted by the leader once caught up, or not), add a voter, promote a
/// learner, remove a member (the leader too), replace a voter, transfer leadership. Refusals
/// (a change in progress, an unhealthy quorum, ...) are part of the test.
fn reconfigure(sim: &mut Sim, rng: &mut Rng) {
    let n = sim.n();
    let Some(leader) = sim.leader() else {
        return;
    };
    let Some(m) = sim.raft(leader).map(|r| r.membership().clone()) else {
        return;
    };
    let index = |id: &NodeId| *id as usize - 1;
    let outsiders: Vec<usize> = (0..n).filter(|i| !m.contains(*i as NodeId + 1)).collect();
    let voters: Vec<usize> = m.voters().iter().map(index).collect();
    let learners: Vec<usize> = m.learners().iter().map(index).collect();
    let members: Vec<usize> = m.members().iter().map(index).collect();
    let pick = |rng: &mut Rng, from: &[usize]| -> Option<NodeId> {
        (!from.is_empty()).then(|| from[rng.range(0, from.len() as u64) as usize] as NodeId + 1)
    };
    let addrs = |id: NodeId| MemberAddrs::new(format!("sim-peer-{id}"), format!("sim-client-{id}"));
    let mut changes = Vec::new();
    match rng.range(0, 12) {
        0..=2 => {
            if let Some(id) = pick(rng, &outsiders) {
                let auto_promote = rng.chance(0.6);
                changes.push(MemberChange::AddLearner {
                    id,
                    addrs: addrs(id),
                    auto_promote,
                });
            }
        }
        3 => {
            if let Some(id) = pick(rng, &outsiders) {
                changes.push(MemberChange::AddVoter {
                    id,
                    addrs: addrs(id),
                });
            }
        }
        4 | 5 => changes.extend(pick(rng, &learners).map(|id| MemberChange::Promote { id })),
        6 | 7 if members.len() > 2 => {
            changes.extend(pick(rng, &members).map(|id| MemberChange::Remove { id }))
        }
        8 => {
            // Replace a voter: add one, remove another, in one change.
            if let (Some(add), Some(remove)) = (pick(rng, &outsiders), pick(rng, &voters)) {
                changes.push(MemberChange::AddVoter {
                    id: add,
                    addrs: addrs(add),
                });
                changes.push(MemberChange::Remove { id: remove });
            }
        }
        9 => {
            // Several at once: promote every learner and remove a voter.
            changes.extend(learners.iter().map(|i| MemberChange::Promote {
                id: *i as NodeId + 1,
            }));
            if voters.len() > 1 {
                changes.extend(pick(rng, &voters).map(|id| MemberChange::Remove { id }));
            }
        }
        _ => {
            // Mostly to a voter; sometimes to anyone (refused unless a voter).
            let target = match rng.chance(0.85) {
                true => pick(rng, &voters),
                false => Some(rng.range(1, n as u64 + 1)),
            };
            if let Some(target) = target {
                let _ = sim.transfer(leader, target as usize - 1);
            }
            return;
        }
    }
    if !changes.is_empty() {
        let _ = sim.change(leader, &changes);
    }
}
