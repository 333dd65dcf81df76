//! Request bodies, read strictly: [`Body`] is the JSON body extractor of every handler.
//!
//! actix's `web::Json` reads the bytes (size limit, content type, syntax: the errors of the
//! configured `JsonConfig`) into a [`Value`]; this module then deserializes the request type
//! from that value through a deserializer of its own, which differs from serde_json's where a
//! client would be misread or left guessing:
//!
//! - a struct is read from a JSON object only: serde's derive also takes an array as the
//!   fields in order, so `[null, "x"]` would create a task named `x`;
//! - an integer that does not fit its field's type, however large (up to what JSON numbers
//!   can hold here, ±1.8e308), is out of range (400 VALIDATION_FAILED), like any other value
//!   out of range, not a malformed body;
//! - every error names the field at fault by its path (`tasks[3].maxAttempts`) and says what
//!   the field takes in the README's words (`an integer`, `a string`, `one of ...`).
//!
//! Part of the HTTP adapter: it knows the problem mapping ([`ApiError`]) and nothing else.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};
use serde::de::value::StringDeserializer;
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, IntoDeserializer as _, MapAccess, SeqAccess,
    Unexpected, Visitor,
};
use serde_json::{Number, Value};
use serde_path_to_error::{Path, Segment};

use crate::error::ApiError;

/// A JSON request body of type `T`, read strictly (see the module's documentation). Its
/// errors are [`ApiError`]s: MALFORMED_REQUEST for a body that does not fit `T`,
/// VALIDATION_FAILED for an integer out of its type's range, and whatever the configured
/// `JsonConfig` answers for a body that is too large, not JSON or not declared as JSON.
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for Body<T> {
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let json = web::Json::<Value>::from_request(req, payload);
        Box::pin(async move { Ok(Self(from_value(json.await?.into_inner())?)) })
    }
}

/// `T` read strictly from `value`, as [`Body`] does.
///
/// # Errors
/// [`ApiError::Malformed`] when `value` does not fit `T`; [`ApiError::Validation`] (or
/// [`ApiError::InvalidItem`] inside a batch's list) for an integer out of its type's range.
pub fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(Strict(value)).map_err(|e| {
        let path = e.path().clone();
        e.into_inner().into_api_error(&path)
    })
}

/// Why a value does not fit its field.
#[derive(Debug)]
pub(crate) enum Misfit {
    /// The value is not of the kind the field takes.
    Expected {
        /// What the field takes: `an integer`, `a JSON object`, ...
        expected: String,
        /// What came instead: `the string "3"`, `an array`, ...
        got: String,
    },
    /// An integer outside what the field's type holds.
    OutOfRange {
        /// The number as read.
        got: String,
        /// The smallest the field holds.
        min: i128,
        /// The largest the field holds.
        max: i128,
    },
    /// A required field is absent.
    Missing(&'static str),
    /// A field the body does not have.
    Unknown {
        /// Its name as sent.
        field: String,
        /// The fields the body has.
        expected: &'static [&'static str],
    },
    /// Anything else a type's own deserializer says.
    Other(String),
}

impl Misfit {
    fn expected(expected: impl Into<String>, got: &Value) -> Self {
        Self::Expected { expected: expected.into(), got: describe(got) }
    }

    /// The problem this misfit at `path` answers.
    fn into_api_error(self, path: &Path) -> ApiError {
        let mut segments: Vec<&Segment> = path.iter().collect();
        if let Self::Unknown { .. } = self {
            // The path ends at the unknown key itself: the message is about its object.
            segments.pop();
        }
        if let Self::OutOfRange { .. } = self {
            // Inside a batch's list: the item's own 400, naming its index, as every other
            // invalid value of an item.
            if let [Segment::Map { key }, Segment::Seq { index }, rest @ ..] = segments.as_slice() {
                let list = match key.as_str() {
                    "tasks" => Some("tasks"),
                    "items" => Some("items"),
                    _ => None,
                };
                if let (Some(list), false) = (list, rest.is_empty()) {
                    let detail = self.detail(&join(rest));
                    return ApiError::InvalidItem { list, index: *index, detail };
                }
            }
            return ApiError::Validation(self.detail(&join(&segments)));
        }
        ApiError::Malformed(self.detail(&join(&segments)))
    }

