//! Crash test: a child process appends to the store and reports each durable write; the
//! parent SIGKILLs it at random moments, reopens the store and checks that every index the
//! child reported durable is there, intact, and that nothing is reported corrupt.
//!
//! The child is this test binary run again with [`CHILD_DIR_VAR`] set, filtered to
//! [`crash_child`]. The child starts from a 1 MiB map, so the map also grows under fire.
//! `RAFTKV_SEED=<n>` replays the workload and the kill delays (not the exact kill instants).

mod common;

use common::{load, mix, open, tiny_map, Rng};
use futures::executor::block_on;
use raftkv_raft::{Entry, HardState, LogId, Payload, Snapshot, Storage, WriteOp};
use raftkv_storage_lmdb::LmdbStorage;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Set in the child's environment: the store's directory.
const CHILD_DIR_VAR: &str = "RAFTKV_LMDB_CRASH_CHILD_DIR";
/// Set in the child's environment: the seed of its workload.
const CHILD_SEED_VAR: &str = "RAFTKV_LMDB_CRASH_CHILD_SEED";
/// Set in the child's environment: the last index stored (the parent has just verified the
/// store, so the child need not load it again before writing).
const CHILD_LAST_VAR: &str = "RAFTKV_LMDB_CRASH_CHILD_LAST";

/// Set in the child's environment, optionally: the WAL segment size (the checkpoint size is
/// half of it), so that kills land amid segment rotations, seals and checkpoints.
const CHILD_SEGMENT_VAR: &str = "RAFTKV_LMDB_CRASH_CHILD_SEGMENT_BYTES";

const KILLS: usize = 60;
const KILL_DELAY_MS_MIN: u64 = 20;
const KILL_DELAY_MS_MAX: u64 = 250;
/// A child that is never killed stops by itself after this long.
const CHILD_LIFETIME_MAX: Duration = Duration::from_secs(30);

/// The term of the entry at `index`: terms rise along the log, as Raft's do.
fn term_at(index: u64) -> u64 {
    1 + index / 5000
}

/// The payload of the entry at `index`, a pure function of it, so the parent can check
/// every byte. Mostly small; every 1000th is 64 KiB (LMDB overflow pages).
fn payload_at(index: u64) -> Vec<u8> {
    let h = mix(index);
    let len = if index % 1000 == 0 {
        64 << 10
    } else {
        8 + (h % 500) as usize
    };
    (0..len)
        .map(|i| (mix(h ^ (i as u64 / 8)) >> (i % 8 * 8)) as u8)
        .collect()
}

fn entry_at(index: u64) -> Entry {
    Entry {
        index,
        term: term_at(index),
        payload: Payload::Command(payload_at(index).into()),
    }
}

/// The snapshot at `index`: its data is a pure function of it.
fn snapshot_at(index: u64) -> Snapshot {
    Snapshot {
        last: LogId::new(index, term_at(index)),
        data: payload_at(index ^ 0x5a5a).into(),
        membership: Default::default(),
    }
}

/// The child: appends batches of random sizes, printing `durable <last index>` after each
/// write returns, until killed.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR_VAR) else {
        return; // Run as a normal test: nothing to do.
    };
    let var = |name| {
        std::env::var(name)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{name} is set to a number"))
    };
    let mut rng = Rng::new(var(CHILD_SEED_VAR));
    let mut last = var(CHILD_LAST_VAR);
    // The snapshot taken in this run, if any: compaction goes no further.
    let mut snapshot = 0;
    let mut options = tiny_map();
    if let Some(bytes) = std::env::var(CHILD_SEGMENT_VAR)
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
    {
        options.wal_segment_bytes = bytes;
        options.wal_checkpoint_bytes = bytes / 2;
    }
    let storage = open(Path::new(&dir), options);
    let started = Instant::now();
    let mut stdout = std::io::stdout().lock();
    while started.elapsed() < CHILD_LIFETIME_MAX {
        let count = rng.range(1, 32);
        let entries: Vec<Entry> = (last + 1..=last + count).map(entry_at).collect();
        last += count;
        let hard_state = HardState {
            term: term_at(last),
            voted_for: Some(1),
            commit: last,
        };
        let mut ops = vec![WriteOp::Append(entries), WriteOp::HardState(hard_state)];
        // Now and then a snapshot (it bypasses the WAL), or a compaction behind it.
        match rng.range(0, 40) {
            0 => {
                ops.push(WriteOp::SaveSnapshot(snapshot_at(last)));
                snapshot = last;
            }
            1 if snapshot > 0 => {
                ops.push(WriteOp::CompactTo(LogId::new(snapshot, term_at(snapshot))));
            }
            _ => {}
        }
        block_on(storage.write(ops)).unwrap();
        // A closed pipe means the parent is gone: stop.
        if writeln!(stdout, "durable {last}")
            .and_then(|()| stdout.flush())
            .is_err()
        {
            return;
        }
    }
}

