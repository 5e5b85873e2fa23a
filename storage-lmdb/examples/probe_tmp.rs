use futures::executor::block_on;
use raftkv_raft::Storage;
use raftkv_storage_lmdb::{LmdbOptions, LmdbStorage};
use std::time::Instant;
fn main() {
    let dir = std::env::args().nth(1).unwrap();
    let t = Instant::now();
    let s = LmdbStorage::open(std::path::Path::new(&dir), LmdbOptions::default()).expect("open");
    let t_open = t.elapsed();
    let p = block_on(s.load()).expect("load");
    let t_load = t.elapsed();
    println!(
        "open {:?} load {:?} entries {} snapshot {:?}",
        t_open,
        t_load - t_open,
        p.entries.len(),
        p.snapshot.as_ref().map(|s| (s.last.index, s.data.len()))
    );
}