    /// The message, about `subject` (a field's path; the whole body when empty).
    fn detail(&self, subject: &str) -> String {
        let subject = if subject.is_empty() { "the request body" } else { subject };
        match self {
            Self::Expected { expected, got } => format!("{subject} must be {expected}, got {got}"),
            Self::OutOfRange { got, min, max } => {
                format!("{subject} is out of range: {got} is not between {min} and {max}")
            }
            Self::Missing(field) => format!("{subject} lacks the required field `{field}`"),
            Self::Unknown { field, expected } => format!(
                "{subject} has an unknown field `{field}`; the fields are {}",
                quoted_list(expected)
            ),
            Self::Other(message) => format!("{subject}: {message}"),
        }
    }
}

/// `tasks[3].maxAttempts` for those segments; empty for none.
fn join(segments: &[&Segment]) -> String {
    let mut text = String::new();
    for segment in segments {
        match segment {
            Segment::Seq { index } => text.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !text.is_empty() {
                    text.push('.');
                }
                text.push_str(key);
            }
            Segment::Unknown => {}
        }
    }
    text
}

fn quoted_list(names: &[&str]) -> String {
    names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
}

/// A JSON value as an error names it.
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {}", Value::String(cut(s))),
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    }
}

/// At most 64 characters of `s`, for an error message.
fn cut(s: &str) -> String {
    match s.char_indices().nth(64) {
        Some((end, _)) => format!("{}...", &s[..end]),
        None => s.to_owned(),
    }
}

impl fmt::Display for Misfit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail(""))
    }
}

impl std::error::Error for Misfit {}

impl de::Error for Misfit {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self::Other(msg.to_string())
    }

    fn invalid_type(unexp: Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        Self::Expected { expected: exp.to_string(), got: unexpected(&unexp) }
    }

    fn invalid_value(unexp: Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        Self::Expected { expected: exp.to_string(), got: unexpected(&unexp) }
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        Self::Expected {
            expected: format!("one of {}", quoted_list(expected)),
            got: describe(&Value::String(variant.to_owned())),
        }
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        Self::Unknown { field: cut(field), expected }
    }

    fn missing_field(field: &'static str) -> Self {
        Self::Missing(field)
    }
}

fn unexpected(unexp: &Unexpected<'_>) -> String {
    match unexp {
        Unexpected::Str(s) => describe(&Value::String((*s).to_owned())),
        Unexpected::Unsigned(n) => format!("the number {n}"),
        Unexpected::Signed(n) => format!("the number {n}"),
        Unexpected::Float(n) => format!("the number {n}"),
        Unexpected::Bool(b) => b.to_string(),
        Unexpected::Unit => "null".to_owned(),
        Unexpected::Seq => "an array".to_owned(),
        Unexpected::Map => "an object".to_owned(),
        other => other.to_string(),
    }
}

/// A [`Value`] as a strict deserializer.
struct Strict(Value);

/// Hands the visitor an integer when `n` is one within `min..=max`.
fn integer<'de, V: Visitor<'de>>(
    value: Value,
    visitor: V,
    min: i128,
    max: i128,
) -> Result<V::Value, Misfit> {
    let Value::Number(n) = &value else {
        return Err(Misfit::expected("an integer", &value));
    };
    let exact = n.as_i64().map(i128::from).or_else(|| n.as_u64().map(i128::from));
    let whole = match exact {
        Some(i) => Some(i),
        // JSON has one kind of number: 1e2 is the integer 100. Beyond 64 bits serde_json
        // keeps only a float, which is still an integer when it has no fraction.
        None => n.as_f64().filter(|f| f.is_finite() && f.fract() == 0.0).map(saturate),
    };
    match whole {
        None => Err(Misfit::expected("an integer", &value)),
        Some(i) if i < min || i > max => Err(Misfit::OutOfRange { got: n.to_string(), min, max }),
        Some(i) => match (i64::try_from(i), u64::try_from(i)) {
            (Ok(i), _) => visitor.visit_i64(i),
            (_, Ok(u)) => visitor.visit_u64(u),
            _ => Err(Misfit::OutOfRange { got: n.to_string(), min, max }),
        },
    }
}

/// A whole float as an `i128`, clamped to its range (every field's range is far inside it).
fn saturate(f: f64) -> i128 {
    if f >= i128::MAX as f64 {
        i128::MAX
    } else if f <= i128::MIN as f64 {
        i128::MIN
    } else {
        f as i128
    }
}

fn number<'de, V: Visitor<'de>>(n: &Number, visitor: V) -> Result<V::Value, Misfit> {
    if let Some(u) = n.as_u64() {
        visitor.visit_u64(u)
    } else if let Some(i) = n.as_i64() {
        visitor.visit_i64(i)
    } else {
        visitor.visit_f64(n.as_f64().unwrap_or(f64::NAN))
    }
}

