//! Other processes: a test runs one of its own binary's `#[ignore]`d tests as a child
//! process, talks to it over stdin and stdout, and reads what it printed.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A running child process and the lines it prints.
pub struct ChildProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl ChildProcess {
    /// Starts the ignored test `test` of this test binary with `env` set.
    pub fn start(test: &str, env: &[(&str, String)]) -> ChildProcess {
        let mut child = Command::new(std::env::current_exe().expect("test binary"))
            .args(["--exact", test, "--ignored", "--nocapture", "--test-threads=1"])
            .envs(env.iter().map(|(key, value)| (*key, value.as_str())))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the child starts");
        let stdout = child.stdout.take().expect("stdout");
        let stdin = child.stdin.take();
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        ChildProcess { child, stdin, lines }
    }

    /// Sends one line to the child's stdin.
    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").and_then(|()| stdin.flush()).expect("write to the child");
    }

    /// The next line the child prints, within `timeout`.
    pub fn next_line(&mut self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// Waits for a line `marker`, returning the lines before it.
    pub fn lines_until(&mut self, marker: &str, timeout: Duration) -> Vec<String> {
        let deadline = std::time::Instant::now() + timeout;
        let mut lines = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                // The test harness prints `test name ... ` before the child's first line.
                Ok(line) if line == marker || line.ends_with(&format!(" {marker}")) => return lines,
                Ok(line) => lines.push(line),
                Err(_) => {
                    let tail = &lines[lines.len().saturating_sub(5)..];
                    panic!(
                        "the child did not print {marker} within {timeout:?} (it printed {} lines, last {tail:?})",
                        lines.len()
                    )
                }
            }
        }
    }

    /// Waits for the child to exit and asserts that it succeeded.
    pub fn finish(mut self) {
        drop(self.stdin.take());
        let status = self.child.wait().expect("wait for the child");
        assert!(status.success(), "the child failed: {status}");
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Reads one line from this process's stdin (a child waiting for its parent).
pub fn read_stdin_line() -> String {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).expect("read stdin");
    line.trim_end().to_owned()
}

/// The value of a variable the parent set for this child.
pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("the parent sets {name}"))
}
