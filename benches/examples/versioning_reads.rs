//! Instruction counts of the versioning reads of `benches/versioning.rs`, counted under
//! `valgrind --tool=callgrind` (this VM's timings move too much to compare small changes):
//! `cargo run --release -p allframe-benches --example versioning_reads -- MODE N`, MODE one of
//! `plain` (1,000 events stored at the current version), `closures` (stored at version 1, read
//! through three `json` steps) and `declared` (the same through three declarative steps), N reads.

use allframe_benches::upcast_workload::{Stores, stores};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (mode, n): (&str, usize) = (&args[1], args[2].parse().expect("N: a number of reads"));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let Stores { plain, closures, declared } = rt.block_on(stores());
    let mut total = 0;
    for _ in 0..n {
        total += match mode {
            "plain" => rt.block_on(plain.get_events("current")).unwrap().len(),
            "closures" => rt.block_on(closures.get_events("old")).unwrap().len(),
            _ => rt.block_on(declared.get_events("old")).unwrap().len(),
        };
    }
    println!("{total} events read");
}
