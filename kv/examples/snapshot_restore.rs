//! Times the KV state machine's snapshot and restore with many keys (the part of a restart that
//! grows with the data): `cargo run --release -p raftkv-kv --example snapshot_restore [-- KEYS]`
//! (default 1,000,000 keys, 100-byte values, keys as `raftkv bench` writes them).

use std::time::Instant;

use bytes::Bytes;
use raftkv_kv::state::{Command, KvStateMachine, Op, SessionConfig};
use raftkv_raft::StateMachine;

fn main() {
    let keys: u64 = std::env::args()
        .nth(1)
        .map_or(1_000_000, |a| a.parse().expect("KEYS"));
    let mut sm = KvStateMachine::new(SessionConfig::default());
    sm.apply(1, &Command::Register { now_ms: 0 }.encode());
    let value = Bytes::from(vec![b'v'; 100]);
    for k in 0..keys {
        let op = Op::Put {
            key: Bytes::from(format!("k{k:06}")),
            value: value.clone(),
            version: None,
        };
        let cmd = Command::Request {
            session: 1,
            seq: k + 1,
            now_ms: 0,
            op,
        };
        sm.apply(k + 2, &cmd.encode());
    }
    let mut snap_ms = Vec::new();
    let mut restore_ms = Vec::new();
    let mut bytes = 0;
    for _ in 0..3 {
        let t = Instant::now();
        let data = sm.snapshot();
        snap_ms.push(t.elapsed().as_secs_f64() * 1e3);
        bytes = data.len();
        let mut fresh = KvStateMachine::new(SessionConfig::default());
        let t = Instant::now();
        fresh.restore(&data).expect("restore");
        restore_ms.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(fresh.len(), sm.len());
    }
    snap_ms.sort_by(f64::total_cmp);
    restore_ms.sort_by(f64::total_cmp);
    println!(
        "{keys} keys, snapshot {:.1} MiB: snapshot median {:.0} ms, restore median {:.0} ms",
        bytes as f64 / (1 << 20) as f64,
        snap_ms[1],
        restore_ms[1]
    );
}
