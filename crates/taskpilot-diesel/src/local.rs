//! A PostgreSQL cluster of our own, started from the installed binaries (initdb, pg_ctl).
//!
//! Two uses: a throwaway cluster per test process when no test server is configured, and a
//! persistent development cluster so that the server starts on a fresh machine with no
//! DATABASE_URL. initdb and pg_ctl refuse to run as root, so as root both run as the
//! `postgres` user (through `runuser`, else `su`), and every directory they write is handed
//! to that user first.

use std::ffi::OsString;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{bail, Context as _};

/// What to tell a developer whose machine has no PostgreSQL to offer.
const INSTALL_HINT: &str = "install PostgreSQL (e.g. `apt-get install postgresql` on Debian or \
     Ubuntu, `brew install postgresql` on macOS), or point TASKPILOT_TEST_DATABASE_URL (tests) \
     or DATABASE_URL (the server) at a running PostgreSQL";

/// How often a throwaway cluster tries another port when the one it picked was taken
/// between picking and binding (another process may pick the same free port meanwhile).
const PORT_ATTEMPTS: usize = 5;

/// A running cluster that this process started.
#[derive(Debug)]
pub struct LocalCluster {
    port: u16,
    data_dir: PathBuf,
    log_file: PathBuf,
    /// The server options handed to `pg_ctl start -o`, kept for [`LocalCluster::restart`].
    server_options: String,
    tools: Tools,
    /// For a throwaway cluster: the directory holding everything, deleted on drop.
    throwaway_root: Option<PathBuf>,
}

