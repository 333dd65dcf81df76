//! A PostgreSQL cluster of our own, started from the installed binaries (initdb, pg_ctl).

use std::path::Path;

/// A running cluster that this process started.
#[derive(Debug)]
pub struct LocalCluster {
    port: u16,
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
        anyhow::bail!("skeleton")
    }

    /// The development cluster kept in `data_dir` (created on first use) on `port`; started
    /// if not running, left running when this process exits.
    ///
    /// # Errors
    /// As [`LocalCluster::start_throwaway`].
    pub fn start_persistent(data_dir: &Path, port: u16) -> anyhow::Result<Self> {
        let _ = data_dir;
        let _ = port;
        anyhow::bail!("skeleton")
    }

    /// A URL for database `database` on this cluster, as user `postgres`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Stops the cluster (fast shutdown); the data stays, [`LocalCluster::restart`] brings it back.
    ///
    /// # Errors
    /// When pg_ctl fails.
    pub fn stop(&self) -> anyhow::Result<()> {
        anyhow::bail!("skeleton")
    }

    /// Starts a stopped cluster again on the same port.
    ///
    /// # Errors
    /// When pg_ctl fails.
    pub fn restart(&self) -> anyhow::Result<()> {
        anyhow::bail!("skeleton")
    }
}
