//! A workload under random faults drawn from the seed ([`SimCluster::run_workload`], `raftkv
//! sim`): concurrent Clerks doing random operations while faults come and go.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use raftkv_kv::clerk::{ClerkConfig, ClerkError};
use raftkv_kv::history::History;
use raftkv_kv::testing::spawn_client;
use raftkv_raft::runtime::sim::SimRuntime;
use raftkv_raft::Runtime;

use super::{SimClerk, SimCluster, SIM_CLIENTS_MAX, SIM_KEYS_MAX, SIM_RUN_MAX};
use crate::error::ClusterError;

/// What [`SimCluster::run_workload`] runs.
#[derive(Clone, Debug)]
pub struct Workload {
    /// Virtual time the clients run (at most [`SIM_RUN_MAX`]).
    pub duration: Duration,
    /// Concurrent clients, 1 to [`SIM_CLIENTS_MAX`]; each waits 1 to 50 ms between operations.
    pub clients: usize,
    /// Keys `k0..`, 1 to [`SIM_KEYS_MAX`].
    pub keys: usize,
    /// Inject faults drawn from the seed (crashes, restarts, partitions, isolating the leader,
    /// an unreliable network), one every 0.5 to 2.5 s; all healed at the end.
    pub faults: bool,
    /// Each operation's Clerk timeout (virtual).
    pub clerk_timeout: Duration,
}

/// What a workload did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkloadReport {
    /// Operations answered (a missing key and a refused conditional put count: definite).
    pub ok: u64,
    /// Operations that failed (timed out, maybe applied, ...).
    pub failed: u64,
    /// The faults injected, in order: `"12.345 s: crash node 1"`.
    pub faults: Vec<String>,
}

#[derive(Default)]
struct Counts {
    ok: u64,
    failed: u64,
}

impl SimCluster {
    /// Runs `workload.clients` concurrent Clerks (recording into `history`, in virtual time)
    /// doing random gets, puts, conditional puts, appends and deletes for `workload.duration`,
    /// with a random fault schedule drawn from the seed; then heals every fault, restarts the
    /// crashed nodes and waits for each client's last operation.
    pub fn run_workload(
        &mut self,
        workload: &Workload,
        history: &History,
    ) -> Result<WorkloadReport, ClusterError> {
        if workload.clients == 0 || workload.clients > SIM_CLIENTS_MAX {
            return Err(ClusterError::Setting(format!(
                "clients must be 1 to {SIM_CLIENTS_MAX}, not {}",
                workload.clients
            )));
        }
        if workload.keys == 0 || workload.keys > SIM_KEYS_MAX {
            return Err(ClusterError::Setting(format!(
                "keys must be 1 to {SIM_KEYS_MAX}, not {}",
                workload.keys
            )));
        }
        if workload.duration > SIM_RUN_MAX || workload.clerk_timeout > SIM_RUN_MAX {
            return Err(ClusterError::Setting(format!(
                "a run is at most {} s of virtual time",
                SIM_RUN_MAX.as_secs()
            )));
        }
        let config = ClerkConfig {
            timeout: workload.clerk_timeout.max(Duration::from_millis(1)),
            attempt_timeout: Duration::from_secs(1).min(workload.clerk_timeout),
            ..ClerkConfig::default()
        };
        let done = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(Mutex::new(Counts::default()));
        let mut clients = Vec::new();
        for c in 0..workload.clients {
            let clerk = self.clerk(config.clone(), Some(history))?;
            let task = client_loop(
                self.rt.clone(),
                clerk,
                c,
                workload.keys,
                done.clone(),
                counts.clone(),
            );
            clients.push(spawn_client(&self.rt, task));
        }
        let mut faults = Vec::new();
        let end = self.rt.now() + workload.duration;
        loop {
            let pause = Duration::from_millis(self.rt.random(500, 2_500));
            let now = self.rt.now();
            if !workload.faults || now + pause >= end {
                self.run_for(end.saturating_sub(now))?;
                break;
            }
            self.run_for(pause)?;
            if let Some(what) = self.random_fault()? {
                faults.push(format!("{:.3} s: {what}", self.rt.now().as_secs_f64()));
            }
        }
        done.store(true, Ordering::Relaxed);
        if workload.faults {
            self.heal()?;
            self.set_reliable()?;
            for i in 0..self.n {
                if !self.is_running(i) {
                    self.restart(i)?;
                }
            }
            faults.push(format!(
                "{:.3} s: heal, reliable network, every node running",
                self.rt.now().as_secs_f64()
            ));
        }
        for client in clients {
            // A client task ends once its last operation does (within its Clerk's timeout).
            self.drive(client)?.map_err(|_| ClusterError::Deadlock)?;
        }
        let c = counts.lock().unwrap_or_else(|e| e.into_inner());
        Ok(WorkloadReport {
            ok: c.ok,
            failed: c.failed,
            faults,
        })
    }

