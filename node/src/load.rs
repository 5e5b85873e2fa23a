//! [`Load`]: a closed-loop load generator — `clients` Clerks, each sending its next request as
//! soon as the last one is answered — against any cluster's client addresses. The Python
//! `raftkv.bench` (and so `raftkv bench`) and the `kvbench` example both run it.
//!
//! A run has phases, driven by the caller so that it can wait however suits it (the Python
//! binding waits with the GIL released and answers Ctrl-C): [`Load::start`] spawns the clients,
//! which first write the keyspace between them when the mode reads ([`Load::ready`] says when
//! every one is done); then a warm-up, not measured; [`Load::measure`] starts counting;
//! [`Load::stop`] ends the run; [`Load::collect`] gathers each client's latencies into one
//! [`hdrhistogram::Histogram`].
//!
//! Keys are `k000000`… drawn uniformly from the keyspace; each client writes one random
//! alphanumeric value of `value_size` bytes.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use raftkv_kv::clerk::{Clerk, ClerkConfig, ClerkError};
use raftkv_raft::{NetRuntime, Rng};

use crate::tcp_client::TcpConnector;

/// What the clients send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadMode {
    /// Unconditional puts.
    Put,
    /// Linearizable gets (ReadIndex).
    Get,
    /// Half gets, half puts.
    Mixed,
}

impl std::str::FromStr for LoadMode {
    type Err = UnknownMode;

    fn from_str(s: &str) -> Result<Self, UnknownMode> {
        match s {
            "put" => Ok(LoadMode::Put),
            "get" => Ok(LoadMode::Get),
            "mixed" => Ok(LoadMode::Mixed),
            _ => Err(UnknownMode {
                name: s.to_string(),
            }),
        }
    }
}

impl std::fmt::Display for LoadMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LoadMode::Put => "put",
            LoadMode::Get => "get",
            LoadMode::Mixed => "mixed",
        })
    }
}

/// A mode name that is not `put`, `get` or `mixed`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("mode must be put, get or mixed, not {name:?}")]
pub struct UnknownMode {
    /// The name given.
    pub name: String,
}

/// How to load a cluster.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// Concurrent closed-loop clients (at least 1).
    pub clients: usize,
    pub mode: LoadMode,
    /// Bytes of each written value.
    pub value_size: usize,
    /// Distinct keys (at least 1).
    pub keyspace: u64,
    /// Each Clerk's configuration (its `timeout` bounds how long a stopped client may take to
    /// finish its last request).
    pub clerk: ClerkConfig,
    /// Before measuring, the clients write every key once when the mode reads, so that gets
    /// find them.
    pub preload: bool,
}

impl LoadConfig {
    pub fn new(clients: usize, mode: LoadMode) -> Self {
        Self {
            clients,
            mode,
            value_size: 100,
            keyspace: 10_000,
            clerk: ClerkConfig::default(),
            preload: true,
        }
    }
}

/// The largest latency the histograms hold, in microseconds (one hour); longer ones are
/// counted at this value.
const LATENCY_US_MAX: u64 = 3_600_000_000;

/// A fresh latency histogram: 1 µs to one hour, three significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("valid histogram bounds")
}

struct Shared {
    ops: AtomicU64,
    errors: AtomicU64,
    measuring: AtomicBool,
    stop: AtomicBool,
    /// Clients done with the preload.
    ready: AtomicU64,
}

/// What one client sends back when it ends.
type ClientEnd = Result<Histogram<u64>, String>;

/// A running load. Dropping it stops the clients (each finishes its current request).
pub struct Load {
    shared: Arc<Shared>,
    clients: usize,
    results: mpsc::Receiver<ClientEnd>,
}

/// What a run measured.
#[derive(Clone, Debug)]
pub struct LoadReport {
    /// Requests answered while measuring.
    pub ops: u64,
    /// Requests that failed while measuring, plus clients that failed their preload.
    pub errors: u64,
    /// Why clients failed their preload, one line each.
    pub failures: Vec<String>,
    /// Latencies of the answered requests, in microseconds.
    pub latency_us: Histogram<u64>,
}

impl LoadReport {
    /// The latency at quantile `q` (0.5: the median), in microseconds; 0 without any.
    pub fn latency_us_at(&self, q: f64) -> u64 {
        if self.latency_us.is_empty() {
            0
        } else {
            self.latency_us.value_at_quantile(q)
        }
    }
}

