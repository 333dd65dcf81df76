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

/// What makes a task the same work as another while it is active (`uniqueKey`): 1 to
/// [`UniqueKey::MAX_CHARS`] characters, not blank, no control characters, compared exactly.
/// At most one PENDING or RUNNING task per queue holds a key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(try_from = "String", into = "String")
)]
pub struct UniqueKey(String);

impl UniqueKey {
    /// The longest key accepted, in characters.
    pub const MAX_CHARS: usize = 255;

    /// Validates a unique key.
    ///
    /// # Errors
    /// [`ValidationError::UniqueKey`] when it is empty or blank, too long or holds a control
    /// character.
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        check_text(raw, Self::MAX_CHARS).map_err(ValidationError::UniqueKey)?;
        Ok(Self(raw.to_owned()))
    }

    /// The key as text.
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

pub(crate) fn check_text(raw: &str, max_chars: usize) -> Result<(), TextRule> {
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
text_conversions!(QueueName);
text_conversions!(UniqueKey);

/// A queue tasks are grouped in, so that workers can ask for some kinds of work only:
/// 1 to [`QueueName::MAX_CHARS`] of `a-z`, `0-9`, `_`, `.` and `-`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(try_from = "String", into = "String")
)]
pub struct QueueName(String);

impl QueueName {
    /// The longest queue name accepted.
    pub const MAX_CHARS: usize = 64;
    /// The queue of tasks created without one.
    pub const DEFAULT: &'static str = "default";

    /// Validates a queue name.
    ///
    /// # Errors
    /// [`ValidationError::QueueName`] when it is empty, too long or holds another character.
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let allowed = |c: char| matches!(c, 'a'..='z' | '0'..='9' | '_' | '.' | '-');
        if raw.is_empty() || raw.len() > Self::MAX_CHARS || !raw.chars().all(allowed) {
            return Err(ValidationError::QueueName(raw.chars().take(80).collect()));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The queue `default`.
    pub fn default_queue() -> Self {
        Self(Self::DEFAULT.to_owned())
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for QueueName {
    fn default() -> Self {
        Self::default_queue()
    }
}

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

/// How many lease expiries (crashes) a task survives before it is quarantined: 1 to
/// [`MaxCrashes::MAX`]; [`MaxCrashes::DEFAULT`] unless the task or the server says otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(try_from = "u32", into = "u32")
)]
pub struct MaxCrashes(u32);

impl MaxCrashes {
    /// The largest crash budget a task may be given.
    pub const MAX: u32 = 100;

    /// The crash budget of a task created without one: 3.
    pub const DEFAULT: Self = Self(3);

    /// Validates a crash budget.
    ///
    /// # Errors
    /// [`ValidationError::MaxCrashes`] outside 1 to [`MaxCrashes::MAX`].
    pub fn new(value: i64) -> Result<Self, ValidationError> {
        match u32::try_from(value) {
            Ok(v) if (1..=Self::MAX).contains(&v) => Ok(Self(v)),
            _ => Err(ValidationError::MaxCrashes(value)),
        }
    }

