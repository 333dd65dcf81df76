//! Integer fields of request bodies, read as JSON Schema counts integers: `5` and `5.0` are
//! the same integer, `5.5` is none. serde's own integer types refuse `5.0`, which a client
//! that writes every number as a double (JavaScript's `JSON.stringify` of a computed value,
//! for one) would send.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, Unexpected, Visitor};

/// The largest magnitude a double spells exactly as an integer: 2^53.
const EXACT: f64 = 9_007_199_254_740_992.0;

struct Whole<T>(PhantomData<T>);

impl<'de, T: TryFrom<i64> + TryFrom<u64>> Visitor<'de> for Whole<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an integer that fits {}", std::any::type_name::<T>())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        T::try_from(v).map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        T::try_from(v).map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &self))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        if v.fract() != 0.0 || !(-EXACT..=EXACT).contains(&v) {
            return Err(E::invalid_type(Unexpected::Float(v), &self));
        }
        #[expect(clippy::cast_possible_truncation, reason = "a whole number within 2^53")]
        self.visit_i64(v as i64)
    }
}

struct OptionalWhole<T>(PhantomData<T>);

impl<'de, T: TryFrom<i64> + TryFrom<u64>> Visitor<'de> for OptionalWhole<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "null or an integer that fits {}", std::any::type_name::<T>())
    }

    fn visit_none<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
        deserialize(d).map(Some)
    }
}

/// `#[serde(deserialize_with = "crate::whole::deserialize")]` for an integer field.
pub(crate) fn deserialize<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i64> + TryFrom<u64>,
{
    d.deserialize_any(Whole(PhantomData))
}

/// `#[serde(default, deserialize_with = "crate::whole::option")]` for an optional integer
/// field: `null` reads as absent.
pub(crate) fn option<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i64> + TryFrom<u64>,
{
    d.deserialize_option(OptionalWhole(PhantomData))
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use serde_json::json;

    use crate::{ClaimTasksRequest, CreateTaskRequest};

    #[test]
    fn a_whole_number_written_as_a_float_is_the_same_integer() {
        let task: CreateTaskRequest =
            serde_json::from_value(json!({"name": "n", "priority": 5.0, "maxAttempts": 3.0}))
                .unwrap();

        assert_eq!((task.priority, task.max_attempts), (5, Some(3)));
    }

    #[test]
    fn fractions_and_integers_out_of_range_are_refused_and_null_is_absent() {
        for body in [
            json!({"name": "n", "priority": 5.5}),
            json!({"name": "n", "priority": 3_000_000_000_i64}),
            json!({"name": "n", "priority": "5"}),
            json!({"name": "n", "maxAttempts": 1e300}),
        ] {
            assert!(serde_json::from_value::<CreateTaskRequest>(body.clone()).is_err(), "{body}");
        }
        let claim: ClaimTasksRequest =
            serde_json::from_value(json!({"workerId": "w", "limit": null, "waitMs": 10.0}))
                .unwrap();
        assert_eq!((claim.limit, claim.wait_ms), (None, Some(10)));
    }
}
