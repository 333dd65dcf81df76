//! OpenAPI schemas of the values the bodies carry as plain text or JSON but that the server
//! checks further (feature `openapi`). The bodies name them with `#[schema(value_type = ..)]`,
//! so each rule is written once here and every field that carries the value shares it.
//!
//! The rules themselves belong to the server's validated types; these schemas describe them
//! for clients and for generated tests, which send only what the schema allows and expect it
//! accepted, and send what it forbids and expect it refused.

use std::borrow::Cow;

use utoipa::openapi::schema::{
    AdditionalProperties, ArrayBuilder, KnownFormat, Object, ObjectBuilder, OneOfBuilder, Schema,
    SchemaFormat, Type,
};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{PartialSchema, ToSchema};

use crate::{ProblemBody, ProblemCode, TaskStatus};

/// Not blank, and no control character (U+0000 to U+001F, U+007F to U+009F).
const TEXT_PATTERN: &str = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$";

fn text(max_chars: usize, description: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(max_chars))
        .pattern(Some(TEXT_PATTERN))
        .description(Some(description))
        .into()
}

/// Declares a named schema (a component the bodies refer to) built by `$schema`.
macro_rules! named_schema {
    ($(#[$doc:meta])* $ty:ident, $schema:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy)]
        pub struct $ty;

        impl PartialSchema for $ty {
            fn schema() -> RefOr<Schema> {
                $schema
            }
        }

        impl ToSchema for $ty {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed(stringify!($ty))
            }
        }
    };
}

named_schema!(
    /// A worker id: 1 to 128 characters, not blank, no control characters.
    WorkerId,
    text(128, "Who runs a task: 1 to 128 characters, not blank, no control characters.")
);

named_schema!(
    /// A task's name: 1 to 200 characters, not blank, no control characters.
    TaskName,
    text(200, "The kind of work: 1 to 200 characters, not blank, no control characters.")
);

named_schema!(
    /// A task's unique key: 1 to 255 characters, not blank, no control characters.
    UniqueKey,
    text(
        255,
        "The same work as any other PENDING or RUNNING task of the queue with this key: 1 to \
         255 characters, not blank, no control characters.",
    )
);

named_schema!(
    /// An API token's name.
    TokenName,
    text(64, "A token's name: 1 to 64 characters, not blank, no control characters.")
);

named_schema!(
    /// A queue's name: 1 to 64 of `a-z 0-9 _ . -`.
    QueueName,
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some("^[a-z0-9_.-]{1,64}$"))
        .description(Some("A queue: 1 to 64 of `a-z 0-9 _ . -`."))
        .into()
);

named_schema!(
    /// A lease token: 32 hex digits, or a hyphenated UUID.
    LeaseToken,
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(
            "^([0-9a-fA-F]{32}|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})$",
        ))
        .description(Some(
            "The secret of a running attempt, as its claim or start returned it (32 hex digits; \
             a hyphenated UUID is read too).",
        ))
        .into()
);

/// A query parameter of `GET /api/tasks`: `schema`, or empty, which counts as absent.
fn or_empty(schema: impl Into<RefOr<Schema>>, description: &str) -> RefOr<Schema> {
    OneOfBuilder::new()
        .item(schema)
        .item(ObjectBuilder::new().schema_type(Type::String).max_length(Some(0)))
        .description(Some(format!("{description} Empty counts as absent.")))
        .into()
}

named_schema!(
    /// `queue` of `GET /api/tasks`: a queue, or empty.
    QueueFilter,
    or_empty(Ref::from_schema_name("QueueName"), "Only tasks in this queue.")
);

named_schema!(
    /// `name` of `GET /api/tasks`: a task name, or empty.
    NameFilter,
    or_empty(Ref::from_schema_name("TaskName"), "Only tasks of this name.")
);

