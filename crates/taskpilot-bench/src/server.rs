//! The release server the benchmark starts, and its memory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

/// A `taskpilot` process started by the benchmark; killed when dropped.
#[derive(Debug)]
pub struct Server {
    child: Child,
    /// Its base URL.
    pub url: String,
}

impl Server {
    /// Starts `binary` serving `database_url` on a free port of 127.0.0.1, logging at `log`
    /// into `log_file`, with `env` added to its environment, and waits until `/readyz` answers (migrations done).
    ///
    /// # Errors
    /// When it cannot start or is not ready within a minute.
    pub async fn start(
        binary: &Path,
        database_url: &str,
        log: &str,
        log_file: &Path,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        if !binary.exists() {
            bail!(
                "no server binary at {}: build it with `cargo build --release -p taskpilot-http`",
                binary.display()
            );
        }
        let port = free_port()?;
        let url = format!("http://127.0.0.1:{port}");
        let log_out = std::fs::File::create(log_file)
            .with_context(|| format!("cannot create {}", log_file.display()))?;
        let log_err = log_out.try_clone().context("cannot share the log file")?;
        let child = Command::new(binary)
            .arg("serve")
            .env("DATABASE_URL", database_url)
            .env("TASKPILOT_BIND", format!("127.0.0.1:{port}"))
            .env("TASKPILOT_LOG", log)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log_out)
            .stderr(log_err)
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let mut server = Self { child, url };
        let api = crate::api::Api::new(&server.url)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while !api.ready().await {
            if let Some(status) = server.child.try_wait()? {
                bail!("the server exited at start ({status}); see {}", log_file.display());
            }
            if Instant::now() > deadline {
                bail!("the server was not ready within a minute; see {}", log_file.display());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(server)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the server with SIGTERM (SIGKILL if it is still up after ten seconds).
    pub fn stop(mut self) {
        self.terminate();
    }

    fn terminate(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// The `taskpilot` binary next to this one (both are built into `target/release`).
pub fn default_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("taskpilot")))
        .unwrap_or_else(|| PathBuf::from("target/release/taskpilot"))
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(listener.local_addr()?.port())
}

/// Resident memory of a process, from `/proc/<pid>/status`, in KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    /// `VmRSS`: resident now.
    pub rss_kib: u64,
    /// `VmHWM`: the peak resident size so far.
    pub peak_kib: u64,
}

/// Reads [`Memory`] of `pid`.
///
/// # Errors
/// When `/proc/<pid>/status` cannot be read (not Linux, or the process is gone).
pub fn memory(pid: u32) -> anyhow::Result<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok(Memory { rss_kib: field("VmRSS:"), peak_kib: field("VmHWM:") })
}
