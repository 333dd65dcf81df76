//! What a measured window cost: who used the cores (the server, PostgreSQL, the bench itself,
//! and everything else on the machine, which should be nothing; if it is not, the figures of
//! that window are low for a reason outside TaskPilot), from `/proc` (Linux only); and what
//! PostgreSQL did for it: commits and row writes in the bench database (`pg_stat_database`,
//! which backends report up to a second late) and WAL written (`pg_current_wal_lsn()`, for
//! the whole cluster).

use std::sync::OnceLock;

use diesel::prelude::*;
use diesel::sql_types::BigInt;
use serde::Serialize;

/// The server process the bench started, once it did.
pub static SERVER_PID: OnceLock<u32> = OnceLock::new();

/// The bench database, whose counters are read.
pub static DATABASE_URL: OnceLock<String> = OnceLock::new();

/// PostgreSQL's cumulative counters.
#[derive(Debug, Clone, Copy, QueryableByName)]
struct DbCounters {
    #[diesel(sql_type = BigInt)]
    commits: i64,
    #[diesel(sql_type = BigInt)]
    inserted: i64,
    #[diesel(sql_type = BigInt)]
    updated: i64,
    #[diesel(sql_type = BigInt)]
    wal_bytes: i64,
}

fn db_counters() -> Option<DbCounters> {
    let mut conn = PgConnection::establish(DATABASE_URL.get()?).ok()?;
    diesel::sql_query(
        "SELECT xact_commit AS commits, tup_inserted AS inserted, tup_updated AS updated, \
             pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::int8 AS wal_bytes \
         FROM pg_stat_database WHERE datname = current_database()",
    )
    .get_result(&mut conn)
    .ok()
}

/// What PostgreSQL did over a window.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DbUse {
    /// Transactions committed in the bench database.
    pub commits: i64,
    /// Rows inserted there.
    pub rows_inserted: i64,
    /// Rows updated there.
    pub rows_updated: i64,
    /// WAL written by the whole cluster, in bytes.
    pub wal_bytes: i64,
}

/// Cumulative CPU ticks at one instant.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot {
    all: u64,
    idle: u64,
    server: u64,
    postgres: u64,
    bench: u64,
    db: Option<DbCounters>,
}

/// Cores used, on average over a window (a 2-core machine has 2.0 in all).
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CpuUse {
    /// The TaskPilot server.
    pub server: f64,
    /// Every `postgres` process (backends, WAL writer, checkpointer, autovacuum).
    pub postgres: f64,
    /// This process: the load generator.
    pub bench: f64,
    /// Everything else.
    pub other: f64,
    /// Idle (including waiting for I/O).
    pub idle: f64,
    /// What PostgreSQL did meanwhile.
    pub db: Option<DbUse>,
}

/// Reads the counters now; `None` where `/proc` is not there.
pub fn snapshot() -> Option<Snapshot> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .take(8) // user nice system idle iowait irq softirq steal (guest is inside user)
        .filter_map(|f| f.parse().ok())
        .collect();
    if fields.len() < 5 {
        return None;
    }
    let all = fields.iter().sum();
    let idle = fields[3] + fields[4];
    let server = SERVER_PID.get().map_or(0, |pid| process_ticks(*pid).unwrap_or(0));
    let bench = process_ticks(std::process::id()).unwrap_or(0);
    let mut postgres = 0;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if let Some((comm, ticks)) = comm_and_ticks(pid) {
            if comm == "postgres" {
                postgres += ticks;
            }
        }
    }
    Some(Snapshot { all, idle, server, postgres, bench, db: db_counters() })
}

/// What was used between `from` and `to`.
pub fn between(from: Option<Snapshot>, to: Option<Snapshot>) -> Option<CpuUse> {
    let (from, to) = (from?, to?);
    let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;
    let all = to.all.saturating_sub(from.all) as f64;
    if all <= 0.0 {
        return None;
    }
    let share = |a: u64, b: u64| b.saturating_sub(a) as f64 / all * cores;
    let server = share(from.server, to.server);
    let postgres = share(from.postgres, to.postgres);
    let bench = share(from.bench, to.bench);
    let idle = share(from.idle, to.idle);
    let other = (cores - idle - server - postgres - bench).max(0.0);
    let db = match (from.db, to.db) {
        (Some(a), Some(b)) => Some(DbUse {
            commits: b.commits - a.commits,
            rows_inserted: b.inserted - a.inserted,
            rows_updated: b.updated - a.updated,
            wal_bytes: b.wal_bytes - a.wal_bytes,
        }),
        _ => None,
    };
    Some(CpuUse { server, postgres, bench, other, idle, db })
}

fn process_ticks(pid: u32) -> Option<u64> {
    comm_and_ticks(pid).map(|(_, ticks)| ticks)
}

/// A process's name and its user + system ticks, from `/proc/<pid>/stat`. The name sits in
/// parentheses and may contain spaces, so the fields are counted after the last `)`.
fn comm_and_ticks(pid: u32) -> Option<(String, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_owned();
    let rest: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    // After the name: state is field 3, utime field 14, stime field 15.
    let utime: u64 = rest.get(11)?.parse().ok()?;
    let stime: u64 = rest.get(12)?.parse().ok()?;
    Some((comm, utime + stime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_a_name_and_ticks() {
        let (comm, _) = comm_and_ticks(std::process::id()).unwrap_or_default();

        assert!(!comm.is_empty());
    }
}