impl Load {
    /// Spawns the clients on `runtime`, connected to `addrs` (client addresses).
    pub fn start<R: NetRuntime>(runtime: &R, addrs: Vec<String>, config: LoadConfig) -> Self {
        let shared = Arc::new(Shared {
            ops: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            measuring: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            ready: AtomicU64::new(0),
        });
        let clients = config.clients.max(1);
        let keyspace = config.keyspace.max(1);
        let (tx, results) = mpsc::channel();
        for c in 0..clients {
            let clerk = Clerk::new(
                runtime.clone(),
                TcpConnector::with_runtime(runtime.clone()),
                addrs.clone(),
                config.clerk.clone(),
            );
            let client = Client {
                index: c as u64,
                clients: clients as u64,
                keyspace,
                mode: config.mode,
                preload: config.preload && config.mode != LoadMode::Put,
                rng: Rng::new(0x5eed ^ (c as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
                shared: shared.clone(),
            };
            let tx = tx.clone();
            let value_size = config.value_size;
            runtime.spawn(async move {
                let _ = tx.send(client.run(clerk, value_size).await);
            });
        }
        Self {
            shared,
            clients,
            results,
        }
    }

    /// Whether every client is done with its preload (and so sending the measured load).
    pub fn ready(&self) -> bool {
        self.shared.ready.load(Ordering::SeqCst) >= self.clients as u64
    }

    /// Starts counting requests and latencies (call it after the warm-up).
    pub fn measure(&self) {
        self.shared.measuring.store(true, Ordering::SeqCst);
    }

    /// Requests answered so far while measuring.
    pub fn ops(&self) -> u64 {
        self.shared.ops.load(Ordering::Relaxed)
    }

    /// Requests failed so far while measuring.
    pub fn errors(&self) -> u64 {
        self.shared.errors.load(Ordering::Relaxed)
    }

    /// Ends the run: nothing more is counted; each client stops after its current request.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
    }

    /// Waits up to `wait` for one more client to end and adds what it measured to `report`
    /// (from [`Load::partial_report`]). Call [`Load::stop`] first.
    pub fn collect_one(&mut self, wait: Duration, report: &mut PartialReport) -> Collect {
        if report.received >= self.clients {
            return Collect::Done;
        }
        match self.results.recv_timeout(wait) {
            Ok(Ok(h)) => {
                report.received += 1;
                // Both histograms have the same bounds: adding cannot fail.
                let _ = report.report.latency_us.add(&h);
            }
            Ok(Err(e)) => {
                report.received += 1;
                report.report.failures.push(e);
            }
            Err(RecvTimeoutError::Timeout) => return Collect::Waiting,
            Err(RecvTimeoutError::Disconnected) => return Collect::Done,
        }
        if report.received >= self.clients {
            Collect::Done
        } else {
            Collect::Waiting
        }
    }

    /// Stops the run and gathers what every client measured, waiting at most `wait` for
    /// clients still finishing a request (those are left out).
    pub fn collect(mut self, wait: Duration) -> LoadReport {
        self.stop();
        let deadline = Instant::now() + wait;
        let mut partial = self.partial_report();
        while Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if self.collect_one(left, &mut partial) == Collect::Done {
                break;
            }
        }
        partial.finish()
    }

    /// The counters as they stand, with no latencies yet: the start of a
    /// [`Load::collect_one`] loop. Call it after [`Load::stop`].
    pub fn partial_report(&self) -> PartialReport {
        PartialReport {
            received: 0,
            report: LoadReport {
                ops: self.ops(),
                errors: self.errors(),
                failures: Vec::new(),
                latency_us: histogram(),
            },
        }
    }

    /// Number of clients.
    pub fn clients(&self) -> usize {
        self.clients
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether [`Load::collect_one`] has heard from every client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Collect {
    Waiting,
    Done,
}

/// A report being gathered by [`Load::collect_one`].
#[derive(Debug)]
pub struct PartialReport {
    received: usize,
    report: LoadReport,
}

impl PartialReport {
    /// The report (preload failures count as errors).
    pub fn finish(self) -> LoadReport {
        let mut report = self.report;
        report.errors += report.failures.len() as u64;
        report
    }
}

struct Client {
    index: u64,
    clients: u64,
    keyspace: u64,
    mode: LoadMode,
    preload: bool,
    rng: Rng,
    shared: Arc<Shared>,
}

fn key_of(k: u64) -> Bytes {
    Bytes::from(format!("k{k:06}"))
}

impl Client {
    async fn run<R: NetRuntime>(
        mut self,
        mut clerk: Clerk<R, TcpConnector<R>>,
        value_size: usize,
    ) -> ClientEnd {
        const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        let value: Bytes = (0..value_size)
            .map(|_| ALNUM[self.rng.range(0, ALNUM.len() as u64) as usize])
            .collect::<Vec<u8>>()
            .into();
        let shared = self.shared.clone();
        // Reads find every key: the clients write the keyspace between them first.
        if self.preload {
            for k in (self.index..self.keyspace).step_by(self.clients as usize) {
                if shared.stop.load(Ordering::Relaxed) {
                    break;
                }
                if let Err(e) = clerk.put(key_of(k), value.clone(), None).await {
                    shared.ready.fetch_add(1, Ordering::SeqCst);
                    return Err(format!("preload failed: {e}"));
                }
            }
        }
        shared.ready.fetch_add(1, Ordering::SeqCst);
        let mut latency_us = histogram();
        while !shared.stop.load(Ordering::Relaxed) {
            let key = key_of(self.rng.range(0, self.keyspace));
            let is_get = match self.mode {
                LoadMode::Put => false,
                LoadMode::Get => true,
                LoadMode::Mixed => self.rng.chance(0.5),
            };
            let start = Instant::now();
            let ok = if is_get {
                // Without a preload a key may not exist yet: that is an answer too.
                matches!(clerk.get(key).await, Ok(_) | Err(ClerkError::NoKey))
            } else {
                clerk.put(key, value.clone(), None).await.is_ok()
            };
            let us = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
            if shared.measuring.load(Ordering::Relaxed) && !shared.stop.load(Ordering::Relaxed) {
                if ok {
                    shared.ops.fetch_add(1, Ordering::Relaxed);
                    latency_us.saturating_record(us.clamp(1, LATENCY_US_MAX));
                } else {
                    shared.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        Ok(latency_us)
    }
}
