//! Instruction counts of the versioning reads of `benches/versioning.rs`, counted under
//! `valgrind --tool=callgrind` (this VM's timings move too much to compare small changes):
//! `cargo run --release -p allframe-benches --example versioning_reads -- MODE N`, MODE one of
//! `plain` (1,000 events stored at the current version), `closures` (stored at version 1, read
//! through three `json` steps) and `declared` (the same through three declarative steps), N reads.
//!
//! `paired N` times the three reads in turn, N rounds, and prints the medians and the median of
//! each round's ratio to the plain read: on a VM whose speed drifts from second to second, reads
//! timed side by side in one round compare better than benchmarks run one after the other.

use allframe_benches::upcast_workload::{Stores, stores};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (mode, n): (&str, usize) = (&args[1], args[2].parse().expect("N: a number of reads"));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let Stores { plain, closures, declared } = rt.block_on(stores());
    if mode == "paired" {
        let mut rounds: Vec<[f64; 3]> = Vec::with_capacity(n);
        for _ in 0..n {
            let mut round = [0.0; 3];
            for (slot, took) in round.iter_mut().zip([
                timed(|| rt.block_on(plain.get_events("current")).unwrap().len()),
                timed(|| rt.block_on(closures.get_events("old")).unwrap().len()),
                timed(|| rt.block_on(declared.get_events("old")).unwrap().len()),
            ]) {
                *slot = took;
            }
            rounds.push(round);
        }
        let median = |mut values: Vec<f64>| {
            values.sort_by(f64::total_cmp);
            values[values.len() / 2]
        };
        println!("{n} rounds of the three reads of 1,000 events, side by side");
        println!("| read | median time | median ratio to plain |");
        println!("|---|---:|---:|");
        for (i, name) in
            ["stored at the current version", "version 1, three `json` closures", "version 1, three declarative steps"]
                .iter()
                .enumerate()
        {
            let time = median(rounds.iter().map(|round| round[i]).collect());
            let ratio = median(rounds.iter().map(|round| round[i] / round[0]).collect());
            println!("| {name} | {:.3} ms | {ratio:.2} |", time * 1e3);
        }
        return;
    }
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

/// Seconds `read` took.
fn timed(read: impl FnOnce() -> usize) -> f64 {
    let start = std::time::Instant::now();
    assert_eq!(read(), 1_000);
    start.elapsed().as_secs_f64()
}