    /// Injects one fault drawn from the runtime's generator; what it did, if anything.
    fn random_fault(&mut self) -> Result<Option<String>, ClusterError> {
        let n = self.n;
        let i = self.rt.random(0, n as u64) as usize;
        let down = (0..n).filter(|&j| !self.is_running(j)).count();
        let what = match self.rt.random(0, 7) {
            // Keep a majority up: the clients can make progress between faults.
            0 | 1 if self.is_running(i) && down < (n - 1) / 2 => {
                self.crash(i)?;
                format!("crash node {i}")
            }
            0..=2 if !self.is_running(i) => {
                self.restart(i)?;
                format!("restart node {i}")
            }
            2 | 3 if n > 1 => {
                let mut groups = vec![Vec::new(), Vec::new()];
                for j in 0..n {
                    groups[self.rt.random(0, 2) as usize].push(j);
                }
                self.partition(&groups)?;
                format!("partition {:?} | {:?}", groups[0], groups[1])
            }
            4 => match self.leader()? {
                Some(l) if n > 1 => {
                    self.isolate(l)?;
                    format!("isolate the leader, node {l}")
                }
                _ => return Ok(None),
            },
            5 => match self.rt.chance(0.5) {
                true => {
                    self.set_unreliable(0.1, (1, 27), true)?;
                    "unreliable network (10% loss, 1-27 ms)".to_string()
                }
                false => {
                    self.set_reliable()?;
                    "reliable network".to_string()
                }
            },
            _ => {
                self.heal()?;
                "heal".to_string()
            }
        };
        Ok(Some(what))
    }
}

/// One client of a workload until `done`: random operations on keys `k0..k{keys-1}`.
async fn client_loop(
    rt: SimRuntime,
    mut clerk: SimClerk,
    client: usize,
    keys: usize,
    done: Arc<AtomicBool>,
    counts: Arc<Mutex<Counts>>,
) {
    let mut j = 0u64;
    while !done.load(Ordering::Relaxed) {
        rt.sleep(Duration::from_millis(rt.random(1, 51))).await;
        j += 1;
        let key = Bytes::from(format!("k{}", rt.random(0, keys as u64)));
        let value = Bytes::from(format!("c{client}.{j};"));
        let result = match rt.random(0, 20) {
            0..=7 => clerk.get(key).await.map(drop),
            8..=11 => clerk.put(key, value, None).await.map(drop),
            // A conditional put at the version just read (0: the key must not exist).
            12 | 13 => {
                let read = clerk.get(key.clone()).await;
                let version = match &read {
                    Ok((_, v)) => Some(*v),
                    Err(ClerkError::NoKey) => Some(0),
                    Err(_) => None,
                };
                tally(&counts, &read.map(drop));
                match version {
                    Some(v) => clerk.put(key, value, Some(v)).await.map(drop),
                    None => continue,
                }
            }
            14..=17 => clerk.append(key, value).await.map(drop),
            _ => clerk.delete(key).await,
        };
        tally(&counts, &result);
    }
}

/// Counts one operation's result: answered (a missing key and a refused conditional put are
/// definite answers) or failed.
fn tally(counts: &Mutex<Counts>, result: &Result<(), ClerkError>) {
    let mut c = counts.lock().unwrap_or_else(|e| e.into_inner());
    match result {
        Ok(()) | Err(ClerkError::NoKey | ClerkError::Version { .. }) => c.ok += 1,
        Err(_) => c.failed += 1,
    }
}
