//! The OpenAPI 3.1 document (`GET /api/openapi.json`) and the API page (`GET /api/docs`).
//!
//! Part of the HTTP adapter. The document is generated, never written by hand: the bodies'
//! schemas come from the wire types of `taskpilot-api` (its `openapi` feature), each
//! operation from the `#[utoipa::path]` annotation on its handler, listed once in [`ApiDoc`].
//! What every route shares is added here, in one place (`Conventions`): the bearer token
//! and its 401 and 403 answers on every `/api` route but the document and its page, and 500.
//! A test holds the document's operations equal to the routes the server registers
//! ([`crate::routes::endpoints`]).
//!
//! The page is Swagger UI, whose files are compiled into the binary; it loads nothing from
//! anywhere but this server.

use std::collections::BTreeMap;
use std::sync::Arc;

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use taskpilot_api::openapi::{
    Cursor, ErrorText, InstantFilter, NameFilter, PageSize, PayloadFilter, QueueFilter, QueueName,
    RetryStateFilter, StatusFilter, TaskName, ThroughputMinutes, TokenName,
};
use taskpilot_api::{ProblemBody, PROBLEM_JSON};
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr};
use utoipa::{IntoResponses, Modify, OpenApi};

use crate::error::ApiError;
use crate::{activity, handlers, tokens};

/// Where the document is served.
pub const DOCUMENT_PATH: &str = "/api/openapi.json";
/// Where the API page is served; its files under `/api/docs/{file}`.
pub const PAGE_PATH: &str = "/api/docs";

/// The security scheme's name in the document.
const BEARER: &str = "bearer";

/// The document: every operation, listed by its handler (one line per route), and the
/// conventions every route shares.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "TaskPilot",
        description = "A durable task queue: producers create tasks, workers claim them under \
                       leases and report outcomes, fenced by the attempt's lease token. \
                       Errors are `application/problem+json` (RFC 9457) with a stable `code`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        handlers::create_task,
        handlers::list_tasks,
        handlers::claim_tasks,
        handlers::create_task_batch,
        handlers::complete_tasks,
        handlers::bulk_action,
        handlers::get_task,
        handlers::task_events,
        handlers::explain_task,
        handlers::start_task,
        handlers::heartbeat_task,
        handlers::succeed_task,
        handlers::fail_task,
        handlers::release_task,
        handlers::cancel_task,
        handlers::rerun_task,
        handlers::list_queues,
        handlers::get_queue,
        handlers::pause_queue,
        handlers::resume_queue,
        handlers::rejection_stats,
        handlers::stats,
        activity::throughput,
        activity::dead_letters,
        activity::workers,
        handlers::metrics_text,
        tokens::create_token,
        tokens::list_tokens,
        tokens::revoke_token,
        handlers::healthz,
        handlers::readyz,
        document,
        page,
        page_file,
    ),
    // Path and query parameters do not bring their schemas along as bodies do.
    components(schemas(
        ProblemBody, QueueName, TaskName, TokenName, QueueFilter, NameFilter, StatusFilter, PageSize, Cursor,
        RetryStateFilter, InstantFilter, ErrorText, PayloadFilter, PageFile, ThroughputMinutes,
    )),
    modifiers(&Conventions),
)]
pub struct ApiDoc;

/// Whether a route needs a bearer token: every route but the probes, the document and its
/// page, as the authentication middleware decides ([`crate::auth::is_public`]).
pub fn needs_token(path: &str) -> bool {
    !crate::auth::is_public(path)
}

/// Adds what every operation shares: the bearer scheme with its 401 and 403 on the routes
/// that need a token, and 500 everywhere.
struct Conventions;

impl Modify for Conventions {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API token: `Authorization: Bearer <token>`."))
                    .build(),
            ),
        );
        for (path, item) in &mut openapi.paths.paths {
            let secured = needs_token(path);
            for operation in [&mut item.get, &mut item.put, &mut item.post, &mut item.delete]
                .into_iter()
                .flatten()
            {
                apply_conventions(operation, secured);
            }
        }
    }
}

fn apply_conventions(operation: &mut Operation, secured: bool) {
    let responses = &mut operation.responses.responses;
    if secured {
        operation.security = Some(vec![SecurityRequirement::new(BEARER, Vec::<String>::new())]);
        responses.insert(
            "401".into(),
            problem("UNAUTHENTICATED: no API token, or one the server does not know.").into(),
        );
        responses.insert(
            "403".into(),
            problem("FORBIDDEN: the token's kind may not call this route.").into(),
        );
    }
    responses
        .insert("500".into(), problem("INTERNAL_ERROR: a bug; the body says nothing more.").into());
}

