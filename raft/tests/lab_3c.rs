//! The 6.5840 Raft lab's 3C tests (persistence), on the deterministic simulator.
//!
//! The lab's `crash1` disconnects and kills a server, and `start1` restarts it from what it
//! persisted, still disconnected: here [`Sim::crash1`] and [`Sim::start1`], followed by
//! [`Sim::connect`] as in the lab. A crash loses every write the simulated disk had not made
//! durable yet. The lab's concurrent clients (goroutines) are state machines polled in virtual
//! time.

use raftkv_raft::sim::lab::{cmd, cmd_value, run_seeds, OneCall, ELECTION_TIMEOUT_MS};
use raftkv_raft::sim::{Failure, Sim};
use raftkv_raft::{Index, Rng};

fn persist1(seed: u64) -> Result<(), Failure> {
    let servers = 3;
    let mut sim = Sim::lab(servers, seed, false, false);
    sim.one(cmd(11), servers, true)?;

    // Crash and restart all.
    for i in 0..servers {
        sim.start1(i);
    }
    for i in 0..servers {
        sim.disconnect(i);
        sim.connect(i);
    }
    sim.one(cmd(12), servers, true)?;

    let leader1 = sim.check_one_leader()?;
    sim.disconnect(leader1);
    sim.start1(leader1);
    sim.connect(leader1);
    sim.one(cmd(13), servers, true)?;

    let leader2 = sim.check_one_leader()?;
    sim.disconnect(leader2);
    let index14 = sim.one(cmd(14), servers - 1, true)?;
    sim.start1(leader2);
    sim.connect(leader2);

    // Wait for leader2 to join before killing i3.
    sim.wait(index14, servers, None)?;

    let i3 = (sim.check_one_leader()? + 1) % servers;
    sim.disconnect(i3);
    sim.one(cmd(15), servers - 1, true)?;
    sim.start1(i3);
    sim.connect(i3);

    sim.one(cmd(16), servers, true)?;
    Ok(())
}

#[test]
fn persist1_3c() {
    run_seeds(0..10, persist1);
}

fn persist2(seed: u64) -> Result<(), Failure> {
    let servers = 5;
    let mut sim = Sim::lab(servers, seed, false, false);
    let mut index = 1;
    for _ in 0..5 {
        sim.one(cmd(10 + index), servers, true)?;
        index += 1;

        let leader1 = sim.check_one_leader()?;
        sim.disconnect((leader1 + 1) % servers);
        sim.disconnect((leader1 + 2) % servers);

        sim.one(cmd(10 + index), servers - 2, true)?;
        index += 1;

        sim.disconnect(leader1);
        sim.disconnect((leader1 + 3) % servers);
        sim.disconnect((leader1 + 4) % servers);

        sim.start1((leader1 + 1) % servers);
        sim.start1((leader1 + 2) % servers);
        sim.connect((leader1 + 1) % servers);
        sim.connect((leader1 + 2) % servers);

        sim.run_for(ELECTION_TIMEOUT_MS)?;

        sim.start1((leader1 + 3) % servers);
        sim.connect((leader1 + 3) % servers);

        sim.one(cmd(10 + index), servers - 2, true)?;
        index += 1;

        sim.connect((leader1 + 4) % servers);
        sim.connect(leader1);
    }
    sim.one(cmd(1000), servers, true)?;
    Ok(())
}

#[test]
fn persist2_3c() {
    run_seeds(0..10, persist2);
}

fn persist3(seed: u64) -> Result<(), Failure> {
    let servers = 3;
    let mut sim = Sim::lab(servers, seed, false, false);
    sim.one(cmd(101), 3, true)?;

    let leader = sim.check_one_leader()?;
    sim.disconnect((leader + 2) % servers);

    sim.one(cmd(102), 2, true)?;

    sim.crash1(leader);
    sim.crash1((leader + 1) % servers);
    sim.connect((leader + 2) % servers);
    sim.start1(leader);
    sim.connect(leader);

    sim.one(cmd(103), 2, true)?;

    sim.start1((leader + 1) % servers);
    sim.connect((leader + 1) % servers);

    sim.one(cmd(104), servers, true)?;
    Ok(())
}

#[test]
fn persist3_3c() {
    run_seeds(0..10, persist3);
}

/// The lab's sleep between Figure 8 iterations: mostly 0–12 ms, one time in ten up to half
/// an election timeout.
fn figure8_sleep(rng: &mut Rng) -> u64 {
    if rng.range(0, 1_000) < 100 {
        rng.range(0, ELECTION_TIMEOUT_MS / 2)
    } else {
        rng.range(0, 13)
    }
}

