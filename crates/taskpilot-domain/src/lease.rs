//! Leases: how a worker holds a running task, by a secret token, for a bounded time.

use std::fmt;

use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use crate::ValidationError;

/// The secret of one attempt. Whoever presents it speaks for that attempt, and only that one.
///
/// Minted from a random source outside the domain (the application layer or the database);
/// its text form is 32 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(try_from = "String", into = "String")
)]
pub struct LeaseToken(Uuid);

impl LeaseToken {
    /// Wraps random bits; callers MUST draw them from a cryptographic source.
    pub const fn from_uuid(bits: Uuid) -> Self {
        Self(bits)
    }

    /// The bits inside.
    pub const fn as_uuid(&self) -> Uuid {
        self.0
    }

    /// Reads a token as a worker sent it (32 hex digits, or a hyphenated UUID).
    ///
    /// # Errors
    /// [`ValidationError::LeaseToken`] for anything else.
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        Uuid::try_parse(raw).map(Self).map_err(|_| ValidationError::LeaseToken)
    }
}

impl fmt::Display for LeaseToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.simple(), f)
    }
}

// The token is a secret: keep it out of debug output and so out of logs.
impl fmt::Debug for LeaseToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LeaseToken(..)")
    }
}

impl TryFrom<String> for LeaseToken {
    type Error = ValidationError;

    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw)
    }
}

impl From<LeaseToken> for String {
    fn from(token: LeaseToken) -> Self {
        token.to_string()
    }
}

/// How long a lease lasts: [`LeaseDuration::MIN_SECS`] to [`LeaseDuration::MAX_SECS`] seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct LeaseDuration(u32);

impl LeaseDuration {
    /// The shortest lease: shorter ones would expire under ordinary network hiccups.
    pub const MIN_SECS: u32 = 5;
    /// The longest lease: one day.
    pub const MAX_SECS: u32 = 86_400;

    /// Validates a lease length in seconds.
    ///
    /// # Errors
    /// [`ValidationError::LeaseSeconds`] outside the bounds.
    pub fn from_secs(secs: i64) -> Result<Self, ValidationError> {
        match u32::try_from(secs) {
            Ok(s) if (Self::MIN_SECS..=Self::MAX_SECS).contains(&s) => Ok(Self(s)),
            _ => Err(ValidationError::LeaseSeconds(secs)),
        }
    }

    /// The length in seconds.
    pub const fn secs(self) -> u32 {
        self.0
    }

    /// The length as a duration.
    pub fn as_delta(self) -> TimeDelta {
        TimeDelta::seconds(i64::from(self.0))
    }

    /// When a lease of this length taken or extended at `now` runs out: `now` plus the
    /// length, or the last instant of the calendar when that is past it.
    ///
    /// [`Task::start`](crate::Task::start) and [`Task::heartbeat`](crate::Task::heartbeat)
    /// compute expiries with it, and so does storage when it starts tasks without loading
    /// them, so that every path agrees to the microsecond.
    pub fn expiry_from(self, now: DateTime<Utc>) -> DateTime<Utc> {
        now.checked_add_signed(self.as_delta()).unwrap_or(DateTime::<Utc>::MAX_UTC)
    }
}

/// The lease of a running attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// The attempt's secret.
    pub token: LeaseToken,
    /// When the attempt counts as abandoned unless heartbeated.
    pub expires_at: DateTime<Utc>,
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use crate::{AttemptEnd, EndedAttempt, Reporter};

    const SECRET: &str = "5ec2e70000004000800000000000abcd";

    #[test]
    fn a_lease_of_5_to_86400_seconds_is_accepted() {
        for secs in [5, 6, 60, 300, 86_399, 86_400] {
            let lease = LeaseDuration::from_secs(secs);

            assert_eq!(lease.as_ref().map(|l| l.secs()), Ok(u32::try_from(secs).unwrap()));
            assert_eq!(lease.map(LeaseDuration::as_delta), Ok(TimeDelta::seconds(secs)));
        }
    }

    #[test]
    fn a_lease_expires_its_length_after_now_and_at_the_latest_at_the_end_of_the_calendar() {
        let now = DateTime::<Utc>::UNIX_EPOCH + TimeDelta::microseconds(123_456);
        let minute = LeaseDuration::from_secs(60).unwrap();
        let day = LeaseDuration::from_secs(86_400).unwrap();
        let near_the_end = DateTime::<Utc>::MAX_UTC - TimeDelta::seconds(30);

        assert_eq!(minute.expiry_from(now), now + TimeDelta::seconds(60));
        assert_eq!(day.expiry_from(now), now + TimeDelta::days(1));
        assert_eq!(minute.expiry_from(near_the_end), DateTime::<Utc>::MAX_UTC);
        assert_eq!(minute.expiry_from(DateTime::<Utc>::MAX_UTC), DateTime::<Utc>::MAX_UTC);
    }

    #[test]
    fn a_lease_outside_5_to_86400_seconds_is_refused() {
        for secs in [4, 0, -5, 86_401, i64::from(u32::MAX) + 5, i64::MIN, i64::MAX] {
            assert_eq!(LeaseDuration::from_secs(secs), Err(ValidationError::LeaseSeconds(secs)));
        }
        assert_eq!(
            ValidationError::LeaseSeconds(4).to_string(),
            "leaseSeconds must be between 5 and 86400, got 4"
        );
    }

    #[test]
    fn a_lease_token_shows_as_32_lowercase_hex_digits_and_parses_back() {
        let token =
            LeaseToken::from_uuid(Uuid::from_u128(0x5ec2_e700_0000_4000_8000_0000_0000_abcd));

        let shown = token.to_string();

        assert_eq!(shown, SECRET);
        assert_eq!(LeaseToken::parse(&shown), Ok(token));
        assert_eq!(LeaseToken::parse("5ec2e700-0000-4000-8000-00000000abcd"), Ok(token));
        assert_eq!(LeaseToken::try_from(shown.clone()), Ok(token));
        assert_eq!(String::from(token), shown);
        assert_eq!(token.as_uuid(), Uuid::from_u128(0x5ec2_e700_0000_4000_8000_0000_0000_abcd));
    }

    #[test]
    fn a_lease_token_that_is_not_a_uuid_is_refused() {
        for raw in
            ["", "abc", &SECRET[1..], &format!("{SECRET}0"), "zz000000000000000000000000000000"]
        {
            assert_eq!(LeaseToken::parse(raw), Err(ValidationError::LeaseToken), "{raw:?}");
        }
    }

    #[test]
    fn debug_output_never_shows_a_lease_token() {
        let token = LeaseToken::parse(SECRET).unwrap();
        let lease = Lease { token, expires_at: DateTime::<Utc>::UNIX_EPOCH };
        let ended = EndedAttempt { attempt: 1, token, end: AttemptEnd::Failed };

        let shown = [
            format!("{token:?}"),
            format!("{token:#?}"),
            format!("{lease:?}"),
            format!("{ended:?}"),
            format!("{:?}", Reporter::lease(None, token)),
        ];

        for text in shown {
            assert!(!text.contains(SECRET), "{text}");
            assert!(!text.contains("5ec2e700"), "{text}");
            assert!(text.contains("LeaseToken(..)"), "{text}");
        }
    }
}