impl LocalCluster {
    /// A throwaway cluster in a fresh temporary directory on a free port, trust auth,
    /// listening on 127.0.0.1 only. It is stopped and deleted when this process exits,
    /// however it exits (a watchdog process sees to that).
    ///
    /// # Errors
    /// When no PostgreSQL binaries are installed (the message says what to install) or the
    /// cluster does not come up.
    pub fn start_throwaway() -> anyhow::Result<Self> {
        let tools = Tools::find()?;
        // Under the temporary directory: the postgres user must be able to reach the data
        // directory, and when we are root our home (/root, mode 0700) is out of its reach.
        let root =
            std::env::temp_dir().join(format!("taskpilot-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&root)
            .with_context(|| format!("cannot create {}", root.display()))?;
        // Arm the watchdog before anything else can fail, so that no path leaves the
        // directory (or a half-started server) behind.
        let data_dir = root.join("data");
        spawn_watchdog(&tools, &data_dir, &root)?;
        tools.hand_over(&root)?;

        let mut cluster = Self {
            port: 0,
            data_dir,
            log_file: root.join("postgres.log"),
            server_options: String::new(),
            tools,
            throwaway_root: Some(root.clone()),
        };
        // A throwaway cluster needs no durability (no sync at initdb, fsync off in the
        // server): its data dies with the test run, and syncing would only slow the machine.
        cluster.tools.initdb(&cluster.data_dir, false)?;
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            cluster.port = free_port()?;
            cluster.server_options = server_options(cluster.port, &root, true);
            match cluster.restart() {
                Ok(()) => {
                    tracing::info!(
                        port = cluster.port,
                        dir = %root.display(),
                        "started throwaway PostgreSQL cluster on port {}",
                        cluster.port
                    );
                    return Ok(cluster);
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("no port to try")))
            .context("the throwaway PostgreSQL cluster did not start")
    }

    /// The development cluster kept in `data_dir` (created on first use) on `port`; started
    /// if not running, left running when this process exits.
    ///
    /// When it is already running on another port (started earlier with another one), that
    /// port is used.
    ///
    /// # Errors
    /// As [`LocalCluster::start_throwaway`].
    pub fn start_persistent(data_dir: &Path, port: u16) -> anyhow::Result<Self> {
        let tools = Tools::find()?;
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create {}", data_dir.display()))?;
        let data_dir = data_dir
            .canonicalize()
            .with_context(|| format!("cannot resolve {}", data_dir.display()))?;
        let mut cluster = Self {
            port,
            log_file: data_dir.join("server.log"),
            server_options: server_options(port, &data_dir, false),
            data_dir,
            tools,
            throwaway_root: None,
        };
        if !cluster.data_dir.join("PG_VERSION").exists() {
            cluster.tools.hand_over(&cluster.data_dir)?;
            cluster.tools.initdb(&cluster.data_dir, true)?;
            tracing::info!(dir = %cluster.data_dir.display(), "created a PostgreSQL cluster");
        }
        if let Some(running_port) = cluster.running_port()? {
            cluster.port = running_port;
            return Ok(cluster);
        }
        match cluster.restart() {
            Ok(()) => {
                tracing::info!(port, dir = %cluster.data_dir.display(), "started PostgreSQL on port {port}");
                Ok(cluster)
            }
            // Another process may have started it at the same moment: as good as our own.
            Err(e) => match cluster.running_port()? {
                Some(running_port) => {
                    cluster.port = running_port;
                    Ok(cluster)
                }
                None => Err(e),
            },
        }
    }

    /// A URL for database `database` on this cluster, as user `postgres`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// The port the cluster listens on (127.0.0.1 only).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Stops the cluster (fast shutdown); the data stays, [`LocalCluster::restart`] brings it back.
    ///
    /// # Errors
    /// When pg_ctl fails.
    pub fn stop(&self) -> anyhow::Result<()> {
        let data_dir = self.data_dir.as_os_str();
        let args: [&std::ffi::OsStr; 6] = [
            "-D".as_ref(),
            data_dir,
            "-m".as_ref(),
            "fast".as_ref(),
            "-w".as_ref(),
            "stop".as_ref(),
        ];
        let output = self.tools.run("pg_ctl", &args)?;
        check(&output, "pg_ctl stop")
            .with_context(|| format!("cannot stop {}", self.data_dir.display()))
    }

    /// Starts a stopped cluster again on the same port.
    ///
    /// # Errors
    /// When pg_ctl fails.
    pub fn restart(&self) -> anyhow::Result<()> {
        let args: [&std::ffi::OsStr; 10] = [
            "-D".as_ref(),
            self.data_dir.as_os_str(),
            "-l".as_ref(),
            self.log_file.as_os_str(),
            "-w".as_ref(),
            "-t".as_ref(),
            "60".as_ref(),
            "-o".as_ref(),
            self.server_options.as_ref(),
            "start".as_ref(),
        ];
        let output = self.tools.run("pg_ctl", &args)?;
        check(&output, "pg_ctl start").with_context(|| {
            format!(
                "PostgreSQL did not start on port {}; its log ({}) ends with:\n{}",
                self.port,
                self.log_file.display(),
                log_tail(&self.log_file)
            )
        })
    }

    /// The port of the server running on this data directory, if one is.
    fn running_port(&self) -> anyhow::Result<Option<u16>> {
        let args: [&std::ffi::OsStr; 3] =
            ["-D".as_ref(), self.data_dir.as_os_str(), "status".as_ref()];
        let output = self.tools.run("pg_ctl", &args)?;
        // pg_ctl status: 0 running, 3 not running, 4 no usable data directory.
        if !output.status.success() {
            return Ok(None);
        }
        // The fourth line of postmaster.pid is the port.
        let pid_file = std::fs::read_to_string(self.data_dir.join("postmaster.pid"))
            .context("cannot read postmaster.pid of the running server")?;
        let port = pid_file
            .lines()
            .nth(3)
            .and_then(|line| line.trim().parse().ok())
            .context("postmaster.pid names no port")?;
        Ok(Some(port))
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        // Only a throwaway cluster dies with its handle; the development cluster outlives us.
        let Some(root) = &self.throwaway_root else { return };
        let args: [&std::ffi::OsStr; 6] = [
            "-D".as_ref(),
            self.data_dir.as_os_str(),
            "-m".as_ref(),
            "immediate".as_ref(),
            "-w".as_ref(),
            "stop".as_ref(),
        ];
        // Best effort: the watchdog repeats both steps when this process exits.
        let _ = self.tools.run("pg_ctl", &args);
        let _ = std::fs::remove_dir_all(root);
    }
}

/// The options for `pg_ctl start -o`, which pg_ctl passes through a shell to postgres.
fn server_options(port: u16, socket_dir: &Path, throwaway: bool) -> String {
    // A Unix socket path longer than ~107 bytes makes postgres refuse to start; we connect
    // over TCP anyway, so a long directory just gets no socket.
    let socket_dir = if socket_dir.as_os_str().len() > 80 {
        "''".to_owned()
    } else {
        shell_quote(&socket_dir.to_string_lossy())
    };
    let mut options = format!("-p {port} -c listen_addresses=127.0.0.1 -k {socket_dir}");
    if throwaway {
        options.push_str(" -c fsync=off");
    }
    options
}

/// A port nobody listens on now: bind port 0 and let the kernel choose.
fn free_port() -> anyhow::Result<u16> {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("cannot find a free port")?;
    Ok(listener.local_addr().context("cannot find a free port")?.port())
}

/// Starts a process that outlives this one by a second at most: it waits for this process
/// to exit, then stops the cluster in `data_dir` and deletes `root`. Neither a panic, nor
/// `process::exit`, nor a SIGKILL of the test binary can then leave a cluster behind.
fn spawn_watchdog(tools: &Tools, data_dir: &Path, root: &Path) -> anyhow::Result<()> {
    let stop = tools.shell_command(
        "pg_ctl",
        &["-D".into(), data_dir.into(), "-m".into(), "immediate".into(), "stop".into()],
    );
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop} >/dev/null 2>&1; rm -rf {root}",
        pid = std::process::id(),
        root = shell_quote(&root.to_string_lossy()),
    );
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group: a Ctrl-C at the terminal, which signals the test binary's
        // whole group, must not take the watchdog down with it.
        .process_group(0)
        .spawn()
        .context("cannot start the cluster's watchdog (sh)")?;
    Ok(())
}

