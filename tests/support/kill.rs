//! Killing a real process: a test binary runs one of its own `#[ignore]`d tests as a child,
//! waits until the child prints `READY`, lets it work, then kills it with SIGKILL.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Command as Process, Stdio};
use std::time::Duration;

/// A child process (one of this binary's `#[ignore]`d tests) and the lines it prints.
pub struct Spawned {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Spawned {
    /// Starts the ignored test `test` of this binary with `env` set.
    pub fn start(test: &str, env: &[(&str, String)]) -> Self {
        let mut child = Process::new(std::env::current_exe().unwrap())
            .args(["--exact", test, "--ignored", "--nocapture", "--test-threads=1"])
            .envs(env.iter().map(|(key, value)| (*key, value.as_str())))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the child starts");
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (sender, lines) = std::sync::mpsc::channel();
        // A child's panic goes to stderr: its lines come through too (prefixed), so that a
        // failure can show why the child ended.
        let errors = sender.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if errors.send(format!("stderr: {line}")).is_err() {
                    break;
                }
            }
        });
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Spawned { child, lines, seen: Vec::new() }
    }

    /// Waits up to `timeout` for a line ending with `suffix`; whether one came.
    pub fn wait_for(&mut self, suffix: &str, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line.ends_with(suffix);
                    self.seen.push(line);
                    if found {
                        return true;
                    }
                }
                Err(_) => return false,
            }
        }
    }

    /// The lines read so far (stdout, and stderr prefixed `stderr: `).
    pub fn seen(&self) -> &[String] {
        &self.seen
    }

    /// Kills the child with SIGKILL and returns every line it printed.
    pub fn kill(mut self) -> Vec<String> {
        self.child.kill().expect("SIGKILL");
        self.child.wait().unwrap();
        self.seen.extend(self.lines.iter());
        self.seen
    }
}

/// Runs the ignored test `test` of this binary as a child with `env` set, kills it `wait` after
/// it printed `READY`, and returns the lines it printed.
pub fn run_child(test: &str, env: &[(&str, String)], wait: Duration) -> Vec<String> {
    let mut child = Spawned::start(test, env);
    assert!(child.wait_for("READY", Duration::from_secs(60)), "the child got ready");
    std::thread::sleep(wait);
    child.kill()
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
