//! The figures: a table for people, JSON for tools, and the aims met or missed.

use std::fmt::Write as _;

use serde::Serialize;

use crate::db::PgSettings;
use crate::machine::Machine;
use crate::scenarios::Outcome;
use crate::server::Memory;

/// How the run was set up.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Settings {
    /// Measured seconds per scenario.
    pub duration_secs: u64,
    /// Warm-up seconds.
    pub warmup_secs: u64,
    /// Drain backlog.
    pub backlog: u64,
    /// Finished tasks in the scale scenario.
    pub finished: u64,
    /// Concurrent workers.
    pub workers: usize,
    /// The started server's log filter.
    pub server_log: String,
    /// Whether the bench started the server.
    pub server: String,
    /// `/proc/loadavg` when the run began: other work on the machine skews every figure.
    pub load_at_start: String,
}

/// A scenario that failed.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    /// Its key.
    pub key: String,
    /// Why.
    pub error: String,
}

/// One performance aim (see docs/performance.md), met or missed.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Aim {
    /// What is aimed at.
    pub aim: String,
    /// What was measured, in words.
    pub measured: String,
    /// Met, or not; `None` when it was not measured.
    pub met: Option<bool>,
}

/// Everything a run found.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The machine.
    pub machine: Machine,
    /// PostgreSQL.
    pub postgres: PgSettings,
    /// The run's settings.
    pub settings: Settings,
    /// The figures, in the order they were measured.
    pub outcomes: Vec<Outcome>,
    /// Scenarios that failed.
    pub failures: Vec<Failure>,
    /// Peak resident memory of the started server, in MiB.
    pub server_peak_rss_mib: Option<f64>,
    /// Its resident memory at the end, in MiB.
    pub server_final_rss_mib: Option<f64>,
    /// The aims.
    pub aims: Vec<Aim>,
    /// The server's memory as last read.
    #[serde(skip)]
    pub memory: Option<Memory>,
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

impl Report {
    /// An empty report.
    pub fn new(machine: Machine, postgres: PgSettings, settings: Settings) -> Self {
        Self {
            machine,
            postgres,
            settings,
            outcomes: Vec::new(),
            failures: Vec::new(),
            server_peak_rss_mib: None,
            server_final_rss_mib: None,
            aims: Vec::new(),
            memory: None,
        }
    }

    fn get(&self, key: &str) -> Option<&Outcome> {
        self.outcomes.iter().find(|o| o.key == key)
    }

    fn rate(&self, key: &str) -> Option<f64> {
        self.get(key).and_then(|o| o.rate_per_sec)
    }

    fn share(&self, ours: &str, theirs: &str) -> Option<f64> {
        Some(self.rate(ours)? / self.rate(theirs)?)
    }

    /// Fills in memory and the aims.
    pub fn evaluate(&mut self) {
        if let Some(m) = self.memory {
            self.server_peak_rss_mib = Some(mib(m.peak_kib));
            self.server_final_rss_mib = Some(mib(m.rss_kib));
        }
        let mut aims = Vec::new();
        let mut share_aim = |aim: &str, ours: &str, theirs: &str, at_least: f64| {
            let share = self.share(ours, theirs);
            let of = if theirs.starts_with("ceiling/") { "the ceiling" } else { theirs };
            aims.push(Aim {
                aim: aim.to_owned(),
                measured: share
                    .map_or("not measured".to_owned(), |s| format!("{:.0}% of {of}", s * 100.0)),
                met: share.map(|s| s >= at_least),
            });
        };
        share_aim(
            "claim 1 + succeed 1 ≥ 75% of the SQL ceiling",
            "drain/claim-1",
            "ceiling/claim-1",
            0.75,
        );
        share_aim(
            "claim 100 + batch complete ≥ 60% of the SQL ceiling",
            "drain/claim-100",
            "ceiling/claim-100",
            0.60,
        );
        share_aim(
            "claim 100 + batch complete ≥ graphile-worker batched",
            "drain/claim-100",
            "peer/graphile-worker-batched",
            1.0,
        );
        share_aim(
            "claim 1 + succeed 1 ≥ graphile-worker unbatched",
            "drain/claim-1",
            "peer/graphile-worker-unbatched",
            1.0,
        );
        share_aim(
            "Worker runtime with defaults ≥ 80% of claim 100 + batch complete",
            "drain/worker-runtime",
            "drain/claim-100",
            0.8,
        );
        let pickup = self.get("pickup").and_then(|o| o.latencies.get("pickup")).copied();
        aims.push(Aim {
            aim: "pickup p50 < 10 ms".to_owned(),
            measured: pickup.map_or("not measured".to_owned(), |p| format!("{:.1} ms", p.p50_ms)),
            met: pickup.map(|p| p.p50_ms < 10.0),
        });
        aims.push(Aim {
            aim: "pickup p99 < 50 ms".to_owned(),
            measured: pickup.map_or("not measured".to_owned(), |p| format!("{:.1} ms", p.p99_ms)),
            met: pickup.map(|p| p.p99_ms < 50.0),
        });
        let read = self.get("read").and_then(|o| o.latencies.get("get")).copied();
        aims.push(Aim {
            aim: "read p99 < 10 ms".to_owned(),
            measured: read.map_or("not measured".to_owned(), |p| format!("{:.1} ms", p.p99_ms)),
            met: read.map(|p| p.p99_ms < 10.0),
        });
        let scale = self.share("scale/finished", "scale/empty");
        aims.push(Aim {
            aim: "drain with 1,000,000 finished tasks and their history ≥ 90% of the empty-table rate"
                .to_owned(),
            measured: scale.map_or("not measured".to_owned(), |s| format!("{:.0}%", s * 100.0)),
            met: scale.map(|s| s >= 0.90),
        });
        let sustained = self.get("sustained/claim-100").and_then(|o| o.sustained_share);
        aims.push(Aim {
            aim: "sustained drain: every later minute ≥ 90% of the first, retention running"
                .to_owned(),
            measured: sustained.map_or("not measured".to_owned(), |s| {
                format!("slowest later minute {:.0}%", s * 100.0)
            }),
            met: sustained.map(|s| s >= 0.90),
        });
        let peak = self.server_peak_rss_mib;
        aims.push(Aim {
            aim: "server < 100 MiB resident".to_owned(),
            measured: peak.map_or("not measured".to_owned(), |p| format!("peak {p:.1} MiB")),
            met: peak.map(|p| p < 100.0),
        });
        self.aims = aims;
    }