/// The scenarios of Figure 8 of the extended Raft paper. Each iteration asks the leader, if
/// there is one, to append a command; then, after a short (usually) or long pause, crashes it
/// (perhaps before it commits the command). If too few servers are up, one is restarted. A
/// leader of a new term may then try to finish replicating entries of older terms: it must
/// never commit them by counting replicas (Raft §5.4.2), which the simulator's checks catch.
fn figure8(seed: u64) -> Result<(), Failure> {
    let servers = 5;
    let mut sim = Sim::lab(servers, seed, false, false);
    let mut rng = Rng::new(seed ^ 0xF18);
    sim.one(cmd(rng.next_u64()), 1, true)?;

    let mut nup = servers;
    for _ in 0..1_000 {
        let mut leader = None;
        for i in 0..servers {
            if sim.is_up(i) && sim.propose(i, cmd(rng.next_u64())).is_ok() {
                leader = Some(i);
            }
        }
        sim.run_for(figure8_sleep(&mut rng))?;
        if let Some(l) = leader {
            sim.crash1(l);
            nup -= 1;
        }
        if nup < 3 {
            let s = rng.range(0, servers as u64) as usize;
            if !sim.is_up(s) {
                sim.start1(s);
                sim.connect(s);
                nup += 1;
            }
        }
    }

    for i in 0..servers {
        if !sim.is_up(i) {
            sim.start1(i);
            sim.connect(i);
        }
    }
    sim.one(cmd(rng.next_u64()), servers, true)?;
    Ok(())
}

#[test]
fn figure8_3c() {
    run_seeds(0..10, figure8);
}

/// Runs the calls in `calls` (polling each when it asks) until `done` holds for the
/// simulator; removes the calls that completed.
fn drive(
    sim: &mut Sim,
    calls: &mut Vec<OneCall>,
    done: impl Fn(&Sim, &[OneCall]) -> bool,
) -> Result<(), Failure> {
    loop {
        let now = sim.now_ms();
        let mut k = 0;
        while k < calls.len() {
            if calls[k].next_poll_ms <= now && calls[k].poll(sim)?.is_some() {
                calls.swap_remove(k);
            } else {
                k += 1;
            }
        }
        if done(sim, calls) {
            return Ok(());
        }
        let next = calls.iter().map(|c| c.next_poll_ms).min().unwrap_or(now);
        sim.run_until(next, |_| false)?;
    }
}

fn unreliable_agree(seed: u64) -> Result<(), Failure> {
    let servers = 5;
    let mut sim = Sim::lab(servers, seed, true, false);

    // Four background one()s per iteration, like the lab's goroutines, while the test's own
    // one() runs in the foreground.
    let mut background: Vec<OneCall> = Vec::new();
    for iters in 1..50u64 {
        for j in 0..4 {
            background.push(OneCall::new(&sim, cmd(100 * iters + j), 1, true));
        }
        let foreground = OneCall::new(&sim, cmd(iters), 1, true);
        let fg_cmd = foreground.cmd.clone();
        background.push(foreground);
        drive(&mut sim, &mut background, |_, calls| {
            !calls.iter().any(|c| c.cmd == fg_cmd)
        })?;
    }

    sim.set_unreliable(false);
    drive(&mut sim, &mut background, |_, calls| calls.is_empty())?;

    sim.one(cmd(100), servers, true)?;
    Ok(())
}

#[test]
fn unreliable_agree_3c() {
    run_seeds(0..5, unreliable_agree);
}

fn figure8_unreliable(seed: u64) -> Result<(), Failure> {
    let servers = 5;
    let mut sim = Sim::lab(servers, seed, true, false);
    let mut rng = Rng::new(seed ^ 0xF18F18);
    sim.one(cmd(rng.range(0, 10_000)), 1, true)?;

    let mut nup = servers;
    for iters in 0..1_000 {
        if iters == 200 {
            sim.set_long_reordering(true);
        }
        let mut leader = None;
        for i in 0..servers {
            // Disconnected servers take commands too (they may think they lead).
            if sim.propose(i, cmd(rng.range(0, 10_000))).is_ok() && sim.is_connected(i) {
                leader = Some(i);
            }
        }
        sim.run_for(figure8_sleep(&mut rng))?;
        if let Some(l) = leader {
            if rng.range(0, 1_000) < ELECTION_TIMEOUT_MS / 2 {
                sim.disconnect(l);
                nup -= 1;
            }
        }
        if nup < 3 {
            let s = rng.range(0, servers as u64) as usize;
            if !sim.is_connected(s) {
                sim.connect(s);
                nup += 1;
            }
        }
    }

    for i in 0..servers {
        if !sim.is_connected(i) {
            sim.connect(i);
        }
    }
    // Still unreliable, with long reordering, as in the lab.
    sim.one(cmd(rng.range(0, 10_000)), servers, true)?;
    Ok(())
}

#[test]
fn figure8_unreliable_3c() {
    run_seeds(0..10, figure8_unreliable);
}

/// One of the lab's churn clients: propose a fresh value at every live server, then look for
/// it at the index a leader gave, after 0, 10, 30, 80, 180 ms; note it if it committed there.
struct Client {
    me: u64,
    next_ms: u64,
    /// (index, value, polls done) while looking for a proposed value.
    waiting: Option<(Index, u64, usize)>,
    values: Vec<u64>,
}

