//! Starting and stopping the real binaries.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running service process; killed when dropped.
pub struct Service {
    child: Child,
    /// `http://127.0.0.1:PORT`, read from the line the binary prints at start.
    pub url: String,
    pub log: PathBuf,
}

impl Service {
    /// Starts `exe` with `args` and waits for its `listening on http://…` line.
    /// Its log (stderr) goes to `log`.
    pub fn start(exe: &str, args: &[String], log: &Path) -> Service {
        Service::start_with_env(exe, args, &[], log)
    }

    /// Like [`Service::start`], with these environment variables set.
    pub fn start_with_env(exe: &str, args: &[String], env: &[(&str, &str)], log: &Path) -> Service {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open service log");
        let mut child = Command::new(exe)
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info,rumqttd=off,tracing=off")
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {exe}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (found, url) = mpsc::channel();
        std::thread::spawn(move || {
            let mut found = Some(found);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = listening_url(&line)
                    && let Some(sender) = found.take()
                {
                    let _ = sender.send(url);
                }
            }
        });
        let url = match url.recv_timeout(START_TIMEOUT) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                let log = std::fs::read_to_string(log).unwrap_or_default();
                panic!("{exe} did not report its address in {START_TIMEOUT:?}; log:\n{log}");
            }
        };
        Service {
            child,
            url,
            log: log.to_path_buf(),
        }
    }

    /// `kill -9`: the process gets no chance to clean up.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// `kill -9`, keeping the handle (to start another in its place).
    pub fn kill_in_place(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends `SIGTERM` (a graceful stop).
    pub fn send_sigterm(&self) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM succeeds");
    }

    /// Waits up to `limit` for the process to exit: its exit status (`None`: still
    /// running at the limit) and how long the wait took.
    pub async fn wait_for_exit(&mut self, limit: Duration) -> (Option<ExitStatus>, Duration) {
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                return (Some(status), started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        (None, started.elapsed())
    }

    /// The `127.0.0.1:PORT` the service listens on.
    pub fn address(&self) -> &str {
        self.url.trim_start_matches("http://")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Fails with the log's panic lines if any thread of the process panicked.
    pub fn assert_no_thread_panicked(&self) {
        let log = self.log_text();
        let panics: Vec<&str> = log
            .lines()
            .filter(|line| line.contains("panicked"))
            .collect();
        assert!(
            panics.is_empty(),
            "a thread panicked:\n{}",
            panics.join("\n")
        );
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn listening_url(line: &str) -> Option<String> {
    let start = line.find("listening on http")? + "listening on ".len();
    let url = line[start..].split_whitespace().next()?;
    Some(url.to_string())
}