/// An error answer: a problem body with its description.
fn problem(description: &str) -> ResponseBuilder {
    ResponseBuilder::new().description(description).content(
        PROBLEM_JSON,
        ContentBuilder::new().schema(Some(Ref::from_schema_name("ProblemBody"))).build(),
    )
}

/// An error answer that says when to try again.
fn problem_with_retry_after(description: &str) -> ResponseBuilder {
    problem(description).header(
        "Retry-After",
        HeaderBuilder::new()
            .schema(Some(ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(1))))
            .description(Some("Seconds to wait before trying again."))
            .build(),
    )
}

fn answers(list: Vec<(&str, ResponseBuilder)>) -> BTreeMap<String, RefOr<Response>> {
    list.into_iter()
        .map(|(status, response)| (status.to_owned(), response.build().into()))
        .collect()
}

/// 400: the path or the query cannot be read, or holds a value out of range.
pub struct BadRequest;

impl IntoResponses for BadRequest {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        answers(vec![(
            "400",
            problem(
                "MALFORMED_REQUEST (a path id that is no UUID, an unknown query parameter) or \
                 VALIDATION_FAILED (a value out of range, named in `detail`).",
            ),
        )])
    }
}

/// 400, 413 and 415: the JSON body cannot be read, holds a value out of range, is too large,
/// or is not JSON.
pub struct BodyRefused;

impl IntoResponses for BodyRefused {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        answers(vec![
            (
                "400",
                problem(
                    "MALFORMED_REQUEST (bad JSON, a wrong type, an unknown or missing field, a \
                     path id that is no UUID) or VALIDATION_FAILED (a value out of range; in a \
                     batch, `index` names the item).",
                ),
            ),
            ("413", problem("PAYLOAD_TOO_LARGE: the body is over the limit (`limitBytes`).")),
            ("415", problem("UNSUPPORTED_MEDIA_TYPE: the body is not `application/json`.")),
        ])
    }
}

/// 404: no task has the id.
pub struct TaskNotFound;

impl IntoResponses for TaskNotFound {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        answers(vec![(
            "404",
            problem("TASK_NOT_FOUND: no task has this id (or it was deleted by retention)."),
        )])
    }
}

/// 404: the queue holds no task and was never paused.
pub struct QueueNotFound;

impl IntoResponses for QueueNotFound {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        answers(vec![(
            "404",
            problem("QUEUE_NOT_FOUND: no task is stored in this queue and it was never paused."),
        )])
    }
}

/// 412: `If-Match` names a version the task or queue no longer has.
pub struct PreconditionFailed;

impl IntoResponses for PreconditionFailed {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        answers(vec![(
            "412",
            problem(
                "PRECONDITION_FAILED: `If-Match` names none of the current version of the \
                 task or queue (`currentVersion` says where it is now); nothing was changed.",
            ),
        )])
    }
}

/// 409: the task's state or the attempt's token refuses the call.
pub struct Refused;

impl IntoResponses for Refused {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        answers(vec![(
            "409",
            problem_with_retry_after(
                "The task refuses the call: INVALID_TRANSITION, NOT_YET_RUNNABLE (with \
                 `runnableAt` and Retry-After), WORKER_MISMATCH, CONCURRENT_MODIFICATION, \
                 LEASE_EXPIRED, ATTEMPT_SUPERSEDED, TASK_CANCELLED or OUTCOME_CONFLICT; a \
                 rerun also UNIQUE_KEY_HELD (another active task of the queue holds the \
                 task's `uniqueKey`; `taskId` names it).",
            ),
        )])
    }
}

/// 409 and 422: the `Idempotency-Key` is held by a request still running, or was used for a
/// different request; or (409) the `uniqueKey` is held and the request asked to be refused.
pub struct KeyRefused;

impl IntoResponses for KeyRefused {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        answers(vec![
            (
                "409",
                problem(
                    "IDEMPOTENCY_KEY_IN_USE: a request with this `Idempotency-Key` is still \
                     being handled; send it again later. UNIQUE_KEY_HELD: a PENDING or \
                     RUNNING task of the queue holds the `uniqueKey` of a task that asked for \
                     `onConflict: reject`; `taskId` names that task (and `index` the batch \
                     item; `heldByIndex` the earlier item of the batch with that queue and \
                     key instead of `taskId`); nothing was created.",
                ),
            ),
            (
                "422",
                problem(
                    "IDEMPOTENCY_KEY_REUSED: this `Idempotency-Key` was used before for a \
                     different request (another body or endpoint); use a new key.",
                ),
            ),
        ])
    }
}

