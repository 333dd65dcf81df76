//! What storage can keep: whole microseconds, JSON without NUL or numbers too large to read
//! back, error messages of bounded length.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::ValidationError;

/// The magnitude from which a JSON number is refused: see [`check_json`].
pub(crate) const MAX_JSON_NUMBER: f64 = 1e308;

/// The longest error message kept on a task, in bytes; longer ones are truncated and say so.
pub const MAX_ERROR_BYTES: usize = 8 * 1024;

/// Checks that a JSON value (a payload or result, named `field` in the error) can be stored
/// and read back: no NUL character (U+0000) in any string or key, which PostgreSQL's jsonb
/// cannot hold, and no number of magnitude 1e308 or more, which jsonb keeps
/// as an exact decimal and spells back in plain digits that near `f64::MAX` no longer parse.
///
/// # Errors
/// [`ValidationError::NulInJson`] or [`ValidationError::HugeNumberInJson`] naming `field`.
pub fn check_json(field: &'static str, value: &Value) -> Result<(), ValidationError> {
    let clean = match value {
        Value::String(s) => !s.contains('\0'),
        Value::Array(items) => return items.iter().try_for_each(|v| check_json(field, v)),
        Value::Object(map) => {
            for (key, v) in map {
                if key.contains('\0') {
                    return Err(ValidationError::NulInJson(field));
                }
                check_json(field, v)?;
            }
            true
        }
        Value::Number(n) => {
            if n.as_f64().is_some_and(|f| f.abs() >= MAX_JSON_NUMBER) {
                return Err(ValidationError::HugeNumberInJson(field));
            }
            true
        }
        Value::Null | Value::Bool(_) => true,
    };
    if clean {
        Ok(())
    } else {
        Err(ValidationError::NulInJson(field))
    }
}

/// Cuts `at` to whole microseconds: PostgreSQL keeps no more, and what the API returns
/// must equal what is stored. A leap second (`23:59:60.5`, which chrono can hold) becomes the
/// instant PostgreSQL stores for it, in the next minute (`00:00:00.5`).
pub fn to_micros(at: DateTime<Utc>) -> DateTime<Utc> {
    // The microseconds since the epoch count a leap second's extra second past the minute;
    // rebuilding the instant from them folds it in (and cuts below a microsecond, downwards).
    DateTime::from_timestamp_micros(at.timestamp_micros()).unwrap_or(at)
}

