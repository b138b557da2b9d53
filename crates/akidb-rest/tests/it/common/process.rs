//! The `akidb-rest` executable as a child process: started with only the settings a test
//! gives, its log collected, stopped with a real SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The `akidb-rest` executable with no inherited `AKIDB_*` variable (only what each test
/// sets), `RUST_LOG=info`, and a free loopback port.
pub fn command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_akidb-rest"));
    for (name, _) in std::env::vars() {
        if name.starts_with("AKIDB_") {
            command.env_remove(name);
        }
    }
    command
        .env("RUST_LOG", "info")
        .env("AKIDB_BIND", "127.0.0.1:0");
    command
}

/// A running `akidb-rest` process.
pub struct Service {
    pub child: Child,
    /// `host:port` it listens on.
    pub addr: String,
    log: Arc<Mutex<String>>,
    /// Set when the process's stderr has ended and every line of it is in `log`.
    log_ended: Arc<AtomicBool>,
}

impl Service {
    /// Starts the executable with `settings` (and no inherited `AKIDB_*` variable) on a free
    /// loopback port; returns once it has logged its address.
    pub fn start(settings: &[(&str, &str)]) -> Self {
        let mut command = command();
        command.stdout(Stdio::null()).stderr(Stdio::piped());
        for (name, value) in settings {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("start akidb-rest");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let log_ended = Arc::new(AtomicBool::new(false));
        let (found, address) = std::sync::mpsc::channel();
        {
            let log = Arc::clone(&log);
            let log_ended = Arc::clone(&log_ended);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Some(rest) = line.split("addr=").nth(1) {
                        let addr = rest.split_whitespace().next().unwrap_or_default();
                        let _ = found.send(addr.to_string());
                    }
                    let mut log = log.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
                log_ended.store(true, Ordering::Release);
            });
        }
        let addr = address
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("no address logged; log:\n{}", log.lock().unwrap()));
        Self {
            child,
            addr,
            log,
            log_ended,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Polls `/health` until it answers 200 (panics after 120 s or if the process ends).
    pub async fn wait_ready(&mut self) {
        let client = super::fresh_client();
        let started = Instant::now();
        loop {
            let response = client.get(self.url("/health")).send().await;
            if response.is_ok_and(|response| response.status() == 200) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "akidb-rest ended ({status}) before it was ready:\n{}",
                    self.log()
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "not ready after 120 s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits for the process to end; `None` if it is still running after `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if started.elapsed() >= limit {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Everything logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The whole log of a process that has ended: waits until its last line has been read
    /// (the reader thread can lag the exit).
    pub async fn whole_log(&self) -> String {
        super::wait_for("the end of the log", Duration::from_secs(20), || {
            self.log_ended.load(Ordering::Acquire)
        })
        .await;
        self.log()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        // Never leave a server behind when a test fails half-way.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
