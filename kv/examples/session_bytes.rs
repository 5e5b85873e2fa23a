//! Measures the exactly-once session table: heap bytes per client with 100,000 clients, each
//! having made one write (target: < 200 bytes per client), and snapshot bytes per client.
//!
//! cargo run --release -p raftkv-kv --example session_bytes [-- CLIENTS]

use bytes::Bytes;
use raftkv_kv::state::{Command, KvStateMachine, Op, SessionConfig};
use raftkv_raft::StateMachine;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

/// Counts live heap bytes.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn main() {
    let clients: u64 = std::env::args()
        .nth(1)
        .map_or(100_000, |s| s.parse().expect("a number"));
    let mut sm = KvStateMachine::new(SessionConfig {
        sessions_max: clients as usize * 2,
        ..SessionConfig::default()
    });
    // Every client writes the same key, so the data costs one entry: what grows is the table.
    let before = LIVE.load(Ordering::Relaxed);
    let mut index = 0;
    for c in 0..clients {
        index += 1;
        sm.apply(index, &Command::Register { now_ms: c }.encode());
        let session = index;
        index += 1;
        let op = Op::Put {
            key: Bytes::from_static(b"k"),
            value: Bytes::from_static(b"v"),
            version: None,
        };
        sm.apply(
            index,
            &Command::Request {
                session,
                seq: 1,
                now_ms: c,
                op,
            }
            .encode(),
        );
    }
    let table = LIVE.load(Ordering::Relaxed) - before;
    let snapshot = sm.snapshot();
    println!(
        "{clients} clients: {:.1} heap bytes per client, {:.1} snapshot bytes per client ({} sessions)",
        table as f64 / clients as f64,
        snapshot.len() as f64 / clients as f64,
        sm.sessions()
    );
}
