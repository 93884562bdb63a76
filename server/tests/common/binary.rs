//! The `copains` binary run as a user runs it (tests of the CLI and of what `serve` prints).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_copains");

/// The command without the test runner's own `COPAINS_*` variables (the binary reads them
/// all as configuration).
pub fn clean_env(cmd: &mut Command) -> &mut Command {
    for (key, _) in std::env::vars() {
        if key.starts_with("COPAINS_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// `copains serve` on a free port, run from `dir` with its data under `data`, logging JSON.
pub struct Served {
    pub child: Child,
    /// The address it listens on (`host:port`).
    pub addr: String,
    /// What it printed so far.
    pub lines: Vec<String>,
    rx: Receiver<String>,
}

impl Served {
    /// Starts the server and waits until it prints its address.
    pub fn start(dir: &Path, data: &Path) -> Self {
        let mut child = clean_env(&mut Command::new(BIN))
            .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
            // The SFU on a free port too: tests run side by side.
            .env("COPAINS_GATEWAY__VOICE__UDP_BIND", "127.0.0.1:0")
            .arg(data)
            .current_dir(dir)
            .env("COPAINS_LOG_FORMAT", "json")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut lines = Vec::new();
        let addr = loop {
            let line = rx.recv_timeout(Duration::from_secs(60)).expect("server prints its address");
            lines.push(line.clone());
            if let Some(rest) = line.strip_prefix("LesCopains is running on http://") {
                break rest.trim().to_owned();
            }
        };
        Self { child, addr, lines, rx }
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("kill");
        assert!(status.success());
    }

    /// Collects what it printed since (after it stopped).
    pub fn collect_output(&mut self) {
        while let Ok(line) = self.rx.recv_timeout(Duration::from_millis(200)) {
            self.lines.push(line);
        }
    }
}
