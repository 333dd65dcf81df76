//! The machine the figures were measured on.

use serde::Serialize;

/// Cores, memory and CPU model, from the standard library and `/proc`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Machine {
    /// Cores this process may use.
    pub cores: usize,
    /// `MemTotal` in MiB (0 when `/proc/meminfo` cannot be read).
    pub memory_mib: u64,
    /// The CPU's `model name`.
    pub cpu: String,
    /// `uname -r`-like kernel release, from `/proc/sys/kernel/osrelease`.
    pub kernel: String,
}

impl Machine {
    /// Reads what this machine says about itself; unknowns stay empty.
    pub fn read() -> Self {
        let cores = std::thread::available_parallelism().map(usize::from).unwrap_or(0);
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_kib = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0);
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_owned())
            .unwrap_or_default();
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default();
        Self { cores, memory_mib: memory_kib / 1024, cpu, kernel }
    }
}