    /// The figures as Markdown tables.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let m = &self.machine;
        let pg = &self.postgres;
        let _ = writeln!(
            out,
            "machine: {} cores ({}), {} MiB, Linux {}; PostgreSQL {} (shared_buffers {}, \
             synchronous_commit {}, fsync {}, max_connections {}, wal_level {}, autovacuum {}); \
             {} s measured after {} s warm-up; server log level {}; load average at start {}",
            m.cores,
            m.cpu,
            m.memory_mib,
            m.kernel,
            pg.version,
            pg.shared_buffers,
            pg.synchronous_commit,
            pg.fsync,
            pg.max_connections,
            pg.wal_level,
            pg.autovacuum,
            self.settings.duration_secs,
            self.settings.warmup_secs,
            self.settings.server_log,
            self.settings.load_at_start,
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "| scenario | figure | latencies (p50 / p99 / p99.9 / max, ms) | cores used: server / PostgreSQL / bench / other | per job: transactions / rows written / WAL bytes |"
        );
        let _ = writeln!(out, "|---|---:|---|---|---|");
        for o in &self.outcomes {
            let mut figure = o.rate_per_sec.map(thousands).unwrap_or_default();
            if let Some(ceiling) = o
                .key
                .strip_prefix("drain/")
                .and_then(|k| self.share(&o.key, &format!("ceiling/{k}")))
            {
                let _ = write!(figure, " ({:.0}% of ceiling)", ceiling * 100.0);
            }
            if o.key == "scale/finished" {
                if let Some(s) = self.share("scale/finished", "scale/empty") {
                    let _ = write!(figure, " ({:.0}% of empty)", s * 100.0);
                }
            }
            if o.drained {
                let _ =
                    write!(figure, " (backlog gone after {:.1} s)", o.window_secs.unwrap_or(0.0));
            }
            let latencies: Vec<String> = o
                .latencies
                .iter()
                .map(|(name, s)| {
                    format!(
                        "{name} {:.2} / {:.2} / {:.2} / {:.2}",
                        s.p50_ms, s.p99_ms, s.p999_ms, s.max_ms
                    )
                })
                .collect();
            let mut notes = latencies.join("; ");
            if let Some(peak) = o.server_peak_mib {
                let _ = write!(notes, " (server peak so far {peak:.0} MiB)");
            }
            for note in &o.notes {
                let _ = write!(notes, " ({note})");
            }
            let cpu = o.cpu.map_or(String::new(), |c| {
                format!("{:.2} / {:.2} / {:.2} / {:.2}", c.server, c.postgres, c.bench, c.other)
            });
            let per_job = match (o.cpu.and_then(|c| c.db), o.count) {
                (Some(db), Some(n)) if n > 0 => {
                    let n = n as f64;
                    format!(
                        "{:.2} / {:.1} / {}",
                        db.commits as f64 / n,
                        (db.rows_inserted + db.rows_updated) as f64 / n,
                        thousands(db.wal_bytes as f64 / n)
                    )
                }
                _ => String::new(),
            };
            let _ =
                writeln!(out, "| {} | {} | {} | {} | {} |", o.label, figure, notes, cpu, per_job);
        }
        if let (Some(peak), Some(end)) = (self.server_peak_rss_mib, self.server_final_rss_mib) {
            let _ = writeln!(
                out,
                "| memory: server resident (VmHWM) | {peak:.1} MiB peak | {end:.1} MiB at the end | | |"
            );
        }
        for f in &self.failures {
            let _ = writeln!(out, "| {} | failed | {} | | |", f.key, f.error.replace('|', "/"));
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "| aim | measured | |");
        let _ = writeln!(out, "|---|---|---|");
        for a in &self.aims {
            let verdict = match a.met {
                Some(true) => "met",
                Some(false) => "missed",
                None => "not measured",
            };
            let _ = writeln!(out, "| {} | {} | {verdict} |", a.aim, a.measured);
        }
        out
    }
}

/// One outcome in a line, for progress output.
pub fn one_line(o: &Outcome) -> String {
    let rate = o.rate_per_sec.map(|r| format!("{}/s", thousands(r))).unwrap_or_default();
    let latencies: Vec<String> = o
        .latencies
        .iter()
        .map(|(name, s)| format!("{name} p50 {:.2} ms p99 {:.2} ms", s.p50_ms, s.p99_ms))
        .collect();
    format!("{rate} {}", latencies.join(", "))
}

/// `12345.6` as `12,346`.
fn thousands(x: f64) -> String {
    let n = x.round().max(0.0) as u64;
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(0.4), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1234.0), "1,234");
        assert_eq!(thousands(28_112.4), "28,112");
        assert_eq!(thousands(1_000_000.0), "1,000,000");
    }
}
