//! The 6.5840 tester's helpers on a [`super::Sim`] (check_one_leader, one, n_committed, ...).
//!
//! They follow the lab's `config.go` step by step, in virtual time, so that its Raft tests
//! (3A–3D) port one for one (`raft/tests/lab_3*.rs`). Where the two differ:
//! - The core appends a no-op when a leader starts its term (Raft §8), so commands do not sit
//!   at indexes 1, 2, 3, ...; [`Sim::n_committed`] counts commands only, so a no-op's index
//!   never counts as committed. Tests assert indexes relative to the previous command's.
//! - The lab's "apply error" (two servers apply different commands at one index) is the
//!   simulator's State Machine Safety check, made after every event.
//! - A failed check returns a [`Failure`] (with `RAFTKV_SEED` and the trace tail) instead of
//!   calling `t.Fatalf`; tests propagate it.
//! - "Connected" means live and connected: a crashed node is not asked anything.

use super::{Failure, Sim, SimOptions};
use crate::types::{Index, Term};
use bytes::Bytes;

/// The lab's `RaftElectionTimeout`: the tester allows an election to take this long (1 s).
pub const ELECTION_TIMEOUT_MS: u64 = 1_000;

/// The lab's `SnapShotInterval`: the test service snapshots every this many entries.
pub const SNAPSHOT_INTERVAL: u64 = 10;

/// The lab's integer command `x`, as 8 little-endian bytes.
pub fn cmd(x: u64) -> Bytes {
    Bytes::copy_from_slice(&x.to_le_bytes())
}

/// The integer of a command made by [`cmd`] (`None` for any other length).
pub fn cmd_value(data: &[u8]) -> Option<u64> {
    data.try_into().ok().map(u64::from_le_bytes)
}

/// Runs `scenario` for each seed and panics with the first failure's full report (its
/// `Display`: the seed and the trace tail), which `#[test] -> Result` would print only as `Debug`.
///
/// The environment can change the seeds: `RAFTKV_SEED=<n>` replays seed `n` alone (as a
/// failure prints it); `RAFTKV_LAB_SEEDS=<n>` sweeps seeds `0..n` instead of the test's own.
pub fn run_seeds(
    seeds: impl IntoIterator<Item = u64>,
    scenario: impl Fn(u64) -> Result<(), Failure>,
) {
    let env = |name: &str| -> Option<u64> {
        let value = std::env::var(name).ok()?;
        Some(
            value
                .parse()
                .unwrap_or_else(|_| panic!("{name}={value}: not a number")),
        )
    };
    let seeds: Vec<u64> = match (env("RAFTKV_SEED"), env("RAFTKV_LAB_SEEDS")) {
        (Some(seed), _) => vec![seed],
        (None, Some(n)) => (0..n).collect(),
        (None, None) => seeds.into_iter().collect(),
    };
    for seed in seeds {
        if let Err(f) = scenario(seed) {
            panic!("{f}");
        }
    }
}

/// One `one()` call in flight, so that a test can run several at once (the lab's goroutines
/// calling `cfg.one` concurrently). [`Sim::one`] runs a single one to completion.
#[derive(Clone, Debug)]
pub struct OneCall {
    pub cmd: Bytes,
    expected: usize,
    retry: bool,
    started_ms: u64,
    /// The lab's `starts`: the node tried last; the next try starts after it.
    starts: usize,
    /// The index the command was proposed at, and when.
    waiting: Option<(Index, u64)>,
    /// The virtual time at which [`OneCall::poll`] next has something to do.
    pub next_poll_ms: u64,
}

impl OneCall {
    /// The lab's `one(cmd, expectedServers, retry)`, not yet started.
    pub fn new(sim: &Sim, cmd: Bytes, expected: usize, retry: bool) -> Self {
        Self {
            cmd,
            expected,
            retry,
            started_ms: sim.now_ms(),
            starts: 0,
            waiting: None,
            next_poll_ms: sim.now_ms(),
        }
    }

    /// The index the command committed at, once at least `expected` nodes applied it there.
    pub fn agreed(&self, sim: &Sim) -> Option<Index> {
        let (index, _) = self.waiting?;
        let (count, got) = sim.n_committed(index);
        (count > 0 && count >= self.expected && got.as_ref() == Some(&self.cmd)).then_some(index)
    }

