//! Issue 20's measurement: what restoring a large snapshot into the LMDB state, and reading it
//! back for a follower, costs the process's own memory (RssAnon): a snapshot of 1,000,000
//! keys of 100 bytes, received into the state's file spool, restored key by key in bounded
//! transactions, then read back into a spool. Prints the figures:
//!
//! `cargo test --release -p raftkv-state-lmdb --test restore_memory -- --ignored --nocapture`
//!
//! (`RESTORE_KEYS` sets another number of keys.)

use raftkv_kv::durable::DurableKv;
use raftkv_kv::state::KvStateMachine;
use raftkv_kv::testing::durable::{membership, SESSIONS};
use raftkv_raft::{LogId, Snapshot, StateMachine};
use raftkv_state_lmdb::{LmdbState, StateOptions};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The process's anonymous resident memory, in KiB (`RssAnon` of /proc/self/status).
fn rss_anon_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("Linux /proc");
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("RssAnon in /proc/self/status")
}

/// Samples RssAnon every few milliseconds until stopped; the highest seen.
struct Peak {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<()>,
}

impl Peak {
    fn start() -> Self {
        let (stop, peak) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
        );
        let (s, p) = (stop.clone(), peak.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(rss_anon_kib(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Self { stop, peak, thread }
    }

    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap();
        self.peak.load(Ordering::Relaxed).max(rss_anon_kib())
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

#[test]
#[ignore = "a measurement: prints figures"]
fn measure_the_memory_of_restoring_and_reading_a_million_keys() {
    let keys: u64 = std::env::var("RESTORE_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let mut sm = DurableKv::open(
        LmdbState::open(dir.path(), StateOptions::default()).unwrap(),
        SESSIONS,
        u64::MAX,
    )
    .unwrap();
    let start = rss_anon_kib();

    // The snapshot a follower receives, chunk by chunk, into the state's spool.
    let t = Instant::now();
    let peak = Peak::start();
    let mut spool = sm.snapshot_spool().unwrap();
    let mut chunk = Vec::with_capacity(1 << 20);
    varint(&mut chunk, keys);
    let value = [b'v'; 100];
    for i in 0..keys {
        let key = format!("key{i:010}");
        varint(&mut chunk, key.len() as u64);
        chunk.extend_from_slice(key.as_bytes());
        varint(&mut chunk, value.len() as u64);
        chunk.extend_from_slice(&value);
        varint(&mut chunk, i + 1);
        if chunk.len() >= 1 << 20 {
            spool.append(&chunk).unwrap();
            chunk.clear();
        }
    }
    // No sessions: an empty state's, after its count of keys (0, one byte).
    chunk.extend_from_slice(&KvStateMachine::default().snapshot()[1..]);
    spool.append(&chunk).unwrap();
    drop(chunk);
    let data = spool.finish().unwrap();
    let spooled = (peak.stop(), t.elapsed());
    let received = rss_anon_kib();

    // The restore: key by key into the other slot, in bounded transactions, then the flip.
    let t = Instant::now();
    let peak = Peak::start();
    let snapshot = Snapshot {
        last: LogId::new(keys + 1, 1),
        data,
        membership: membership(),
    };
    sm.restore_snapshot(&snapshot).unwrap();
    let restored = (peak.stop(), t.elapsed());
    let after_restore = rss_anon_kib();

    // The leader's read of it for a follower, into a spool of its own.
    let t = Instant::now();
    let peak = Peak::start();
    let read = sm.snapshot_read(keys + 1).expect("reads off the loop");
    let (index, bytes) = read().unwrap();
    let read_back = (peak.stop(), t.elapsed());
    assert_eq!(index, keys + 1);
    assert_eq!(bytes.len(), snapshot.data.len());
    assert!(bytes == snapshot.data, "the read has the bytes restored");
    let after_read = rss_anon_kib();
    println!(
        "{keys} keys of 100 B, a snapshot of {:.1} MiB (file spool, mapped):",
        snapshot.data.len() as f64 / (1 << 20) as f64
    );
    println!("  RssAnon at the start: {}", mib(start));
    println!(
        "  spooled in {:.2} s: peak {}, after {}",
        spooled.1.as_secs_f64(),
        mib(spooled.0),
        mib(received)
    );
    println!(
        "  restored in {:.2} s: peak {}, after {}",
        restored.1.as_secs_f64(),
        mib(restored.0),
        mib(after_restore)
    );
    println!(
        "  read back into a spool in {:.2} s: peak {}, after {}",
        read_back.1.as_secs_f64(),
        mib(read_back.0),
        mib(after_read)
    );
    // Tens of MiB, not the hundreds the snapshot's size would take in memory.
    assert!(
        restored.0.max(read_back.0) < start + (96 << 10),
        "RssAnon grew by {} during a restore or read",
        mib(restored.0.max(read_back.0) - start)
    );
}