macro_rules! integers {
    ($($method:ident: $ty:ty),* $(,)?) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Misfit> {
                integer(self.0, visitor, i128::from(<$ty>::MIN), i128::from(<$ty>::MAX))
            }
        )*
    };
}

impl<'de> de::Deserializer<'de> for Strict {
    type Error = Misfit;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Misfit> {
        match self.0 {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(b),
            Value::Number(n) => number(&n, visitor),
            Value::String(s) => visitor.visit_string(s),
            Value::Array(items) => visitor.visit_seq(Items(items.into_iter())),
            Value::Object(members) => {
                visitor.visit_map(Members { members: members.into_iter(), value: None })
            }
        }
    }

    integers! {
        deserialize_i8: i8, deserialize_i16: i16, deserialize_i32: i32, deserialize_i64: i64,
        deserialize_u8: u8, deserialize_u16: u16, deserialize_u32: u32, deserialize_u64: u64,
    }

    fn deserialize_i128<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Misfit> {
        integer(self.0, visitor, i128::from(i64::MIN), i128::from(u64::MAX))
    }

    fn deserialize_u128<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Misfit> {
        integer(self.0, visitor, 0, i128::from(u64::MAX))
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Misfit> {
        match self.0 {
            Value::Bool(b) => visitor.visit_bool(b),
            other => Err(Misfit::expected("true or false", &other)),
        }
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Misfit> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Misfit> {
        match self.0 {
            Value::Number(n) => number(&n, visitor),
            other => Err(Misfit::expected("a number", &other)),
        }
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Misfit> {
        self.deserialize_string(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Misfit> {
        self.deserialize_string(visitor)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Misfit> {
        match self.0 {
            Value::String(s) => visitor.visit_string(s),
            other => Err(Misfit::expected("a string", &other)),
        }
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Misfit> {
        self.deserialize_any(visitor)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Misfit> {
        self.deserialize_any(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Misfit> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            other => visitor.visit_some(Strict(other)),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Misfit> {
        match self.0 {
            Value::Null => visitor.visit_unit(),
            other => Err(Misfit::expected("null", &other)),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Misfit> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Misfit> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Misfit> {
        match self.0 {
            Value::Array(items) => visitor.visit_seq(Items(items.into_iter())),
            other => Err(Misfit::expected("an array", &other)),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Misfit> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Misfit> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Misfit> {
        match self.0 {
            Value::Object(members) => {
                visitor.visit_map(Members { members: members.into_iter(), value: None })
            }
            other => Err(Misfit::expected("a JSON object", &other)),
        }
    }

    /// An object only: never an array taken as the fields in order.
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Misfit> {
        self.deserialize_map(visitor)
    }

    /// A unit variant's name only, which is every enum of the API.
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Misfit> {
        match self.0 {
            Value::String(s) => visitor.visit_enum(s.into_deserializer()),
            other => Err(Misfit::expected(format!("one of {}", quoted_list(variants)), &other)),
        }
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Misfit> {
        self.deserialize_string(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Misfit> {
        visitor.visit_unit()
    }
}

/// The items of an array, each read strictly.
struct Items(std::vec::IntoIter<Value>);

impl<'de> SeqAccess<'de> for Items {
    type Error = Misfit;

    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, Misfit> {
        self.0.next().map(|item| seed.deserialize(Strict(item))).transpose()
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

/// The members of an object, each value read strictly.
struct Members {
    members: serde_json::map::IntoIter,
    value: Option<Value>,
}

impl<'de> MapAccess<'de> for Members {
    type Error = Misfit;

    fn next_key_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, Misfit> {
        let Some((key, value)) = self.members.next() else { return Ok(None) };
        self.value = Some(value);
        let key: StringDeserializer<Misfit> = key.into_deserializer();
        seed.deserialize(key).map(Some)
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, Misfit> {
        let value =
            self.value.take().ok_or_else(|| Misfit::Other("a value without its key".into()))?;
        seed.deserialize(Strict(value))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.members.len())
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use serde_json::json;
    use taskpilot_api::{CompleteTasksRequest, CreateTaskBatchRequest, CreateTaskRequest};

    use super::*;

    fn refusal<T: DeserializeOwned + fmt::Debug>(body: Value) -> (&'static str, String) {
        let error = from_value::<T>(body).unwrap_err();
        let body = error.problem_body();
        (if body.code == "MALFORMED_REQUEST" { "malformed" } else { "invalid" }, body.detail)
    }

    #[test]
    fn a_body_that_reads_as_its_type_keeps_every_value() {
        let body = json!({"name": "x", "payload": {"n": [1, -2, 2.5, u64::MAX, null, true]},
                          "priority": -3, "maxAttempts": 1e1});

        let request: CreateTaskRequest = from_value(body).unwrap();

        assert_eq!(request.name, "x");
        assert_eq!(request.payload, json!({"n": [1, -2, 2.5, u64::MAX, null, true]}));
        assert_eq!((request.priority, request.max_attempts), (-3, Some(10)));
    }

    #[test]
    fn an_array_is_never_read_as_a_struct() {
        for (body, detail) in [
            (json!([null, "x"]), "the request body must be a JSON object, got an array"),
            (json!("x"), "the request body must be a JSON object, got the string \"x\""),
        ] {
            assert_eq!(refusal::<CreateTaskRequest>(body), ("malformed", detail.to_owned()));
        }
        assert_eq!(
            refusal::<CreateTaskBatchRequest>(json!({"tasks": [{"name": "a"}, [null, "x"]]})),
            ("malformed", "tasks[1] must be a JSON object, got an array".to_owned())
        );
        let item = json!(["00000000-0000-0000-0000-000000000000", "t", null, "succeeded"]);
        assert_eq!(
            refusal::<CompleteTasksRequest>(json!({"items": [item]})),
            ("malformed", "items[0] must be a JSON object, got an array".to_owned())
        );
    }

    #[test]
    fn an_integer_beyond_its_type_is_out_of_range_whatever_its_size() {
        for (n, shown) in [
            (json!(2_147_483_648_i64), "2147483648"),
            (json!(u64::MAX), "18446744073709551615"),
            (serde_json::from_str::<Value>("1e300").unwrap(), "1e+300"),
            (serde_json::from_str::<Value>("-99999999999999999999999").unwrap(), "-1e+23"),
        ] {
            let (kind, detail) = refusal::<CreateTaskRequest>(json!({"name": "x", "priority": n}));

            assert_eq!(kind, "invalid", "{detail}");
            assert_eq!(
                detail,
                format!(
                    "priority is out of range: {shown} is not between -2147483648 and 2147483647"
                )
            );
        }
        let (kind, detail) = refusal::<CreateTaskRequest>(
            json!({"name": "x", "maxAttempts": serde_json::from_str::<Value>("1e30").unwrap()}),
        );
        assert_eq!(kind, "invalid");
        assert!(detail.starts_with("maxAttempts is out of range: 1e+30"), "{detail}");
    }

    #[test]
    fn an_integer_out_of_range_in_a_batch_names_its_item() {
        let body = json!({"tasks": [{"name": "a"}, {"name": "b", "priority": 1e20}]});

        let error = from_value::<CreateTaskBatchRequest>(body).unwrap_err().problem_body();

        assert_eq!(error.code, "VALIDATION_FAILED");
        assert!(error.detail.starts_with("tasks[1].priority is out of range"), "{}", error.detail);
        assert_eq!(error.extension("index"), Some(&json!(1)));
    }

    #[test]
    fn a_value_of_the_wrong_kind_names_its_field_and_what_it_takes() {
        for (body, detail) in [
            (
                json!({"name": "x", "maxAttempts": "3"}),
                "maxAttempts must be an integer, got the string \"3\"",
            ),
            (json!({"name": "x", "maxAttempts": 2.5}), "maxAttempts must be an integer, got the number 2.5"),
            (json!({"name": 7}), "name must be a string, got the number 7"),
            (json!({"name": "x", "queue": ["a"]}), "queue must be a string, got an array"),
            (json!({"name": "x", "priority": null}), "priority must be an integer, got null"),
            (json!({"name": "x", "colour": 1}), "the request body has an unknown field `colour`; the fields are `queue`, `name`, `payload`, `priority`, `maxAttempts`, `maxCrashes`, `runAt`, `uniqueKey`, `onConflict`"),
            (json!({"priority": 1}), "the request body lacks the required field `name`"),
        ] {
            assert_eq!(refusal::<CreateTaskRequest>(body), ("malformed", detail.to_owned()));
        }
        let item = json!({"id": "00000000-0000-0000-0000-000000000000", "leaseToken": "t", "outcome": "done"});
        assert_eq!(
            refusal::<CompleteTasksRequest>(json!({"items": [item]})),
            (
                "malformed",
                "items[0].outcome must be one of `succeeded`, `failed`, `released`, got the string \"done\""
                    .to_owned()
            )
        );
    }
}