/// The `If-Match` request header of cancel, rerun, pause and resume.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IfMatchHeader {
    /// Only if the task or queue is still at one of these entity tags (its `ETag`, `"7"`),
    /// or `*` for any version: otherwise 412 PRECONDITION_FAILED and nothing changes,
    /// checked atomically with the write. Weak tags (`W/"7"`) are read and never match.
    #[param(
        rename = "If-Match",
        value_type = String,
        required = false,
        pattern = r#"^[ \t]*\*[ \t]*$|^[ \t,]*(W/)?"[!#-~]*"([ \t]*,[ \t,]*(W/)?"[!#-~]*")*[ \t,]*$"#
    )]
    #[allow(dead_code, reason = "read by the OpenAPI derive only")]
    if_match: Option<String>,
}

/// The `Idempotency-Key` request header of the creates.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IdempotencyKeyHeader {
    /// Makes the create safe to send again: the same request with the same key, within
    /// the server's `--idempotency-ttl` (24 hours by default), answers the first answer again
    /// (with `Idempotent-Replayed: true`) and creates nothing. 1 to 255 visible ASCII
    /// characters, such as a UUID; keys are per API token.
    #[param(rename = "Idempotency-Key", min_length = 1, max_length = 255, pattern = "^[!-~]+$")]
    #[allow(dead_code, reason = "read by the OpenAPI derive only")]
    idempotency_key: Option<String>,
}

/// 503: PostgreSQL cannot be reached.
pub struct Unavailable;

impl IntoResponses for Unavailable {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        answers(vec![(
            "503",
            problem_with_retry_after(
                "DATABASE_UNAVAILABLE: PostgreSQL cannot be reached or did not answer in time; \
                 Retry-After says when to try again.",
            ),
        )])
    }
}

/// `GET /api/openapi.json`: this document.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    operation_id = "openApiDocument",
    tag = "documentation",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API.", content_type = "application/json", body = Object)),
)]
pub async fn document() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}

/// `GET /api/docs`: the interactive API page, which reads [`DOCUMENT_PATH`].
#[utoipa::path(
    get,
    path = "/api/docs",
    operation_id = "apiPage",
    tag = "documentation",
    responses((status = 200, description = "The interactive API page (Swagger UI).", content_type = "text/html", body = String)),
)]
pub async fn page() -> HttpResponse {
    HttpResponse::Ok().content_type("text/html; charset=utf-8").body(PAGE_HTML)
}

/// The page: Swagger UI's own files, from this server, pointed at the document.
const PAGE_HTML: &str = r##"<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>TaskPilot API</title>
  <link rel="stylesheet" href="/api/docs/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/api/docs/swagger-ui-bundle.js"></script>
  <script src="/api/docs/swagger-ui-standalone-preset.js"></script>
  <script>
    window.ui = SwaggerUIBundle({
      url: "/api/openapi.json",
      dom_id: "#swagger-ui",
      deepLinking: true,
      // Swagger UI would otherwise ask an outside validator about the document.
      validatorUrl: null,
      presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
      layout: "StandaloneLayout",
    });
  </script>
</body>
</html>
"##;

/// The page's files that a browser asks for, and their media types.
const PAGE_FILES: [(&str, &str); 3] = [
    ("swagger-ui.css", "text/css"),
    ("swagger-ui-bundle.js", "text/javascript"),
    ("swagger-ui-standalone-preset.js", "text/javascript"),
];

/// The name of one of the page's files, in the document.
pub struct PageFile;

impl utoipa::PartialSchema for PageFile {
    fn schema() -> RefOr<utoipa::openapi::schema::Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(PAGE_FILES.map(|(name, _)| name)))
            .into()
    }
}

impl utoipa::ToSchema for PageFile {}

/// `GET /api/docs/{file}`: one of the page's files.
#[utoipa::path(
    get,
    path = "/api/docs/{file}",
    operation_id = "apiPageFile",
    tag = "documentation",
    params(("file" = PageFile, Path, description = "One of the page's files.")),
    responses(
        (status = 200, description = "The file.", content(
            (String = "text/css"),
            (String = "text/javascript"),
        )),
        (status = 404, description = "ROUTE_NOT_FOUND: the page has no such file.", content_type = "application/problem+json", body = ProblemBody),
    ),
)]
pub async fn page_file(file: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let not_found = || ApiError::RouteNotFound(format!("GET {PAGE_PATH}/{file}"));
    let (name, media_type) =
        PAGE_FILES.into_iter().find(|(name, _)| *name == file.as_str()).ok_or_else(not_found)?;
    let config = Arc::new(utoipa_swagger_ui::Config::from(DOCUMENT_PATH));
    let served = utoipa_swagger_ui::serve(name, config)
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("reading {name}: {e}")))?
        .ok_or_else(not_found)?;
    Ok(HttpResponse::Ok()
        .content_type(media_type)
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .body(served.bytes.into_owned()))
}