    /// Does what is due at the current virtual time: propose at the next connected node that
    /// accepts (every 50 ms while none does), then wait up to 2 s for agreement (polling every
    /// 20 ms), then propose again if `retry`, for up to 10 s in all. `Ok(Some(index))` once the
    /// command is agreed; a failure if it cannot be.
    pub fn poll(&mut self, sim: &mut Sim) -> Result<Option<Index>, Failure> {
        if let Some(index) = self.agreed(sim) {
            return Ok(Some(index));
        }
        let now = sim.now_ms();
        if let Some((index, since)) = self.waiting {
            // Another command committed at `index`: this one never will (State Machine
            // Safety), so do not wait out the 2 s as the lab does.
            let lost = sim.n_committed(index).1.is_some_and(|c| c != self.cmd);
            if !lost && now < since + 2_000 {
                self.next_poll_ms = now + 20;
                return Ok(None);
            }
            if !self.retry {
                let msg = format!(
                    "one({}) failed to reach agreement at index {index} on {} nodes (no retry)\n{}",
                    show(&self.cmd),
                    self.expected,
                    sim.describe_all()
                );
                return Err(sim.fail(msg));
            }
            self.waiting = None;
        }
        if now >= self.started_ms + 10_000 {
            let msg = format!(
                "one({}) failed to reach agreement on {} nodes within 10 s\n{}",
                show(&self.cmd),
                self.expected,
                sim.describe_all()
            );
            return Err(sim.fail(msg));
        }
        let n = sim.n();
        for _ in 0..n {
            self.starts = (self.starts + 1) % n;
            let i = self.starts;
            if !(sim.is_up(i) && sim.is_connected(i)) {
                continue;
            }
            if let Ok((index, _)) = sim.propose(i, self.cmd.clone()) {
                self.waiting = Some((index, now));
                self.next_poll_ms = now + 20;
                return Ok(None);
            }
        }
        self.next_poll_ms = now + 50;
        Ok(None)
    }
}

/// A command for a failure message: its integer if it is one, else its length.
fn show(cmd: &Bytes) -> String {
    match cmd_value(cmd) {
        Some(x) => x.to_string(),
        None => format!("<{} bytes>", cmd.len()),
    }
}

impl Sim {
    /// The lab's `make_config(servers, unreliable, snapshot)`: a cluster with the lab's network
    /// (see [`super::NetConfig`]) and, if `snapshots`, a service that snapshots every
    /// [`SNAPSHOT_INTERVAL`] entries.
    pub fn lab(servers: usize, seed: u64, unreliable: bool, snapshots: bool) -> Sim {
        let mut opts = SimOptions::new(servers, seed);
        opts.net.unreliable = unreliable;
        opts.snapshot_entries = snapshots.then_some(SNAPSHOT_INTERVAL);
        Sim::new(opts)
    }