named_schema!(
    /// `status` of `GET /api/tasks`: statuses in any case, comma-separated, or empty.
    StatusFilter,
    or_empty(
        ObjectBuilder::new().schema_type(Type::String).pattern(Some(comma_separated(&any_case(
            &[
                TaskStatus::Pending,
                TaskStatus::Running,
                TaskStatus::Succeeded,
                TaskStatus::Failed,
                TaskStatus::Cancelled,
            ]
        )))),
        "Only tasks in one of these statuses, comma-separated (`PENDING`, `RUNNING`, \
         `SUCCEEDED`, `FAILED`, `CANCELLED`, in any case), e.g. `FAILED,CANCELLED`.",
    )
);

named_schema!(
    /// `retryState` of `GET /api/tasks`: a retry state, or empty.
    RetryStateFilter,
    or_empty(
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some("^(NONE|RETRY_SCHEDULED|EXHAUSTED|NON_RETRYABLE)$")),
        "Only tasks in this retry state.",
    )
);

named_schema!(
    /// `createdAfter`, `createdBefore`, `completedAfter`, `completedBefore` of
    /// `GET /api/tasks`: an RFC 3339 instant, or empty.
    InstantFilter,
    or_empty(
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
            .pattern(Some(
                r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$",
            )),
        "An RFC 3339 instant between years 0000 and 9999; `after` bounds are inclusive, \
         `before` bounds exclusive.",
    )
);

named_schema!(
    /// `lastError` of `GET /api/tasks` and of a bulk filter: text to look for.
    ErrorText,
    ObjectBuilder::new()
        .schema_type(Type::String)
        .max_length(Some(crate::limits::MAX_ERROR_FILTER_CHARS))
        .pattern(Some(r"^[^\u0000]*$"))
        .description(Some(
            "Text the last error contains, ignoring case; `%` and `_` are literal. Up to 500 \
             characters, no NUL. Empty counts as absent.",
        ))
        .into()
);

named_schema!(
    /// `payload` of `GET /api/tasks`: a JSON object, or empty.
    PayloadFilter,
    or_empty(
        ObjectBuilder::new()
            .schema_type(Type::String)
            .content_media_type("application/json")
            .pattern(Some(r"^\s*\{.*\}\s*$")),
        "A JSON object the payload must contain (`payload @> value`), e.g. \
         `{\"customerId\":42}`; the listing reaches the newest 10,000 such tasks.",
    )
);

/// A pattern of one or more comma-separated items of `item` (a `^(...)$` pattern).
fn comma_separated(item: &str) -> String {
    let inner = item.trim_start_matches('^').trim_end_matches('$');
    format!("^{inner}(,{inner})*$")
}

/// A pattern that matches each status's spelling in upper, lower or mixed case.
fn any_case(statuses: &[TaskStatus]) -> String {
    let spellings: Vec<String> = statuses
        .iter()
        .map(|status| {
            status
                .as_str()
                .chars()
                .map(|c| format!("[{}{}]", c.to_ascii_uppercase(), c.to_ascii_lowercase()))
                .collect()
        })
        .collect();
    format!("^({})$", spellings.join("|"))
}

named_schema!(
    /// `limit` of `GET /api/tasks`: a page size, or empty.
    PageSize,
    or_empty(
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(1))
            .maximum(Some(crate::limits::MAX_PAGE_SIZE)),
        "Page size, 1 to 500; 50 when absent.",
    )
);

named_schema!(
    /// `minutes` of `GET /api/stats/throughput`: 1 to 1440, or empty.
    ThroughputMinutes,
    or_empty(
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(1))
            .maximum(Some(crate::limits::MAX_THROUGHPUT_MINUTES)),
        "Minutes, the current one included, 1 to 1440; 60 when absent.",
    )
);

named_schema!(
    /// `cursor` of `GET /api/tasks`: what `nextCursor` returned, or empty.
    Cursor,
    or_empty(
        ObjectBuilder::new()
            .schema_type(Type::String)
            // 48 hex digits: the creation instant's microseconds (8 bytes, big-endian), then
            // the task id. Two leading zeros keep it between 1970 and the year 4253, which
            // every task's creation is and which the server takes; past the year 9999 it
            // refuses a cursor as one it did not hand out.
            .pattern(Some("^00[0-9a-f]{46}$")),
        "The `nextCursor` of the previous page, passed back unchanged.",
    )
);