/// Where the PostgreSQL binaries are and as whom to run them.
#[derive(Debug, Clone)]
struct Tools {
    bin_dir: PathBuf,
    switch_user: SwitchUser,
}

/// How to run a PostgreSQL binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SwitchUser {
    /// As ourselves: we are not root.
    No,
    /// As `postgres` through `runuser -u postgres --`.
    Runuser,
    /// As `postgres` through `su postgres -s /bin/sh -c`.
    Su,
}

impl Tools {
    fn find() -> anyhow::Result<Self> {
        let Some(bin_dir) = find_bin_dir() else {
            bail!(
                "no PostgreSQL server binaries (initdb, pg_ctl) on PATH, through pg_config or \
                 under /usr/lib/postgresql: {INSTALL_HINT}"
            );
        };
        let switch_user = if !running_as_root() {
            SwitchUser::No
        } else if !user_exists("postgres") {
            bail!(
                "initdb refuses to run as root and there is no `postgres` user to run it as: \
                 create one (`useradd --system postgres`), run as another user, or {INSTALL_HINT}"
            );
        } else if find_on_path("runuser").is_some() {
            SwitchUser::Runuser
        } else {
            SwitchUser::Su
        };
        Ok(Self { bin_dir, switch_user })
    }

    /// Creates a cluster in `data_dir` (which must be empty or missing).
    fn initdb(&self, data_dir: &Path, durable: bool) -> anyhow::Result<()> {
        let mut args: Vec<OsString> = vec![
            "-D".into(),
            data_dir.into(),
            "--auth=trust".into(),
            "-U".into(),
            "postgres".into(),
            "-E".into(),
            "UTF8".into(),
            // The C locale exists everywhere; a LANG naming a locale that is not installed
            // would otherwise make initdb fail.
            "--locale=C".into(),
        ];
        if !durable {
            args.push("--no-sync".into());
        }
        let output = self.run("initdb", &args)?;
        check(&output, "initdb").with_context(|| {
            format!("cannot create a PostgreSQL cluster in {}", data_dir.display())
        })
    }

    /// Gives `dir` to the user the binaries run as, so that they can write there.
    fn hand_over(&self, dir: &Path) -> anyhow::Result<()> {
        if self.switch_user == SwitchUser::No {
            return Ok(());
        }
        let output =
            Command::new("chown").arg("postgres").arg(dir).output().context("cannot run chown")?;
        check(&output, "chown postgres")
            .with_context(|| format!("cannot give {} to the postgres user", dir.display()))
    }