    /// Every live node's [`crate::Raft::describe`] line and whether it is connected, for
    /// failure reports.
    pub fn describe_all(&self) -> String {
        (0..self.n())
            .map(|i| match self.raft(i) {
                Some(r) if self.is_connected(i) => r.describe(),
                Some(r) => format!("{} (disconnected)", r.describe()),
                None => format!("n{} crashed", i + 1),
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The lab's `checkOneLeader`: up to 10 times, run 450–550 ms, then look at the live
    /// connected nodes; two leaders in one term fail, otherwise the leader of the highest term
    /// is returned. No leader after 10 tries (about 5 s) fails.
    pub fn check_one_leader(&mut self) -> Result<usize, Failure> {
        for _ in 0..10 {
            let ms = self.rng().range(450, 551);
            self.run_for(ms)?;
            let leaders = self.leaders_by_term();
            for (term, ls) in &leaders {
                if ls.len() > 1 {
                    let msg = format!("term {term} has {} (>1) leaders: {ls:?}", ls.len());
                    return Err(self.fail(msg));
                }
            }
            if let Some((_, ls)) = leaders.iter().next_back() {
                return Ok(ls[0]);
            }
        }
        let msg = format!("expected one leader, got none\n{}", self.describe_all());
        Err(self.fail(msg))
    }

    /// The lab's `checkNoLeader`: no live connected node thinks it leads.
    pub fn check_no_leader(&mut self) -> Result<(), Failure> {
        let leaders = self.leaders_by_term();
        if let Some((term, ls)) = leaders.iter().next() {
            let msg = format!(
                "expected no leader among connected servers, but n{} leads term {term}\n{}",
                ls[0] + 1,
                self.describe_all()
            );
            return Err(self.fail(msg));
        }
        Ok(())
    }

    /// The lab's `checkTerms`: every live connected node is in the same term; returns it.
    pub fn check_terms(&mut self) -> Result<Term, Failure> {
        let terms: Vec<(usize, Term)> = (0..self.n())
            .filter(|&i| self.is_connected(i))
            .filter_map(|i| self.raft(i).map(|r| (i, r.term())))
            .collect();
        let Some(&(_, term)) = terms.first() else {
            return Err(self.fail("checkTerms: no live connected server"));
        };
        if terms.iter().any(|&(_, t)| t != term) {
            let msg = format!("servers disagree on term: {terms:?}");
            return Err(self.fail(msg));
        }
        Ok(term)
    }

    /// The lab's `one(cmd, expectedServers, retry)`: for up to 10 s, propose `cmd` at each
    /// live connected node in turn until one accepts, then wait up to 2 s for at least
    /// `expected` nodes to apply `cmd` at that index; if they do not, propose again
    /// (`retry`) or fail. Returns the index. See [`OneCall::poll`].
    pub fn one(&mut self, cmd: Bytes, expected: usize, retry: bool) -> Result<Index, Failure> {
        let mut call = OneCall::new(self, cmd, expected, retry);
        loop {
            if let Some(index) = call.poll(self)? {
                return Ok(index);
            }
            let until = call.next_poll_ms;
            self.run_until(until, |sim| call.agreed(sim).is_some())?;
        }
    }

    /// The lab's `wait(index, n, startTerm)`: wait, backing off from 10 ms to 1 s (30 polls),
    /// until at least `n` nodes applied a command at `index`, and return it. `Ok(None)` if a
    /// live node moved past `start_term` meanwhile (the lab's -1: the command may have been
    /// lost to a new leader). Fewer than `n` after the last poll fails.
    pub fn wait(
        &mut self,
        index: Index,
        n: usize,
        start_term: Option<Term>,
    ) -> Result<Option<Bytes>, Failure> {
        let mut to = 10;
        for _ in 0..30 {
            if self.n_committed(index).0 >= n {
                break;
            }
            self.run_for(to)?;
            if to < 1_000 {
                to *= 2;
            }
            if let Some(start) = start_term {
                let moved_on =
                    (0..self.n()).any(|i| self.raft(i).is_some_and(|r| r.term() > start));
                if moved_on {
                    return Ok(None);
                }
            }
        }
        let (count, cmd) = self.n_committed(index);
        if count < n {
            let msg = format!(
                "only {count} decided for index {index}; wanted {n}\n{}",
                self.describe_all()
            );
            return Err(self.fail(msg));
        }
        Ok(cmd)
    }

    /// The lab's total RPC count: requests sent by all nodes so far (responses not counted).
    pub fn rpc_total(&self) -> u64 {
        self.stats.requests_sent.iter().sum()
    }

    /// The lab's `crash1(i)`: cut node `i` off and crash it (if it is up).
    pub fn crash1(&mut self, i: usize) {
        self.disconnect(i);
        if self.is_up(i) {
            self.crash(i);
        }
    }

    /// The lab's `start1(i)`: crash node `i` if it is up (as `crash1`), then start it again from
    /// its durable state. Like the lab's, it stays disconnected until [`Sim::connect`].
    pub fn start1(&mut self, i: usize) {
        self.crash1(i);
        self.restart(i);
    }

    /// Entries node `i` keeps in memory (after its snapshot), or `None` if it is down: the
    /// quantity the lab bounds with `MAXLOGSIZE`.
    pub fn log_len(&self, i: usize) -> Option<u64> {
        self.raft(i).map(|r| {
            let s = r.status();
            s.last_index - s.snapshot_index
        })
    }
}
