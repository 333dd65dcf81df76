//! The web dashboard at `/ui`: server-rendered pages over the same use cases and grants as
//! the REST API, with a little JavaScript (htmx for the live fragments, uPlot for the
//! chart, and `static/dashboard.js`), every file compiled into the binary.
//!
//! Part of the HTTP adapter, beside the API's handlers and under the same rule: it decides
//! nothing. Pages read through [`TaskService::acting_as`](taskpilot_app::TaskService::acting_as)
//! and the token use cases of [`AccessService`](taskpilot_app::AccessService) for the signed
//! in caller, so a viewer that forges an action is refused by the use case, not by a missing
//! button. It has no SQL and no storage of its own beyond the sessions the token use cases
//! keep.
//!
//! - [`session`]: signing in with a token, the session cookie, and turning it back into the
//!   caller on every request; open access when the server asks no token.
//! - [`csrf`]: which POSTs come from the dashboard's own pages.
//! - [`pages`]: the handlers; [`views`] and `templates/`: what they render.
//! - [`assets`]: the embedded scripts and stylesheets.
//!
//! Every answer carries a Content-Security-Policy that allows only this server's own
//! scripts, styles and connections (no inline script, no `eval`: htmx runs with
//! `allowEval: false`), and pages are never stored by caches.

pub mod assets;
pub mod csrf;
pub mod error;
pub mod pages;
pub mod session;
pub mod views;

use std::time::Duration;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{HttpServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::Method;
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, HttpMessage as _, HttpResponse};

pub use error::UiError;
pub use session::Viewer;

/// Where the dashboard lives.
pub const PREFIX: &str = "/ui";

/// The Content-Security-Policy of every dashboard answer.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; \
     base-uri 'none'; form-action 'self'";

/// What the dashboard is configured with.
#[derive(Debug, Clone, Copy)]
pub struct UiSettings {
    /// How long a sign-in lasts.
    pub session_ttl: Duration,
}

/// Whether `path` belongs to the dashboard (`/ui` and everything under `/ui/`), whose
/// requests sign in with a session instead of a bearer header.
pub fn is_dashboard(path: &str) -> bool {
    path.strip_prefix(PREFIX).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Whether `path` is one of the dashboard's static files, which anybody may load.
fn is_static(path: &str) -> bool {
    path.starts_with("/ui/static/")
}

/// Whether `path` is the sign-in page, which must answer without a session.
fn is_login(path: &str) -> bool {
    path == "/ui/login"
}

/// Every route of the dashboard, under [`PREFIX`], behind its middleware (CSRF, the caller,
/// the security headers).
pub fn scope() -> impl HttpServiceFactory {
    use pages::*;
    web::scope(PREFIX)
        .wrap(from_fn(guard))
        .route("", web::get().to(overview))
        .route("/", web::get().to(overview))
        .route("/static/{name:.*}", web::get().to(assets::serve))
        .route("/login", web::get().to(session::login_page))
        .route("/login", web::post().to(session::login))
        .route("/logout", web::post().to(session::logout))
        .route("/queues", web::get().to(queues))
        .route("/queues/{name}/pause", web::post().to(pause_queue))
        .route("/queues/{name}/resume", web::post().to(resume_queue))
        .route("/tasks", web::get().to(tasks))
        .route("/tasks/{id}", web::get().to(task))
        .route("/tasks/{id}/cancel", web::get().to(confirm_cancel))
        .route("/tasks/{id}/cancel", web::post().to(cancel))
        .route("/tasks/{id}/rerun", web::get().to(confirm_rerun))
        .route("/tasks/{id}/rerun", web::post().to(rerun))
        .route("/dead-letters", web::get().to(dead_letters))
        .route("/dead-letters/bulk", web::get().to(confirm_bulk))
        .route("/dead-letters/bulk", web::post().to(bulk))
        .route("/workers", web::get().to(workers))
        .route("/tokens", web::get().to(tokens))
        .route("/tokens", web::post().to(create_token))
        .route("/tokens/{id}/revoke", web::get().to(confirm_revoke))
        .route("/tokens/{id}/revoke", web::post().to(revoke_token))
        .default_service(web::to(pages::not_found))
}

/// Middleware of every dashboard request: refuses cross-site POSTs ([`csrf`]), resolves
/// who the request acts for ([`session::resolve`]: a session, or open access) except for
/// the static files and the sign-in page, and puts the security headers on every answer.
async fn guard(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let path = req.path().to_owned();
    let response = match prepare(&req, &path).await {
        Ok(()) => next.call(req).await?.map_into_boxed_body(),
        Err(answer) => req.into_response(answer),
    };
    // A handler's error becomes its page here, where the request (and so who is signed in,
    // and whether htmx asked) is known.
    let (request, response) = response.into_parts();
    let mut response = match response.error().and_then(|e| e.as_error::<UiError>()) {
        Some(e) => e.answer(&request),
        None => response,
    };
    secure(response.headers_mut(), is_static(&path));
    Ok(ServiceResponse::new(request, response))
}

/// What [`guard`] checks before the handler runs; the answer to give instead, if any.
async fn prepare(req: &ServiceRequest, path: &str) -> Result<(), HttpResponse> {
    if req.method() == Method::POST {
        if let Err(refusal) = csrf::check(req.headers()) {
            tracing::warn!(path, ?refusal, "refused a cross-site dashboard request");
            return Err(UiError::Csrf(refusal).page(None));
        }
    }
    if is_static(path) || is_login(path) {
        return Ok(());
    }
    match session::resolve(req.request()).await {
        Ok(viewer) => {
            req.extensions_mut().insert(viewer);
            Ok(())
        }
        Err(e) => Err(e.answer(req.request())),
    }
}

/// The security headers of every dashboard answer; pages (not the static files) are never
/// stored by a cache, and vary with `HX-Request` (a live fragment or the whole page).
fn secure(headers: &mut header::HeaderMap, static_file: bool) {
    headers
        .insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    if !static_file {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(header::VARY, HeaderValue::from_static("HX-Request"));
    }
}

/// Whether htmx sent the request (a live fragment, not a page load).
pub fn from_htmx(req: &actix_web::HttpRequest) -> bool {
    req.headers().get(HeaderName::from_static("hx-request")).is_some_and(|v| v == "true")
}

/// A rendered page with its status.
pub fn html(status: actix_web::http::StatusCode, body: String) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::CONTENT_TYPE, "text/html; charset=utf-8"))
        .body(body)
}

/// 303 to `location`: where a form's POST goes next.
pub fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther().insert_header((header::LOCATION, location)).finish()
}
