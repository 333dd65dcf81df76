//! The request-log middleware: one span per request, carrying its request id, and one
//! summary line when the response is ready.
//!
//! Part of the HTTP adapter. Installing the subscriber that prints these lines is the
//! server's business (`server::init_tracing`).

use std::time::Instant;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use tracing::field::Empty;
use tracing::Instrument;

/// The header carrying a request's id, taken from the client when sane, minted otherwise.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Middleware: one span per request (request_id, method, path, and task_id/worker_id that
/// handlers fill in) and exactly one summary line when the response is ready.
///
/// The request id is echoed in the `X-Request-Id` response header.
pub async fn request_span(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let started = Instant::now();
    let request_id = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|id| is_sane_request_id(id))
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned);
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        method = %req.method(),
        path = %req.path(),
        task_id = Empty,
        worker_id = Empty,
    );
    let mut response = match next.call(req).instrument(span.clone()).await {
        Ok(response) => response.map_into_boxed_body(),
        Err(e) => {
            // Handler and extractor errors become responses before they get here; an error
            // that does not is still logged once. (The request cannot be cloned up front to
            // build a response here: routing needs it unshared.)
            let status = e.as_response_error().status_code().as_u16();
            log_finished(&span, status, started);
            return Err(e);
        }
    };

    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(HeaderName::from_static(REQUEST_ID_HEADER), value);
    }
    log_finished(&span, response.status().as_u16(), started);
    Ok(response)
}

fn log_finished(span: &tracing::Span, status: u16, started: Instant) {
    let latency_ms = (started.elapsed().as_secs_f64() * 1_000_000.0).round() / 1_000.0;
    span.in_scope(|| {
        // A 503 is an outage (logged once by the storage) or a request waiting for one:
        // not worth a warning per request.
        if status >= 500 && status != 503 {
            tracing::warn!(status, latency_ms, "request finished");
        } else {
            tracing::info!(status, latency_ms, "request finished");
        }
    });
}

/// 1 to 128 characters from a conservative set, so that ids can be logged and echoed safely.
fn is_sane_request_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_with_odd_characters_or_lengths_are_replaced() {
        assert!(is_sane_request_id("0193a1b2-7c3d-7e4f-8a9b-0c1d2e3f4a5b"));
        assert!(is_sane_request_id("req_42.retry:1"));
        assert!(!is_sane_request_id(""));
        assert!(!is_sane_request_id("has space"));
        assert!(!is_sane_request_id("newline\n"));
        assert!(!is_sane_request_id(&"a".repeat(129)));
    }
}
