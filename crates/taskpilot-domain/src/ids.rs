//! Identifiers and validated names.

use std::fmt;

use uuid::Uuid;

use crate::ValidationError;

/// The identity of a task: a UUID, version 7 when TaskPilot mints it.
///
/// The domain does not mint ids (that needs a random source); the application
/// layer does, and storage hands them back through [`TaskId::from_uuid`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize), serde(transparent))]
pub struct TaskId(Uuid);

impl TaskId {
    /// Wraps a UUID that names a task.
    pub const fn from_uuid(id: Uuid) -> Self {
        Self(id)
    }

    /// The UUID inside.
    pub const fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl From<Uuid> for TaskId {
    fn from(id: Uuid) -> Self {
        Self(id)
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Who runs a task: non-empty, at most [`WorkerId::MAX_CHARS`] characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(try_from = "String", into = "String")
)]
pub struct WorkerId(String);

impl WorkerId {
    /// The longest worker id accepted, in characters.
    pub const MAX_CHARS: usize = 128;

    /// Validates a worker id as a worker sent it.
    ///
    /// # Errors
    /// [`ValidationError::WorkerId`] when it is empty, too long or holds a control character.
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        check_text(raw, Self::MAX_CHARS).map_err(ValidationError::WorkerId)?;
        Ok(Self(raw.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What kind of work a task is, e.g. `send-email`: 1 to [`TaskName::MAX_CHARS`] characters,
/// no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(try_from = "String", into = "String")
)]
pub struct TaskName(String);

impl TaskName {
    /// The longest name accepted, in characters.
    pub const MAX_CHARS: usize = 200;

    /// Validates a task name.
    ///
    /// # Errors
    /// [`ValidationError::TaskName`] when it is empty, too long or holds a control character.
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        check_text(raw, Self::MAX_CHARS).map_err(ValidationError::TaskName)?;
        Ok(Self(raw.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why a piece of text was refused; the `Display` of a [`ValidationError`] wraps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextRule {
    /// Empty, or only white space.
    Blank,
    /// Longer than the limit, which it carries, in characters.
    TooLong(usize),
    /// Holds a control character such as a newline or NUL.
    ControlCharacter,
}

impl fmt::Display for TextRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Blank => f.write_str("must not be empty or blank"),
            Self::TooLong(max) => write!(f, "must be at most {max} characters"),
            Self::ControlCharacter => f.write_str("must not contain control characters"),
        }
    }
}

fn check_text(raw: &str, max_chars: usize) -> Result<(), TextRule> {
    if raw.trim().is_empty() {
        return Err(TextRule::Blank);
    }
    if raw.chars().count() > max_chars {
        return Err(TextRule::TooLong(max_chars));
    }
    if raw.chars().any(char::is_control) {
        return Err(TextRule::ControlCharacter);
    }
    Ok(())
}

macro_rules! text_conversions {
    ($ty:ident) => {
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $ty {
            type Error = ValidationError;

            fn try_from(raw: String) -> Result<Self, Self::Error> {
                Self::parse(&raw)
            }
        }

        impl From<$ty> for String {
            fn from(value: $ty) -> Self {
                value.0
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

text_conversions!(WorkerId);
text_conversions!(TaskName);

/// How many attempts a task gets before it fails for good: 1 to [`MaxAttempts::MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(try_from = "u32", into = "u32")
)]
pub struct MaxAttempts(u32);

impl MaxAttempts {
    /// The most attempts a task may be given.
    pub const MAX: u32 = 100;

    /// Validates an attempt budget.
    ///
    /// # Errors
    /// [`ValidationError::MaxAttempts`] outside 1 to [`MaxAttempts::MAX`].
    pub fn new(value: i64) -> Result<Self, ValidationError> {
        match u32::try_from(value) {
            Ok(v) if (1..=Self::MAX).contains(&v) => Ok(Self(v)),
            _ => Err(ValidationError::MaxAttempts(value)),
        }
    }

    /// The budget as a number.
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<u32> for MaxAttempts {
    type Error = ValidationError;

    fn try_from(value: u32) -> Result<Self, Self::Error> {
        Self::new(i64::from(value))
    }
}

impl From<MaxAttempts> for u32 {
    fn from(value: MaxAttempts) -> Self {
        value.0
    }
}

impl fmt::Display for MaxAttempts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