/// The lab's client pauses between looks at the index.
const CLIENT_POLLS_MS: [u64; 5] = [10, 20, 50, 100, 200];

impl Client {
    fn step(&mut self, sim: &mut Sim, rng: &mut Rng) {
        let now = sim.now_ms();
        if let Some((index, x, polls)) = self.waiting {
            let (nd, got) = sim.n_committed(index);
            if nd > 0 {
                if got.as_deref().and_then(cmd_value) == Some(x) {
                    self.values.push(x);
                }
                self.waiting = None;
            } else if polls < CLIENT_POLLS_MS.len() {
                self.waiting = Some((index, x, polls + 1));
                self.next_ms = now + CLIENT_POLLS_MS[polls];
                return;
            } else {
                self.waiting = None;
            }
        }
        // Maybe a leader will commit our value, maybe not.
        let x = rng.next_u64() >> 1;
        let mut index = None;
        for i in 0..sim.n() {
            if let Ok((index1, _)) = sim.propose(i, cmd(x)) {
                index = Some(index1);
            }
        }
        match index {
            Some(index) => {
                self.waiting = Some((index, x, 0));
                self.next_ms = now;
                self.step(sim, rng);
            }
            None => self.next_ms = now + 79 + self.me * 17,
        }
    }
}

/// Runs the simulator to `until_ms`, stepping each client when it is due.
fn run_clients(
    sim: &mut Sim,
    clients: &mut [Client],
    rng: &mut Rng,
    until_ms: u64,
) -> Result<(), Failure> {
    loop {
        let now = sim.now_ms();
        for c in clients.iter_mut() {
            if c.next_ms <= now {
                c.step(sim, rng);
            }
        }
        let next = clients
            .iter()
            .map(|c| c.next_ms)
            .min()
            .unwrap_or(until_ms)
            .min(until_ms);
        sim.run_until(next, |_| false)?;
        if sim.now_ms() >= until_ms {
            return Ok(());
        }
    }
}

fn churn(seed: u64, unreliable: bool) -> Result<(), Failure> {
    let servers = 5;
    let mut sim = Sim::lab(servers, seed, unreliable, false);
    let mut rng = Rng::new(seed ^ 0xC4C4);
    let mut clients: Vec<Client> = (0..3)
        .map(|me| Client {
            me,
            next_ms: 0,
            waiting: None,
            values: Vec::new(),
        })
        .collect();

    for _ in 0..20 {
        if rng.range(0, 1_000) < 200 {
            let i = rng.range(0, servers as u64) as usize;
            sim.disconnect(i);
        }
        if rng.range(0, 1_000) < 500 {
            let i = rng.range(0, servers as u64) as usize;
            if !sim.is_up(i) {
                sim.start1(i);
            }
            sim.connect(i);
        }
        if rng.range(0, 1_000) < 200 {
            let i = rng.range(0, servers as u64) as usize;
            if sim.is_up(i) {
                sim.crash1(i);
            }
        }
        // Crash/restart infrequent enough that the peers can often keep up, but not so
        // infrequent that everything has settled down from one change to the next.
        let until = sim.now_ms() + ELECTION_TIMEOUT_MS * 7 / 10;
        run_clients(&mut sim, &mut clients, &mut rng, until)?;
    }

    let until = sim.now_ms() + ELECTION_TIMEOUT_MS;
    run_clients(&mut sim, &mut clients, &mut rng, until)?;
    sim.set_unreliable(false);
    for i in 0..servers {
        if !sim.is_up(i) {
            sim.start1(i);
        }
        sim.connect(i);
    }
    // The clients stop.
    let values: Vec<u64> = clients.iter().flat_map(|c| c.values.clone()).collect();

    sim.run_for(ELECTION_TIMEOUT_MS)?;
    let last_index = sim.one(cmd(rng.next_u64() >> 1), servers, true)?;

    // Every server applied everything up to last_index (one() saw all of them apply it, and
    // applies are in order); every value a client saw committed must be there.
    let really: Vec<u64> = sim.nodes[0]
        .sm
        .commands
        .range(..=last_index)
        .filter_map(|(_, c)| cmd_value(c))
        .collect();
    for i in 0..servers {
        let applied = sim.nodes[i].sm.last_applied;
        if applied < last_index {
            return Err(sim.fail(format!("n{} applied only {applied} of {last_index}", i + 1)));
        }
    }
    for v in &values {
        if !really.contains(v) {
            return Err(sim.fail(format!("didn't find a value: {v}")));
        }
    }
    // The clients must have got something done through the churn.
    if values.len() < 10 {
        return Err(sim.fail(format!(
            "only {} client values committed during the churn",
            values.len()
        )));
    }
    Ok(())
}

#[test]
fn reliable_churn_3c() {
    run_seeds(0..10, |seed| churn(seed, false));
}

#[test]
fn unreliable_churn_3c() {
    run_seeds(0..10, |seed| churn(seed, true));
}
