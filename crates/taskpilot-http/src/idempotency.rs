//! The `Idempotency-Key` header of the creates: reading and checking it, fingerprinting the
//! request that carries it, and answering a kept answer again. Whether a request is new, the
//! same again, a reuse or in flight is decided by the use case, never here.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};
use serde::Serialize;
use serde_json::Value;
use taskpilot_app::{fingerprint, AppError, Idempotency, KeyedAnswer};
use taskpilot_domain::{IdempotencyKey, StoredResponse, ValidationError};

use crate::error::ApiError;

/// The request header that carries the key.
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

/// The response header that marks an answer given again: `true`.
pub const IDEMPOTENT_REPLAYED: &str = "Idempotent-Replayed";

/// The request's key, if it sent one.
///
/// # Errors
/// VALIDATION_FAILED naming the header for a key that is empty, longer than 255 characters,
/// not visible ASCII, or sent more than once.
pub fn key_of(req: &HttpRequest) -> Result<Option<IdempotencyKey>, ApiError> {
    let mut values = req.headers().get_all(IDEMPOTENCY_KEY);
    let Some(first) = values.next() else {
        return Ok(None);
    };
    let invalid = || ApiError::from(ValidationError::IdempotencyKey);
    if values.next().is_some() {
        return Err(invalid());
    }
    let raw = first.to_str().map_err(|_| invalid())?;
    Ok(Some(IdempotencyKey::parse(raw)?))
}

/// `key` with the fingerprint of the request: its method, its path and its body as one
/// canonical JSON text (object members in name order, no spaces), so that the same request
/// however it is spaced or ordered is the same request.
///
/// # Errors
/// Internal when the body cannot be written back as JSON (it was just read as JSON).
pub fn idempotency(
    req: &HttpRequest,
    key: IdempotencyKey,
    body: &Value,
) -> Result<Idempotency, ApiError> {
    let canonical =
        serde_json::to_vec(body).map_err(|e| ApiError::Internal(anyhow::Error::new(e)))?;
    Ok(Idempotency { key, fingerprint: fingerprint(req.method().as_str(), req.path(), &canonical) })
}

/// The answer to keep: `status` with `body` as JSON and `location` as its Location.
///
/// # Errors
/// Unexpected when `body` cannot be written as JSON.
pub fn stored(
    status: StatusCode,
    body: &impl Serialize,
    location: Option<String>,
) -> Result<StoredResponse, AppError> {
    let body =
        serde_json::to_string(body).map_err(|e| AppError::Unexpected(anyhow::Error::new(e)))?;
    Ok(StoredResponse { status: status.as_u16(), body, location })
}

/// The answer as sent: the kept status, body and Location, with `Idempotent-Replayed: true`
/// when it is the first answer again.
pub fn respond(answer: &KeyedAnswer) -> HttpResponse {
    let response = &answer.response;
    let status = StatusCode::from_u16(response.status).unwrap_or(StatusCode::CREATED);
    let mut builder = HttpResponse::build(status);
    builder.insert_header(header::ContentType::json());
    if let Some(location) = &response.location {
        builder.insert_header((header::LOCATION, location.as_str()));
    }
    if answer.replayed {
        builder.insert_header((IDEMPOTENT_REPLAYED, HeaderValue::from_static("true")));
    }
    builder.body(response.body.clone())
}