/// Reads the child's stdout to its end; returns the highest index reported durable on a
/// complete line (a line cut by the kill is ignored).
fn highest_reported(stdout: impl std::io::Read) -> u64 {
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    let mut highest = 0;
    while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
        if let Some(index) = line
            .strip_suffix('\n')
            .and_then(|l| l.strip_prefix("durable "))
            .and_then(|n| n.parse().ok())
        {
            highest = index;
        }
        line.clear();
    }
    highest
}

/// Loads the store and checks it: it loads (no corruption), every entry is exactly what the
/// child wrote, indexes run without a gap from where compaction left them (no later than the
/// snapshot's, which is exactly what was written), and the hard state was committed with the
/// last entry (one atomic write). Returns the last index.
fn verify_store(dir: &Path) -> u64 {
    let storage = LmdbStorage::open(dir, tiny_map()).expect("reopen after SIGKILL");
    let p = load(&storage).expect("load after SIGKILL: nothing corrupt");
    let first = p.entries.first().map_or(1, |e| e.index);
    if let Some(s) = &p.snapshot {
        assert_eq!(
            s,
            &snapshot_at(s.last.index),
            "the snapshot is what was written"
        );
        assert!(
            first <= s.last.index + 1,
            "entries start at {first}, after the snapshot at {}",
            s.last.index
        );
    } else {
        assert_eq!(first, 1, "no snapshot: the log starts at 1");
    }
    for (i, e) in p.entries.iter().enumerate() {
        let index = first + i as u64;
        assert_eq!(e, &entry_at(index), "entry {index} is what was written");
    }
    let last = p.entries.last().map_or(0, |e| e.index);
    assert_eq!(
        p.hard_state.commit, last,
        "hard state written atomically with entries"
    );
    last
}

#[test]
fn sigkill_at_random_moments_loses_no_durable_write() {
    kill_at_random_moments(None);
}

/// Issue 21 #3: the WAL's segments are sealed as it moves on and checkpoints record its head,
/// so that a missing segment is refused. Killed amid rotations (8 KiB segments), it must never
/// mistake a crash for missing data, nor lose a durable write.
#[test]
fn sigkill_amid_segment_rotations_loses_no_durable_write_and_is_never_refused() {
    kill_at_random_moments(Some(8 << 10));
}

fn kill_at_random_moments(segment_bytes: Option<usize>) {
    let seed = common::seed();
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let started = Instant::now();
    let (mut kills, mut kills_mid_run, mut losses, mut reported_max) = (0, 0, 0u64, 0u64);
    let mut last = 0;
    for round in 0..KILLS {
        let mut command = Command::new(&exe);
        if let Some(bytes) = segment_bytes {
            command.env(CHILD_SEGMENT_VAR, bytes.to_string());
        }
        let mut child = command
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR_VAR, dir.path())
            .env(CHILD_SEED_VAR, rng.next_u64().to_string())
            .env(CHILD_LAST_VAR, last.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("child stdout");
        let reader = thread::spawn(move || highest_reported(stdout));
        let delay_ms = rng.range(KILL_DELAY_MS_MIN, KILL_DELAY_MS_MAX);
        thread::sleep(Duration::from_millis(delay_ms));
        child.kill().expect("SIGKILL the child");
        let status = child.wait().expect("wait for child");
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "round {round}: the child died of the kill, not by itself ({status})"
        );
        kills += 1;
        let reported = reader.join().expect("reader thread");
        if reported > reported_max {
            kills_mid_run += 1;
            reported_max = reported;
        }

        last = verify_store(dir.path());
        if last < reported_max {
            eprintln!("round {round}: {reported_max} reported durable, {last} stored");
            losses += reported_max - last;
        }
    }
    println!(
        "crash test: {kills} kills ({kills_mid_run} after durable writes in that run), \
         {losses} losses, last durable index {reported_max}, {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(losses, 0, "durable writes lost (RAFTKV_SEED={seed})");
}
