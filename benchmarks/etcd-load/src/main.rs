//! etcd-load: a closed-loop load generator for etcd v3, the etcd half of
//! raftkv's benchmark matrix (see ../run.sh).
//!
//! * Finds the leader with the maintenance Status API on every endpoint and sends
//!   all traffic to it (no follower forwarding), like raftkv's Clerk does.
//! * N clients, each with one request in flight at a time and its own gRPC
//!   connection (unless --conns says otherwise).
//! * Keys drawn uniformly from a keyspace (default 10,000), values of
//!   --value-size random bytes. `get` and `mixed` write every key first.
//! * mixed = 50% Range with default options (serializable=false, i.e. a
//!   linearizable read through ReadIndex) and 50% Put.
//! * A warm-up (not recorded), then a measured window: an operation counts if
//!   it completes inside the window. Latency percentiles come from the sorted
//!   vector of all recorded latencies, with the same index rule as `raftkv bench`
//!   (the ceil(n*q)-th smallest).
//!
//! stdout gets exactly one JSON line in `raftkv bench`'s schema plus "system":
//! {"system":"etcd","mode","clients","nodes","seconds","value_size","ops_per_s",
//!  "lat_us":{"p50","p99","p999"},"errors"}
//! Everything else (leader, progress, first error) goes to stderr.

use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use etcd_client::{Client, ConnectOptions, KvClient};

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    Put,
    Get,
    Mixed,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Put => "put",
            Mode::Get => "get",
            Mode::Mixed => "mixed",
        }
    }
}

#[derive(Parser, Debug)]
#[command(about = "closed-loop etcd load; one JSON line (raftkv bench's schema) on stdout")]
struct Args {
    /// Client URLs of every member, comma-separated (http://127.0.0.1:23791,...)
    #[arg(long, value_delimiter = ',', required = true)]
    endpoints: Vec<String>,
    /// Concurrent closed-loop clients
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Length of the measured window, seconds
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Warm-up before the measured window, seconds (not recorded)
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    #[arg(long, value_enum, default_value_t = Mode::Put)]
    mode: Mode,
    /// Value size in bytes
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Number of distinct keys
    #[arg(long, default_value_t = 10_000)]
    keyspace: u64,
    /// gRPC connections to the leader, shared round-robin by the clients (0 = one per client)
    #[arg(long, default_value_t = 0)]
    conns: usize,
    /// Per-request timeout, milliseconds; a timed-out request counts as an error
    #[arg(long, default_value_t = 5000)]
    op_timeout_ms: u64,
    /// Seed of the key/value generator
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Give up after this many seconds in all (0: 2 x (warm-up + seconds) + 120, which a
    /// prefill of millions of keys needs more than)
    #[arg(long, default_value_t = 0.0)]
    max_seconds: f64,
}

/// A put of the prefill is tried this many times before the load gives up.
const PREFILL_TRIES: u64 = 10;

/// xorshift64*: tiny and good enough to pick keys and fill values.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // splitmix64 step so that neighbouring seeds give unrelated streams
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Rng(z | 1)
    }
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
}

/// The same key names as `raftkv bench` (k000000, k000001, ...), so both systems hold the same
/// data.
fn key(i: u64) -> String {
    format!("k{i:06}")
}

fn value(rng: &mut Rng, size: usize) -> Vec<u8> {
    const CHARS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    (0..size)
        .map(|_| CHARS[rng.below(CHARS.len() as u64) as usize])
        .collect()
}

async fn connect(endpoint: &str) -> Result<Client, String> {
    let opts = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(Duration::from_secs(30));
    match tokio::time::timeout(
        Duration::from_secs(10),
        Client::connect([endpoint], Some(opts)),
    )
    .await
    {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(format!("connect {endpoint}: {e}")),
        Err(_) => Err(format!("connect {endpoint}: timed out")),
    }
}