/// A JSON string without NUL (`\u0000`), which PostgreSQL cannot store.
fn string_without_nul() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String).pattern(Some(r"^[^\u0000]*$"))
}

named_schema!(
    /// Any JSON value whose strings and keys hold no NUL character (`\u0000`): a payload or
    /// a result.
    Json,
    OneOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .item(ObjectBuilder::new().schema_type(Type::Boolean))
        // PostgreSQL cannot spell larger numbers back so that they read (the domain's rule).
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Number)
                .exclusive_minimum(Some(-1e308))
                .exclusive_maximum(Some(1e308)),
        )
        .item(string_without_nul())
        .item(ArrayBuilder::new().items(RefOr::Ref(Ref::from_schema_name("Json"))))
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .property_names(Some(string_without_nul()))
                .additional_properties(Some(RefOr::Ref(
                    Ref::from_schema_name("Json"),
                ))),
        )
        .description(Some(
            "Any JSON value; no string or key in it may hold a NUL character (\\u0000), and no \
             number in it may reach 1e308 in magnitude.",
        ))
        .into()
);

impl PartialSchema for ProblemCode {
    fn schema() -> RefOr<Schema> {
        let mut described = String::from("The stable code clients switch on, with its status:");
        for code in Self::ALL {
            described.push_str(&format!("\n- `{code}`: {}", code.status()));
        }
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(Self::ALL.map(Self::as_str)))
            .description(Some(described))
            .into()
    }
}

impl ToSchema for ProblemCode {}

impl PartialSchema for ProblemBody {
    fn schema() -> RefOr<Schema> {
        let string = || ObjectBuilder::new().schema_type(Type::String);
        let integer = || ObjectBuilder::new().schema_type(Type::Integer);
        let extension = |schema: ObjectBuilder, description: &str| {
            schema.description(Some(description.to_owned()))
        };
        let object: Object = ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "An RFC 9457 problem (`application/problem+json`): the standard members, the \
                 stable `code`, and members that depend on the code.",
            ))
            .property(
                "type",
                string().description(Some("`urn:taskpilot:problem:<code in kebab case>`.")),
            )
            .required("type")
            .property(
                "title",
                string().description(Some("A short summary of the code, the same every time.")),
            )
            .required("title")
            .property(
                "status",
                integer()
                    .minimum(Some(400))
                    .maximum(Some(599))
                    .description(Some("The HTTP status, the one the code always comes with.")),
            )
            .required("status")
            .property(
                "detail",
                string().description(Some("What went wrong this time, for people.")),
            )
            .required("detail")
            .property("code", RefOr::Ref(Ref::from_schema_name("ProblemCode")))
            .required("code")
            .property(
                "taskId",
                extension(
                    string().format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid))),
                    "The task the problem is about.",
                ),
            )
            .property("attempt", extension(integer(), "The attempt the refused call was for."))
            .property(
                "currentAttempt",
                extension(integer(), "ATTEMPT_SUPERSEDED: the task's newer attempt."),
            )
            .property(
                "recordedOutcome",
                extension(string(), "OUTCOME_CONFLICT: how the attempt ended."),
            )
            .property(
                "taskStatus",
                extension(string(), "INVALID_TRANSITION: the status that refused the action."),
            )
            .property(
                "action",
                extension(string(), "INVALID_TRANSITION: the action that was refused."),
            )
            .property(
                "runnableAt",
                extension(
                    string().format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime))),
                    "NOT_YET_RUNNABLE: when the task becomes runnable.",
                ),
            )
            .property(
                "limitBytes",
                extension(integer(), "PAYLOAD_TOO_LARGE: the body limit, in bytes."),
            )
            .property(
                "index",
                extension(integer(), "In a batch: the place of the item at fault, from 0."),
            )
            .additional_properties(Some(AdditionalProperties::FreeForm(true)))
            .build();
        RefOr::T(Schema::Object(object))
    }
}

impl ToSchema for ProblemBody {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((ProblemCode::name().into_owned(), ProblemCode::schema()));
    }
}