    /// The budget as a number.
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl Default for MaxCrashes {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl TryFrom<u32> for MaxCrashes {
    type Error = ValidationError;

    fn try_from(value: u32) -> Result<Self, Self::Error> {
        Self::new(i64::from(value))
    }
}

impl From<MaxCrashes> for u32 {
    fn from(value: MaxCrashes) -> Self {
        value.0
    }
}

impl fmt::Display for MaxCrashes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_unique_key_of_1_to_255_characters_is_accepted_as_given() {
        for raw in ["a", "invoice-42", " padded ", &"k".repeat(255), &"é".repeat(255)] {
            assert_eq!(UniqueKey::parse(raw).map(|k| k.as_str().to_owned()), Ok(raw.to_owned()));
        }
    }

    #[test]
    fn a_blank_too_long_or_control_character_unique_key_is_refused() {
        let cases = [
            (String::new(), TextRule::Blank),
            ("   ".to_owned(), TextRule::Blank),
            ("k".repeat(256), TextRule::TooLong(255)),
            ("a\nb".to_owned(), TextRule::ControlCharacter),
            ("a\u{0}b".to_owned(), TextRule::ControlCharacter),
        ];
        for (raw, rule) in cases {
            assert_eq!(UniqueKey::parse(&raw), Err(ValidationError::UniqueKey(rule)), "{raw:?}");
        }
        assert_eq!(
            ValidationError::UniqueKey(TextRule::TooLong(255)).to_string(),
            "uniqueKey must be at most 255 characters"
        );
    }

    #[test]
    fn a_task_name_of_1_to_200_characters_is_accepted() {
        for raw in ["a".to_owned(), "send-email".to_owned(), "n".repeat(200), "é".repeat(200)] {
            let name = TaskName::parse(&raw);

            assert_eq!(name.as_ref().map(TaskName::as_str), Ok(raw.as_str()));
        }
    }

    #[test]
    fn a_task_name_of_201_characters_is_too_long() {
        let name = TaskName::parse(&"n".repeat(201));

        assert_eq!(name, Err(ValidationError::TaskName(TextRule::TooLong(200))));
    }

    #[test]
    fn a_worker_id_of_1_to_128_characters_is_accepted() {
        for raw in ["w".to_owned(), "worker-1@host".to_owned(), "w".repeat(128), "ü".repeat(128)] {
            let worker = WorkerId::parse(&raw);

            assert_eq!(worker.as_ref().map(WorkerId::as_str), Ok(raw.as_str()));
        }
    }

    #[test]
    fn a_worker_id_of_129_characters_is_too_long() {
        let worker = WorkerId::parse(&"w".repeat(129));

        assert_eq!(worker, Err(ValidationError::WorkerId(TextRule::TooLong(128))));
    }

    #[test]
    fn blank_text_is_refused() {
        for raw in ["", " ", "   ", "\t", "\n \r"] {
            assert_eq!(
                TaskName::parse(raw),
                Err(ValidationError::TaskName(TextRule::Blank)),
                "{raw:?}"
            );
            assert_eq!(
                WorkerId::parse(raw),
                Err(ValidationError::WorkerId(TextRule::Blank)),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn text_with_a_control_character_is_refused() {
        for raw in ["a\nb", "a\0", "\tname", "name\r", "bell\u{7}", "del\u{7f}", "c1\u{85}x"] {
            assert_eq!(
                TaskName::parse(raw),
                Err(ValidationError::TaskName(TextRule::ControlCharacter)),
                "{raw:?}"
            );
            assert_eq!(
                WorkerId::parse(raw),
                Err(ValidationError::WorkerId(TextRule::ControlCharacter)),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn text_conversions_go_through_parse() {
        assert_eq!(TaskName::try_from("a\nb".to_owned()), TaskName::parse("a\nb"));
        let worker = WorkerId::try_from("w1".to_owned()).ok();

        assert_eq!(worker.as_ref().map(ToString::to_string).as_deref(), Some("w1"));
        assert_eq!(worker.map(String::from).as_deref(), Some("w1"));
    }

    #[test]
    fn validation_errors_say_which_rule_broke() {
        assert_eq!(
            ValidationError::TaskName(TextRule::TooLong(200)).to_string(),
            "name must be at most 200 characters"
        );
        assert_eq!(
            ValidationError::WorkerId(TextRule::ControlCharacter).to_string(),
            "workerId must not contain control characters"
        );
        assert_eq!(
            ValidationError::MaxAttempts(0).to_string(),
            "maxAttempts must be between 1 and 100, got 0"
        );
    }

    #[test]
    fn max_attempts_from_1_to_100_is_accepted() {
        for n in [1, 2, 25, 99, 100] {
            assert_eq!(MaxAttempts::new(n).map(MaxAttempts::get), Ok(n as u32));
        }
    }

    #[test]
    fn max_attempts_outside_1_to_100_is_refused() {
        for n in [0, 101, -1, i64::from(u32::MAX), i64::from(u32::MAX) + 1, i64::MIN, i64::MAX] {
            assert_eq!(MaxAttempts::new(n), Err(ValidationError::MaxAttempts(n)));
        }
        assert_eq!(MaxAttempts::try_from(0_u32), Err(ValidationError::MaxAttempts(0)));
        assert_eq!(MaxAttempts::try_from(101_u32), Err(ValidationError::MaxAttempts(101)));
        assert_eq!(MaxAttempts::try_from(100_u32).map(u32::from), Ok(100));
    }

    #[test]
    fn a_crash_budget_is_1_to_100_and_3_by_default() {
        for n in [1, 3, 100] {
            assert_eq!(MaxCrashes::new(n).map(MaxCrashes::get), Ok(n as u32));
        }
        for n in [0, -1, 101, i64::MAX] {
            assert_eq!(MaxCrashes::new(n), Err(ValidationError::MaxCrashes(n)));
        }
        assert_eq!(MaxCrashes::default().get(), 3);
        assert_eq!(MaxCrashes::try_from(101_u32), Err(ValidationError::MaxCrashes(101)));
    }

    #[test]
    fn task_ids_wrap_and_show_their_uuid() {
        let uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001);

        let id = TaskId::from(uuid);

        assert_eq!(id, TaskId::from_uuid(uuid));
        assert_eq!(id.as_uuid(), uuid);
        assert_eq!(id.to_string(), "01900000-0000-7000-8000-000000000001");
    }

    #[test]
    fn the_default_queue_is_named_default() {
        assert_eq!(QueueName::default().as_str(), "default");
        assert_eq!(QueueName::parse(QueueName::DEFAULT), Ok(QueueName::default_queue()));
    }

    #[test]
    fn a_queue_name_of_1_to_64_of_lowercase_digits_and_separators_is_accepted() {
        for raw in ["a".to_owned(), "emails.high-prio_2".to_owned(), "q".repeat(64), "0".to_owned()]
        {
            let queue = QueueName::parse(&raw);

            assert_eq!(queue.as_ref().map(QueueName::as_str), Ok(raw.as_str()));
        }
    }

    #[test]
    fn a_queue_name_of_65_characters_is_too_long() {
        let raw = "q".repeat(65);

        assert_eq!(QueueName::parse(&raw), Err(ValidationError::QueueName(raw)));
    }

    #[test]
    fn a_queue_name_with_uppercase_space_or_another_character_is_refused() {
        for raw in ["", "Default", "EMAILS", "my queue", " default", "default\n", "a/b", "é", "a:b"]
        {
            assert_eq!(
                QueueName::parse(raw),
                Err(ValidationError::QueueName(raw.to_owned())),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn a_refused_queue_name_is_quoted_cut_to_80_characters() {
        let refused = QueueName::parse(&"Q".repeat(500));

        assert_eq!(refused, Err(ValidationError::QueueName("Q".repeat(80))));
        assert_eq!(
            ValidationError::QueueName("A b".to_owned()).to_string(),
            r#"queue must be 1 to 64 of a-z, 0-9, '_', '.', '-', got "A b""#
        );
    }

    #[test]
    fn queue_name_conversions_go_through_parse() {
        assert_eq!(QueueName::try_from("Bad".to_owned()), QueueName::parse("Bad"));
        let queue = QueueName::try_from("reports".to_owned()).ok();

        assert_eq!(queue.as_ref().map(ToString::to_string).as_deref(), Some("reports"));
        assert_eq!(queue.map(String::from).as_deref(), Some("reports"));
    }
}
