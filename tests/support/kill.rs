//! Killing a real process: a test binary runs one of its own `#[ignore]`d tests as a child,
//! waits until the child prints `READY`, lets it work, then kills it with SIGKILL.

use std::io::{BufRead, BufReader};
use std::process::{Command as Process, Stdio};
use std::time::Duration;

/// Runs the ignored test `test` of this binary as a child with `env` set, kills it `wait` after
/// it printed `READY`, and returns the lines it printed.
pub fn run_child(test: &str, env: &[(&str, String)], wait: Duration) -> Vec<String> {
    let mut child = Process::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--ignored", "--nocapture", "--test-threads=1"])
        .envs(env.iter().map(|(key, value)| (*key, value.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the child starts");
    let stdout = child.stdout.take().unwrap();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.ends_with("READY") {
                let _ = ready_tx.send(());
            }
            lines.push(line);
        }
        lines
    });
    ready_rx.recv_timeout(Duration::from_secs(60)).expect("the child got ready");
    std::thread::sleep(wait);
    child.kill().expect("SIGKILL");
    child.wait().unwrap();
    reader.join().unwrap()
}

/// A small xorshift generator seeded from the clock (the seed is printed, to replay a failure).
pub fn random_from_clock(test: &str) -> impl FnMut() -> u64 {
    let mut seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    eprintln!("{test} seed {seed}");
    move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    }
}
