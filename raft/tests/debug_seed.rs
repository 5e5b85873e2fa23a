use raftkv_raft::sim::chaos::{self, ChaosOptions};

#[test]
#[ignore]
fn debug_seed() {
    let seed: u64 = std::env::var("RAFTKV_SEED").unwrap().parse().unwrap();
    for lines in [0, 40, 400] {
        let opts = ChaosOptions {
            trace_lines: lines,
            ..ChaosOptions::new(seed)
        };
        match chaos::run(&opts) {
            Ok(r) => println!("lines={lines} ok {r:?}"),
            Err(f) => println!(
                "lines={lines} FAIL {}",
                if lines == 400 {
                    f.to_string()
                } else {
                    f.message
                }
            ),
        }
    }
}
