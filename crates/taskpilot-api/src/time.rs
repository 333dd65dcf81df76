//! The API's time format: RFC 3339 in UTC with exactly six fractional digits
//! (`2026-11-26T10:00:00.123456Z`), which is what PostgreSQL stores.
//!
//! [`micros`] and [`micros_option`] are `#[serde(with = ...)]` modules for
//! `DateTime<Utc>` and `Option<DateTime<Utc>>` fields. Reading accepts any RFC 3339 offset and
//! precision; writing always gives the canonical form.

use chrono::{DateTime, SecondsFormat, Utc};

/// `at` in the API's format: UTC, six fractional digits, `Z`.
pub fn format(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Whether `at` is an instant the API's format can write: from
/// [`EARLIEST_INSTANT_MICROS`](crate::limits::EARLIEST_INSTANT_MICROS) to
/// [`LATEST_INSTANT_MICROS`](crate::limits::LATEST_INSTANT_MICROS), years 0000 to 9999 in UTC.
/// An instant read with an offset may fall outside even when its text did not
/// (`9999-12-31T23:59:59-01:00`).
pub fn in_range(at: DateTime<Utc>) -> bool {
    use crate::limits::{EARLIEST_INSTANT_MICROS, LATEST_INSTANT_MICROS};
    (EARLIEST_INSTANT_MICROS..=LATEST_INSTANT_MICROS).contains(&at.timestamp_micros())
}

/// Reads an RFC 3339 instant with any offset, as UTC.
///
/// # Errors
/// When `raw` is not RFC 3339.
pub fn parse(raw: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
    DateTime::parse_from_rfc3339(raw).map(|at| at.with_timezone(&Utc))
}

/// What a field of this format takes, in the words of an error message.
pub const EXPECTED: &str = "an RFC 3339 instant such as 2026-11-26T10:00:00Z";

fn not_an_instant<E: serde::de::Error>(raw: &str) -> E {
    E::invalid_value(serde::de::Unexpected::Str(raw), &EXPECTED)
}

/// `#[serde(with = "taskpilot_api::time::micros")]` for a `DateTime<Utc>` field.
pub mod micros {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes [`super::format`].
    ///
    /// # Errors
    /// The serializer's.
    pub fn serialize<S: Serializer>(at: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format(*at))
    }

    /// Reads [`super::parse`].
    ///
    /// # Errors
    /// When the value is not an RFC 3339 string.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let raw = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        super::parse(&raw).map_err(|_| super::not_an_instant(&raw))
    }
}

/// `#[serde(with = "taskpilot_api::time::micros_option")]` for an `Option<DateTime<Utc>>`
/// field: `null` for `None`.
pub mod micros_option {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes [`super::format`], or `null`.
    ///
    /// # Errors
    /// The serializer's.
    pub fn serialize<S: Serializer>(at: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match at {
            Some(at) => s.serialize_str(&super::format(*at)),
            None => s.serialize_none(),
        }
    }

    /// Reads [`super::parse`], or `null`.
    ///
    /// # Errors
    /// When the value is neither `null` nor an RFC 3339 string.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        let raw = <Option<std::borrow::Cow<'de, str>>>::deserialize(d)?;
        raw.map(|raw| super::parse(&raw).map_err(|_| super::not_an_instant(&raw))).transpose()
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn times_have_exactly_six_fractional_digits_in_utc() {
        let whole = Utc.with_ymd_and_hms(2026, 11, 26, 10, 0, 0).unwrap();

        assert_eq!(format(whole), "2026-11-26T10:00:00.000000Z");
        assert_eq!(
            format(whole + chrono::TimeDelta::microseconds(123_456)),
            "2026-11-26T10:00:00.123456Z"
        );
    }

    #[test]
    fn the_range_is_years_0000_to_9999_in_utc() {
        use crate::limits::{EARLIEST_INSTANT_MICROS, LATEST_INSTANT_MICROS};
        let earliest = DateTime::from_timestamp_micros(EARLIEST_INSTANT_MICROS).unwrap();
        let latest = DateTime::from_timestamp_micros(LATEST_INSTANT_MICROS).unwrap();

        assert_eq!(format(earliest), "0000-01-01T00:00:00.000000Z");
        assert_eq!(format(latest), "9999-12-31T23:59:59.999999Z");
        assert!(in_range(earliest) && in_range(latest));
        let micro = chrono::TimeDelta::microseconds(1);
        assert!(!in_range(earliest - micro) && !in_range(latest + micro));
        assert!(!in_range(parse("9999-12-31T23:59:59-01:00").unwrap()));
    }

    #[test]
    fn any_offset_reads_back_as_utc() {
        let at = parse("2026-11-26T12:00:00.5+02:00");

        assert_eq!(format(at.unwrap()), "2026-11-26T10:00:00.500000Z");
        assert!(parse("yesterday").is_err());
    }
}