    /// Runs binary `program` with `args` (as `postgres` when we are root) and waits for it.
    fn run(&self, program: &str, args: &[impl AsRef<std::ffi::OsStr>]) -> anyhow::Result<Output> {
        let path = self.bin_dir.join(program);
        let mut command = match self.switch_user {
            SwitchUser::No => Command::new(&path),
            SwitchUser::Runuser => {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(&path);
                c
            }
            SwitchUser::Su => {
                let args: Vec<OsString> = args.iter().map(|a| a.as_ref().to_owned()).collect();
                let mut c = Command::new("su");
                c.args(["postgres", "-s", "/bin/sh", "-c"]).arg(self.shell_command(program, &args));
                c
            }
        };
        if self.switch_user != SwitchUser::Su {
            command.args(args);
        }
        // No terminal input: pg_ctl and initdb must never wait for a password prompt.
        command.stdin(Stdio::null());
        command.output().with_context(|| format!("cannot run {}", path.display()))
    }

    /// A shell command line running `program` with `args` as the right user.
    fn shell_command(&self, program: &str, args: &[OsString]) -> String {
        let mut words = vec![shell_quote(&self.bin_dir.join(program).to_string_lossy())];
        words.extend(args.iter().map(|a| shell_quote(&a.to_string_lossy())));
        let line = words.join(" ");
        match self.switch_user {
            SwitchUser::No => line,
            SwitchUser::Runuser => format!("runuser -u postgres -- {line}"),
            SwitchUser::Su => format!("su postgres -s /bin/sh -c {}", shell_quote(&line)),
        }
    }
}

/// Fails with the tool's own words when it did not succeed.
fn check(output: &Output, what: &str) -> anyhow::Result<()> {
    if output.status.success() {
        return Ok(());
    }
    bail!(
        "{what} failed ({}): {} {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim(),
        String::from_utf8_lossy(&output.stdout).trim()
    )
}

/// The last lines of a server log, for an error message.
fn log_tail(path: &Path) -> String {
    let Ok(log) = std::fs::read_to_string(path) else {
        return "(no log)".to_owned();
    };
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

/// The directory holding initdb and pg_ctl: on PATH, else where `pg_config` says, else the
/// newest Debian-style `/usr/lib/postgresql/<version>/bin`.
fn find_bin_dir() -> Option<PathBuf> {
    let has_tools = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(pg_ctl) = find_on_path("pg_ctl").filter(|p| p.parent().is_some_and(has_tools)) {
        // Resolve symlinks (/usr/local/bin/pg_ctl -> /usr/lib/postgresql/15/bin/pg_ctl): the
        // real directory is the one that also holds `postgres` of the same version.
        let real = pg_ctl.canonicalize().unwrap_or(pg_ctl);
        if let Some(dir) = real.parent().filter(|d| has_tools(d)) {
            return Some(dir.to_owned());
        }
    }
    if let Ok(output) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if output.status.success() && has_tools(&dir) {
            return Some(dir);
        }
    }
    std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = version_key(&entry.file_name().to_string_lossy())?;
            let bin = entry.path().join("bin");
            has_tools(&bin).then_some((version, bin))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, bin)| bin)
}

/// "15" -> [15], "9.6" -> [9, 6]; `None` for anything else.
fn version_key(name: &str) -> Option<Vec<u32>> {
    name.split('.').map(|part| part.parse().ok()).collect()
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|p| p.is_file())
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn user_exists(user: &str) -> bool {
    Command::new("id")
        .arg("-u")
        .arg(user)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Quotes `word` for a POSIX shell.
fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quoting_survives_single_quotes() {
        assert_eq!(shell_quote("/tmp/a b"), "'/tmp/a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn debian_version_directories_order_numerically() {
        assert!(version_key("15") > version_key("9.6"));
        assert!(version_key("16") > version_key("15"));
        assert_eq!(version_key("main"), None);
    }

    #[test]
    fn only_throwaway_clusters_run_without_fsync() {
        let dir = Path::new("/tmp/x");

        assert!(server_options(5433, dir, true).contains("fsync=off"));
        assert!(!server_options(5433, dir, false).contains("fsync"));
        assert!(server_options(5433, dir, false)
            .starts_with("-p 5433 -c listen_addresses=127.0.0.1 -k '/tmp/x'"));
    }
}