/// An error message as a task keeps it: NUL replaced, cut to [`MAX_ERROR_BYTES`] with a note
/// saying how long it was.
pub(crate) fn truncate_error(error: &str) -> String {
    // NUL cannot be stored in text; the replacement character keeps the position visible.
    let cleaned;
    let error = if error.contains('\0') {
        cleaned = error.replace('\0', "\u{FFFD}");
        cleaned.as_str()
    } else {
        error
    };
    if error.len() <= MAX_ERROR_BYTES {
        return error.to_owned();
    }
    let note = format!("… [truncated: {} bytes in all]", error.len());
    let mut end = MAX_ERROR_BYTES - note.len();
    while !error.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{note}", &error[..end])
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use chrono::{TimeDelta, TimeZone, Timelike};
    use serde_json::json;

    use super::*;

    #[test]
    fn instants_are_cut_to_microseconds_and_a_leap_second_folds_into_the_next_minute() {
        let minute = Utc.with_ymd_and_hms(2026, 6, 30, 23, 59, 0).unwrap();
        let leap = minute.with_second(59).unwrap().with_nanosecond(1_500_000_999).unwrap();
        let before_epoch = Utc.with_ymd_and_hms(1969, 12, 31, 23, 59, 59).unwrap();

        assert_eq!(
            to_micros(leap),
            Utc.with_ymd_and_hms(2026, 7, 1, 0, 0, 0).unwrap() + TimeDelta::microseconds(500_000)
        );
        assert_eq!(
            to_micros(before_epoch.with_nanosecond(999_999_999).unwrap()),
            before_epoch + TimeDelta::microseconds(999_999)
        );
        assert_eq!(
            to_micros(minute.with_nanosecond(1_999).unwrap()),
            minute + TimeDelta::microseconds(1)
        );
    }

    #[test]
    fn json_with_a_nul_anywhere_is_refused_and_other_json_is_kept() {
        let refused = [json!("a\0b"), json!({"k": ["x", "\0"]}), json!({"\0": 1})];
        let accepted = [json!(null), json!({"k": [1, true, "ok", {"n": 1.5}]}), json!("\u{1}")];

        for value in refused {
            assert_eq!(check_json("payload", &value), Err(ValidationError::NulInJson("payload")));
        }
        for value in accepted {
            assert_eq!(check_json("result", &value), Ok(()), "{value}");
        }
    }

    /// How PostgreSQL's jsonb spells a number back: every digit, no exponent.
    fn spelled_back(n: f64) -> String {
        let shortest = format!("{n:e}");
        let (mantissa, exponent) = shortest.split_once('e').unwrap();
        let digits = mantissa.replace('.', "");
        let exponent: usize = exponent.parse().unwrap();
        format!("{digits}{}", "0".repeat(exponent + 1 - digits.len()))
    }

    #[test]
    fn numbers_below_1e308_read_back_from_storage_and_larger_ones_are_refused() {
        for n in [f64::MAX, -f64::MAX, 1.7976931348623157e308, 1e308] {
            assert_eq!(
                check_json("payload", &json!({"n": [n]})),
                Err(ValidationError::HugeNumberInJson("payload")),
                "{n}"
            );
        }
        for n in [9.999999999999999e307, 1.2345678901234567e307, 1e300, 123.0] {
            let stored: Value = serde_json::from_str(&spelled_back(n)).unwrap();

            assert_eq!(check_json("payload", &json!(n)), Ok(()), "{n}");
            assert_eq!(stored.as_f64(), Some(n), "{n}");
        }
        assert!(serde_json::from_str::<Value>(&spelled_back(f64::MAX)).is_err(), "why the rule");
    }

    #[test]
    fn an_instant_is_cut_to_whole_microseconds() {
        let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap();
        let ragged = t0.with_nanosecond(123_456_789).unwrap();

        assert_eq!(to_micros(ragged), t0.with_nanosecond(123_456_000).unwrap());
        assert_eq!(to_micros(t0), t0);
    }

    #[test]
    fn an_error_of_at_most_max_error_bytes_is_kept_whole() {
        let error = "x".repeat(MAX_ERROR_BYTES);

        assert_eq!(truncate_error(&error), error);
    }

    #[test]
    fn an_error_over_max_error_bytes_is_truncated_and_says_so() {
        let error = "x".repeat(MAX_ERROR_BYTES + 1);

        let kept = truncate_error(&error);

        assert!(kept.len() <= MAX_ERROR_BYTES, "{} bytes kept", kept.len());
        assert!(kept.contains("truncated"), "{kept:?} says it was truncated");
        assert!(kept.contains(&(MAX_ERROR_BYTES + 1).to_string()), "and how long it was");
        assert!(kept.starts_with(&"x".repeat(MAX_ERROR_BYTES - 64)), "the start is kept");
    }

    #[test]
    fn truncating_a_long_error_never_splits_a_character() {
        // One, two, three and four bytes per character, at every offset against the cut.
        for ch in ['a', 'é', '€', '🦀'] {
            for pad in 0..4 {
                let error =
                    format!("{}{}", "-".repeat(pad), ch.to_string().repeat(MAX_ERROR_BYTES + 1));

                let kept = truncate_error(&error);

                assert!(kept.len() <= MAX_ERROR_BYTES, "{ch:?}/{pad}: {} bytes", kept.len());
                assert!(kept.len() > MAX_ERROR_BYTES - 64, "{ch:?}/{pad}: nearly all is kept");
                let (head, note) = kept.split_once('…').unwrap();
                assert!(error.starts_with(head), "{ch:?}/{pad}: the head is a prefix");
                assert!(note.contains("truncated"), "{ch:?}/{pad}");
            }
        }
    }

    #[test]
    fn a_nul_in_an_error_message_is_replaced_so_that_it_can_be_stored() {
        assert_eq!(truncate_error("bad\0byte"), "bad\u{FFFD}byte");
    }
}