/// The endpoint whose member is the leader, by asking each member for its status.
async fn leader(endpoints: &[String]) -> Result<(String, u64), String> {
    let give_up = Instant::now() + Duration::from_secs(20);
    let mut why = String::from("no endpoint answered");
    loop {
        for ep in endpoints {
            let mut c = match connect(ep).await {
                Ok(c) => c,
                Err(e) => {
                    why = e;
                    continue;
                }
            };
            match tokio::time::timeout(Duration::from_secs(3), c.status()).await {
                Ok(Ok(st)) => {
                    let me = st.header().map(|h| h.member_id()).unwrap_or(0);
                    if me != 0 && st.leader() == me {
                        return Ok((ep.clone(), me));
                    }
                    why = format!("{ep} is a follower (leader id {:x})", st.leader());
                }
                Ok(Err(e)) => why = format!("status {ep}: {e}"),
                Err(_) => why = format!("status {ep}: timed out"),
            }
        }
        if Instant::now() >= give_up {
            return Err(format!("no leader found in 20 s: {why}"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What one client brings back.
#[derive(Default)]
struct Tally {
    lat_us: Vec<u32>,
    errors: u64,
    first_error: Option<String>,
}

async fn op(
    kv: &mut KvClient,
    is_put: bool,
    k: String,
    v: &[u8],
    limit: Duration,
) -> Result<(), String> {
    let fut = async {
        if is_put {
            kv.put(k, v.to_vec(), None).await.map(|_| ())
        } else {
            // GetOptions default: serializable = false, i.e. linearizable.
            kv.get(k, None).await.map(|_| ())
        }
    };
    match tokio::time::timeout(limit, fut).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("{}: {e}", if is_put { "put" } else { "get" })),
        Err(_) => Err(format!("{}: timed out", if is_put { "put" } else { "get" })),
    }
}

/// The ceil(n*q)-th smallest of a sorted slice (0 when empty): raftkv bench's rule.
fn percentile(sorted: &[u32], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as u64
}

async fn run(args: Args) -> Result<String, String> {
    if args.clients == 0 || args.keyspace == 0 || args.endpoints.is_empty() {
        return Err("--clients and --keyspace must be positive, --endpoints non-empty".into());
    }
    if args.seconds.is_nan() || args.seconds <= 0.0 || args.warmup.is_nan() || args.warmup < 0.0 {
        return Err("--seconds must be > 0 and --warmup >= 0".into());
    }
    let limit = Duration::from_millis(args.op_timeout_ms);
    let (leader_ep, leader_id) = leader(&args.endpoints).await?;
    eprintln!("etcd-load: leader {leader_id:x} at {leader_ep}");

    let nconns = if args.conns == 0 {
        args.clients
    } else {
        args.conns.min(args.clients)
    };
    let mut conns = Vec::with_capacity(nconns);
    for _ in 0..nconns {
        conns.push(connect(&leader_ep).await?.kv_client());
    }

    if args.mode != Mode::Put {
        // Every key exists before reads start.
        let t = Instant::now();
        // One writer per connection, as `raftkv bench`'s preload has one per client.
        let workers = nconns as u64;
        let mut hs = Vec::new();
        for w in 0..workers {
            let mut kv = conns[w as usize].clone();
            let (n, size, seed) = (args.keyspace, args.value_size, args.seed);
            hs.push(tokio::spawn(async move {
                let mut rng = Rng::new(seed ^ (0xF00D + w));
                let mut i = w;
                while i < n {
                    let v = value(&mut rng, size);
                    // A put is idempotent here: retry what timed out (etcd answers "request
                    // timed out" when a commit stalls, e.g. while bbolt grows its file).
                    let mut tries = 0;
                    while let Err(e) = op(&mut kv, true, key(i), &v, limit).await {
                        tries += 1;
                        if tries >= PREFILL_TRIES {
                            return Err(format!("prefill {e} ({tries} tries)"));
                        }
                        tokio::time::sleep(Duration::from_millis(100 * tries)).await;
                    }
                    i += workers;
                }
                Ok::<(), String>(())
            }));
        }
        for h in hs {
            h.await.map_err(|e| e.to_string())??;
        }
        eprintln!(
            "etcd-load: wrote {} keys in {:.2} s",
            args.keyspace,
            t.elapsed().as_secs_f64()
        );
    }

    eprintln!(
        "etcd-load: {} clients on {} connections, mode {}, value {} B, keyspace {}, warm-up {} s, {} s measured",
        args.clients, nconns, args.mode.name(), args.value_size, args.keyspace, args.warmup, args.seconds
    );
    let begin = Instant::now() + Duration::from_millis(50);
    let window_start = begin + Duration::from_secs_f64(args.warmup);
    let window_end = window_start + Duration::from_secs_f64(args.seconds);

    let mut handles = Vec::with_capacity(args.clients);
    for c in 0..args.clients {
        let mut kv = conns[c % nconns].clone();
        let (mode, n, size) = (args.mode, args.keyspace, args.value_size);
        let mut rng = Rng::new(args.seed.wrapping_mul(1_000_003).wrapping_add(c as u64));
        handles.push(tokio::spawn(async move {
            let mut t = Tally {
                lat_us: Vec::with_capacity(4096),
                ..Tally::default()
            };
            let mut v = value(&mut rng, size);
            tokio::time::sleep_until(begin.into()).await;
            let mut sent: u64 = 0;
            while Instant::now() < window_end {
                let is_put = match mode {
                    Mode::Put => true,
                    Mode::Get => false,
                    Mode::Mixed => rng.next_u64() >> 63 == 0,
                };
                if is_put && sent % 32 == 31 {
                    v = value(&mut rng, size);
                }
                sent += 1;
                let k = key(rng.below(n));
                let t0 = Instant::now();
                let r = op(&mut kv, is_put, k, &v, limit).await;
                let t1 = Instant::now();
                if t1 < window_start || t1 > window_end {
                    continue; // warm-up, or finished after the window closed
                }
                match r {
                    Ok(()) => t
                        .lat_us
                        .push((t1 - t0).as_micros().min(u32::MAX as u128) as u32),
                    Err(e) => {
                        t.errors += 1;
                        t.first_error.get_or_insert(e);
                    }
                }
            }
            t
        }));
    }

    let mut all: Vec<u32> = Vec::new();
    let mut errors = 0u64;
    let mut first_error = None;
    for h in handles {
        let t = h.await.map_err(|e| e.to_string())?;
        all.extend_from_slice(&t.lat_us);
        errors += t.errors;
        if first_error.is_none() {
            first_error = t.first_error;
        }
    }
    if let Some(e) = &first_error {
        eprintln!("etcd-load: {errors} errors; first: {e}");
    }
    all.sort_unstable();
    let ops_per_s = all.len() as f64 / args.seconds;
    eprintln!(
        "etcd-load: {} ops in the window, {:.1} ops/s",
        all.len(),
        ops_per_s
    );
    Ok(format!(
        concat!(
            "{{\"system\":\"etcd\",\"mode\":\"{}\",\"clients\":{},\"nodes\":{},\"seconds\":{},",
            "\"value_size\":{},\"ops_per_s\":{:.1},",
            "\"lat_us\":{{\"p50\":{},\"p99\":{},\"p999\":{}}},\"errors\":{}}}"
        ),
        args.mode.name(),
        args.clients,
        args.endpoints.len(),
        (args.seconds * 1000.0).round() / 1000.0,
        args.value_size,
        ops_per_s,
        percentile(&all, 0.50),
        percentile(&all, 0.99),
        percentile(&all, 0.999),
        errors,
    ))
}

fn main() {
    let args = Args::parse();
    // Bound the whole program in time whatever happens to the cluster.
    let cap = if args.max_seconds > 0.0 {
        args.max_seconds
    } else {
        2.0 * (args.warmup + args.seconds) + 120.0
    };
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs_f64(cap));
        eprintln!("etcd-load: gave up after {cap:.0} s");
        std::process::exit(3);
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(run(args)) {
        Ok(line) => println!("{line}"),
        Err(e) => {
            eprintln!("etcd-load: error: {e}");
            std::process::exit(1);
        }
    }
}
