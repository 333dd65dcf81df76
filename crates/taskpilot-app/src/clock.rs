//! The clock a server runs on.

use chrono::{DateTime, Utc};
use taskpilot_domain::Clock;

/// A clock reading the system time, cut to microseconds (what storage keeps).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        taskpilot_domain::to_micros(Utc::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_clock_reads_whole_microseconds() {
        let now = SystemClock.now();

        assert_eq!(now.timestamp_subsec_nanos() % 1000, 0);
    }
}
